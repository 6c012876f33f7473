//! Helpers for the end-to-end tests: run the real binary, read its reports, redact what varies.
// Shared by the e2e test binaries (e2e, e2e_interrupt, e2e_fleet, ...); each uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// A grader run can include a first build of the reference service; nothing should take longer.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn reference_dir() -> PathBuf {
    repo_root().join("tests/reference-service")
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

pub fn grader_bin() -> &'static str {
    env!("CARGO_BIN_EXE_grader")
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub artifacts: tempfile::TempDir,
    /// Wall time of the whole `grader check`, start-up included: which tests CI's time goes to.
    pub elapsed: Duration,
}

impl Run {
    /// The JSON report the run kept in its artifacts folder.
    pub fn json(&self) -> Value {
        let path = self.artifacts.path().join("report.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "no report at {}: {e}\nstderr:\n{}",
                path.display(),
                self.stderr
            )
        });
        serde_json::from_str(&text).expect("report.json is JSON")
    }

    /// What a person would read, for assertion messages.
    pub fn human_summary(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// `grader check <dir> --artifacts-dir <tmp> <args>` with extra environment, bounded in time.
pub fn grade(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let artifacts = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(grader_bin());
    cmd.arg("check")
        .arg(dir)
        .arg("--artifacts-dir")
        .arg(artifacts.path())
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("GITHUB_STEP_SUMMARY")
        .env_remove("REFSVC_BUG")
        .env_remove("INDEP_BUG")
        .env_remove("INDEP_STYLE")
        .env_remove("REFSVC_STYLE")
        .env_remove("HOSTILE_MODE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().expect("grader binary runs");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("grader did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        artifacts,
        elapsed: started.elapsed(),
    }
}

/// Runs `f` over `items` with at most `width` at once, keeping the input order.
pub fn run_parallel<I: Send, T: Send + 'static>(
    width: usize,
    items: Vec<I>,
    f: fn(I) -> T,
) -> Vec<T> {
    let mut results: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
    let queue = std::sync::Mutex::new(items.into_iter().enumerate().collect::<Vec<_>>());
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..width {
            s.spawn(|| loop {
                let next = queue.lock().unwrap().pop();
                let Some((i, item)) = next else { break };
                let r = f(item);
                done.lock().unwrap().push((i, r));
            });
        }
    });
    for (i, r) in done.into_inner().unwrap() {
        results[i] = Some(r);
    }
    results.into_iter().map(|r| r.unwrap()).collect()
}

#[derive(Deserialize, Clone)]
pub struct Variant {
    /// The exercise the bug belongs to; the variant is graded on it alone.
    pub exercise: String,
    pub bug: String,
    pub fails: Vec<String>,
    /// Another service folder (relative to variants.toml) with its own planted bugs; default the
    /// reference service.
    #[serde(default)]
    pub service: Option<String>,
    /// That service's switch; default the file's `env` (REFSVC_BUG).
    #[serde(default)]
    pub env: Option<String>,
    /// The verdicts are stable but the failures' evidence is not (it quotes cursors built from
    /// the service's own clock and ids, or counts what a race let through): the snapshot keeps
    /// every check's status and replaces failure messages and details.
    #[serde(default)]
    pub volatile_evidence: bool,
    /// Left out of CI's run (graded with E2E_ALL_VARIANTS=1 and by `grader prove`): every check
    /// it fails is failed in CI by another variant of the exercise.
    #[serde(default)]
    pub soak: bool,
}

impl Variant {
    pub fn dir(&self) -> PathBuf {
        match &self.service {
            Some(s) => reference_dir().join(s),
            None => reference_dir(),
        }
    }

    /// `variant-<bug>` for the reference service, `variant-<service folder>-<bug>` for another,
    /// so two services may plant bugs of the same name.
    pub fn snapshot_name(&self) -> String {
        match &self.service {
            Some(s) => {
                let folder = s.trim_end_matches('/').rsplit('/').next().unwrap_or(s);
                format!("variant-{folder}-{}", self.bug)
            }
            None => format!("variant-{}", self.bug),
        }
    }

    pub fn switch(&self) -> &str {
        self.env.as_deref().unwrap_or("REFSVC_BUG")
    }
}

/// The variants to grade: CI's (all but `soak = true`), or every one with `E2E_ALL_VARIANTS=1`;
/// only one exercise's with `E2E_EXERCISE=<id>` (a fast loop while writing checks; CI never sets
/// it). `E2E_SERVICE=python` likewise keeps the variants of services whose folder holds that text,
/// and `E2E_SERVICE=reference` the reference's own.
pub fn variants() -> Vec<Variant> {
    let exercise = std::env::var("E2E_EXERCISE").unwrap_or_default();
    let service = std::env::var("E2E_SERVICE").unwrap_or_default();
    let all = std::env::var("E2E_ALL_VARIANTS").is_ok_and(|v| v == "1");
    all_variants()
        .into_iter()
        .filter(|v| all || !v.soak)
        .filter(|v| exercise.is_empty() || v.exercise == exercise)
        .filter(|v| match (service.as_str(), v.service.as_deref()) {
            ("", _) => true,
            ("reference", own) => own.is_none(),
            (wanted, own) => own.is_some_and(|s| s.contains(wanted)),
        })
        .collect()
}

/// Every variant in variants.toml.
pub fn all_variants() -> Vec<Variant> {
    #[derive(Deserialize)]
    struct File {
        variant: Vec<Variant>,
    }
    let text = std::fs::read_to_string(reference_dir().join("variants.toml")).unwrap();
    toml::from_str::<File>(&text).unwrap().variant
}

static VOLATILE: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    vec![
        (Regex::new(r"127\.0\.0\.1:\d+").unwrap(), "127.0.0.1:[port]"),
        // A raw response head in a framing failure's evidence carries Date (and ETag) values.
        (
            Regex::new(r"(?s)^head as sent:\n.*").unwrap(),
            "head as sent: [a response head, with its dates]",
        ),
        (Regex::new(r"/tmp/\.tmp\w+").unwrap(), "[tmp]"),
        (
            Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap(),
            "[uuid]",
        ),
        (
            Regex::new(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?")
                .unwrap(),
            "[timestamp]",
        ),
        // Times the grader measured on its own clock: how fast a stale answer came, how long a
        // burst of login attempts took.
        (
            Regex::new(r"\b(answered in|an answer after|within|attempts in|after) \d+ ms").unwrap(),
            "$1 [t] ms",
        ),
        // Times of the event-driven checks: a restart, events and payments arriving.
        (
            Regex::new(
                r"\b(health check|the last|locks|each in|applied in|once in|dead-lettered to \S+ in|listening for|took) (\d+ ms|\d+\.\d s)",
            )
            .unwrap(),
            "$1 [t]",
        ),
        // The seconds left in a rate-limit window, and how much the service has logged so far.
        (Regex::new(r"Retry-After: \d+").unwrap(), "Retry-After: [s]"),
        (
            Regex::new(r"scanned \d+ bytes \(\d+ lines\)").unwrap(),
            "scanned [n] bytes ([n] lines)",
        ),
        // How a burst of transfers interleaved: how many were accepted, and how many statements
        // were read while it ran.
        (
            Regex::new(r"\d+ accepted, \d+ refused").unwrap(),
            "[n] accepted, [n] refused",
        ),
        (
            Regex::new(r"\d+ statements read while").unwrap(),
            "[n] statements read while",
        ),
        // How a connection ended when the service died mid-request (a reset or a close, and in
        // which of the client's states) depends on timing, not on the service.
        (
            Regex::new(r"(the request failed: error sending request for url \([^)]*\)): .*")
                .unwrap(),
            "$1: [how the connection ended]",
        ),
        // A session the grader found idle in a transaction: its pid, and seconds on a clock.
        (
            Regex::new(r"session \d+: idle in transaction for \d+ s").unwrap(),
            "session [pid]: idle in transaction for [n] s",
        ),
        // Observability: how long spans took to reach the collector, and latencies the service
        // measured (a histogram's sum, a log line's duration) against the grader's own.
        (
            Regex::new(r"at the collector \d+ ms after").unwrap(),
            "at the collector [t] ms after",
        ),
        (
            Regex::new(r"\d+\.\d+ s of \d+\.\d+ s the grader measured").unwrap(),
            "[s] s of [s] s the grader measured",
        ),
        (
            Regex::new(r"_sum grew by \d+\.\d+").unwrap(),
            "_sum grew by [s]",
        ),
        (
            Regex::new(r"\d+\.\d times what the grader's own clock").unwrap(),
            "[ratio] times what the grader's own clock",
        ),
        (
            Regex::new(r"the grader measured \d+\.\d+ s").unwrap(),
            "the grader measured [s] s",
        ),
        (Regex::new(r"\d+ samples parsed").unwrap(), "[n] samples parsed"),
        // Rows the white-box probe read: other exercises write theirs at the same time.
        (
            Regex::new(r"read \d+ rows of \d+ tables").unwrap(),
            "read [n] rows of [n] tables",
        ),
    ]
});

fn scrub(s: &str) -> String {
    VOLATILE.iter().fold(s.to_string(), |acc, (re, to)| {
        re.replace_all(&acc, *to).into_owned()
    })
}

/// For a variant whose failures' evidence varies between runs: statuses stay, the words go.
pub fn redact_evidence(mut report: Value) -> Value {
    if let Some(checks) = report["checks"].as_array_mut() {
        for check in checks {
            if check["status"] != "pass" {
                check["message"] = Value::String("[varies between runs]".into());
                check["detail"] = Value::String("[varies between runs]".into());
            }
        }
    }
    report
}

/// The report with only what varies between runs replaced: times, ports, paths, generated ids.
/// Exchanges are kept out of snapshots (their headers carry dates); their presence is asserted.
pub fn redact(report: &Value) -> Value {
    let mut r = report.clone();
    for key in ["started_at", "duration_ms", "replay", "grader_version"] {
        r[key] = Value::String(format!("[{key}]"));
    }
    r["timings"] = Value::String("[timings]".into());
    r["runtime"]["service_url"] = Value::String("[service_url]".into());
    r["runtime"]["service_dir"] = Value::String("[service_dir]".into());
    r["runtime"]["artifacts_dir"] = Value::String("[artifacts_dir]".into());
    if let Some(checks) = r["checks"].as_array_mut() {
        for c in checks {
            c["duration_ms"] = Value::from(0);
            redact_buffer_counts(c);
            if c["exercise"] == "observability" {
                redact_telemetry_ids(c);
            }
            if c["exercise"] == "integration-resilience" {
                redact_measured_times(c);
            }
            if c["exercise"] == "graphql" {
                redact_statement_counts(c);
            }
            if c["exercise"] == "grpc" {
                redact_grpc_timings(c);
            }
            // A timeline's `settle` phase asks again until the answer comes, so how many
            // exchanges a failure quotes depends on the machine's speed; their presence is what
            // is asserted there.
            let settles = c["exercise"] == "integration-resilience";
            if let Some(detail) = c.get_mut("detail").and_then(Value::as_object_mut) {
                let n = detail
                    .get("exchanges")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                // Broker checks show what they read from the broker instead of HTTP exchanges.
                let lines = detail
                    .get("evidence")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                assert!(
                    n > 0 || lines > 0 || detail.contains_key("service_log_tail"),
                    "a failure without evidence: {detail:?}"
                );
                let count = if settles {
                    "[n exchanges]".to_string()
                } else {
                    format!("[{n} exchanges]")
                };
                detail.insert("exchanges".into(), Value::String(count));
                if detail.contains_key("service_log_tail") {
                    detail.insert(
                        "service_log_tail".into(),
                        Value::String("[log tail]".into()),
                    );
                }
            }
        }
    }
    if let Some(problem) = r.get_mut("problem").and_then(Value::as_object_mut) {
        if problem.contains_key("log_tail") {
            problem.insert("log_tail".into(), Value::String("[log tail]".into()));
        }
    }
    scrub_all(&mut r);
    r
}

/// The graphql limit checks quote the service's statement count (`pg_stat_statements` calls)
/// before and after a query: how a DataLoader batches a page (one batch, or two when the machine
/// is slow) moves it, while the verdict compares the counts within one run. The figures are
/// replaced; that the count moved for the query at the limit, and not for the refused one, is
/// what the check's verdict asserts.
fn redact_statement_counts(check: &mut Value) {
    static RULES: LazyLock<Vec<(Regex, &str)>> =
        LazyLock::new(|| vec![(Regex::new(r#"("calls(\\)?"?:)\d+"#).unwrap(), "$1[n]")]);
    for key in ["message", "detail", "measurements"] {
        if let Some(v) = check.get_mut(key) {
            rewrite_strings(v, &RULES);
        }
    }
}

/// Observability evidence quotes what the service made up at random or measured: trace and span
/// ids of the traces it started (the grader's own are seeded, but a regex cannot tell them apart),
/// where its line fell in the output (start-up health polls vary), the durations it logged, and
/// how its exporter batched the spans. They are replaced; everything else stays.
fn redact_telemetry_ids(check: &mut Value) {
    static RULES: LazyLock<Vec<(Regex, &str)>> = LazyLock::new(|| {
        vec![
            (Regex::new(r"\b[0-9a-fA-F]{32}\b").unwrap(), "[trace-id]"),
            // An id cut where a long line is shortened.
            (Regex::new(r"[0-9a-fA-F]{2,}…").unwrap(), "[cut]…"),
            (Regex::new(r"\b[0-9a-fA-F]{16}\b").unwrap(), "[span-id]"),
            (
                Regex::new(r"output lines? [\d, ]+").unwrap(),
                "output line [n]",
            ),
            // Where a series with an id sits in a scrape sorted by its labels.
            (
                Regex::new(r#"line \d+: (\w+)=""#).unwrap(),
                r#"line [n]: $1=""#,
            ),
            (Regex::new(r"\b\d+(\.\d+)?ms\b").unwrap(), "[t]ms"),
            (
                Regex::new(r#"("duration_ms\\?"?: ?)\d+(\.\d+)?"#).unwrap(),
                "$1[ms]",
            ),
            (
                Regex::new(r"received \d+ exports? with \d+ spans?").unwrap(),
                "received [n] exports with [n] spans",
            ),
            // The scrapes of /metrics itself: how many the probe needed (it scrapes again until
            // the counters settle) depends on the machine's speed.
            (
                Regex::new(r#"(route=\\?"/metrics\\?",status=\\?"200\\?"\} )\+\d+"#).unwrap(),
                "$1+[n]",
            ),
        ]
    });
    for key in ["message", "detail", "measurements"] {
        if let Some(v) = check.get_mut(key) {
            rewrite_strings(v, &RULES);
        }
    }
}

/// A passing query's buffer count moves by a few pages between runs (the first call of a
/// statement in a fresh backend touches a few more), so a pass's measured buffers are redacted;
/// the budgets stay, and failures (hundreds or thousands of buffers) keep their figures. So is a
/// pass's statement count: a background statement of the service (the reference's outbox relay
/// polls every second) sometimes lands in a request's window.
/// The times a `timeline` check measured (a gap, a response's time, a call's arrival) vary from
/// run to run; the bounds they were held to do not, and stay.
fn redact_measured_times(check: &mut Value) {
    static RULES: LazyLock<Vec<(Regex, &str)>> = LazyLock::new(|| {
        vec![
            (Regex::new(r"\+\d+ ms").unwrap(), "+[t] ms"),
            (
                Regex::new(r"arrived \d+ ms after").unwrap(),
                "arrived [t] ms after",
            ),
            (Regex::new(r"after \d+ ms").unwrap(), "after [t] ms"),
            (
                Regex::new(r"waited \d+ to \d+ ms").unwrap(),
                "waited [t] to [t] ms",
            ),
            (
                Regex::new(r"within \d+ ms of each").unwrap(),
                "within [t] ms of each",
            ),
            (
                Regex::new(r"spread over \d+ ms").unwrap(),
                "spread over [t] ms",
            ),
            (Regex::new(r"^\d+ ms$").unwrap(), "[t] ms"),
        ]
    });
    // What a passing check measured: how long the database was down and the service took to
    // stop or start depend on the machine, and so do the requests a `settle` phase needed (and
    // the calls they caused); the phases do not.
    static MEASURED: LazyLock<Vec<(Regex, &str)>> = LazyLock::new(|| {
        vec![
            (Regex::new(r"\d+\.\d+ s\b").unwrap(), "[t] s"),
            (Regex::new(r"\d+ ms\b").unwrap(), "[t] ms"),
            (Regex::new(r"\d+ requests?,").unwrap(), "[n] requests,"),
            (
                Regex::new(r"\d+ rate requests?").unwrap(),
                "[n] rate requests",
            ),
        ]
    });
    for key in ["message", "detail"] {
        if let Some(v) = check.get_mut(key) {
            rewrite_strings(v, &RULES);
        }
    }
    if let Some(v) = check.get_mut("measurements") {
        rewrite_strings(v, &MEASURED);
    }
}

/// The grpc exercise's measured times (when a call ended, when health turned, when the process
/// exited), the rows a stream's reads returned and the health polls after a signal depend on the
/// machine; the deadlines, bounds and verdicts do not, and stay.
fn redact_grpc_timings(check: &mut Value) {
    static RULES: LazyLock<Vec<(Regex, &str)>> = LazyLock::new(|| {
        vec![
            (
                Regex::new(r"(?s)health after SIGTERM:\n.*").unwrap(),
                "health after SIGTERM: [polls]",
            ),
            (Regex::new(r"\b\d+\.\d+ s\b").unwrap(), "[t] s"),
            (Regex::new(r"\b\d+ ms\b").unwrap(), "[t] ms"),
            (Regex::new(r"\b\d+ rows\b").unwrap(), "[n] rows"),
            (
                Regex::new(r"in \d+ statement\(s\)").unwrap(),
                "in [n] statement(s)",
            ),
            (
                Regex::new(r"\d+ rows in \d+ call\(s\)").unwrap(),
                "[n] rows in [n] call(s)",
            ),
        ]
    });
    for key in ["message", "detail", "measurements"] {
        if let Some(v) = check.get_mut(key) {
            rewrite_strings(v, &RULES);
        }
    }
}

/// Every string in `v` with each rule's matches replaced, in order.
fn rewrite_strings(v: &mut Value, rules: &[(Regex, &str)]) {
    match v {
        Value::String(s) => {
            for (re, to) in rules {
                *s = re.replace_all(s, *to).into_owned();
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| rewrite_strings(v, rules)),
        Value::Object(o) => o.values_mut().for_each(|v| rewrite_strings(v, rules)),
        _ => {}
    }
}

fn redact_buffer_counts(check: &mut Value) {
    static BUFFERS: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\b\d+(\.\d+)? shared buffers").unwrap());
    static STATEMENTS: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\b\d+(\.\d+)? statements per request").unwrap());
    static DEEP_PAGE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(page \d+): \d+ \(\d+(\.\d+)?×").unwrap());
    let Some(measurements) = check.get_mut("measurements").and_then(Value::as_array_mut) else {
        return;
    };
    for m in measurements {
        if let Some(text) = m.as_str() {
            let text = BUFFERS.replace_all(text, "[n] shared buffers");
            let text = DEEP_PAGE.replace_all(&text, "$1: [n] ([ratio]×");
            let text = STATEMENTS.replace_all(&text, "[n] statements per request");
            *m = Value::String(text.into_owned());
        }
    }
}

fn scrub_all(v: &mut Value) {
    match v {
        Value::String(s) => *s = scrub(s),
        Value::Array(a) => a.iter_mut().for_each(scrub_all),
        Value::Object(o) => o.values_mut().for_each(scrub_all),
        _ => {}
    }
}

/// Error output with the machine's absolute paths made relative to the repository.
pub fn normalise_paths(s: &str) -> String {
    s.replace(&format!("{}/", repo_root().display()), "")
}

/// Waits for `child` to exit after a signal, failing the test when it takes longer than `limit`.
pub fn exit_within(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still running {}s later",
            limit.as_secs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TMPDIR of the test's own, so the grader's temp dirs in it can be told apart from another
/// run's; open to all, since PostgreSQL runs as the `postgres` user when the tests run as root.
pub fn own_tmpdir(prefix: &str) -> tempfile::TempDir {
    let tmp = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    tmp
}

/// The reference service's binary, built if needed (for folders that run it directly or copy it
/// into a docker build context).
pub fn reference_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "reference-service"])
        .current_dir(repo_root())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build -p reference-service failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let target = if target.is_relative() {
        repo_root().join(target)
    } else {
        target
    };
    target.join("debug/reference-service")
}

/// The ids of a JSON report's checks that did not pass.
pub fn not_passed(report: &Value) -> std::collections::BTreeSet<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] != "pass")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// Each check's id and status in a JSON report.
pub fn statuses(report: &Value) -> std::collections::BTreeMap<String, String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The grader's temp dirs under `tmp`: each interrupted run gets a TMPDIR of its own, so
/// another grader running on the machine at the same time cannot be mistaken for a leftover.
pub fn grader_temp_dirs(tmp: &std::path::Path) -> std::collections::BTreeSet<String> {
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
pub fn leftovers(marker: &str, dirs: &std::collections::BTreeSet<String>) -> Vec<String> {
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
