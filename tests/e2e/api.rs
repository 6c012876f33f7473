//! The grading-run API driven directly, in-process, with no `grader` subprocess: what `watch`,
//! `batch` and fault checks will build on. A run planned and executed through `grader::run` gives
//! the same verdicts as the binary, runs concurrently with another, and stops everything it
//! started when cancelled.

mod support;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use grader::exercise::{load_catalog, ExerciseSource};
use grader::outcome::{CheckResult, ProblemKind, RunReport, Status};
use grader::run::{self, Cancel, RunEvents, RunRequest};
use grader::runtime::{Phase, ProgressSink};
use support::*;

/// Records the order in which checks are reported.
#[derive(Default)]
struct Recorder {
    finished: Mutex<Vec<String>>,
}

impl ProgressSink for Recorder {
    fn phase_started(&self, _: Phase, _: &str) {}
    fn phase_finished(&self, _: Phase, _: Duration) {}
}

impl RunEvents for Recorder {
    fn line(&self, _: &str) {}
    fn check_started(&self, _: &str, _: &str) {}
    fn check_finished(&self, result: &CheckResult) {
        self.finished.lock().unwrap().push(result.id.clone());
    }
}

fn request(exercises: &[&str], env: &[(&str, &str)]) -> (RunRequest, tempfile::TempDir) {
    let artifacts = tempfile::tempdir().unwrap();
    let mut request = RunRequest::new(reference_dir());
    request.seed = Some(4242);
    request.exercises = exercises.iter().map(|e| e.to_string()).collect();
    request.artifacts_dir = Some(artifacts.path().to_path_buf());
    request.service_env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (request, artifacts)
}

async fn grade(request: &RunRequest, events: &dyn RunEvents, cancel: Cancel) -> RunReport {
    let catalog = load_catalog(&ExerciseSource::Embedded).expect("the built-in exercises parse");
    let plan = run::plan(request, &catalog).unwrap_or_else(|e| panic!("plan: {e:?}"));
    tokio::time::timeout(Duration::from_secs(300), run::execute(plan, events, cancel))
        .await
        .expect("a run finishes within 5 minutes")
        .unwrap_or_else(|e| panic!("execute: {e:?}"))
}

fn not_passed(report: &RunReport) -> BTreeSet<String> {
    report
        .checks
        .iter()
        .filter(|c| c.status != Status::Pass)
        .map(|c| c.id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_give_the_reference_and_a_variant_their_own_verdicts() {
    let variant = all_variants()
        .into_iter()
        .find(|v| v.bug == "page-offset")
        .expect("the page-offset variant is listed");
    let (reference, _a) = request(&["api-design", "pagination", "caching"], &[]);
    let (buggy, _b) = request(&["pagination"], &[("REFSVC_BUG", "page-offset")]);
    let recorder = Recorder::default();
    let (good, bad) = tokio::join!(
        grade(&reference, &recorder, Cancel::never()),
        grade(&buggy, &run::Quiet, Cancel::never()),
    );
    assert_eq!(good.score.percent, 100.0, "{:?}", not_passed(&good));
    let expected: BTreeSet<String> = variant.fails.iter().cloned().collect();
    assert_eq!(not_passed(&bad), expected);
    // Exercises ran concurrently, yet checks were reported in exercise and file order.
    let order: Vec<String> = good.checks.iter().map(|c| c.id.clone()).collect();
    assert_eq!(*recorder.finished.lock().unwrap(), order);
    let exercises: Vec<&str> = good.checks.iter().map(|c| c.exercise.as_str()).collect();
    let mut grouped = exercises.clone();
    grouped.dedup();
    assert_eq!(grouped, ["api-design", "pagination", "caching"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_stops_what_it_started_and_says_so() {
    let (request, _artifacts) = request(&["caching"], &[]);
    let (canceller, cancel) = Cancel::new();
    let recorder = Recorder::default();
    let run = grade(&request, &recorder, cancel);
    let cancel_after_first_check = async {
        loop {
            if !recorder.finished.lock().unwrap().is_empty() {
                canceller.cancel();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (report, ()) = tokio::join!(run, cancel_after_first_check);
    let problem = report.problem.expect("an interrupted run reports it");
    assert_eq!(problem.kind, ProblemKind::Interrupted);
    assert!(report.checks.iter().any(|c| c.status == Status::Skip));
    let url = url::Url::parse(&report.runtime.service_url).unwrap();
    let port = url.port().unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the service still listens on {port} after the run returned"
    );
}
