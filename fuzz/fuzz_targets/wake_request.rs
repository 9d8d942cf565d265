//! The wake request of the queue and of `POST /v1/wakes`: never panics; an
//! accepted request validates and converts to a notification or an outcome.
#![no_main]
use fleetwake::service::http_api::parse_wakes;
use fleetwake::service::WakeRequest;
use fleetwake::wns::PushOptions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = WakeRequest::from_json(data) {
        assert!(w.validate().is_ok());
        let _ = w.not_after_time();
        let _ = w.to_notification(&PushOptions::default());
    }
    if let Ok(ws) = parse_wakes(data, 100) {
        assert!(!ws.is_empty() && ws.len() <= 100);
    }
});
