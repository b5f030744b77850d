//! The UDP socket under the QUIC endpoint, with buffers sized for bulk
//! transfer. With the kernel default (208 KiB here) a busy receiver dropped
//! 6% of datagrams on loopback (`RcvbufErrors` in /proc/net/snmp), and every
//! drop is a congestion signal that halves the sender's window.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

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
}
