//! Channel URIs: the only place that decides whether a URI may receive a bearer token.
//!
//! A WNS channel URI looks like `https://db5p.notify.windows.com/?token=AwYAAAB...`.
//! The subdomain changes between regions and over time, so the check is on the
//! registrable suffix: the host must be `notify.windows.com` or end in
//! `.notify.windows.com`, the scheme must be `https` and the port the default one.
//! Anything else (lookalike domains, userinfo tricks, IP literals, other ports,
//! percent-encoded hosts) is refused *before* a token is ever attached.
//!
//! The URI is kept byte for byte: WNS answers 404 to a channel whose encoding was
//! changed, so path and query are never normalised.

use std::fmt;
use std::sync::Arc;

/// The longest channel URI accepted. Real ones are about 200 bytes.
pub const MAX_CHANNEL_URI_LEN: usize = 2048;

/// The WNS domain that channel URIs must live under.
pub const WNS_DOMAIN: &str = "notify.windows.com";

/// A validated WNS channel URI. Cheap to clone (the text is shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelUri {
    text: Arc<str>,
    /// Byte range of the host (lowercase-checked, never rewritten) within `text`.
    host_end: u16,
    /// Start of path-and-query within `text`.
    path_start: u16,
}

/// Why a channel URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelUriError {
    /// The URI is empty.
    #[error("channel URI is empty")]
    Empty,
    /// The URI is longer than [`MAX_CHANNEL_URI_LEN`].
    #[error("channel URI is {0} bytes long; the limit is {MAX_CHANNEL_URI_LEN}")]
    TooLong(usize),
    /// The URI holds a byte that may not appear in a URI (space, control, non-ASCII, `\`, ...).
    #[error("channel URI holds a character that is not allowed in a URI at byte {0}")]
    BadCharacter(usize),
    /// The scheme is not `https`.
    #[error("channel URI must use https:// (a bearer token is never sent in clear text)")]
    NotHttps,
    /// The authority has userinfo (`user@host`).
    #[error("channel URI has userinfo ('@') in its authority, which is refused")]
    UserInfo,
    /// An explicit port other than 443.
    #[error("channel URI names port {0}; only the default https port is allowed")]
    Port(String),
    /// The host is not a syntactically plain DNS name (IP literal, percent-encoding, empty label...).
    #[error("channel URI host {0:?} is not a plain DNS name")]
    BadHost(String),
    /// The host is a DNS name outside `notify.windows.com`.
    #[error("channel URI host {0:?} is outside notify.windows.com; WNS channels live only there")]
    ForeignHost(String),
    /// The URI carries a fragment (`#...`).
    #[error("channel URI has a fragment ('#'), which a WNS channel never has")]
    Fragment,
}

impl ChannelUri {
    /// Validates `text` as a WNS channel URI and keeps it exactly as given.
    pub fn parse(text: &str) -> Result<Self, ChannelUriError> {
        if text.is_empty() {
            return Err(ChannelUriError::Empty);
        }
        if text.len() > MAX_CHANNEL_URI_LEN {
            return Err(ChannelUriError::TooLong(text.len()));
        }
        // One pass: the first byte outside RFC 3986 wins over a fragment.
        let mut fragment = false;
        for (i, b) in text.bytes().enumerate() {
            if !is_uri_byte(b) {
                return Err(ChannelUriError::BadCharacter(i));
            }
            fragment |= b == b'#';
        }
        if fragment {
            return Err(ChannelUriError::Fragment);
        }
        let scheme_len = "https://".len();
        if text.len() < scheme_len || !text[..scheme_len].eq_ignore_ascii_case("https://") {
            return Err(ChannelUriError::NotHttps);
        }
        let rest = &text[scheme_len..];
        let auth_len = rest
            .bytes()
            .position(|b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let authority = &rest[..auth_len];
        if authority.contains('@') {
            return Err(ChannelUriError::UserInfo);
        }
        let (host, port) = match authority.rfind(':') {
            Some(i) => (&authority[..i], Some(&authority[i + 1..])),
            None => (authority, None),
        };
        if let Some(port) = port {
            if port != "443" {
                return Err(ChannelUriError::Port(port.to_string()));
            }
        }
        check_dns_name(host)?;
        if !is_wns_host(host) {
            return Err(ChannelUriError::ForeignHost(host.to_string()));
        }
        let host_end = scheme_len + host.len();
        let path_start = scheme_len + auth_len;
        Ok(ChannelUri {
            text: Arc::from(text),
            host_end: host_end as u16,
            path_start: path_start as u16,
        })
    }

    /// The URI exactly as it was given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host, as given (case preserved), e.g. `db5p.notify.windows.com`.
    pub fn host(&self) -> &str {
        &self.text["https://".len()..self.host_end as usize]
    }

    /// The authority as given, including an explicit `:443` if there was one.
    pub fn authority(&self) -> &str {
        &self.text["https://".len()..self.path_start as usize]
    }

    /// Path and query exactly as given; `/` when the URI has neither.
    pub fn path_and_query(&self) -> &str {
        let p = &self.text[self.path_start as usize..];
        if p.is_empty() {
            "/"
        } else {
            p
        }
    }

    /// The shared text, for cheap use as a map key.
    pub fn shared(&self) -> &Arc<str> {
        &self.text
    }
}

impl fmt::Debug for ChannelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ChannelUri").field(&self.as_str()).finish()
    }
}

impl fmt::Display for ChannelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ChannelUri {
    type Err = ChannelUriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelUri::parse(s)
    }
}

/// True when `host` is `notify.windows.com` or a subdomain of it (ASCII case-insensitive).
///
/// This is also the rule the transport applies before attaching a bearer token.
pub fn is_wns_host(host: &str) -> bool {
    let h = host.as_bytes();
    let d = WNS_DOMAIN.as_bytes();
    if h.len() == d.len() {
        return h.eq_ignore_ascii_case(d);
    }
    h.len() > d.len() + 1
        && h[h.len() - d.len()..].eq_ignore_ascii_case(d)
        && h[h.len() - d.len() - 1] == b'.'
}

/// RFC 3986 characters: unreserved, reserved and `%` (a table: this runs for
/// every byte of every channel URI read).
fn is_uri_byte(b: u8) -> bool {
    URI_BYTES[b as usize]
}

const URI_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric();
        i += 1;
    }
    let extra = b"-._~:/?#[]@!$&'()*+,;=%";
    let mut j = 0;
    while j < extra.len() {
        t[extra[j] as usize] = true;
        j += 1;
    }
    t
};

/// Letters, digits and hyphens in non-empty labels of at most 63 bytes; no
/// trailing dot; the last label not all digits. One pass over the bytes.
fn check_dns_name(host: &str) -> Result<(), ChannelUriError> {
    let bad = || ChannelUriError::BadHost(host.to_string());
    if host.is_empty() || host.len() > 253 {
        return Err(bad());
    }
    let b = host.as_bytes();
    let mut label_start = 0;
    let mut all_digits = true;
    for i in 0..=b.len() {
        if i == b.len() || b[i] == b'.' {
            let label = &b[label_start..i];
            if label.is_empty()
                || label.len() > 63
                || label[0] == b'-'
                || label[label.len() - 1] == b'-'
            {
                return Err(bad());
            }
            label_start = i + 1;
            if i < b.len() {
                all_digits = true;
            }
            continue;
        }
        if !(b[i].is_ascii_alphanumeric() || b[i] == b'-') {
            return Err(bad());
        }
        all_digits &= b[i].is_ascii_digit();
    }
    // An all-numeric last label means an IPv4 literal or similar; never a WNS host.
    if all_digits {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_documented_examples_and_keeps_bytes() {
        for uri in [
            "https://db3.notify.windows.com/?token=AwYAAABa5cJ3%2bAbC%3d",
            "https://cloud.notify.windows.com/?token=x",
            "https://wns2-by3p.notify.windows.com/?token=a%2Fb",
            "https://notify.windows.com/?token=x",
            "https://DM3P.Notify.Windows.COM/?token=x",
            "https://bn1.notify.windows.com:443/?token=x",
            "https://bn1.notify.windows.com",
        ] {
            let c = ChannelUri::parse(uri).unwrap();
            assert_eq!(c.as_str(), uri);
        }
        let c = ChannelUri::parse("https://db3.notify.windows.com/?token=A%2b%3D").unwrap();
        assert_eq!(c.host(), "db3.notify.windows.com");
        assert_eq!(c.path_and_query(), "/?token=A%2b%3D");
        let c = ChannelUri::parse("https://db3.notify.windows.com:443?token=x").unwrap();
        assert_eq!(c.authority(), "db3.notify.windows.com:443");
        assert_eq!(c.path_and_query(), "?token=x");
        assert_eq!(
            ChannelUri::parse("https://a.notify.windows.com")
                .unwrap()
                .path_and_query(),
            "/"
        );
    }

    #[test]
    fn refuses_everything_outside_wns() {
        use ChannelUriError::*;
        type Check = fn(&ChannelUriError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| *e == Empty),
            ("http://db3.notify.windows.com/?token=x", |e| *e == NotHttps),
            ("ftp://db3.notify.windows.com/", |e| *e == NotHttps),
            ("https://notify.windows.com.evil.test/?token=x", |e| {
                matches!(e, ForeignHost(_))
            }),
            ("https://evilnotify.windows.com/?token=x", |e| {
                matches!(e, ForeignHost(_))
            }),
            ("https://windows.com/?token=x", |e| {
                matches!(e, ForeignHost(_))
            }),
            ("https://evil.test/?token=x", |e| {
                matches!(e, ForeignHost(_))
            }),
            ("https://db3.notify.windows.com@evil.test/", |e| {
                *e == UserInfo
            }),
            ("https://evil.test@db3.notify.windows.com/", |e| {
                *e == UserInfo
            }),
            ("https://db3.notify.windows.com:8443/?token=x", |e| {
                matches!(e, Port(_))
            }),
            ("https://db3.notify.windows.com:/?token=x", |e| {
                matches!(e, Port(_))
            }),
            ("https://127.0.0.1/?token=x", |e| matches!(e, BadHost(_))),
            ("https://[::1]/?token=x", |e| {
                matches!(e, BadHost(_) | Port(_))
            }),
            ("https://db3.notify.windows.com./?token=x", |e| {
                matches!(e, BadHost(_))
            }),
            ("https://db3..notify.windows.com/", |e| {
                matches!(e, BadHost(_))
            }),
            ("https://%64b3.notify.windows.com/", |e| {
                matches!(e, BadHost(_))
            }),
            ("https://db3.notify.windows.com%2eevil.test/", |e| {
                matches!(e, BadHost(_))
            }),
            ("https://evil.test\\@db3.notify.windows.com/", |e| {
                matches!(e, BadCharacter(_))
            }),
            ("https://db3.notify.windows.com/?token=a b", |e| {
                matches!(e, BadCharacter(_))
            }),
            ("https://db3.notify.windows.com/?token=\u{0}", |e| {
                matches!(e, BadCharacter(_))
            }),
            ("https://db3.notify.windows.com/#frag", |e| *e == Fragment),
            ("https://ﬁ.notify.windows.com/", |e| {
                matches!(e, BadCharacter(_))
            }),
        ];
        for (uri, want) in cases {
            let err = ChannelUri::parse(uri).expect_err(uri);
            assert!(want(&err), "{uri}: got {err:?}");
        }
        let long = format!("https://a.notify.windows.com/?token={}", "x".repeat(3000));
        assert!(matches!(ChannelUri::parse(&long), Err(TooLong(_))));
    }

    #[test]
    fn wns_host_rule() {
        assert!(is_wns_host("notify.windows.com"));
        assert!(is_wns_host("a.NOTIFY.windows.com"));
        assert!(!is_wns_host(".notify.windows.com"));
        assert!(!is_wns_host("xnotify.windows.com"));
        assert!(!is_wns_host("notify.windows.com.evil"));
        assert!(!is_wns_host("login.live.com"));
    }
}
