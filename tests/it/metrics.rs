//! `--metrics ADDR` (issue 23): Prometheus text that the real `promtool
//! check metrics` accepts, with values that match the run, from a seed
//! and a joiner; bad addresses and busy ports fail at start.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `method path` against 127.0.0.1:port: the status code and the body.
fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// The value of the series `name` (with its labels, as printed).
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn promtool_accepts(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; .ci/test.sh installs it)");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_of_a_seed_and_a_joiner_pass_promtool_and_match_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("image.bin");
    let size = 8u64 << 20;
    random_file(&src, size as usize, 21);
    let (sp, jp) = (free_port(), free_port());
    let s_metrics = format!("127.0.0.1:{sp}");
    let j_metrics = format!("127.0.0.1:{jp}");
    let mut s = seed(
        d,
        &src,
        &["--upload-limit", "8MiB/s", "--metrics", &s_metrics],
    );
    let (code, text) = http(sp, "GET", "/metrics").expect("the seed's metrics");
    assert_eq!(code, 200);
    promtool_accepts(&text);
    assert_eq!(
        value(&text, "swarm_image_bytes"),
        Some(size as f64),
        "{text}"
    );
    assert!(
        text.contains(r#"swarm_info{group="default",role="seed",version="#),
        "{text}"
    );

    let mut j = join(d, &s, "a", &["--linger", "3s", "--metrics", &j_metrics]);
    // mid-run and at the end: each scrape is valid, and the end says done
    let t = Instant::now();
    let last = loop {
        assert!(t.elapsed() < LIMIT, "the joiner never said complete");
        if let Some((200, text)) = http(jp, "GET", "/metrics") {
            promtool_accepts(&text);
            if value(&text, "swarm_complete") == Some(1.0) {
                break text;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let pieces = value(&last, "swarm_image_pieces").unwrap();
    assert!(pieces > 1.0);
    assert_eq!(value(&last, "swarm_pieces"), Some(pieces), "{last}");
    // the pieces' bytes as they crossed the network: each 512 KiB group
    // of a piece answer carries a 4-byte zero-block mask
    let wire = |v: Option<f64>| v.unwrap() as u64;
    let framed = size + size / (512 << 10) * 4;
    let got = wire(value(&last, r#"swarm_received_bytes_total{peers="same"}"#));
    assert!((size..=framed).contains(&got), "{got}: {last}");
    assert_eq!(
        value(&last, r#"swarm_received_bytes_total{peers="other"}"#),
        Some(0.0)
    );
    assert_eq!(value(&last, "swarm_corrupt_pieces_total"), Some(0.0));
    assert!(
        value(&last, "swarm_complete_seconds").unwrap() > 0.0,
        "{last}"
    );
    assert!(
        value(&last, "swarm_peers_complete").unwrap() >= 1.0,
        "{last}"
    );

    // only GET /metrics (or /)
    assert_eq!(http(jp, "GET", "/other").map(|r| r.0), Some(404));
    assert_eq!(http(jp, "POST", "/metrics").map(|r| r.0), Some(405));
    // a client that sends nothing is closed, it does not stay
    let mut idle = TcpStream::connect(("127.0.0.1", jp)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    j.wait_ok(LIMIT);
    let (_, text) = http(sp, "GET", "/metrics").expect("the seed's metrics");
    promtool_accepts(&text);
    let served = wire(value(&text, r#"swarm_served_bytes_total{peers="same"}"#));
    assert!((size..=framed).contains(&served), "{served}: {text}");
    assert_eq!(value(&text, "swarm_peers_complete"), Some(1.0), "{text}");
    s.proc.signal(libc::SIGTERM);
    s.proc.wait(LIMIT);
}

#[test]
fn a_bad_or_busy_metrics_address_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    random_file(&src, 1000, 1);
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    for (addr, code) in [("nonsense", 2), (busy.as_str(), 3)] {
        let mut c = swarm();
        c.args(["seed"])
            .arg(&src)
            .args(["--listen", "127.0.0.1:0", "--metrics", addr]);
        let out = run(c, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{addr}: {err}");
        assert!(err.contains("--metrics"), "{err}");
        assert!(out.stdout.is_empty(), "a ticket was printed: {addr}");
    }
}
