//! Criterion benches for each piece of the hot path, and one end-to-end bench
//! of the engine against the in-process emulator (TLS, HTTP/2).
//!
//! ```text
//! cargo bench --bench hot_path                      # all
//! cargo bench --bench hot_path -- classify          # one group
//! cargo bench --bench hot_path -- --warm-up-time 0.5 --measurement-time 2
//! ```
//!
//! These are measurements, not tests: CI only builds them (`cargo bench --no-run`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};

use fleetwake::campaign::dedupe::{ChannelKey, ChannelState, ChannelTable};
use fleetwake::emulator::EmulatorConfig;
use fleetwake::engine::{shard_of, PfnLimiter, TokenCache};
use fleetwake::telemetry::TenantMetrics;
use fleetwake::transport::{codec_bench, Transport, TransportConfig};
use fleetwake::wns::credentials::parse_token_response;
use fleetwake::wns::{
    bearer, build_push, build_push_with_auth, classify, ChannelUri, CorrelationVector, Outcome,
    OutcomeKind, Payload, PushOptions, Secret,
};
use fleetwake::{Credentials, Engine, Notification, RateLimit, TenantConfig};

const CHANNEL: &str = "https://db5p.notify.windows.com/?token=AwYAAAB2%2bHvT0rEd6kSXy1f5rpP8a1XhJn1yPp0xQq9nA3yX%2fk7zQk5d1bQYkJ1nFv0Y%3d";

/// The bench channel, a token, and its `Authorization` value.
fn channel_and_token() -> (ChannelUri, Secret, HeaderValue) {
    let channel = ChannelUri::parse(CHANNEL).expect("valid channel");
    let token =
        Secret::new("EgAaAQMAAAAEgAAACoAAx0bXKkN0r8ngwJmFWYh4lF2mtn9vm7u4vP9CkE2F0o0yYdQ3Lw");
    let auth = bearer(&token).expect("valid token");
    (channel, token, auth)
}

fn request(c: &mut Criterion) {
    let (channel, token, auth) = channel_and_token();
    let payload = Payload::wake();
    let options = PushOptions::default();
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_channel_uri", |b| {
        b.iter(|| ChannelUri::parse(black_box(CHANNEL)))
    });
    g.bench_function("correlation_vector", |b| b.iter(CorrelationVector::new));
    g.bench_function("build_push_with_auth", |b| {
        b.iter(|| {
            let cv = CorrelationVector::new();
            build_push_with_auth(black_box(&channel), &auth, &payload, &options, &cv)
        })
    });
    g.bench_function("build_push_formatting_the_token", |b| {
        b.iter(|| {
            let cv = CorrelationVector::new();
            build_push(black_box(&channel), &token, &payload, &options, &cv)
        })
    });
    g.finish();
}

fn classify_bench(c: &mut Criterion) {
    let mut ok = HeaderMap::new();
    ok.insert("server", HeaderValue::from_static("nginx/1.22.1"));
    ok.insert(
        "date",
        HeaderValue::from_static("Sat, 28 Nov 2026 06:02:51 GMT"),
    );
    ok.insert("content-length", HeaderValue::from_static("0"));
    ok.insert("x-wns-status", HeaderValue::from_static("received"));
    ok.insert("x-wns-msg-id", HeaderValue::from_static("1A2B3C4D5E6F7081"));
    ok.insert(
        "ms-cv",
        HeaderValue::from_static("tul4NUsfs0Kpwlb4ZnLnXw.0"),
    );
    let mut throttled = HeaderMap::new();
    throttled.insert("retry-after", HeaderValue::from_static("30"));
    throttled.insert(
        "x-wns-error-description",
        HeaderValue::from_static("Throttled"),
    );
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("received_200", |b| {
        b.iter(|| Outcome::from_classified(classify(StatusCode::OK, black_box(&ok))))
    });
    g.bench_function("throttled_406", |b| {
        b.iter(|| {
            Outcome::from_classified(classify(StatusCode::NOT_ACCEPTABLE, black_box(&throttled)))
        })
    });
    let outcome = Outcome::from_classified(classify(StatusCode::OK, &ok));
    g.bench_function("outcome_clone_per_waiter", |b| {
        b.iter(|| black_box(&outcome).clone())
    });
    g.finish();
}

fn token(c: &mut Criterion) {
    let body = br#"{"access_token":"EgAaAQMAAAAEgAAACoAAx0bXKkN0r8ngwJmFWYh4lF2mtn9vm7u4vP9CkE2F0o0yYdQ3Lw","token_type":"bearer","expires_in":86400}"#;
    let mut g = c.benchmark_group("token");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_token_response", |b| {
        b.iter(|| parse_token_response(200, None, black_box(&body[..])))
    });
    // The hot read: a cached, fresh token (one fetch from the emulator first).
    let rt = runtime();
    let cache = rt.block_on(async {
        let emu = EmulatorConfig::default().start().await.expect("emulator");
        let addr = emu.local_addr();
        let mut cfg = TransportConfig {
            webpki_roots: false,
            resolve: vec![format!("login.live.com={addr}").parse().expect("override")],
            ..TransportConfig::default()
        };
        cfg.add_ca_pem(emu.ca_pem().unwrap_or_default())
            .expect("ca");
        let transport = Transport::new(cfg).expect("transport");
        let cache = Arc::new(TokenCache::new(
            Arc::from("bench"),
            sid_credentials(),
            transport,
            TenantMetrics::new("bench"),
            Duration::from_secs(60),
            Duration::from_secs(10),
        ));
        cache.get().await.expect("first token");
        std::mem::forget(emu); // keep serving for the process' life
        cache
    });
    // The two reads on the hot path: `ready` before the waits, `current`
    // immediately before the request is built.
    g.bench_function("token_cache_ready_fresh", |b| {
        b.to_async(&rt).iter(|| {
            let cache = cache.clone();
            async move { cache.ready().await }
        })
    });
    g.bench_function("token_cache_current_fresh", |b| {
        b.iter(|| cache.current().map(|t| t.expires_at))
    });
    g.finish();
}

fn limiter_and_coalescer(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("limiter");
    g.throughput(Throughput::Elements(1));
    let open = PfnLimiter::new(RateLimit::per_second(10_000_000).with_burst(10_000_000));
    let far = Instant::now() + Duration::from_secs(3600);
    g.bench_function("until_ready_not_binding", |b| {
        b.to_async(&rt).iter(|| open.until_ready(far))
    });
    g.finish();

    let mut g = c.benchmark_group("coalescer");
    g.throughput(Throughput::Elements(1));
    g.bench_function("channel_key", |b| {
        b.iter(|| ChannelKey::of(black_box(CHANNEL)))
    });
    let keys: Vec<ChannelKey> = (0..100_000)
        .map(|i| ChannelKey::of(&format!("{CHANNEL}{i}")))
        .collect();
    // 1,000 channels: a lookup and an insert each, then the final state (3,000 operations).
    g.throughput(Throughput::Elements(3000));
    g.bench_function("channel_table_1000_channels_seen_then_done", |b| {
        b.iter_batched_ref(
            ChannelTable::new,
            |t| {
                for k in &keys[..1000] {
                    if t.state(*k) == ChannelState::New {
                        t.set(*k, ChannelState::Pending);
                    }
                }
                for k in &keys[..1000] {
                    t.set(*k, ChannelState::Done(OutcomeKind::Received));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("sharding");
    g.throughput(Throughput::Elements(1));
    g.bench_function("shard_of", |b| b.iter(|| shard_of(black_box(CHANNEL), 4)));
    g.finish();
}

/// The transport's sans-IO codecs in their steady state (one connection's
/// caches and HPACK tables warm): encoding a push, reading nginx's answer.
fn codecs(c: &mut Criterion) {
    let (channel, _, auth) = channel_and_token();
    let cv = CorrelationVector::new();
    let push = build_push_with_auth(
        &channel,
        &auth,
        &Payload::wake(),
        &PushOptions::default(),
        &cv,
    )
    .expect("request");
    let head: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\
        Date: Tue, 01 Dec 2026 03:37:54 GMT\r\nContent-Type: text/plain\r\n\
        Content-Length: 0\r\nConnection: keep-alive\r\nX-WNS-Status: received\r\n\
        X-WNS-NotificationStatus: received\r\nX-WNS-Msg-ID: 1A2B3C4D5E6F7081\r\n\r\n";
    let block = codec_bench::nginx_like_answer_block();

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    let mut heads = codec_bench::Http1Heads::default();
    assert_eq!(heads.parse(head), Some((head.len(), 8)));
    g.bench_function("http1_parse_nginx_answer_head", |b| {
        b.iter(|| heads.parse(black_box(head)))
    });
    let mut out = Vec::with_capacity(1024);
    g.bench_function("http1_encode_push", |b| {
        b.iter(|| {
            out.clear();
            codec_bench::http1_encode(black_box(&push), &mut out)
        })
    });
    let mut hpack = codec_bench::Hpack::default();
    assert_eq!(hpack.decode(&block), Some(7));
    g.bench_function("hpack_decode_nginx_answer", |b| {
        b.iter(|| hpack.decode(black_box(&block)))
    });
    let mut dst = BytesMut::with_capacity(1024);
    g.bench_function("hpack_encode_push", |b| {
        b.iter(|| {
            dst.clear();
            hpack.encode_request(black_box(&push), &mut dst)
        })
    });
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    let rt = runtime();
    let engine = rt.block_on(async {
        let emu = EmulatorConfig::default().start().await.expect("emulator");
        let addr = emu.local_addr();
        let mut t = TransportConfig {
            webpki_roots: false,
            resolve: vec![
                format!("*.notify.windows.com={addr}")
                    .parse()
                    .expect("override"),
                format!("login.live.com={addr}").parse().expect("override"),
            ],
            ..TransportConfig::default()
        };
        t.add_ca_pem(emu.ca_pem().unwrap_or_default()).expect("ca");
        let tenant = TenantConfig::new("bench", sid_credentials())
            .rate_limit(RateLimit::per_second(10_000_000))
            .max_in_flight(4096);
        let engine = Engine::builder()
            .transport(t)
            .tenant(tenant)
            .build()
            .expect("engine");
        std::mem::forget(emu);
        engine
    });
    let tenant: Arc<str> = Arc::from("bench");
    let mut next = 0u64;
    let mut g = c.benchmark_group("end_to_end");
    const BATCH: u64 = 2000;
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(20);
    g.bench_function("engine_emulator_h2_2000_wakes_400_in_flight", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let start = next;
                next += BATCH;
                (start..start + BATCH)
                    .map(|i| {
                        let uri = format!("https://bench.notify.windows.com/?token=ok.{i}");
                        let n = Notification::wake(
                            tenant.clone(),
                            ChannelUri::parse(&uri).expect("valid"),
                        );
                        (i, n)
                    })
                    .collect::<Vec<_>>()
            },
            |batch| {
                let engine = engine.clone();
                async move {
                    let received = engine
                        .submit_iter(batch, 400)
                        .filter(|(_, o)| std::future::ready(o.kind.is_success()))
                        .count()
                        .await;
                    assert_eq!(received as u64, BATCH);
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn sid_credentials() -> Credentials {
    Credentials::PackageSid {
        package_sid: "ms-app://S-1-15-2-1111111111-2222222222-3333333333".into(),
        secret: Secret::new("bench"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

criterion_group!(
    benches,
    request,
    classify_bench,
    token,
    limiter_and_coalescer,
    codecs,
    end_to_end
);
criterion_main!(benches);
