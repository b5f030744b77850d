//! Validation of the parsed arguments into the node's typed configs. Every
//! error names the argument and the accepted form.

use std::io::{BufRead, Read};
use std::net::SocketAddr;
use std::path::Path;

use super::args::{GroupArgs, JoinArgs, ListenArgs, SeedArgs};
use super::units;
use crate::node::{GroupConfig, JoinConfig, MAX_BRIDGES, SeedConfig, Tuning};
use crate::ticket::Ticket;

pub fn seed(a: &SeedArgs) -> Result<SeedConfig, String> {
    if !a.path.exists() {
        return Err(format!("PATH: {} does not exist", a.path.display()));
    }
    let piece_size = match &a.piece_size {
        None => None,
        Some(s) => {
            let p = units::size("--piece-size", s)?;
            if !p.is_power_of_two() || !(4096..=1 << 30).contains(&p) {
                return Err(format!(
                    "--piece-size: {s} must be a power of two from 4KiB to 1GiB"
                ));
            }
            Some(p)
        }
    };
    if a.until_done == Some(0) {
        return Err("--until-done: N must be at least 1".into());
    }
    if a.until_copies == Some(0) {
        return Err("--until-copies: N must be at least 1".into());
    }
    if let Some(n) = a
        .until_done
        .filter(|&n| n > usize::from(a.listen.max_peers))
    {
        return Err(format!(
            "--until-done {n} needs --max-peers {n} or more: the seed hears that a host is done \
             only from hosts connected to it (or use --until-copies)"
        ));
    }
    Ok(SeedConfig {
        path: a.path.clone(),
        listen: units::addr("--listen", &a.listen.listen)?,
        advertise: advertise(&a.listen)?,
        max_peers: a.listen.max_peers.into(),
        piece_size,
        until_done: a.until_done,
        until_copies: a.until_copies,
        group: group(&a.group)?,
        upload_limit: upload_limit(&a.upload_limit)?,
        tuning: Tuning::default(),
        state: a.state.clone(),
    })
}

fn group(a: &GroupArgs) -> Result<GroupConfig, String> {
    if a.group.is_empty() || a.group.len() > crate::wire::MAX_GROUP_LEN {
        return Err(format!(
            "--group: {:?} must be 1 to {} bytes",
            a.group,
            crate::wire::MAX_GROUP_LEN
        ));
    }
    if !(1..=MAX_BRIDGES).contains(&a.bridges) {
        return Err(format!(
            "--bridges: {} must be from 1 to {MAX_BRIDGES}",
            a.bridges
        ));
    }
    Ok(GroupConfig {
        name: a.group.clone(),
        bridges: a.bridges,
        wan_limit: a
            .wan_limit
            .as_deref()
            .map(|s| units::rate("--wan-limit", s))
            .transpose()?,
    })
}

/// Bootstrap addresses besides the ticket's (`--peer`), at most 64.
pub fn peers(a: &[String]) -> Result<Vec<SocketAddr>, String> {
    const MAX: usize = 64;
    if a.len() > MAX {
        return Err(format!("--peer: at most {MAX} addresses, got {}", a.len()));
    }
    a.iter().map(|s| units::addr("--peer", s)).collect()
}

/// The text of `@FILE` (`@-`: a line of standard input, so that the secret need not
/// be on a command line, which every local user can read), at most
/// `MAX_TICKET_FILE` bytes: a ticket is one short line, and `@/dev/zero`
/// must not fill the memory.
pub fn ticket_file(arg: &str, file: &str) -> Result<String, String> {
    const MAX_TICKET_FILE: u64 = 64 << 10;
    let name = if file == "-" {
        "standard input".to_string()
    } else {
        crate::text::path(Path::new(file)).to_string()
    };
    let cannot = |e: std::io::Error| format!("{arg}: cannot read {name}: {e}");
    let mut buf = Vec::new();
    if file == "-" {
        // one line: a pipe that stays open (ssh's, a terminal) need not close
        std::io::stdin()
            .lock()
            .take(MAX_TICKET_FILE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(cannot)?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(MAX_TICKET_FILE + 1).read_to_end(&mut buf))
            .map_err(cannot)?;
    }
    if buf.len() as u64 > MAX_TICKET_FILE {
        return Err(format!(
            "{arg}: {name} is over {} KiB: not a ticket",
            MAX_TICKET_FILE >> 10
        ));
    }
    String::from_utf8(buf).map_err(|_| format!("{arg}: {name} is not text: not a ticket"))
}

/// `--advertise`: addresses others can dial, each with its port, of a
/// family the listen socket serves; at most as many as a ticket or a
/// hello carries.
fn advertise(a: &ListenArgs) -> Result<Vec<SocketAddr>, String> {
    let max = crate::ticket::MAX_ADDRS.min(crate::wire::MAX_ADDRS);
    if a.advertise.len() > max {
        return Err(format!(
            "--advertise: at most {max} addresses, got {}",
            a.advertise.len()
        ));
    }
    let listen = units::addr("--listen", &a.listen)?;
    let mut out: Vec<SocketAddr> = Vec::new();
    for s in &a.advertise {
        let addr: SocketAddr = s.trim().parse().map_err(|_| {
            format!(
                "--advertise: {s:?} is not IP:PORT (examples: 10.1.2.3:7000, [2001:db8::7]:7000)"
            )
        })?;
        let broadcast = matches!(addr.ip(), std::net::IpAddr::V4(ip) if ip.is_broadcast());
        if addr.ip().is_unspecified() || addr.ip().is_multicast() || broadcast || addr.port() == 0 {
            return Err(format!(
                "--advertise: {s} is not an address others can dial (a unicast IP and a port other than 0)"
            ));
        }
        if listen.is_ipv4() && addr.is_ipv6() {
            return Err(format!(
                "--advertise: {s} is IPv6 but --listen {listen} serves IPv4 only (listen on [::]:PORT for both)"
            ));
        }
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}

fn upload_limit(a: &Option<String>) -> Result<Option<u64>, String> {
    a.as_deref()
        .map(|s| units::rate("--upload-limit", s))
        .transpose()
}

pub fn join(a: &JoinArgs) -> Result<JoinConfig, String> {
    let text = match a.ticket.strip_prefix('@') {
        Some(file) => ticket_file("TICKET", file)?,
        None => a.ticket.clone(),
    };
    let ticket = Ticket::parse(&text).map_err(|e| format!("TICKET: not a valid swarm ticket ({e}); expected the swarm1:... line printed by `swarm seed`"))?;
    if !a.dest_dir.is_dir() {
        return Err(format!(
            "DEST_DIR: {} is not an existing directory",
            a.dest_dir.display()
        ));
    }
    for b in &a.basis {
        if std::fs::symlink_metadata(b).is_err() {
            return Err(format!("--basis: {} does not exist", crate::text::path(b)));
        }
    }
    Ok(JoinConfig {
        ticket,
        dest_dir: a.dest_dir.clone(),
        listen: units::addr("--listen", &a.listen.listen)?,
        advertise: advertise(&a.listen)?,
        max_peers: a.listen.max_peers.into(),
        linger: units::duration("--linger", &a.linger)?,
        exit_on_complete: a.exit_on_complete,
        force: a.force,
        basis: a.basis.clone(),
        keep: crate::storage::Keep {
            // SAFETY: geteuid has no preconditions and cannot fail.
            owners: !a.no_owner && unsafe { libc::geteuid() } == 0,
            setuid: a.keep_setuid,
        },
        group: group(&a.group)?,
        connect_timeout: units::duration("--connect-timeout", &a.connect_timeout)?,
        peers: peers(&a.peer)?,
        upload_limit: upload_limit(&a.upload_limit)?,
        tuning: Tuning::default(),
    })
}
