//! Checks for paths that arrive from the network. A manifest path is relative,
//! `/`-separated, and every component is a plain name: no empty component, no
//! `.` or `..`, no NUL, no backslash. Anything else is rejected before it can
//! reach the disk.

use crate::codec::DecodeError;

pub const MAX_PATH_LEN: usize = 4096;
pub const MAX_NAME_LEN: usize = 255;

/// Checks one path component (also used for the manifest's root name).
pub fn check_component(c: &str) -> Result<(), DecodeError> {
    let bad = |why: &str| {
        Err(DecodeError::invalid(
            "path component",
            format!("{c:?}: {why}"),
        ))
    };
    if c.is_empty() {
        return bad("empty");
    }
    if c == "." || c == ".." {
        return bad("dot component");
    }
    if c.len() > MAX_NAME_LEN {
        return bad("longer than 255 bytes");
    }
    if c.contains(['/', '\\', '\0']) {
        return bad("contains '/', '\\' or NUL");
    }
    Ok(())
}

/// Checks the manifest's root name: a plain component, and not one of the
/// names swarm itself uses next to the destination while it works
/// (`.NAME.swarm-ID.partial`, `.NAME.swarm-replaced-N`): content by such a
/// name would be taken for, or put into, another download's partial data.
pub fn check_root_name(c: &str) -> Result<(), DecodeError> {
    check_component(c)?;
    let swarm_own = c.starts_with('.')
        && c.contains(".swarm-")
        && (c.ends_with(".partial") || c.contains(".swarm-replaced-"));
    if swarm_own {
        return Err(DecodeError::invalid(
            "name",
            format!(
                "{c:?} looks like a temporary name of swarm's own (.NAME.swarm-*.partial, .NAME.swarm-replaced-*)"
            ),
        ));
    }
    Ok(())
}

/// Checks a symbolic link's target. It is written as the link's content
/// and never resolved by swarm, so it may be absolute or lead out of the
/// tree; it must be a string the kernel can store: not empty, no NUL, and
/// shorter than PATH_MAX.
pub fn check_link_target(t: &str) -> Result<(), DecodeError> {
    if t.is_empty() || t.len() >= MAX_PATH_LEN || t.contains('\0') {
        return Err(DecodeError::invalid(
            "link target",
            format!("{:?}: empty, longer than 4095 bytes, or holds NUL", t),
        ));
    }
    Ok(())
}

/// Checks a relative path; returns its components.
pub fn check_rel_path(p: &str) -> Result<Vec<&str>, DecodeError> {
    if p.len() > MAX_PATH_LEN {
        return Err(DecodeError::invalid(
            "path",
            format!("longer than {MAX_PATH_LEN} bytes"),
        ));
    }
    if p.starts_with('/') {
        return Err(DecodeError::invalid("path", format!("{p:?} is absolute")));
    }
    let parts: Vec<&str> = p.split('/').collect();
    for c in &parts {
        check_component(c)?;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_paths() {
        assert_eq!(check_rel_path("a/b/c.db").unwrap(), vec!["a", "b", "c.db"]);
        assert!(check_rel_path(".hidden/x..y").is_ok());
    }

    #[test]
    fn rejects_swarm_own_names_as_root() {
        for bad in [
            ".treeB.swarm-cae879ee5044b7e8.partial",
            ".img.bin.swarm-replaced-00000000deadbeef",
        ] {
            assert!(check_root_name(bad).is_err(), "{bad}");
        }
        for good in ["img.bin", ".hidden", "a.swarm-x.partial", ".a.partial"] {
            check_root_name(good).unwrap();
        }
    }

    #[test]
    fn rejects_hostile_paths() {
        for p in [
            "",
            "/etc/passwd",
            "a//b",
            "a/../b",
            "..",
            ".",
            "a/",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(check_rel_path(p).is_err(), "{p:?} accepted");
        }
        assert!(check_rel_path(&"a/".repeat(3000)).is_err());
        assert!(check_component(&"x".repeat(256)).is_err());
    }
}
