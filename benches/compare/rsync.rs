//! The old ways, with real rsync: an rsync daemon in every receiving host's
//! namespace; the sending side runs `rsync -a FILE rsync://HOST/m/` in its
//! own namespace.
//!
//! * serial: the seed copies to each host in turn.
//! * cascade: the algorithm of Perl's Net::CascadeCopy. The origin (the
//!   seed) copies to the first host of each group; every host that finishes
//!   becomes a source for the rest of its own group; a source runs at most
//!   `MAX_FORKS` copies at once; nothing crosses groups but the origin's
//!   first copy into each; a failed copy is retried, at most `MAX_TRIES`
//!   times per host. As in Net::CascadeCopy, the origin stands outside the
//!   groups: once it has served each group once it is done.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::netsim::Host;
use crate::task::Task;
use crate::{Bench, Outcome};

const MAX_FORKS: usize = 2;
const MAX_TRIES: u32 = 3;

/// rsync daemons on every joiner, each serving its host directory as
/// module `m`; stopped (and their CPU time counted) by `stop`.
struct Daemons(Vec<Task>);

impl Daemons {
    fn start(b: &Bench, out: &Path) -> Result<Daemons, String> {
        let mut tasks = Vec::new();
        for j in 0..b.joiners.len() {
            let name = b.name(j);
            let conf = out.join("logs").join(format!("{name}.rsyncd.conf"));
            std::fs::write(
                &conf,
                format!(
                    "use chroot = no\nnumeric ids = yes\nlog file = {}\n\
                     [m]\n  path = {}\n  read only = no\n  uid = root\n  gid = root\n",
                    out.join("logs")
                        .join(format!("{name}.rsyncd.log"))
                        .display(),
                    out.join(&name).display()
                ),
            )
            .map_err(|e| format!("{}: {e}", conf.display()))?;
            let mut cmd = b.net.command(b.host(j), "rsync");
            cmd.args(["--daemon", "--no-detach", "--port", "873", "--address"])
                .arg(b.host(j).ip.to_string())
                .arg(format!("--config={}", conf.display()));
            tasks.push(Task::spawn(
                cmd,
                &format!("{name}.rsyncd"),
                &out.join("logs"),
            ));
        }
        // ready when the seed can list the modules
        for (j, task) in tasks.iter_mut().enumerate() {
            let t = Instant::now();
            loop {
                let ok = b
                    .net
                    .command(b.seed(), "rsync")
                    .args(["--contimeout=2", "--timeout=5"])
                    .arg(format!("rsync://{}/", b.host(j).ip))
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    break;
                }
                if let Some(code) = task.poll().map(|e| e.code) {
                    return Err(format!(
                        "the rsync daemon of {} exited ({code:?}): {}",
                        b.name(j),
                        task.log_tail()
                    ));
                }
                if t.elapsed() > Duration::from_secs(10) {
                    return Err(format!("the rsync daemon of {} never answered", b.name(j)));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(Daemons(tasks))
    }

    /// Stops every daemon; their CPU seconds.
    fn stop(mut self) -> f64 {
        self.0.iter_mut().map(|t| t.stop().cpu).sum()
    }
}

/// `rsync -a [EXTRA...] SRC rsync://TO/m/` run on `from`.
fn push(
    b: &Bench,
    from: &Host,
    src: &Path,
    to: Ipv4Addr,
    (name, logs): (&str, &Path),
    extra: &[&str],
) -> Task {
    let mut cmd = b.net.command(from, "rsync");
    cmd.args(["-a", "--timeout=60", "--contimeout=10"])
        .args(extra)
        .arg(src)
        .arg(format!("rsync://{to}/m/"));
    Task::spawn(cmd, name, logs)
}

/// The seed copies to one host after the other.
pub fn serial(b: &Bench, out: &Path) -> Result<Outcome, String> {
    let daemons = Daemons::start(b, out)?;
    let logs = out.join("logs");
    let t0 = Instant::now();
    let mut done = Vec::new();
    let mut cpu = 0.0;
    for j in 0..b.joiners.len() {
        let mut tries = 0;
        loop {
            tries += 1;
            let name = format!("{}.try{tries}", b.name(j));
            let mut task = push(b, b.seed(), &b.image, b.host(j).ip, (&name, &logs), &[]);
            let exit = task.wait(b.limit.saturating_sub(t0.elapsed()))?;
            cpu += exit.cpu;
            if exit.success() {
                done.push(exit.at.duration_since(t0).as_secs_f64());
                break;
            }
            if tries == MAX_TRIES {
                return Err(format!(
                    "rsync to {} failed {tries} times:\n{}",
                    b.name(j),
                    task.log_tail()
                ));
            }
        }
    }
    cpu += daemons.stop();
    Ok(Outcome { done, cpu })
}

/// Who sends a copy: the origin (the seed) or joiner `j`.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    Origin,
    Joiner(usize),
}

struct Copy {
    task: Task,
    from: Source,
    to: usize,
}

/// Net::CascadeCopy's schedule, run until every joiner has a copy.
pub fn cascade(b: &Bench, out: &Path) -> Result<Outcome, String> {
    cascade_with(b, out, &[])
}

/// The cascade with `extra` arguments for every rsync client (the delta
/// scenario's `--delete`). A host's copy is `b.image`'s file name in its
/// directory, whatever is there before (the delta scenario puts last
/// night's version there, which rsync then uses as its basis).
pub fn cascade_with(b: &Bench, out: &Path, extra: &[&str]) -> Result<Outcome, String> {
    let name = b.image.file_name().expect("the image has a name");
    let daemons = Daemons::start(b, out)?;
    let logs = out.join("logs");
    let groups = b.net.hosts.len();
    // per group: joiners still to copy to, in host order
    let mut todo: Vec<VecDeque<usize>> = vec![VecDeque::new(); groups];
    for (j, (g, _)) in b.joiners.iter().enumerate() {
        todo[*g].push_back(j);
    }
    let mut sources: Vec<Vec<usize>> = vec![Vec::new(); groups];
    let mut origin_served = vec![false; groups];
    let mut tries = vec![0u32; b.joiners.len()];
    let mut done: Vec<Option<f64>> = vec![None; b.joiners.len()];
    let mut running: Vec<Copy> = Vec::new();
    let mut cpu = 0.0;
    let t0 = Instant::now();
    while done.iter().any(Option::is_none) {
        // reap finished copies
        let mut i = 0;
        while i < running.len() {
            let Some(exit) = running[i].task.poll() else {
                i += 1;
                continue;
            };
            let (ok, at) = (exit.success(), exit.at);
            cpu += exit.cpu;
            let c = running.swap_remove(i);
            let g = b.joiners[c.to].0;
            if ok {
                done[c.to] = Some(at.duration_since(t0).as_secs_f64());
                sources[g].push(c.to);
            } else {
                if tries[c.to] >= MAX_TRIES {
                    return Err(format!(
                        "rsync to {} failed {MAX_TRIES} times:\n{}",
                        b.name(c.to),
                        c.task.log_tail()
                    ));
                }
                if c.from == Source::Origin {
                    origin_served[g] = false;
                }
                todo[g].push_front(c.to);
            }
        }
        // start what the sources have room for
        let busy = |s: Source, running: &[Copy]| running.iter().filter(|c| c.from == s).count();
        for g in 0..groups {
            let mut starts: Vec<Source> = Vec::new();
            if !origin_served[g]
                && sources[g].is_empty()
                && busy(Source::Origin, &running) < MAX_FORKS
            {
                origin_served[g] = true;
                starts.push(Source::Origin);
            }
            for &s in &sources[g] {
                let free = MAX_FORKS.saturating_sub(busy(Source::Joiner(s), &running));
                starts.extend(std::iter::repeat_n(Source::Joiner(s), free));
            }
            for from in starts {
                let Some(to) = todo[g].pop_front() else {
                    if from == Source::Origin {
                        origin_served[g] = false;
                    }
                    break;
                };
                tries[to] += 1;
                let (host, src): (&Host, PathBuf) = match from {
                    Source::Origin => (b.seed(), b.image.clone()),
                    Source::Joiner(s) => (b.host(s), out.join(b.name(s)).join(name)),
                };
                let log = format!("{}.try{}", b.name(to), tries[to]);
                let task = push(b, host, &src, b.host(to).ip, (&log, &logs), extra);
                running.push(Copy { task, from, to });
            }
        }
        crate::task::check_interrupt()?;
        if t0.elapsed() > b.limit {
            return Err(format!("the cascade did not finish within {:?}", b.limit));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cpu += daemons.stop();
    Ok(Outcome {
        done: done.into_iter().map(|d| d.expect("all done")).collect(),
        cpu,
    })
}
