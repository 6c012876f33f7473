//! Local runtime: the learner's service and its dependencies as child processes of the grader.
//!
//! Every process is started in its own process group with a parent-death signal (see
//! `process::spawn_owned`), so teardown can reach everything a process forked. The learner's
//! code (build, service) leads a session of its own and carries a mark, and the grader is a
//! child subreaper, so what it moves out of its group (`setsid`, `setpgid`, a double fork) is
//! found and killed too, without touching another run's processes (see `process`). A
//! supervisor process cleans up when the grader is SIGKILLed (see `supervisor`). Every wait has
//! a timeout.
//!
//! Teardown order: the service first (it holds connections to the databases), then the broker's
//! link, the broker, Redis, PostgreSQL, then the temp dirs (only once their processes are gone,
//! so nothing recreates files in them). The artifacts dir is the learner's and is kept.

pub(crate) mod postgres;
pub(crate) mod process;
pub(crate) mod rabbitmq;
mod redis;
pub use process::{supervisor, SupervisedTempDir};
mod warm;

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use nix::sys::signal::Signal;

use self::postgres::Postgres;
use self::process::Proc;
use self::rabbitmq::RabbitMq;
use self::redis::Redis;
use super::capped_log::{self, CappedLog, PipeDrain, SERVICE_LOG_CAP};
use super::link::LinkServer;
use super::readiness::{Attempt, Readiness};
use super::*;
pub use warm::{WarmDependencies, WarmRun};

/// How long a look at `service.log` after the service exited waits for the rest of its output
/// (its pipe ends when the last process holding it is gone).
const SERVICE_LOG_SETTLE: Duration = Duration::from_millis(500);
/// How long the service gets between SIGTERM (to its process group) and SIGKILL.
const SERVICE_GRACE: Duration = Duration::from_secs(5);
/// Same for a build that timed out.
const BUILD_GRACE: Duration = Duration::from_secs(5);
/// Lines of a log carried in start-up errors.
const LOG_TAIL: usize = 30;
/// Interval between health checks.
const HEALTH_INTERVAL: Duration = Duration::from_millis(100);
/// Upper bound for one health request, so a hanging request cannot eat the whole start-up time.
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The processes and temp dirs of one local run: PostgreSQL, Redis and RabbitMQ (with its link)
/// when the plan asks for them, and the learner's service.
///
/// Dropping it tears everything down synchronously (no tokio runtime needed), so a panic leaves
/// nothing behind; [`LocalEnvironment::shutdown`] does the same without blocking async threads.
/// The thread that polls [`LocalEnvironment::start`] need not outlive the environment: children are
/// forked by a dedicated thread that lives as long as the process.
pub struct LocalEnvironment {
    /// Behind a mutex because [`LocalEnvironment::service_state`] reaps it and
    /// [`LocalEnvironment::restart_service`] replaces it, both through `&self`.
    service: Option<Mutex<Proc>>,
    /// What the service was started with, to start it again the same way.
    launch: Option<Launch>,
    /// Servers this run started (a cold run); with warm dependencies they are not the run's.
    redis: Option<Redis>,
    postgres: Option<Postgres>,
    /// Always the run's own, warm or cold.
    broker: Option<RabbitMq>,
    link: Option<LinkServer>,
    /// The service's way to PostgreSQL when the run makes the database fail.
    database_link: Option<LinkServer>,
    /// What the service is given, from this run's servers or the warm ones.
    postgres_info: Option<PostgresInfo>,
    redis_info: Option<RedisInfo>,
    broker_info: Option<BrokerInfo>,
    service_log: PathBuf,
    /// `service.log` as the service's output is written into it, capped (shared by restarts).
    service_output: Option<Arc<Mutex<CappedLog>>>,
    /// Drains the current service process's output into `service_output`.
    service_drain: Mutex<Option<PipeDrain>>,
}

/// The plan and port of the service's first start, which a restart repeats.
struct Launch {
    plan: ServicePlan,
    port: u16,
}

/// What [`LocalEnvironment::start`] hands back.
pub struct Started {
    pub env: LocalEnvironment,
    pub postgres: Option<PostgresInfo>,
    pub redis: Option<RedisInfo>,
    pub broker: Option<BrokerInfo>,
    pub timings: StartTimings,
    pub base_url: url::Url,
}

/// Pids and paths of a [`LocalEnvironment`], for tests that check teardown left nothing behind.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct DebugPids {
    /// Pid of the service's `sh`, which is also its process group id.
    pub service_pgid: Option<i32>,
    /// The postmaster, leader of its process group.
    pub postgres_pid: Option<i32>,
    pub redis_pid: Option<i32>,
    /// The broker's VM (beam), leader of its process group.
    pub broker_pid: Option<i32>,
    /// The broker's epmd, leader of its own process group.
    pub epmd_pid: Option<i32>,
    /// What beam started in process groups of their own (`erl_child_setup`, `inet_gethost`),
    /// when the pids were taken.
    pub broker_helper_pids: Vec<i32>,
    /// Temp dirs that teardown must remove.
    pub temp_dirs: Vec<PathBuf>,
}

impl LocalEnvironment {
    /// Starts PostgreSQL and Redis as the plan asks, runs the build, starts the service and waits
    /// until its health path answers 2xx. Progress is reported per phase; a phase that fails is
    /// not reported finished (the error says what happened). On error, everything already started
    /// is torn down before returning; if the future is dropped midway, `Drop` does it.
    ///
    /// With `warm`, PostgreSQL and Redis are not started but taken from it, reset to the state a
    /// cold run starts from (see [`WarmDependencies`]); teardown leaves them running. The broker
    /// is the run's own either way.
    pub async fn start(
        plan: &ServicePlan,
        progress: &dyn ProgressSink,
        warm: Option<&WarmRun<'_>>,
    ) -> Result<Started, StartError> {
        let mut env = LocalEnvironment {
            service: None,
            launch: None,
            redis: None,
            postgres: None,
            broker: None,
            link: None,
            database_link: None,
            postgres_info: None,
            redis_info: None,
            broker_info: None,
            service_log: plan.artifacts_dir.join("service.log"),
            service_output: None,
            service_drain: Mutex::new(None),
        };
        match env.start_all(plan, progress, warm).await {
            Ok((timings, base_url)) => Ok(Started {
                postgres: env.postgres_info.clone(),
                redis: env.redis_info.clone(),
                broker: env.broker_info.clone(),
                timings,
                base_url,
                env,
            }),
            Err(error) => {
                if env.service.is_some()
                    || env.redis.is_some()
                    || env.postgres.is_some()
                    || env.broker.is_some()
                {
                    progress.phase_started(Phase::Teardown, "stopping what was started");
                    let elapsed = env.shutdown().await;
                    progress.phase_finished(Phase::Teardown, elapsed);
                }
                Err(error)
            }
        }
    }

    async fn start_all(
        &mut self,
        plan: &ServicePlan,
        progress: &dyn ProgressSink,
        warm: Option<&WarmRun<'_>>,
    ) -> Result<(StartTimings, url::Url), StartError> {
        let mut timings = StartTimings::default();
        let artifacts = &plan.artifacts_dir;
        std::fs::create_dir_all(artifacts).map_err(|e| StartError::Infrastructure {
            what: "the artifacts directory".to_string(),
            message: format!("could not create {}: {e}", artifacts.display()),
            log_tail: vec![],
        })?;

        // PostgreSQL (then the data sets), Redis, the broker and the build need nothing from each
        // other: they overlap, and the service starts once all are ready. Each branch runs to its
        // end, so whatever did start is in `self` for teardown when another branch failed.
        let database = async {
            if plan.postgres_env.is_none() {
                return (None, Ok((Duration::ZERO, Duration::ZERO)));
            }
            if let Some(warm) = warm {
                progress.phase_started(Phase::Postgres, "a fresh database from the warm template");
                let fresh = warm
                    .dependencies
                    .fresh_database(plan.before_service.as_ref(), &warm.dataset_key)
                    .await;
                return match fresh {
                    Ok(db) => {
                        progress.phase_finished(Phase::Postgres, db.copied_in);
                        (
                            Some(Provided::Warm(db.info)),
                            Ok((db.copied_in, db.loaded_in)),
                        )
                    }
                    Err(e) => (None, Err(e)),
                };
            }
            progress.phase_started(Phase::Postgres, "starting PostgreSQL (initdb + server)");
            let started = Instant::now();
            let postgres = match postgres::start(artifacts).await {
                Ok(p) => p,
                Err(e) => return (None, Err(e)),
            };
            let postgres_took = started.elapsed();
            progress.phase_finished(Phase::Postgres, postgres_took);
            let loaded = load_data(plan, &postgres, progress)
                .await
                .map(|data_took| (postgres_took, data_took));
            (Some(Provided::Owned(postgres)), loaded)
        };
        let cache = async {
            if plan.redis_env.is_none() {
                return (None, Ok(()));
            }
            if let Some(warm) = warm {
                let started = Instant::now();
                return match warm.dependencies.empty_redis().await {
                    Ok(info) => (Some((Provided::Warm(info), started.elapsed())), Ok(())),
                    Err(e) => (None, Err(e)),
                };
            }
            progress.phase_started(Phase::Redis, "starting Redis");
            let started = Instant::now();
            match redis::start(artifacts).await {
                Ok(r) => {
                    progress.phase_finished(Phase::Redis, started.elapsed());
                    (Some((Provided::Owned(r), started.elapsed())), Ok(()))
                }
                Err(e) => (None, Err(e)),
            }
        };
        // Never warm: a broker holds the queues and messages of the run, and a watch session's
        // runs must not see each other's (deleting them all between runs would be slower to get
        // right than the 8 s a start costs, overlapped with the rest).
        let broker = async {
            if plan.broker_env.is_none() {
                return (None, Ok(Duration::ZERO));
            }
            progress.phase_started(Phase::Broker, "starting RabbitMQ");
            let started = Instant::now();
            match start_broker(artifacts).await {
                (started_broker, Ok(())) => {
                    progress.phase_finished(Phase::Broker, started.elapsed());
                    (started_broker, Ok(started.elapsed()))
                }
                (started_broker, Err(e)) => (started_broker, Err(e)),
            }
        };
        let build = async {
            let Some(build) = &plan.build else {
                return Ok(Duration::ZERO);
            };
            progress.phase_started(Phase::Build, &format!("building: {build}"));
            let started = Instant::now();
            run_build(build, plan).await?;
            progress.phase_finished(Phase::Build, started.elapsed());
            Ok(started.elapsed())
        };
        let ((postgres, loaded), (redis, redis_ok), (broker, broker_took), built) =
            tokio::join!(database, cache, broker, build);
        if let Some(started) = broker {
            self.broker_info = started.info;
            self.broker = Some(started.broker);
            self.link = started.link;
        }
        match postgres {
            Some(Provided::Owned(owned)) => {
                self.postgres_info = owned.info.clone();
                self.postgres = Some(owned);
            }
            Some(Provided::Warm(info)) => self.postgres_info = Some(info),
            None => {}
        }
        if let Some((redis, took)) = redis {
            match redis {
                Provided::Owned(owned) => {
                    self.redis_info = owned.info.clone();
                    self.redis = Some(owned);
                }
                Provided::Warm(info) => self.redis_info = Some(info),
            }
            timings.redis = took;
        }
        let (postgres_took, data_took) = loaded?;
        timings.postgres = postgres_took;
        timings.data_setup = data_took;
        redis_ok?;
        timings.broker = broker_took?;
        timings.build = built?;
        if plan.database_link {
            if let Some(info) = self.postgres_info.as_mut() {
                let server = super::link::link_database(info, [127, 0, 0, 1].into(), "127.0.0.1")
                    .await
                    .map_err(|message| StartError::Infrastructure {
                        what: "the link to PostgreSQL".to_string(),
                        message,
                        log_tail: vec![],
                    })?;
                process::note(
                    &plan.artifacts_dir.join("postgres.log"),
                    &super::link::database_link_note(&server, "127.0.0.1"),
                );
                self.database_link = Some(server);
            }
        }

        progress.phase_started(
            Phase::ServiceStart,
            &format!(
                "starting the service, waiting for {}",
                plan.readiness_target()
            ),
        );
        let started = Instant::now();
        let base_url = self.start_service(plan).await?;
        timings.service_start = started.elapsed();
        progress.phase_finished(Phase::ServiceStart, timings.service_start);
        Ok((timings, base_url))
    }

    async fn start_service(&mut self, plan: &ServicePlan) -> Result<url::Url, StartError> {
        if !plan.workdir.is_dir() {
            return Err(StartError::ServiceDidNotStart {
                message: format!(
                    "the working directory {} does not exist",
                    plan.workdir.display()
                ),
                log_tail: vec![],
            });
        }
        let port = process::free_port()
            .map_err(|e| service_infra(format!("could not find a free port: {e}")))?;
        // Truncated: a log left from an earlier run in the same dir would mislead the log tail.
        File::create(&self.service_log)
            .and_then(|_| CappedLog::shared(&self.service_log, SERVICE_LOG_CAP))
            .map(|log| self.service_output = Some(log))
            .map_err(|e| {
                service_infra(format!(
                    "could not create {}: {e}",
                    self.service_log.display()
                ))
            })?;
        let service = self.spawn_service(plan, port)?;
        self.service = Some(Mutex::new(service));
        self.launch = Some(Launch {
            plan: plan.clone(),
            port,
        });
        let base_url = url::Url::parse(&format!("http://127.0.0.1:{port}"))
            .map_err(|e| service_infra(format!("bad base URL: {e}")))?;
        self.wait_healthy(plan, port).await?;
        Ok(base_url)
    }

    /// `sh -c <command>` with the plan's environment and ours, output appended to `service.log`
    /// through a pipe (so that the log can be capped while the service keeps writing).
    fn spawn_service(&self, plan: &ServicePlan, port: u16) -> Result<Proc, StartError> {
        let Some(output) = self.service_output.clone() else {
            return Err(service_infra("service.log was not created".into()));
        };
        let (drain, log, log_err) = PipeDrain::start(output).map_err(|e| {
            service_infra(format!(
                "could not make a pipe for {}: {e}",
                self.service_log.display()
            ))
        })?;
        // The previous start's drain, if any, ends on its own when that process group is gone.
        *lock_drain(&self.service_drain) = Some(drain);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&plan.command)
            .current_dir(&plan.workdir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .envs(plan.env.iter().map(|(k, v)| (k, v)))
            // Ours come last: the service must listen where we will look for it.
            .env(&plan.port_env, port.to_string());
        if let (Some(var), Some(info)) = (&plan.postgres_env, &self.postgres_info) {
            cmd.env(var, &info.service_url);
        }
        if let (Some(var), Some(info)) = (&plan.redis_env, &self.redis_info) {
            cmd.env(var, &info.url);
        }
        if let (Some(var), Some(info)) = (&plan.broker_env, &self.broker_info) {
            cmd.env(var, &info.service_url);
        }
        Proc::spawn_untrusted(cmd, Signal::SIGTERM, SERVICE_GRACE).map_err(|e| {
            service_infra(format!(
                "could not run `sh -c` in {}: {e}",
                plan.workdir.display()
            ))
        })
    }

    /// Polls the service's readiness signal (see [`super::readiness`]) until it says ready, the
    /// service exits, or the plan's start-up timeout passes.
    async fn wait_healthy(&self, plan: &ServicePlan, port: u16) -> Result<(), StartError> {
        let base_url = url::Url::parse(&format!("http://127.0.0.1:{port}"))
            .map_err(|e| service_infra(format!("bad base URL: {e}")))?;
        let readiness = Readiness::new(plan, &base_url).map_err(service_infra)?;
        let deadline = Instant::now() + plan.startup_timeout;
        let mut last: String;
        loop {
            if let Some(status) = self.service_exit() {
                return Err(self.exited_early(status, readiness.target()));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let per_request = remaining.clamp(Duration::from_millis(100), HEALTH_REQUEST_TIMEOUT);
            match readiness.attempt(per_request).await {
                Attempt::Ready => return Ok(()),
                Attempt::NotReady(why) | Attempt::NoConnection(why) => last = why,
            }
            if Instant::now() >= deadline {
                // It may have died while we waited for the last answer; its exit explains more.
                if let Some(status) = self.service_exit() {
                    return Err(self.exited_early(status, readiness.target()));
                }
                return Err(StartError::ServiceDidNotStart {
                    message: format!(
                        "your service did not answer {} within {} (last attempt: {last})",
                        readiness.awaited(),
                        humantime::format_duration(plan.startup_timeout)
                    ),
                    log_tail: self.service_log_tail(LOG_TAIL),
                });
            }
            tokio::time::sleep(HEALTH_INTERVAL.min(remaining)).await;
        }
    }

    /// Sends `signal` to the service's process group and waits up to `wait` for it to exit.
    /// Sends `signal` to the service's process group and waits up to `wait` until every process
    /// of the group is gone (not only the `sh` we started, which dies of a SIGTERM at once while
    /// the service it runs may still be finishing its requests): `Running` while any is left.
    pub async fn signal_service(&self, signal: Signal, wait: Duration) -> ServiceState {
        let Some(service) = &self.service else {
            return self.service_state();
        };
        lock(service).signal(signal);
        let deadline = Instant::now() + wait;
        loop {
            if lock(service).group_gone() {
                return self.service_state();
            }
            if Instant::now() >= deadline {
                return ServiceState::Running;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills what is left of the service (its whole process group), then starts it again with
    /// the same command, environment and port, and waits for its health path. Returns how long
    /// the new start took.
    pub async fn restart_service(&self) -> Result<Duration, StartError> {
        let (Some(service), Some(launch)) = (&self.service, &self.launch) else {
            return Err(service_infra(
                "the service was never started, so it cannot be restarted".to_string(),
            ));
        };
        lock(service).signal(Signal::SIGKILL);
        let deadline = Instant::now() + process::KILL_WAIT;
        while !lock(service).group_gone() {
            if Instant::now() >= deadline {
                return Err(service_infra(format!(
                    "the service's processes (group {}) were still running {} after SIGKILL",
                    lock(service).pid(),
                    humantime::format_duration(process::KILL_WAIT)
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // What escaped the group may hold the port the fresh start must listen on.
        let escapes = lock(service).escapes();
        if let Some(escapes) = escapes {
            let _ = tokio::task::spawn_blocking(move || escapes.kill()).await;
        }
        let started = Instant::now();
        process::note(&self.service_log, "restarted the service");
        let fresh = self.spawn_service(&launch.plan, launch.port)?;
        let old = std::mem::replace(&mut *lock(service), fresh);
        // Its group is gone, so this returns at once; off the async threads all the same, since
        // a process handle's drop may wait.
        let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        self.wait_healthy(&launch.plan, launch.port).await?;
        Ok(started.elapsed())
    }

    fn exited_early(&self, status: ExitStatus, health_path: &str) -> StartError {
        StartError::ServiceDidNotStart {
            message: format!(
                "your service {} before it answered on {health_path}",
                process::describe_exit(status)
            ),
            log_tail: self.service_log_tail(LOG_TAIL),
        }
    }

    fn service_exit(&self) -> Option<ExitStatus> {
        self.service.as_ref().and_then(|s| lock(s).try_exit())
    }

    /// Non-blocking: whether the service process (the `sh -c` we started) is still running.
    pub fn service_state(&self) -> ServiceState {
        match self.service_exit() {
            None => ServiceState::Running,
            Some(status) => ServiceState::Exited {
                code: status.code(),
                signal: status.signal(),
            },
        }
    }

    /// The last `lines` lines of `service.log` (the service's stdout and stderr, interleaved).
    pub fn service_log_tail(&self, lines: usize) -> Vec<String> {
        self.settle_service_log();
        process::tail_lines(&self.service_log, lines)
    }

    /// `service.log`: what the service wrote to stdout and stderr in this run, up to
    /// [`SERVICE_LOG_CAP`] bytes, everything written so far in it.
    pub fn service_log_path(&self) -> &Path {
        self.settle_service_log();
        &self.service_log
    }

    /// Moves the service's output still in its pipe into `service.log`; once the service has
    /// exited, waits a moment for the pipe to end, so its last lines are there.
    fn settle_service_log(&self) {
        let drain = lock_drain(&self.service_drain);
        let Some(drain) = drain.as_ref() else { return };
        if self.service_exit().is_some() {
            capped_log::wait_ended(drain, SERVICE_LOG_SETTLE);
        } else {
            drain.settle();
        }
    }

    /// Tears everything down (see the module docs for the order) and returns how long it took.
    pub async fn shutdown(self) -> Duration {
        drop_off_async_threads(self).await
    }

    /// Pids and temp dirs, for tests that check teardown.
    #[doc(hidden)]
    pub fn debug_pids(&self) -> DebugPids {
        let mut temp_dirs = Vec::new();
        temp_dirs.extend(self.postgres.as_ref().and_then(Postgres::temp_dir));
        temp_dirs.extend(self.redis.as_ref().and_then(Redis::temp_dir));
        temp_dirs.extend(self.broker.as_ref().and_then(RabbitMq::temp_dir));
        DebugPids {
            service_pgid: self.service.as_ref().map(|s| lock(s).pid()),
            postgres_pid: self.postgres.as_ref().and_then(Postgres::pid),
            redis_pid: self.redis.as_ref().and_then(Redis::pid),
            broker_pid: self.broker.as_ref().and_then(RabbitMq::pid),
            epmd_pid: self.broker.as_ref().and_then(RabbitMq::epmd_pid),
            broker_helper_pids: self
                .broker
                .as_ref()
                .map(RabbitMq::helper_pids)
                .unwrap_or_default(),
            temp_dirs,
        }
    }
}

impl Drop for LocalEnvironment {
    fn drop(&mut self) {
        if let Some(service) = self.service.take() {
            service
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .stop();
        }
        // What the service wrote while it stopped, into the kept artifact.
        if let Some(drain) = lock_drain(&self.service_drain).as_ref() {
            drain.settle();
        }
        for link in [self.link.take(), self.database_link.take()]
            .into_iter()
            .flatten()
        {
            link.close();
        }
        if let Some(mut broker) = self.broker.take() {
            broker.stop();
        }
        if let Some(mut redis) = self.redis.take() {
            redis.stop();
        }
        if let Some(mut postgres) = self.postgres.take() {
            postgres.stop();
        }
    }
}

/// At the exit of the `grader` binary, once every run has torn down: kills whatever still
/// descends from the grader (what no run could claim while others ran, see `process`) and waits
/// for the supervisor to finish, so that nothing of ours outlives us.
pub fn leave_nothing_behind() {
    process::kill_every_descendant();
    supervisor::finish();
}

/// Drops `owner`, whose `Drop` tears processes down, and returns how long that took. Teardown is
/// bounded waits with sleeps: it runs off the async threads. Should the task not run (the runtime
/// shutting down), dropping the closure drops `owner`, which tears down too.
async fn drop_off_async_threads<T: Send + 'static>(owner: T) -> Duration {
    let started = Instant::now();
    let _ = tokio::task::spawn_blocking(move || drop(owner)).await;
    started.elapsed()
}

/// A started broker, with its link and what the service and the grader are given once both are
/// up.
struct StartedBroker {
    broker: RabbitMq,
    link: Option<LinkServer>,
    info: Option<BrokerInfo>,
}

/// The broker and its link. The broker comes back with an error too when it started, so teardown
/// still finds it.
async fn start_broker(artifacts: &Path) -> (Option<StartedBroker>, Result<(), StartError>) {
    let (broker, address) = match rabbitmq::start(artifacts).await {
        Ok(started) => started,
        Err(e) => return (None, Err(e)),
    };
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], address.port));
    match LinkServer::start([127, 0, 0, 1].into(), target).await {
        Ok(link) => {
            let listen = link.link().listen_addr();
            process::note(
                &artifacts.join("rabbitmq.log"),
                &format!("the service reaches the broker through the grader's link on {listen}"),
            );
            let info = BrokerInfo {
                grader_url: address.url(),
                service_url: amqp_url(&address.password, "127.0.0.1", listen.port()),
                link: link.link(),
            };
            let started = StartedBroker {
                broker,
                link: Some(link),
                info: Some(info),
            };
            (Some(started), Ok(()))
        }
        Err(e) => {
            let started = StartedBroker {
                broker,
                link: None,
                info: None,
            };
            let error = StartError::Infrastructure {
                what: "the link to RabbitMQ".to_string(),
                message: format!("could not listen on 127.0.0.1: {e}"),
                log_tail: vec![],
            };
            (Some(started), Err(error))
        }
    }
}

fn service_infra(message: String) -> StartError {
    StartError::Infrastructure {
        what: "your service".to_string(),
        message,
        log_tail: vec![],
    }
}

/// A server a run gets: one it started (and stops), or a warm one's connection details.
enum Provided<Server, Info> {
    Owned(Server),
    Warm(Info),
}

/// A poisoned lock only means a panic elsewhere; the process handle inside is still valid, and
/// teardown must go on.
fn lock_drain(drain: &Mutex<Option<PipeDrain>>) -> MutexGuard<'_, Option<PipeDrain>> {
    drain.lock().unwrap_or_else(|p| p.into_inner())
}

fn lock(service: &Mutex<Proc>) -> MutexGuard<'_, Proc> {
    service
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the build command with `plan.build_timeout`; output goes to `<artifacts>/build.log`.
/// Runs the plan's data-set hook (when there is one) once PostgreSQL is up; returns how long it
/// took.
async fn load_data(
    plan: &ServicePlan,
    postgres: &Postgres,
    progress: &dyn ProgressSink,
) -> Result<Duration, StartError> {
    let (Some(hook), Some(info)) = (&plan.before_service, postgres.info.as_ref()) else {
        return Ok(Duration::ZERO);
    };
    progress.phase_started(Phase::DataSetup, "loading the exercises' data");
    let started = Instant::now();
    (hook.0)(info.url.clone())
        .await
        .map_err(|message| StartError::Infrastructure {
            what: "the exercises' database set-up".to_string(),
            message,
            log_tail: vec![],
        })?;
    progress.phase_finished(Phase::DataSetup, started.elapsed());
    Ok(started.elapsed())
}

async fn run_build(build: &str, plan: &ServicePlan) -> Result<(), StartError> {
    let log = plan.artifacts_dir.join("build.log");
    let failed = |reason: String, log: &Path| StartError::BuildFailed {
        reason,
        log_tail: process::tail_lines(log, LOG_TAIL),
    };
    if !plan.workdir.is_dir() {
        return Err(failed(
            format!(
                "the working directory {} does not exist",
                plan.workdir.display()
            ),
            &log,
        ));
    }
    let infra = |message: String| StartError::Infrastructure {
        what: "the build command".to_string(),
        message,
        log_tail: vec![],
    };
    // Through a pipe into a capped log: a build that prints without end cannot fill the disk,
    // and its end (where the error is) is kept.
    let shared = File::create(&log)
        .and_then(|_| CappedLog::append_to(&log, capped_log::BUILD_LOG_CAP))
        .map(|l| Arc::new(Mutex::new(l.keeping_tail(capped_log::BUILD_LOG_TAIL))))
        .map_err(|e| infra(format!("could not create {}: {e}", log.display())))?;
    let (drain, out, err) = PipeDrain::start(shared.clone())
        .map_err(|e| infra(format!("could not create {}: {e}", log.display())))?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(build)
        .current_dir(&plan.workdir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut proc = Proc::spawn_untrusted(cmd, Signal::SIGTERM, BUILD_GRACE).map_err(|e| {
        infra(format!(
            "could not run `sh -c` in {}: {e}",
            plan.workdir.display()
        ))
    })?;
    let status = process::wait_exit(&mut proc, plan.build_timeout).await;
    // Even after a clean exit the group may hold leftovers (a daemon the build started); stop
    // reaps them, off the async threads since it may wait. Then the last of the output.
    let _ = tokio::task::spawn_blocking(move || {
        drop(proc);
        capped_log::wait_ended(&drain, SERVICE_LOG_SETTLE);
        let _ = capped_log::lock(&shared).finish();
    })
    .await;
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(failed(process::describe_exit(status), &log)),
        None => Err(failed(
            format!(
                "it did not finish within {}",
                humantime::format_duration(plan.build_timeout)
            ),
            &log,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A measured wait is printed rounded, not as `123ms 456us 789ns`.
    #[tokio::test]
    async fn a_timed_out_health_request_names_a_rounded_wait() {
        // Connections are queued by the kernel but never answered.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        let timeout = Duration::from_nanos(123_456_789);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let error = client.get(&url).timeout(timeout).send().await.unwrap_err();
        assert_eq!(
            super::readiness::describe_request_error(&error, timeout),
            "no answer within 123 ms"
        );
    }
}
