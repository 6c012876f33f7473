//! JUnit XML for CI test-report viewers.
//!
//! Mapping (documented in `docs/REPORT.md`):
//!
//! - one `<testsuite>` per exercise, named by the exercise id, with the properties `seed`,
//!   `replay` and `grader_version`;
//! - one `<testcase>` per check: `name` = check id, `classname` = `<exercise>.<skill>`, `time` =
//!   the check's duration;
//! - fail → `<failure message="…">` whose text is the same teaching detail as the human report
//!   (curl command, response, expected/actual, hint, spec, service log); error → `<error>`;
//!   skip → `<skipped message="…">`;
//! - a run problem (the service did not build or start, infrastructure failed) becomes an extra
//!   suite `grader` with one testcase `run/<kind>`, so that a run in which every check was
//!   skipped still shows as failed in CI.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::{exercise_order, human::check_detail_plain, sanitize};
use crate::outcome::{CheckResult, ProblemKind, RunProblem, RunReport, Status};

/// Renders the report as JUnit XML, ending with a newline.
pub fn render(report: &RunReport) -> String {
    let mut junit = Report::new("grader");
    junit.set_time(Duration::from_millis(report.duration_ms));

    if let Some(problem) = &report.problem {
        let mut suite = suite(report, "grader");
        suite.add_test_case(problem_case(problem));
        junit.add_test_suite(suite);
    }

    for (exercise, _) in exercise_order(report) {
        let mut suite = suite(report, exercise);
        let checks: Vec<&CheckResult> = report
            .checks
            .iter()
            .filter(|c| c.exercise == exercise)
            .collect();
        suite.set_time(Duration::from_millis(
            checks.iter().map(|c| c.duration_ms).sum(),
        ));
        suite.add_test_cases(checks.into_iter().map(test_case));
        junit.add_test_suite(suite);
    }

    let mut xml = junit
        .to_string()
        .expect("quick-junit always serialises a report it built");
    if !xml.ends_with('\n') {
        xml.push('\n');
    }
    super::defuse_workflow_commands(&xml)
}

fn suite(report: &RunReport, name: &str) -> TestSuite {
    let mut suite = TestSuite::new(name);
    suite.add_property(("seed", report.seed.to_string().as_str()));
    suite.add_property(("replay", report.replay.as_str()));
    suite.add_property(("grader_version", report.grader_version.as_str()));
    suite
}

fn test_case(check: &CheckResult) -> TestCase {
    let message = check.message.as_deref().map(sanitize);
    let status = match check.status {
        Status::Pass => TestCaseStatus::success(),
        Status::Fail | Status::Error => {
            let kind = if check.status == Status::Fail {
                NonSuccessKind::Failure
            } else {
                NonSuccessKind::Error
            };
            let mut status = TestCaseStatus::non_success(kind);
            status
                .set_message(message.unwrap_or_else(|| format!("check {}", check.status.as_str())));
            status.set_description(check_detail_plain(check));
            status
        }
        Status::Skip => {
            let mut status = TestCaseStatus::skipped();
            if let Some(message) = message {
                status.set_message(message);
            }
            status
        }
    };
    let mut case = TestCase::new(check.id.as_str(), status);
    case.set_classname(format!("{}.{}", check.exercise, check.skill));
    case.set_time(Duration::from_millis(check.duration_ms));
    case
}

fn problem_case(problem: &RunProblem) -> TestCase {
    let (name, kind) = match problem.kind {
        ProblemKind::ServiceBuild => ("run/service_build", NonSuccessKind::Failure),
        ProblemKind::ServiceStart => ("run/service_start", NonSuccessKind::Failure),
        ProblemKind::Infrastructure => ("run/infrastructure", NonSuccessKind::Error),
        ProblemKind::Interrupted => ("run/interrupted", NonSuccessKind::Error),
        ProblemKind::TimedOut => ("run/timed_out", NonSuccessKind::Failure),
    };
    let mut text = sanitize(&problem.message);
    text.push('\n');
    if let Some(fix) = &problem.fix {
        text.push_str(&format!("\nfix: {}\n", sanitize(fix)));
    }
    if !problem.log_tail.is_empty() {
        text.push_str(&format!("\nlog (last {} lines):\n", problem.log_tail.len()));
        for line in &problem.log_tail {
            text.push_str(&format!("  | {}\n", sanitize(line)));
        }
    }
    let mut status = TestCaseStatus::non_success(kind);
    status.set_message(sanitize(&problem.message));
    status.set_description(text);
    let mut case = TestCase::new(name, status);
    case.set_classname("grader.run");
    case
}
