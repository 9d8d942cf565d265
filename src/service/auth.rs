//! API keys for the HTTP API: one or more per client, from the config
//! (`key_env`, `key_file`, or `key_sha256` so that the file holds no secret) or
//! from a keys file (`NAME:KEY` per line).
//!
//! Keys are kept only as SHA-256 digests. A presented bearer token is hashed and
//! compared with **every** configured digest in constant time (no early exit),
//! so neither the timing nor the length of a key leaks. Keys never reach logs:
//! [`ApiKeys`] prints client names only.

use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;

/// Shortest key accepted from the configuration.
pub const MIN_KEY_LEN: usize = 16;

/// A client's key as configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKeySection {
    /// Environment variable holding the key.
    pub key_env: Option<String>,
    /// File holding the key (trailing newline trimmed), relative to the config file.
    pub key_file: Option<std::path::PathBuf>,
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`): the file holds no secret.
    pub key_sha256: Option<String>,
}

/// Why a key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("API key of client `{client}`: {message}")]
pub struct KeyError {
    /// The client.
    pub client: String,
    /// What is wrong (never the key).
    pub message: String,
}

/// The configured clients and their key digests.
#[derive(Clone, Default)]
pub struct ApiKeys {
    clients: Vec<(Arc<str>, [u8; 32])>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field(
                "clients",
                &self.clients.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn err(client: &str, message: impl Into<String>) -> KeyError {
    KeyError {
        client: client.to_string(),
        message: message.into(),
    }
}

impl ApiKeys {
    /// No clients: every request is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of configured keys.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Adds a key for `client` (at least [`MIN_KEY_LEN`] characters, no spaces).
    pub fn add(&mut self, client: &str, key: &str) -> Result<(), KeyError> {
        if key.len() < MIN_KEY_LEN {
            return Err(err(
                client,
                format!("is shorter than {MIN_KEY_LEN} characters"),
            ));
        }
        if key.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
            return Err(err(
                client,
                "must be printable ASCII without spaces (it is sent as a bearer token)",
            ));
        }
        self.clients
            .push((Arc::from(client), sha256(key.as_bytes())));
        Ok(())
    }

    /// Adds a key given by its hex SHA-256.
    pub fn add_sha256(&mut self, client: &str, hex: &str) -> Result<(), KeyError> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(err(client, "key_sha256 must be 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).map_err(|_| err(client, "key_sha256 is not hex"))?;
            out[i] = u8::from_str_radix(s, 16).map_err(|_| err(client, "key_sha256 is not hex"))?;
        }
        self.clients.push((Arc::from(client), out));
        Ok(())
    }

    /// Adds a client from its config table; `base` resolves a relative `key_file`.
    pub fn add_section(
        &mut self,
        client: &str,
        s: &ClientKeySection,
        base: &Path,
    ) -> Result<(), KeyError> {
        match (&s.key_env, &s.key_file, &s.key_sha256) {
            (Some(var), None, None) => match std::env::var(var) {
                Ok(k) => self.add(client, k.trim_end_matches(['\r', '\n'])),
                Err(_) => Err(err(
                    client,
                    format!("environment variable {var} is not set"),
                )),
            },
            (None, Some(f), None) => {
                let p = if f.is_absolute() {
                    f.clone()
                } else {
                    base.join(f)
                };
                let k = std::fs::read_to_string(&p)
                    .map_err(|e| err(client, format!("cannot read {}: {e}", p.display())))?;
                self.add(client, k.trim_end_matches(['\r', '\n']))
            }
            (None, None, Some(h)) => self.add_sha256(client, h),
            _ => Err(err(
                client,
                "give exactly one of key_env, key_file or key_sha256",
            )),
        }
    }

    /// Adds every `NAME:KEY` line of a keys file (`#` starts a comment line).
    pub fn add_keys_file(&mut self, path: &Path) -> Result<(), KeyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(&file, format!("cannot read the keys file: {e}")))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, key)) = line.split_once(':') else {
                return Err(err(&format!("{file}:{}", i + 1), "expected NAME:KEY"));
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(err(
                    &format!("{file}:{}", i + 1),
                    "the client name is empty",
                ));
            }
            self.add(name, key.trim())
                .map_err(|e| err(&format!("{file}:{} ({name})", i + 1), e.message))?;
        }
        Ok(())
    }

    /// The client whose key is the bearer token of `authorization`, if any. Every
    /// digest is compared, in constant time.
    pub fn check(&self, authorization: Option<&[u8]>) -> Option<Arc<str>> {
        let token = bearer(authorization?)?;
        let digest = sha256(token);
        let mut found: Option<Arc<str>> = None;
        for (name, d) in &self.clients {
            let hit: bool = d.ct_eq(&digest).into();
            if hit && found.is_none() {
                found = Some(name.clone());
            }
        }
        found
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer(h: &[u8]) -> Option<&[u8]> {
    if h.len() < 7 || !h[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let t = h[7..].trim_ascii();
    (!t.is_empty()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_by_digest_and_name_the_client() {
        let mut k = ApiKeys::new();
        k.add("a", "key-a-0123456789abcdef").unwrap();
        let hex: String = sha256(b"key-b-0123456789abcdef")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        k.add_sha256("b", &hex).unwrap();
        assert_eq!(
            k.check(Some(b"Bearer key-a-0123456789abcdef")).as_deref(),
            Some("a")
        );
        assert_eq!(
            k.check(Some(b"bearer   key-b-0123456789abcdef "))
                .as_deref(),
            Some("b")
        );
        assert_eq!(k.check(Some(b"Bearer key-a-0123456789abcdeF")), None);
        assert_eq!(k.check(Some(b"Basic a2V5")), None);
        assert_eq!(k.check(Some(b"Bearer ")), None);
        assert_eq!(k.check(None), None);
        assert!(k.add("c", "short").is_err());
        assert!(k.add("c", "has a space in it, long enough").is_err());
        assert!(k.add_sha256("c", "zz").is_err());
        assert!(!format!("{k:?}").contains("key-a"));
    }

    #[test]
    fn keys_file_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        std::fs::write(
            &p,
            "# clients\nmdm:0123456789abcdef-mdm\n\nops : 0123456789abcdef-ops\n",
        )
        .unwrap();
        let mut k = ApiKeys::new();
        k.add_keys_file(&p).unwrap();
        assert_eq!(k.len(), 2);
        assert_eq!(
            k.check(Some(b"Bearer 0123456789abcdef-ops")).as_deref(),
            Some("ops")
        );
        std::fs::write(&p, "nocolon\n").unwrap();
        let e = ApiKeys::new().add_keys_file(&p).unwrap_err();
        assert!(e.to_string().contains(":1"), "{e}");
    }
}
