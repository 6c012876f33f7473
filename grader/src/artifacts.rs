//! Files in the service's folder that the grader reads and writes (`.grader/last-run`: the report,
//! the logs), handled as files a hostile service may have tampered with while it ran. The service
//! runs with write access to its own folder, so it can replace `report.json` or `service.log` with a
//! FIFO (an `open` that blocks the grader forever, past Ctrl-C), a symbolic link (a write that lands
//! outside the folder) or a read-only file (a stale "100%" report that survives a failing run).
//!
//! So files are opened without following links and without blocking, and read only when they are
//! regular files; reports are written to a new temporary file and renamed over the old name (a
//! rename replaces whatever is there, never opens it); a failure to write is an error for the
//! caller to report loudly. This module depends only on the standard library and `nix`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens `path` for reading when it is a regular file: never follows a symbolic link, never
/// blocks on a FIFO or a device.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file (a FIFO or device put there while the service ran?); the grader does not read it",
            path.display()
        )));
    }
    Ok(file)
}

/// Writes `bytes` to `path` by way of a new file next to it, renamed over `path`: a FIFO, link
/// or read-only file at `path` is replaced, never opened.
pub fn write_replacing(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Refuses a folder the grader would write into when it, or one of `levels` parents, is a
/// symbolic link: a service that replaced `.grader` with a link to `/` would have the grader
/// delete and write files there.
pub fn refuse_links(dir: &Path, levels: usize) -> io::Result<()> {
    let mut at = Some(dir);
    for _ in 0..=levels {
        let Some(p) = at else { break };
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(io::Error::other(format!(
                    "{} is a symbolic link; the grader writes its logs and report only into a real folder (remove the link)",
                    p.display()
                )))
            }
            _ => {}
        }
        at = p.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_neither_read_nor_opened_for_writing() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("report.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = open_regular(&fifo).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // Writing replaces the FIFO instead of blocking on it.
        write_replacing(&fifo, b"{}").unwrap();
        assert_eq!(std::fs::read(&fifo).unwrap(), b"{}");
        assert!(std::fs::metadata(&fifo).unwrap().is_file());
    }

    #[test]
    fn links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "keep").unwrap();
        let link = dir.path().join("service.log");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(open_regular(&link).is_err());
        write_replacing(&link, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");

        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let grader_dir = dir.path().join(".grader");
        std::os::unix::fs::symlink(&real, &grader_dir).unwrap();
        let last_run = grader_dir.join("last-run");
        assert!(refuse_links(&last_run, 1).is_err());
        assert!(refuse_links(&real, 1).is_ok());
    }

    #[test]
    fn a_read_only_report_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report.json");
        std::fs::write(&report, "planted 100%").unwrap();
        std::fs::set_permissions(&report, std::fs::Permissions::from_mode(0o444)).unwrap();
        write_replacing(&report, b"real").unwrap();
        assert_eq!(std::fs::read_to_string(&report).unwrap(), "real");
    }
}
