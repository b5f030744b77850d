//! Who this host is to its peers (`Identity`, sent in every handshake, and
//! `WanPath`, how it reaches other groups), and what a handshake hands on
//! (`Handshaken`): the types the connection tasks and the engine share.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{Connection, RecvStream, SendStream};

use crate::manifest::ManifestId;
use crate::wire::{Hello, MAX_FRAME, Message, PeerId};

/// What this host says about itself in a handshake.
#[derive(Clone)]
pub struct Identity {
    pub manifest_id: ManifestId,
    pub secret: [u8; 32],
    pub peer_id: PeerId,
    /// When this host started (see `Hello::since`).
    pub since: u64,
    pub group: String,
    pub addrs: Vec<SocketAddr>,
    /// Transport limits to apply once a peer is authenticated.
    pub tuning: super::Tuning,
    /// Connection settings towards other groups (see `tls::Configs`).
    pub wan: WanPath,
}

/// How this host reaches hosts of other groups: the client and server
/// configs with the WAN congestion controller, and the addresses the engine
/// has learned belong to other groups (an accepted connection from one of
/// them gets the WAN config).
#[derive(Clone)]
pub struct WanPath {
    pub client: quinn::ClientConfig,
    pub server: Arc<quinn::ServerConfig>,
    pub addrs: Arc<std::sync::Mutex<WanAddrs>>,
    /// Marked whenever this host serves another group: connections inside
    /// the group then keep their queues short (`cc`).
    pub serving: Arc<super::cc::WanServing>,
}

impl WanPath {
    pub fn is_remote(&self, addr: SocketAddr) -> bool {
        self.addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .contains(&addr)
    }

    /// Remembers the addresses of a host of another group, up to
    /// `WanAddrs::MAX`; past it the oldest are forgotten (peer lists can
    /// name addresses without end).
    pub fn learn(&self, addrs: &[SocketAddr]) {
        let mut w = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        for a in addrs {
            if w.set.insert(*a) {
                w.order.push_back(*a);
                if w.order.len() > WanAddrs::MAX
                    && let Some(old) = w.order.pop_front()
                {
                    w.set.remove(&old);
                }
            }
        }
    }
}

/// Addresses known to be of other groups, oldest first.
#[derive(Default)]
pub struct WanAddrs {
    set: std::collections::HashSet<SocketAddr>,
    order: std::collections::VecDeque<SocketAddr>,
}

impl WanAddrs {
    const MAX: usize = 4096;
}

/// An authenticated connection, ready to hand to the engine.
pub struct Handshaken {
    pub conn: Connection,
    pub hello: Hello,
    pub send: SendStream,
    pub recv: RecvStream,
    pub dialed: bool,
}

pub async fn read_frame(recv: &mut RecvStream) -> anyhow::Result<Message> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await?;
    let n = Message::frame_len(len)?;
    let mut body = vec![0u8; n.min(MAX_FRAME)];
    recv.read_exact(&mut body).await?;
    Ok(Message::decode(&body)?)
}
