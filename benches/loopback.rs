//! Loopback benchmark: one seed -> one joiner with swarm, side by side with
//! iperf3 (the TCP ceiling) and an rsync daemon (with and without `--fsync`),
//! plus manifest build vs b3sum and the joiner's peak RSS, and QUIC alone
//! with swarm's settings (`common/quic.rs`): the ceiling of its transport.
//!
//! Run with `cargo bench --bench loopback`. Environment:
//! `SWARM_BENCH_SIZE` (bytes, or e.g. `256MiB`; default 1GiB),
//! `SWARM_BENCH_ROUNDS` (default 3), `SWARM_BENCH_QUICK=1` (64 MiB, 1 round),
//! `SWARM_BENCH_PIECE` (the seed's `--piece-size`; default: swarm's own).
//! Needs `iperf3`, `rsync`, `b3sum` and GNU `/usr/bin/time`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/quic.rs"]
mod quic;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const SWARM: &str = env!("CARGO_BIN_EXE_swarm");

/// A child process stopped (SIGTERM, then SIGKILL) when dropped, also on panic.
struct Guard {
    name: String,
    child: Child,
}

impl Guard {
    fn spawn(name: &str, cmd: &mut Command) -> Guard {
        let child = cmd.spawn();
        let child = child.unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Guard {
            name: name.into(),
            child,
        }
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.exited() {
            return;
        }
        // Only ever signals the PID of the child this guard started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        if !wait_for(Duration::from_secs(2), || self.exited()) {
            eprintln!("bench: {} ignored SIGTERM, killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `done` every millisecond until it holds (true) or `timeout` passes.
fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Runs `cmd` to completion (at most `timeout`), panics unless it exits 0,
/// and returns its wall time.
fn run_timed(what: &str, cmd: &mut Command, timeout: Duration) -> Duration {
    let start = Instant::now();
    let mut p = Guard::spawn(what, cmd);
    let mut status = None;
    let done = wait_for(timeout, || {
        status = p.child.try_wait().expect("wait");
        status.is_some()
    });
    let took = start.elapsed();
    assert!(done, "{what} did not finish within {timeout:?}");
    let status = status.expect("exited");
    assert!(status.success(), "{what} failed: {status}");
    took
}

/// Plain bytes, or a number followed by KiB, MiB or GiB.
fn parse_size(s: &str) -> u64 {
    let s = s.trim();
    let (num, mult) = [("KiB", 1 << 10), ("MiB", MIB), ("GiB", GIB)]
        .iter()
        .find_map(|&(unit, mult)| Some((s.strip_suffix(unit)?, mult)))
        .unwrap_or((s, 1));
    let n: u64 = num.trim().parse().unwrap_or_else(|_| {
        panic!("SWARM_BENCH_SIZE: {s:?} is not bytes or a number with KiB/MiB/GiB")
    });
    n * mult
}

fn require_tools() {
    for tool in ["iperf3", "rsync", "b3sum"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        // The Debian packages are named like the tools.
        assert!(found, "`{tool}` not found: apt-get install {tool}");
    }
    let time = Path::new("/usr/bin/time").exists();
    assert!(time, "GNU /usr/bin/time not found: apt-get install time");
}

fn write_image(path: &Path, size: u64) {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut f = File::create(path).expect("create image");
    let mut buf = vec![0u8; 8 * MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write image");
        left -= n as u64;
    }
    f.sync_all().expect("sync image");
}

fn hash_file(path: &Path) -> blake3::Hash {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf);
        let n = n.unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            return h.finalize();
        }
        h.update(&buf[..n]);
    }
}

/// CPU time of this process's waited-for children: what every method's
/// processes used, read before and after it runs.
fn children_cpu() -> Duration {
    cpu::rusage(libc::RUSAGE_CHILDREN)
}

/// CPU time of this process: QUIC alone runs in it.
fn own_cpu() -> Duration {
    cpu::rusage(libc::RUSAGE_SELF)
}

/// CPU time a running process has used so far, from /proc (10 ms steps).
fn proc_cpu(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // utime and stime are the 14th and 15th fields of the line; after the
    // parenthesised name, the first field is the 3rd (the state)
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Waits (5 s at most) until `server` listens on TCP `port`, as seen in
/// /proc/net/tcp. We do not probe by connecting: a one-off `iperf3 -s -1`
/// server takes any connection as its one test and exits.
fn wait_listening(server: &mut Guard, port: u16) {
    let needle = format!(":{port:04X}");
    let listening = || {
        let table = fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        table.lines().any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[1].ends_with(&needle) && cols[3] == "0A"
        })
    };
    let up = wait_for(Duration::from_secs(5), || listening() || server.exited());
    let ok = up && !server.exited();
    assert!(ok, "{} is not listening on port {port}", server.name);
}

struct Bench {
    work: PathBuf,
    image: PathBuf,
    name: String,
    size: u64,
    hash: blake3::Hash,
    timeout: Duration,
    /// The previous method's output directory, not yet deleted.
    prev: Option<PathBuf>,
}

impl Bench {
    /// A fresh output directory for `method`. The previous method's one is
    /// deleted only now, right before the next timed run, not when that method
    /// ended: this VM makes the first write into freshly allocated memory very
    /// slow (~4 s/GiB) unless memory freed within the last ~2 s is reused, so
    /// freeing the previous copy's page cache just before each method puts all
    /// of them on the same footing.
    fn fresh(&mut self, method: &str) -> PathBuf {
        if let Some(p) = self.prev.take() {
            fs::remove_dir_all(&p).unwrap_or_else(|e| panic!("rm {}: {e}", p.display()));
        }
        let dir = self.work.join(format!("out-{method}"));
        fs::create_dir_all(&dir).expect("create output dir");
        self.prev = Some(dir.clone());
        dir
    }

    /// Checks the copy in `dir` and returns the throughput in bytes/s.
    fn verify(&self, method: &str, dir: &Path, took: Duration) -> f64 {
        let copy = dir.join(&self.name);
        let same = hash_file(&copy) == self.hash;
        assert!(same, "{method}: {} differs from the source", copy.display());
        self.size as f64 / took.as_secs_f64()
    }
}

fn iperf3(b: &mut Bench) -> f64 {
    b.fresh("iperf3"); // writes nothing, but frees the previous copy
    let port = free_port().to_string();
    let mut server = Guard::spawn(
        "iperf3 server",
        Command::new("iperf3")
            .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(&mut server, port.parse().expect("port"));
    let size = b.size.to_string();
    let res = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-p", &port, "-J", "-n", &size])
        .output()
        .expect("run iperf3 client");
    let v: Value = serde_json::from_slice(&res.stdout).expect("iperf3 prints JSON");
    assert!(res.status.success(), "iperf3 client failed: {}", v["error"]);
    let end = &v["end"];
    let bps = (end["sum_received"]["bits_per_second"].as_f64())
        .or(end["sum"]["bits_per_second"].as_f64())
        .expect("iperf3 JSON has no end.sum_received.bits_per_second");
    wait_for(Duration::from_secs(5), || server.exited());
    bps / 8.0
}

fn rsync(b: &mut Bench, fsync: bool) -> f64 {
    let method = if fsync { "rsync-fsync" } else { "rsync" };
    let port = free_port();
    let conf_dir = b.work.join(format!("{method}-conf"));
    fs::create_dir_all(&conf_dir).expect("create rsync conf dir");
    let conf = conf_dir.join("rsyncd.conf");
    // Run the module as ourselves (rsync would switch a root daemon to nobody).
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let text = format!(
        "port = {port}\naddress = 127.0.0.1\nuse chroot = no\npid file = {}\nlog file = {}\n\n\
         [src]\npath = {}\nread only = yes\nuid = {uid}\ngid = {gid}\n",
        conf_dir.join("rsyncd.pid").display(),
        conf_dir.join("rsyncd.log").display(),
        b.image.parent().expect("image dir").display(),
    );
    fs::write(&conf, text).expect("write rsyncd.conf");
    let mut daemon = Guard::spawn(
        "rsync daemon",
        Command::new("rsync")
            .args(["--daemon", "--no-detach"])
            .arg(format!("--config={}", conf.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(&mut daemon, port);
    let dest = b.fresh(method);
    let mut cmd = Command::new("rsync");
    cmd.args(["-a", "--whole-file"])
        .arg(format!("rsync://127.0.0.1:{port}/src/{}", b.name))
        .arg(format!("{}/", dest.display()));
    if fsync {
        cmd.arg("--fsync");
    }
    let took = run_timed(method, &mut cmd, b.timeout);
    // The daemon's child for this connection (the sending side) counts in
    // our children's CPU only once the daemon has reaped it: wait for that
    // before the daemon is stopped.
    let pid = daemon.child.id();
    let children = format!("/proc/{pid}/task/{pid}/children");
    let reaped = || fs::read_to_string(&children).map_or(true, |c| c.trim().is_empty());
    if !wait_for(Duration::from_secs(5), reaped) {
        eprintln!("bench: the rsync daemon still has a child; its CPU may go uncounted");
    }
    b.verify(method, &dest, took)
}

struct SwarmRun {
    bytes_per_sec: f64,
    complete_secs: f64,
    rss_kib: u64,
    /// CPU the seed had used when its ticket appeared: the manifest build,
    /// left out of the transfer's CPU.
    seed_build_cpu: Duration,
    /// The join's own CPU (GNU time's user + system).
    join_cpu: Duration,
}

fn swarm(b: &mut Bench, round: usize) -> SwarmRun {
    let dir = b.work.join(format!("swarm-{round}"));
    fs::create_dir_all(&dir).expect("create swarm dir");
    let log = |name: &str| Stdio::from(File::create(dir.join(name)).expect("create log"));
    let ticket = dir.join("ticket");
    let mut seed = Guard::spawn(
        "swarm seed",
        Command::new(SWARM)
            .args(["-q", "seed"])
            .arg(&b.image)
            .args(["--listen", "127.0.0.1:0", "--until-done", "1"])
            .args(
                std::env::var("SWARM_BENCH_PIECE")
                    .ok()
                    .map(|p| vec!["--piece-size".to_string(), p])
                    .unwrap_or_default(),
            )
            .arg("--ticket-file")
            .arg(&ticket)
            .stdout(log("seed.out"))
            .stderr(log("seed.err")),
    );
    let ready = wait_for(Duration::from_secs(60), || ticket.exists() || seed.exited());
    let ok = ready && ticket.exists();
    assert!(ok, "no ticket within 60 s (see {})", dir.display());
    let seed_build_cpu = proc_cpu(seed.child.id());

    let dest = b.fresh("swarm");
    let (report, rss) = (dir.join("join.json"), dir.join("join.rss"));
    let took = run_timed(
        "swarm join",
        Command::new("/usr/bin/time")
            .args(["-f", "%M %U %S", "-o"])
            .arg(&rss)
            .arg(SWARM)
            .args(["-q", "join"])
            .arg(format!("@{}", ticket.display()))
            .arg(&dest)
            .args(["--listen", "127.0.0.1:0", "--exit-on-complete"])
            .arg("--report")
            .arg(&report)
            .stdout(log("join.out"))
            .stderr(log("join.err")),
        b.timeout,
    );
    if !wait_for(Duration::from_secs(30), || seed.exited()) {
        eprintln!("bench: the seed did not exit within 30 s of the join; killing it");
    }
    drop(seed);
    let bytes_per_sec = b.verify("swarm", &dest, took);
    let r: Value = serde_json::from_slice(&fs::read(&report).expect("read join report"))
        .expect("join report is JSON");
    let time_text = fs::read_to_string(&rss).expect("read GNU time's output");
    // the last line: GNU time puts a note above it when the command fails
    let f: Vec<f64> = (time_text.lines().last().unwrap_or(""))
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert!(
        f.len() == 3,
        "GNU time wrote {time_text:?}, not RSS, user, system"
    );
    SwarmRun {
        bytes_per_sec,
        complete_secs: r["complete_secs"].as_f64().expect("complete_secs"),
        rss_kib: f[0] as u64,
        seed_build_cpu,
        join_cpu: Duration::from_secs_f64(f[1] + f[2]),
    }
}

fn best_of_3(mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

/// Manifest build and b3sum speeds in GB/s, with b3sum's thread count.
fn hashing_speeds(image: &Path, size: u64) -> (f64, f64, usize) {
    hash_file(image); // the image is in page cache for both
    let build = best_of_3(|| {
        swarm::storage::build(image, None).unwrap_or_else(|e| panic!("manifest build: {e}"));
    });
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let b3sum = best_of_3(|| {
        let st = Command::new("b3sum")
            .args(["--num-threads", &threads.to_string()])
            .arg(image)
            .stdout(Stdio::null())
            .status()
            .expect("run b3sum");
        assert!(st.success(), "b3sum failed: {st}");
    });
    let gbs = |secs: f64| size as f64 / secs / 1e9;
    (gbs(build), gbs(b3sum), threads)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

/// QUIC alone (`common/quic.rs`) between two runtimes of this process,
/// each with one worker per core as the seed's and the joiner's have:
/// bytes per second, the handshake left out.
fn quic_alone(size: u64, limit: Duration) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    };
    let (server_rt, client_rt) = (runtime(), runtime());
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let server = server_rt
        .block_on(async { quic::endpoint(any) })
        .expect("a QUIC endpoint");
    let addr = server.local_addr().expect("its address");
    server_rt.spawn(quic::serve_one(server.clone()));
    let took = client_rt
        .block_on(async {
            tokio::time::timeout(limit, async {
                let ep = quic::endpoint(any)?;
                let (conn, took) = quic::pull(&ep, addr, size).await?;
                conn.close(0u32.into(), b"done");
                ep.wait_idle().await;
                Ok::<_, String>(took)
            })
            .await
        })
        .expect("QUIC alone within the time limit")
        .expect("QUIC alone");
    server.close(0u32.into(), b"done");
    size as f64 / took.as_secs_f64()
}

fn main() {
    require_tools();
    let quick = std::env::var("SWARM_BENCH_QUICK").is_ok_and(|v| v == "1");
    let env = |k| std::env::var(k).ok();
    let size = if quick {
        64 * MIB
    } else {
        env("SWARM_BENCH_SIZE").map_or(GIB, |s| parse_size(&s))
    };
    let rounds: usize = match env("SWARM_BENCH_ROUNDS") {
        _ if quick => 1,
        Some(r) => r.parse().expect("SWARM_BENCH_ROUNDS: a positive integer"),
        None => 3,
    };
    assert!(size > 0 && rounds > 0, "size and rounds must be positive");

    let tmp = tempfile::Builder::new()
        .prefix("swarm-bench-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let work = tmp.path().to_path_buf();
    fs::create_dir_all(work.join("img")).expect("create image dir");
    let image = work.join("img/image.bin");
    eprintln!("bench: writing a {size}-byte image to {}", image.display());
    write_image(&image, size);
    let mut b = Bench {
        hash: hash_file(&image),
        name: "image.bin".into(),
        image,
        work,
        size,
        timeout: Duration::from_secs(120 + 120 * size.div_ceil(GIB)),
        prev: None,
    };

    // A throw-away copy, deleted as iperf3 starts: round 1's rsync then finds
    // freshly freed memory just like rsync in later rounds (after swarm's copy).
    let warm = b.fresh("warm-up");
    fs::copy(&b.image, warm.join(&b.name)).expect("warm-up copy");

    // Per method, one bytes/s figure a round: iperf3, rsync, rsync --fsync,
    // swarm (wall time), swarm (by its report's complete_secs), QUIC alone.
    let mut samples: [Vec<f64>; 6] = Default::default();
    // CPU seconds per GiB a round, both ends together: iperf3, rsync,
    // rsync --fsync, swarm, QUIC alone; then swarm's seed (serving only)
    // and joiner apart.
    let mut cpu: [Vec<f64>; 7] = Default::default();
    let per_gib = |d: Duration| d.as_secs_f64() * GIB as f64 / size as f64;
    let mut rss_kib = 0;
    for round in 1..=rounds {
        eprintln!("bench: round {round}/{rounds}");
        let mut timed = |i: usize, cpu_of: fn() -> Duration, f: &mut dyn FnMut() -> f64| {
            let before = cpu_of();
            samples[i].push(f());
            cpu[i].push(per_gib(cpu_of() - before));
        };
        timed(0, children_cpu, &mut || iperf3(&mut b));
        timed(1, children_cpu, &mut || rsync(&mut b, false));
        timed(2, children_cpu, &mut || rsync(&mut b, true));
        let before = children_cpu();
        let s = swarm(&mut b, round);
        let both = (children_cpu() - before).saturating_sub(s.seed_build_cpu);
        cpu[3].push(per_gib(both));
        cpu[5].push(per_gib(both.saturating_sub(s.join_cpu)));
        cpu[6].push(per_gib(s.join_cpu));
        samples[3].push(s.bytes_per_sec);
        samples[4].push(size as f64 / s.complete_secs);
        rss_kib = rss_kib.max(s.rss_kib);
        b.fresh("quic"); // writes nothing, but frees the previous copy
        let before = own_cpu();
        samples[5].push(quic_alone(size, b.timeout));
        cpu[4].push(per_gib(own_cpu() - before));
        let mbs: Vec<String> = samples
            .iter()
            .map(|v| format!("{:.0}", v[round - 1] / 1e6))
            .collect();
        let cpus: Vec<String> = cpu[..5]
            .iter()
            .map(|v| format!("{:.2}", v[round - 1]))
            .collect();
        eprintln!(
            "bench: round {round} MB/s (iperf3, rsync, rsync --fsync, swarm, swarm by complete_secs, QUIC alone): {}; CPU s/GiB (iperf3, rsync, rsync --fsync, swarm, QUIC alone): {}",
            mbs.join(", "),
            cpus.join(", ")
        );
    }
    b.fresh("done");
    let [ip, rs, rsf, sw, sw_own, qc] = samples.map(median);
    let [ip_cpu, rs_cpu, rsf_cpu, sw_cpu, qc_cpu, seed_cpu, join_cpu] = cpu.map(median);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // What a method could move if it kept every core busy: cores / (CPU s
    // per byte). Both ends share these cores on loopback.
    let cpu_cap = |cpu_per_gib: f64| cores as f64 * GIB as f64 / cpu_per_gib;
    let (build_gbs, b3_gbs, threads) = hashing_speeds(&b.image, size);
    let ratio = build_gbs / b3_gbs;

    let plural = if rounds == 1 { "" } else { "s" };
    let (s, unit) = if size < GIB {
        (MIB, "MiB")
    } else {
        (GIB, "GiB")
    };
    let s = size as f64 / s as f64;
    println!("\nloopback, S = {s:.2} {unit}, {rounds} round{plural} (median)");
    println!(
        "method                 MB/s   ratio to iperf3   CPU s/GiB   CPU allows MB/s   ratio to rsync"
    );
    let rows = [
        ("iperf3 (TCP)", ip, ip_cpu, String::new()),
        ("rsync daemon", rs, rs_cpu, "1.00".into()),
        ("rsync --fsync", rsf, rsf_cpu, format!("{:.2}", rsf / rs)),
        (
            "swarm",
            sw,
            sw_cpu,
            format!("{:.2} (vs rsync --fsync: {:.2})", sw / rs, sw / rsf),
        ),
        ("QUIC alone", qc, qc_cpu, format!("{:.2}", qc / rs)),
    ];
    for (method, bps, c, vs_rsync) in rows {
        let (mbs, vs_ip, cap) = (bps / 1e6, bps / ip, cpu_cap(c) / 1e6);
        let line = format!("{method:<18}{mbs:>9.0}   {vs_ip:<18.2}{c:<12.2}{cap:<18.0}{vs_rsync}");
        println!("{}", line.trim_end());
    }
    println!(
        "(CPU: both ends' processes, the seed's manifest build left out; kernel work \
         done outside them (writeback by flusher threads, softirqs in ksoftirqd) is not \
         counted. CPU allows: {cores} cores / CPU per byte, the most the method could move \
         on this machine if it kept every core busy. swarm's seed serving {seed_cpu:.2} and \
         joiner {join_cpu:.2} CPU s/GiB (medians of their own); half of iperf3 would need \
         at most {:.2})",
        cores as f64 * GIB as f64 / (ip / 2.0)
    );
    println!(
        "(swarm by the join's own complete_secs: {:.0} MB/s; the table uses wall time)",
        sw_own / 1e6
    );
    let rss_mib = rss_kib.div_ceil(1024);
    println!("swarm join peak RSS: {rss_mib} MiB (goal <= 64 MiB)");
    println!(
        "manifest build: {build_gbs:.2} GB/s, b3sum ({threads} threads): {b3_gbs:.2} GB/s, \
         ratio {ratio:.2} (goal >= 0.8)"
    );
    println!(
        "(QUIC alone: swarm's transport settings, memory to memory, no disk or hashing, \
         timed without the handshake; swarm reaches {:.2} of it by wall time, {:.2} by \
         complete_secs)",
        sw / qc,
        sw_own / qc
    );
    println!("note: loopback has no NIC; the physical limit here is the iperf3 figure.");

    let report = json!({
        "size_bytes": size,
        "rounds": rounds,
        "quick": quick,
        "bytes_per_sec": {
            "iperf3": ip, "rsync": rs, "rsync_fsync": rsf,
            "swarm": sw, "swarm_by_complete_secs": sw_own, "quic_alone": qc,
        },
        "swarm_ratio": { "iperf3": sw / ip, "rsync": sw / rs, "rsync_fsync": sw / rsf },
        "cpu_secs_per_gib": {
            "iperf3": ip_cpu, "rsync": rs_cpu, "rsync_fsync": rsf_cpu,
            "swarm": sw_cpu, "swarm_seed_serving": seed_cpu, "swarm_join": join_cpu,
            "quic_alone": qc_cpu,
        },
        "cores": cores,
        "swarm_join_peak_rss_kib": rss_kib,
        "manifest_build_gb_per_sec": build_gbs,
        "b3sum_gb_per_sec": b3_gbs,
        "b3sum_threads": threads,
        "manifest_vs_b3sum": ratio,
    });
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-loopback.json");
    let text = serde_json::to_string_pretty(&report).expect("serialize") + "\n";
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    println!("figures written to {}", path.display());
}
