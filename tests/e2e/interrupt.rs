//! Ctrl-C and SIGTERM in the middle of a run leave no process and no temp dir behind.
//!
//! Its own test binary, so no other grader run shares the machine while it compares /tmp and the
//! process table before and after.

mod support;
mod watch;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

/// The grader's temp dirs under `tmp`: each interrupted run gets a TMPDIR of its own, so
/// another grader running on the machine at the same time cannot be mistaken for a leftover.
fn grader_temp_dirs(tmp: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(tmp)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("grader-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose environment carries the marker (the grader's children inherit it) or whose
/// command line names one of the run's temp dirs.
fn leftovers(marker: &str, dirs: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid.parse::<u32>().is_err() {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(
            &std::fs::read(entry.path().join("cmdline")).unwrap_or_default(),
        )
        .replace('\0', " ");
        let has_marker = String::from_utf8_lossy(&environ).contains(marker);
        let names_dir = dirs.iter().any(|d| cmdline.contains(d.as_str()));
        if has_marker || names_dir {
            found.push(format!("pid {pid}: {cmdline}"));
        }
    }
    found
}

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
        &["--seed", "1", "--only", "unknown-route-404"],
        &[],
    );
    assert_eq!(warm.code, 0, "{}", warm.human_summary());
    interrupt_mid_run(Signal::SIGINT);
    interrupt_mid_run(Signal::SIGTERM);
}
