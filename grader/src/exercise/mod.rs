//! Exercises as data: the skill taxonomy, each exercise's metadata, task statement and checks.
//!
//! Files live in `exercises/` (format: `exercises/AUTHORING.md`). This module only parses and
//! validates them into the types below; it never sends a request. Everything an author can get
//! wrong is reported as a located [`Diagnostic`](crate::diagnostic::Diagnostic), all at once.

pub mod coverage;
pub mod hints;
mod parse;
pub mod schema;
mod source;

use std::time::Duration;

use crate::diagnostic::SourceFile;
pub use crate::probes::ProbeCall;
pub use crate::spec::{
    predicate, template, BodySpec, CaptureSpec, Expect, JsonQuery, Pattern, Predicate, PredicateOp,
    RequestSpec, SqlExpect, SqlSpec, StatusSpec, Step, StepAction, VarGen,
};
pub use parse::{is_kebab, load_catalog};
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

    /// The check named `exercise/check`, or `check` alone when its id is unique.
    pub fn find_check(&self, id: &str) -> Option<(&Exercise, &Check)> {
        self.exercises.iter().find_map(|ex| {
            ex.checks
                .iter()
                .find(|c| id == format!("{}/{}", ex.id, c.id) || id == c.id)
                .map(|c| (ex, c))
        })
    }

    /// Every check as `exercise/check`, for did-you-mean suggestions.
    pub fn check_ids(&self) -> Vec<String> {
        self.exercises
            .iter()
            .flat_map(|ex| ex.checks.iter().map(move |c| format!("{}/{}", ex.id, c.id)))
            .collect()
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
    /// `[broker]`: the run starts a RabbitMQ the service reaches through a link the grader can
    /// cut, and the checks read and publish on it.
    pub broker: Option<BrokerSpec>,
    /// What the service speaks, and so how the runtime knows it is ready.
    pub protocol: Protocol,
    pub file: SourceFile,
    /// The task statement (`README.md`), when there is one.
    pub readme: Option<SourceFile>,
    /// The README's requirement ids (`[pag-5.2]`), in order.
    pub requirements: Vec<coverage::Requirement>,
    /// Requirements that could be checked but no check covers yet (`untested` in the file).
    pub untested: Vec<coverage::IdRef>,
}

pub use crate::manifest::Protocol;

/// The variable a service finds the broker in unless the exercise names another.
pub const DEFAULT_BROKER_ENV: &str = "AMQP_URL";

/// An exercise's `[broker]` table.
#[derive(Debug, Clone)]
pub struct BrokerSpec {
    /// The variable the service finds the broker's URL in (the learner's `grader.toml` may
    /// rename it with `[rabbitmq] env`).
    pub env: String,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub number: u32,
    pub title: String,
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
    /// Staged hints (`hints = [...]`), from a nudge to the mechanism; `grader hint` prints one
    /// at a time and `grader lint` checks them (see [`hints`]).
    pub hints: Vec<HintStage>,
    pub spec: Vec<String>,
    /// Ids of checks (same exercise) that must pass first; otherwise this one is skipped.
    pub requires: Vec<String>,
    /// README requirement ids (`[pag-5.2]`) this check can fail; `grader lint` checks coverage.
    pub covers: Vec<coverage::IdRef>,
    /// Where the check's id is written in exercise.toml, for located errors.
    pub span: std::ops::Range<usize>,
    pub timeout: Duration,
    pub body: CheckBody,
    /// `[check.upstream]` on a check with steps: a mock upstream route's latency or fault for
    /// this check, and the calls it must have received by the end (as a probe's
    /// `params.upstream`).
    pub upstream: Option<crate::probes::request::UpstreamParams>,
    /// A step's `upstream_fault`: from the step at this index on, `upstream`'s route has this
    /// fault (one step per kind of failure a README names).
    pub upstream_faults: Vec<(usize, crate::upstream::Fault)>,
    /// The `gen = "jwt"` variables the check uses (names them in a template): the only ones
    /// minted when it runs, so a `rotate = true` token rotates the issuer only for its checks.
    pub tokens: Vec<String>,
}

/// One stage of a check's `hints`, with where it is written in exercise.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct HintStage {
    pub text: String,
    pub span: std::ops::Range<usize>,
}

#[derive(Debug, Clone)]
pub enum CheckBody {
    /// Declarative HTTP steps, run in order; the first failing step fails the check.
    Steps(Vec<Step>),
    /// A built-in probe written in Rust, for what steps cannot say.
    Probe(ProbeCall),
}
