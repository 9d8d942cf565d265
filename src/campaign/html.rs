//! The HTML report: one self-contained page (no external assets, no script)
//! with the outcome and action breakdowns, throughput and latency over time
//! as inline SVG, and the first devices of each action list.
//!
//! The page is built with `maud`, which escapes every value it inserts unless
//! told otherwise: device ids, tenants and channel URIs come from the input
//! file and may hold anything (`<script>`, `"><img onerror=…>`, `</svg>`,
//! bidi overrides, 10 kB strings). They are inserted as text only, each
//! inside `<bdi>` so that a bidi override cannot reorder the text around it,
//! in cells that wrap anywhere so that a long one cannot widen the page. A
//! Content-Security-Policy that allows no script and no request backs this up
//! (tests/browser.rs checks the rendered page in headless Chromium).

use std::path::Path;

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::summary::{Summary, INLINE_LIST};
use super::TimelinePoint;
use crate::wns::OutcomeKind;

const STYLE: &str = "
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:980px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px}td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}.bar{height:14px;display:inline-block}
table.list{table-layout:fixed;width:100%}table.list td{overflow-wrap:anywhere;word-break:break-all}
.kpi{display:inline-block;margin:0 18px 12px 0;padding:10px 14px;background:#f5f7fa;border-radius:6px}
.kpi b{display:block;font-size:20px}figure{margin:12px 0}figcaption{font-weight:600;font-size:13px}
code{background:#f3f3f3;padding:1px 4px;border-radius:3px;overflow-wrap:anywhere;word-break:break-all}
details{margin:6px 0}summary{cursor:pointer}
";

/// No script, no request: the page stands alone, offline.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

fn color(outcome: &str) -> &'static str {
    match outcome {
        "received" => "#2e7d32",
        "channel_expired" | "channel_stale" => "#ef6c00",
        "channel_invalid" => "#c62828",
        "channel_app_mismatch" => "#6a1b9a",
        "dropped" | "channel_throttled" => "#f9a825",
        "invalid_channel" | "invalid_input" | "unknown_tenant" => "#455a64",
        _ => "#1565c0",
    }
}

/// A named, coloured series: how to read its value from a point.
type Series<'a> = (&'a str, &'a str, fn(&TimelinePoint) -> f64);

/// A line chart of one or more series over the timeline.
fn line_chart(title: &str, unit: &str, points: &[TimelinePoint], series: &[Series<'_>]) -> Markup {
    let (w, h, pad) = (760.0_f64, 220.0_f64, 44.0_f64);
    if points.is_empty() {
        return html! {
            figure { figcaption { (title) }
                svg viewBox=(format!("0 0 {w} {h}")) width=(w) height=(h) role="img" aria-label=(title) {
                    text x="20" y="40" { "no data" }
                }
            }
        };
    }
    let tmax = points.iter().map(|p| p.t).fold(1.0_f64, f64::max);
    let ymax = points
        .iter()
        .flat_map(|p| series.iter().map(move |(_, _, f)| f(p)))
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.1;
    let x = |t: f64| pad + (t / tmax) * (w - 2.0 * pad);
    let y = |v: f64| h - pad + 10.0 - (v / ymax) * (h - 2.0 * pad);
    let base = h - pad + 10.0;
    html! {
        figure { figcaption { (title) }
            svg viewBox=(format!("0 0 {w} {h}")) width=(w) height=(h) role="img" aria-label=(title) {
                line x1=(pad) y1=(base) x2=(w - pad) y2=(base) stroke="#999" {}
                line x1=(pad) y1=(pad - 10.0) x2=(pad) y2=(base) stroke="#999" {}
                @for i in 0..=4 {
                    @let v = ymax * f64::from(i) / 4.0;
                    text x="4" y=(format!("{:.1}", y(v) + 3.0)) font-size="10" fill="#555" { (format!("{v:.0}")) }
                }
                text x=(w - pad - 20.0) y=(h - 8.0) font-size="10" fill="#555" { (format!("{tmax:.0} s")) }
                text x=(pad) y=(pad - 16.0) font-size="10" fill="#555" { (unit) }
                @for (i, (name, col, f)) in series.iter().enumerate() {
                    @let pts = points.iter().map(|p| format!("{:.1},{:.1}", x(p.t), y(f(p)))).collect::<Vec<_>>().join(" ");
                    polyline class="series" fill="none" stroke=(col) stroke-width="2" points=(pts) {}
                    // A run shorter than two seconds has one point: show it.
                    @if points.len() == 1 {
                        circle cx=(format!("{:.1}", x(points[0].t))) cy=(format!("{:.1}", y(f(&points[0])))) r="4" fill=(col) {}
                    }
                    rect x=(w - 220.0 + i as f64 * 100.0) y="6" width="10" height="10" fill=(col) {}
                    text x=(w - 206.0 + i as f64 * 100.0) y="15" font-size="11" { (name) }
                }
            }
        }
    }
}

fn describe_action(action: &str) -> &'static str {
    OutcomeKind::ALL
        .iter()
        .map(|o| o.mdm_action())
        .find(|a| a.as_str() == action)
        .map(|a| a.describe())
        .unwrap_or("")
}

/// The page, as HTML text.
pub fn render(summary: &Summary, timeline: &[TimelinePoint]) -> String {
    let total = summary.devices.max(1) as f64;
    let mut outcomes: Vec<_> = summary.by_outcome.iter().collect();
    outcomes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut actions: Vec<_> = summary.by_action.iter().collect();
    actions.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let kpis = [
        ("devices", summary.devices.to_string()),
        ("received", summary.received().to_string()),
        ("not received", summary.not_received().to_string()),
        ("requests", summary.requests.to_string()),
        ("throughput", format!("{:.0}/s", summary.devices_per_s)),
        (
            "latency p50 / p99",
            format!(
                "{:.1} / {:.1} ms",
                summary.latency_ms.p50, summary.latency_ms.p99
            ),
        ),
    ];
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content=(CSP);
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "fleetwake campaign report" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "fleetwake campaign report" }
                p { "Report: " code { bdi { (summary.report.display().to_string()) } } }
                @for (k, v) in &kpis {
                    div class="kpi" data-kpi=(k) { (k) b { (v) } }
                }
                @if summary.interrupted {
                    p { b { "The run was interrupted; run the same command again to resume." } }
                }
                h2 { "Outcomes" }
                table id="outcomes" {
                    tr { th { "outcome" } th { "devices" } th { "share" } th {} th { "MDM action" } }
                    @for (k, n) in &outcomes {
                        @let share = **n as f64 / total;
                        @let action = k.parse::<OutcomeKind>().map(|o| o.mdm_action().describe()).unwrap_or("");
                        tr data-outcome=(k) {
                            td { (k) }
                            td class="n" { (n) }
                            td class="n" { (format!("{:.2}%", share * 100.0)) }
                            td { span class="bar" style=(format!("width:{:.0}px;background:{}", (share * 300.0).max(1.0), color(k))) {} }
                            td { (action) }
                        }
                    }
                }
                h2 { "MDM actions" }
                table id="actions" {
                    tr { th { "action" } th { "devices" } th { "what to do" } }
                    @for (a, n) in &actions {
                        tr data-action=(a) { td { (a) } td class="n" { (n) } td { (describe_action(a)) } }
                    }
                }
                h2 { "Throughput and latency over time" }
                (line_chart("Devices finished per second", "devices/s", timeline, &[
                    ("all", "#1565c0", |p| p.per_s),
                    ("received", "#2e7d32", |p| p.received_per_s),
                ]))
                (line_chart("Push latency (ms)", "ms", timeline, &[
                    ("p50", "#2e7d32", |p| p.p50_ms),
                    ("p95", "#c62828", |p| p.p95_ms),
                ]))
                h2 { "Action lists" }
                @if summary.action_lists.is_empty() {
                    p { "No device needs an action." }
                }
                @for (action, file) in &summary.action_lists {
                    @let n = summary.by_action.get(action).copied().unwrap_or(0);
                    @let examples = summary.action_examples.get(action).map(Vec::as_slice).unwrap_or(&[]);
                    details data-list=(action) {
                        summary {
                            b { (action) } ": " (n) " devices. " (describe_action(action)) " "
                            code { bdi { (file.display().to_string()) } }
                        }
                        table class="list" {
                            tr { th { "device" } th { "tenant" } th { "outcome" } th { "line" } }
                            @for e in examples {
                                tr {
                                    td { bdi { (e.device_id) } }
                                    td { bdi { (e.tenant) } }
                                    td { (e.outcome) }
                                    td { @if let Some(l) = e.line { (l) } }
                                }
                            }
                            @if n as usize > INLINE_LIST {
                                tr { td colspan="4" { "… " (n as usize - INLINE_LIST) " more in the file" } }
                            }
                        }
                    }
                }
            }
        }
    };
    let mut text = page.into_string();
    text.push('\n');
    text
}

/// Writes the page.
pub fn write(path: &Path, summary: &Summary, timeline: &[TimelinePoint]) -> std::io::Result<()> {
    std::fs::write(path, render(summary, timeline))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::summary::ActionExample;

    #[test]
    fn input_is_text_never_markup() {
        let hostile =
            "<script>alert(1)</script>\"><img src=x onerror=alert(2)></svg>\u{202e}gnp.exe";
        let mut s = Summary {
            devices: 1,
            ..Summary::default()
        };
        s.by_outcome.insert("channel_expired".into(), 1);
        s.by_action.insert("reset_pfn_at_next_sync".into(), 1);
        s.action_lists
            .insert("reset_pfn_at_next_sync".into(), "/tmp/x.csv".into());
        s.action_examples.insert(
            "reset_pfn_at_next_sync".into(),
            vec![ActionExample {
                device_id: hostile.into(),
                tenant: hostile.into(),
                outcome: "channel_expired".into(),
                line: Some(2),
            }],
        );
        let page = render(&s, &[]);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img"));
        assert!(
            page.contains("<bdi>&lt;script"),
            "isolated from bidi overrides"
        );
        assert!(page.contains("Content-Security-Policy"));
    }
}
