//! The documents that describe the service stay true to the code: every metric
//! the dashboard and the deployment guide name exists, and the wake-request
//! JSON Schema and the OpenAPI document describe the same message.

use std::collections::BTreeSet;
use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

/// Every `fleetwake_*` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("fleetwake_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        out.insert(name.trim_end_matches('_').to_string());
        rest = &rest[i + 10..];
    }
    out
}

#[test]
fn dashboard_and_guide_name_only_real_metrics() {
    let documented = metric_names(&read("src/telemetry.rs"));
    let dashboard = read("docs/grafana-dashboard.json");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let deployment = read("docs/DEPLOYMENT.md");
    for (doc, text) in [
        ("grafana-dashboard.json", &dashboard),
        ("DEPLOYMENT.md", &deployment),
    ] {
        let names = metric_names(text);
        assert!(!names.is_empty(), "{doc}");
        for n in names {
            // Config keys and env vars share the prefix; only metric-like names count.
            let metric = [
                "_total",
                "_seconds",
                "_in_flight",
                "_pending",
                "_open",
                "_connected",
                "_jobs",
                "_results",
            ]
            .iter()
            .any(|s| n.ends_with(s));
            if metric {
                assert!(
                    documented.contains(&n),
                    "{doc} names {n}, which src/telemetry.rs does not list"
                );
            }
        }
    }
}

#[test]
fn json_schema_and_openapi_describe_the_same_wake_request() {
    let schema: serde_json::Value =
        serde_json::from_str(&read("docs/wake-request.v1.schema.json")).unwrap();
    let openapi: serde_json::Value = serde_json::from_str(&read("docs/openapi.json")).unwrap();
    let wr = &openapi["components"]["schemas"]["WakeRequest"];
    assert_eq!(schema["properties"], wr["properties"]);
    assert_eq!(schema["required"], wr["required"]);
    assert_eq!(schema["additionalProperties"], false);
    // Every outcome kind is in the result schema.
    let kinds: Vec<&str> = openapi["components"]["schemas"]["WakeResult"]["properties"]["outcome"]
        ["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let all: Vec<&str> = fleetwake::OutcomeKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(kinds, all);
}
