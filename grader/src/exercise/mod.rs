//! Exercises as data: the skill taxonomy, each exercise's metadata, task statement and checks.
//!
//! Files live in `exercises/` (format: `exercises/AUTHORING.md`). This module only parses and
//! validates them into the types below; it never sends a request. Everything an author can get
//! wrong is reported as a located [`Diagnostic`](crate::diagnostic::Diagnostic), all at once.

pub mod db_probes;
pub mod paginate;
mod parse;
pub mod predicate;
pub mod probes;
pub mod revalidate;
mod source;
pub mod template;
pub mod upstream_probes;

use std::time::Duration;

use regex::Regex;
use serde_json::Value;
use serde_json_path::JsonPath;

use crate::diagnostic::SourceFile;
pub use parse::load_catalog;
pub use predicate::{Predicate, PredicateOp};
pub use probes::ProbeCall;
pub use source::ExerciseSource;

/// All skills and exercises, validated.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub skills: Vec<Skill>,
    pub exercises: Vec<Exercise>,
}

impl Catalog {
    pub fn exercise(&self, id: &str) -> Option<&Exercise> {
        self.exercises.iter().find(|e| e.id == id)
    }

    pub fn skill(&self, id: &str) -> Option<&Skill> {
        self.skills.iter().find(|s| s.id == id)
    }
}

/// A skill area from `exercises/skills.toml`, taken from the article the curriculum follows.
#[derive(Debug, Clone)]
pub struct Skill {
    pub id: String,
    pub title: String,
    /// `core` (graded first) or `next`.
    pub tier: String,
    /// The article's own wording for this skill.
    pub article: String,
}

#[derive(Debug, Clone)]
pub struct Exercise {
    pub id: String,
    pub title: String,
    pub summary: String,
    pub skills: Vec<String>,
    pub difficulty: u8,
    pub prerequisites: Vec<String>,
    /// Numbered `### N. Title` headings of the exercise README.
    pub tasks: Vec<Task>,
    /// Random data generated per check, in file order.
    pub vars: Vec<(String, VarGen)>,
    pub checks: Vec<Check>,
    /// Mock upstreams the service calls (`[upstreams.NAME]`), started by the grader per run.
    pub upstreams: Vec<crate::upstream::UpstreamSpec>,
    /// `[dataset]`: loaded into the grader's PostgreSQL before the service starts.
    pub dataset: Option<crate::dataset::DatasetSpec>,
    pub file: SourceFile,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub number: u32,
    pub title: String,
}

/// How a random value is generated from the run's seeded RNG.
#[derive(Debug, Clone)]
pub enum VarGen {
    /// `SKU-` and six upper-case hex digits.
    Sku,
    /// `count` lower-case words joined by spaces, first letter upper-cased.
    Words { count: usize },
    /// An integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// A random UUID v4 string.
    Uuid,
    /// `word.word<digits>@example.test`
    Email,
    /// A lower-case slug like `amber-otter-42`.
    Slug,
    /// One of the given strings.
    Pick(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Check {
    pub id: String,
    pub title: String,
    pub task: Option<u32>,
    pub skill: String,
    pub points: u32,
    pub why: String,
    pub hint: String,
    pub spec: Vec<String>,
    /// Ids of checks (same exercise) that must pass first; otherwise this one is skipped.
    pub requires: Vec<String>,
    pub timeout: Duration,
    pub body: CheckBody,
}

#[derive(Debug, Clone)]
pub enum CheckBody {
    /// Declarative HTTP steps, run in order; the first failing step fails the check.
    Steps(Vec<Step>),
    /// A built-in probe written in Rust, for what steps cannot say.
    Probe(ProbeCall),
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub request: RequestSpec,
    pub expect: Expect,
    pub captures: Vec<(String, CaptureSpec)>,
}

/// A request whose strings may hold `{{var}}` templates.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: String,
    /// Path (with query) relative to the service, or an absolute URL from a capture.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<BodySpec>,
}

#[derive(Debug, Clone)]
pub enum BodySpec {
    /// Sent as JSON; `Content-Type: application/json` unless the step sets one.
    Json(Value),
    /// Sent byte for byte (after templating).
    Raw(String),
}

#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub status: Option<StatusSpec>,
    pub headers: Vec<(String, Predicate)>,
    pub json: Vec<(JsonQuery, Predicate)>,
    pub body: Option<Predicate>,
}

/// Accepted status codes: exact codes and/or classes like `4xx`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSpec {
    pub codes: Vec<u16>,
    pub classes: Vec<u16>,
}

impl StatusSpec {
    pub fn accepts(&self, status: u16) -> bool {
        self.codes.contains(&status) || self.classes.contains(&(status / 100))
    }

    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.codes.iter().map(|c| c.to_string()).collect();
        parts.extend(self.classes.iter().map(|c| format!("{c}xx")));
        match parts.len() {
            0 => "any status".into(),
            1 => parts.remove(0),
            _ => {
                let last = parts.pop().unwrap_or_default();
                format!("{} or {}", parts.join(", "), last)
            }
        }
    }
}

/// A compiled JSONPath with its source text for messages.
#[derive(Debug, Clone)]
pub struct JsonQuery {
    pub text: String,
    pub path: JsonPath,
}

#[derive(Debug, Clone)]
pub enum CaptureSpec {
    Header(String),
    Json(JsonQuery),
}

/// A regex with its source text for messages.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    pub regex: Regex,
}
