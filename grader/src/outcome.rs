//! The one result model of a grading run.
//!
//! The engine and scoring produce a [`RunReport`]; every report writer (human, JSON, JUnit,
//! GitHub summary) only reads it. Its serialised form is the versioned JSON contract documented
//! in `docs/REPORT.md` (schema: `docs/report.schema.json`), so renaming a field here is a breaking
//! change: bump [`REPORT_VERSION`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Version of the JSON report format. Bump on any breaking change to the serialised shape.
pub const REPORT_VERSION: u32 = 1;

/// Verdict of one check. These are named states, never free-form strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The service behaved as the check requires.
    Pass,
    /// The service misbehaved: the learner has something to fix.
    Fail,
    /// The grader or its infrastructure could not run the check. Never the learner's fault.
    Error,
    /// The check did not run (a check it requires did not pass, or the service never started).
    Skip,
}

/// Verdict of the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every check passed.
    Pass,
    /// At least one check failed or was skipped because of the service, and none errored.
    Fail,
    /// The grader could not do its job (infrastructure, grader bug); results are incomplete.
    Error,
}

/// The whole run, as every report sees it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunReport {
    /// Report format version ([`REPORT_VERSION`]).
    pub version: u32,
    /// Version of the grader that produced the report.
    pub grader_version: String,
    /// `pass` (every check passed), `fail` (the service has something to fix) or `error` (the
    /// grader could not complete the run; never the service's fault).
    pub status: RunStatus,
    /// Seed of the run's random data; `--seed <seed>` replays it.
    pub seed: u64,
    /// The command that replays this run with the same data.
    pub replay: String,
    /// RFC 3339 time the run started.
    pub started_at: String,
    /// Wall time of the whole run in milliseconds.
    pub duration_ms: u64,
    /// Where the service ran.
    pub runtime: RuntimeInfo,
    /// Where the wall time went.
    pub timings: Timings,
    /// Points over every check of the selected exercises.
    pub score: Score,
    /// One entry per skill area touched by the selected exercises, in taxonomy order.
    pub skills: Vec<SkillScore>,
    /// One entry per exercise graded.
    pub exercises: Vec<ExerciseScore>,
    /// Every check of the selected exercises, in exercise-file order.
    pub checks: Vec<CheckResult>,
    /// Set when the run as a whole went wrong (service did not start, infrastructure failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<RunProblem>,
}

/// Which runtime ran the service, and where it answered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RuntimeInfo {
    /// `local`, `docker` or `external`.
    pub kind: String,
    /// Base URL the checks were sent to (empty when the service never started).
    pub service_url: String,
    /// Folder of the service under test.
    pub service_dir: String,
    /// Directory holding this run's artifacts (service log, report); empty when none were kept.
    pub artifacts_dir: String,
}

/// Wall-time breakdown, in milliseconds. A phase that did not happen is 0.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Timings {
    /// Running the manifest's build command.
    pub build_ms: u64,
    /// initdb plus server start-up until a connection succeeds.
    pub postgres_ms: u64,
    /// Loading the exercises' schema and data sets into PostgreSQL.
    #[serde(default)]
    pub data_setup_ms: u64,
    /// redis-server start-up until PING answers.
    pub redis_ms: u64,
    /// The run's RabbitMQ (exercises with a broker), start-up until a login succeeds; it overlaps
    /// PostgreSQL, Redis and the build.
    #[serde(default)]
    pub broker_ms: u64,
    /// Starting the service until its health path answered 2xx.
    pub service_start_ms: u64,
    /// Running every check.
    pub checks_ms: u64,
    /// Stopping the service and dependencies, removing temp dirs.
    pub teardown_ms: u64,
}

/// Points earned out of points possible.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Score {
    /// Points of the checks that passed.
    pub earned: u32,
    /// Points of every check, whatever its status.
    pub possible: u32,
    /// `earned / possible * 100`, rounded to one decimal; 0 when nothing was possible.
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SkillScore {
    /// Skill id from `exercises/skills.toml`, e.g. `api-design`.
    pub id: String,
    /// Display title from the taxonomy.
    pub title: String,
    /// Points earned in this skill.
    pub earned: u32,
    /// Points possible in this skill.
    pub possible: u32,
    /// `earned / possible * 100`, one decimal.
    pub percent: f64,
    /// Checks of this skill that passed.
    pub passed: u32,
    /// Checks of this skill that were selected.
    pub total: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExerciseScore {
    /// Exercise id (its folder in `exercises/`).
    pub id: String,
    pub title: String,
    /// Points earned in this exercise.
    pub earned: u32,
    /// Points possible in this exercise.
    pub possible: u32,
    /// `earned / possible * 100`, one decimal.
    pub percent: f64,
    /// Checks that passed.
    pub passed: u32,
    /// Checks that were selected.
    pub total: u32,
}

/// The result of one check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CheckResult {
    /// Stable id: `<exercise>/<check>`, e.g. `api-design/create-returns-201`.
    pub id: String,
    pub exercise: String,
    pub title: String,
    pub skill: String,
    /// Number of the task in the exercise README this check grades.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<u32>,
    pub points: u32,
    pub earned: u32,
    pub status: Status,
    pub duration_ms: u64,
    /// One line saying what went wrong; set for fail, error and skip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Figures a passing check measured, e.g. "23.0 shared buffers per request (budget 40)":
    /// how far the service is from a budget. Absent when the check measures nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<String>,
    /// Teaching detail for fail and error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<FailureDetail>,
}

/// Everything a learner needs to understand and reproduce a failure.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct FailureDetail {
    /// What the check expected, in words.
    pub expected: String,
    /// What came back instead.
    pub actual: String,
    /// One sentence on why it matters (from the exercise file).
    pub why: String,
    /// A nudge, never the answer (from the exercise file).
    pub hint: String,
    /// Specification references, e.g. `RFC 9110 §15.3.2`.
    pub spec: Vec<String>,
    /// Extra evidence lines (ids seen twice, leaked stack-trace lines, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    /// HTTP exchanges of the check up to and including the one that failed.
    pub exchanges: Vec<Exchange>,
    /// Last lines of the service's log when the service crashed or hung.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_log_tail: Vec<String>,
}

/// One request the grader sent and what came back.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Exchange {
    /// Name of the step, e.g. `create a product`.
    pub step: String,
    pub request: RecordedRequest,
    /// The request as a runnable curl command.
    pub curl: String,
    /// `None` when no response arrived (see `transport_error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<RecordedResponse>,
    /// Why no (complete) response arrived: timeout, connection refused, body cut short, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RecordedRequest {
    pub method: String,
    pub url: String,
    /// Header name/value pairs in the order sent.
    pub headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The bearer token of the `Authorization` header, decoded, when it is a JWS (what the
    /// token says, for a learner who cannot read base64url at a glance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<DecodedToken>,
}

/// A compact JWS (`header.claims.signature`) decoded. Never a key: only what the token carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DecodedToken {
    /// The JOSE header: `alg`, `kid`, `typ`.
    pub header: serde_json::Value,
    /// The claims: `iss`, `sub`, `aud`, `exp`, ... (a string when the payload is not JSON).
    pub claims: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RecordedResponse {
    pub status: u16,
    /// Header name/value pairs as received (names lower-cased).
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8), cut to a readable length.
    pub body: String,
    /// Number of body bytes the grader read.
    pub body_bytes: u64,
    /// True when the body was cut: longer than the grader reads or shows.
    pub body_truncated: bool,
}

/// Why a whole run went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunProblem {
    pub kind: ProblemKind,
    /// What happened, in one or two sentences.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Last lines of the relevant log (service, build or database).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The service's build command failed (learner's fault: status fail).
    ServiceBuild,
    /// The service exited or never answered its health path (learner's fault: status fail).
    ServiceStart,
    /// PostgreSQL, Redis, a mock upstream or Docker could not be provided (status error).
    Infrastructure,
    /// The run was interrupted (Ctrl-C, SIGTERM).
    Interrupted,
    /// The checks took longer than `--timeout` allows, all together: the service was stopped
    /// (its fault: status fail; every wait of the grader's own is bounded far below).
    TimedOut,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Error => "error",
            Status::Skip => "skip",
        }
    }
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pass => "pass",
            RunStatus::Fail => "fail",
            RunStatus::Error => "error",
        }
    }
}
