//! The push path's HTTP/1.1 client connection against any server bytes: the
//! answers to successive requests on one keep-alive connection, in reads of
//! any size; no panic, no hang, a body within the limit, and a connection
//! that failed is not used again
//! (`transport::codec_bench::http1_client_against`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fleetwake::transport::codec_bench::http1_client_against(data);
});
