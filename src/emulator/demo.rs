//! The demo fleet: a deterministic device list whose channel tokens make the
//! emulator answer with a realistic mix of outcomes, and the outcome counts a
//! correct campaign must report for it.
//!
//! The mix (per device, drawn from a seeded generator): mostly online; some
//! offline (WNS caches the push); some expired (410), invalid (404), of another
//! app (403); a few throttled or dropped; a few that fail once with 503 and then
//! succeed; about 1% that share a channel with an earlier device; and a handful
//! of bad rows (a host outside WNS, a broken line, an unknown tenant).

use std::collections::BTreeMap;
use std::io::Write;

/// Hosts the demo channels are spread over (each gets its own connection pool).
pub const DEMO_HOSTS: &[&str] = &["db5p", "am3p", "bn3p", "sg2p"];

/// Tenants the demo fleet uses.
pub const DEMO_TENANTS: &[&str] = &["contoso", "fabrikam"];

/// Writes a CSV fleet of `devices` rows and returns the expected outcome counts.
pub fn write_fleet(
    out: &mut impl Write,
    devices: u64,
    seed: u64,
) -> std::io::Result<BTreeMap<&'static str, u64>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut expected: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut earlier: Vec<(String, &'static str)> = Vec::new();
    writeln!(out, "device_id,channel_uri,tenant,channel_seen_at")?;
    let bad_every = (devices / 10).max(1);
    for i in 0..devices {
        let id = format!("dev-{i:07}");
        let tenant = DEMO_TENANTS[(i % 2) as usize];
        let host = DEMO_HOSTS[rng.usize(..DEMO_HOSTS.len())];
        if i % bad_every == bad_every / 2 && i > 0 {
            // A handful of bad rows, spread through the file.
            match (i / bad_every) % 3 {
                0 => {
                    writeln!(
                        out,
                        "{id},https://notify.windows.com.evil.test/?token=ok.{i},{tenant},"
                    )?;
                    *expected.entry("invalid_channel").or_default() += 1;
                }
                1 => {
                    writeln!(
                        out,
                        "{id},\"https://{host}.notify.windows.com/?token=ok.{i},{tenant}"
                    )?;
                    *expected.entry("invalid_input").or_default() += 1;
                }
                _ => {
                    writeln!(
                        out,
                        "{id},https://{host}.notify.windows.com/?token=ok.{i},initech,"
                    )?;
                    *expected.entry("unknown_tenant").or_default() += 1;
                }
            }
            continue;
        }
        let roll = rng.u32(..10_000);
        if roll < 100 && !earlier.is_empty() {
            // Shares the channel of an earlier device: pushed once, same outcome.
            let (uri, outcome) = earlier[rng.usize(..earlier.len())].clone();
            writeln!(out, "{id},{uri},{tenant},")?;
            *expected.entry(outcome).or_default() += 1;
            continue;
        }
        let (behaviour, outcome) = match roll {
            0..=8399 => ("ok", "received"),
            8400..=8999 => ("offline", "received"),
            9000..=9399 => ("gone", "channel_expired"),
            9400..=9599 => ("invalid", "channel_invalid"),
            9600..=9699 => ("otherapp", "channel_app_mismatch"),
            9700..=9749 => ("channelthrottled", "channel_throttled"),
            9750..=9799 => ("dropped", "dropped"),
            _ => ("flaky-1", "received"),
        };
        let uri = format!("https://{host}.notify.windows.com/?token={behaviour}.{i}");
        writeln!(out, "{id},{uri},{tenant},")?;
        *expected.entry(outcome).or_default() += 1;
        if earlier.len() < 4096 {
            // Duplicates must share a channel of the same tenant's app; both
            // demo tenants accept any channel in the emulator.
            earlier.push((uri, outcome));
        }
    }
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_counted() {
        let mut a = Vec::new();
        let ea = write_fleet(&mut a, 5000, 7).unwrap();
        let mut b = Vec::new();
        let eb = write_fleet(&mut b, 5000, 7).unwrap();
        assert_eq!(a, b);
        assert_eq!(ea, eb);
        assert_eq!(ea.values().sum::<u64>(), 5000);
        assert!(ea["received"] > 4000);
        for k in [
            "channel_expired",
            "channel_invalid",
            "channel_app_mismatch",
            "invalid_channel",
            "invalid_input",
            "unknown_tenant",
        ] {
            assert!(ea.get(k).copied().unwrap_or(0) > 0, "{k} missing: {ea:?}");
        }
    }
}
