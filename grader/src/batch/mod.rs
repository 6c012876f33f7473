//! `grader batch`: a whole class graded on one machine, each submission as its own grading run
//! (the same `run::plan` + `run::execute` as `grader check`, so a verdict here is the verdict a
//! single check gives), `jobs` at a time, resumable, and sliced into shards for a distributed
//! engine (Kubernetes Indexed Jobs, CI matrices) whose outputs `merge` combines.
//!
//! Output folder:
//! - `batch.json`: the batch's seed, exercises and runtime (a resumed run reuses the seed);
//! - `submissions/<student>/result.json` (+ the run's `report.json` and `report.html`, and
//!   `last-run/` with its logs);
//! - `class.csv`, `class.json`, `class.html`: the class report, from the kept results only.

pub mod checkout;
pub mod class;
pub mod class_html;
pub mod fixtures;
pub mod key;
pub mod result;
pub mod roster;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::diagnostic::display_path;
use crate::exercise::{Catalog, ExerciseSource};
use crate::outcome::{ProblemKind, RunStatus};
use crate::run::{self, Cancel, Quiet, RunError, RunRequest, RuntimeKind};
use class::{BatchHeader, ClassReport};
use result::{Identity, SubmissionResult, Verdict};
use roster::{Roster, Shard, Submission, SubmissionSource};

pub const BATCH_FILE: &str = "batch.json";
pub const SUBMISSIONS_DIR: &str = "submissions";
pub const RESULT_FILE: &str = "result.json";
pub const REPORT_FILE: &str = "report.json";
/// The same report as a page, linked from the class page.
pub const REPORT_PAGE: &str = "report.html";

/// Everything `grader batch` takes, as plain data.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub roster: Roster,
    pub exercises: Vec<String>,
    /// Submissions graded at once.
    pub jobs: usize,
    /// Docker (isolated) or local.
    pub runtime: RuntimeKind,
    pub out: PathBuf,
    pub seed: u64,
    pub shard: Option<Shard>,
    /// One submission's run may take this long; then it is stopped and failed.
    pub timeout: Duration,
    /// Where the exercises come from (their files are part of a result's key).
    pub source: ExerciseSource,
}

/// `batch.json`: what the folder's results were graded with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchFile {
    pub grader_version: String,
    #[serde(flatten)]
    pub header: BatchHeader,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    pub roster: String,
}

impl BatchFile {
    pub fn load(out: &Path) -> Option<BatchFile> {
        let text = std::fs::read_to_string(out.join(BATCH_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// What a batch tells its caller as it goes.
pub trait BatchEvents: Sync {
    /// The slice holds `total` submissions.
    fn planned(&self, total: usize);
    fn started(&self, student: &str);
    fn retrying(&self, student: &str, why: &str);
    /// A submission's result: `kept` when an earlier run's was reused.
    fn finished(&self, result: &SubmissionResult, kept: bool);
}

impl BatchEvents for Quiet {
    fn planned(&self, _: usize) {}
    fn started(&self, _: &str) {}
    fn retrying(&self, _: &str, _: &str) {}
    fn finished(&self, _: &SubmissionResult, _: bool) {}
}

pub struct BatchOutcome {
    /// This run's slice of the roster, by student.
    pub results: Vec<SubmissionResult>,
    /// Results reused from an earlier run.
    pub kept: usize,
    pub class: ClassReport,
    /// Ctrl-C: what finished is kept; the rest is graded by the next run.
    pub interrupted: bool,
}

/// Grades the request's slice of the roster and writes the class report. `Err` is a problem
/// with the output folder (nothing of a submission's is ever an `Err`).
pub async fn run(
    request: &BatchRequest,
    catalog: &Catalog,
    events: &dyn BatchEvents,
    cancel: Cancel,
) -> Result<BatchOutcome, String> {
    let out = &request.out;
    std::fs::create_dir_all(out.join(SUBMISSIONS_DIR))
        .map_err(|e| format!("cannot create {}: {e}", display_path(out)))?;
    let header = BatchHeader {
        seed: request.seed,
        exercises: request.exercises.clone(),
        runtime: runtime_name(request.runtime).to_string(),
    };
    let batch_file = BatchFile {
        grader_version: env!("CARGO_PKG_VERSION").to_string(),
        header: header.clone(),
        shard: request.shard.map(|s| s.to_string()),
        roster: display_path(&request.roster.origin),
    };
    result::write_json(&out.join(BATCH_FILE), &batch_file)
        .map_err(|e| format!("cannot write {}: {e}", display_path(&out.join(BATCH_FILE))))?;
    let fingerprint = request
        .source
        .fingerprint(&request.exercises)
        .map_err(|e| format!("cannot read the exercises' files: {e}"))?;
    let possible: u32 = request
        .exercises
        .iter()
        .filter_map(|id| catalog.exercise(id))
        .flat_map(|e| e.checks.iter().map(|c| c.points))
        .sum();
    let submissions = match request.shard {
        Some(shard) => request.roster.shard(shard),
        None => request.roster.submissions.clone(),
    };
    let context = Context {
        request,
        catalog,
        fingerprint,
        possible,
        cancel,
    };

    // Each submission is copied (or cloned) and keyed only when its turn comes, so no more than
    // `jobs` copies exist at once; a kept result finishes at once.
    events.planned(submissions.len());
    let jobs = request.jobs.max(1);
    let done: Vec<(SubmissionResult, bool)> = futures_util::stream::iter(submissions)
        .map(|submission| context.process(submission, events))
        .buffer_unordered(jobs)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    let interrupted = context.cancel.is_cancelled();
    let kept_count = done.iter().filter(|(_, kept)| *kept).count();
    let mut results: Vec<SubmissionResult> = done.into_iter().map(|(r, _)| r).collect();
    results.sort_by(|a, b| a.student.cmp(&b.student));
    let class = write_class_report(out, &header, &results, catalog)?;
    Ok(BatchOutcome {
        results,
        kept: kept_count,
        class,
        interrupted,
    })
}

/// Reads the results kept in `dirs` (each a batch's or a shard's output folder) and writes the
/// class report into `out`. Refuses results of different batches (seed, exercises, runtime) and
/// a student graded in two folders (shards that overlap).
pub fn merge(dirs: &[PathBuf], out: &Path, catalog: &Catalog) -> Result<ClassReport, String> {
    let mut header: Option<(BatchHeader, PathBuf)> = None;
    let mut results: Vec<SubmissionResult> = Vec::new();
    let mut origin: std::collections::BTreeMap<String, PathBuf> = Default::default();
    for dir in dirs {
        let batch = BatchFile::load(dir).ok_or_else(|| {
            format!(
                "{} has no readable {BATCH_FILE}: is it the --out folder of a `grader batch`?",
                display_path(dir)
            )
        })?;
        match &header {
            Some((first, first_dir)) if *first != batch.header => {
                return Err(format!(
                    "{} was graded with seed {}, exercises {} on {}, but {} with seed {}, \
                     exercises {} on {}: merge the shards of one batch",
                    display_path(first_dir),
                    first.seed,
                    first.exercises.join(","),
                    first.runtime,
                    display_path(dir),
                    batch.header.seed,
                    batch.header.exercises.join(","),
                    batch.header.runtime
                ))
            }
            Some(_) => {}
            None => header = Some((batch.header.clone(), dir.clone())),
        }
        for result in listed_results(dir)? {
            if let Some(other) = origin.insert(result.student.clone(), dir.clone()) {
                return Err(format!(
                    "{} is graded in both {} and {}: shards must be disjoint (the same --shard N \
                     for every shard, each I once)",
                    result.student,
                    display_path(&other),
                    display_path(dir)
                ));
            }
            copy_submission(dir, out, &result.student)?;
            results.push(result);
        }
    }
    let Some((header, _)) = header else {
        return Err("nothing to merge: name at least one batch output folder".into());
    };
    let batch_file = BatchFile {
        grader_version: env!("CARGO_PKG_VERSION").to_string(),
        header: header.clone(),
        shard: None,
        roster: format!(
            "merged from {}",
            dirs.iter()
                .map(|d| display_path(d))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    result::write_json(&out.join(BATCH_FILE), &batch_file)
        .map_err(|e| format!("cannot write {}: {e}", display_path(out)))?;
    write_class_report(out, &header, &results, catalog)
}

/// The results a batch folder's class report lists (a folder may hold other results, of an
/// earlier run or another slice; its `class.json` says which are this batch's).
fn listed_results(dir: &Path) -> Result<Vec<SubmissionResult>, String> {
    let path = dir.join("class.json");
    let class: ClassReport = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot read {}: {e}", display_path(&path)))?;
    class
        .submissions
        .iter()
        .map(|row| {
            let file = dir
                .join(SUBMISSIONS_DIR)
                .join(&row.student)
                .join(RESULT_FILE);
            SubmissionResult::load(&file)
                .filter(|r| r.student == row.student)
                .ok_or_else(|| {
                    format!(
                        "{} is listed in {} but {} is missing or unreadable",
                        row.student,
                        display_path(&path),
                        display_path(&file)
                    )
                })
        })
        .collect()
}

/// A shard's result and report, copied into the merged folder (so its links work there).
fn copy_submission(from: &Path, out: &Path, student: &str) -> Result<(), String> {
    let source = from.join(SUBMISSIONS_DIR).join(student);
    let target = out.join(SUBMISSIONS_DIR).join(student);
    if source == target {
        return Ok(());
    }
    std::fs::create_dir_all(&target)
        .map_err(|e| format!("cannot create {}: {e}", display_path(&target)))?;
    for name in [RESULT_FILE, REPORT_FILE, REPORT_PAGE] {
        let file = source.join(name);
        if file.is_file() {
            std::fs::copy(&file, target.join(name))
                .map_err(|e| format!("cannot copy {}: {e}", display_path(&file)))?;
        }
    }
    Ok(())
}

fn write_class_report(
    out: &Path,
    header: &BatchHeader,
    results: &[SubmissionResult],
    catalog: &Catalog,
) -> Result<ClassReport, String> {
    let class = ClassReport::build(header, results, catalog, |student| {
        out.join(SUBMISSIONS_DIR)
            .join(student)
            .join(REPORT_PAGE)
            .is_file()
    });
    for (name, text) in [
        ("class.json", class.to_json()),
        ("class.csv", class.to_csv()),
        ("class.html", class_html::render(&class)),
    ] {
        let path = out.join(name);
        crate::artifacts::write_replacing(&path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", display_path(&path)))?;
    }
    Ok(class)
}

pub fn runtime_name(kind: RuntimeKind) -> &'static str {
    match kind {
        RuntimeKind::Docker => "docker",
        RuntimeKind::Local => "local",
        RuntimeKind::External => "external",
        RuntimeKind::Auto => "auto",
    }
}

struct Context<'a> {
    request: &'a BatchRequest,
    catalog: &'a Catalog,
    fingerprint: String,
    possible: u32,
    cancel: Cancel,
}

/// A submission with its files in place and its key computed.
struct Ready {
    submission: Submission,
    /// The folder graded: the grader's own copy of the submission's files, which lives as long
    /// as this (the submission's folder is never written, and may be read-only).
    folder: Result<PathBuf, String>,
    copy: Option<crate::runtime::local::SupervisedTempDir>,
    key: String,
    seed: u64,
    result_path: PathBuf,
}

impl Ready {
    /// `text` with the path of the grader's copy replaced by the submission's own folder, or
    /// the repository and ref (the copy is gone after the run); `quoted` for shell commands.
    fn in_original_terms(&self, text: &str, quoted: bool) -> String {
        let Some(copy) = &self.copy else {
            return text.to_string();
        };
        let original = match &self.submission.source {
            SubmissionSource::Folder(folder) => display_path(folder),
            git => format!("<a clone of {}>", git.describe()),
        };
        let mut text = text.to_string();
        if quoted {
            text = text.replace(
                &crate::run::shell_word(&display_path(copy.path())),
                &crate::run::shell_word(&original),
            );
        }
        for name in [display_path(copy.path()), copy.path().display().to_string()] {
            text = text.replace(&name, &original);
        }
        text
    }

    /// The result names the submission, never the copy graded.
    fn name_the_original(&self, result: &mut SubmissionResult) {
        if let Some(replay) = result.replay.as_mut() {
            *replay = self.in_original_terms(replay, true);
        }
        if let Some(message) = result.message.as_mut() {
            *message = self.in_original_terms(message, false);
        }
    }

    /// So does the run's report kept beside the result (its replay, folder and problem).
    fn name_the_original_in_report(&self, report: &mut crate::outcome::RunReport) {
        report.replay = self.in_original_terms(&report.replay, true);
        report.runtime.service_dir = self.in_original_terms(&report.runtime.service_dir, false);
        if let Some(problem) = report.problem.as_mut() {
            problem.message = self.in_original_terms(&problem.message, false);
        }
    }

    /// An earlier run's result with this key, unless it was a grader error.
    fn kept_result(&self) -> Option<SubmissionResult> {
        SubmissionResult::load(&self.result_path)
            .filter(|r| r.key == self.key && r.verdict != Verdict::Error)
    }
}

enum Attempt {
    Graded(Box<crate::outcome::RunReport>),
    /// The submission itself cannot be graded (no grader.toml, ...).
    Unusable(String),
    /// The grader failed; worth one more try.
    GraderError(String),
    /// Ctrl-C.
    Interrupted,
    /// The run went over `--timeout`.
    TimedOut(Box<crate::outcome::RunReport>),
}

impl Context<'_> {
    fn submission_dir(&self, student: &str) -> PathBuf {
        self.request.out.join(SUBMISSIONS_DIR).join(student)
    }

    async fn prepare(&self, submission: &Submission) -> Ready {
        let seed = key::submission_seed(self.request.seed, &submission.student);
        let result_path = self.submission_dir(&submission.student).join(RESULT_FILE);
        let (folder, copy) = match &submission.source {
            SubmissionSource::Folder(path) => checkout::copy_folder(path),
            SubmissionSource::Git { url, git_ref } => {
                checkout::clone(url, git_ref.as_deref(), &self.cancel).await
            }
        }
        .map_or_else(
            |e| (Err(e), None),
            |dir| (Ok(dir.path().to_path_buf()), Some(dir)),
        );
        let content = match &folder {
            Ok(dir) => key::content_hash(dir).unwrap_or_else(|e| format!("unreadable: {e}")),
            Err(e) => format!("missing: {e}"),
        };
        let key = key::result_key(
            &content,
            &self.fingerprint,
            runtime_name(self.request.runtime),
            seed,
        );
        Ready {
            submission: submission.clone(),
            folder,
            copy,
            key,
            seed,
            result_path,
        }
    }

    /// One submission: its files copied and keyed, then its earlier result kept (`true`) or a
    /// new one graded; `None` when the batch was interrupted before it finished.
    async fn process(
        &self,
        submission: Submission,
        events: &dyn BatchEvents,
    ) -> Option<(SubmissionResult, bool)> {
        if self.cancel.is_cancelled() {
            return None;
        }
        let ready = self.prepare(&submission).await;
        if let Some(result) = ready.kept_result() {
            events.finished(&result, true);
            return Some((result, true));
        }
        self.grade(ready, events).await.map(|r| (r, false))
    }

    /// Grades one submission (retrying a grader error once) and keeps its result; `None` when
    /// the batch was interrupted before it finished.
    async fn grade(&self, ready: Ready, events: &dyn BatchEvents) -> Option<SubmissionResult> {
        if self.cancel.is_cancelled() {
            return None;
        }
        let student = ready.submission.student.as_str();
        events.started(student);
        let started = Instant::now();
        let who = Identity {
            student,
            source: ready.submission.source.describe(),
            key: ready.key.clone(),
            seed: ready.seed,
            exercises: &self.request.exercises,
            runtime: runtime_name(self.request.runtime),
            possible: self.possible,
        };
        let dir = self.submission_dir(student);
        let elapsed = || started.elapsed().as_millis() as u64;
        let mut result = match &ready.folder {
            Err(why) => {
                SubmissionResult::ungraded(&who, Verdict::Unusable, why.clone(), 0, elapsed())
            }
            Ok(folder) => {
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    match self.attempt(folder, ready.seed, &dir).await {
                        Attempt::Interrupted => return None,
                        Attempt::Unusable(why) => {
                            break SubmissionResult::ungraded(
                                &who,
                                Verdict::Unusable,
                                why,
                                attempts,
                                elapsed(),
                            )
                        }
                        Attempt::Graded(mut report)
                            if report.status != RunStatus::Error || attempts == 2 =>
                        {
                            ready.name_the_original_in_report(&mut report);
                            self.keep_report(&dir, &report);
                            break SubmissionResult::graded(&who, &report, attempts, elapsed());
                        }
                        Attempt::TimedOut(mut report) => {
                            ready.name_the_original_in_report(&mut report);
                            self.keep_report(&dir, &report);
                            let mut result =
                                SubmissionResult::graded(&who, &report, attempts, elapsed());
                            result.verdict = Verdict::Fail;
                            result.message = Some(format!(
                                "the run took longer than --timeout {}: the service was stopped, \
                                 and the checks that had not run count as not passed",
                                humantime::format_duration(self.request.timeout)
                            ));
                            break result;
                        }
                        Attempt::GraderError(why) if attempts == 2 => {
                            break SubmissionResult::ungraded(
                                &who,
                                Verdict::Error,
                                why,
                                attempts,
                                elapsed(),
                            )
                        }
                        Attempt::Graded(report) => {
                            let why = report.problem.as_ref().map_or_else(
                                || "a check ended in a grader error".to_string(),
                                |p| p.message.clone(),
                            );
                            events.retrying(student, &why);
                        }
                        Attempt::GraderError(why) => events.retrying(student, &why),
                    }
                }
            }
        };
        ready.name_the_original(&mut result);
        if let Err(e) = result.save(&ready.result_path) {
            // The verdict stands for this run; the next run grades it again.
            events.retrying(student, &format!("its result could not be kept: {e}"));
        }
        events.finished(&result, false);
        Some(result)
    }

    async fn attempt(&self, folder: &Path, seed: u64, dir: &Path) -> Attempt {
        let mut request = RunRequest::new(folder);
        request.exercises = self.request.exercises.clone();
        request.runtime = self.request.runtime;
        request.seed = Some(seed);
        request.artifacts_dir = Some(dir.join("last-run"));
        let plan = match run::plan(&request, self.catalog) {
            Ok(plan) => plan,
            Err(RunError::Diagnostics(d)) => return Attempt::Unusable(one_line(&d)),
            Err(RunError::Usage(m)) => return Attempt::Unusable(m),
            Err(RunError::Infrastructure(m)) => return Attempt::GraderError(m),
        };
        // `[docker] build` is a command the docker runtime runs on this machine before the image
        // build (a convenience for one's own service). A class's submissions are untrusted: under
        // --runtime docker nothing of theirs runs outside their containers.
        if self.request.runtime == RuntimeKind::Docker {
            if let Some(command) = plan.manifest.as_ref().and_then(|m| m.docker.build.as_ref()) {
                return Attempt::Unusable(format!(
                    "its grader.toml asks for `[docker] build = {command:?}`, a command on the \
                     grading machine; `grader batch --runtime docker` runs nothing of a \
                     submission outside its containers: build inside the Dockerfile (a \
                     multi-stage build)"
                ));
            }
        }
        // The run stops on Ctrl-C or at the deadline, whichever comes first.
        let (canceller, run_cancel) = Cancel::new();
        let batch_cancel = self.cancel.clone();
        let timeout = self.request.timeout;
        let deadline = tokio::spawn(async move {
            let timed_out = tokio::select! {
                _ = batch_cancel.cancelled() => false,
                _ = tokio::time::sleep(timeout) => true,
            };
            canceller.cancel();
            timed_out
        });
        let outcome = run::execute(plan, &Quiet, run_cancel).await;
        let interrupted = outcome.as_ref().is_ok_and(|report| {
            report
                .problem
                .as_ref()
                .is_some_and(|p| p.kind == ProblemKind::Interrupted)
        });
        // Only the deadline task cancels the run, and it has (or is about to have) its answer:
        // which of Ctrl-C and the deadline came first. Otherwise it is still waiting: stop it.
        let timed_out = if interrupted {
            deadline.await.unwrap_or(false)
        } else {
            deadline.abort();
            false
        };
        match outcome {
            Err(RunError::Diagnostics(d)) => Attempt::Unusable(one_line(&d)),
            Err(RunError::Usage(m)) => Attempt::Unusable(m),
            Err(RunError::Infrastructure(m)) => Attempt::GraderError(m),
            Ok(report) if interrupted && timed_out => Attempt::TimedOut(Box::new(report)),
            Ok(_) if interrupted => Attempt::Interrupted,
            Ok(report) => Attempt::Graded(Box::new(report)),
        }
    }

    fn keep_report(&self, dir: &Path, report: &crate::outcome::RunReport) {
        let _ = std::fs::create_dir_all(dir);
        let _ = crate::artifacts::write_replacing(
            &dir.join(REPORT_FILE),
            crate::report::json::render(report).as_bytes(),
        );
        let _ = crate::artifacts::write_replacing(
            &dir.join(REPORT_PAGE),
            crate::report::html::render(report).as_bytes(),
        );
    }
}

/// Located errors in a submission's files, one line for a table cell: `file:line:col: message`.
fn one_line(d: &crate::diagnostic::Diagnostics) -> String {
    d.0.iter()
        .map(|d| format!("{}: {}", d.location(), d.message))
        .collect::<Vec<_>>()
        .join("; ")
}
