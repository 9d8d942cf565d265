//! The campaign device list (CSV or JSONL): never panics; line numbers grow.
#![no_main]
use fleetwake::campaign::input::DeviceReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = DeviceReader::new(data, "fuzz");
    let mut last = 0;
    for _ in 0..10_000 {
        match r.next_row() {
            Ok(Some(row)) => {
                assert!(row.line > last);
                last = row.line;
            }
            Ok(None) => break,
            Err(_) => break,
        }
    }
});
