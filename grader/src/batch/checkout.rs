//! A submission's files in a folder of the grader's own, removed when it drops: a copy of a
//! folder (the original is never written, may be read-only, and cannot change under the run), or
//! a git clone at a ref.

use std::path::Path;
use std::time::Duration;

use crate::diagnostic::display_path;
use crate::run::Cancel;
use crate::runtime::local::SupervisedTempDir;

/// A git clone of one submission may take this long (local paths here; a slow remote there).
const CLONE_TIMEOUT: Duration = Duration::from_secs(300);

/// A new temporary folder for one submission, removed by the supervisor too should the grader be
/// SIGKILLed.
fn new_folder() -> Result<SupervisedTempDir, String> {
    SupervisedTempDir::new("grader-batch-")
        .map_err(|e| format!("cannot make a folder for the submission: {e}"))
}

/// Copies `source` (its files, folders and links as links, never followed; `.grader` left out)
/// into a new temporary folder.
pub fn copy_folder(source: &Path) -> Result<SupervisedTempDir, String> {
    match std::fs::symlink_metadata(source) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a folder", display_path(source))),
        Err(e) => return Err(format!("cannot open {}: {e}", display_path(source))),
    }
    let dir = new_folder()?;
    copy_tree(source, dir.path(), true)
        .map_err(|e| format!("cannot copy {}: {e}", display_path(source)))?;
    Ok(dir)
}

fn copy_tree(from: &Path, to: &Path, top: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if top && name == ".grader" {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir(&target)?;
            copy_tree(&source, &target, false)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target)?;
            // Owner read/write on top of the original's mode: a read-only original stays
            // executable where it was, and the build may write next to it.
            let mode = std::fs::metadata(&source)?.permissions().mode() | 0o600;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
        }
        // Sockets and FIFOs are not copied: nothing to grade in them, and a FIFO would block.
    }
    Ok(())
}

/// Clones `url` at `git_ref` into a new temporary folder (removed when it drops).
pub async fn clone(
    url: &str,
    git_ref: Option<&str>,
    cancel: &Cancel,
) -> Result<SupervisedTempDir, String> {
    let dir = new_folder()?;
    // git clones into an existing folder when it is empty.
    let target = dir.path();
    let git = |args: Vec<&str>| {
        let mut command = tokio::process::Command::new("git");
        command
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            // Never a credential prompt or a hook from the learner's repository.
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    };
    let target_str = target.to_string_lossy().into_owned();
    let mut steps: Vec<Vec<&str>> = vec![vec![
        "clone",
        "--quiet",
        "--no-hardlinks",
        "--",
        url,
        &target_str,
    ]];
    if let Some(r) = git_ref {
        steps.push(vec![
            "-C",
            &target_str,
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            r,
            "--",
        ]);
    }
    for args in steps {
        let what = args.join(" ");
        let output = tokio::select! {
            _ = cancel.cancelled() => return Err("interrupted".into()),
            o = tokio::time::timeout(CLONE_TIMEOUT, git(args).output()) => o,
        };
        let output = output
            .map_err(|_| format!("git {what} took longer than {}s", CLONE_TIMEOUT.as_secs()))?
            .map_err(|e| format!("cannot run git: {e}"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!(
                "git {what} failed: {}",
                stderr.lines().last().unwrap_or("").trim()
            ));
        }
    }
    Ok(dir)
}
