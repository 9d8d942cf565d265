//! Device SyncML replies and command lists: never panic, bounded work.
#![no_main]
use fleetwake::mdm::parse::{parse_commands, parse_device_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_device_reply(s);
    let _ = parse_commands(s);
});
