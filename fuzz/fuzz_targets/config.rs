//! The TOML config: never panics; errors name a place.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ =
        fleetwake::config::Config::from_str_with_env(Path::new("f.toml"), s, std::iter::empty());
});
