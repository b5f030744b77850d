//! Proof of the swarm secret, bound to one TLS session:
//! `blake3::keyed_hash(secret, exporter(LABEL, role))`. The exporter value is
//! unique to the session, so a proof cannot be replayed on another
//! connection or relayed through a man in the middle; the role in the
//! context keeps a server from reflecting the client's own proof.

pub const LABEL: &[u8] = b"EXPORTER-swarm/7 auth";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Dialer,
    Acceptor,
}

impl Role {
    fn context(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"dialer",
            Role::Acceptor => b"acceptor",
        }
    }
}

pub fn proof(conn: &quinn::Connection, secret: &[u8; 32], role: Role) -> anyhow::Result<[u8; 32]> {
    let mut ekm = [0u8; 32];
    conn.export_keying_material(&mut ekm, LABEL, role.context())
        .map_err(|_| anyhow::anyhow!("TLS exporter unavailable"))?;
    Ok(*blake3::keyed_hash(secret, &ekm).as_bytes())
}

/// Constant-time comparison of a received proof with the expected one.
pub fn check(conn: &quinn::Connection, secret: &[u8; 32], role: Role, got: &[u8; 32]) -> bool {
    match proof(conn, secret, role) {
        Ok(want) => blake3::Hash::from(want) == blake3::Hash::from(*got),
        Err(_) => false,
    }
}
