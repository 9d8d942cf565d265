//! The push path's HTTP/2 client connection against any server bytes: no
//! panic, no hang, output bounded by input, every exchange ended when the
//! connection fails (`transport::codec_bench::http2_client_against`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fleetwake::transport::codec_bench::http2_client_against(data);
});
