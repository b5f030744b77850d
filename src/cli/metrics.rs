//! `--metrics ADDR`: the live `Status` as Prometheus text at
//! `http://ADDR/metrics`, for a fleet-wide view of a push ("which hosts
//! are not done?", see docs/operations.md).
//!
//! The `prometheus` crate encodes, in the text format 0.0.4 that
//! `promtool check metrics` lints (prometheus-client writes OpenMetrics,
//! whose counter families promtool reads as untyped series); the HTTP
//! side is a plain GET answered and closed, which is all a scraper needs:
//! a request must arrive whole within `REQUEST_TIMEOUT` and fit
//! `MAX_REQUEST`, and at most `MAX_CLIENTS` are served at once, so no
//! client holds memory or a task for long.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::node::Status;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 8 << 10;
const MAX_CLIENTS: usize = 8;

struct Metrics {
    registry: Registry,
    received: IntCounterVec,
    served: IntCounterVec,
    from_basis: IntCounter,
    pieces: IntGauge,
    image_pieces: IntGauge,
    image_bytes: IntGauge,
    peers: IntGauge,
    peers_complete: IntGauge,
    corrupt: IntCounter,
    banned: IntCounter,
    complete: IntGauge,
    complete_secs: Gauge,
    info: IntGaugeVec,
}

impl Metrics {
    fn new() -> Metrics {
        let opts = |name: &str, help: &str| Opts::new(name, help).namespace("swarm");
        let by_peers = |name, help| IntCounterVec::new(opts(name, help), &["peers"]);
        let m = Metrics {
            registry: Registry::new(),
            received: by_peers(
                "received_bytes_total",
                "Verified piece bytes received, by the peers' group (same or other)",
            )
            .expect("valid"),
            served: by_peers(
                "served_bytes_total",
                "Piece bytes served, by the peers' group (same or other)",
            )
            .expect("valid"),
            from_basis: IntCounter::with_opts(opts(
                "basis_bytes_total",
                "Bytes of the copy taken from the local basis, not received",
            ))
            .expect("valid"),
            pieces: IntGauge::with_opts(opts("pieces", "Pieces held, verified")).expect("valid"),
            image_pieces: IntGauge::with_opts(opts("image_pieces", "Pieces of the image"))
                .expect("valid"),
            image_bytes: IntGauge::with_opts(opts("image_bytes", "Bytes of the image"))
                .expect("valid"),
            peers: IntGauge::with_opts(opts("peers", "Peers connected")).expect("valid"),
            peers_complete: IntGauge::with_opts(opts(
                "peers_complete",
                "Peers known to hold a complete copy",
            ))
            .expect("valid"),
            corrupt: IntCounter::with_opts(opts(
                "corrupt_pieces_total",
                "Pieces received that failed verification",
            ))
            .expect("valid"),
            banned: IntCounter::with_opts(opts(
                "banned_peers_total",
                "Peers dropped for a piece that failed verification",
            ))
            .expect("valid"),
            complete: IntGauge::with_opts(opts(
                "complete",
                "1 once this host holds the complete, verified copy",
            ))
            .expect("valid"),
            complete_secs: Gauge::with_opts(opts(
                "complete_seconds",
                "Seconds from start until the copy was complete (0 until then)",
            ))
            .expect("valid"),
            info: IntGaugeVec::new(
                opts("info", "The run: role, group, version (always 1)"),
                &["role", "group", "version"],
            )
            .expect("valid"),
        };
        let r = &m.registry;
        let all: [Box<dyn prometheus::core::Collector>; 13] = [
            Box::new(m.received.clone()),
            Box::new(m.served.clone()),
            Box::new(m.from_basis.clone()),
            Box::new(m.pieces.clone()),
            Box::new(m.image_pieces.clone()),
            Box::new(m.image_bytes.clone()),
            Box::new(m.peers.clone()),
            Box::new(m.peers_complete.clone()),
            Box::new(m.corrupt.clone()),
            Box::new(m.banned.clone()),
            Box::new(m.complete.clone()),
            Box::new(m.complete_secs.clone()),
            Box::new(m.info.clone()),
        ];
        for c in all {
            r.register(c).expect("distinct names");
        }
        m
    }

    /// The text exposition (format 0.0.4) of `s`.
    fn render(&self, s: &Status, role: &str) -> String {
        let set = |c: &IntCounter, v: u64| {
            c.reset();
            c.inc_by(v);
        };
        set(
            &self.received.with_label_values(&["same"]),
            s.bytes_received.saturating_sub(s.received_cross_group),
        );
        set(
            &self.received.with_label_values(&["other"]),
            s.received_cross_group,
        );
        set(
            &self.served.with_label_values(&["same"]),
            s.bytes_served.saturating_sub(s.served_cross_group),
        );
        set(
            &self.served.with_label_values(&["other"]),
            s.served_cross_group,
        );
        set(&self.from_basis, s.bytes_from_basis);
        self.pieces.set(s.pieces_have as i64);
        self.image_pieces.set(s.pieces_total as i64);
        self.image_bytes.set(s.bytes_total as i64);
        self.peers.set(s.peers as i64);
        self.peers_complete.set(s.peers_done as i64);
        set(&self.corrupt, s.pieces_corrupt);
        set(&self.banned, s.peers_banned);
        self.complete.set(i64::from(s.complete));
        self.complete_secs.set(s.complete_secs.unwrap_or(0.0));
        self.info.reset();
        self.info
            .with_label_values(&[role, &s.group, env!("CARGO_PKG_VERSION")])
            .set(1);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("writing to a Vec");
        String::from_utf8(out).expect("the encoder writes UTF-8")
    }
}

/// Binds `addr` now (a port in use fails at start) and serves the
/// metrics of `status` until the runtime ends.
pub async fn spawn(
    addr: SocketAddr,
    status: watch::Receiver<Status>,
    role: &'static str,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    // one scrape at a time renders (it sets the series, then encodes)
    let metrics = Arc::new(Mutex::new(Metrics::new()));
    let clients = Arc::new(Semaphore::new(MAX_CLIENTS));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // out of descriptors, say: do not spin on it
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            // beyond MAX_CLIENTS a new client is closed at once
            let Ok(permit) = clients.clone().try_acquire_owned() else {
                continue;
            };
            let (metrics, status) = (metrics.clone(), status.clone());
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &metrics, &status, role))
                        .await;
                drop(permit);
            });
        }
    });
    Ok(bound)
}

/// Reads one request (to its blank line) and answers it: the metrics for
/// `GET /metrics` (or `/`), 404 for another path, 405 for another method.
async fn answer(
    mut stream: TcpStream,
    metrics: &Mutex<Metrics>,
    status: &watch::Receiver<Status>,
    role: &str,
) -> std::io::Result<()> {
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || req.len() + n > MAX_REQUEST {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = req.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let (code, body) = match (method, path) {
        (b"GET", b"/metrics" | b"/") => {
            let s = status.borrow().clone();
            let m = metrics.lock().unwrap_or_else(|e| e.into_inner());
            ("200 OK", m.render(&s, role))
        }
        (b"GET", _) => ("404 Not Found", "not found: try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "GET only\n".to_string()),
    };
    let mut head = String::new();
    let _ = write!(
        head,
        "HTTP/1.1 {code}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_every_series_with_its_type() {
        let m = Metrics::new();
        let s = Status {
            pieces_have: 3,
            pieces_total: 4,
            bytes_total: 4 << 20,
            bytes_received: 3 << 20,
            received_cross_group: 1 << 20,
            bytes_served: 5 << 20,
            served_cross_group: 0,
            peers: 7,
            peers_done: 2,
            pieces_corrupt: 1,
            peers_banned: 1,
            group: "dc \"east\"\n".into(),
            ..Default::default()
        };
        let text = m.render(&s, "join");
        for line in [
            "# TYPE swarm_received_bytes_total counter",
            "swarm_received_bytes_total{peers=\"same\"} 2097152",
            "swarm_received_bytes_total{peers=\"other\"} 1048576",
            "swarm_served_bytes_total{peers=\"same\"} 5242880",
            "swarm_pieces 3",
            "swarm_image_pieces 4",
            "swarm_peers 7",
            "swarm_peers_complete 2",
            "swarm_corrupt_pieces_total 1",
            "swarm_banned_peers_total 1",
            "swarm_complete 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
        // a group name cannot break the format
        assert!(text.contains(r#"group="dc \"east\"\n""#), "{text}");
    }
}
