//! Classification of a WNS answer: any status, any header bytes give an outcome.
#![no_main]
use fleetwake::wns::classify;
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 8] = [
    "x-wns-status",
    "x-wns-notificationstatus",
    "x-wns-deviceconnectionstatus",
    "retry-after",
    "x-wns-continue-after",
    "x-wns-error-description",
    "www-authenticate",
    "x-wns-msg-id",
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let status = 100 + u16::from_le_bytes([data[0], data[1]]) % 900;
    let Ok(status) = http::StatusCode::from_u16(status) else {
        return;
    };
    let mut h = http::HeaderMap::new();
    for part in data[2..].split(|b| *b == 0) {
        let Some((n, v)) = part.split_first() else {
            continue;
        };
        if let Ok(v) = http::HeaderValue::from_bytes(v) {
            h.append(NAMES[usize::from(*n) % NAMES.len()], v);
        }
    }
    let c = classify(status, &h);
    assert_eq!(c.status, status.as_u16());
});
