//! Outsiders without the ticket, test code only: clients that complete the
//! QUIC and TLS handshake with a swarm host (its ALPN, any certificate) and
//! then never prove the secret. Each of `conns` slots keeps one connection
//! open: it sends nothing (`Idle`), a frame header and part of a body
//! (`Partial`), or garbage (`Garbage`), holds the connection until the host
//! closes it, and then connects again, so the host is under attack for as
//! long as the `Idlers` live (at most `MAX_ATTACK`). The tests check that
//! honest hosts still join.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use swarm::node::tls::{self, Tuning};

/// An attack stops by itself after this long.
pub const MAX_ATTACK: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Completes the handshake and sends nothing.
    Idle,
    /// Opens a stream, sends a frame header announcing 1 MiB and 10 bytes
    /// of it, and stalls.
    Partial,
    /// Opens a stream and sends 2 KiB of random bytes.
    Garbage,
}

/// What the attackers saw.
#[derive(Default, Debug)]
pub struct Seen {
    pub attempts: u64,
    /// Connections whose QUIC/TLS handshake completed.
    pub established: u64,
    /// Attempts the host refused during the handshake (transport close
    /// CONNECTION_REFUSED or another close before the handshake ended).
    pub refused: u64,
    /// Attempts that got no answer in time.
    pub timed_out: u64,
    /// Established connections that the host closed, by how: the
    /// application close code, or the transport error.
    pub closes: BTreeMap<String, u64>,
    /// How long the host held an established connection before closing it,
    /// longest first seen.
    pub longest_held: Duration,
    /// Established connections open at once, at most.
    pub most_open: u64,
    open: u64,
}

pub struct Idlers {
    pub seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    eps: Vec<quinn::Endpoint>,
}

impl Drop for Idlers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for ep in &self.eps {
            ep.close(0u32.into(), b"bye");
        }
    }
}

impl Idlers {
    pub fn summary(&self) -> String {
        let s = self.seen.lock().unwrap();
        format!(
            "{} attempts, {} established, {} refused, {} timed out, at most {} open at once, \
             held {:.2} s at most, closes {:?}",
            s.attempts,
            s.established,
            s.refused,
            s.timed_out,
            s.most_open,
            s.longest_held.as_secs_f64(),
            s.closes
        )
    }
}

/// `conns` connection slots to `target`, spread over `sources` (local
/// addresses, 127.0.0.x) and `sockets` UDP sockets per source.
pub fn start(
    target: SocketAddr,
    sources: &[IpAddr],
    sockets: usize,
    conns: usize,
    how: Behaviour,
) -> Idlers {
    start_with(target, sources, sockets, conns, how, None)
}

/// As `start`, offering `alpn` instead of swarm's own.
pub fn start_with(
    target: SocketAddr,
    sources: &[IpAddr],
    sockets: usize,
    conns: usize,
    how: Behaviour,
    alpn: Option<&[u8]>,
) -> Idlers {
    let mut cfg = tls::client_config(&Tuning::default()).unwrap();
    if let Some(a) = alpn {
        cfg = client_config_with_alpn(a);
    }
    let mut eps = Vec::new();
    for ip in sources {
        for _ in 0..sockets {
            let mut ep = quinn::Endpoint::client(SocketAddr::new(*ip, 0)).unwrap();
            ep.set_default_client_config(cfg.clone());
            eps.push(ep);
        }
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    for i in 0..conns {
        let ep = eps[i % eps.len()].clone();
        let (seen, stop) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            // spread the first attempts over 200 ms
            tokio::time::sleep(Duration::from_micros((i as u64 * 200_000) / conns as u64)).await;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_ATTACK {
                let pause = slot(&ep, target, how, &seen, &stop).await;
                tokio::time::sleep(pause).await;
            }
        });
    }
    Idlers { seen, stop, eps }
}

/// One connection: returns how long to wait before the next.
async fn slot(
    ep: &quinn::Endpoint,
    target: SocketAddr,
    how: Behaviour,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) -> Duration {
    seen.lock().unwrap().attempts += 1;
    let Ok(connecting) = ep.connect(target, "swarm") else {
        return Duration::from_secs(1);
    };
    let conn = match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(_)) => {
            seen.lock().unwrap().refused += 1;
            // refused: come back soon, but not in a busy loop
            return Duration::from_millis(300 + rand::random_range(0..400));
        }
        Err(_) => {
            seen.lock().unwrap().timed_out += 1;
            return Duration::from_millis(100);
        }
    };
    let at = Instant::now();
    {
        let mut s = seen.lock().unwrap();
        s.established += 1;
        s.open += 1;
        s.most_open = s.most_open.max(s.open);
    }
    let _stream = match how {
        Behaviour::Idle => None,
        Behaviour::Partial => send(&conn, &[0, 0, 16, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9]).await,
        Behaviour::Garbage => {
            let mut junk = vec![0u8; 2048];
            rand::RngExt::fill(&mut rand::rng(), &mut junk[..]);
            send(&conn, &junk).await
        }
    };
    // hold it until the host closes it (or the attack ends)
    let why = loop {
        tokio::select! {
            e = conn.closed() => break e,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if stop.load(Ordering::Relaxed) {
                    conn.close(0u32.into(), b"bye");
                    break conn.closed().await;
                }
            }
        }
    };
    let held = at.elapsed();
    let key = match &why {
        quinn::ConnectionError::ApplicationClosed(c) => format!(
            "code {} {:?}",
            c.error_code,
            String::from_utf8_lossy(&c.reason)
        ),
        quinn::ConnectionError::LocallyClosed => "ours".into(),
        other => other.to_string(),
    };
    let mut s = seen.lock().unwrap();
    s.open -= 1;
    if key != "ours" {
        s.longest_held = s.longest_held.max(held);
    }
    *s.closes.entry(key).or_default() += 1;
    Duration::from_millis(50)
}

async fn send(conn: &quinn::Connection, bytes: &[u8]) -> Option<quinn::SendStream> {
    let (mut s, _r) = conn.open_bi().await.ok()?;
    s.write_all(bytes).await.ok()?;
    Some(s)
}

/// swarm's client TLS settings (TLS 1.3, any certificate) with another
/// ALPN: a host of another protocol version, or not swarm at all.
pub fn client_config_with_alpn(alpn: &[u8]) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ))
}

/// Accepts any certificate and any signature: test code talking to a host
/// whose certificate it does not know.
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A server config with a fresh self-signed certificate that offers only
/// `alpn`: a host of another protocol version.
pub fn server_config_with_alpn(alpn: &[u8]) -> quinn::ServerConfig {
    let key = rcgen::generate_simple_self_signed(vec!["swarm".to_string()]).unwrap();
    let cert = rustls::pki_types::CertificateDer::from(key.cert);
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        key.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    tls.alpn_protocols = vec![alpn.to_vec()];
    quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap(),
    ))
}

/// Honest handshakes with `target` as a new peer of the swarm of `t`,
/// one after the other from fresh sockets on 127.0.0.1, `n` of them: how
/// long each took from the first packet to the host's Hello (or why it
/// failed). The probe hangs up right after.
pub async fn probe(t: &swarm::ticket::Ticket, n: usize) -> Vec<Result<Duration, String>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(tls::client_config(&Tuning::default()).unwrap());
        let at = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), async {
            let conn = ep
                .connect(t.addrs[0], "swarm")
                .unwrap()
                .await
                .map_err(|e| e.to_string())?;
            let addr = ep.local_addr().unwrap();
            crate::adversary::dial(t, &conn, &Tuning::default(), "probe", rand::random(), addr)
                .await
                .ok_or_else(|| format!("refused: {:?}", conn.close_reason()))?;
            let took = at.elapsed();
            if took > Duration::from_millis(500) {
                let s = conn.stats();
                eprintln!(
                    "slow handshake, {took:?}: {} datagrams sent, {} received, {} lost, rtt {:?}",
                    s.udp_tx.datagrams, s.udp_rx.datagrams, s.path.lost_packets, s.path.rtt
                );
            }
            conn.close(0u32.into(), b"bye");
            Ok(took)
        })
        .await
        .unwrap_or_else(|_| Err("no handshake within 10 s".into()));
        out.push(r);
        ep.wait_idle().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out
}

/// "median a ms, max b ms, k failed" of `probe`'s results.
pub fn probe_summary(r: &[Result<Duration, String>]) -> String {
    let mut ok: Vec<f64> = r
        .iter()
        .filter_map(|x| x.as_ref().ok())
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    ok.sort_by(f64::total_cmp);
    let failed: Vec<&String> = r.iter().filter_map(|x| x.as_ref().err()).collect();
    format!(
        "{} handshakes: median {:.1} ms, max {:.1} ms, {} failed {:?}",
        r.len(),
        ok.get(ok.len() / 2).copied().unwrap_or(f64::NAN),
        ok.last().copied().unwrap_or(f64::NAN),
        failed.len(),
        failed
    )
}
