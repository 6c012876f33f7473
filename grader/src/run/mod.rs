//! One grading run, as a library API: plan it from a [`RunRequest`], then [`execute`] it: start
//! the mock upstreams, the runtime (databases, data sets, build, service) and the checks, score
//! them, and return the [`RunReport`]. `grader check`, `grader prove` and the end-to-end tests all
//! go through here; the CLI only parses flags and writes reports.
//!
//! Hooks: [`RunEvents`] hears progress (start-up phases, lines, each check), and [`Cancel`] stops
//! a run at any point, leaving nothing started behind.

pub mod checks;
mod start;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::diagnostic::{display_path, Diagnostics};
use crate::exercise::{Catalog, Exercise};
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::outcome::{
    CheckResult, ProblemKind, RunProblem, RunReport, RuntimeInfo, Timings, REPORT_VERSION,
};
use crate::runtime::local::WarmDependencies;
use crate::runtime::{self, ProgressSink, RunningService};
use crate::scoring;
use crate::spec::random;
use crate::upstream::UpstreamOptions;
pub use checks::{selects, Selection};
pub use start::problem as start_problem;

/// Where the service runs.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Your own start command, with a throwaway PostgreSQL (and Redis) on this machine.
    Local,
    /// A service that is already running at --url; no databases are provided.
    External,
    /// Your service's Dockerfile, built and run as a container, with PostgreSQL (and Redis) as
    /// containers on a per-run network.
    Docker,
    /// docker when a Dockerfile is next to grader.toml and the Docker daemon answers, else local.
    Auto,
}

/// What to grade and how: everything `grader check` takes, as plain data.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Folder of the service (holding grader.toml).
    pub service_dir: PathBuf,
    /// Exercises to grade instead of the manifest's.
    pub exercises: Vec<String>,
    /// `--only` filters.
    pub only: Vec<String>,
    pub runtime: RuntimeKind,
    /// Base URL of an already running service (external runtime).
    pub url: Option<url::Url>,
    /// The run's seed; a fresh one when absent.
    pub seed: Option<u64>,
    /// Where logs and report.json go (default: `<service>/.grader/last-run`).
    pub artifacts_dir: Option<PathBuf>,
    /// Extra environment for the service, after the manifest's (e.g. a planted bug's switch for
    /// `grader prove`).
    pub service_env: Vec<(String, String)>,
    /// Checks (`exercise/check`) to run before the others of their exercise, with the checks
    /// they require: `grader watch` puts last run's failures first. The report keeps file order.
    pub first: Vec<String>,
    /// The most the checks may take, all together (`check --timeout`): a service that answers
    /// every request slowly, or never, would otherwise cost each check its own timeouts.
    pub checks_timeout: Option<Duration>,
    /// The service is not trusted (`check --untrusted`): under docker nothing of it runs outside
    /// its containers, so a `[docker] build` host command is refused as a failed build.
    pub untrusted: bool,
}

impl RunRequest {
    pub fn new(service_dir: impl Into<PathBuf>) -> RunRequest {
        RunRequest {
            service_dir: service_dir.into(),
            exercises: Vec::new(),
            only: Vec::new(),
            runtime: RuntimeKind::Local,
            url: None,
            seed: None,
            artifacts_dir: None,
            service_env: Vec::new(),
            first: Vec::new(),
            checks_timeout: None,
            untrusted: false,
        }
    }
}

/// Why a run could not be planned or started: the caller's input, never the service's fault.
#[derive(Debug)]
pub enum RunError {
    /// Bad flags or paths (exit 2), with the message to print.
    Usage(String),
    /// Located errors in grader.toml (exit 2).
    Diagnostics(Diagnostics),
    /// Something the grader needs is missing, e.g. the Docker daemon (exit 3).
    Infrastructure(String),
}

/// A validated run, ready to execute.
pub struct Plan<'c> {
    pub catalog: &'c Catalog,
    pub exercises: Vec<&'c Exercise>,
    pub service_dir: PathBuf,
    pub manifest: Option<Manifest>,
    pub seed: u64,
    /// The command line that replays this run.
    pub replay: String,
    pub request: RunRequest,
}

/// Validates the request against the catalog and the service folder; reads no network.
pub fn plan<'c>(request: &RunRequest, catalog: &'c Catalog) -> Result<Plan<'c>, RunError> {
    let service_dir = std::fs::canonicalize(&request.service_dir).map_err(|e| {
        RunError::Usage(format!(
            "cannot open the service folder {}: {e}",
            request.service_dir.display()
        ))
    })?;
    let has_manifest = service_dir.join(MANIFEST_FILE).is_file();
    let manifest = if request.runtime != RuntimeKind::External || has_manifest {
        Some(Manifest::load(&service_dir).map_err(RunError::Diagnostics)?)
    } else {
        None
    };
    let known = catalog.exercises.iter().map(|e| e.id.as_str());
    let ids: Vec<String> = if !request.exercises.is_empty() {
        for id in &request.exercises {
            if catalog.exercise(id).is_none() {
                let names: Vec<&str> = known.clone().collect();
                let hint = crate::diagnostic::did_you_mean(id, names.iter().copied())
                    .map(|s| format!("did you mean \"{s}\"?"))
                    .unwrap_or_else(|| format!("known exercises: {}", names.join(", ")));
                return Err(RunError::Usage(format!(
                    "unknown exercise \"{id}\"; {hint}"
                )));
            }
        }
        request.exercises.clone()
    } else if let Some(m) = &manifest {
        m.check_exercises(known).map_err(RunError::Diagnostics)?;
        m.exercise_ids()
    } else {
        return Err(RunError::Usage(format!(
            "no {MANIFEST_FILE} in {}; name the exercises with --exercise ID",
            display_path(&service_dir)
        )));
    };
    if request.runtime == RuntimeKind::External && request.url.is_none() {
        return Err(RunError::Usage(
            "--runtime external needs --url, e.g. --url http://127.0.0.1:8080".into(),
        ));
    }
    let exercises: Vec<&Exercise> = ids.iter().filter_map(|id| catalog.exercise(id)).collect();
    for only in &request.only {
        let exists = exercises.iter().any(|ex| {
            ex.checks
                .iter()
                .any(|c| selects(std::slice::from_ref(only), &ex.id, &c.id))
        });
        if !exists {
            return Err(RunError::Usage(format!(
                "--only {only} matches no check of the selected exercises; `grader exercises` lists them"
            )));
        }
    }
    let seed = request.seed.unwrap_or_else(random::fresh_seed);
    let replay = replay_command(request, &service_dir, seed);
    Ok(Plan {
        catalog,
        exercises,
        service_dir,
        manifest,
        seed,
        replay,
        request: request.clone(),
    })
}

/// `grader check <dir> [--exercise ..] [--only ..] [--runtime ..] --seed N`.
fn replay_command(request: &RunRequest, service_dir: &Path, seed: u64) -> String {
    let mut replay = format!("grader check {}", shell_word(&display_path(service_dir)));
    for e in &request.exercises {
        replay.push_str(&format!(" --exercise {e}"));
    }
    for o in &request.only {
        replay.push_str(&format!(" --only {o}"));
    }
    match (request.runtime, &request.url) {
        (RuntimeKind::External, Some(url)) => {
            replay.push_str(&format!(" --runtime external --url {url}"))
        }
        (RuntimeKind::Docker, _) => replay.push_str(" --runtime docker"),
        _ => {}
    }
    replay.push_str(&format!(" --seed {seed}"));
    replay
}

pub(crate) fn shell_word(s: &str) -> String {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| s.to_string())
}

/// What a run tells its caller while it works: start-up phases (through the runtime's
/// [`ProgressSink`]), lines that stay, and each check as it starts and finishes, in exercise
/// order even when exercises run concurrently.
pub trait RunEvents: ProgressSink {
    fn line(&self, text: &str);
    fn check_started(&self, id: &str, title: &str);
    fn check_finished(&self, result: &CheckResult);
    /// The checks are done; teardown follows.
    fn checks_finished(&self) {}
}

/// Hears nothing (tests, `grader prove`).
pub struct Quiet;

impl ProgressSink for Quiet {
    fn phase_started(&self, _: runtime::Phase, _: &str) {}
    fn phase_finished(&self, _: runtime::Phase, _: Duration) {}
}

impl RunEvents for Quiet {
    fn line(&self, _: &str) {}
    fn check_started(&self, _: &str, _: &str) {}
    fn check_finished(&self, _: &CheckResult) {}
}

/// Stops a run from outside (Ctrl-C, a watcher that saw a new change). Cheap to clone.
#[derive(Clone)]
pub struct Cancel(tokio::sync::watch::Receiver<bool>);

/// The handle that cancels every [`Cancel`] made from it.
pub struct Canceller(tokio::sync::watch::Sender<bool>);

impl Cancel {
    pub fn new() -> (Canceller, Cancel) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (Canceller(tx), Cancel(rx))
    }

    /// A run nobody cancels.
    pub fn never() -> Cancel {
        let (canceller, cancel) = Cancel::new();
        // Keep the sender alive for the life of the process, so `cancelled` never resolves.
        std::mem::forget(canceller);
        cancel
    }

    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the run is cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Canceller {
    pub fn cancel(&self) {
        let _ = self.0.send(true);
    }
}

/// Runs the plan to the end (or until cancelled) and returns its report. Everything the run
/// started is stopped before it returns.
pub async fn execute(
    plan: Plan<'_>,
    events: &dyn RunEvents,
    cancel: Cancel,
) -> Result<RunReport, RunError> {
    execute_with(plan, events, cancel, None).await
}

/// Like [`execute`], on the local runtime with PostgreSQL and Redis taken from `warm` (reset to
/// what a cold run starts from) instead of started and stopped: `grader watch` re-grades this way.
pub async fn execute_warm(
    plan: Plan<'_>,
    events: &dyn RunEvents,
    cancel: Cancel,
    warm: &WarmDependencies,
) -> Result<RunReport, RunError> {
    if plan.request.runtime != RuntimeKind::Local {
        return Err(RunError::Usage(
            "warm dependencies serve the local runtime only".into(),
        ));
    }
    execute_with(plan, events, cancel, Some(warm)).await
}

/// The data a run's exercises load before the service starts: the warm template is reloaded when
/// this changes.
fn dataset_key(plan: &Plan<'_>) -> String {
    let ids: Vec<&str> = plan
        .exercises
        .iter()
        .filter(|e| e.dataset.is_some())
        .map(|e| e.id.as_str())
        .collect();
    format!("seed {} · {}", plan.seed, ids.join(","))
}

async fn execute_with(
    plan: Plan<'_>,
    events: &dyn RunEvents,
    cancel: Cancel,
    warm: Option<&WarmDependencies>,
) -> Result<RunReport, RunError> {
    let warm_run = warm.map(|dependencies| runtime::local::WarmRun {
        dependencies,
        dataset_key: dataset_key(&plan),
    });
    let started_at = std::time::SystemTime::now();
    let clock = Instant::now();
    let mut runtime_kind = plan.request.runtime;
    let docker_options = plan.manifest.as_ref().map(|m| {
        let mut options = runtime::docker::DockerOptions::new(&plan.service_dir, &m.docker);
        options.refuse_host_build = plan.request.untrusted;
        options
    });
    // `--runtime auto` settles on docker or local here.
    let mut runtime_choice = None;
    if runtime_kind == RuntimeKind::Auto {
        let dockerfile = docker_options
            .as_ref()
            .map(|o| o.dockerfile.clone())
            .unwrap_or_else(|| plan.service_dir.join("Dockerfile"));
        let (docker, why) = runtime::docker::choose_auto(&dockerfile).await;
        runtime_kind = if docker {
            RuntimeKind::Docker
        } else {
            RuntimeKind::Local
        };
        runtime_choice = Some(format!(
            "  runtime     {} ({why})",
            if docker { "docker" } else { "local" }
        ));
    }
    let mut replay = plan.replay.clone();
    if runtime_kind == RuntimeKind::Docker {
        if let Some(problem) = runtime::docker::daemon_problem().await {
            return Err(RunError::Infrastructure(format!(
                "--runtime docker: {problem}; or use --runtime local"
            )));
        }
        if plan.request.runtime == RuntimeKind::Auto {
            replay = replay.replacen(" --seed ", " --runtime docker --seed ", 1);
        }
    }
    let default_artifacts = plan.service_dir.join(".grader").join("last-run");
    let artifacts_dir = plan
        .request
        .artifacts_dir
        .clone()
        .unwrap_or_else(|| default_artifacts.clone());
    let mut service_plan = match (&plan.manifest, runtime_kind) {
        (Some(m), RuntimeKind::Local) => Some(
            m.service_plan(&plan.service_dir, &artifacts_dir)
                .map_err(RunError::Diagnostics)?,
        ),
        (Some(m), RuntimeKind::Docker) => Some(
            m.docker_service_plan(&plan.service_dir, &artifacts_dir)
                .map_err(RunError::Diagnostics)?,
        ),
        _ => None,
    };
    if let Some(sp) = service_plan.as_mut() {
        sp.env.extend(plan.request.service_env.iter().cloned());
        // An exercise with `[broker]` gets the run a RabbitMQ; the learner's `[rabbitmq] env`
        // may rename the variable.
        if let Some(broker) = plan.exercises.iter().find_map(|e| e.broker.as_ref()) {
            sp.broker_env = Some(sp.broker_env_name(&broker.env));
        }
        // A gRPC exercise's service says it is ready through the gRPC health service.
        if plan
            .exercises
            .iter()
            .any(|e| e.protocol == crate::exercise::Protocol::Grpc)
        {
            sp.protocol = crate::exercise::Protocol::Grpc;
        }
        // A check that makes the database fail needs the service to reach it through a link
        // the grader controls; other runs talk to PostgreSQL directly.
        sp.database_link =
            plan.exercises.iter().flat_map(|e| &e.checks).any(
                |c| matches!(&c.body, crate::exercise::CheckBody::Probe(p) if p.fails_database()),
            );
    }
    // Exercises with a `[dataset]`: the grader loads it before the service starts.
    let data_stats = service_plan
        .as_mut()
        .and_then(|sp| start::attach_datasets(sp, &plan.exercises, plan.seed));
    start::prepare_artifacts(&artifacts_dir, artifacts_dir == default_artifacts)
        .map_err(|e| RunError::Usage(format!("cannot create {}: {e}", artifacts_dir.display())))?;

    // One line on what is being graded; the report's header (version, folder, URL) follows at
    // the end, so the progress does not print the same line in another form.
    events.line(&format!(
        "  grading     {} · seed {}",
        plan.exercises
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        plan.seed
    ));
    if let Some(choice) = &runtime_choice {
        events.line(choice);
    }

    let mut timings = Timings::default();
    let mut problem: Option<RunProblem> = None;
    let mut interrupted = false;

    // Mock upstreams first: the service gets their URLs when it starts. A container reaches
    // them through the host gateway, not the host's loopback.
    let upstream_options = UpstreamOptions {
        seed: plan.seed,
        ..if runtime_kind == RuntimeKind::Docker {
            runtime::docker::upstream_options().await
        } else {
            UpstreamOptions::default()
        }
    };
    let (upstreams, upstream_problem) = start::upstreams(
        &plan,
        service_plan.as_mut(),
        runtime_kind == RuntimeKind::External,
        &upstream_options,
        events,
    )
    .await;
    problem = problem.or(upstream_problem);

    let service: Option<RunningService> = match (&service_plan, &plan.request.url) {
        _ if problem.is_some() => None,
        (Some(sp), _) => {
            let docker = (runtime_kind == RuntimeKind::Docker)
                .then_some(docker_options.as_ref())
                .flatten();
            let start = async {
                match docker {
                    Some(options) => runtime::start_docker(sp, options, events).await,
                    None => runtime::start_local(sp, events, warm_run.as_ref()).await,
                }
            };
            tokio::select! {
                r = start => match r {
                    Ok(s) => Some(s),
                    Err(e) => {
                        problem = Some(start::problem(e, &artifacts_dir, sp.protocol));
                        None
                    }
                },
                _ = cancel.cancelled() => {
                    interrupted = true;
                    None
                }
            }
        }
        (None, Some(url)) => {
            let health = plan
                .manifest
                .as_ref()
                .map(|m| m.service.health_path.clone());
            Some(RunningService::external(
                url.clone(),
                health.as_deref().unwrap_or("/healthz"),
            ))
        }
        (None, None) => None,
    };

    let mut results: Vec<CheckResult> = Vec::new();
    let mut service_url = String::new();
    if let Some(service) = service {
        timings.postgres_ms = ms(service.timings.postgres);
        timings.redis_ms = ms(service.timings.redis);
        timings.broker_ms = ms(service.timings.broker);
        timings.data_setup_ms = ms(service.timings.data_setup);
        if let Some(stats) = data_stats.as_ref().and_then(|s| s.lock().ok()?.clone()) {
            events.line(&format!("  data        {}", stats.summary()));
        }
        timings.build_ms = ms(service.timings.build);
        timings.service_start_ms = ms(service.timings.service_start);
        service_url = service.base_url.to_string();
        let selection = Selection {
            seed: plan.seed,
            only: plan.request.only.clone(),
            first: plan.request.first.clone(),
        };
        let checks_clock = Instant::now();
        let finished = std::sync::Mutex::new(Vec::new());
        let deadline = async {
            match plan.request.checks_timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        if !cancel.is_cancelled() {
            tokio::select! {
                r = checks::run(&plan.exercises, &service, &selection, &upstreams, events, &finished) => match r {
                    Ok(r) => results = r,
                    Err(e) => problem = Some(RunProblem { kind: ProblemKind::Infrastructure, message: e, fix: None, log_tail: vec![] }),
                },
                _ = cancel.cancelled() => interrupted = true,
                _ = deadline => {
                    // The checks that ended keep their verdicts; the rest are listed as not
                    // finished (below, then all in file order like every report).
                    results = finished.into_inner().unwrap_or_else(|e| e.into_inner());
                    problem = Some(timed_out(plan.request.checks_timeout.unwrap_or_default()));
                }
            }
        } else {
            interrupted = true;
        }
        timings.checks_ms = ms(checks_clock.elapsed());
        events.checks_finished();
        timings.teardown_ms = ms(service.shutdown().await);
    }
    upstreams.shutdown().await;
    if interrupted {
        problem = Some(RunProblem {
            kind: ProblemKind::Interrupted,
            message: "the run was interrupted; everything the grader started was stopped".into(),
            fix: None,
            log_tail: vec![],
        });
    }
    // Checks that never ran are listed too, so every report has the full check list.
    start::fill_unrun(
        &mut results,
        &plan.exercises,
        &plan.request.only,
        problem.as_ref(),
    );
    if problem
        .as_ref()
        .is_some_and(|p| p.kind == ProblemKind::TimedOut)
    {
        start::sort_in_file_order(&mut results, &plan.exercises);
    }

    let score = scoring::overall(&results);
    let status = scoring::run_status(&results, problem.as_ref());
    Ok(RunReport {
        version: REPORT_VERSION,
        grader_version: env!("CARGO_PKG_VERSION").into(),
        status,
        seed: plan.seed,
        replay,
        started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
        duration_ms: ms(clock.elapsed()),
        runtime: RuntimeInfo {
            kind: match runtime_kind {
                RuntimeKind::Local | RuntimeKind::Auto => "local".into(),
                RuntimeKind::External => "external".into(),
                RuntimeKind::Docker => "docker".into(),
            },
            service_url,
            service_dir: display_path(&plan.service_dir),
            artifacts_dir: display_path(&artifacts_dir),
        },
        timings,
        skills: scoring::by_skill(&results, plan.catalog),
        exercises: scoring::by_exercise(&results, &plan.exercises),
        score,
        checks: results,
        problem,
    })
}

/// The problem of a run whose checks took longer than `--timeout`: the service's, since every wait
/// of the grader's is bounded (10 s a request, three timeouts in a row end the checks).
fn timed_out(limit: Duration) -> RunProblem {
    RunProblem {
        kind: ProblemKind::TimedOut,
        message: format!(
            "the checks took longer than --timeout {}, all together; the service was stopped, and the checks that had not finished count as not passed",
            humantime::format_duration(limit)
        ),
        fix: Some("find the requests your service answers slowly, or never (the checks that finished show their timings and the last lines of its log); a larger --timeout only hides them".into()),
        log_tail: vec![],
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
