//! Property tests: every parser that reads outside input never panics, and the
//! security-relevant ones keep their promises on arbitrary input.

use std::path::Path;

use fleetwake::campaign::input::DeviceReader;
use fleetwake::wns::credentials::parse_token_response;
use fleetwake::wns::{classify, ChannelUri};
use proptest::prelude::*;

fn uri_like() -> impl Strategy<Value = String> {
    let parts = prop::collection::vec(
        prop_oneof![
            Just("https://".to_string()),
            Just("http://".to_string()),
            Just("notify.windows.com".to_string()),
            Just(".notify.windows.com".to_string()),
            Just("db5p".to_string()),
            Just("evil.test".to_string()),
            Just("@".to_string()),
            Just(":".to_string()),
            Just("443".to_string()),
            Just("/".to_string()),
            Just("?token=".to_string()),
            Just("%2e".to_string()),
            Just(".".to_string()),
            Just("\\".to_string()),
            Just("#".to_string()),
            "[a-zA-Z0-9.-]{0,8}",
            any::<String>(),
        ],
        0..8,
    );
    parts.prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn channel_uri_accepts_only_wns(s in uri_like()) {
        if let Ok(c) = ChannelUri::parse(&s) {
            prop_assert_eq!(c.as_str(), s.as_str());
            let lower = s.to_ascii_lowercase();
            prop_assert!(lower.starts_with("https://"));
            let host = c.host().to_ascii_lowercase();
            prop_assert!(host == "notify.windows.com" || host.ends_with(".notify.windows.com"), "{}", host);
            prop_assert!(!c.authority().contains('@'));
            prop_assert!(c.authority().len() == c.host().len() || c.authority().ends_with(":443"));
            // What the request line will carry parses back to the same host.
            let uri: http::Uri = c.as_str().parse().unwrap();
            prop_assert_eq!(uri.host().map(|h| h.to_ascii_lowercase()), Some(host));
        }
    }

    #[test]
    fn token_answers_never_panic(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_token_response(status, None, &body);
    }

    #[test]
    fn token_json_shapes(tok in "[a-zA-Z0-9]{0,20}", exp in prop_oneof![Just("86400".to_string()), Just("\"86400\"".to_string()), Just("-1".to_string()), Just("1e99".to_string()), Just("null".to_string()), Just("\"x\"".to_string()), Just("18446744073709551616".to_string())]) {
        let body = format!(r#"{{"access_token":"{tok}","expires_in":{exp}}}"#);
        let _ = parse_token_response(200, None, body.as_bytes());
    }

    #[test]
    fn classification_never_panics(status in 100u16..1000, names in prop::collection::vec(prop_oneof![Just("x-wns-status"), Just("x-wns-notificationstatus"), Just("retry-after"), Just("x-wns-continue-after"), Just("x-wns-error-description"), Just("www-authenticate"), Just("x-wns-msg-id")], 0..6), values in prop::collection::vec(prop::collection::vec(32u8..127, 0..40), 6)) {
        let mut h = http::HeaderMap::new();
        for (n, v) in names.iter().zip(values.iter()) {
            if let Ok(v) = http::HeaderValue::from_bytes(v) {
                h.append(*n, v);
            }
        }
        if let Ok(s) = http::StatusCode::from_u16(status) {
            let c = classify(s, &h);
            prop_assert_eq!(c.status, status);
        }
    }

    #[test]
    fn device_reader_never_panics_and_numbers_lines(input in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut r = DeviceReader::new(&input[..], "fuzz");
        let mut last = 0;
        while let Ok(Some(row)) = r.next_row() {
            prop_assert!(row.line > last);
            last = row.line;
        }
    }

    #[test]
    fn config_parser_never_panics(text in "(\\[[a-z.]{0,12}\\]\n|[a-z_]{1,10} = (\"[^\"\n]{0,10}\"|[0-9]{1,5}|true|\\[\\])\n){0,12}") {
        let _ = fleetwake::config::Config::from_str_with_env(Path::new("f.toml"), &text, std::iter::empty());
    }

    #[test]
    fn http1_client_takes_any_server_bytes(
        read in any::<u8>(),
        parts in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..300),
                (prop_oneof![Just("200 OK"), Just("204 No Content"), Just("410 Gone"), Just("100 Continue")],
                 prop::collection::vec(prop_oneof![
                    Just("Content-Length: 2".to_string()), Just("Content-Length: +2".to_string()),
                    Just("Content-Length: 2, 2".to_string()), Just("Content-Length: 9999999".to_string()),
                    Just("Transfer-Encoding: chunked".to_string()), Just("Connection: close".to_string()),
                    "[A-Za-z-]{1,12}: [ -~]{0,20}",
                 ], 0..4),
                 "(ok|2\r\nok\r\n0\r\n\r\n|[0-9a-f+ ;]{0,4}\r\n[ -~]{0,10}\r\n){0,2}")
                    .prop_map(|(status, fields, body)| {
                        format!("HTTP/1.1 {status}\r\n{}\r\n{body}", fields.iter().map(|f| format!("{f}\r\n")).collect::<String>())
                            .into_bytes()
                    }),
            ],
            1..4,
        ),
    ) {
        // No panic (the harness asserts the body limit and that a failed
        // connection is not reused) and no wait on a script that is all there.
        let mut input = vec![read];
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                input.extend_from_slice(fleetwake::transport::codec_bench::HTTP1_NEXT_ANSWER);
            }
            input.extend_from_slice(p);
        }
        prop_assert!(fleetwake::transport::codec_bench::http1_client_against(&input) <= parts.len());
    }

    #[test]
    fn behaviour_grammar_never_panics(token in any::<String>()) {
        let _ = fleetwake::emulator::parse_behavior(&token);
    }
}
