//! The authenticated handshake on the control stream (docs/protocol.md,
//! "Connection"). Nothing but a proof leaves a host before the other side
//! has proved the swarm secret:
//!
//! 1. the dialer opens the control stream and sends its `Proof`;
//! 2. the acceptor reads exactly one proof frame, within `PREAUTH_TIMEOUT`
//!    of the TLS handshake, and checks it (closing with code 1 or 2 on
//!    failure, having sent nothing); then it sends its own `Proof` and its
//!    `Hello`;
//! 3. the dialer checks the acceptor's proof and Hello before it sends its
//!    own `Hello`, which the acceptor checks in turn.
//!
//! A peer of another protocol version (another ALPN) is closed with code 2
//! and a reason naming both versions, before either side sends a byte.

use std::time::Duration;

use anyhow::Context;
use quinn::{Connection, ConnectionError, RecvStream, SendStream, TransportErrorCode};
use thiserror::Error;
use tokio::time::timeout;

use super::auth::{self, Role};
use super::identity::{Handshaken, Identity, read_frame};
use super::{HANDSHAKE_TIMEOUT, PREAUTH_TIMEOUT};
use crate::wire::{self, Hello, Message, PROOF_FRAME_LEN, PROTOCOL_VERSION, close};

/// Close reasons (with `close::AUTH`, `close::PROTOCOL`, `close::DUPLICATE`).
pub const REJECTED_AUTH: &str = "auth failed";
pub const REJECTED_MANIFEST: &str = "version or manifest mismatch";
/// Starts the reason of a close for another protocol version.
pub const REJECTED_VERSION: &str = "protocol version mismatch";
/// An acceptor with too many handshakes in progress (`close::DUPLICATE`).
pub const BUSY: &str = "busy";

/// Why a host would not have us, as far as a caller must tell apart.
#[derive(Debug, Error)]
pub enum Refused {
    /// One side did not prove the swarm secret: the ticket is wrong.
    #[error("auth failed: one of us does not hold this swarm's secret")]
    Auth,
    #[error("manifest mismatch: {0}")]
    Manifest(String),
    /// The host speaks another protocol version; `theirs` when known.
    #[error("{}", version_text(*.theirs, .said))]
    Version { theirs: Option<u16>, said: String },
    /// The host has too many handshakes in progress: try again shortly.
    #[error("the host is busy (too many handshakes in progress)")]
    Busy,
}

fn version_text(theirs: Option<u16>, said: &str) -> String {
    match theirs {
        Some(v) => format!(
            "{REJECTED_VERSION}: the host speaks protocol version {v}, this host speaks \
             version {PROTOCOL_VERSION} (run the same swarm release on every host)"
        ),
        None if said.is_empty() => format!(
            "{REJECTED_VERSION}: the host offers no protocol version this host knows \
             (this host speaks version {PROTOCOL_VERSION}); is it a swarm host?"
        ),
        None => format!("{REJECTED_VERSION}: the host says {said:?}"),
    }
}

impl Refused {
    /// What a peer's close (or a refused connection attempt) tells.
    pub fn from_close(e: &ConnectionError) -> Option<Refused> {
        match e {
            ConnectionError::ApplicationClosed(c) => {
                let reason = String::from_utf8_lossy(&c.reason).to_string();
                let code = c.error_code.into_inner();
                if code == u64::from(close::AUTH) {
                    Some(Refused::Auth)
                } else if code == u64::from(close::PROTOCOL) && reason.starts_with(REJECTED_VERSION)
                {
                    Some(Refused::Version {
                        theirs: None,
                        said: reason,
                    })
                } else if code == u64::from(close::PROTOCOL) && reason == REJECTED_MANIFEST {
                    Some(Refused::Manifest("the host refused ours".into()))
                } else if code == u64::from(close::DUPLICATE) && reason == BUSY {
                    Some(Refused::Busy)
                } else {
                    None
                }
            }
            // refused outright, or closed before TLS finished: an acceptor
            // does that only when it has too many handshakes in progress
            ConnectionError::ConnectionClosed(c)
                if c.error_code == TransportErrorCode::CONNECTION_REFUSED
                    || c.error_code == TransportErrorCode::APPLICATION_ERROR =>
            {
                Some(Refused::Busy)
            }
            // TLS's no_application_protocol alert: no common ALPN
            ConnectionError::ConnectionClosed(c)
                if c.error_code == TransportErrorCode::crypto(0x78) =>
            {
                Some(Refused::Version {
                    theirs: None,
                    said: String::new(),
                })
            }
            _ => None,
        }
    }
}

/// The error for a failed step: the peer's close, if it closed, else `e`.
fn peer_closed(conn: &Connection, e: anyhow::Error) -> anyhow::Error {
    match conn.close_reason().as_ref().and_then(Refused::from_close) {
        Some(r) => r.into(),
        None => e,
    }
}

/// Closes a connection whose TLS handshake settled on another version's
/// ALPN (this host accepts `KNOWN_VERSIONS` only for this).
fn check_version(conn: &Connection) -> anyhow::Result<()> {
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    let theirs = alpn.as_deref().and_then(wire::alpn_version);
    if theirs == Some(PROTOCOL_VERSION) {
        return Ok(());
    }
    let named = theirs.map_or_else(|| "an unknown version".into(), |v| format!("version {v}"));
    let reason =
        format!("{REJECTED_VERSION}: {named} offered, this host speaks version {PROTOCOL_VERSION}");
    conn.close(close::PROTOCOL.into(), reason.as_bytes());
    Err(Refused::Version {
        theirs,
        said: reason,
    }
    .into())
}

fn proof_frame(id: &Identity, conn: &Connection, role: Role) -> anyhow::Result<Vec<u8>> {
    let proof = auth::proof(conn, &id.secret, role).inspect_err(|_| {
        conn.close(close::PROTOCOL.into(), b"internal");
    })?;
    Ok(Message::Proof(proof).encode_frame())
}

fn hello_frame(id: &Identity) -> Vec<u8> {
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        manifest_id: id.manifest_id,
        peer_id: id.peer_id,
        since: id.since,
        group: id.group.clone(),
        addrs: id.addrs.clone(),
    })
    .encode_frame()
}

/// Reads the peer's proof frame (a fixed 37 bytes) and checks it; on
/// failure closes the connection with code 2 (not a proof) or 1 (wrong).
async fn read_proof(
    id: &Identity,
    conn: &Connection,
    recv: &mut RecvStream,
    theirs: Role,
) -> anyhow::Result<()> {
    let mut frame = [0u8; PROOF_FRAME_LEN];
    recv.read_exact(&mut frame).await?;
    let Ok(proof) = Message::decode_proof_frame(&frame) else {
        conn.close(close::PROTOCOL.into(), b"expected a proof");
        anyhow::bail!("the peer did not start with a proof");
    };
    if !auth::check(conn, &id.secret, theirs, &proof) {
        conn.close(close::AUTH.into(), REJECTED_AUTH.as_bytes());
        return Err(Refused::Auth.into());
    }
    Ok(())
}

/// Checks the peer's Hello; on failure closes the connection.
fn check_hello(id: &Identity, conn: &Connection, msg: Message) -> anyhow::Result<Hello> {
    let Message::Hello(h) = msg else {
        conn.close(close::PROTOCOL.into(), b"expected hello");
        anyhow::bail!("the peer did not send its hello after its proof");
    };
    if h.version != PROTOCOL_VERSION {
        let reason = format!(
            "{REJECTED_VERSION}: version {} in hello, this host speaks version {PROTOCOL_VERSION}",
            h.version
        );
        conn.close(close::PROTOCOL.into(), reason.as_bytes());
        return Err(Refused::Version {
            theirs: Some(h.version),
            said: reason,
        }
        .into());
    }
    if h.manifest_id != id.manifest_id {
        conn.close(close::PROTOCOL.into(), REJECTED_MANIFEST.as_bytes());
        return Err(Refused::Manifest(format!("the host serves {}", h.manifest_id)).into());
    }
    if h.peer_id == id.peer_id {
        conn.close(close::DUPLICATE.into(), b"self");
        anyhow::bail!("connected to ourselves");
    }
    Ok(h)
}

/// Runs `work` within `limit`; on timeout closes the connection.
async fn within<T>(
    conn: &Connection,
    limit: Duration,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match timeout(limit, work).await {
        Ok(r) => r.map_err(|e| peer_closed(conn, e)),
        Err(_) => {
            conn.close(close::PROTOCOL.into(), b"handshake timeout");
            Err(anyhow::anyhow!(
                "handshake timed out ({} s)",
                limit.as_secs_f64()
            ))
        }
    }
}

/// The dialer's side, once TLS is done.
pub async fn dialer(id: &Identity, conn: Connection) -> anyhow::Result<Handshaken> {
    check_version(&conn)?;
    let (mut send, mut recv) = within(&conn, PREAUTH_TIMEOUT, async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&proof_frame(id, &conn, Role::Dialer)?)
            .await?;
        read_proof(id, &conn, &mut recv, Role::Acceptor).await?;
        Ok((send, recv))
    })
    .await
    .context("before the host's proof")?;
    super::tls::open_up(&conn, &id.tuning);
    let hello = within(&conn, HANDSHAKE_TIMEOUT, async {
        let hello = check_hello(id, &conn, read_frame(&mut recv).await?)?;
        send.write_all(&hello_frame(id)).await?;
        Ok(hello)
    })
    .await?;
    Ok(Handshaken {
        conn,
        hello,
        send,
        recv,
        dialed: true,
    })
}

/// The control stream of a peer whose proof checked out.
pub struct Proved {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
}

/// The acceptor's first step, once TLS is done: the dialer's proof, within
/// `PREAUTH_TIMEOUT`. Until it returns the peer is an outsider: it may have
/// opened one stream and sent a few KiB, and nothing has been sent to it.
pub async fn acceptor_proof(id: &Identity, conn: Connection) -> anyhow::Result<Proved> {
    check_version(&conn)?;
    let (send, recv) = within(&conn, PREAUTH_TIMEOUT, async {
        let (send, mut recv) = conn.accept_bi().await?;
        read_proof(id, &conn, &mut recv, Role::Dialer).await?;
        Ok((send, recv))
    })
    .await?;
    Ok(Proved { conn, send, recv })
}

/// The acceptor's second step: our proof and Hello, then the dialer's
/// Hello, within `HANDSHAKE_TIMEOUT`.
pub async fn acceptor_hello(id: &Identity, p: Proved) -> anyhow::Result<Handshaken> {
    let Proved {
        conn,
        mut send,
        mut recv,
    } = p;
    super::tls::open_up(&conn, &id.tuning);
    let hello = within(&conn, HANDSHAKE_TIMEOUT, async {
        let mut out = proof_frame(id, &conn, Role::Acceptor)?;
        out.extend(hello_frame(id));
        send.write_all(&out).await?;
        check_hello(id, &conn, read_frame(&mut recv).await?)
    })
    .await?;
    Ok(Handshaken {
        conn,
        hello,
        send,
        recv,
        dialed: false,
    })
}
