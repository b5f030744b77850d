//! Not a way to distribute a file, but what this machine and this emulated
//! network can move at best: the kernel's TCP, memory to memory, no disk, no
//! hashing, no encryption. The hosts form one chain in (group, host) order,
//! seed first, and every host but the last sends S bytes to the next, all
//! at once: each host receives the S it must receive in any method, sends
//! at most S (the fair share of a swarm's upload), and one flow enters each
//! remote group over its uplink. A host is done when it has read all S bytes
//! and the sender's end of stream. The flows run
//! in threads of this process, each in its host's network namespace; the
//! hosts share the machine's cores, so when this takes longer than T* the
//! machine, not a method, is the limit (docs/benchmarks.md).
//!
//!
//! quic-chain is the same chain over QUIC with swarm's settings
//! (`benches/common/quic.rs`): each host is one thread with a one-thread
//! runtime, as `swarm --threads 1` runs, pulling S from its predecessor in
//! 1 MiB pieces and serving its successor from memory. Set beside
//! tcp-chain and swarm, it shows what swarm's transport costs on this
//! machine before swarm does anything.
//!
//! (iperf3 does not do here: a client with `-n` ends the test once it has
//! written its bytes into the socket, and the server stops reading then,
//! several MB short at 200 Mbit/s.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Barrier, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netsim::{Host, enter};
use crate::{Bench, Outcome, quic};

const PORT: u16 = 5201;
const QUIC_PORT: u16 = 7100;
const BUF: usize = 1 << 20;

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu() -> f64 {
    crate::cpu::rusage(libc::RUSAGE_THREAD).as_secs_f64()
}

/// What one thread reports: when it finished and its CPU seconds.
type Report = Result<(Instant, f64), String>;

fn receive(host: &Host, size: u64, ready: mpsc::Sender<Result<(), String>>) -> Report {
    let listener =
        enter(&host.ns).and_then(|_| TcpListener::bind((host.ip, PORT)).map_err(|e| e.to_string()));
    let listener = match listener {
        Ok(l) => {
            let _ = ready.send(Ok(()));
            l
        }
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let waiting = Instant::now();
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if waiting.elapsed() > Duration::from_secs(30) {
                    return Err("no sender within 30 s".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    conn.set_nonblocking(false).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; BUF];
    let mut got = 0u64;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) => return Err(format!("after {got} bytes: {e}")),
        }
    }
    let at = Instant::now();
    if got != size {
        return Err(format!("{got} bytes instead of {size}"));
    }
    Ok((at, thread_cpu()))
}

fn send(from: &Host, to: SocketAddr, size: u64, start: &Barrier) -> Report {
    let entered = enter(&from.ns);
    start.wait(); // also on failure: the others wait for everyone
    entered?;
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(10))
        .map_err(|e| format!("connect {to}: {e}"))?;
    conn.set_write_timeout(Some(Duration::from_secs(30)))
        .and_then(|_| conn.set_read_timeout(Some(Duration::from_secs(30))))
        .map_err(|e| e.to_string())?;
    let buf = vec![0x5au8; BUF];
    let mut left = size;
    while left > 0 {
        let n = left.min(BUF as u64) as usize;
        conn.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    conn.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    // wait for the receiver's close, so the thread's CPU is all counted
    let _ = conn.read(&mut [0u8; 1]);
    Ok((Instant::now(), thread_cpu()))
}

fn join(t: JoinHandle<Report>, what: &str) -> Report {
    t.join()
        .map_err(|_| format!("{what}: thread panicked"))?
        .map_err(|e| format!("{what}: {e}"))
}

pub fn tcp_chain(b: &Bench, size: u64) -> Result<Outcome, String> {
    let hosts: Vec<Host> = (0..b.joiners.len()).map(|j| b.host(j).clone()).collect();
    let mut receivers = Vec::new();
    for host in &hosts {
        let (ready_tx, ready_rx) = mpsc::channel();
        let h = host.clone();
        receivers.push(std::thread::spawn(move || receive(&h, size, ready_tx)));
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("no listener on {} within 10 s", host.ip))??;
    }
    let start = Arc::new(Barrier::new(hosts.len() + 1));
    let mut senders = Vec::new();
    for (j, to) in hosts.iter().enumerate() {
        // joiner j is chain position j + 1; its sender is position j
        let from = if j == 0 { b.seed() } else { &hosts[j - 1] }.clone();
        let (to, start) = (SocketAddr::from((to.ip, PORT)), start.clone());
        senders.push(std::thread::spawn(move || send(&from, to, size, &start)));
    }
    let t0 = Instant::now();
    start.wait();
    let mut done = Vec::new();
    let mut cpu = 0.0;
    for (j, t) in receivers.into_iter().enumerate() {
        let (at, c) = join(t, &format!("receiving on {}", b.name(j)))?;
        done.push(at.duration_since(t0).as_secs_f64());
        cpu += c;
    }
    for (j, t) in senders.into_iter().enumerate() {
        cpu += join(t, &format!("sending to {}", b.name(j)))?.1;
    }
    Ok(Outcome { done, cpu })
}

/// One host of the QUIC chain: serves its successor (if any) and pulls
/// from its predecessor (if any). Reports when its pull ended (the start
/// for the seed) and the thread's CPU seconds.
fn quic_host(
    me: Host,
    from: Option<Host>,
    serves: bool,
    size: u64,
    limit: Duration,
    ready: mpsc::Sender<Result<(), String>>,
    start: &Barrier,
) -> Report {
    let setup = enter(&me.ns).and_then(|_| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    let rt = match setup {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            start.wait();
            return Err(e);
        }
    };
    rt.block_on(async {
        let ep = match quic::endpoint(SocketAddr::from((me.ip, QUIC_PORT))) {
            Ok(ep) => {
                let _ = ready.send(Ok(()));
                ep
            }
            Err(e) => {
                let _ = ready.send(Err(e.clone()));
                start.wait();
                return Err(e);
            }
        };
        let server = serves.then(|| tokio::spawn(quic::serve_one(ep.clone())));
        start.wait();
        let mut at = Instant::now();
        if let Some(from) = from {
            let addr = SocketAddr::from((from.ip, QUIC_PORT));
            let (conn, _) = tokio::time::timeout(limit, quic::pull(&ep, addr, size))
                .await
                .map_err(|_| format!("no {size} bytes from {addr} within {limit:?}"))??;
            at = Instant::now();
            conn.close(0u32.into(), b"done");
        }
        if let Some(server) = server {
            tokio::time::timeout(limit, server)
                .await
                .map_err(|_| format!("the successor did not finish within {limit:?}"))?
                .map_err(|e| e.to_string())?;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
        Ok((at, thread_cpu()))
    })
}

pub fn quic_chain(b: &Bench, size: u64) -> Result<Outcome, String> {
    // chain position 0 is the seed, k > 0 is joiner k - 1
    let chain: Vec<Host> = std::iter::once(b.seed().clone())
        .chain((0..b.joiners.len()).map(|j| b.host(j).clone()))
        .collect();
    let start = Arc::new(Barrier::new(chain.len() + 1));
    let mut threads = Vec::new();
    for (k, me) in chain.iter().enumerate() {
        let (ready_tx, ready_rx) = mpsc::channel();
        let from = k.checked_sub(1).map(|p| chain[p].clone());
        let serves = k + 1 < chain.len();
        let (me, start, limit) = (me.clone(), start.clone(), b.limit);
        threads.push(std::thread::spawn(move || {
            quic_host(me, from, serves, size, limit, ready_tx, &start)
        }));
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| format!("no QUIC endpoint on {} within 10 s", chain[k].ip))??;
    }
    let t0 = Instant::now();
    start.wait();
    let mut done = Vec::new();
    let mut cpu = 0.0;
    for (k, t) in threads.into_iter().enumerate() {
        let what = if k == 0 { "seed".into() } else { b.name(k - 1) };
        let (at, c) = join(t, &format!("QUIC chain on {what}"))?;
        if k > 0 {
            done.push(at.duration_since(t0).as_secs_f64());
        }
        cpu += c;
    }
    Ok(Outcome { done, cpu })
}
