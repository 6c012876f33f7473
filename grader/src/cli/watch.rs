//! `grader watch`: re-grade on every save, as fast as the checks allow.
//!
//! One session keeps PostgreSQL and Redis running ([`WarmDependencies`]); every run rebuilds and
//! restarts the service, gets a fresh copy of the database and an empty Redis, and runs last
//! run's failures first. The mock upstreams are in-process and start in microseconds, so each run
//! starts its own: their recorded calls never leak from one run into the next.
//!
//! A save during a run cancels it (the run stops what it started) and starts the next one. The
//! seed is fixed for the session, so the data (and the database template) stay the same from one
//! run to the next; it is printed, and `grader check --seed N` replays any of the runs.
//!
//! Changes that start a run: any file under the service folder except `.grader/`, `.git/`, build
//! and dependency folders (`target/`, `node_modules/`, `__pycache__/`, `.docker/`) and what the
//! service's `.gitignore` ignores.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use super::{keep_progress, print_diagnostics, run_error, say, Interrupt, WatchArgs};

/// `eprintln!` that cannot panic: the session's messages are advice, and a closed stderr must
/// not stop the loop or leave the databases running.
macro_rules! say {
    ($($arg:tt)*) => {
        say(&format!($($arg)*))
    };
}
use crate::exercise::Catalog;
use crate::outcome::{CheckResult, RunReport, Status};
use crate::progress::Progress;
use crate::report::human::{render_compact, HumanStyle};
use crate::run::{self, Cancel, RunError, RunEvents, RunRequest, RuntimeKind};
use crate::runtime::local::WarmDependencies;
use crate::runtime::{Phase, ProgressSink};
use crate::scoring::exit;

/// Folders whose changes never start a run: the grader's own, version control, and what builds
/// and package managers write.
const NEVER_WATCHED: &[&str] = &[
    ".grader",
    ".git",
    "target",
    "node_modules",
    "__pycache__",
    ".docker",
];

/// What ended a wait.
enum Next {
    /// A relevant file changed: re-grade.
    Change(PathBuf),
    /// Ctrl-C or SIGTERM.
    Stop,
}

pub async fn run(args: WatchArgs, catalog: &Catalog) -> i32 {
    let mut request = RunRequest {
        runtime: RuntimeKind::Local,
        seed: Some(args.seed.unwrap_or_else(crate::spec::random::fresh_seed)),
        ..args.target.request()
    };
    // Flags and the folder are checked once; grader.toml is read again before every run.
    let service_dir = match run::plan(&request, catalog) {
        Ok(plan) => plan.service_dir,
        Err(e) => return run_error(e),
    };
    let quiet = Duration::from_millis(args.debounce_ms);
    let (_watcher, mut changes) = match watch_folder(&service_dir) {
        Ok(w) => w,
        Err(e) => {
            say!(
                "grader: cannot watch {} for changes: {e}",
                service_dir.display()
            );
            return exit::INFRASTRUCTURE;
        }
    };
    let ignored = Ignored::new(&service_dir);
    let mut interrupt = Interrupt::new();
    let color = super::stderr_color() && std::io::stdout().is_terminal();
    say!(
        "grader watch · {} · seed {} (`grader check --seed {}` replays a run) · Ctrl-C stops",
        crate::diagnostic::display_path(&service_dir),
        request.seed.unwrap_or_default(),
        request.seed.unwrap_or_default()
    );

    let mut warm: Option<WarmDependencies> = None;
    let mut last_code = exit::OK;
    let mut runs = 0u32;
    let mut trigger: (String, Instant) = ("start".to_string(), Instant::now());
    loop {
        runs += 1;
        let outcome = grade_once(
            &mut request,
            catalog,
            &mut warm,
            &mut changes,
            &ignored,
            &mut interrupt,
            &trigger,
            color,
        )
        .await;
        let next = match outcome {
            RunOutcome::Graded(code) => {
                last_code = code;
                if args.max_runs.is_some_and(|max| runs >= max) {
                    break;
                }
                say!("watching for changes… (Ctrl-C stops)");
                wait_for_change(&mut changes, &ignored, &mut interrupt, quiet).await
            }
            RunOutcome::Interrupted(Next::Change(path)) => {
                // The save that cancelled the run may be the first of several files.
                settle(&mut changes, quiet).await;
                Next::Change(path)
            }
            RunOutcome::Interrupted(Next::Stop) => Next::Stop,
            RunOutcome::CannotRun => {
                last_code = exit::USAGE;
                if args.max_runs.is_some_and(|max| runs >= max) {
                    break;
                }
                say!("fix it and save; watching for changes… (Ctrl-C stops)");
                wait_for_change(&mut changes, &ignored, &mut interrupt, quiet).await
            }
        };
        match next {
            Next::Stop => break,
            Next::Change(path) => {
                let shown = path.strip_prefix(&service_dir).unwrap_or(&path);
                trigger = (shown.display().to_string(), Instant::now());
            }
        }
    }
    if let Some(warm) = warm {
        say!("stopping PostgreSQL and Redis");
        warm.shutdown().await;
    }
    // Stopped by the learner: that is not a failure. A bounded session (`--max-runs`) exits as
    // its last run would have.
    if args.max_runs.is_some() {
        last_code
    } else {
        exit::OK
    }
}

enum RunOutcome {
    /// The run finished; its exit code as `grader check` would give it.
    Graded(i32),
    /// A change or Ctrl-C came during the run, which was cancelled.
    Interrupted(Next),
    /// grader.toml is broken, or the dependencies could not start; the message is printed.
    CannotRun,
}

#[allow(clippy::too_many_arguments)]
async fn grade_once(
    request: &mut RunRequest,
    catalog: &Catalog,
    warm: &mut Option<WarmDependencies>,
    changes: &mut UnboundedReceiver<Vec<PathBuf>>,
    ignored: &Ignored,
    interrupt: &mut Interrupt,
    trigger: &(String, Instant),
    color: bool,
) -> RunOutcome {
    let plan = match run::plan(request, catalog) {
        Ok(plan) => plan,
        Err(e) => {
            report_run_error(e);
            return RunOutcome::CannotRun;
        }
    };
    let service_dir = plan.service_dir.clone();
    let (postgres, redis) = plan
        .manifest
        .as_ref()
        .map(|m| (m.postgres_env.is_some(), m.redis_env.is_some()))
        .unwrap_or_default();
    // Started on the first run, and again only when grader.toml asks for more than is running.
    let enough = warm
        .as_ref()
        .is_some_and(|w| (!postgres || w.has_postgres()) && (!redis || w.has_redis()));
    if !enough {
        if let Some(old) = warm.take() {
            old.shutdown().await;
        }
        if postgres || redis {
            say!(
                "starting PostgreSQL{} once for every run",
                if redis { " and Redis" } else { "" }
            );
        }
        let logs = service_dir.join(".grader").join("watch");
        match WarmDependencies::start(&logs, postgres, redis).await {
            Ok(w) => *warm = Some(w),
            Err(e) => {
                let problem = run::start_problem(e, &logs, Default::default());
                say!("grader: {}", problem.message);
                if let Some(fix) = problem.fix {
                    say!("  fix: {fix}");
                }
                return RunOutcome::CannotRun;
            }
        }
    }
    let Some(dependencies) = warm.as_ref() else {
        return RunOutcome::CannotRun;
    };

    let events = WatchEvents {
        progress: Progress::new(true),
        since: trigger.1,
        first_verdict: Mutex::new(None),
    };
    let (canceller, cancel) = Cancel::new();
    let mut graded = Box::pin(run::execute_warm(plan, &events, cancel, dependencies));
    let mut cancelled_by: Option<Next> = None;
    let result = loop {
        tokio::select! {
            r = &mut graded => break r,
            Some(paths) = changes.recv(), if cancelled_by.is_none() => {
                if let Some(path) = ignored.first_relevant(paths) {
                    canceller.cancel();
                    cancelled_by = Some(Next::Change(path));
                }
            }
            _ = interrupt.wait(), if cancelled_by.is_none() => {
                canceller.cancel();
                cancelled_by = Some(Next::Stop);
            }
        }
    };
    drop(graded);
    let first_verdict = *events
        .first_verdict
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // The spinner is cleared before the screen is drawn.
    drop(events);
    if let Some(next) = cancelled_by {
        if let Next::Change(path) = &next {
            say!(
                "{} changed during the run: starting again",
                path.strip_prefix(&service_dir).unwrap_or(path).display()
            );
        }
        return RunOutcome::Interrupted(next);
    }
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            report_run_error(e);
            return RunOutcome::CannotRun;
        }
    };
    let artifacts = PathBuf::from(&report.runtime.artifacts_dir);
    let json = crate::report::json::render(&report);
    if let Err(e) =
        crate::artifacts::write_replacing(&artifacts.join("report.json"), json.as_bytes())
    {
        say!("grader: cannot write the report: {e}");
    }
    let next = keep_progress(&service_dir, &report, catalog);
    // Next time, what did not pass runs first.
    request.first = report
        .checks
        .iter()
        .filter(|c| matches!(c.status, Status::Fail | Status::Error))
        .map(|c| c.id.clone())
        .collect();
    let screen = render_compact(
        &report,
        &HumanStyle {
            color,
            verbose: false,
        },
    );
    let mut out = anstream::stdout();
    if std::io::stdout().is_terminal() {
        // A fresh screen per run: the last verdicts are the only ones that matter.
        let _ = write!(out, "\x1b[2J\x1b[H");
    }
    let _ = write!(out, "{screen}");
    let _ = writeln!(out, "{}", timing_line(&report, &trigger.0, first_verdict));
    if let Some(next) = next {
        let _ = writeln!(out, "{next}");
    }
    let _ = out.flush();
    RunOutcome::Graded(crate::scoring::exit_code(
        report.status,
        &report.score,
        None,
        false,
    ))
}

/// `run 3 (src/app.py) · first verdict 0.4s after the change, every check 2.1s · database copy
/// 40 ms`: what the loop costs, measured on this run.
fn timing_line(report: &RunReport, trigger: &str, first_verdict: Option<Duration>) -> String {
    let seconds = |d: Duration| format!("{:.1}s", d.as_secs_f64());
    let mut parts = vec![format!("after {trigger}")];
    if let Some(first) = first_verdict {
        parts.push(format!("first verdict in {}", seconds(first)));
    }
    parts.push(format!(
        "whole run {}",
        seconds(Duration::from_millis(report.duration_ms))
    ));
    let t = &report.timings;
    parts.push(format!(
        "build {}, fresh database {}, service start {}",
        seconds(Duration::from_millis(t.build_ms)),
        seconds(Duration::from_millis(t.postgres_ms)),
        seconds(Duration::from_millis(t.service_start_ms))
    ));
    format!("{} · seed {}", parts.join(" · "), report.seed)
}

fn report_run_error(e: RunError) {
    match e {
        RunError::Diagnostics(d) => print_diagnostics(&d),
        other => {
            run_error(other);
        }
    }
}

async fn wait_for_change(
    changes: &mut UnboundedReceiver<Vec<PathBuf>>,
    ignored: &Ignored,
    interrupt: &mut Interrupt,
    quiet: Duration,
) -> Next {
    tokio::select! {
        path = next_burst(changes, ignored, quiet) => match path {
            Some(path) => Next::Change(path),
            // The watcher is gone: nothing will ever change again.
            None => Next::Stop,
        },
        _ = interrupt.wait() => Next::Stop,
    }
}

/// Waits until `quiet` passes with no change at all.
async fn settle(changes: &mut UnboundedReceiver<Vec<PathBuf>>, quiet: Duration) {
    while let Ok(Some(_)) = tokio::time::timeout(quiet, changes.recv()).await {}
}

/// Watches `dir` recursively; each batch of changed paths arrives on the channel. Only writes,
/// creations, removals and renames count: the run itself opens and reads files (grader.toml, the
/// sources the service loads), and a read is no change. The watcher must be kept alive for as
/// long as changes are wanted.
fn watch_folder(
    dir: &Path,
) -> Result<(notify::RecommendedWatcher, UnboundedReceiver<Vec<PathBuf>>), String> {
    use notify::{EventKind, Watcher};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
            ) {
                let _ = tx.send(event.paths);
            }
        }
    })
    .map_err(|e| e.to_string())?;
    watcher
        .watch(dir, notify::RecursiveMode::Recursive)
        .map_err(|e| e.to_string())?;
    Ok((watcher, rx))
}

/// The next burst of changes, once `quiet` has passed without another (one save of many files,
/// or an editor's write-then-rename, is one run), named by its last relevant path that still
/// exists (an editor's temp file is gone by then). `None` when the watcher is gone.
async fn next_burst(
    changes: &mut UnboundedReceiver<Vec<PathBuf>>,
    ignored: &Ignored,
    quiet: Duration,
) -> Option<PathBuf> {
    let mut relevant: Vec<PathBuf> = Vec::new();
    loop {
        let paths = if relevant.is_empty() {
            changes.recv().await?
        } else {
            match tokio::time::timeout(quiet, changes.recv()).await {
                Ok(Some(paths)) => paths,
                Ok(None) | Err(_) => break,
            }
        };
        relevant.extend(paths.into_iter().filter(|p| ignored.is_relevant(p)));
    }
    let existing = relevant.iter().rev().find(|p| p.exists()).cloned();
    existing.or_else(|| relevant.pop())
}

/// Which changed paths start a run (see the module docs).
struct Ignored {
    root: PathBuf,
    gitignore: ignore::gitignore::Gitignore,
}

impl Ignored {
    fn new(root: &Path) -> Ignored {
        let mut builder = ignore::gitignore::GitignoreBuilder::new(root);
        // A missing or unreadable .gitignore only means nothing more is ignored.
        let _ = builder.add(root.join(".gitignore"));
        Ignored {
            root: root.to_path_buf(),
            gitignore: builder
                .build()
                .unwrap_or_else(|_| ignore::gitignore::Gitignore::empty()),
        }
    }

    fn first_relevant(&self, paths: Vec<PathBuf>) -> Option<PathBuf> {
        paths.into_iter().find(|p| self.is_relevant(p))
    }

    fn is_relevant(&self, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(&self.root) else {
            return false;
        };
        if relative.components().any(|c| {
            NEVER_WATCHED
                .iter()
                .any(|never| c.as_os_str() == std::ffi::OsStr::new(never))
        }) {
            return false;
        }
        let is_dir = path.is_dir();
        !self
            .gitignore
            .matched_path_or_any_parents(relative, is_dir)
            .is_ignore()
    }
}

/// Progress as `grader check` shows it, plus the moment of the first verdict.
struct WatchEvents {
    progress: Progress,
    since: Instant,
    first_verdict: Mutex<Option<Duration>>,
}

impl ProgressSink for WatchEvents {
    fn phase_started(&self, phase: Phase, what: &str) {
        self.progress.phase_started(phase, what);
    }

    fn phase_finished(&self, phase: Phase, elapsed: Duration) {
        self.progress.phase_finished(phase, elapsed);
    }
}

impl RunEvents for WatchEvents {
    fn line(&self, text: &str) {
        self.progress.line(text);
    }

    fn check_started(&self, id: &str, title: &str) {
        self.progress.check_started(id, title);
    }

    fn check_finished(&self, result: &CheckResult) {
        let mut first = self.first_verdict.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() && result.status != Status::Skip {
            *first = Some(self.since.elapsed());
        }
        drop(first);
        self.progress.check_finished(result);
    }

    fn checks_finished(&self) {
        self.progress.checks_finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_dependencies_and_ignored_files_start_no_run() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\nbuild/\n").unwrap();
        let ignored = Ignored::new(&root);
        assert!(ignored.is_relevant(&root.join("app.py")));
        assert!(ignored.is_relevant(&root.join("src/main.rs")));
        assert!(ignored.is_relevant(&root.join("grader.toml")));
        for never in [
            ".grader/last-run/report.json",
            ".git/index",
            "target/debug/app",
            "node_modules/pg/index.js",
            "app/__pycache__/x.pyc",
            "server.log",
            "build/out.o",
        ] {
            assert!(!ignored.is_relevant(&root.join(never)), "{never}");
        }
        assert!(!ignored.is_relevant(Path::new("/elsewhere/app.py")));
        assert_eq!(
            ignored.first_relevant(vec![root.join("x.log"), root.join("app.py")]),
            Some(root.join("app.py"))
        );
    }
}
