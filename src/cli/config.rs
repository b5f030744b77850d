//! Validation of the parsed arguments into the node's typed configs. Every
//! error names the argument and the accepted form.

use std::path::Path;

use super::args::{JoinArgs, SeedArgs};
use super::units;
use crate::node::{JoinConfig, SeedConfig, Tuning};
use crate::ticket::Ticket;

/// Every host is in one group until datacenter groups are built;
/// the label already travels in Hello and Peers.
const GROUP: &str = "default";

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
    Ok(SeedConfig {
        path: a.path.clone(),
        listen: units::addr("--listen", &a.listen)?,
        piece_size,
        until_done: a.until_done,
        group: GROUP.to_string(),
        upload_limit: upload_limit(&a.upload_limit)?,
        tuning: Tuning::default(),
    })
}

fn upload_limit(a: &Option<String>) -> Result<Option<u64>, String> {
    a.as_deref()
        .map(|s| units::rate("--upload-limit", s))
        .transpose()
}

pub fn join(a: &JoinArgs) -> Result<JoinConfig, String> {
    let text = match a.ticket.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(Path::new(file))
            .map_err(|e| format!("TICKET: cannot read {file}: {e}"))?,
        None => a.ticket.clone(),
    };
    let ticket = Ticket::parse(&text).map_err(|e| format!("TICKET: not a valid swarm ticket ({e}); expected the swarm1:... line printed by `swarm seed`"))?;
    if !a.dest_dir.is_dir() {
        return Err(format!(
            "DEST_DIR: {} is not an existing directory",
            a.dest_dir.display()
        ));
    }
    Ok(JoinConfig {
        ticket,
        dest_dir: a.dest_dir.clone(),
        listen: units::addr("--listen", &a.listen)?,
        linger: units::duration("--linger", &a.linger)?,
        exit_on_complete: a.exit_on_complete,
        force: a.force,
        group: GROUP.to_string(),
        connect_timeout: units::duration("--connect-timeout", &a.connect_timeout)?,
        upload_limit: upload_limit(&a.upload_limit)?,
        tuning: Tuning::default(),
    })
}
