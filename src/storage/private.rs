//! Files swarm writes for the operator: the ticket (`seed --ticket-file`)
//! and the reports (`--report`). Each is written to a temporary file with a
//! random name in the target's directory, created exclusively
//! (O_CREAT|O_EXCL, which never opens through a link) with mode 0600, then
//! renamed over the target. A rename replaces a link at the target itself,
//! never the file it points to; readers see the whole file or nothing.

use std::ffi::OsString;
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::text;

/// A file on its way to `path`: the temporary exists from `create` on, so
/// a directory that cannot take it is found before any long work.
pub struct PrivateFile {
    tmp: NamedTempFile,
    path: PathBuf,
}

impl PrivateFile {
    pub fn create(path: &Path) -> io::Result<PrivateFile> {
        let fail = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", text::path(path)));
        let Some(name) = path.file_name() else {
            return Err(fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file name",
            )));
        };
        if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(fail(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            )));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut prefix = OsString::from(".");
        prefix.push(name);
        prefix.push(".");
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .permissions(Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "{}: cannot create a file in {}: {e}",
                        text::path(path),
                        text::path(dir)
                    ),
                )
            })?;
        Ok(PrivateFile {
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// Writes `data`, syncs it, and renames it into place.
    pub fn commit(mut self, data: &[u8]) -> io::Result<()> {
        let path = self.path.clone();
        let fail = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", text::path(&path)));
        self.tmp.write_all(data).map_err(fail)?;
        self.tmp.as_file().sync_all().map_err(fail)?;
        self.tmp.persist(&self.path).map_err(|e| fail(e.error))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // the rename is durable once the directory is
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `PrivateFile::create(path)?.commit(data)`.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    PrivateFile::create(path)?.commit(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn written_0600_and_a_link_at_the_target_is_replaced_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::set_permissions(&victim, Permissions::from_mode(0o644)).unwrap();
        let target = d.path().join("ticket");
        symlink(&victim, &target).unwrap();
        write_private(&target, b"secret\n").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(
            fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let meta = fs::symlink_metadata(&target).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&target).unwrap(), b"secret\n");
        // nothing left behind but the two files
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn an_unwritable_place_fails_at_create() {
        let d = tempfile::tempdir().unwrap();
        assert!(PrivateFile::create(&d.path().join("no/such/dir/t")).is_err());
        assert!(PrivateFile::create(d.path()).is_err());
    }
}
