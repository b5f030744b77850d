//! The UDP socket under the QUIC endpoint, with buffers sized for bulk
//! transfer. With the kernel default (208 KiB here) a busy receiver dropped
//! 6% of datagrams on loopback (`RcvbufErrors` in /proc/net/snmp), and every
//! drop is a congestion signal that halves the sender's window.

use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

use socket2::{Domain, Protocol, Socket, Type};

/// Requested buffer size in each direction.
pub const BUFFER: usize = 16 << 20;

pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    set_buffers(&s);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Asks for `BUFFER` bytes; beyond net.core.{r,w}mem_max this needs
/// CAP_NET_ADMIN (the *FORCE options), else the kernel caps it silently.
fn set_buffers(s: &Socket) {
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let v = BUFFER as libc::c_int;
        let set = |opt| {
            // SAFETY: setsockopt with a valid fd, a c_int value and its size.
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(force) != 0 {
            set(plain);
        }
    }
    // Linux reports twice what it grants (the kernel's bookkeeping share)
    let got = |v: std::io::Result<usize>| v.map_or(0, |v| v / 2);
    if let Some(w) = capped(got(s.recv_buffer_size()), got(s.send_buffer_size())) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| tracing::warn!("{w}"));
    }
}

/// The warning when the kernel granted less than `BUFFER` (an
/// unprivileged run past net.core.rmem_max or wmem_max), naming the
/// sysctls to raise.
fn capped(rcv: usize, snd: usize) -> Option<String> {
    if rcv >= BUFFER && snd >= BUFFER {
        return None;
    }
    Some(format!(
        "the kernel capped UDP socket buffers at {} receive and {} send \
         (swarm asks for {}): a busy host may drop datagrams and slow down; \
         raise the caps: sysctl -w net.core.rmem_max={BUFFER} net.core.wmem_max={BUFFER} \
         (or run as root)",
        bytesize::ByteSize(rcv as u64).display().iec(),
        bytesize::ByteSize(snd as u64).display().iec(),
        bytesize::ByteSize(BUFFER as u64).display().iec()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capped_buffer_names_the_sysctls() {
        assert_eq!(capped(BUFFER, BUFFER), None);
        let w = capped(4 << 20, BUFFER).unwrap();
        assert!(
            w.contains("4.0 MiB receive") && w.contains("16.0 MiB send"),
            "{w}"
        );
        assert!(w.contains("net.core.rmem_max=16777216"), "{w}");
        assert!(capped(BUFFER, 212_992).is_some());
    }
}

/// The largest UDP payload one send may carry, all GSO segments together
/// (65535 minus the IPv4 and UDP headers).
const MAX_SEND_PAYLOAD: usize = 65_507;

/// Hands `socket` to quinn with GSO batches that fit one UDP send. quinn
/// batches up to 10 segments of the current MTU; with jumbo-sized packets
/// (8952 here) that is 89 KB, the kernel refuses the send, quinn counts the
/// datagrams lost, and MTU discovery declares a black hole and falls back to
/// 1200 bytes: 1 GiB on loopback then took 3.8 s instead of 1.9 s.
pub fn wrap(
    socket: UdpSocket,
    runtime: &dyn quinn::Runtime,
    max_mtu: u16,
) -> std::io::Result<Arc<dyn AsyncUdpSocket>> {
    Ok(Arc::new(CappedGso {
        inner: runtime.wrap_udp_socket(socket)?,
        max_segments: (MAX_SEND_PAYLOAD / usize::from(max_mtu.max(1200))).max(1),
    }))
}

#[derive(Debug)]
struct CappedGso {
    inner: Arc<dyn AsyncUdpSocket>,
    max_segments: usize,
}

impl AsyncUdpSocket for CappedGso {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> std::io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().min(self.max_segments)
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
