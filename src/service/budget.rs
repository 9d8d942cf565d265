//! The `[budget]` table: where the shared PFN budget lives (a NATS JetStream
//! key-value bucket), and connecting to it. The budget itself is
//! [`crate::engine::budget`]; every mode (`consume`, `serve`, `campaign`,
//! `send`) shares it when `[budget] url` is set.

use std::time::Duration;

use serde::Deserialize;

use crate::engine::budget::SharedBudget;

/// The `[budget]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetSettings {
    /// NATS server URL(s), comma-separated. Unset: each process enforces its
    /// own budget (as before), and `[consume] instances` splits it.
    pub url: Option<String>,
    /// Environment variable holding a NATS token.
    pub token_env: Option<String>,
    /// NATS user (with `password_env`).
    pub user: Option<String>,
    /// Environment variable holding the NATS password.
    pub password_env: Option<String>,
    /// The key-value bucket (created if missing). Default `FLEETWAKE_BUDGET`.
    pub bucket: String,
    /// Replicas of the bucket when it is created (3 on a cluster). Default 1.
    pub replicas: usize,
    /// Budget taken per lease, ms (10..=1000). Default 100.
    pub lease_ms: u64,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            url: None,
            token_env: None,
            user: None,
            password_env: None,
            bucket: SharedBudget::DEFAULT_BUCKET.into(),
            replicas: 1,
            lease_ms: 100,
        }
    }
}

impl BudgetSettings {
    /// Checks the bounds; the message says which key is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.bucket.is_empty()
            || !self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return Err(format!(
                "[budget] bucket {:?} is not a valid bucket name (letters, digits, '-' and '_')",
                self.bucket
            ));
        }
        if !(10..=1000).contains(&self.lease_ms) {
            return Err("[budget] lease_ms must be between 10 and 1000".into());
        }
        if self.replicas == 0 || self.replicas > 5 {
            return Err("[budget] replicas must be between 1 and 5".into());
        }
        if let Some(url) = &self.url {
            super::nats::server_addrs(url, "budget")?;
        }
        Ok(())
    }

    /// Connects and returns the shared budget, or `None` when no `url` is set.
    pub async fn connect(&self, name: &str) -> Result<Option<SharedBudget>, String> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let client = super::nats::connect(
            url,
            self.token_env.as_deref(),
            self.user.as_deref(),
            self.password_env.as_deref(),
            format!("fleetwake-budget {name}"),
            "budget",
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(Some(
            SharedBudget::new(client, self.bucket.clone())
                .replicas(self.replicas)
                .lease(Duration::from_millis(self.lease_ms)),
        ))
    }
}
