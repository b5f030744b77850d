//! `swarm simulate --plot FILE`: one SVG from the run's JSON. Hosts done
//! over time (swarm and the cascade), swarm's bytes delivered over time,
//! and the limit (every host receiving at full speed from the start),
//! against time in units of T*.

use serde_json::Value;
use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;

/// The SVG for `v`, a document of `sim::run`.
pub fn svg(v: &Value) -> String {
    let points = |x: &Value| -> Vec<(f64, f64)> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let swarm = points(&v["swarm"]["done_over_time"]);
    let bytes = points(&v["swarm"]["delivered_over_time"]);
    let cascade = points(&v["cascade"]["done_over_time"]);
    let bittorrent = points(&v["bittorrent"]["done_over_time"]);
    let last = |p: &[(f64, f64)]| p.last().map_or(0.0, |p| p.0);
    // the cascade may take 10x longer: show it up to 4x swarm's span
    let span = last(&swarm).max(last(&bytes).min(4.0)).max(1.0) * 1.15;
    let x_max = span
        .max(last(&cascade).min(4.0 * span))
        .max(last(&bittorrent).min(4.0 * span))
        .max(1.2);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |t: f64| LEFT + t.min(x_max) / x_max * pw;
    let y = |f: f64| TOP + (1.0 - f.clamp(0.0, 1.0)) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
"#
    );
    let sc = &v["scenario"];
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="18">{} x {} hosts, {:.0} MiB, T* = {:.2} s</text>"#,
        sc["groups"],
        sc["hosts_per_group"],
        sc["size_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        v["t_star_s"].as_f64().unwrap_or(0.0)
    );
    // axes and grid
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{x2:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="end">{p}%</text>"##,
            yy = y(f),
            x2 = LEFT + pw,
            tx = LEFT - 6.0,
            ty = y(f) + 4.0,
            p = i * 25
        );
    }
    let step = nice_step(x_max);
    let mut t = 0.0;
    while t <= x_max + 1e-9 {
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{yb:.1}" stroke="#eee"/><text x="{xx:.1}" y="{ty:.1}" text-anchor="middle">{t}</text>"##,
            xx = x(t),
            yb = TOP + ph,
            ty = TOP + ph + 16.0,
        );
        t = ((t + step) * 1000.0).round() / 1000.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time / T*</text>"#,
        LEFT + pw / 2.0,
        H - 12.0
    );
    // the limit: bytes at full speed from the start, done at T*
    let line = |pts: &[(f64, f64)]| -> String {
        pts.iter()
            .map(|&(t, f)| format!("{:.1},{:.1}", x(t), y(f)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let series: [(&str, String, &str, &str); 5] = [
        (
            "limit (bytes)",
            line(&[(0.0, 0.0), (1.0, 1.0), (x_max, 1.0)]),
            "#888",
            "2,3",
        ),
        ("swarm: bytes", line(&bytes), "#1f77b4", "6,3"),
        ("swarm: hosts done", line(&swarm), "#1f77b4", "none"),
        ("cascade: hosts done", line(&cascade), "#d62728", "none"),
        (
            "bittorrent-like: hosts done",
            line(&bittorrent),
            "#2ca02c",
            "none",
        ),
    ];
    for (i, (name, pts, color, dash)) in series.iter().enumerate() {
        let ly = TOP + 16.0 + 20.0 * i as f64;
        let lx = LEFT + pw + 14.0;
        let _ = writeln!(
            s,
            r#"<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>
<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0
        );
    }
    if last(&cascade) > x_max {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">(cascade ends at {:.1} T*)</text>"#,
            LEFT + pw + 14.0,
            TOP + 16.0 + 20.0 * 5.0 + 4.0,
            last(&cascade)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A step of 1, 2 or 5 times a power of ten that cuts `span` in 4 to 10.
fn nice_step(span: f64) -> f64 {
    let raw = span / 6.0;
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| span / s <= 10.0)
        .unwrap_or(10.0 * p)
}
