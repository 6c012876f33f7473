//! Runtimes own every process and container of a run, and nothing else does.
//!
//! A runtime takes a [`ServicePlan`] (derived from the learner's `grader.toml`), provides the
//! dependencies (PostgreSQL, Redis, a RabbitMQ broker behind a [`FaultLink`]), builds and starts
//! the learner's service, waits for its health path, and hands back a [`RunningService`]. Teardown happens in [`RunningService::shutdown`], and
//! as a last resort in `Drop` (panics) — so no process or temp dir outlives the run.
//!
//! INTERFACE CONTRACT (the engine and CLI depend on exactly this; keep it stable).

use std::time::Duration;

pub mod capped_log;
pub mod docker;
mod link;
pub mod local;
pub mod readiness;

pub use link::FaultLink;

pub use crate::manifest::{BeforeService, BeforeServiceFn, ServicePlan};

/// A phase of start-up, reported so the CLI can show progress and the report can give timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Postgres,
    Redis,
    /// The run's RabbitMQ broker (and the link the service reaches it through).
    Broker,
    /// The exercises' schema and data loaded by the grader (see [`ServicePlan::before_service`]).
    DataSetup,
    Build,
    ServiceStart,
    Teardown,
}

/// Receives progress while the runtime works. Implemented by the CLI (spinner) and by tests.
pub trait ProgressSink: Send + Sync {
    fn phase_started(&self, phase: Phase, what: &str);
    fn phase_finished(&self, phase: Phase, elapsed: Duration);
}

/// Connection details of the grader-owned PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresInfo {
    /// The grader's own URL: database `app` as the superuser `postgres` on 127.0.0.1, with this
    /// run's password (scram: the server trusts no login). Never handed to the service, never
    /// printed.
    pub url: String,
    /// The URL handed to the service: the same database as [`crate::pg::SERVICE_ROLE`], no
    /// superuser, with a password of its own (the host is `postgres` under docker).
    pub service_url: String,
    pub port: u16,
    pub database: String,
    /// When the run makes the database fail ([`crate::manifest::ServicePlan::database_link`]):
    /// the link `service_url` goes through, which the grader stalls or cuts.
    pub link: Option<FaultLink>,
}

#[derive(Debug, Clone)]
pub struct RedisInfo {
    pub url: String,
    pub port: u16,
}

/// The run's RabbitMQ broker, as the grader and as the service reach it.
#[derive(Debug, Clone)]
pub struct BrokerInfo {
    /// Direct, for the grader's own AMQP connections:
    /// `amqp://grader:PASS@127.0.0.1:PORT/%2f`.
    pub grader_url: String,
    /// What the service got: the same broker through [`BrokerInfo::link`], so the grader can
    /// make it unreachable for the service alone.
    pub service_url: String,
    pub link: FaultLink,
}

/// The broker's user; its password is random per run.
pub(crate) const BROKER_USER: &str = "grader";

/// `amqp://grader:PASS@HOST:PORT/%2f` (the default virtual host `/`, escaped). The password is
/// alphanumeric, so it needs no escaping.
pub(crate) fn amqp_url(password: &str, host: &str, port: u16) -> String {
    format!("amqp://{BROKER_USER}:{password}@{host}:{port}/%2f")
}

/// Whether the service process is still alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceState {
    Running,
    /// Exited with a code, or was killed by a signal (`code` is None then).
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// Why start-up failed. The first two are the learner's to fix; the rest are the grader's.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the build command failed ({reason})")]
    BuildFailed {
        reason: String,
        log_tail: Vec<String>,
    },
    /// The build was not run: the service is untrusted and asked for a command on this machine.
    #[error("{message}")]
    BuildRefused { message: String, fix: String },
    #[error("{message}")]
    ServiceDidNotStart {
        message: String,
        log_tail: Vec<String>,
    },
    #[error("{what} is not installed: {install_hint}")]
    MissingBinary { what: String, install_hint: String },
    /// A dependency's image is not on this machine; `fix` says how to get one.
    #[error("{what} could not be started: {message}; {fix}")]
    MissingImage {
        what: String,
        message: String,
        fix: String,
    },
    #[error("{what} could not be started: {message}")]
    Infrastructure {
        what: String,
        message: String,
        log_tail: Vec<String>,
    },
    #[error("interrupted")]
    Interrupted,
}

/// Timings of start-up, in the order they happened.
#[derive(Debug, Clone, Default)]
pub struct StartTimings {
    pub postgres: Duration,
    pub data_setup: Duration,
    pub redis: Duration,
    /// The broker's start-up (about 8 s locally), overlapping PostgreSQL, Redis and the build.
    pub broker: Duration,
    pub build: Duration,
    pub service_start: Duration,
}

/// A started service and its dependencies. Dropping it without `shutdown` still kills everything
/// (synchronously), so a panic leaves nothing behind; `shutdown` is the graceful path.
pub struct RunningService {
    /// Base URL of the service, always `http://127.0.0.1:<port>` for local runs.
    pub base_url: url::Url,
    pub postgres: Option<PostgresInfo>,
    pub redis: Option<RedisInfo>,
    /// The run's broker, when the plan asks for one ([`ServicePlan::broker_env`]).
    pub broker: Option<BrokerInfo>,
    pub timings: StartTimings,
    /// `local`, `docker` or `external`.
    pub kind: &'static str,
    /// The path that answered 2xx at start-up; probes use it to warm connections.
    pub health_path: String,
    backend: Backend,
    /// Held while the service is signalled or restarted: two restarts at once would start two
    /// services on one port.
    lifecycle: tokio::sync::Mutex<()>,
}

enum Backend {
    Local(Box<local::LocalEnvironment>),
    Docker(Box<docker::DockerEnvironment>),
    External,
}

impl RunningService {
    /// A service somebody else runs: no processes, no databases.
    pub fn external(base_url: url::Url, health_path: &str) -> Self {
        RunningService {
            base_url,
            health_path: health_path.to_string(),
            postgres: None,
            redis: None,
            broker: None,
            timings: StartTimings::default(),
            kind: "external",
            backend: Backend::External,
            lifecycle: tokio::sync::Mutex::default(),
        }
    }

    /// Non-blocking: has the service process exited? External services are always `Running`.
    pub fn state(&self) -> ServiceState {
        match &self.backend {
            Backend::Local(env) => env.service_state(),
            Backend::Docker(env) => env.service_state(),
            Backend::External => ServiceState::Running,
        }
    }

    /// The service's state after a request to it failed at the transport level. A process that
    /// crashed closes its sockets a moment before it can be reaped, so a connection error alone
    /// does not yet show it has exited: poll briefly (bounded) before answering "still running".
    pub async fn state_after_transport_error(&self) -> ServiceState {
        const POLLS: u32 = 10;
        const INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
        for _ in 0..POLLS {
            let state = self.state();
            if state != ServiceState::Running {
                return state;
            }
            tokio::time::sleep(INTERVAL).await;
        }
        self.state()
    }

    /// Last `lines` lines of the service's combined stdout/stderr (empty for external).
    pub fn log_tail(&self, lines: usize) -> Vec<String> {
        match &self.backend {
            Backend::Local(env) => env.service_log_tail(lines),
            Backend::Docker(env) => env.service_log_tail(lines),
            Backend::External => Vec::new(),
        }
    }

    /// The file holding the service's combined stdout and stderr for this run, or `None` when the
    /// grader does not run the service (external) and so cannot read what it writes.
    pub fn service_log_path(&self) -> Option<&std::path::Path> {
        match &self.backend {
            Backend::Local(env) => Some(env.service_log_path()),
            Backend::Docker(env) => Some(env.service_log_path()),
            Backend::External => None,
        }
    }

    /// Sends `signal` to the service (local: its process group; docker: the container) and waits
    /// up to `wait` for it to exit; returns its state then (`Running` if it did not exit). Err
    /// (a sentence) when it cannot.
    pub async fn signal_service(
        &self,
        signal: nix::sys::signal::Signal,
        wait: Duration,
    ) -> Result<ServiceState, String> {
        let _one_at_a_time = self.lifecycle.lock().await;
        match &self.backend {
            Backend::Local(env) => Ok(env.signal_service(signal, wait).await),
            Backend::Docker(env) => env.signal_service(signal, wait).await,
            Backend::External => Err(
                "the grader does not run this service (--runtime external), so it cannot signal it"
                    .to_string(),
            ),
        }
    }

    /// Starts the service again: same command, environment and `PORT` (so `base_url` stays
    /// valid), appending to `service.log` after a line `grader: restarted the service`; waits for
    /// the health path like the first start (`plan.startup_timeout`). Works after
    /// [`RunningService::signal_service`], and kills a still-running service first. Returns how
    /// long until it was healthy; `state()` is `Running` again after a success.
    pub async fn restart_service(&self) -> Result<Duration, StartError> {
        let _one_at_a_time = self.lifecycle.lock().await;
        match &self.backend {
            Backend::Local(env) => env.restart_service().await,
            Backend::Docker(env) => env.restart_service().await,
            Backend::External => Err(StartError::Infrastructure {
                what: "your service".to_string(),
                message: "the grader does not run this service (--runtime external), so it \
                          cannot restart it"
                    .to_string(),
                log_tail: vec![],
            }),
        }
    }

    /// Pids and temp dirs of a local run, for tests that check teardown (None when external).
    #[doc(hidden)]
    pub fn debug_pids(&self) -> Option<local::DebugPids> {
        match &self.backend {
            Backend::Local(env) => Some(env.debug_pids()),
            Backend::Docker(_) | Backend::External => None,
        }
    }

    /// Stops the service (SIGTERM to its process group, SIGKILL after a grace period), then the
    /// broker's link, the broker, Redis and PostgreSQL, and removes temp dirs. Returns how long
    /// teardown took.
    pub async fn shutdown(self) -> Duration {
        match self.backend {
            Backend::Local(env) => env.shutdown().await,
            Backend::Docker(env) => env.shutdown().await,
            Backend::External => Duration::ZERO,
        }
    }
}

/// The docker runtime's `grader.run` label of this run (None for other runtimes), for tests that
/// check teardown left nothing behind.
#[doc(hidden)]
pub fn docker_run_label(service: &RunningService) -> Option<String> {
    match &service.backend {
        Backend::Docker(env) => Some(env.run_label().to_string()),
        _ => None,
    }
}

/// Like [`start_local`], with the service in a container built from its Dockerfile and
/// PostgreSQL/Redis as containers (see [`docker`]).
pub async fn start_docker(
    plan: &ServicePlan,
    options: &docker::DockerOptions,
    progress: &dyn ProgressSink,
) -> Result<RunningService, StartError> {
    let started = docker::DockerEnvironment::start(plan, options, progress).await?;
    Ok(RunningService {
        base_url: started.base_url,
        postgres: started.postgres,
        redis: started.redis,
        broker: started.broker,
        timings: started.timings,
        kind: "docker",
        health_path: plan.health_path.clone(),
        backend: Backend::Docker(Box::new(started.env)),
        lifecycle: tokio::sync::Mutex::default(),
    })
}

/// Starts PostgreSQL/Redis as the plan asks (or takes them from `warm`) and the broker (always the
/// run's own, warm or not: see [`local::WarmRun`]), builds and starts the service, waits for
/// health. On any error everything already started is torn down before returning.
pub async fn start_local(
    plan: &ServicePlan,
    progress: &dyn ProgressSink,
    warm: Option<&local::WarmRun<'_>>,
) -> Result<RunningService, StartError> {
    let started = local::LocalEnvironment::start(plan, progress, warm).await?;
    Ok(RunningService {
        base_url: started.base_url,
        postgres: started.postgres,
        redis: started.redis,
        broker: started.broker,
        timings: started.timings,
        kind: "local",
        health_path: plan.health_path.clone(),
        backend: Backend::Local(Box::new(started.env)),
        lifecycle: tokio::sync::Mutex::default(),
    })
}

/// A measured duration for people: milliseconds below a second, tenths of a second above
/// (`humantime` would print "453ms 333us 577ns"). Here, below `engine`, so both can use it.
pub fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
