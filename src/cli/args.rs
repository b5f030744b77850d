//! The command line, as clap sees it. Validation into typed configs lives
//! in `config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "swarm",
    version,
    about = "Distribute a big file or directory to many hosts, BitTorrent-style over QUIC",
    after_help = "Exit codes: 0 success, 1 internal error, 2 usage error, 3 network failure, \
                  4 verification failure, 5 local I/O failure, 130 interrupted \
                  (SIGINT, SIGTERM; a serving seed stopped so exits 0)."
)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Worker threads for networking (default: half the cores, at least
    /// one). Hashing and disk I/O run on their own threads.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Hash PATH into a manifest, print a ticket, and serve it.
    Seed(SeedArgs),
    /// Join a swarm with a ticket and place the copy inside DEST_DIR.
    Join(JoinArgs),
    /// Run a local demo: a seed and N joiners as separate processes on loopback.
    Demo(DemoArgs),
    /// Check that PATH is the image: its tree and metadata, then every
    /// piece re-hashed. Exit 0 if it is, 4 naming the first difference.
    Verify(VerifyArgs),
    /// Show what an image is: its id, size, piece size, entries, and the
    /// ticket's addresses (never its secret).
    Inspect(InspectArgs),
    /// Simulate a push to a fleet in virtual time (swarm's own policy over
    /// a flow-level network, and the rsync cascade), to plan it.
    Simulate(SimulateArgs),
}

/// `swarm simulate`: the fleet, its network and the image.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Datacenter groups (the seed is in the first).
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// Hosts per group; the seed is one of the first group's.
    #[arg(long, default_value_t = 8)]
    pub hosts_per_group: usize,
    /// Image size.
    #[arg(long, default_value = "1GiB")]
    pub size: String,
    /// Piece size (default: as `swarm seed` picks it for the size).
    #[arg(long)]
    pub piece_size: Option<String>,
    /// Every host's NIC, each way.
    #[arg(long, default_value = "10Gbit/s")]
    pub nic: String,
    /// Each group's WAN link, each way (default: only the NICs limit).
    #[arg(long)]
    pub wan: Option<String>,
    /// One-way latency inside a group.
    #[arg(long, default_value = "100us")]
    pub lan_latency: String,
    /// One-way latency between groups.
    #[arg(long, default_value = "30ms")]
    pub wan_latency: String,
    /// Bridges per group (`swarm join --bridges`).
    #[arg(long, default_value_t = 1)]
    pub bridges: usize,
    /// The seed's `--max-peers`: past it, hosts are sent to others.
    #[arg(long, value_name = "N", default_value_t = 512,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub seed_max_peers: u16,
    /// Joiners start at times drawn at random, uniformly over this
    /// (default: all at once).
    #[arg(long, default_value = "0s")]
    pub stagger: String,
    /// Slow hosts: SHARE:FACTOR, e.g. 10%:0.25 for a tenth of the joiners
    /// with NICs at a quarter of the speed.
    #[arg(long)]
    pub slow: Option<String>,
    /// How long a finished joiner stays for others (`swarm join --linger`).
    #[arg(long, default_value = "3s")]
    pub linger: String,
    /// Hosts that die: SHARE@TIME, e.g. 5%@10s for a twentieth of the
    /// joiners killed 10 s in (their peers notice after QUIC's idle timeout).
    #[arg(long)]
    pub fail: Option<String>,
    /// A WAN outage: START+DURATION, e.g. 20s+30s: every WAN link carries
    /// nothing from 20 s in for 30 s.
    #[arg(long)]
    pub wan_outage: Option<String>,
    /// The network model's step (default: a 16th of a piece's time on a NIC).
    #[arg(long)]
    pub tick: Option<String>,
    /// Seeds every random choice: the same inputs give the same output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Virtual time after which the run is cut off.
    #[arg(long, default_value = "1h")]
    pub limit: String,
    /// One JSON document on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Also draw the run to FILE (SVG): hosts done and bytes delivered over
    /// time, swarm against the cascade and the limit.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// The baselines to run beside swarm, comma-separated: cascade,
    /// bittorrent, or none (the BitTorrent model costs about as much as
    /// swarm's on large fleets).
    #[arg(long, default_value = "cascade,bittorrent", value_name = "LIST")]
    pub baselines: String,
}

/// Where the image's manifest comes from.
#[derive(Args, Debug)]
pub struct ImageArgs {
    /// A ticket (swarm1:..., or @FILE to read it from a file), whose
    /// swarm is asked for the manifest; or a manifest file (as `swarm
    /// seed --manifest-out` writes it).
    pub image: String,
    /// How long to try reaching the swarm (a ticket).
    #[arg(long, default_value = "15s")]
    pub connect_timeout: String,
    /// Also ask this host of the swarm (IP:PORT; repeat for more).
    #[arg(long, value_name = "ADDR")]
    pub peer: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// The copy to check: the file or directory itself (DEST_DIR/NAME).
    pub path: PathBuf,
    /// Owners and groups are not compared (they are when run as root, as
    /// a join run as root sets them).
    #[arg(long)]
    pub no_owner: bool,
    /// setuid and setgid bits of files are expected as the image has them
    /// (a join keeps them only with --keep-setuid, as root).
    #[arg(long)]
    pub keep_setuid: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// One JSON document on stdout, with every entry.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SeedArgs {
    /// File or directory to distribute.
    pub path: PathBuf,
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Piece size, a power of two from 4KiB to 1GiB (default: 1MiB, larger for images over 64GiB).
    #[arg(long)]
    pub piece_size: Option<String>,
    /// Also write the ticket to FILE (mode 0600, by an atomic rename;
    /// checked before hashing).
    #[arg(long)]
    pub ticket_file: Option<PathBuf>,
    /// Exit once N peers have reported a complete copy.
    #[arg(long, value_name = "N")]
    pub until_done: Option<usize>,
    /// Exit once every piece is held (verified) by at least N other hosts,
    /// so the swarm goes on without the seed. With --until-done, whichever
    /// comes first.
    #[arg(long, value_name = "N")]
    pub until_copies: Option<u32>,
    /// Upload at most this fast (e.g. 400Mbit/s, 50MiB/s).
    #[arg(long, value_name = "RATE")]
    pub upload_limit: Option<String>,
    #[command(flatten)]
    pub group: GroupArgs,
    /// Write a JSON report of the run to FILE (mode 0600), however it ends.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (IP:PORT; TCP):
    /// bytes by direction and group, pieces, peers, corrupt pieces, bans,
    /// completion. Bound at start: a port in use fails at once.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Keep the manifest and the secret in DIR (made 0700 if missing; it
    /// must be this user's): restarted on an unchanged PATH, the seed
    /// starts at once with the same ticket; a changed PATH is hashed
    /// again. DIR/manifest is a manifest file for verify and inspect.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Also write the manifest to FILE (for `swarm verify` and `swarm
    /// inspect` without the network; checked before hashing).
    #[arg(long, value_name = "FILE")]
    pub manifest_out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// The ticket printed by `swarm seed`, or @FILE to read it from a file.
    pub ticket: String,
    /// Directory in which the file or directory is placed.
    pub dest_dir: PathBuf,
    #[command(flatten)]
    pub listen: ListenArgs,
    /// After completing, keep serving until all known peers are complete, plus this long.
    #[arg(long, default_value = "3s")]
    pub linger: String,
    /// Exit as soon as the copy is complete instead of serving others.
    #[arg(long)]
    pub exit_on_complete: bool,
    /// Replace an existing destination.
    #[arg(long)]
    pub force: bool,
    /// An older copy of the image (a file or tree) to take unchanged data
    /// from; repeat for more. The destination's own older copy is used
    /// too when --force is given. Only read, never modified.
    #[arg(long, value_name = "PATH")]
    pub basis: Vec<PathBuf>,
    /// Do not set owners and groups from the seed's numeric ids (they are
    /// set only when run as root; files are then owned by the joining
    /// user).
    #[arg(long)]
    pub no_owner: bool,
    /// Keep the setuid and setgid bits of files (as root, with owners).
    /// Off by default: a seed could otherwise hand every joining host a
    /// setuid-root program.
    #[arg(long)]
    pub keep_setuid: bool,
    /// How long to try reaching the seed.
    #[arg(long, default_value = "15s")]
    pub connect_timeout: String,
    /// Also start from this host already in the swarm (IP:PORT; repeat for
    /// more): a join can begin after the seed has left, and the manifest is
    /// taken from whichever host answers first with the right one.
    #[arg(long, value_name = "ADDR")]
    pub peer: Vec<String>,
    /// Upload at most this fast (e.g. 400Mbit/s, 50MiB/s).
    #[arg(long, value_name = "RATE")]
    pub upload_limit: Option<String>,
    #[command(flatten)]
    pub group: GroupArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics (IP:PORT; TCP):
    /// bytes by direction and group, pieces, peers, corrupt pieces, bans,
    /// completion. Bound at start: a port in use fails at once.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Write a JSON report of the run to FILE (mode 0600), however it ends.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Where this host listens and where the others reach it.
#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Address to listen on for peers (IP:PORT, UDP); port 0 picks a free
    /// one. Give a fixed port where a firewall must let it through.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: String,
    /// Where the other hosts reach this one (IP:PORT; repeat for more),
    /// when that is not the listen address: behind NAT, in a Kubernetes
    /// pod. It replaces the addresses a seed puts in the ticket and the
    /// ones a host tells its peers.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Vec<String>,
    /// Connections this host keeps at most (1-512). A host that reaches it
    /// past that is given the addresses of others and sent on: a seed
    /// with `--max-peers 32` feeds 32 hosts and the rest fetch from them.
    #[arg(long, value_name = "N", default_value_t = 512,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub max_peers: u16,
}

/// Datacenter groups: hosts fetch from their own group; a few bridges per
/// group fetch what the group lacks from other groups.
#[derive(Args, Debug)]
pub struct GroupArgs {
    /// This host's group (datacenter); any name, up to 64 bytes.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub group: String,
    /// How many hosts of each group fetch across groups (1 to 16): the
    /// group's longest-running hosts.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub bridges: usize,
    /// Cap on this host's cross-group traffic, each direction (e.g. 400Mbit/s).
    #[arg(long, value_name = "RATE")]
    pub wan_limit: Option<String>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of joining processes.
    #[arg(long, default_value_t = 8)]
    pub peers: usize,
    /// Size of the generated random image.
    #[arg(long, default_value = "512MiB")]
    pub size: String,
    /// Work directory (default: a new temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}
