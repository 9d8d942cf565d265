//! Name resolution with overrides: map a host, or every host under a `*.` pattern,
//! to a fixed socket address, like curl's `--resolve`. This is how tests, the demo
//! and users' own emulators point real WNS host names at a local server while TLS
//! still verifies the real name.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// One override: `PATTERN=ADDR:PORT`, where `PATTERN` is a host name
/// (`login.live.com`) or `*.` plus a domain (`*.notify.windows.com`, which matches
/// every subdomain but not the bare domain).
#[derive(Clone, PartialEq, Eq)]
pub struct ResolveOverride {
    pattern: String,
    wildcard: bool,
    /// Where matching hosts connect.
    pub addr: SocketAddr,
}

/// A resolve override that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resolve override {input:?}: {reason} (expected HOST=ADDR:PORT or *.DOMAIN=ADDR:PORT, e.g. \"*.notify.windows.com=127.0.0.1:8443\")")]
pub struct ResolveOverrideError {
    input: String,
    reason: &'static str,
}

impl ResolveOverride {
    /// An override for `pattern` (a host, or `*.domain`).
    pub fn new(pattern: &str, addr: SocketAddr) -> Result<Self, ResolveOverrideError> {
        let err = |reason| ResolveOverrideError {
            input: format!("{pattern}={addr}"),
            reason,
        };
        let (wildcard, name) = match pattern.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            || name.starts_with('.')
            || name.ends_with('.')
        {
            return Err(err("the host pattern is not a DNS name"));
        }
        Ok(ResolveOverride {
            pattern: name.to_ascii_lowercase(),
            wildcard,
            addr,
        })
    }

    /// True when `host` is covered by this override.
    pub fn matches(&self, host: &str) -> bool {
        if self.wildcard {
            let p = self.pattern.as_bytes();
            let h = host.as_bytes();
            h.len() > p.len() + 1
                && h[h.len() - p.len()..].eq_ignore_ascii_case(p)
                && h[h.len() - p.len() - 1] == b'.'
        } else {
            host.eq_ignore_ascii_case(&self.pattern)
        }
    }
}

impl FromStr for ResolveOverride {
    type Err = ResolveOverrideError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ResolveOverrideError {
            input: s.to_string(),
            reason,
        };
        let (pattern, addr) = s.split_once('=').ok_or_else(|| err("missing '='"))?;
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| err("the address is not IP:PORT"))?;
        ResolveOverride::new(pattern.trim(), addr)
            .map_err(|_| err("the host pattern is not a DNS name"))
    }
}

impl fmt::Display for ResolveOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            write!(f, "*.{}={}", self.pattern, self.addr)
        } else {
            write!(f, "{}={}", self.pattern, self.addr)
        }
    }
}

impl fmt::Debug for ResolveOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResolveOverride({self})")
    }
}

impl serde::Serialize for ResolveOverride {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ResolveOverride {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Resolves a host: the first matching override (exact names win over patterns),
/// else the system resolver.
pub(crate) async fn resolve(
    overrides: &[ResolveOverride],
    host: &str,
    port: u16,
) -> std::io::Result<Vec<SocketAddr>> {
    let exact = overrides.iter().find(|o| !o.wildcard && o.matches(host));
    if let Some(o) = exact.or_else(|| overrides.iter().find(|o| o.matches(host))) {
        return Ok(vec![o.addr]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    if addrs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let o: ResolveOverride = "*.notify.windows.com=127.0.0.1:8443".parse().unwrap();
        assert!(o.matches("db5p.notify.windows.com"));
        assert!(o.matches("A.B.NOTIFY.windows.com"));
        assert!(!o.matches("notify.windows.com"));
        assert!(!o.matches("notify.windows.com.evil.test"));
        assert_eq!(o.to_string(), "*.notify.windows.com=127.0.0.1:8443");
        let o: ResolveOverride = "login.live.com=[::1]:9".parse().unwrap();
        assert!(o.matches("LOGIN.live.com"));
        assert!(!o.matches("x.login.live.com"));
        for bad in [
            "nohost",
            "a=b",
            "=127.0.0.1:1",
            "a b=127.0.0.1:1",
            "*.=127.0.0.1:1",
            "x=127.0.0.1",
        ] {
            let e = bad.parse::<ResolveOverride>().unwrap_err();
            assert!(e.to_string().contains("expected HOST=ADDR:PORT"), "{e}");
        }
    }

    #[tokio::test]
    async fn exact_beats_wildcard() {
        let o = vec![
            "*.windows.com=127.0.0.1:1".parse().unwrap(),
            "a.windows.com=127.0.0.1:2".parse().unwrap(),
        ];
        assert_eq!(
            resolve(&o, "a.windows.com", 443).await.unwrap()[0].port(),
            2
        );
        assert_eq!(
            resolve(&o, "b.windows.com", 443).await.unwrap()[0].port(),
            1
        );
    }
}
