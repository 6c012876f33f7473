//! The class report: every submission's verdict and score, the score distribution per skill,
//! and the checks most often failed. Built from the kept `result.json` files only, so a merge of
//! shards gives the same report as one unsharded batch over the same results.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::result::{SubmissionResult, Verdict};
use crate::exercise::Catalog;
use crate::outcome::Status;

/// Version of `class.json`.
pub const CLASS_REPORT_VERSION: u32 = 1;

/// Ten buckets of ten points: `[0,10)`, ..., `[80,90)`, `[90,100]`.
pub const BUCKETS: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClassReport {
    pub version: u32,
    pub grader_version: String,
    /// The batch seed: each submission's seed is derived from it and the student id.
    pub seed: u64,
    pub exercises: Vec<String>,
    pub runtime: String,
    pub counts: Counts,
    /// Overall percent of the scored submissions (pass, fail and unusable; an error has no score).
    pub score: Distribution,
    /// One per skill of the selected exercises, in taxonomy order.
    pub skills: Vec<SkillDistribution>,
    /// Every check, the most often failed first (then by id).
    pub checks: Vec<CheckStats>,
    /// One row per submission, by student id.
    pub submissions: Vec<SubmissionRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Counts {
    pub submissions: u32,
    pub pass: u32,
    pub fail: u32,
    pub error: u32,
    pub unusable: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Distribution {
    /// Submissions counted.
    pub scored: u32,
    pub mean: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Submissions per ten-point bucket, `[0,10)` first, `[90,100]` last.
    pub histogram: [u32; BUCKETS],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SkillDistribution {
    pub id: String,
    pub title: String,
    pub distribution: Distribution,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckStats {
    pub id: String,
    pub title: String,
    /// Submissions where it ran and failed.
    pub failed: u32,
    /// Submissions where it was skipped (a check it needs failed, or the service died).
    pub skipped: u32,
    pub passed: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubmissionRow {
    pub student: String,
    pub verdict: Verdict,
    pub percent: f64,
    pub earned: u32,
    pub possible: u32,
    /// Percent per skill id (0 for an unusable submission; absent for an error).
    pub skills: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Where its run's report page is, relative to the class report (`report.json` beside it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

/// What the class was graded with; results of another batch are refused by `merge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchHeader {
    pub seed: u64,
    pub exercises: Vec<String>,
    pub runtime: String,
}

impl ClassReport {
    /// `results` in any order; `has_report` says whether a student's report page was kept.
    pub fn build(
        header: &BatchHeader,
        results: &[SubmissionResult],
        catalog: &Catalog,
        has_report: impl Fn(&str) -> bool,
    ) -> ClassReport {
        let mut results: Vec<&SubmissionResult> = results.iter().collect();
        results.sort_by(|a, b| a.student.cmp(&b.student));
        let mut counts = Counts::default();
        for r in &results {
            counts.submissions += 1;
            match r.verdict {
                Verdict::Pass => counts.pass += 1,
                Verdict::Fail => counts.fail += 1,
                Verdict::Error => counts.error += 1,
                Verdict::Unusable => counts.unusable += 1,
            }
        }
        // The skills of the selected exercises, in taxonomy order.
        let skill_ids: Vec<&str> = catalog
            .skills
            .iter()
            .filter(|s| {
                header.exercises.iter().any(|e| {
                    catalog
                        .exercise(e)
                        .is_some_and(|ex| ex.checks.iter().any(|c| c.skill == s.id))
                })
            })
            .map(|s| s.id.as_str())
            .collect();
        let skill_percent = |r: &SubmissionResult, id: &str| -> Option<f64> {
            match r.verdict {
                Verdict::Error => None,
                Verdict::Unusable => Some(0.0),
                _ => Some(
                    r.skills
                        .iter()
                        .find(|s| s.id == id)
                        .map_or(0.0, |s| s.percent),
                ),
            }
        };
        let scored: Vec<&&SubmissionResult> =
            results.iter().filter(|r| r.verdict.scored()).collect();
        let score = Distribution::of(scored.iter().map(|r| r.percent).collect());
        let skills = skill_ids
            .iter()
            .map(|id| SkillDistribution {
                id: id.to_string(),
                title: catalog
                    .skill(id)
                    .map_or_else(|| id.to_string(), |s| s.title.clone()),
                distribution: Distribution::of(
                    results
                        .iter()
                        .filter_map(|r| skill_percent(r, id))
                        .collect(),
                ),
            })
            .collect();
        let mut checks: BTreeMap<String, CheckStats> = BTreeMap::new();
        for r in &results {
            for c in &r.checks {
                let entry = checks.entry(c.id.clone()).or_insert_with(|| CheckStats {
                    id: c.id.clone(),
                    title: c.title.clone(),
                    failed: 0,
                    skipped: 0,
                    passed: 0,
                });
                match c.status {
                    Status::Pass => entry.passed += 1,
                    Status::Fail => entry.failed += 1,
                    Status::Skip => entry.skipped += 1,
                    Status::Error => {}
                }
            }
        }
        let mut checks: Vec<CheckStats> = checks.into_values().collect();
        checks.sort_by(|a, b| b.failed.cmp(&a.failed).then_with(|| a.id.cmp(&b.id)));
        let submissions = results
            .iter()
            .map(|r| SubmissionRow {
                student: r.student.clone(),
                verdict: r.verdict,
                percent: r.percent,
                earned: r.earned,
                possible: r.possible,
                skills: skill_ids
                    .iter()
                    .filter_map(|id| skill_percent(r, id).map(|p| (id.to_string(), p)))
                    .collect(),
                message: r.message.clone(),
                report: has_report(&r.student)
                    .then(|| format!("submissions/{}/report.html", r.student)),
            })
            .collect();
        ClassReport {
            version: CLASS_REPORT_VERSION,
            grader_version: env!("CARGO_PKG_VERSION").to_string(),
            seed: header.seed,
            exercises: header.exercises.clone(),
            runtime: header.runtime.clone(),
            counts,
            score,
            skills,
            checks,
            submissions,
        }
    }

    /// The JSON Schema of `class.json` and of `result.json` (one document, the second under
    /// `definitions`): the content of `docs/class-report.schema.json`.
    pub fn schema() -> String {
        let mut schema = schemars::schema_for!(ClassReport);
        let result = schemars::schema_for!(super::result::SubmissionResult);
        schema.definitions.extend(result.definitions);
        schema.definitions.insert(
            "SubmissionResult".into(),
            schemars::schema::Schema::Object(result.schema),
        );
        crate::spec::schema::pretty(&schema)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a class report serialises") + "\n"
    }

    /// One row per submission: `student,verdict,percent,earned,possible,<skill ids…>,message`.
    pub fn to_csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let mut header = vec!["student", "verdict", "percent", "earned", "possible"];
        header.extend(self.skills.iter().map(|s| s.id.as_str()));
        header.push("message");
        let _ = writer.write_record(&header);
        for row in &self.submissions {
            // An error has no score yet: its cells stay empty rather than read as 0.
            let scored = row.verdict.scored();
            let cell = |text: String| if scored { text } else { String::new() };
            let mut record = vec![
                spreadsheet_safe(&row.student),
                row.verdict.as_str().to_string(),
                cell(format!("{:.1}", row.percent)),
                cell(row.earned.to_string()),
                row.possible.to_string(),
            ];
            for skill in &self.skills {
                record.push(
                    row.skills
                        .get(&skill.id)
                        .map(|p| format!("{p:.1}"))
                        .unwrap_or_default(),
                );
            }
            record.push(spreadsheet_safe(row.message.as_deref().unwrap_or("")));
            let _ = writer.write_record(&record);
        }
        String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
    }
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading `'`:
/// messages quote what services printed (OWASP's CSV injection advice).
fn spreadsheet_safe(text: &str) -> String {
    let text = crate::report::sanitize(text);
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    }
}

impl Distribution {
    pub fn of(mut values: Vec<f64>) -> Distribution {
        if values.is_empty() {
            return Distribution::default();
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        let mut histogram = [0; BUCKETS];
        for v in &values {
            let bucket = ((v / 10.0).floor().max(0.0) as usize).min(BUCKETS - 1);
            histogram[bucket] += 1;
        }
        Distribution {
            scored: n as u32,
            mean: round1(values.iter().sum::<f64>() / n as f64),
            median: round1(median),
            min: values[0],
            max: values[n - 1],
            histogram,
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_buckets_the_edges_and_takes_the_middle() {
        let d = Distribution::of(vec![100.0, 0.0, 9.9, 10.0, 55.5, 90.0]);
        assert_eq!(d.histogram, [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(d.median, 32.8);
        assert_eq!(d.mean, 44.2);
        assert_eq!((d.min, d.max, d.scored), (0.0, 100.0, 6));
        assert_eq!(Distribution::of(vec![]), Distribution::default());
    }

    #[test]
    fn committed_schema_is_up_to_date() {
        crate::spec::schema::assert_committed(
            "class-report.schema.json",
            &ClassReport::schema(),
            "the class report's types (batch/class.rs, batch/result.rs).\n\
             Regenerate it with:  UPDATE_SCHEMA=1 cargo test -p grader batch::\n\
             and review the diff: a breaking change needs a version bump and a note in \
             docs/REPORT.md.",
        );
    }

    #[test]
    fn spreadsheet_formulas_are_defused() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("-1"), "'-1");
        assert_eq!(spreadsheet_safe("fine"), "fine");
    }
}
