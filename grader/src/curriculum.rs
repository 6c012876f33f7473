//! Where a learner stands in the curriculum: `.grader/progress.json` (each check's latest verdict,
//! kept by every `grader check` and `grader watch` run), `grader status`, the next suggested
//! exercise, and the one-line nudge after a check.
//!
//! The record keeps verdicts, not scores: a run with `--only` updates the checks it ran and leaves
//! the others as they were, and a check the grader could not run (error, skip) keeps its last
//! verdict, because neither says anything about the learner's service. Scores are computed from
//! the record and the catalog when shown, so a new check in an exercise shows as not yet passed.
//!
//! Curriculum order: by difficulty, then catalog order; an exercise is suggested once every
//! prerequisite passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exercise::{Catalog, Exercise};
use crate::outcome::{RunReport, Status};

/// The record's file, under the service folder.
pub const PROGRESS_FILE: &str = ".grader/progress.json";
const VERSION: u32 = 1;

/// `.grader/progress.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressRecord {
    pub version: u32,
    /// Exercise id → what is known of it.
    pub exercises: BTreeMap<String, ExerciseRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExerciseRecord {
    /// When a run last graded one of its checks (RFC 3339, the report's `started_at`).
    pub last_run: String,
    /// That run's seed.
    pub seed: u64,
    /// Check id (without the exercise) → its latest verdict, `pass` or `fail`.
    pub checks: BTreeMap<String, Status>,
}

/// How far an exercise is, from the record and the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    NotStarted,
    /// Some checks graded, not all of them passing.
    InProgress,
    /// Every check of the exercise passes.
    Passed,
}

impl ProgressRecord {
    pub fn path(service_dir: &Path) -> PathBuf {
        service_dir.join(PROGRESS_FILE)
    }

    /// The record in `service_dir`, empty when there is none yet. A file that cannot be read as
    /// a record is an error naming it (it is the learner's file; it is never overwritten
    /// silently).
    pub fn load(service_dir: &Path) -> Result<ProgressRecord, String> {
        let path = Self::path(service_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ProgressRecord {
                    version: VERSION,
                    ..Default::default()
                })
            }
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}:{}:{}: not a progress record ({e}); delete it to start the record afresh",
                path.display(),
                e.line(),
                e.column()
            )
        })
    }

    /// Writes the record, replacing the file (never through a link the service planted).
    pub fn save(&self, service_dir: &Path) -> Result<(), String> {
        let path = Self::path(service_dir);
        let mut text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        text.push('\n');
        // `.grader` is in the service's folder, which the service can write: never through a
        // link planted there.
        if let Some(dir) = path.parent() {
            crate::artifacts::refuse_links(dir, 0)
                .and_then(|()| std::fs::create_dir_all(dir))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        crate::artifacts::write_replacing(&path, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Takes in a run's verdicts: pass and fail only (see the module docs).
    pub fn record(&mut self, report: &RunReport) {
        self.version = VERSION;
        for check in &report.checks {
            if !matches!(check.status, Status::Pass | Status::Fail) {
                continue;
            }
            let name = check
                .id
                .strip_prefix(&format!("{}/", check.exercise))
                .unwrap_or(&check.id);
            let entry = self.exercises.entry(check.exercise.clone()).or_default();
            entry.last_run = report.started_at.clone();
            entry.seed = report.seed;
            entry.checks.insert(name.to_string(), check.status);
        }
    }

    /// Checks of `exercise` whose latest verdict is a pass (only checks the catalog still has).
    pub fn passing<'e>(&self, exercise: &'e Exercise) -> Vec<&'e crate::exercise::Check> {
        let record = self.exercises.get(&exercise.id);
        exercise
            .checks
            .iter()
            .filter(|c| record.and_then(|r| r.checks.get(&c.id)).copied() == Some(Status::Pass))
            .collect()
    }

    pub fn standing(&self, exercise: &Exercise) -> Standing {
        let graded = self
            .exercises
            .get(&exercise.id)
            .is_some_and(|r| exercise.checks.iter().any(|c| r.checks.contains_key(&c.id)));
        if !graded {
            Standing::NotStarted
        } else if self.passing(exercise).len() == exercise.checks.len() {
            Standing::Passed
        } else {
            Standing::InProgress
        }
    }

    /// The first exercise of the curriculum not yet passed whose prerequisites all pass.
    pub fn next<'c>(&self, catalog: &'c Catalog) -> Option<&'c Exercise> {
        curriculum_order(catalog).into_iter().find(|e| {
            self.standing(e) != Standing::Passed
                && e.prerequisites.iter().all(|p| {
                    catalog
                        .exercise(p)
                        .is_none_or(|pre| self.standing(pre) == Standing::Passed)
                })
        })
    }
}

/// Exercises by difficulty, then in catalog order.
pub fn curriculum_order(catalog: &Catalog) -> Vec<&Exercise> {
    let mut order: Vec<&Exercise> = catalog.exercises.iter().collect();
    order.sort_by_key(|e| e.difficulty);
    order
}

/// `grader status`: every exercise with its standing and score, a bar per skill over the whole
/// curriculum, and the next step. `where_from` names the record's file.
pub fn render_status(record: &ProgressRecord, catalog: &Catalog, where_from: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!("progress in {where_from}\n\n"));
    let order = curriculum_order(catalog);
    let id_width = order.iter().map(|e| e.id.len()).max().unwrap_or(0);
    for exercise in &order {
        let passing = record.passing(exercise);
        let earned: u32 = passing.iter().map(|c| c.points).sum();
        let possible: u32 = exercise.checks.iter().map(|c| c.points).sum();
        let (mark, state) = match record.standing(exercise) {
            Standing::Passed => ("✓", "passed".to_string()),
            Standing::InProgress => (
                "◐",
                format!("{}/{} checks pass", passing.len(), exercise.checks.len()),
            ),
            Standing::NotStarted => ("·", "not started".to_string()),
        };
        let points = format!("{earned}/{possible}");
        let mut line = format!(
            "  {mark} {:<id_width$}  difficulty {:>2}/10  {points:>7} pts  {state}",
            exercise.id, exercise.difficulty
        );
        let missing: Vec<&str> = exercise
            .prerequisites
            .iter()
            .filter(|p| {
                catalog
                    .exercise(p)
                    .is_some_and(|pre| record.standing(pre) != Standing::Passed)
            })
            .map(String::as_str)
            .collect();
        if record.standing(exercise) == Standing::NotStarted && !missing.is_empty() {
            line.push_str(&format!(" (after {})", missing.join(", ")));
        }
        if let Some(r) = record.exercises.get(&exercise.id) {
            if record.standing(exercise) != Standing::NotStarted {
                line.push_str(&format!("  · last run {}", r.last_run));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str("\nskills (every exercise of the curriculum)\n");
    let skill_width = catalog.skills.iter().map(|s| s.id.len()).max().unwrap_or(0);
    for skill in &catalog.skills {
        let (mut earned, mut possible) = (0u32, 0u32);
        for exercise in &catalog.exercises {
            let passing = record.passing(exercise);
            for check in exercise.checks.iter().filter(|c| c.skill == skill.id) {
                possible += check.points;
                if passing.iter().any(|p| p.id == check.id) {
                    earned += check.points;
                }
            }
        }
        if possible == 0 {
            continue;
        }
        let percent = 100.0 * earned as f64 / possible as f64;
        let filled = ((percent / 100.0) * 20.0).round() as usize;
        out.push_str(&format!(
            "  {:<skill_width$}  {}{}  {:>5.1}%  {earned}/{possible} pts\n",
            skill.id,
            "█".repeat(filled),
            "░".repeat(20 - filled),
            percent
        ));
    }
    out.push('\n');
    out.push_str(&next_step(record, catalog));
    out.push('\n');
    out
}

/// One line on what to do next: the failing check to fix first in an exercise under way, or the
/// next exercise to start.
pub fn next_step(record: &ProgressRecord, catalog: &Catalog) -> String {
    let Some(next) = record.next(catalog) else {
        return "next: every exercise passes; nothing is left in the curriculum".to_string();
    };
    match record.standing(next) {
        Standing::InProgress => {
            let first_failing = next
                .checks
                .iter()
                .find(|c| {
                    record.exercises.get(&next.id).and_then(|r| r.checks.get(&c.id))
                        != Some(&Status::Pass)
                })
                .map(|c| c.id.as_str())
                .unwrap_or("");
            let left = next.checks.len() - record.passing(next).len();
            format!(
                "next: {} has {left} check{} to go; start with `grader explain {}/{first_failing}` (stuck? `grader hint {}/{first_failing}`)",
                next.id,
                if left == 1 { "" } else { "s" },
                next.id,
                next.id
            )
        }
        _ => format!(
            "next: start {} ({}); read `grader explain {}` or its README, add it to grader.toml, then `grader check`",
            next.id, next.title, next.id
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exercise::{load_catalog, ExerciseSource};
    use crate::outcome::CheckResult;

    fn verdict(exercise: &str, check: &str, status: Status) -> CheckResult {
        CheckResult {
            id: format!("{exercise}/{check}"),
            exercise: exercise.into(),
            title: String::new(),
            skill: String::new(),
            task: None,
            points: 1,
            earned: 0,
            status,
            duration_ms: 0,
            message: None,
            measurements: vec![],
            detail: None,
        }
    }

    fn report(checks: Vec<CheckResult>, started_at: &str) -> RunReport {
        let mut report = crate::report::fixtures::all_pass();
        report.checks = checks;
        report.started_at = started_at.into();
        report.seed = 7;
        report
    }

    fn catalog() -> Catalog {
        load_catalog(&ExerciseSource::Embedded).unwrap()
    }

    /// Every check of `exercise` passing, in one run.
    fn all_passing(catalog: &Catalog, exercise: &str) -> Vec<CheckResult> {
        let ex = catalog.exercise(exercise).unwrap();
        ex.checks
            .iter()
            .map(|c| verdict(exercise, &c.id, Status::Pass))
            .collect()
    }

    #[test]
    fn errors_and_skips_keep_the_last_verdict_and_only_runs_merge() {
        let mut record = ProgressRecord::default();
        record.record(&report(
            vec![
                verdict("api-design", "create-returns-201", Status::Fail),
                verdict("api-design", "head-no-body", Status::Pass),
            ],
            "2026-11-30T10:00:00Z",
        ));
        record.record(&report(
            vec![
                verdict("api-design", "create-returns-201", Status::Pass),
                verdict("api-design", "head-no-body", Status::Error),
                verdict("api-design", "location-resolves", Status::Skip),
            ],
            "2026-11-30T11:00:00Z",
        ));
        let r = &record.exercises["api-design"];
        assert_eq!(r.checks["create-returns-201"], Status::Pass);
        assert_eq!(
            r.checks["head-no-body"],
            Status::Pass,
            "an error is no verdict"
        );
        assert!(
            !r.checks.contains_key("location-resolves"),
            "a skip is none"
        );
        assert_eq!(r.last_run, "2026-11-30T11:00:00Z");
        assert_eq!(r.seed, 7);
    }

    #[test]
    fn the_next_exercise_waits_for_its_prerequisites() {
        let catalog = catalog();
        let order = curriculum_order(&catalog);
        let first = order[0];
        let mut record = ProgressRecord::default();
        assert_eq!(record.next(&catalog).map(|e| &e.id), Some(&first.id));
        record.record(&report(all_passing(&catalog, &first.id), "t"));
        assert_eq!(record.standing(first), Standing::Passed);
        let next = record.next(&catalog).unwrap();
        assert_ne!(next.id, first.id);
        assert!(next
            .prerequisites
            .iter()
            .all(|p| record.standing(catalog.exercise(p).unwrap()) == Standing::Passed));
        // An exercise with an unmet prerequisite is never suggested.
        for e in &catalog.exercises {
            if e.prerequisites.iter().any(|p| p != &first.id) {
                assert_ne!(next.id, e.id);
            }
        }
    }

    #[test]
    fn a_malformed_record_is_located_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".grader")).unwrap();
        let path = ProgressRecord::path(dir.path());
        std::fs::write(&path, "{\n  \"version\": 1,\n  \"exercises\": [\n").unwrap();
        let e = ProgressRecord::load(dir.path()).unwrap_err();
        assert!(e.contains("progress.json:"), "{e}");
        assert!(e.contains("delete it"), "{e}");
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("exercises"));
        // A missing one is an empty record; a saved one loads back.
        let empty = tempfile::tempdir().unwrap();
        let mut record = ProgressRecord::load(empty.path()).unwrap();
        assert!(record.exercises.is_empty());
        record.record(&report(vec![verdict("api-design", "x", Status::Pass)], "t"));
        record.save(empty.path()).unwrap();
        assert_eq!(ProgressRecord::load(empty.path()).unwrap(), record);
    }

    #[test]
    fn status_snapshots() {
        let catalog = catalog();
        let empty = ProgressRecord::default();
        insta::assert_snapshot!(
            "status_nothing_yet",
            render_status(&empty, &catalog, ".grader/progress.json")
        );
        let mut record = ProgressRecord::default();
        let first = curriculum_order(&catalog)[0].id.clone();
        record.record(&report(
            all_passing(&catalog, &first),
            "2026-11-30T10:00:00Z",
        ));
        let second = record.next(&catalog).unwrap();
        let mut partial = all_passing(&catalog, &second.id);
        partial[1].status = Status::Fail;
        partial[3].status = Status::Fail;
        let second = second.id.clone();
        record.record(&report(partial, "2026-11-30T11:00:00Z"));
        insta::assert_snapshot!(
            "status_under_way",
            render_status(&record, &catalog, ".grader/progress.json")
        );
        assert!(next_step(&record, &catalog).contains(&second));
        let mut done = ProgressRecord::default();
        for e in &catalog.exercises {
            done.record(&report(
                all_passing(&catalog, &e.id),
                "2026-11-30T12:00:00Z",
            ));
        }
        insta::assert_snapshot!(
            "status_all_passed",
            render_status(&done, &catalog, ".grader/progress.json")
        );
    }
}
