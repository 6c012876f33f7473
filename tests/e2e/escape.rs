//! A service that moves processes out of its process group (a child in a session of its own, an
//! orphan in a group of its own, an orphan in a session of its own with an empty environment),
//! each holding a port: after a normal end, Ctrl-C, SIGTERM, or a SIGKILL of the grader, none of
//! them runs any more, nor anything else of the run, and its temp dirs (PostgreSQL's cluster)
//! are gone.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::support::*;

/// What the fixture leaves behind (see tests/fixtures/escaping-service/app.py).
const ESCAPES: &str = "setsid,double-fork,hidden";
/// After the grader is SIGKILLed, the supervisor kills and removes (bounded by its own waits).
const CLEANUP_WAIT: Duration = Duration::from_secs(20);
/// The grader learns of an orphan that nothing marks at its next look (every 0.5 s); a SIGKILL
/// before that is a documented limit, not what this test is about.
const ORPHAN_WATCH: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Copy)]
enum End {
    Normal,
    Signal(Signal),
}

/// The escaped processes the fixture reported: pid and start time (so that a recycled pid is
/// not taken for one of them).
fn escapees(pidfile: &Path) -> Vec<(i32, String)> {
    std::fs::read_to_string(pidfile)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (pid, start) = line.split_once(' ')?;
            Some((pid.parse().ok()?, start.to_string()))
        })
        .collect()
}

/// Those of `escapees` still running (a zombie is not).
fn running(escapees: &[(i32, String)]) -> Vec<i32> {
    escapees
        .iter()
        .filter(|(pid, start)| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            fields.get(19) == Some(&start.as_str()) && !matches!(fields.first(), Some(&"Z"))
        })
        .map(|(pid, _)| *pid)
        .collect()
}

fn escaping_run_leaves_nothing_behind(end: End) {
    let marker = format!("GRADER_E2E_MARKER={}-escape-{end:?}", std::process::id());
    let (key, value) = marker.split_once('=').unwrap();
    let tmp = own_tmpdir("e2e-escape-tmp");
    let pidfile = tmp.path().join("escapees");
    let before = grader_temp_dirs(tmp.path());
    let artifacts = tempfile::tempdir().unwrap();
    let mut command = Command::new(grader_bin());
    command
        .arg("check")
        .arg(fixture("escaping-service"))
        .args(["--seed", "5", "--artifacts-dir"])
        .arg(artifacts.path())
        .env("NO_COLOR", "1")
        .env(key, value)
        .env("TMPDIR", tmp.path())
        .env("ESCAPE", ESCAPES)
        .env("ESCAPE_PIDFILE", &pidfile)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match end {
        End::Normal => command.args(["--only", "unknown-route-404"]),
        // Every check hangs until its timeout: the run is still going when the signal lands.
        End::Signal(_) => command.env("HANG", "1"),
    };
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut during_run = BTreeSet::new();
    if let End::Signal(signal) = end {
        for line in lines.by_ref() {
            let line = line.unwrap();
            let ready = line.trim_start().starts_with("service") && line.contains("ready");
            seen.push(line);
            if ready {
                break;
            }
        }
        std::thread::sleep(ORPHAN_WATCH);
        let escaped = escapees(&pidfile);
        assert_eq!(
            running(&escaped).len(),
            3,
            "the fixture did not escape as planned: {escaped:?}, {seen:?}"
        );
        during_run = grader_temp_dirs(tmp.path())
            .difference(&before)
            .cloned()
            .collect();
        assert!(
            during_run.iter().any(|d| d.starts_with("grader-pg-")),
            "the run made no PostgreSQL temp dir: {during_run:?}"
        );
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    }
    // Keep reading, as a terminal would, with a timeout: a leaked process may hold the pipe.
    let (rest_tx, rest_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = rest_tx.send(lines.map_while(Result::ok).collect::<Vec<_>>());
    });
    let status = exit_within(&mut child, Duration::from_secs(120), &format!("{end:?}"));
    let printed = rest_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    match end {
        End::Normal => assert_eq!(status.code(), Some(1), "{seen:?} {printed:?}"),
        End::Signal(Signal::SIGKILL) => assert_eq!(status.signal(), Some(9)),
        End::Signal(_) => assert_eq!(status.code(), Some(130), "{printed:?}"),
    }
    let escaped = escapees(&pidfile);
    assert_eq!(escaped.len(), 3, "the fixture did not escape: {printed:?}");
    // A normal end and a signal are torn down before the grader exits; after a SIGKILL the
    // supervisor does it, so give it time.
    let deadline = Instant::now() + CLEANUP_WAIT;
    let (mut left, mut procs, mut dirs);
    loop {
        left = running(&escaped);
        procs = leftovers(&marker, &during_run);
        dirs = grader_temp_dirs(tmp.path())
            .difference(&before)
            .cloned()
            .collect::<Vec<_>>();
        let clean = left.is_empty() && procs.is_empty() && dirs.is_empty();
        if clean || !matches!(end, End::Signal(Signal::SIGKILL)) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(left.is_empty(), "{end:?}: escaped processes left: {left:?}");
    assert!(procs.is_empty(), "{end:?}: processes left: {procs:?}");
    assert!(dirs.is_empty(), "{end:?}: temp dirs left: {dirs:?}");
}

#[test]
fn escaped_processes_and_temp_dirs_are_gone_after_any_end_of_the_grader() {
    escaping_run_leaves_nothing_behind(End::Normal);
    escaping_run_leaves_nothing_behind(End::Signal(Signal::SIGINT));
    escaping_run_leaves_nothing_behind(End::Signal(Signal::SIGTERM));
    escaping_run_leaves_nothing_behind(End::Signal(Signal::SIGKILL));
}
