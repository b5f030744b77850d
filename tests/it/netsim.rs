//! An emulated multi-datacenter network on one machine, for tests and
//! benchmarks (benches include this file by path). Needs root.
//!
//! ```text
//!  host ns ─eth0═veth═┐                                  ┌═veth═eth0─ host ns
//!  host ns ─eth0═veth═┤ br0 ─u0a═veth═u0b ~delay~ w0b═veth═w0a─┐
//!                     └ (group 0)                              │ hub
//!                       br1 ─u1a═veth═u1b ~delay~ w1b═veth═w1a─┘
//!                       (group 1) ...                  all in the core ns
//! ```
//!
//! * One namespace per host (`PREFIX-gGhH`), its `eth0` a veth pair into
//!   the bridge of its group in the core namespace (`PREFIX-core`). Every
//!   host NIC is shaped with tbf to `nic_bps` in both directions (egress of
//!   each end of the pair).
//! * Each group reaches the others over its own uplink into a hub bridge,
//!   shaped with tbf to `wan_bps` in both directions. The kernel here has no
//!   netem, so the uplink's latency comes from a user-space delay line: two
//!   AF_PACKET sockets in the core namespace that pass every frame between
//!   `uGb` and `wGb` after `wan_delay / 2`. Group to group, a packet crosses
//!   two uplinks: one-way latency `wan_delay`, RTT `2 * wan_delay`.
//! * Host NICs have MTU `mtu` (jumbo frames are common inside a
//!   datacenter); the uplinks keep 1500, and a bridge drops frames larger
//!   than the port they leave by, so path MTU discovery finds 1500 across
//!   groups, as on a real WAN.
//! * All hosts share 10.0.0.0/16: host H of group G is 10.0.G.(H+1). IPv6 is
//!   off in every namespace made here (no stray neighbour discovery).
//! * Names carry a prefix unique to the process and the network, and `Drop`
//!   deletes exactly the namespaces made (with them every interface and
//!   qdisc in them), also when a test panics.

#![allow(dead_code)] // each user needs a different part

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Spec {
    /// Hosts per group.
    pub hosts: Vec<usize>,
    /// NIC rate of every host, bits per second.
    pub nic_bps: u64,
    /// Rate of each group's uplink, bits per second.
    pub wan_bps: u64,
    /// One-way latency between two groups.
    pub wan_delay: Duration,
    /// MTU of every host NIC (1500, or 9000 for jumbo frames inside a
    /// datacenter); uplinks between groups stay at 1500.
    pub mtu: u32,
}

#[derive(Clone)]
pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
    pub group: usize,
}

pub struct Net {
    pub spec: Spec,
    prefix: String,
    core: String,
    pub hosts: Vec<Vec<Host>>,
    made: Vec<String>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Runs a command, failing with its stderr.
fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e} (is iproute2 installed?)", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// tbf on `dev`'s egress: burst of max(128 KiB, 4 ms at the rate) so GSO
/// super-packets pass, and a queue of 20 ms at the rate (at least 256 KiB).
fn shape(ns: &str, dev: &str, bps: u64) -> Result<(), String> {
    let burst = (bps / 8 / 250).max(128 << 10);
    let limit = (bps / 8 / 50).max(256 << 10) + burst;
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "tc",
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        &format!("{bps}bit"),
        "burst",
        &burst.to_string(),
        "limit",
        &limit.to_string(),
    ])
}

impl Net {
    pub fn new(spec: Spec) -> Result<Net, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("the emulated network needs root (network namespaces, tc)".into());
        }
        let prefix = format!(
            "swt{}n{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Net {
            core: format!("{prefix}-core"),
            prefix,
            hosts: Vec::new(),
            made: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            spec,
        };
        net.build()?; // on error, Drop removes what was made
        Ok(net)
    }

    fn add_ns(&mut self, name: &str) -> Result<(), String> {
        sh(&["ip", "netns", "add", name])?;
        self.made.push(name.to_string());
        let sysctl = |setting: &str| sh(&["ip", "netns", "exec", name, "sysctl", "-qw", setting]);
        for key in ["all", "default"] {
            sysctl(&format!("net.ipv6.conf.{key}.disable_ipv6=1"))?;
        }
        // The bridges drop frames larger than the port they leave by and,
        // unlike a router, send no ICMP "fragmentation needed": with jumbo
        // host NICs a TCP flow between groups would stall in a PMTU black
        // hole. Probing lets TCP find the 1500-byte path (QUIC probes by
        // itself).
        sysctl("net.ipv4.tcp_mtu_probing=1")?;
        // Where br_netfilter is loaded, every bridged frame also passes
        // iptables (measured: 7% of all CPU samples in a 2 x 4 run, under
        // 0.4% with this off); a switch does not, so the bridges here do not
        // either. Absent without br_netfilter: nothing to turn off.
        for table in ["iptables", "ip6tables", "arptables"] {
            let _ = sysctl(&format!("net.bridge.bridge-nf-call-{table}=0"));
        }
        sh(&["ip", "-n", name, "link", "set", "lo", "up"])
    }

    fn build(&mut self) -> Result<(), String> {
        let core = self.core.clone();
        self.add_ns(&core)?;
        let c = core.as_str();
        sh(&["ip", "-n", c, "link", "add", "hub", "type", "bridge"])?;
        sh(&["ip", "-n", c, "link", "set", "hub", "up"])?;
        let spec = self.spec.clone();
        for (g, &count) in spec.hosts.iter().enumerate() {
            let br = format!("br{g}");
            sh(&["ip", "-n", c, "link", "add", &br, "type", "bridge"])?;
            sh(&["ip", "-n", c, "link", "set", &br, "up"])?;
            let mut hosts = Vec::new();
            for h in 0..count {
                let ns = format!("{}-g{g}h{h}", self.prefix);
                self.add_ns(&ns)?;
                let port = format!("h{g}x{h}");
                sh(&[
                    "ip", "-n", c, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ])?;
                let mtu = spec.mtu.to_string();
                sh(&["ip", "-n", c, "link", "set", &port, "mtu", &mtu])?;
                sh(&["ip", "-n", &ns, "link", "set", "eth0", "mtu", &mtu])?;
                sh(&["ip", "-n", c, "link", "set", &port, "master", &br, "up"])?;
                let ip = Ipv4Addr::new(10, 0, g as u8, h as u8 + 1);
                sh(&[
                    "ip",
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{ip}/16"),
                    "dev",
                    "eth0",
                ])?;
                sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
                shape(&ns, "eth0", spec.nic_bps)?;
                shape(c, &port, spec.nic_bps)?;
                hosts.push(Host { ns, ip, group: g });
            }
            self.hosts.push(hosts);
            // the uplink: br ─ uGa═uGb ~delay line~ wGb═wGa ─ hub
            let (ua, ub, wa, wb) = (
                format!("u{g}a"),
                format!("u{g}b"),
                format!("w{g}a"),
                format!("w{g}b"),
            );
            for (a, b, master) in [(&ua, &ub, &br), (&wa, &wb, &"hub".to_string())] {
                sh(&[
                    "ip", "-n", c, "link", "add", a, "type", "veth", "peer", "name", b,
                ])?;
                // frames must reach the delay line MTU-sized: no GSO
                // super-packets on the ends that feed it
                sh(&["ip", "-n", c, "link", "set", a, "gso_max_segs", "1"])?;
                sh(&["ip", "-n", c, "link", "set", a, "master", master, "up"])?;
                sh(&["ip", "-n", c, "link", "set", b, "up"])?;
                shape(c, a, spec.wan_bps)?;
            }
            let half = spec.wan_delay / 2;
            for (from, to) in [(&ub, &wb), (&wb, &ub)] {
                self.threads
                    .push(delay_line(&core, from, to, half, self.stop.clone())?);
            }
        }
        Ok(())
    }

    pub fn host(&self, group: usize, host: usize) -> &Host {
        &self.hosts[group][host]
    }

    /// `program args...` run inside `host`'s namespace.
    pub fn command(&self, host: &Host, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.ns, program]);
        c
    }

    /// The uplink counters, as a value another thread can own.
    pub fn uplinks(&self) -> Uplinks {
        Uplinks {
            core: self.core.clone(),
        }
    }

    /// Bytes (Ethernet frames) that entered group `g` over its uplink.
    pub fn wan_bytes_in(&self, g: usize) -> u64 {
        self.uplinks().bytes_in(g)
    }

    /// IP bytes that entered group `g` over its uplink (`Uplinks::ip_bytes_in`).
    pub fn wan_ip_bytes_in(&self, g: usize) -> u64 {
        self.uplinks().ip_bytes_in(g)
    }

    /// Bytes that left group `g` over its uplink.
    pub fn wan_bytes_out(&self, g: usize) -> u64 {
        self.uplinks().bytes_out(g)
    }

    /// Bytes (Ethernet frames) that `host` has sent through its NIC.
    pub fn host_bytes_sent(&self, host: &Host) -> u64 {
        link_stats(&host.ns, "eth0").expect("NIC counters").tx_bytes
    }

    /// Takes group `g`'s uplink down or up (both ends at the group side).
    pub fn set_wan(&self, g: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        for dev in [format!("u{g}a"), format!("w{g}a")] {
            sh(&["ip", "-n", &self.core, "link", "set", &dev, state]).expect("link state");
        }
    }

    /// Round-trip time from `a` to `b`, the best of `n` pings.
    pub fn ping(&self, a: &Host, b: &Host, n: u32) -> Result<Duration, String> {
        let out = self
            .command(a, "ping")
            .args(["-n", "-q", "-i", "0.2", "-W", "2", "-c", &n.to_string()])
            .arg(b.ip.to_string())
            .output()
            .map_err(|e| format!("ping: {e} (apt install iputils-ping)"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // rtt min/avg/max/mdev = 40.1/40.3/40.6/0.2 ms
        let min = text
            .lines()
            .find(|l| l.contains("min/avg/max"))
            .and_then(|l| l.split('=').nth(1))
            .and_then(|v| v.trim().split('/').next())
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no reply from {}: {text}", b.ip))?;
        Ok(Duration::from_secs_f64(min / 1000.0))
    }
}

/// Reads the counters of the groups' uplinks (`uGa` in the core namespace;
/// what it receives entered the group).
#[derive(Clone)]
pub struct Uplinks {
    core: String,
}

impl Uplinks {
    pub fn bytes_in(&self, g: usize) -> u64 {
        self.counters(g).rx_bytes
    }

    pub fn bytes_out(&self, g: usize) -> u64 {
        self.counters(g).tx_bytes
    }

    /// Bytes of IP packets that entered group `g`: the frames less their
    /// 14-byte Ethernet headers, which a routed WAN does not carry (each
    /// hop has its own link layer). Frames arrive here one by one from the
    /// delay line, so the packet counter counts frames.
    pub fn ip_bytes_in(&self, g: usize) -> u64 {
        let c = self.counters(g);
        c.rx_bytes - 14 * c.rx_packets
    }

    fn counters(&self, g: usize) -> Counters {
        link_stats(&self.core, &format!("u{g}a")).expect("uplink counters")
    }
}

struct Counters {
    rx_bytes: u64,
    rx_packets: u64,
    tx_bytes: u64,
}

/// The counters of `dev` in namespace `ns`.
fn link_stats(ns: &str, dev: &str) -> Result<Counters, String> {
    let out = Command::new("ip")
        .args(["-n", ns, "-s", "-j", "link", "show", dev])
        .output()
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -j: {e}"))?;
    let s = &v[0]["stats64"];
    let get = |dir: &str, what: &str| {
        s[dir][what]
            .as_u64()
            .ok_or_else(|| format!("no {dir} {what} for {dev} in {ns}: {v}"))
    };
    Ok(Counters {
        rx_bytes: get("rx", "bytes")?,
        rx_packets: get("rx", "packets")?,
        tx_bytes: get("tx", "bytes")?,
    })
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for ns in self.made.drain(..).rev() {
            if let Err(e) = sh(&["ip", "netns", "del", &ns]) {
                eprintln!("netsim: could not remove namespace {ns}: {e}");
            }
        }
    }
}

/// An AF_PACKET socket on `dev` in the calling thread's namespace.
fn packet_socket(dev: &str) -> Result<OwnedFd, String> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call; the fd is owned right after. CLOEXEC:
    // the processes the tests start must not inherit the delay line.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            proto as i32,
        )
    };
    if fd < 0 {
        return Err(format!(
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Each frame comes with a virtio-net header, passed on unchanged: a
    // frame whose checksum the sender left to offload (CHECKSUM_PARTIAL,
    // the veth default for UDP and TCP) must leave the same way, or it
    // arrives with a wrong checksum and is dropped.
    let vnet: libc::c_int = 1;
    // SAFETY: valid fd, pointer to a live c_int.
    if unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            (&vnet as *const libc::c_int).cast(),
            4,
        )
    } != 0
    {
        return Err(format!(
            "PACKET_VNET_HDR: {}",
            std::io::Error::last_os_error()
        ));
    }
    let name = CString::new(dev).map_err(|e| e.to_string())?;
    // SAFETY: name is a valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(format!("no interface {dev}"));
    }
    // SAFETY: zeroed sockaddr_ll is valid; the fields set are plain data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    let one: libc::c_int = 1;
    let buf: libc::c_int = 8 << 20;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: valid fd, pointers to live values of the stated sizes.
    let ok = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) == 0
            && libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                4,
            ) == 0
            && libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&buf as *const libc::c_int).cast(),
                4,
            ) == 0
            && libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            ) == 0
    };
    if !ok {
        return Err(format!(
            "AF_PACKET on {dev}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(fd)
}

/// Enters namespace `ns` in the calling thread only.
pub fn enter(ns: &str) -> Result<(), String> {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).map_err(|e| format!("{ns}: {e}"))?;
    // SAFETY: a valid namespace fd; setns affects only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns {ns}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Passes every frame arriving on `from` out of `to` after `delay`. Two
/// threads: one receives and stamps, one waits out each frame's time and
/// sends, so a slow send never delays reception.
fn delay_line(
    ns: &str,
    from: &str,
    to: &str,
    delay: Duration,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, String> {
    let (ns, from, to) = (ns.to_string(), from.to_string(), to.to_string());
    let (ready_tx, ready_rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let sockets = enter(&ns).and_then(|_| Ok((packet_socket(&from)?, packet_socket(&to)?)));
        let (rx, tx) = match sockets {
            Ok(s) => {
                let _ = ready_tx.send(Ok(()));
                s
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let (queue_tx, queue_rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let sender_stop = stop.clone();
        let sender = std::thread::spawn(move || {
            while !sender_stop.load(Ordering::Relaxed) {
                let Ok((due, frame)) = queue_rx.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                // SAFETY: valid fd and buffer; a failed send is a lost
                // frame, as on a real link.
                unsafe {
                    libc::send(tx.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0);
                }
            }
        });
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: valid fd and buffer of the stated length.
            let n = unsafe { libc::recv(rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                let _ = queue_tx.send((Instant::now() + delay, buf[..n as usize].to_vec()));
            }
        }
        drop(queue_tx);
        let _ = sender.join();
    });
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(t),
        Ok(Err(e)) => {
            let _ = t.join();
            Err(e)
        }
        Err(_) => Err("delay line thread died".into()),
    }
}
