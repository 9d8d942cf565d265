//! `ChannelUri::parse`: never panics; what it accepts is an https URI to a
//! `*.notify.windows.com` host, kept byte for byte.
#![no_main]
use fleetwake::wns::ChannelUri;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = ChannelUri::parse(s) {
        assert_eq!(c.as_str(), s);
        let host = c.host().to_ascii_lowercase();
        assert!(host == "notify.windows.com" || host.ends_with(".notify.windows.com"));
        assert!(!c.authority().contains('@'));
        let uri: http::Uri = c.as_str().parse().expect("an accepted channel is a URI");
        assert_eq!(uri.host().map(|h| h.to_ascii_lowercase()), Some(host));
    }
});
