//! A small class for the class report's snapshot and browser tests: one submission per verdict,
//! a crash, and a message full of hostile text, built in code with fixed figures.

use super::class::{BatchHeader, ClassReport};
use super::result::{CheckVerdict, SubmissionResult, Verdict, RESULT_VERSION};
use crate::exercise::{load_catalog, ExerciseSource};
use crate::outcome::{SkillScore, Status};

const CHECKS: [(&str, &str); 4] = [
    (
        "api-design/create-returns-201",
        "Creating a product answers 201 with a Location",
    ),
    (
        "api-design/errors-are-problem-json",
        "Errors are application/problem+json",
    ),
    (
        "idempotency/replay-same-response",
        "A replay answers what the first request got",
    ),
    (
        "idempotency/concurrent-duplicates",
        "Concurrent duplicates create one payment",
    ),
];

fn result(
    student: &str,
    verdict: Verdict,
    statuses: [Status; 4],
    message: Option<&str>,
) -> SubmissionResult {
    let points = [3u32, 2, 3, 4];
    let earned: u32 = statuses
        .iter()
        .zip(points)
        .filter(|(s, _)| **s == Status::Pass)
        .map(|(_, p)| p)
        .sum();
    let skill = |id: &str, title: &str, range: std::ops::Range<usize>| {
        let possible: u32 = points[range.clone()].iter().sum();
        let got: u32 = range
            .clone()
            .filter(|i| statuses[*i] == Status::Pass)
            .map(|i| points[i])
            .sum();
        SkillScore {
            id: id.into(),
            title: title.into(),
            earned: got,
            possible,
            percent: (f64::from(got) * 1000.0 / f64::from(possible)).round() / 10.0,
            passed: range
                .clone()
                .filter(|i| statuses[*i] == Status::Pass)
                .count() as u32,
            total: range.len() as u32,
        }
    };
    let graded = matches!(verdict, Verdict::Pass | Verdict::Fail);
    SubmissionResult {
        version: RESULT_VERSION,
        student: student.into(),
        source: format!("/course/subs/{student}"),
        key: "0".repeat(64),
        seed: 1000 + student.len() as u64,
        exercises: vec!["api-design".into(), "idempotency".into()],
        runtime: "docker".into(),
        verdict,
        earned: if graded { earned } else { 0 },
        possible: 12,
        percent: if graded {
            (f64::from(earned) * 1000.0 / 12.0).round() / 10.0
        } else {
            0.0
        },
        skills: if graded {
            vec![
                skill("api-design", "API design", 0..2),
                skill("idempotency", "Idempotency", 2..4),
            ]
        } else {
            Vec::new()
        },
        checks: if graded {
            CHECKS
                .iter()
                .zip(statuses)
                .map(|((id, title), status)| CheckVerdict {
                    id: (*id).into(),
                    title: (*title).into(),
                    status,
                })
                .collect()
        } else {
            Vec::new()
        },
        message: message.map(String::from),
        attempts: if verdict == Verdict::Error { 2 } else { 1 },
        duration_ms: 9_000,
        replay: graded.then(|| format!("grader check /course/subs/{student} --seed 1")),
    }
}

/// Six submissions: pass, two fails, a crash, an unusable folder and a grader error.
pub fn results() -> (BatchHeader, Vec<SubmissionResult>) {
    use Status::{Fail, Pass, Skip};
    let header = BatchHeader {
        seed: 2026,
        exercises: vec!["api-design".into(), "idempotency".into()],
        runtime: "docker".into(),
    };
    let results = vec![
        result("ada", Verdict::Pass, [Pass; 4], None),
        result(
            "bo",
            Verdict::Fail,
            [Pass, Pass, Pass, Fail],
            Some("1 of 4 checks failed: idempotency/concurrent-duplicates"),
        ),
        result(
            "cy",
            Verdict::Fail,
            [Fail, Pass, Fail, Fail],
            Some("=HYPERLINK(\"http://evil\") <script>alert(1)</script> \u{202e}gnp.exe"),
        ),
        result(
            "dee",
            Verdict::Fail,
            [Skip; 4],
            Some("your service exited with code 3 before it answered on /healthz"),
        ),
        result(
            "eve",
            Verdict::Unusable,
            [Skip; 4],
            Some("/course/subs/eve/grader.toml:1:1: cannot read grader.toml"),
        ),
        result(
            "fay",
            Verdict::Error,
            [Skip; 4],
            Some("--runtime docker: the Docker daemon did not answer"),
        ),
    ];
    (header, results)
}

/// The class report of [`results`], with the built-in skills' titles; `ada`, `bo` and `cy` have
/// reports.
pub fn class_report() -> ClassReport {
    let catalog = load_catalog(&ExerciseSource::Embedded).expect("the built-in exercises load");
    let (header, results) = results();
    ClassReport::build(&header, &results, &catalog, |s| {
        matches!(s, "ada" | "bo" | "cy")
    })
}
