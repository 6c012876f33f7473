//! The exercise engine: runs checks (declarative steps or built-in probes) against a started
//! service and turns each into a [`CheckResult`]. It never starts processes (the runtime does) and
//! never computes scores (scoring does).

pub mod assert;
pub mod http;
pub mod probes;
pub mod random;
mod step;

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures_util::FutureExt;
use rand_chacha::ChaCha8Rng;
use url::Url;

use crate::exercise::template::Scope;
use crate::exercise::{Check, CheckBody, Exercise};
use crate::outcome::{CheckResult, Exchange, FailureDetail, Status};
use crate::runtime::{RunningService, ServiceState};
use http::{HttpClient, OutgoingRequest, Response};

/// Lines of service log attached to a failure caused by a crash or hang.
const LOG_TAIL_LINES: usize = 30;

/// What the engine tells the CLI while it works (progress lines, spinners).
pub trait EngineEvents: Send + Sync {
    fn check_started(&self, id: &str, title: &str);
    fn check_finished(&self, result: &CheckResult);
}

/// Ignores events (tests, machine-readable runs).
pub struct NoEvents;
impl EngineEvents for NoEvents {
    fn check_started(&self, _: &str, _: &str) {}
    fn check_finished(&self, _: &CheckResult) {}
}

/// Which checks to run, and with what data.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub seed: u64,
    /// Check ids to run (`exercise/check` or just `check`); empty means all.
    pub only: Vec<String>,
    /// The run's mock upstreams (empty when the exercises declare none).
    pub upstreams: crate::upstream::Upstreams,
}

impl RunOptions {
    pub fn selects(&self, exercise: &str, check: &str) -> bool {
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|o| o == check || *o == format!("{exercise}/{check}") || o == exercise)
    }
}

/// Why a check did not pass.
#[derive(Debug)]
pub enum Failure {
    /// The service misbehaved.
    Fail(FailInfo),
    /// The grader (or the exercise file) could not run the check.
    Error(String),
}

#[derive(Debug, Default)]
pub struct FailInfo {
    /// One line, e.g. `create a product: expected status 201, got 200`.
    pub message: String,
    pub expected: String,
    pub actual: String,
    pub evidence: Vec<String>,
    pub log_tail: Vec<String>,
}

/// What a step or probe works with while a check runs.
pub struct CheckContext<'a> {
    pub http: &'a HttpClient,
    pub service: &'a RunningService,
    /// Generated data and captures.
    pub scope: Scope,
    /// The check's own random stream (derived from the run seed and the check id).
    pub rng: ChaCha8Rng,
    /// Exchanges shown in the report; probes may trim them to the ones that matter.
    pub exchanges: Vec<Exchange>,
    /// The exercise's variable generators, for probes that need fresh data per request.
    pub vars: &'a [(String, crate::exercise::VarGen)],
    /// The run's mock upstreams: read their calls, change a route's latency or faults (until the
    /// check ends).
    pub upstreams: &'a crate::upstream::Upstreams,
    /// What the check measured (buffers, statements, ratios), reported on a pass too, so a
    /// learner sees how far from the budget their service is.
    pub measurements: Vec<String>,
}

impl CheckContext<'_> {
    /// Records a figure the check measured, e.g. "23.0 shared buffers per request (budget 40)".
    pub fn measured(&mut self, line: String) {
        self.measurements.push(line);
    }

    /// A new set of generated values (from this check's stream), e.g. a fresh unique SKU for
    /// each of many requests.
    pub fn fresh_scope(&mut self) -> Scope {
        random::generate(self.vars, &mut self.rng)
    }

    /// The URL of a path on the service. Absolute URLs (from a Location header) are accepted when
    /// they point at the service's own host.
    pub fn url(&self, path: &str) -> Result<Url, Failure> {
        let base = &self.service.base_url;
        if path.starts_with("http://") || path.starts_with("https://") {
            let url = Url::parse(path)
                .map_err(|e| fail_simple(format!("\"{path}\" is not a valid URL: {e}")))?;
            let local = matches!(
                url.host_str(),
                Some("127.0.0.1" | "localhost" | "[::1]" | "0.0.0.0")
            );
            if !local {
                return Err(fail_simple(format!(
                    "the URL \"{path}\" points at another host; the service's own URLs must lead back to it (use a path like /products/1, or your own host)"
                )));
            }
            // Keep the path, but send it where the service actually listens.
            let mut fixed = base.clone();
            fixed.set_path(url.path());
            fixed.set_query(url.query());
            return Ok(fixed);
        }
        base.join(path)
            .map_err(|e| fail_simple(format!("\"{path}\" is not a valid path: {e}")))
    }

    /// Sends a request and records the exchange. A transport problem is the service's failure;
    /// when the service process has died, the failure says so and carries its last log lines.
    pub async fn send(&mut self, step: &str, req: OutgoingRequest) -> Result<Response, Failure> {
        let summary = format!("{} {}", req.method, req.url.path());
        let sent = self.http.send(step, req).await;
        self.exchanges.push(sent.exchange);
        let transport = match sent.response {
            Ok(response) => return Ok(response),
            Err(transport) => transport,
        };
        let mut info = FailInfo {
            message: format!("{step}: {transport}"),
            expected: format!("a response to {summary}"),
            actual: transport,
            ..Default::default()
        };
        if let ServiceState::Exited { code, signal } =
            self.service.state_after_transport_error().await
        {
            info.message = format!(
                "{step}: your service {} while handling {summary}",
                exit_words(code, signal)
            );
            info.log_tail = self.service.log_tail(LOG_TAIL_LINES);
        } else if info.actual.contains("timeout") || info.actual.contains("no complete response") {
            info.log_tail = self.service.log_tail(LOG_TAIL_LINES);
        }
        Err(Failure::Fail(info))
    }
}

/// "exited with code 1" / "was killed by signal 9"
pub fn exit_words(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        (None, None) => "exited".into(),
    }
}

pub(crate) fn fail_simple(message: String) -> Failure {
    Failure::Fail(FailInfo {
        actual: message.clone(),
        message,
        ..Default::default()
    })
}

/// Runs the selected checks of the given exercises in file order.
pub async fn run(
    exercises: &[&Exercise],
    service: &RunningService,
    options: &RunOptions,
    events: &dyn EngineEvents,
) -> Result<Vec<CheckResult>, String> {
    let http = HttpClient::new()?;
    let mut results: Vec<CheckResult> = Vec::new();
    // Set once the service has died, so later checks are skipped with the cause, not failed.
    let mut service_gone: Option<String> = None;
    for exercise in exercises {
        for check in &exercise.checks {
            if !options.selects(&exercise.id, &check.id) {
                continue;
            }
            let id = format!("{}/{}", exercise.id, check.id);
            events.check_started(&id, &check.title);
            let started = Instant::now();
            let outcome = if let Some(cause) = &service_gone {
                Outcome::Skip(format!("not run: your service {cause}"))
            } else if let Some(missing) = unmet_requirement(check, &exercise.id, &results) {
                Outcome::Skip(format!("not run: requires {missing}, which did not pass"))
            } else {
                run_one(exercise, check, service, &http, options).await
            };
            let result = to_result(
                exercise,
                check,
                &id,
                outcome,
                started.elapsed().as_millis() as u64,
            );
            if service_gone.is_none() {
                if let ServiceState::Exited { code, signal } = service.state() {
                    service_gone = Some(format!("{} during {id}", exit_words(code, signal)));
                }
            }
            events.check_finished(&result);
            results.push(result);
        }
    }
    Ok(results)
}

enum Outcome {
    /// Passed, with what the check measured along the way.
    Pass(Vec<String>),
    Failed(Failure, Vec<Exchange>),
    Skip(String),
}

fn unmet_requirement(check: &Check, exercise: &str, results: &[CheckResult]) -> Option<String> {
    check.requires.iter().find_map(|r| {
        let full = format!("{exercise}/{r}");
        let passed = results
            .iter()
            .any(|res| res.id == full && res.status == Status::Pass);
        (!passed).then_some(full)
    })
}

async fn run_one(
    exercise: &Exercise,
    check: &Check,
    service: &RunningService,
    http: &HttpClient,
    options: &RunOptions,
) -> Outcome {
    // Latency and faults a probe set for an earlier check never leak into this one.
    options.upstreams.reset_behaviour();
    let mut rng = random::check_rng(options.seed, &exercise.id, &check.id);
    let scope = random::generate(&exercise.vars, &mut rng);
    let mut ctx = CheckContext {
        http,
        service,
        scope,
        rng,
        exchanges: Vec::new(),
        vars: &exercise.vars,
        upstreams: &options.upstreams,
        measurements: Vec::new(),
    };
    let work = async {
        match &check.body {
            CheckBody::Steps(steps) => step::run_steps(&mut ctx, steps).await,
            CheckBody::Probe(call) => probes::run(call, &mut ctx).await,
        }
    };
    // A panic in a probe is a grader bug: report it as an error on this check and carry on.
    let guarded = AssertUnwindSafe(tokio::time::timeout(check.timeout, work)).catch_unwind();
    let outcome = match guarded.await {
        Ok(Ok(Ok(()))) => return Outcome::Pass(ctx.measurements),
        Ok(Ok(Err(failure))) => failure,
        Ok(Err(_elapsed)) => Failure::Fail(FailInfo {
            message: format!(
                "the check did not finish within {}s",
                check.timeout.as_secs()
            ),
            expected: format!("the check to finish within {}s", check.timeout.as_secs()),
            actual: "the service kept the grader waiting (slow or hanging responses)".into(),
            log_tail: service.log_tail(LOG_TAIL_LINES),
            ..Default::default()
        }),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Failure::Error(format!("the grader crashed while running this check ({what}); this is a grader bug, please report it"))
        }
    };
    Outcome::Failed(outcome, ctx.exchanges)
}

fn to_result(
    exercise: &Exercise,
    check: &Check,
    id: &str,
    outcome: Outcome,
    duration_ms: u64,
) -> CheckResult {
    let mut result = CheckResult {
        id: id.to_string(),
        exercise: exercise.id.clone(),
        title: check.title.clone(),
        skill: check.skill.clone(),
        task: check.task,
        points: check.points,
        earned: 0,
        status: Status::Pass,
        duration_ms,
        message: None,
        measurements: Vec::new(),
        detail: None,
    };
    let teaching =
        |expected: String, actual: String, evidence, exchanges, service_log_tail| FailureDetail {
            expected,
            actual,
            why: check.why.clone(),
            hint: check.hint.clone(),
            spec: check.spec.clone(),
            evidence,
            exchanges,
            service_log_tail,
        };
    match outcome {
        Outcome::Pass(measurements) => {
            result.earned = check.points;
            result.measurements = measurements;
        }
        Outcome::Skip(reason) => {
            result.status = Status::Skip;
            result.message = Some(reason);
        }
        Outcome::Failed(Failure::Fail(info), exchanges) => {
            result.status = Status::Fail;
            result.message = Some(info.message);
            result.detail = Some(teaching(
                info.expected,
                info.actual,
                info.evidence,
                exchanges,
                info.log_tail,
            ));
        }
        Outcome::Failed(Failure::Error(reason), exchanges) => {
            result.status = Status::Error;
            result.message = Some(format!("grader error: {reason}"));
            result.detail = Some(FailureDetail {
                expected: "the grader to run this check".into(),
                actual: reason,
                why: "This is not your service's fault: the grader could not run the check.".into(),
                hint: "Run again; if it repeats, report it with the seed and this output.".into(),
                spec: Vec::new(),
                evidence: Vec::new(),
                exchanges,
                service_log_tail: Vec::new(),
            });
        }
    }
    result
}
