//! Embedding fleetwake behind a queue of your own.
//!
//! `fleetwake consume` does this for NATS JetStream. If your MDM already has a
//! queue (SQS, Redis streams, a database table, an in-process channel), the
//! library gives you the same pieces:
//!
//! 1. an [`Engine`] (tenants, transport, rate limits, retries);
//! 2. [`WakeRequest::from_json`] to read the versioned message (schema v1);
//! 3. [`Engine::submit`] to get the one [`Outcome`] of each wake;
//! 4. [`WakeResult`] to report it as a campaign report row;
//! 5. your queue's ack / retry-later / reject, chosen by the outcome.
//!
//! Run it with `cargo run --example own_queue`. So that it runs anywhere, the
//! built-in WNS emulator stands in for Microsoft; with real credentials, drop
//! the emulator and keep `TransportConfig::default()`.

use std::sync::Arc;
use std::time::Duration;

use fleetwake::emulator::EmulatorConfig;
use fleetwake::service::{WakeRequest, WakeResult};
use fleetwake::{
    Credentials, Engine, PushOptions, RateLimit, Secret, TenantConfig, TransportConfig,
};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// What your queue does with a message once fleetwake is done with it.
enum Disposition {
    /// Final outcome reported: delete the message.
    Ack,
    /// Temporary failure that outlasted the engine's retries: deliver it again later.
    RetryIn(Duration),
    /// Malformed: move it to your dead-letter queue, with the reason.
    Reject(String),
}

/// One delivery from "your queue": a body and a way to settle it.
struct Delivery {
    body: Vec<u8>,
    settle: oneshot::Sender<Disposition>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // WNS: the emulator on 127.0.0.1, trusted through its generated test CA.
    let emu = EmulatorConfig::default().start().await?;
    let addr = emu.local_addr();
    let mut transport = TransportConfig {
        resolve: vec![
            format!("*.notify.windows.com={addr}").parse()?,
            format!("login.live.com={addr}").parse()?,
        ],
        webpki_roots: false,
        ..TransportConfig::default()
    };
    transport.add_ca_pem(emu.ca_pem().unwrap_or_default())?;

    // The engine: one tenant (a PFN and its credentials); the secret comes from
    // the environment in real use.
    let secret = std::env::var("CONTOSO_WNS_SECRET").unwrap_or_else(|_| "emulator-secret".into());
    let engine = Engine::builder()
        .tenant(
            TenantConfig::new(
                "contoso",
                Credentials::PackageSid {
                    package_sid: "ms-app://S-1-15-2-1111111111-2222222222".into(),
                    secret: Secret::new(secret),
                },
            )
            .rate_limit(RateLimit::per_second(500)),
        )
        .transport(transport)
        .build()?;

    // "Your queue": an in-process channel, filled by a producer.
    let (tx, mut queue) = mpsc::channel::<Delivery>(64);
    let producer = tokio::spawn(async move {
        let uri = |t: &str| format!("https://db5p.notify.windows.com/?token={t}");
        let bodies = vec![
            format!(
                r#"{{"v":1,"device_id":"laptop-1","tenant":"contoso","channel_uri":"{}"}}"#,
                uri("ok.1")
            ),
            format!(
                r#"{{"device_id":"laptop-2","tenant":"contoso","channel_uri":"{}","idempotency_key":"w-2"}}"#,
                uri("gone.2")
            ),
            format!(
                r#"{{"device_id":"laptop-3","tenant":"contoso","channel_uri":"{}"}}"#,
                uri("unavailable-2.3")
            ),
            r#"{"device_id":"laptop-4","tenant":"contoso"}"#.to_string(),
        ];
        for body in bodies {
            let (settle, settled) = oneshot::channel();
            if tx
                .send(Delivery {
                    body: body.into_bytes(),
                    settle,
                })
                .await
                .is_err()
            {
                break;
            }
            tokio::spawn(async move {
                match settled.await {
                    Ok(Disposition::Ack) => eprintln!("queue: done, delete the message"),
                    Ok(Disposition::RetryIn(d)) => eprintln!("queue: deliver it again in {d:?}"),
                    Ok(Disposition::Reject(why)) => {
                        eprintln!("queue: to the dead-letter queue: {why}")
                    }
                    Err(_) => eprintln!("queue: not settled; it will be delivered again"),
                }
            });
        }
    });

    // The worker: at most 256 messages in flight.
    let slots = Arc::new(Semaphore::new(256));
    let mut workers = tokio::task::JoinSet::new();
    while let Some(delivery) = queue.recv().await {
        let slot = slots.clone().acquire_owned().await?;
        let engine = engine.clone();
        workers.spawn(async move {
            let d = handle(&engine, &delivery.body).await;
            let _ = delivery.settle.send(d);
            drop(slot);
        });
    }
    producer.await?;
    while workers.join_next().await.is_some() {}
    engine.shutdown(Duration::from_secs(30)).await;
    emu.shutdown().await;
    Ok(())
}

/// One message: parse, wake, report, and say what the queue should do.
async fn handle(engine: &Engine, body: &[u8]) -> Disposition {
    let req = match WakeRequest::from_json(body) {
        Ok(r) => r,
        Err(why) => return Disposition::Reject(why.to_string()),
    };
    let outcome = match req.to_notification(&PushOptions::default()) {
        Ok(n) => engine.submit(n).await,
        Err(refused) => *refused, // e.g. a channel URI outside WNS: a final outcome
    };
    if outcome.kind.is_retryable() {
        let later = outcome
            .retry_after
            .unwrap_or_default()
            .max(Duration::from_secs(30));
        return Disposition::RetryIn(later);
    }
    // Report the final outcome (here on stdout; in real use, your results topic
    // or the MDM database) before acknowledging the message.
    let row = WakeResult::new(&req, &outcome);
    println!("{}", serde_json::to_string(&row).unwrap_or_default());
    Disposition::Ack
}
