//! Local runtime: the learner's service and its dependencies as child processes of the grader.
//!
//! Every process is started in its own process group with a parent-death signal (see
//! `process::spawn_owned`), so teardown can reach everything a process forked, and nothing
//! survives the grader even when it is SIGKILLed. Every wait has a timeout.
//!
//! Teardown order: the service first (it holds connections to the databases), then Redis, then
//! PostgreSQL, then the temp dirs (only once their processes are gone, so nothing recreates files
//! in them). The artifacts dir is the learner's and is kept.

pub(crate) mod postgres;
pub(crate) mod process;
mod redis;
mod warm;

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use nix::sys::signal::Signal;

use self::postgres::Postgres;
use self::process::Proc;
use self::redis::Redis;
use super::*;
pub use warm::{WarmDependencies, WarmRun};

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

/// The processes and temp dirs of one local run: PostgreSQL and Redis when the plan asks for
/// them, and the learner's service.
///
/// Dropping it tears everything down synchronously (no tokio runtime needed), so a panic leaves
/// nothing behind; [`LocalEnvironment::shutdown`] does the same without blocking async threads.
/// The thread that polls [`LocalEnvironment::start`] need not outlive the environment: children are
/// forked by a dedicated thread that lives as long as the process.
pub struct LocalEnvironment {
    /// Behind a mutex because [`LocalEnvironment::service_state`] reaps it through `&self`.
    service: Option<Mutex<Proc>>,
    /// Servers this run started (a cold run); with warm dependencies they are not the run's.
    redis: Option<Redis>,
    postgres: Option<Postgres>,
    /// What the service is given, from this run's servers or the warm ones.
    postgres_info: Option<PostgresInfo>,
    redis_info: Option<RedisInfo>,
    service_log: PathBuf,
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
    /// cold run starts from (see [`WarmDependencies`]); teardown leaves them running.
    #[allow(clippy::type_complexity)]
    pub async fn start(
        plan: &ServicePlan,
        progress: &dyn ProgressSink,
        warm: Option<&WarmRun<'_>>,
    ) -> Result<
        (
            Self,
            Option<PostgresInfo>,
            Option<RedisInfo>,
            StartTimings,
            url::Url,
        ),
        StartError,
    > {
        let mut env = LocalEnvironment {
            service: None,
            redis: None,
            postgres: None,
            postgres_info: None,
            redis_info: None,
            service_log: plan.artifacts_dir.join("service.log"),
        };
        match env.start_all(plan, progress, warm).await {
            Ok((timings, base_url)) => {
                let postgres = env.postgres_info.clone();
                let redis = env.redis_info.clone();
                Ok((env, postgres, redis, timings, base_url))
            }
            Err(error) => {
                if env.service.is_some() || env.redis.is_some() || env.postgres.is_some() {
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

        // PostgreSQL (then the data sets), Redis and the build need nothing from each other:
        // they overlap, and the service starts once all three are ready. Each branch runs to its
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
        let ((postgres, loaded), (redis, redis_ok), built) = tokio::join!(database, cache, build);
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
        timings.build = built?;

        progress.phase_started(
            Phase::ServiceStart,
            &format!("starting the service, waiting for {}", plan.health_path),
        );
        let started = Instant::now();
        let base_url = self.start_service(plan).await?;
        timings.service_start = started.elapsed();
        progress.phase_finished(Phase::ServiceStart, timings.service_start);
        Ok((timings, base_url))
    }

    async fn start_service(&mut self, plan: &ServicePlan) -> Result<url::Url, StartError> {
        let health_path = if plan.health_path.starts_with('/') {
            plan.health_path.clone()
        } else {
            format!("/{}", plan.health_path)
        };
        if !plan.workdir.is_dir() {
            return Err(StartError::ServiceDidNotStart {
                message: format!(
                    "the working directory {} does not exist",
                    plan.workdir.display()
                ),
                log_tail: vec![],
            });
        }
        let infra = |message: String| StartError::Infrastructure {
            what: "your service".to_string(),
            message,
            log_tail: vec![],
        };
        let port =
            process::free_port().map_err(|e| infra(format!("could not find a free port: {e}")))?;
        // Truncated: a log left from an earlier run in the same dir would mislead the log tail.
        let log = File::create(&self.service_log).map_err(|e| {
            infra(format!(
                "could not create {}: {e}",
                self.service_log.display()
            ))
        })?;
        let log_err = log
            .try_clone()
            .map_err(|e| infra(format!("could not duplicate a file handle: {e}")))?;

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
            cmd.env(var, &info.url);
        }
        if let (Some(var), Some(info)) = (&plan.redis_env, &self.redis_info) {
            cmd.env(var, &info.url);
        }
        let service = Proc::spawn(cmd, Signal::SIGTERM, true, SERVICE_GRACE).map_err(|e| {
            infra(format!(
                "could not run `sh -c` in {}: {e}",
                plan.workdir.display()
            ))
        })?;
        self.service = Some(Mutex::new(service));

        let base_url = url::Url::parse(&format!("http://127.0.0.1:{port}"))
            .map_err(|e| infra(format!("bad base URL: {e}")))?;
        let health_url = format!("http://127.0.0.1:{port}{health_path}");
        // The service is on loopback: a proxy from the environment must not get in the way, and
        // a redirect is not a healthy answer.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| infra(format!("could not build an HTTP client: {e}")))?;

        let deadline = Instant::now() + plan.startup_timeout;
        let mut last: String;
        loop {
            if let Some(status) = self.service_exit() {
                return Err(self.exited_early(status, &health_path));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let per_request = remaining.clamp(Duration::from_millis(100), HEALTH_REQUEST_TIMEOUT);
            match client.get(&health_url).timeout(per_request).send().await {
                Ok(response) if response.status().is_success() => return Ok(base_url),
                Ok(response) => last = format!("status {}", response.status()),
                Err(error) => last = describe_request_error(&error, per_request),
            }
            if Instant::now() >= deadline {
                // It may have died while we waited for the last answer; its exit explains more.
                if let Some(status) = self.service_exit() {
                    return Err(self.exited_early(status, &health_path));
                }
                return Err(StartError::ServiceDidNotStart {
                    message: format!(
                        "your service did not answer 2xx on {health_path} within {} (last \
                         attempt: {last})",
                        humantime::format_duration(plan.startup_timeout)
                    ),
                    log_tail: self.service_log_tail(LOG_TAIL),
                });
            }
            tokio::time::sleep(HEALTH_INTERVAL.min(remaining)).await;
        }
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
        process::tail_lines(&self.service_log, lines)
    }

    /// `service.log`: everything the service wrote to stdout and stderr in this run.
    pub fn service_log_path(&self) -> &Path {
        &self.service_log
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
        DebugPids {
            service_pgid: self.service.as_ref().map(|s| lock(s).pid()),
            postgres_pid: self.postgres.as_ref().and_then(Postgres::pid),
            redis_pid: self.redis.as_ref().and_then(Redis::pid),
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
        if let Some(mut redis) = self.redis.take() {
            redis.stop();
        }
        if let Some(mut postgres) = self.postgres.take() {
            postgres.stop();
        }
    }
}

/// Drops `owner`, whose `Drop` tears processes down, and returns how long that took. Teardown is
/// bounded waits with sleeps: it runs off the async threads. Should the task not run (the runtime
/// shutting down), dropping the closure drops `owner`, which tears down too.
async fn drop_off_async_threads<T: Send + 'static>(owner: T) -> Duration {
    let started = Instant::now();
    let _ = tokio::task::spawn_blocking(move || drop(owner)).await;
    started.elapsed()
}

/// A server a run gets: one it started (and stops), or a warm one's connection details.
enum Provided<Server, Info> {
    Owned(Server),
    Warm(Info),
}

/// A poisoned lock only means a panic elsewhere; the process handle inside is still valid, and
/// teardown must go on.
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
    let out = File::create(&log)
        .map_err(|e| infra(format!("could not create {}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| infra(format!("could not duplicate a file handle: {e}")))?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(build)
        .current_dir(&plan.workdir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut proc = Proc::spawn(cmd, Signal::SIGTERM, true, BUILD_GRACE).map_err(|e| {
        infra(format!(
            "could not run `sh -c` in {}: {e}",
            plan.workdir.display()
        ))
    })?;
    let status = process::wait_exit(&mut proc, plan.build_timeout).await;
    // Even after a clean exit the group may hold leftovers (a daemon the build started); stop
    // reaps them, off the async threads since it may wait.
    let _ = tokio::task::spawn_blocking(move || drop(proc)).await;
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

/// "connection refused", "no answer within 2s", or the innermost cause.
fn describe_request_error(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {}", humantime::format_duration(timeout));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut innermost = error.to_string();
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".to_string(),
                std::io::ErrorKind::ConnectionReset => return "connection reset".to_string(),
                _ => {}
            }
        }
        innermost = current.to_string();
        source = current.source();
    }
    innermost
}
