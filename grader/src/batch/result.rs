//! One submission's graded result as `grader batch` keeps it (`submissions/<student>/result.json`):
//! the verdict and scores of its run, the key that makes it reusable, and how to replay it. The
//! run's full report sits next to it as `report.json`.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::outcome::{RunReport, RunStatus, SkillScore, Status};

/// Version of `result.json`; a result of another version is graded again.
pub const RESULT_VERSION: u32 = 1;

/// A submission's verdict in the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every check passed.
    Pass,
    /// Graded: the service has something to fix (a build that fails, a service that crashes or
    /// hangs, a failed check).
    Fail,
    /// The grader could not grade it, twice (infrastructure); never the student's fault, and
    /// graded again by the next run.
    Error,
    /// Nothing to grade: the folder or repository is missing, or `grader.toml` is absent or
    /// malformed.
    Unusable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
            Verdict::Unusable => "unusable",
        }
    }

    /// Scored in the class's distributions (an error has no score yet).
    pub fn scored(self) -> bool {
        self != Verdict::Error
    }
}

/// A check's verdict, without its evidence (that is in `report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckVerdict {
    pub id: String,
    pub title: String,
    pub status: Status,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SubmissionResult {
    pub version: u32,
    pub student: String,
    /// The folder, or `url@ref`, as the roster named it.
    pub source: String,
    /// What the result was graded from (see `batch::key`); equal key, same result.
    pub key: String,
    pub seed: u64,
    pub exercises: Vec<String>,
    pub runtime: String,
    pub verdict: Verdict,
    pub earned: u32,
    pub possible: u32,
    pub percent: f64,
    /// Per skill, as in the run's report (empty when nothing was graded).
    pub skills: Vec<SkillScore>,
    pub checks: Vec<CheckVerdict>,
    /// Why the submission failed as a whole, was unusable or errored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Runs it took: 2 when the first ended in a grader error.
    pub attempts: u32,
    pub duration_ms: u64,
    /// The `grader check` command that replays this run (on the submission's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<String>,
}

/// What a submission is, before it is graded.
pub struct Identity<'a> {
    pub student: &'a str,
    pub source: String,
    pub key: String,
    pub seed: u64,
    pub exercises: &'a [String],
    pub runtime: &'a str,
    /// Points of every selected check: what an unusable or errored submission could have earned.
    pub possible: u32,
}

impl SubmissionResult {
    pub fn graded(who: &Identity<'_>, report: &RunReport, attempts: u32, duration_ms: u64) -> Self {
        let verdict = match report.status {
            RunStatus::Pass => Verdict::Pass,
            RunStatus::Fail => Verdict::Fail,
            RunStatus::Error => Verdict::Error,
        };
        SubmissionResult {
            verdict,
            earned: report.score.earned,
            possible: report.score.possible,
            percent: report.score.percent,
            skills: report.skills.clone(),
            checks: report
                .checks
                .iter()
                .map(|c| CheckVerdict {
                    id: c.id.clone(),
                    title: c.title.clone(),
                    status: c.status,
                })
                .collect(),
            message: summary(report),
            attempts,
            duration_ms,
            replay: Some(report.replay.clone()),
            ..Self::ungraded(who, Verdict::Fail, String::new(), attempts, duration_ms)
        }
    }

    /// A submission that has no run to show: unusable, or a grader error.
    pub fn ungraded(
        who: &Identity<'_>,
        verdict: Verdict,
        message: String,
        attempts: u32,
        duration_ms: u64,
    ) -> Self {
        SubmissionResult {
            version: RESULT_VERSION,
            student: who.student.to_string(),
            source: who.source.clone(),
            key: who.key.clone(),
            seed: who.seed,
            exercises: who.exercises.to_vec(),
            runtime: who.runtime.to_string(),
            verdict,
            earned: 0,
            possible: who.possible,
            percent: 0.0,
            skills: Vec::new(),
            checks: Vec::new(),
            message: (!message.is_empty()).then_some(message),
            attempts,
            duration_ms,
            replay: None,
        }
    }

    /// Reads a kept result; `None` when there is none or it cannot be used.
    pub fn load(path: &Path) -> Option<SubmissionResult> {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut crate::artifacts::open_regular(path).ok()?, &mut text)
            .ok()?;
        serde_json::from_str::<SubmissionResult>(&text)
            .ok()
            .filter(|r| r.version == RESULT_VERSION)
    }

    /// Written to a new file renamed over the old one: an interrupted write leaves the old result
    /// or none, never half of one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_json(path, self)
    }
}

/// Pretty JSON written by way of a new file renamed over the old one.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)? + "\n";
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::artifacts::write_replacing(path, text.as_bytes())
}

/// One line on why the run did not pass: its problem, the checks the grader could not run, or
/// the checks that failed.
fn summary(report: &RunReport) -> Option<String> {
    if let Some(problem) = &report.problem {
        return Some(problem.message.clone());
    }
    let errors: Vec<String> = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Error)
        .map(|c| format!("{}: {}", c.id, c.message.as_deref().unwrap_or("")))
        .collect();
    if !errors.is_empty() {
        return Some(format!("grader error in {}", errors.join("; ")));
    }
    failed_checks(report)
}

/// "3 of 37 checks failed: a, b, c" (the first five named), for a run without a problem of its
/// own.
fn failed_checks(report: &RunReport) -> Option<String> {
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.id.as_str())
        .collect();
    if failed.is_empty() {
        return None;
    }
    let named = failed
        .iter()
        .take(5)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "{} of {} checks failed: {named}{}",
        failed.len(),
        report.checks.len(),
        if failed.len() > 5 { ", ..." } else { "" }
    ))
}
