//! Rolls check results up into points per skill area, per exercise and overall, and decides the
//! run's status and exit code. Pure functions over the result model.

use crate::exercise::{Catalog, Exercise};
use crate::outcome::{
    CheckResult, ExerciseScore, ProblemKind, RunProblem, RunStatus, Score, SkillScore, Status,
};

/// Exit codes, documented in the README and docs/REPORT.md.
pub mod exit {
    /// Nothing failed, or the score reached `--min-score`.
    pub const OK: i32 = 0;
    /// Checks failed (the service has something to fix).
    pub const CHECKS_FAILED: i32 = 1;
    /// Usage or configuration error (bad flags, bad grader.toml or exercise files).
    pub const USAGE: i32 = 2;
    /// The grader's infrastructure failed; results are incomplete.
    pub const INFRASTRUCTURE: i32 = 3;
    /// Interrupted by Ctrl-C or SIGTERM (128 + SIGINT).
    pub const INTERRUPTED: i32 = 130;
}

pub fn percent(earned: u32, possible: u32) -> f64 {
    if possible == 0 {
        return 0.0;
    }
    (f64::from(earned) * 1000.0 / f64::from(possible)).round() / 10.0
}

pub fn overall(results: &[CheckResult]) -> Score {
    let earned = results.iter().map(|r| r.earned).sum();
    let possible = results.iter().map(|r| r.points).sum();
    Score {
        earned,
        possible,
        percent: percent(earned, possible),
    }
}

/// Points earned, points possible, checks passed and checks counted.
fn tally(checks: &[&CheckResult]) -> (u32, u32, u32, u32) {
    (
        checks.iter().map(|r| r.earned).sum(),
        checks.iter().map(|r| r.points).sum(),
        checks.iter().filter(|r| r.status == Status::Pass).count() as u32,
        checks.len() as u32,
    )
}

/// One entry per skill that has at least one check in `results`, in taxonomy order.
pub fn by_skill(results: &[CheckResult], catalog: &Catalog) -> Vec<SkillScore> {
    catalog
        .skills
        .iter()
        .filter_map(|skill| {
            let checks: Vec<&CheckResult> =
                results.iter().filter(|r| r.skill == skill.id).collect();
            if checks.is_empty() {
                return None;
            }
            let (earned, possible, passed, total) = tally(&checks);
            Some(SkillScore {
                id: skill.id.clone(),
                title: skill.title.clone(),
                earned,
                possible,
                percent: percent(earned, possible),
                passed,
                total,
            })
        })
        .collect()
}

pub fn by_exercise(results: &[CheckResult], exercises: &[&Exercise]) -> Vec<ExerciseScore> {
    exercises
        .iter()
        .map(|ex| {
            let checks: Vec<&CheckResult> =
                results.iter().filter(|r| r.exercise == ex.id).collect();
            let (earned, possible, passed, total) = tally(&checks);
            ExerciseScore {
                id: ex.id.clone(),
                title: ex.title.clone(),
                earned,
                possible,
                percent: percent(earned, possible),
                passed,
                total,
            }
        })
        .collect()
}

/// Error beats fail beats pass: an incomplete run must never look like a verdict on the service.
pub fn run_status(results: &[CheckResult], problem: Option<&RunProblem>) -> RunStatus {
    let infra = problem.is_some_and(|p| {
        matches!(
            p.kind,
            ProblemKind::Infrastructure | ProblemKind::Interrupted
        )
    });
    if infra || results.iter().any(|r| r.status == Status::Error) {
        RunStatus::Error
    } else if problem.is_some() || results.iter().any(|r| r.status != Status::Pass) {
        RunStatus::Fail
    } else {
        RunStatus::Pass
    }
}

/// The process exit code for a finished run.
pub fn exit_code(
    status: RunStatus,
    score: &Score,
    min_score: Option<f64>,
    interrupted: bool,
) -> i32 {
    if interrupted {
        return exit::INTERRUPTED;
    }
    match status {
        RunStatus::Error => exit::INFRASTRUCTURE,
        RunStatus::Pass => exit::OK,
        RunStatus::Fail => match min_score {
            Some(min) if score.percent >= min => exit::OK,
            _ => exit::CHECKS_FAILED,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(skill: &str, status: Status, points: u32) -> CheckResult {
        CheckResult {
            id: format!("ex/{skill}-{points}"),
            exercise: "ex".into(),
            title: String::new(),
            skill: skill.into(),
            task: None,
            points,
            earned: if status == Status::Pass { points } else { 0 },
            status,
            duration_ms: 0,
            message: None,
            measurements: Vec::new(),
            detail: None,
        }
    }

    #[test]
    fn percent_rounds_to_one_decimal() {
        assert_eq!(percent(2, 3), 66.7);
        assert_eq!(percent(0, 0), 0.0);
        assert_eq!(percent(5, 5), 100.0);
    }

    #[test]
    fn error_outranks_fail_and_min_score_can_pass_a_failing_run() {
        let results = vec![result("a", Status::Pass, 3), result("a", Status::Fail, 1)];
        let status = run_status(&results, None);
        assert_eq!(status, RunStatus::Fail);
        let score = overall(&results);
        assert_eq!(score.percent, 75.0);
        assert_eq!(exit_code(status, &score, None, false), exit::CHECKS_FAILED);
        assert_eq!(exit_code(status, &score, Some(70.0), false), exit::OK);
        assert_eq!(
            exit_code(status, &score, Some(80.0), false),
            exit::CHECKS_FAILED
        );

        let with_error = vec![result("a", Status::Pass, 3), result("a", Status::Error, 1)];
        let status = run_status(&with_error, None);
        assert_eq!(status, RunStatus::Error);
        assert_eq!(
            exit_code(status, &overall(&with_error), Some(0.0), false),
            exit::INFRASTRUCTURE
        );
    }
}
