//! The HTML report: one self-contained page (no external assets) with the
//! outcome breakdown, throughput and latency over time as inline SVG, and the
//! action lists.

use std::fmt::Write as _;
use std::path::Path;

use super::summary::Summary;
use super::TimelinePoint;
use crate::wns::OutcomeKind;

/// How many device ids of each action list are shown inline.
pub const INLINE_LIST: usize = 200;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

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
fn line_chart(title: &str, unit: &str, points: &[TimelinePoint], series: &[Series<'_>]) -> String {
    let (w, h, pad) = (760.0, 220.0, 44.0);
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    if points.is_empty() {
        svg.push_str(r#"<text x="20" y="40">no data</text></svg></figure>"#);
        return svg;
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
    let _ = write!(
        svg,
        r##"<line x1="{pad}" y1="{}" x2="{}" y2="{}" stroke="#999"/>"##,
        h - pad + 10.0,
        w - pad,
        h - pad + 10.0
    );
    let _ = write!(
        svg,
        r##"<line x1="{pad}" y1="{}" x2="{pad}" y2="{}" stroke="#999"/>"##,
        pad - 10.0,
        h - pad + 10.0
    );
    for i in 0..=4 {
        let v = ymax * i as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<text x="4" y="{:.1}" font-size="10" fill="#555">{:.0}</text>"##,
            y(v) + 3.0,
            v
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" font-size="10" fill="#555">{:.0} s</text>"##,
        w - pad - 20.0,
        h - 8.0,
        tmax
    );
    let _ = write!(
        svg,
        r##"<text x="{pad}" y="{}" font-size="10" fill="#555">{}</text>"##,
        pad - 16.0,
        esc(unit)
    );
    for (i, (name, col, f)) in series.iter().enumerate() {
        let pts: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.t), y(f(p))))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{col}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        let _ = write!(
            svg,
            r#"<rect x="{}" y="6" width="10" height="10" fill="{col}"/><text x="{}" y="15" font-size="11">{}</text>"#,
            w - 220.0 + i as f64 * 100.0,
            w - 206.0 + i as f64 * 100.0,
            esc(name)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

/// Writes the page.
pub fn write(path: &Path, summary: &Summary, timeline: &[TimelinePoint]) -> std::io::Result<()> {
    let mut page = String::new();
    page.push_str(r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>fleetwake campaign report</title><style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:980px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px}td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.bar{height:14px;display:inline-block}
.kpi{display:inline-block;margin:0 18px 12px 0;padding:10px 14px;background:#f5f7fa;border-radius:6px}
.kpi b{display:block;font-size:20px}figure{margin:12px 0}figcaption{font-weight:600;font-size:13px}
code{background:#f3f3f3;padding:1px 4px;border-radius:3px}details{margin:6px 0}
</style></head><body>"#);
    let _ = write!(
        page,
        "<h1>fleetwake campaign report</h1><p>Report: <code>{}</code></p>",
        esc(&summary.report.display().to_string())
    );
    for (k, v) in [
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
    ] {
        let _ = write!(
            page,
            r#"<div class="kpi">{}<b>{}</b></div>"#,
            esc(k),
            esc(&v)
        );
    }
    if summary.interrupted {
        page.push_str(
            "<p><b>The run was interrupted; run the same command again to resume.</b></p>",
        );
    }
    page.push_str("<h2>Outcomes</h2><table><tr><th>outcome</th><th>devices</th><th>share</th><th></th><th>MDM action</th></tr>");
    let total = summary.devices.max(1) as f64;
    let mut rows: Vec<_> = summary.by_outcome.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1));
    for (k, n) in rows {
        let share = *n as f64 / total;
        let action = k
            .parse::<OutcomeKind>()
            .map(|o| o.mdm_action().describe())
            .unwrap_or("");
        let _ = write!(
            page,
            r#"<tr><td>{}</td><td class="n">{}</td><td class="n">{:.2}%</td><td><span class="bar" style="width:{:.0}px;background:{}"></span></td><td>{}</td></tr>"#,
            esc(k),
            n,
            share * 100.0,
            (share * 300.0).max(1.0),
            color(k),
            esc(action)
        );
    }
    page.push_str("</table>");
    page.push_str("<h2>Throughput and latency over time</h2>");
    page.push_str(&line_chart(
        "Devices finished per second",
        "devices/s",
        timeline,
        &[
            ("all", "#1565c0", |p| p.per_s),
            ("received", "#2e7d32", |p| p.received_per_s),
        ],
    ));
    page.push_str(&line_chart(
        "Push latency (ms)",
        "ms",
        timeline,
        &[
            ("p50", "#2e7d32", |p| p.p50_ms),
            ("p95", "#c62828", |p| p.p95_ms),
        ],
    ));
    page.push_str("<h2>Action lists</h2>");
    if summary.action_lists.is_empty() {
        page.push_str("<p>No device needs an action.</p>");
    }
    for (action, file) in &summary.action_lists {
        let desc = OutcomeKind::ALL
            .iter()
            .map(|o| o.mdm_action())
            .find(|a| a.as_str() == action)
            .map(|a| a.describe())
            .unwrap_or("");
        let n = summary.by_action.get(action).copied().unwrap_or(0);
        let _ = write!(
            page,
            "<details><summary><b>{}</b>: {} devices. {} <code>{}</code></summary><table><tr><th>device</th><th>tenant</th><th>outcome</th><th>line</th></tr>",
            esc(action),
            n,
            esc(desc),
            esc(&file.display().to_string())
        );
        if let Ok(text) = std::fs::read_to_string(file) {
            for l in text.lines().skip(1).take(INLINE_LIST) {
                let f: Vec<&str> = l.split(',').collect();
                let g = |i: usize| f.get(i).copied().unwrap_or("");
                let _ = write!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(g(0)),
                    esc(g(1)),
                    esc(g(f.len().saturating_sub(2))),
                    esc(g(f.len().saturating_sub(1)))
                );
            }
            if n as usize > INLINE_LIST {
                let _ = write!(
                    page,
                    "<tr><td colspan=4>… {} more in the file</td></tr>",
                    n as usize - INLINE_LIST
                );
            }
        }
        page.push_str("</table></details>");
    }
    page.push_str("</body></html>\n");
    std::fs::write(path, page)
}
