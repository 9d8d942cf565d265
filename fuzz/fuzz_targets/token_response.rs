//! The token endpoint's answer: never panics, for any status and body.
#![no_main]
use fleetwake::wns::credentials::parse_token_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (if *s < 128 { 200 } else { 400 + u16::from(*s) }, rest),
        None => (200, data),
    };
    let _ = parse_token_response(status, None, body);
});
