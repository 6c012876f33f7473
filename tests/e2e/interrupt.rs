//! Ctrl-C and SIGTERM in the middle of a run leave no process and no temp dir behind; nor does
//! a SIGKILL of the grader, nor a service that moves processes out of its group (`escape`).
//!
//! Its own test binary, so no other grader run shares the machine while it compares /tmp and the
//! process table before and after.

mod escape;
mod support;
mod watch;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

fn interrupt_mid_run(signal: Signal) {
    let marker = format!("GRADER_E2E_MARKER={}-{}", std::process::id(), signal as i32);
    let (key, value) = marker.split_once('=').unwrap();
    let tmp = own_tmpdir("e2e-interrupt-tmp");
    let before = grader_temp_dirs(tmp.path());
    let artifacts = tempfile::tempdir().unwrap();
    let mut child = Command::new(grader_bin())
        .arg("check")
        .arg(reference_dir())
        .args(["--seed", "3", "--artifacts-dir"])
        .arg(artifacts.path())
        .env("NO_COLOR", "1")
        .env(key, value)
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Progress lines go to stderr; interrupt once the service is up and checks are running.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut during_run = BTreeSet::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let ready = line.trim_start().starts_with("service") && line.contains("ready");
        seen.push(line);
        if ready {
            during_run = grader_temp_dirs(tmp.path())
                .difference(&before)
                .cloned()
                .collect();
            kill(Pid::from_raw(child.id() as i32), signal).unwrap();
            break;
        }
    }
    // Keep reading what the grader prints while it cleans up, as a terminal would; a closed
    // pipe would turn its last lines into write errors that have nothing to do with cleanup.
    // A leaked process holding the pipe would keep it open: wait for the rest with a timeout.
    let (rest_tx, rest_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = rest_tx.send(lines.map_while(Result::ok).collect::<Vec<_>>());
    });
    assert!(
        !during_run.is_empty(),
        "the run made no temp dir, or never got ready: {seen:?}"
    );
    let status = exit_within(
        &mut child,
        Duration::from_secs(60),
        &format!("grader after {signal:?}"),
    );
    let after_signal = rest_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    assert_eq!(
        status.code(),
        Some(130),
        "{signal:?} should exit 130; it printed {after_signal:?}"
    );
    let left_dirs: Vec<String> = grader_temp_dirs(tmp.path())
        .difference(&before)
        .cloned()
        .collect();
    assert!(
        left_dirs.is_empty(),
        "temp dirs left after {signal:?}: {left_dirs:?}"
    );
    let procs = leftovers(&marker, &during_run);
    assert!(
        procs.is_empty(),
        "processes left after {signal:?}: {procs:?}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(artifacts.path().join("report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["problem"]["kind"], "interrupted");
}

#[test]
fn sigint_and_sigterm_leave_nothing_behind() {
    // Build the reference service first, so the interrupt lands on a running service.
    let warm = grade(
        &reference_dir(),
        &[
            "--seed",
            "1",
            "--exercise",
            "api-design",
            "--only",
            "unknown-route-404",
        ],
        &[],
    );
    assert_eq!(warm.code, 0, "{}", warm.human_summary());
    interrupt_mid_run(Signal::SIGINT);
    interrupt_mid_run(Signal::SIGTERM);
}
