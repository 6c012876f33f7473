//! The adversarial fleet: the hostile service (tests/fixtures/hostile/app.py) misbehaving in every
//! way its `HOSTILE_MODE`s know (slow, huge, malformed, lying, crashing, flooding, injecting,
//! tampering with the artifacts, forking, ignoring SIGTERM). For each, the grader must blame the
//! service (exit 1, checks `fail` or `skip`, never `error`, no infrastructure problem) in words
//! that name the cause, never panic, finish within a budget, and leave no process or temp dir.
//!
//! Its own test binary, like e2e_interrupt: it compares /tmp and the process table before and
//! after. The slowest modes (a 10 s timeout each) run only with `E2E_FLEET_ALL=1`.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use regex::Regex;
use serde_json::Value;
use support::*;

/// Each test grades two modes at a time; two tests at once would overload a 2-core CI runner.
static ONE_TEST_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_TEST_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A run of one mode, whatever the service does, ends within this.
const BUDGET: Duration = Duration::from_secs(120);
/// After a SIGKILL of the grader, its supervisor kills and removes (bounded by its own waits).
const CLEANUP_WAIT: Duration = Duration::from_secs(20);
/// `service.log` is capped at 64 MiB; the marker line saying so comes on top.
const SERVICE_LOG_CAP: u64 = 64 * 1024 * 1024;

struct Mode {
    name: &'static str,
    /// The checks the misbehaviour reaches (`--only`).
    only: &'static [&'static str],
    /// Words of the grader's message about the first check (or the run's problem) that name the
    /// cause.
    cause: &'static str,
    /// Costs a 10 s request timeout or more: left to `E2E_FLEET_ALL=1`.
    slow: bool,
}

const CREATE: &[&str] = &["create-returns-201"];
const FOLLOW_LOCATION: &[&str] = &["location-resolves"];

const fn mode(name: &'static str, only: &'static [&'static str], cause: &'static str) -> Mode {
    Mode {
        name,
        only,
        cause,
        slow: false,
    }
}

const fn slow(name: &'static str, cause: &'static str) -> Mode {
    Mode {
        name,
        only: CREATE,
        cause,
        slow: true,
    }
}

const FLEET: &[Mode] = &[
    slow("hang", "no complete response within 10s"),
    mode("huge", CREATE, "expected status 201, got 200"),
    mode("lie", CREATE, "the response body broke off after 10 bytes"),
    mode("crash", CREATE, "exited with code 139"),
    slow("slowloris", "no complete response within 10s"),
    mode("header-count-bomb", CREATE, "message head is too large"),
    mode("header-size-bomb", CREATE, "message head is too large"),
    // The grader asks for no compression and reads the body as sent: 1 MB of gzip, not JSON.
    mode("gzip-bomb", CREATE, "got text that is not JSON"),
    mode("garbage", CREATE, "invalid HTTP version parsed"),
    mode("http09", CREATE, "invalid HTTP version parsed"),
    mode("h2-preface", CREATE, "invalid HTTP version parsed"),
    mode(
        "redirect-loop",
        FOLLOW_LOCATION,
        "follow the Location (GET /products/1): expected status 200, got 302",
    ),
    mode(
        "offorigin-slashes",
        FOLLOW_LOCATION,
        "points at another host",
    ),
    mode(
        "offorigin-backslash",
        FOLLOW_LOCATION,
        "points at another host",
    ),
    mode("body-200mb", CREATE, "got text that is not JSON"),
    mode("chunked-infinite", CREATE, "got text that is not JSON"),
    mode("lie-more", CREATE, "got text that is not JSON"),
    mode(
        "never-healthy",
        CREATE,
        "did not answer 2xx on /healthz within 3s (last attempt: status 500",
    ),
    mode("crash-mid-body", CREATE, "exited with code 134"),
    slow("hang-after-headers", "no complete response within 10s"),
    mode(
        "inject",
        &["create-returns-201", "unknown-route-404"],
        "expected header Location matching",
    ),
    mode("log-flood", CREATE, "expected status 201, got 200"),
    mode("artifacts-fifo", CREATE, "exited with code 5"),
    mode("artifacts-symlink", CREATE, "exited with code 5"),
    mode("artifacts-planted", CREATE, "expected status 201, got 200"),
    mode("fork-happy", CREATE, "expected status 201, got 200"),
    // The grader waits out its grace period, then kills: slower than most, not a timeout.
    mode("ignore-sigterm", CREATE, "expected status 201, got 200"),
];

fn fixture_of(mode: &str) -> PathBuf {
    match mode {
        // Its own grader.toml: a short startup timeout.
        "never-healthy" => fixture("hostile-unhealthy"),
        _ => fixture("hostile"),
    }
}

/// A grader run against one mode, and what it left behind.
struct FleetRun {
    mode: &'static str,
    code: Option<i32>,
    signal: Option<i32>,
    took: Duration,
    stdout: String,
    stderr: String,
    /// Kept until the assertions are done: the artifacts, the victim file, the pid file.
    dir: tempfile::TempDir,
    left_processes: Vec<String>,
    left_dirs: Vec<String>,
    /// The sleepers fork-happy started (from its pid file) that still run.
    left_sleepers: Vec<i32>,
    sleepers: usize,
}

impl FleetRun {
    fn artifacts(&self) -> PathBuf {
        self.dir.path().join("artifacts")
    }

    /// The JSON report, after making sure it is a regular file (a FIFO would block the read).
    fn report(&self) -> Value {
        let path = self.artifacts().join("report.json");
        let meta = std::fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("{}: no report.json: {e}\n{}", self.mode, self.stderr));
        assert!(
            meta.file_type().is_file(),
            "{}: report.json is not a regular file: {:?}",
            self.mode,
            meta.file_type()
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("report is JSON")
    }
}

/// How a run is started and, optionally, ended from outside.
#[derive(Clone, Copy)]
struct Start {
    mode: &'static Mode,
    /// Sent to the grader once the service is ready (the service stalls, so checks are running).
    signal: Option<Signal>,
    /// Extra arguments (an output format).
    format: Option<&'static str>,
}

fn run_mode(start: Start) -> FleetRun {
    let mode = start.mode;
    let dir = tempfile::tempdir().unwrap();
    let tmp = own_tmpdir("e2e-fleet-tmp");
    let artifacts = dir.path().join("artifacts");
    let victim = dir.path().join("victim");
    let pidfile = dir.path().join("sleepers");
    std::fs::create_dir(&artifacts).unwrap();
    std::fs::write(&victim, "victim: unchanged\n").unwrap();
    let marker = format!(
        "GRADER_E2E_MARKER={}-fleet-{}-{:?}-{:?}",
        std::process::id(),
        mode.name,
        start.signal,
        start.format
    );
    let (key, value) = marker.split_once('=').unwrap();
    let before = grader_temp_dirs(tmp.path());
    let mut command = Command::new(grader_bin());
    command
        .arg("check")
        .arg(fixture_of(mode.name))
        .args(["--seed", "7", "--artifacts-dir"])
        .arg(&artifacts)
        .args(mode.only.iter().flat_map(|c| ["--only", c]))
        .env("NO_COLOR", "1")
        .env(key, value)
        .env("TMPDIR", tmp.path())
        .env("HOSTILE_MODE", mode.name)
        .env("HOSTILE_ARTIFACTS", &artifacts)
        .env("HOSTILE_VICTIM", &victim)
        .env("HOSTILE_PIDFILE", &pidfile)
        .env_remove("GITHUB_STEP_SUMMARY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(format) = start.format {
        let output = dir.path().join(format!("report.{format}"));
        command.args(["--format", format, "--output"]).arg(output);
    }
    if start.signal.is_some() {
        command.env("HOSTILE_STALL", "60");
    }
    let began = Instant::now();
    let mut child = command.spawn().expect("grader runs");
    let stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    // Progress goes to stderr: read it line by line to know when the service is ready.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.trim_start().starts_with("service") && line.contains("ready") {
                let _ = ready_tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if let Some(signal) = start.signal {
        ready_rx
            .recv_timeout(BUDGET)
            .unwrap_or_else(|_| panic!("{}: the service never got ready", mode.name));
        // Let the stalled request start.
        std::thread::sleep(Duration::from_millis(1500));
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if began.elapsed() > BUDGET {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{}: the grader ran past its budget of {BUDGET:?}",
                mode.name
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = began.elapsed();
    // After a SIGKILL the supervisor cleans up; otherwise it is done before the grader exits.
    let wait = if start.signal == Some(Signal::SIGKILL) {
        CLEANUP_WAIT
    } else {
        Duration::ZERO
    };
    let deadline = Instant::now() + wait;
    let sleeper_pids: Vec<i32> = std::fs::read_to_string(&pidfile)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let (mut left_processes, mut left_dirs, mut left_sleepers);
    loop {
        left_processes = leftovers(&marker, &BTreeSet::new());
        left_dirs = grader_temp_dirs(tmp.path())
            .difference(&before)
            .cloned()
            .collect::<Vec<_>>();
        left_sleepers = sleeper_pids
            .iter()
            .copied()
            .filter(|pid| carries_marker(*pid, &marker))
            .collect::<Vec<_>>();
        let clean = left_processes.is_empty() && left_dirs.is_empty() && left_sleepers.is_empty();
        if clean || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    FleetRun {
        mode: mode.name,
        code: status.code(),
        signal: status.signal(),
        took,
        // A leaked process holding the pipes would keep these open: the leftovers say so above.
        stdout: join_within(out, Duration::from_secs(10)),
        stderr: join_within(err, Duration::from_secs(10)),
        dir,
        left_processes,
        left_dirs,
        left_sleepers,
        sleepers: sleeper_pids.len(),
    }
}

fn carries_marker(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| String::from_utf8_lossy(&env).contains(marker))
        .unwrap_or(false)
}

fn join_within(handle: std::thread::JoinHandle<String>, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    while !handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if handle.is_finished() {
        handle.join().unwrap()
    } else {
        "[the pipe was still held open by another process]".into()
    }
}

fn assert_nothing_left(run: &FleetRun) {
    assert!(
        run.left_processes.is_empty(),
        "{}: processes left: {:?}",
        run.mode,
        run.left_processes
    );
    assert!(
        run.left_sleepers.is_empty(),
        "{}: sleepers left: {:?}",
        run.mode,
        run.left_sleepers
    );
    assert!(
        run.left_dirs.is_empty(),
        "{}: temp dirs left: {:?}",
        run.mode,
        run.left_dirs
    );
    assert!(
        !run.stderr.contains("panicked"),
        "{}: the grader panicked:\n{}",
        run.mode,
        run.stderr
    );
}

/// The verdict blames the service, in words that name the cause.
fn assert_service_blamed(run: &FleetRun, cause: &str) {
    let m = run.mode;
    assert_eq!(
        run.code,
        Some(1),
        "{m}: exit {:?} after {:?}\n{}\n{}",
        run.code,
        run.took,
        run.stdout,
        run.stderr
    );
    let report = run.report();
    assert_eq!(report["status"], "fail", "{m}: {report}");
    let checks = report["checks"].as_array().unwrap();
    assert!(!checks.is_empty(), "{m}: no checks in {report}");
    for check in checks {
        let status = check["status"].as_str().unwrap();
        assert!(
            status == "fail" || status == "skip",
            "{m}: a check that is {status}, not the service's failure: {check}"
        );
    }
    let problem = &report["problem"];
    let message = if problem.is_null() {
        checks[0]["message"].as_str().unwrap().to_string()
    } else {
        assert_eq!(
            problem["kind"], "service_start",
            "{m}: the run's problem is not the service's: {problem}"
        );
        problem["message"].as_str().unwrap().to_string()
    };
    assert!(
        message.contains(cause),
        "{m}: the message does not name the cause ({cause:?}): {message}"
    );
}

/// What each mode must also have left true beyond the verdict.
fn assert_mode_specifics(run: &FleetRun) {
    let m = run.mode;
    let service_log = run.artifacts().join("service.log");
    match m {
        "offorigin-slashes" | "offorigin-backslash" => {
            let log = std::fs::read_to_string(&service_log).unwrap();
            assert!(
                !log.contains("OFF-ORIGIN HIT"),
                "{m}: the grader followed an off-origin Location:\n{log}"
            );
        }
        "log-flood" => {
            let size = std::fs::metadata(&service_log).unwrap().len();
            assert!(
                size > SERVICE_LOG_CAP / 2 && size <= SERVICE_LOG_CAP + 4096,
                "{m}: service.log is {size} bytes"
            );
        }
        "artifacts-symlink" => {
            let victim = std::fs::read_to_string(run.dir.path().join("victim")).unwrap();
            assert_eq!(victim, "victim: unchanged\n", "{m}: a link was followed");
        }
        "artifacts-planted" => {
            let report = run.report();
            assert_ne!(report["score"]["percent"], 100.0, "{m}: {report}");
        }
        "fork-happy" => assert_eq!(run.sleepers, 50, "{m}: the fixture did not fork"),
        "never-healthy" => {
            let report = run.report();
            assert_eq!(report["checks"][0]["status"], "skip", "{report}");
        }
        "inject" => {
            // After the crash on the unknown route, the log tail (the injections) is quoted.
            let report = run.report();
            let second = &report["checks"][1];
            assert!(
                second["message"]
                    .as_str()
                    .unwrap()
                    .contains("exited with code 3"),
                "{second}"
            );
        }
        _ => {}
    }
}

fn fleet_modes() -> Vec<&'static Mode> {
    let all = std::env::var("E2E_FLEET_ALL").is_ok_and(|v| v == "1");
    FLEET.iter().filter(|m| all || !m.slow).collect()
}

#[test]
fn every_hostile_mode_is_a_failure_of_the_service_and_leaves_nothing_behind() {
    let _serial = one_test_at_a_time();
    let modes = fleet_modes();
    assert!(FLEET.len() >= 20, "the fleet shrank to {}", FLEET.len());
    let runs = run_parallel(
        2,
        modes
            .iter()
            .map(|&mode| Start {
                mode,
                signal: None,
                format: None,
            })
            .collect(),
        run_mode,
    );
    let mut timings = Vec::new();
    for (mode, run) in modes.iter().zip(&runs) {
        assert_service_blamed(run, mode.cause);
        assert_nothing_left(run);
        assert_mode_specifics(run);
        timings.push(format!("{} {:.1}s", run.mode, run.took.as_secs_f64()));
    }
    eprintln!("fleet timings: {}", timings.join(", "));
}

fn fleet_mode(name: &str) -> &'static Mode {
    FLEET.iter().find(|m| m.name == name).unwrap()
}

#[test]
fn killing_the_grader_mid_run_leaves_no_hostile_process_behind() {
    let _serial = one_test_at_a_time();
    let cases = [
        ("fork-happy", Signal::SIGKILL),
        ("ignore-sigterm", Signal::SIGTERM),
        ("log-flood", Signal::SIGINT),
    ];
    let starts = cases
        .iter()
        .map(|&(name, signal)| Start {
            mode: fleet_mode(name),
            signal: Some(signal),
            format: None,
        })
        .collect();
    let runs = run_parallel(2, starts, run_mode);
    for ((name, signal), run) in cases.iter().zip(&runs) {
        match signal {
            Signal::SIGKILL => assert_eq!(run.signal, Some(9), "{name}: {}", run.stderr),
            _ => {
                assert_eq!(run.code, Some(130), "{name} {signal:?}: {}", run.stderr);
                assert_eq!(run.report()["problem"]["kind"], "interrupted");
            }
        }
        if *name == "fork-happy" {
            assert_eq!(run.sleepers, 50, "the fixture did not fork: {}", run.stderr);
        }
        assert_nothing_left(run);
    }
}

/// A line a GitHub Actions runner would read as a workflow command.
static WORKFLOW_COMMAND: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^\s*::|##\[").unwrap());

/// Characters a terminal or a log viewer acts on: bidi controls, ANSI escapes, NUL, noncharacters.
fn raw_controls(text: &str) -> Vec<String> {
    text.chars()
        .filter(|&c| {
            matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
                || c == '\u{1b}'
                || c == '\0'
                || c == '\u{fffe}'
                || c == '\u{ffff}'
        })
        .map(|c| format!("U+{:04X}", c as u32))
        .collect()
}

fn workflow_commands(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| WORKFLOW_COMMAND.is_match(l))
        .map(str::to_string)
        .collect()
}

/// Every output of the injecting service's run, by name.
fn injected_outputs() -> Vec<(String, String)> {
    let inject = fleet_mode("inject");
    let formats = [None, Some("junit"), Some("html"), Some("github")];
    let runs = run_parallel(
        2,
        formats
            .iter()
            .map(|&format| Start {
                mode: inject,
                signal: None,
                format,
            })
            .collect(),
        run_mode,
    );
    let mut outputs = Vec::new();
    for (format, run) in formats.iter().zip(&runs) {
        assert_service_blamed(run, inject.cause);
        assert_nothing_left(run);
        let name = format.unwrap_or("human");
        outputs.push((format!("{name}: stdout"), run.stdout.clone()));
        outputs.push((format!("{name}: stderr"), run.stderr.clone()));
        if let Some(format) = format {
            let file = run.dir.path().join(format!("report.{format}"));
            outputs.push((
                format!("{format}: file"),
                std::fs::read_to_string(file).unwrap(),
            ));
        } else {
            let json = run.artifacts().join("report.json");
            outputs.push(("json".into(), std::fs::read_to_string(json).unwrap()));
        }
    }
    outputs
}

#[test]
fn no_workflow_command_or_raw_control_from_the_service_reaches_any_output() {
    let _serial = one_test_at_a_time();
    let outputs = injected_outputs();
    for (name, text) in &outputs {
        // The injections reached this output (defused), or the test proves nothing about it.
        assert!(
            text.contains("pwned") || name.ends_with("stderr"),
            "{name}: the injected text is not in the output at all:\n{text}"
        );
        let commands = workflow_commands(text);
        assert!(
            commands.is_empty(),
            "{name}: workflow commands got through: {commands:#?}"
        );
        if name.starts_with("human") || name.starts_with("github") {
            let controls = raw_controls(text);
            assert!(
                controls.is_empty(),
                "{name}: raw control characters got through: {controls:?}"
            );
        }
    }
}

#[test]
fn the_workflow_command_grep_finds_what_it_looks_for() {
    // The greps above must be able to fail: here they see what an unsanitised report would hold.
    for line in [
        "::add-mask::x",
        "  ::error::pwned",
        "::notice title=grader::all checks passed",
        "see ##[error]x",
        "\t::stop-commands::tok",
    ] {
        assert_eq!(workflow_commands(line), [line], "{line:?}");
    }
    for defused in [
        ":\u{200b}:error::pwned",
        "##\u{200b}[error]x",
        "got \"::error::x\"",
    ] {
        assert!(workflow_commands(defused).is_empty(), "{defused:?}");
    }
    assert_eq!(
        raw_controls("a\u{202e}b\u{1b}[2J\0\u{fffe}\u{ffff}"),
        ["U+202E", "U+001B", "U+0000", "U+FFFE", "U+FFFF"]
    );
    assert!(raw_controls("<U+202E> \u{fffd}").is_empty());
}
