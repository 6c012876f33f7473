//! Docker runtime: the learner's service as a container built from its Dockerfile, with
//! PostgreSQL, Redis and RabbitMQ as containers on a per-run network (testcontainers 0.28).
//!
//! - **Reached from the host only through mapped ports on 127.0.0.1** (`get_host_port_ipv4`),
//!   never container IPs. The service reaches PostgreSQL and Redis by the names `postgres` and
//!   `redis` (extra hosts on the run's network) and the grader's mock upstreams through the host
//!   gateway (`host.docker.internal`, see [`container_url`]). The broker only through the
//!   grader's link ([`FaultLink`]), which listens where the mocks do and forwards to the broker's
//!   port mapped on 127.0.0.1, so the grader can cut it.
//! - **The service keeps its host port across a restart**: it is mapped to a port the grader
//!   picks, not an ephemeral one Docker would pick again at the next start.
//! - **Images are cached** by a hash of the build context: `grader-svc:<hash>` is built once
//!   (`with_skip_if_exists`), and an unchanged service is not rebuilt.
//! - **Untrusted code is boxed in**: memory, CPU and pids limits, never privileged,
//!   `no-new-privileges`.
//! - **Everything a run creates carries labels**: `grader.run` (this run) and `grader.owner`
//!   (`<pid>:<process start time>` of the grader). Teardown removes by `grader.run`; at start-up,
//!   what a killed grader left behind is swept by `grader.owner`, only when that process is gone.
//!   Teardown runs on `shutdown`, on error, and in `Drop` (panic, a start-up future dropped on
//!   Ctrl-C), from a thread with its own tokio runtime so it works wherever `Drop` runs.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};
use testcontainers::bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptions, ListNetworksOptions,
    LogsOptions, RemoveContainerOptions, StartContainerOptions,
};
use testcontainers::bollard::Docker;
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::capped_log::{
    read_capped_line, CappedLog, BUILD_LOG_CAP, BUILD_LOG_TAIL, MAX_LOG_LINE, SERVICE_LOG_CAP,
};
use super::link::LinkServer;
use super::readiness::Attempt;
use super::*;

/// Label naming one run; teardown removes everything carrying it.
pub const LABEL_RUN: &str = "grader.run";
/// Label naming the grader process (`<pid>:<start time>`); the start-up sweep reads it.
pub const LABEL_OWNER: &str = "grader.owner";
/// Label on the images the grader builds (the service's, and a failed build's replay).
pub const LABEL_BUILD: &str = "grader.build";
/// Default images: the official ones, major version pinned (scripts/build-offline-images builds
/// local stand-ins under the same tags).
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:15";
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7";
pub const DEFAULT_RABBITMQ_IMAGE: &str = "rabbitmq:3.10";
/// Port the service listens on inside its container (`PORT`).
const SERVICE_PORT: u16 = 8080;
/// Limits of the service container.
pub const MEMORY_LIMIT: i64 = 512 * 1024 * 1024;
pub const PIDS_LIMIT: i64 = 256;
pub const NANO_CPUS: i64 = 1_000_000_000;
const LOG_TAIL: usize = 30;
const HEALTH_INTERVAL: Duration = Duration::from_millis(100);
/// A health attempt's outcome when nothing accepted the connection.
const NO_CONNECTION: &str = "no connection";
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace between SIGTERM and SIGKILL when the service container stops.
const STOP_GRACE_SECS: i32 = 5;
/// Host ports tried for the service container when the one picked was taken meanwhile.
const SERVICE_PORT_ATTEMPTS: usize = 3;
/// Where the broker's files go in its container (none of the image's own configuration is read).
const BROKER_DIR: &str = "/grader";

/// Settings of the docker runtime, from `[docker]` in grader.toml and the environment.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Absolute path of the Dockerfile (inside the service folder, the build context).
    pub dockerfile: PathBuf,
    /// Runs on the host before the image build (`[docker] build`).
    pub host_build: Option<String>,
    /// An untrusted service's host command is refused: it would run outside any container.
    pub refuse_host_build: bool,
    pub postgres_image: String,
    pub redis_image: String,
    pub rabbitmq_image: String,
}

impl DockerOptions {
    /// Images: `GRADER_POSTGRES_IMAGE` / `GRADER_REDIS_IMAGE` / `GRADER_RABBITMQ_IMAGE` win over
    /// `[docker]`, which wins over the defaults.
    pub fn new(service_dir: &Path, section: &crate::manifest::DockerSection) -> DockerOptions {
        let pick = |var: &str, manifest: &Option<String>, default: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .or_else(|| manifest.clone())
                .unwrap_or_else(|| default.to_string())
        };
        DockerOptions {
            dockerfile: service_dir.join(section.dockerfile.as_deref().unwrap_or("Dockerfile")),
            host_build: section.build.clone(),
            refuse_host_build: false,
            postgres_image: pick(
                "GRADER_POSTGRES_IMAGE",
                &section.postgres_image,
                DEFAULT_POSTGRES_IMAGE,
            ),
            redis_image: pick(
                "GRADER_REDIS_IMAGE",
                &section.redis_image,
                DEFAULT_REDIS_IMAGE,
            ),
            rabbitmq_image: pick(
                "GRADER_RABBITMQ_IMAGE",
                &section.rabbitmq_image,
                DEFAULT_RABBITMQ_IMAGE,
            ),
        }
    }
}

/// Rewrites a URL on the host's loopback (`127.0.0.1`, `localhost`) so a container reaches it:
/// through the host gateway, `host.docker.internal`. Other URLs are returned unchanged.
pub fn container_url(url: &str) -> String {
    for host in ["127.0.0.1", "localhost"] {
        for scheme in ["http://", "https://"] {
            let prefix = format!("{scheme}{host}");
            if let Some(rest) = url.strip_prefix(&prefix) {
                if rest.is_empty() || rest.starts_with([':', '/']) {
                    return format!("{scheme}host.docker.internal{rest}");
                }
            }
        }
    }
    url.to_string()
}

/// Where the grader's mock upstreams listen for a container: on the host side of Docker's default
/// bridge (the address `host.docker.internal:host-gateway` resolves to), advertised as
/// `host.docker.internal`. Not on every interface: the mocks stay off the machine's other
/// networks. Falls back to loopback when the bridge cannot be inspected.
pub async fn upstream_options() -> crate::upstream::UpstreamOptions {
    let gateway = async {
        let docker = testcontainers::core::client::docker_client_instance()
            .await
            .ok()?;
        let bridge = docker
            .inspect_network(
                "bridge",
                None::<testcontainers::bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .ok()?;
        bridge
            .ipam?
            .config?
            .iter()
            .filter_map(|c| {
                if let Some(gateway) = c.gateway.as_deref().filter(|g| !g.is_empty()) {
                    return gateway.parse::<std::net::Ipv4Addr>().ok();
                }
                // Docker 20.10 may list only the subnet; its gateway is the subnet's first host.
                let base: std::net::Ipv4Addr =
                    c.subnet.as_deref()?.split('/').next()?.parse().ok()?;
                Some(std::net::Ipv4Addr::from(u32::from(base) + 1))
            })
            .next()
            .map(std::net::IpAddr::V4)
    };
    match tokio::time::timeout(Duration::from_secs(3), gateway).await {
        Ok(Some(ip)) => crate::upstream::UpstreamOptions {
            bind: ip,
            advertise_host: "host.docker.internal".into(),
            ..Default::default()
        },
        _ => crate::upstream::UpstreamOptions::default(),
    }
}

/// One line about a Docker daemon that cannot be used, or `None` when it answers a ping.
pub async fn daemon_problem() -> Option<String> {
    let ping = async {
        let docker = testcontainers::core::client::docker_client_instance()
            .await
            .map_err(|e| e.to_string())?;
        docker.ping().await.map_err(|e| e.to_string())
    };
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "/var/run/docker.sock".into());
    match tokio::time::timeout(Duration::from_secs(3), ping).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) if e.contains("Socket not found") || e.contains("SocketNotFound") => Some(
            format!("no Docker daemon: {host} does not exist (start Docker, or set DOCKER_HOST)"),
        ),
        Ok(Err(_)) => Some(format!(
            "the Docker daemon at {host} does not answer (is it running? is DOCKER_HOST right?)"
        )),
        Err(_) => Some(format!(
            "the Docker daemon at {host} did not answer within 3s"
        )),
    }
}

/// `--runtime auto`: docker when the service has a Dockerfile and the daemon answers a ping,
/// otherwise local. Returns whether docker was chosen and why, in words.
pub async fn choose_auto(dockerfile: &Path) -> (bool, String) {
    if !dockerfile.is_file() {
        return (
            false,
            format!("no {} next to grader.toml", file_name(dockerfile)),
        );
    }
    match daemon_problem().await {
        None => (
            true,
            format!(
                "{} next to grader.toml and the Docker daemon answers",
                file_name(dockerfile)
            ),
        ),
        Some(problem) => (
            false,
            format!("{} found, but {problem}", file_name(dockerfile)),
        ),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Identity of this grader process for the `grader.owner` label: pid and kernel start time (so a
/// recycled pid is not mistaken for us).
fn owner_id() -> String {
    let pid = std::process::id();
    format!("{pid}:{}", process_start_time(pid).unwrap_or(0))
}

fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command (field 2) may contain spaces, so count from its closing paren.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the grader that owns `owner` (`<pid>:<start time>`) is still running.
fn owner_alive(owner: &str) -> bool {
    let Some((pid, start)) = owner.split_once(':') else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    process_start_time(pid) == Some(start)
}

fn label_filter(key: &str, value: Option<&str>) -> HashMap<String, Vec<String>> {
    let label = match value {
        Some(v) => format!("{key}={v}"),
        None => key.to_string(),
    };
    HashMap::from([("label".to_string(), vec![label])])
}

/// The `grader.owner` label of a container or network ("" when it has none).
fn owner_label(labels: &Option<HashMap<String, String>>) -> &str {
    labels
        .as_ref()
        .and_then(|l| l.get(LABEL_OWNER))
        .map_or("", String::as_str)
}

/// Removes containers and networks carrying `key[=value]` whose owner passes `remove_owner`.
/// Returns how many things were removed. Best effort: errors are skipped.
async fn remove_labelled(
    docker: &Docker,
    key: &str,
    value: Option<&str>,
    remove_owner: &dyn Fn(&str) -> bool,
) -> usize {
    let mut removed = 0;
    let options = ListContainersOptions {
        all: true,
        filters: Some(label_filter(key, value)),
        ..Default::default()
    };
    if let Ok(containers) = docker.list_containers(Some(options)).await {
        for c in containers {
            if !remove_owner(owner_label(&c.labels)) {
                continue;
            }
            if let Some(id) = c.id {
                let rm = RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                };
                if docker.remove_container(&id, Some(rm)).await.is_ok() {
                    removed += 1;
                }
            }
        }
    }
    let options = ListNetworksOptions {
        filters: Some(label_filter(key, value)),
    };
    if let Ok(networks) = docker.list_networks(Some(options)).await {
        for n in networks {
            if !remove_owner(owner_label(&n.labels)) {
                continue;
            }
            if let Some(id) = n.id {
                if docker.remove_network(&id).await.is_ok() {
                    removed += 1;
                }
            }
        }
    }
    removed
}

/// Removes what earlier graders that are no longer running left behind (killed with SIGKILL, or
/// a machine that lost power). Runs of live graders are never touched.
pub async fn sweep_stale(docker: &Docker) -> usize {
    remove_labelled(docker, LABEL_OWNER, None, &|owner| !owner_alive(owner)).await
}

/// Removes everything of one run, from any context (own thread, own runtime, own client).
fn remove_run_blocking(run: &str) {
    let run = run.to_string();
    let worker = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            if let Ok(docker) = Docker::connect_with_defaults() {
                let work = remove_labelled(&docker, LABEL_RUN, Some(&run), &|_| true);
                let _ = tokio::time::timeout(Duration::from_secs(30), work).await;
            }
        });
    });
    let _ = worker.join();
}

/// The containers and network of one docker run.
pub struct DockerEnvironment {
    run: String,
    docker: Option<Docker>,
    postgres: Option<ContainerAsync<GenericImage>>,
    redis: Option<ContainerAsync<GenericImage>>,
    broker: Option<ContainerAsync<GenericImage>>,
    link: Option<LinkServer>,
    /// The service's way to PostgreSQL when the run makes the database fail.
    database_link: Option<LinkServer>,
    broker_info: Option<BrokerInfo>,
    service: Option<ContainerAsync<GenericImage>>,
    /// What the service was started with, for a restart's health wait.
    plan: Option<ServicePlan>,
    base_url: Option<url::Url>,
    service_log: PathBuf,
    state: Arc<Mutex<ServiceState>>,
    /// Set by the monitor when the kernel killed the service for its memory limit.
    oom_killed: Arc<std::sync::atomic::AtomicBool>,
    /// Log followers of the dependencies.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The service's monitor and log follower, replaced at a restart.
    service_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    torn_down: bool,
}

/// Everything [`DockerEnvironment::start`] hands back.
pub struct Started {
    pub env: DockerEnvironment,
    pub postgres: Option<PostgresInfo>,
    pub redis: Option<RedisInfo>,
    pub broker: Option<BrokerInfo>,
    pub timings: StartTimings,
    pub base_url: url::Url,
}

/// The broker's container and what the grader and the link need from it.
struct StartedBroker {
    container: ContainerAsync<GenericImage>,
    password: String,
    port: u16,
}

fn infra(what: &str, message: impl Into<String>) -> StartError {
    StartError::Infrastructure {
        what: what.to_string(),
        message: message.into(),
        log_tail: vec![],
    }
}

impl DockerEnvironment {
    /// Sweeps stale runs, creates the network, starts PostgreSQL and Redis as the plan asks, runs
    /// the data hook, builds (or reuses) the service image and starts it, then waits for its
    /// health path. On error everything started is removed before returning; if the future is
    /// dropped midway, `Drop` removes it.
    pub async fn start(
        plan: &ServicePlan,
        options: &DockerOptions,
        progress: &dyn ProgressSink,
    ) -> Result<Started, StartError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut env = DockerEnvironment {
            run: format!("{}-{nanos:08x}", owner_id().replace(':', "-")),
            docker: None,
            postgres: None,
            redis: None,
            broker: None,
            link: None,
            database_link: None,
            broker_info: None,
            service: None,
            plan: None,
            base_url: None,
            service_log: plan.artifacts_dir.join("service.log"),
            state: Arc::new(Mutex::new(ServiceState::Running)),
            oom_killed: Arc::default(),
            tasks: Mutex::default(),
            service_tasks: Mutex::default(),
            torn_down: false,
        };
        match env.start_all(plan, options, progress).await {
            Ok((postgres, redis, timings, base_url)) => Ok(Started {
                postgres,
                redis,
                broker: env.broker_info.clone(),
                timings,
                base_url,
                env,
            }),
            Err(error) => {
                if env.docker.is_some() {
                    progress.phase_started(Phase::Teardown, "removing the run's containers");
                    let elapsed = env.shutdown().await;
                    progress.phase_finished(Phase::Teardown, elapsed);
                }
                Err(error)
            }
        }
    }

    /// The label set of everything this run creates.
    fn labels(&self) -> [(String, String); 2] {
        [
            (LABEL_RUN.to_string(), self.run.clone()),
            (LABEL_OWNER.to_string(), owner_id()),
        ]
    }

    fn network(&self) -> String {
        format!("grader-{}", self.run)
    }

    #[allow(clippy::type_complexity)]
    async fn start_all(
        &mut self,
        plan: &ServicePlan,
        options: &DockerOptions,
        progress: &dyn ProgressSink,
    ) -> Result<
        (
            Option<PostgresInfo>,
            Option<RedisInfo>,
            StartTimings,
            url::Url,
        ),
        StartError,
    > {
        let mut timings = StartTimings::default();
        std::fs::create_dir_all(&plan.artifacts_dir).map_err(|e| {
            infra(
                "the artifacts directory",
                format!("could not create {}: {e}", plan.artifacts_dir.display()),
            )
        })?;
        if let Some(problem) = daemon_problem().await {
            return Err(StartError::MissingBinary {
                what: "Docker".into(),
                install_hint: format!("{problem}; or grade with --runtime local"),
            });
        }
        if !options.dockerfile.is_file() {
            return Err(StartError::BuildFailed {
                reason: format!(
                    "there is no {} (the docker runtime builds your service from it)",
                    options.dockerfile.display()
                ),
                log_tail: vec![],
            });
        }
        let docker = testcontainers::core::client::docker_client_instance()
            .await
            .map_err(|e| infra("Docker", e.to_string()))?;
        sweep_stale(&docker).await;
        self.docker = Some(docker.clone());

        let network = self.network();
        let create = testcontainers::bollard::models::NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".into()),
            labels: Some(self.labels().into_iter().collect()),
            ..Default::default()
        };
        docker
            .create_network(create)
            .await
            .map_err(|e| infra("the run's Docker network", e.to_string()))?;

        let mut extra_hosts = vec!["host.docker.internal:host-gateway".to_string()];
        let mut service_env: Vec<(String, String)> = Vec::new();

        // PostgreSQL (then the data sets), Redis, the broker and the image build need nothing
        // from each other: they overlap. Each branch runs to its end, so a container that did
        // start is kept for teardown (and logged) even when another branch failed.
        let database = async {
            if plan.postgres_env.is_none() {
                return Ok(None);
            }
            let started = Instant::now();
            let (container, info, ip) = self.start_postgres(options, &network, progress).await?;
            let postgres_took = started.elapsed();
            progress.phase_finished(Phase::Postgres, postgres_took);
            let data_took = match &plan.before_service {
                Some(hook) => {
                    progress.phase_started(Phase::DataSetup, "loading the exercises' data");
                    let started = Instant::now();
                    let loaded = (hook.0)(info.url.clone())
                        .await
                        .map_err(|m| infra("the exercises' database set-up", m));
                    if let Err(e) = loaded {
                        return Err((e, Some(container)));
                    }
                    progress.phase_finished(Phase::DataSetup, started.elapsed());
                    started.elapsed()
                }
                None => Duration::ZERO,
            };
            Ok(Some((container, info, ip, postgres_took, data_took)))
        };
        let cache = async {
            if plan.redis_env.is_none() {
                return Ok(None);
            }
            let started = Instant::now();
            let (container, info, ip) = self.start_redis(options, &network, progress).await?;
            progress.phase_finished(Phase::Redis, started.elapsed());
            Ok(Some((container, info, ip, started.elapsed())))
        };
        let broker = async {
            if plan.broker_env.is_none() {
                return Ok(None);
            }
            let started = Instant::now();
            let broker = self.start_broker(options, &network, progress).await?;
            progress.phase_finished(Phase::Broker, started.elapsed());
            Ok(Some((broker, started.elapsed())))
        };
        let image = async {
            let started = Instant::now();
            if let (Some(build), true) = (&options.host_build, options.refuse_host_build) {
                return Err(StartError::BuildRefused {
                    message: format!(
                        "grader.toml asks for `[docker] build = {build:?}`, a command on the grading machine, and with --untrusted nothing of the service runs outside its containers"
                    ),
                    fix: "build inside the Dockerfile (a multi-stage build: a first stage with the toolchain compiles, the last one copies the result) and remove `[docker] build`".into(),
                });
            }
            if let Some(build) = &options.host_build {
                progress.phase_started(Phase::Build, &format!("building on the host: {build}"));
                run_host_build(build, plan).await?;
                append_line(
                    &plan.artifacts_dir.join("build.log"),
                    &format!("host build took {:.1}s", started.elapsed().as_secs_f64()),
                );
            }
            let image_started = Instant::now();
            let image = build_image(&docker, plan, options, progress).await?;
            append_line(
                &plan.artifacts_dir.join("build.log"),
                &format!(
                    "image step took {:.1}s",
                    image_started.elapsed().as_secs_f64()
                ),
            );
            progress.phase_finished(Phase::Build, started.elapsed());
            Ok::<_, StartError>((image, started.elapsed()))
        };
        let (database, cache, broker, image) = tokio::join!(database, cache, broker, image);
        // Keep every container that started, before looking at any error.
        let broker = match broker {
            Ok(Some((started, took))) => {
                self.follow_logs(&started.container, &plan.artifacts_dir.join("rabbitmq.log"));
                self.broker = Some(started.container);
                Ok(Some((started.password, started.port, took)))
            }
            Ok(None) => Ok(None),
            Err((e, container)) => {
                if let Some(c) = container {
                    self.follow_logs(&c, &plan.artifacts_dir.join("rabbitmq.log"));
                    self.broker = Some(c);
                }
                Err(e)
            }
        };
        let database = match database {
            Ok(d) => d,
            Err((e, container)) => {
                if let Some(c) = container {
                    self.follow_logs(&c, &plan.artifacts_dir.join("postgres.log"));
                    self.postgres = Some(c);
                }
                if let Ok(Some((c, ..))) = cache {
                    self.redis = Some(c);
                }
                return Err(e);
            }
        };
        let mut postgres_info = None;
        if let Some((container, mut info, ip, postgres_took, data_took)) = database {
            self.follow_logs(&container, &plan.artifacts_dir.join("postgres.log"));
            self.postgres = Some(container);
            extra_hosts.push(format!("postgres:{ip}"));
            if plan.database_link {
                // Like the broker's link: where the service reaches the grader's mocks.
                let reach = upstream_options().await;
                let server =
                    super::link::link_database(&mut info, reach.bind, &reach.advertise_host)
                        .await
                        .map_err(|message| infra("the link to PostgreSQL", message))?;
                append_line(
                    &plan.artifacts_dir.join("postgres.log"),
                    &format!(
                        "grader: {}",
                        super::link::database_link_note(&server, &reach.advertise_host)
                    ),
                );
                self.database_link = Some(server);
            }
            if let Some(var) = &plan.postgres_env {
                service_env.push((var.clone(), info.service_url.clone()));
            }
            postgres_info = Some(info);
            timings.postgres = postgres_took;
            timings.data_setup = data_took;
        }
        let mut redis_info = None;
        if let Some((container, info, ip, took)) = cache.map_err(|(e, _)| e)? {
            self.follow_logs(&container, &plan.artifacts_dir.join("redis.log"));
            self.redis = Some(container);
            extra_hosts.push(format!("redis:{ip}"));
            if let Some(var) = &plan.redis_env {
                service_env.push((var.clone(), "redis://redis:6379".into()));
            }
            redis_info = Some(info);
            timings.redis = took;
        }
        if let Some((password, port, took)) = broker? {
            let info = self.start_link(&password, port, plan).await?;
            if let Some(var) = &plan.broker_env {
                service_env.push((var.clone(), info.service_url.clone()));
            }
            self.broker_info = Some(info);
            timings.broker = took;
        }
        let (image, build_took) = image?;
        timings.build = build_took;

        progress.phase_started(
            Phase::ServiceStart,
            &format!(
                "starting the service container, waiting for {}",
                plan.readiness_target()
            ),
        );
        let started = Instant::now();
        // Created empty now, so the log tail never shows an earlier run's lines.
        std::fs::File::create(&self.service_log).map_err(|e| {
            infra(
                "your service",
                format!("{}: {e}", self.service_log.display()),
            )
        })?;
        let mut attempt = 1;
        let (container, port) = loop {
            // A port of our choosing, not an ephemeral one: Docker would pick the ephemeral one
            // again when a restart starts the container, and the service's URL would change.
            let port = super::local::process::free_port()
                .map_err(|e| infra("your service", format!("no free port: {e}")))?;
            let name = match attempt {
                1 => format!("grader-{}-service", self.run),
                n => format!("grader-{}-service-{n}", self.run),
            };
            let mut request = image
                .clone()
                .with_mapped_port(port, SERVICE_PORT.tcp())
                .with_network(&network)
                .with_labels(self.labels())
                .with_container_name(name);
            for (k, v) in &plan.env {
                request = request.with_env_var(k, container_url(v));
            }
            for (k, v) in &service_env {
                request = request.with_env_var(k, v);
            }
            request = request
                .with_env_var(&plan.port_env, SERVICE_PORT.to_string())
                .with_env_var("HOST", "0.0.0.0");
            let extra_hosts = extra_hosts.clone();
            let request = request.with_host_config_modifier(move |hc| {
                hc.memory = Some(MEMORY_LIMIT);
                hc.memory_swap = Some(MEMORY_LIMIT);
                hc.nano_cpus = Some(NANO_CPUS);
                hc.pids_limit = Some(PIDS_LIMIT);
                hc.privileged = Some(false);
                hc.security_opt = Some(vec!["no-new-privileges".into()]);
                hc.extra_hosts = Some(extra_hosts.clone());
                // On loopback only, where the grader looks: the learner's service is not
                // published on the machine's other networks.
                hc.port_bindings = Some(HashMap::from([(
                    format!("{SERVICE_PORT}/tcp"),
                    Some(vec![testcontainers::bollard::models::PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(port.to_string()),
                    }]),
                )]));
            });
            match request.start().await {
                Ok(container) => break (container, port),
                Err(e) => {
                    let text = e.to_string();
                    let taken = text.contains("already allocated")
                        || text.contains("address already in use");
                    if taken && attempt < SERVICE_PORT_ATTEMPTS {
                        attempt += 1;
                        continue;
                    }
                    return Err(StartError::ServiceDidNotStart {
                        message: format!("your service's container did not start: {e}"),
                        log_tail: vec![],
                    });
                }
            }
        };
        let id = container.id().to_string();
        self.follow_service_log(&docker, &id, None);
        self.monitor(id, docker.clone());
        self.service = Some(container);
        let base_url = url::Url::parse(&format!("http://127.0.0.1:{port}"))
            .map_err(|e| infra("your service", e.to_string()))?;
        self.plan = Some(plan.clone());
        self.base_url = Some(base_url.clone());
        self.wait_healthy(plan, &base_url).await?;
        timings.service_start = started.elapsed();
        progress.phase_finished(Phase::ServiceStart, timings.service_start);
        Ok((postgres_info, redis_info, timings, base_url))
    }

    /// Starts the PostgreSQL container (with `pg_stat_statements`) and waits until `app`
    /// accepts connections. The container comes back with the error when it started but is not
    /// ready, so teardown still finds it.
    #[allow(clippy::type_complexity)]
    async fn start_postgres(
        &self,
        options: &DockerOptions,
        network: &str,
        progress: &dyn ProgressSink,
    ) -> Result<
        (ContainerAsync<GenericImage>, PostgresInfo, String),
        (StartError, Option<ContainerAsync<GenericImage>>),
    > {
        progress.phase_started(
            Phase::Postgres,
            &format!("starting PostgreSQL ({})", options.postgres_image),
        );
        let (name, tag) = split_image(&options.postgres_image);
        let admin_password = crate::pg::new_password();
        let service_password = crate::pg::new_password();
        let request = GenericImage::new(name, tag)
            .with_exposed_port(5432.tcp())
            // With the logging collector the server's last line on its own output is the
            // hand-over to the collector ("ready to accept connections" goes to the log files);
            // `prepare_database` then retries until `app` accepts connections over TCP.
            .with_wait_for(WaitFor::message_on_either_std(
                "redirecting log output to logging collector process",
            ))
            .with_network(network)
            .with_labels(self.labels())
            // No login is trusted from another container: the service's runs next to it and
            // must not log in as the grader (see `crate::pg::SERVICE_ROLE`).
            .with_env_var("POSTGRES_PASSWORD", &admin_password)
            .with_env_var("POSTGRES_HOST_AUTH_METHOD", "scram-sha-256")
            .with_env_var("POSTGRES_DB", "app")
            // The server log goes to files in the container, as for the local runtime
            // (`local/postgres.rs`, LOG_SETTINGS): the database probes read the executed plans
            // `auto_explain` writes to its CSV through SQL. After start-up the container's own
            // output (postgres.log) holds only the collector's hand-over line.
            .with_cmd(postgres_command())
            .with_startup_timeout(DEPENDENCY_TIMEOUT);
        let container = request.start().await.map_err(|e| {
            (
                dependency_error("PostgreSQL", &options.postgres_image, e.to_string()),
                None,
            )
        })?;
        let port = match container.get_host_port_ipv4(5432.tcp()).await {
            Ok(p) => p,
            Err(e) => return Err((infra("PostgreSQL", e.to_string()), Some(container))),
        };
        let ip = match self.container_ip(container.id(), network).await {
            Ok(ip) => ip,
            Err(e) => return Err((e, Some(container))),
        };
        let info = PostgresInfo {
            url: crate::pg::url("postgres", &admin_password, "127.0.0.1", port, "app"),
            service_url: crate::pg::url(
                crate::pg::SERVICE_ROLE,
                &service_password,
                "postgres",
                5432,
                "app",
            ),
            port,
            database: "app".into(),
            link: None,
        };
        if let Err(e) = prepare_database(&info, &service_password).await {
            return Err((e, Some(container)));
        }
        Ok((container, info, ip))
    }

    /// Starts the Redis container; like [`Self::start_postgres`], a started container comes back
    /// with the error.
    #[allow(clippy::type_complexity)]
    async fn start_redis(
        &self,
        options: &DockerOptions,
        network: &str,
        progress: &dyn ProgressSink,
    ) -> Result<
        (ContainerAsync<GenericImage>, RedisInfo, String),
        (StartError, Option<ContainerAsync<GenericImage>>),
    > {
        progress.phase_started(
            Phase::Redis,
            &format!("starting Redis ({})", options.redis_image),
        );
        let (name, tag) = split_image(&options.redis_image);
        let container = GenericImage::new(name, tag)
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .with_network(network)
            .with_labels(self.labels())
            .with_cmd([
                "redis-server",
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .with_startup_timeout(DEPENDENCY_TIMEOUT)
            .start()
            .await
            .map_err(|e| {
                (
                    dependency_error("Redis", &options.redis_image, e.to_string()),
                    None,
                )
            })?;
        let port = match container.get_host_port_ipv4(6379.tcp()).await {
            Ok(p) => p,
            Err(e) => return Err((infra("Redis", e.to_string()), Some(container))),
        };
        let ip = match self.container_ip(container.id(), network).await {
            Ok(ip) => ip,
            Err(e) => return Err((e, Some(container))),
        };
        let info = RedisInfo {
            url: format!("redis://127.0.0.1:{port}"),
            port,
        };
        Ok((container, info, ip))
    }

    /// Starts the broker's container (configured as the local runtime's: the run's user with a
    /// random password, no loopback-only users) and waits for an AMQP login through its mapped
    /// port. Like [`Self::start_postgres`], a started container comes back with the error.
    async fn start_broker(
        &self,
        options: &DockerOptions,
        network: &str,
        progress: &dyn ProgressSink,
    ) -> Result<StartedBroker, (StartError, Option<ContainerAsync<GenericImage>>)> {
        use super::local::rabbitmq::{classic_config, login, random_token};
        progress.phase_started(
            Phase::Broker,
            &format!("starting RabbitMQ ({})", options.rabbitmq_image),
        );
        let password = random_token(24);
        let (name, tag) = split_image(&options.rabbitmq_image);
        let container = GenericImage::new(name, tag)
            .with_exposed_port(5672.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Server startup complete"))
            .with_network(network)
            .with_labels(self.labels())
            .with_copy_to(
                format!("{BROKER_DIR}/rabbitmq.config"),
                classic_config(None, &password).into_bytes(),
            )
            .with_copy_to(format!("{BROKER_DIR}/enabled_plugins"), b"[].\n".to_vec())
            .with_env_var(
                "RABBITMQ_CONFIG_FILE",
                format!("{BROKER_DIR}/rabbitmq.config"),
            )
            // Neither exists: the image's own conf.d and advanced config are not read.
            .with_env_var("RABBITMQ_CONFIG_FILES", format!("{BROKER_DIR}/conf.d"))
            .with_env_var(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                format!("{BROKER_DIR}/advanced.config"),
            )
            .with_env_var(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                format!("{BROKER_DIR}/enabled_plugins"),
            )
            .with_env_var("RABBITMQ_LOGS", "-")
            .with_startup_timeout(DEPENDENCY_TIMEOUT)
            .start()
            .await
            .map_err(|e| {
                (
                    dependency_error("RabbitMQ", &options.rabbitmq_image, e.to_string()),
                    None,
                )
            })?;
        let port = match container.get_host_port_ipv4(5672.tcp()).await {
            Ok(p) => p,
            Err(e) => return Err((infra("RabbitMQ", e.to_string()), Some(container))),
        };
        // The startup line comes once the listener is up; a login also proves the credentials.
        let url = amqp_url(&password, "127.0.0.1", port);
        let deadline = Instant::now() + DEPENDENCY_TIMEOUT;
        loop {
            let last = match login(&url, Duration::from_secs(5)).await {
                Ok(()) => break,
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                let message = format!(
                    "no AMQP login succeeded within {} (last attempt: {last})",
                    humantime::format_duration(DEPENDENCY_TIMEOUT)
                );
                return Err((infra("RabbitMQ", message), Some(container)));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(StartedBroker {
            container,
            password,
            port,
        })
    }

    /// The link to the broker, listening where the service reaches the grader's mock upstreams
    /// (the bridge gateway, advertised as `host.docker.internal`).
    async fn start_link(
        &mut self,
        password: &str,
        port: u16,
        plan: &ServicePlan,
    ) -> Result<BrokerInfo, StartError> {
        let where_containers_reach_us = upstream_options().await;
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let link = LinkServer::start(where_containers_reach_us.bind, target)
            .await
            .map_err(|e| {
                infra(
                    "the link to RabbitMQ",
                    format!(
                        "could not listen on {}: {e}",
                        where_containers_reach_us.bind
                    ),
                )
            })?;
        let listen = link.link().listen_addr();
        append_line(
            &plan.artifacts_dir.join("rabbitmq.log"),
            &format!(
                "grader: the service reaches the broker through the grader's link on {listen} \
                 (as {}), which forwards to 127.0.0.1:{port}",
                where_containers_reach_us.advertise_host
            ),
        );
        let info = BrokerInfo {
            grader_url: amqp_url(password, "127.0.0.1", port),
            service_url: amqp_url(
                password,
                &where_containers_reach_us.advertise_host,
                listen.port(),
            ),
            link: link.link(),
        };
        self.link = Some(link);
        Ok(info)
    }

    async fn container_ip(&self, id: &str, network: &str) -> Result<String, StartError> {
        let docker = self
            .docker
            .as_ref()
            .ok_or_else(|| infra("Docker", "no client"))?;
        let inspect = docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| infra("Docker", e.to_string()))?;
        inspect
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|n| n.get(network).and_then(|e| e.ip_address.clone()))
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| {
                infra(
                    "Docker",
                    format!("container {id} has no address on {network}"),
                )
            })
    }

    /// Streams the container's stdout and stderr into `path` until it is removed.
    fn follow_logs(&self, container: &ContainerAsync<GenericImage>, path: &Path) {
        // Emptied first (an earlier run's lines would mislead), then appended to, so a line the
        // grader adds is not overwritten.
        let opened = std::fs::File::create(path)
            .and_then(|_| std::fs::OpenOptions::new().append(true).open(path));
        let Ok(file) = opened else {
            return;
        };
        let file = Arc::new(Mutex::new(file));
        for reader in [container.stdout(true), container.stderr(true)] {
            let file = file.clone();
            lock(&self.tasks).push(tokio::spawn(async move {
                // Line by line (so stdout and stderr interleave by lines), each line capped: a
                // stream without a newline must not be buffered whole.
                let mut reader = reader;
                let mut line = Vec::new();
                while let Ok(Some(skipped)) =
                    read_capped_line(&mut reader, &mut line, MAX_LOG_LINE).await
                {
                    let text = String::from_utf8_lossy(&line);
                    let more = match skipped {
                        0 => String::new(),
                        n => format!("… ({n} more bytes)"),
                    };
                    let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = writeln!(f, "{text}{more}");
                }
            }));
        }
    }

    /// Appends the service container's output (stdout and stderr as Docker interleaved them) to
    /// `service.log`, up to [`SERVICE_LOG_CAP`] bytes, from `since` on (the container's start after a restart: Docker's log of a
    /// container holds every start's output, and its `since` has whole seconds only).
    fn follow_service_log(&self, docker: &Docker, id: &str, since: Option<DockerTime>) {
        use futures_util::StreamExt;
        // Capped (counting what an earlier start of the container wrote): past the cap, the
        // stream is still read, so the container never waits on the grader.
        let Ok(mut file) = CappedLog::append_to(&self.service_log, SERVICE_LOG_CAP) else {
            return;
        };
        let options = LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            timestamps: true,
            since: since
                .as_ref()
                .map_or(0, |t| t.unix_seconds().saturating_sub(1)),
            ..Default::default()
        };
        let mut stream = docker.logs(id, Some(options));
        lock(&self.service_tasks).push(tokio::spawn(async move {
            while let Some(Ok(output)) = stream.next().await {
                let frame = String::from_utf8_lossy(output.as_ref()).into_owned();
                let (stamp, text) = frame.split_once(' ').unwrap_or(("", &frame));
                let before = match (&since, DockerTime::parse(stamp)) {
                    (Some(since), Some(at)) => at < *since,
                    _ => false,
                };
                if !before {
                    let _ = file.write(text.as_bytes());
                }
            }
        }));
    }

    /// Keeps [`ServiceState`] current without blocking `state()`: polls the container.
    fn monitor(&self, id: String, docker: Docker) {
        let state = self.state.clone();
        let oom = self.oom_killed.clone();
        lock(&self.service_tasks).push(tokio::spawn(async move {
            loop {
                match docker
                    .inspect_container(&id, None::<InspectContainerOptions>)
                    .await
                {
                    Ok(inspect) => {
                        if let Some(s) = inspect.state {
                            if s.running != Some(true) && s.status.is_some() {
                                if s.oom_killed == Some(true) {
                                    oom.store(true, std::sync::atomic::Ordering::SeqCst);
                                }
                                let code = s.exit_code.map(|c| c as i32);
                                // 128+n is how Docker reports death by signal n.
                                let signal = code.filter(|c| *c > 128).map(|c| c - 128);
                                *state.lock().unwrap_or_else(|p| p.into_inner()) =
                                    ServiceState::Exited { code, signal };
                                return;
                            }
                        }
                    }
                    Err(_) => {
                        *state.lock().unwrap_or_else(|p| p.into_inner()) = ServiceState::Exited {
                            code: None,
                            signal: None,
                        };
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    /// Sends `signal` to the service container (`docker kill --signal`) and waits up to `wait`
    /// for it to stop.
    pub async fn signal_service(
        &self,
        signal: nix::sys::signal::Signal,
        wait: Duration,
    ) -> Result<ServiceState, String> {
        let (Some(docker), Some(service)) = (&self.docker, &self.service) else {
            return Err("the service container is not running".to_string());
        };
        let options = KillContainerOptions {
            signal: signal.as_str().to_string(),
        };
        if let Err(e) = docker.kill_container(service.id(), Some(options)).await {
            // Killing a container that already stopped is refused; its state says so.
            if self.container_running(service.id()).await != Some(false) {
                return Err(format!(
                    "docker could not signal the service's container: {e}"
                ));
            }
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.container_running(service.id()).await == Some(false) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The monitor notices within its interval; answer with what Docker says now.
        Ok(match self.container_running(service.id()).await {
            Some(false) => self.exited_state(service.id()).await,
            _ => self.service_state(),
        })
    }

    /// Kills the service container if it still runs, starts the same container again (same
    /// environment, same host port), appends its new output to `service.log` after a line
    /// `grader: restarted the service`, and waits for the health path.
    pub async fn restart_service(&self) -> Result<Duration, StartError> {
        let (Some(docker), Some(service), Some(plan), Some(base_url)) =
            (&self.docker, &self.service, &self.plan, &self.base_url)
        else {
            return Err(infra(
                "your service",
                "the service container was never started, so it cannot be restarted",
            ));
        };
        let id = service.id().to_string();
        if self.container_running(&id).await != Some(false) {
            let options = KillContainerOptions {
                signal: "SIGKILL".to_string(),
            };
            let _ = docker.kill_container(&id, Some(options)).await;
        }
        let deadline = Instant::now() + DEPENDENCY_TIMEOUT;
        while self.container_running(&id).await != Some(false) {
            if Instant::now() >= deadline {
                return Err(infra(
                    "your service",
                    format!(
                        "its container still ran {} after SIGKILL",
                        humantime::format_duration(DEPENDENCY_TIMEOUT)
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The old monitor would report the stop after the restart, and the old log follower
        // ends with the stopped container: both are replaced. The follower gets a moment to
        // write the last lines Docker still delivers.
        let old: Vec<_> = lock(&self.service_tasks).drain(..).collect();
        for task in old {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        append_line(&self.service_log, "grader: restarted the service");
        let started = Instant::now();
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .map_err(|e| StartError::ServiceDidNotStart {
                message: format!("your service's container did not start again: {e}"),
                log_tail: self.service_log_tail(LOG_TAIL),
            })?;
        let started_at = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|i| i.state?.started_at)
            .and_then(|at| DockerTime::parse(&at));
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = ServiceState::Running;
        self.oom_killed
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.follow_service_log(docker, &id, started_at);
        self.monitor(id, docker.clone());
        self.wait_healthy(plan, base_url).await?;
        Ok(started.elapsed())
    }

    /// Whether the container runs (None when Docker does not say).
    async fn container_running(&self, id: &str) -> Option<bool> {
        let docker = self.docker.as_ref()?;
        let inspect = docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .ok()?;
        inspect.state?.running
    }

    async fn exited_state(&self, id: &str) -> ServiceState {
        let code = match &self.docker {
            Some(docker) => docker
                .inspect_container(id, None::<InspectContainerOptions>)
                .await
                .ok()
                .and_then(|i| i.state?.exit_code)
                .map(|c| c as i32),
            None => None,
        };
        ServiceState::Exited {
            code,
            signal: code.filter(|c| *c > 128).map(|c| c - 128),
        }
    }

    async fn wait_healthy(
        &self,
        plan: &ServicePlan,
        base_url: &url::Url,
    ) -> Result<(), StartError> {
        let readiness = super::readiness::Readiness::new(plan, base_url)
            .map_err(|e| infra("your service", e))?;
        let deadline = Instant::now() + plan.startup_timeout;
        let mut last;
        loop {
            if let ServiceState::Exited { code, .. } = self.service_state() {
                return Err(StartError::ServiceDidNotStart {
                    message: format!(
                        "your service's container {} before it answered on {}",
                        self.describe_exit(code),
                        readiness.target()
                    ),
                    log_tail: self.service_log_tail(LOG_TAIL),
                });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let per_request = remaining.clamp(Duration::from_millis(100), HEALTH_REQUEST_TIMEOUT);
            match readiness.attempt(per_request).await {
                Attempt::Ready => return Ok(()),
                Attempt::NotReady(why) => last = why,
                // A mapped port accepts the connection and then drops it when nothing listens
                // inside: either way, nothing inside answered.
                Attempt::NoConnection(why) if why.starts_with("no answer") => {
                    last = "no answer".into()
                }
                Attempt::NoConnection(_) => last = NO_CONNECTION.into(),
            }
            if Instant::now() >= deadline {
                let mut message = format!(
                    "your service did not answer {} within {} (last attempt: {last})",
                    readiness.awaited(),
                    humantime::format_duration(plan.startup_timeout)
                );
                if last == NO_CONNECTION {
                    // Running, yet nothing accepts on the mapped port: most often a service
                    // listening on 127.0.0.1 (or on IPv6 only) inside its container, where the
                    // port mapping cannot reach it.
                    message.push_str(&format!(
                        "; the container runs but nothing accepted a connection on port {}: inside a container, listen on 0.0.0.0 (the HOST variable says so), not on 127.0.0.1 or an IPv6-only address",
                        SERVICE_PORT
                    ));
                }
                if let Some(pids) = self.pids_in_use().await {
                    if pids >= PIDS_LIMIT as u64 * 9 / 10 {
                        message.push_str(&format!(
                            "; it hit its limit of {PIDS_LIMIT} processes (does it fork without end?)"
                        ));
                    }
                }
                return Err(StartError::ServiceDidNotStart {
                    message,
                    log_tail: self.service_log_tail(LOG_TAIL),
                });
            }
            tokio::time::sleep(HEALTH_INTERVAL.min(remaining)).await;
        }
    }

    async fn pids_in_use(&self) -> Option<u64> {
        use futures_util::StreamExt;
        let docker = self.docker.as_ref()?;
        let id = self.service.as_ref()?.id().to_string();
        let options = testcontainers::bollard::query_parameters::StatsOptions {
            stream: false,
            one_shot: true,
        };
        let stats = tokio::time::timeout(
            Duration::from_secs(15),
            docker.stats(&id, Some(options)).next(),
        )
        .await
        .ok()??
        .ok()?;
        stats.pids_stats?.current
    }

    fn describe_exit(&self, code: Option<i32>) -> String {
        if self.oom_killed.load(std::sync::atomic::Ordering::SeqCst) {
            return format!(
                "was killed for exceeding its memory limit ({} MiB)",
                MEMORY_LIMIT / 1024 / 1024
            );
        }
        match code {
            Some(c) if c > 128 => format!("was killed by signal {}", c - 128),
            Some(c) => format!("exited with code {c}"),
            None => "disappeared".into(),
        }
    }

    /// Non-blocking: whether the service container still runs (kept current by a monitor task).
    pub fn service_state(&self) -> ServiceState {
        if self.service.is_none() {
            return ServiceState::Running;
        }
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the kernel killed the service for exceeding its memory limit.
    pub fn oom_killed(&self) -> bool {
        self.oom_killed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The last `lines` lines of `service.log`.
    pub fn service_log_tail(&self, lines: usize) -> Vec<String> {
        tail_lines(&self.service_log, lines)
    }

    /// `service.log`: the container's stdout and stderr in this run, as followed so far (the
    /// follower writes each line as Docker delivers it, so the last lines may lag briefly).
    pub fn service_log_path(&self) -> &Path {
        &self.service_log
    }

    /// This run's `grader.run` label value.
    pub fn run_label(&self) -> &str {
        &self.run
    }

    /// Stops the service (SIGTERM, SIGKILL after a grace), removes every container and the
    /// network of the run. Returns how long it took.
    pub async fn shutdown(mut self) -> Duration {
        let started = Instant::now();
        if let Some(service) = self.service.take() {
            let _ = service.stop_with_timeout(Some(STOP_GRACE_SECS)).await;
            let _ = service.rm().await;
        }
        for link in [self.link.take(), self.database_link.take()]
            .into_iter()
            .flatten()
        {
            link.close();
        }
        for container in [self.broker.take(), self.redis.take(), self.postgres.take()]
            .into_iter()
            .flatten()
        {
            let _ = container.rm().await;
        }
        if let Some(docker) = &self.docker {
            // Anything carrying the run's label (a container whose start was cut short), then
            // the network; the daemon may need a moment to release a removed container's
            // endpoint, so removal is retried briefly.
            for _ in 0..25 {
                remove_labelled(docker, LABEL_RUN, Some(&self.run), &|_| true).await;
                let options = ListNetworksOptions {
                    filters: Some(label_filter(LABEL_RUN, Some(&self.run))),
                };
                match docker.list_networks(Some(options)).await {
                    Ok(left) if !left.is_empty() => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    _ => break,
                }
            }
        }
        self.abort_tasks();
        self.torn_down = true;
        started.elapsed()
    }

    fn abort_tasks(&self) {
        for tasks in [&self.tasks, &self.service_tasks] {
            for task in lock(tasks).drain(..) {
                task.abort();
            }
        }
    }
}

impl Drop for DockerEnvironment {
    fn drop(&mut self) {
        self.abort_tasks();
        for link in [self.link.take(), self.database_link.take()]
            .into_iter()
            .flatten()
        {
            link.close();
        }
        if !self.torn_down && self.docker.is_some() {
            // testcontainers' own Drop removes the containers too, but not our network, and only
            // inside a runtime; this works anywhere.
            remove_run_blocking(&self.run);
        }
    }
}

/// A poisoned lock only means a panic elsewhere; the task handles inside are still valid.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A time as Docker writes it (RFC 3339 in UTC with up to nine digits of fraction, trailing
/// zeros dropped: `2026-11-30T21:29:26.5091Z`), comparable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct DockerTime {
    /// `YYYY-MM-DDTHH:MM:SS`: fixed width, so it orders as text.
    seconds: String,
    nanos: u32,
}

impl DockerTime {
    fn parse(text: &str) -> Option<DockerTime> {
        let text = text.trim().strip_suffix('Z')?;
        let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
        if seconds.len() != 19
            || fraction.len() > 9
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let nanos = format!("{fraction:0<9}").parse().ok()?;
        Some(DockerTime {
            seconds: seconds.to_string(),
            nanos,
        })
    }

    /// Seconds since 1970 (for Docker's `since`, which takes whole seconds).
    fn unix_seconds(&self) -> i32 {
        let field = |range: std::ops::Range<usize>| -> i64 {
            self.seconds
                .get(range)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let (year, month, day) = (field(0..4), field(5..7), field(8..10));
        let (hour, minute, second) = (field(11..13), field(14..16), field(17..19));
        let days = crate::spec::calendar::days_from_civil(year, month, day);
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
        i32::try_from(seconds).unwrap_or(0)
    }
}

fn dependency_error(what: &str, image: &str, error: String) -> StartError {
    if error.contains("PullImage") || error.contains("pull") {
        let variable = match what {
            "Redis" => "GRADER_REDIS_IMAGE",
            "RabbitMQ" => "GRADER_RABBITMQ_IMAGE",
            _ => "GRADER_POSTGRES_IMAGE",
        };
        return StartError::MissingImage {
            what: what.to_string(),
            message: format!("the image {image} is not on this machine and could not be pulled"),
            fix: format!(
                "build the offline images with scripts/build-offline-images, or name another image with {variable}"
            ),
        };
    }
    infra(what, error)
}

fn split_image(image: &str) -> (String, String) {
    // A registry port (`host:5000/name`) is not a tag: only a colon after the last slash counts.
    let slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[slash..].rfind(':') {
        Some(i) => (
            image[..slash + i].to_string(),
            image[slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

/// Creates `pg_stat_statements` in `app`, and lets the service's role in
/// ([`crate::pg::admit_service`]), once PostgreSQL accepts connections. With the official
/// image the ready line also appears for its init-time server, so connecting is retried.
async fn prepare_database(info: &PostgresInfo, service_password: &str) -> Result<(), StartError> {
    let deadline = Instant::now() + DEPENDENCY_TIMEOUT;
    let mut last;
    loop {
        let attempt = async {
            let client = crate::pg::connect(&info.url, "postgres").await?;
            client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await
                .map_err(|e| e.to_string())?;
            crate::pg::admit_service(&client, "app", service_password).await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(infra(
                "PostgreSQL",
                format!("database `app` was not ready: {last}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `[docker] build` on the host (output in build.log), bounded by the build timeout.
async fn run_host_build(build: &str, plan: &ServicePlan) -> Result<(), StartError> {
    let log = plan.artifacts_dir.join("build.log");
    // Through a pipe into a capped log, as the local runtime's build.
    let shared = std::fs::File::create(&log)
        .and_then(|_| CappedLog::append_to(&log, BUILD_LOG_CAP))
        .map(|l| Arc::new(Mutex::new(l.keeping_tail(BUILD_LOG_TAIL))))
        .map_err(|e| infra("the build command", format!("{}: {e}", log.display())))?;
    let (drain, out, err) = super::capped_log::PipeDrain::start(shared.clone())
        .map_err(|e| infra("the build command", format!("{}: {e}", log.display())))?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(build)
        .current_dir(&plan.workdir)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| infra("the build command", e.to_string()))?;
    let status = tokio::time::timeout(plan.build_timeout, child.wait()).await;
    let group = child.id();
    let settled = tokio::task::spawn_blocking(move || {
        super::capped_log::wait_ended(&drain, Duration::from_millis(500));
        let _ = super::capped_log::lock(&shared).finish();
    });
    let kill_group = |pid: Option<u32>| {
        if let Some(pid) = pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    };
    match status {
        Ok(Ok(s)) if s.success() => {
            let _ = settled.await;
            Ok(())
        }
        Ok(Ok(s)) => {
            let _ = settled.await;
            Err(StartError::BuildFailed {
                reason: format!("`{build}` exited with {s}"),
                log_tail: tail_lines(&log, LOG_TAIL),
            })
        }
        Ok(Err(e)) => Err(infra("the build command", e.to_string())),
        Err(_) => {
            kill_group(group);
            let _ = settled.await;
            Err(StartError::BuildFailed {
                reason: format!(
                    "`{build}` did not finish within {}",
                    humantime::format_duration(plan.build_timeout)
                ),
                log_tail: tail_lines(&log, LOG_TAIL),
            })
        }
    }
}

/// The files of the build context: the service folder minus `.git`, `.grader` and what
/// `.dockerignore` excludes, sorted, as (absolute path, path in the context).
pub fn context_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let ignore = DockerIgnore::load(dir);
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let rel = path
                .strip_prefix(dir)
                .map_err(std::io::Error::other)?
                .to_string_lossy()
                .replace('\\', "/");
            if rel == ".git" || rel == ".grader" {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && !ignore.excludes(&rel) {
                files.push((path, rel));
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(files)
}

/// The subset of `.dockerignore` the grader honours: one pattern a line, `#` comments, `*`,
/// `?` and `**` wildcards, `!` to re-include; the last matching line wins, and a pattern that
/// matches a directory excludes what is under it. `Dockerfile` and `.dockerignore` are always
/// sent, as Docker does.
struct DockerIgnore(Vec<(bool, String)>);

impl DockerIgnore {
    fn load(dir: &Path) -> DockerIgnore {
        let text = std::fs::read_to_string(dir.join(".dockerignore")).unwrap_or_default();
        DockerIgnore(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| match l.strip_prefix('!') {
                    Some(p) => (false, p.trim().trim_matches('/').to_string()),
                    None => (
                        true,
                        l.trim_start_matches("./").trim_matches('/').to_string(),
                    ),
                })
                .collect(),
        )
    }

    fn excludes(&self, rel: &str) -> bool {
        if rel == "Dockerfile" || rel == ".dockerignore" {
            return false;
        }
        let mut excluded = false;
        for (exclude, pattern) in &self.0 {
            // The path itself or any of its parent directories.
            let matched = rel
                .match_indices('/')
                .map(|(i, _)| &rel[..i])
                .chain([rel])
                .any(|prefix| glob_match(pattern, prefix));
            if matched {
                excluded = *exclude;
            }
        }
        excluded
    }
}

fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(b'*'), _) if p.get(1) == Some(&b'*') => {
                let rest = if p.get(2) == Some(&b'/') {
                    &p[3..]
                } else {
                    &p[2..]
                };
                (0..=t.len()).any(|i| go(rest, &t[i..]))
            }
            (Some(b'*'), _) => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != b'/')
                .any(|i| go(&p[1..], &t[i..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Hash of the build context: paths, modes and contents, plus the Dockerfile. Hex, 16 chars.
pub fn context_hash(files: &[(PathBuf, String)], dockerfile: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    for (path, rel) in files
        .iter()
        .map(|(p, r)| (p.as_path(), r.as_str()))
        .chain([(dockerfile, "\0Dockerfile")])
    {
        let mut file = std::fs::File::open(path)?;
        let mode = file.metadata()?.permissions().mode();
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        hasher.update(mode.to_le_bytes());
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        hasher.update([0xff]);
    }
    let digest = hasher.finalize();
    Ok(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// Builds the service image, or reuses it when a context with the same hash was built before.
async fn build_image(
    docker: &Docker,
    plan: &ServicePlan,
    options: &DockerOptions,
    progress: &dyn ProgressSink,
) -> Result<GenericImage, StartError> {
    let context = plan.service_dir.clone();
    let dockerfile = options.dockerfile.clone();
    let (files, hash) = tokio::task::spawn_blocking(move || {
        let files = context_files(&context)?;
        let hash = context_hash(&files, &dockerfile)?;
        Ok::<_, std::io::Error>((files, hash))
    })
    .await
    .map_err(|e| infra("the build context", e.to_string()))?
    .map_err(|e| infra("the build context", e.to_string()))?;
    let tag = format!("grader-svc:{hash}");
    if docker.inspect_image(&tag).await.is_ok() {
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(plan.artifacts_dir.join("build.log"))
            .and_then(|mut f| writeln!(f, "reusing image {tag}: the build context is unchanged"));
        progress.phase_started(
            Phase::Build,
            &format!("image {tag} is up to date (context unchanged), not rebuilding"),
        );
        return Ok(GenericImage::new("grader-svc", &hash));
    }
    let bytes: u64 = files
        .iter()
        .filter_map(|(p, _)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    progress.phase_started(
        Phase::Build,
        &format!(
            "building image {tag} from {} ({} files, {:.1} MB)",
            file_name(&options.dockerfile),
            files.len(),
            bytes as f64 / 1e6
        ),
    );
    let build = build_streamed(docker, &files, &options.dockerfile, &tag);
    let log = plan.artifacts_dir.join("build.log");
    match tokio::time::timeout(plan.build_timeout, build).await {
        Ok(Ok(())) => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .ok();
            if let Some(f) = f.as_mut() {
                let _ = writeln!(f, "built image {tag}");
            }
            Ok(GenericImage::new("grader-svc", &hash))
        }
        Ok(Err(error)) => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| infra("the image build", e.to_string()))?;
            let _ = writeln!(f, "docker build of {tag} failed:\n{error}");
            drop(f);
            // BuildKit reports the failing step but not its output; the classic builder streams
            // every step's output, so the build is replayed once with it, into build.log.
            append_line(
                &log,
                "\nthe same build with the classic builder, for its full output:",
            );
            let replay = classic_build_log(docker, &files, &options.dockerfile, &log);
            let _ = tokio::time::timeout(plan.build_timeout, replay).await;
            let reason = build_error_reason(&error.to_string());
            Err(StartError::BuildFailed {
                reason,
                log_tail: tail_lines(&log, LOG_TAIL),
            })
        }
        Err(_) => Err(StartError::BuildFailed {
            reason: format!(
                "the image build did not finish within {}",
                humantime::format_duration(plan.build_timeout)
            ),
            log_tail: tail_lines(&log, LOG_TAIL),
        }),
    }
}

/// The build context as a tar archive in an unnamed temp file (gone when closed), at its start:
/// the context is streamed from disk to the daemon, never held in memory (it may be large).
fn pack_context(files: &[(PathBuf, String)], dockerfile: &Path) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    let mut builder = tar::Builder::new(tempfile::tempfile()?);
    // Docker's tar reader refuses GNU sparse entries ("unhandled tar header type 83"), and the tar
    // crate writes one for any file the filesystem reports holes in (a file written by an earlier
    // run, a preallocated database file): every file goes in whole.
    builder.sparse(false);
    builder.append_path_with_name(dockerfile, "Dockerfile")?;
    for (path, rel) in files {
        if rel != "Dockerfile" {
            builder.append_path_with_name(path, rel)?;
        }
    }
    let mut file = builder.into_inner()?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// [`pack_context`] off the async threads, as a stream of chunks read from the file (for
/// `bollard::body_try_stream`).
async fn streamed_context(
    files: &[(PathBuf, String)],
    dockerfile: &Path,
) -> std::io::Result<impl futures_util::Stream<Item = std::io::Result<hyper::body::Bytes>>> {
    use tokio::io::AsyncReadExt;
    let files = files.to_vec();
    let dockerfile = dockerfile.to_path_buf();
    let file = tokio::task::spawn_blocking(move || pack_context(&files, &dockerfile))
        .await
        .map_err(std::io::Error::other)??;
    let chunks =
        futures_util::stream::try_unfold(tokio::fs::File::from_std(file), |mut file| async move {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = file.read(&mut chunk).await?;
            chunk.truncate(n);
            Ok::<_, std::io::Error>((n > 0).then(|| (chunk.into(), file)))
        });
    Ok(chunks)
}

/// Builds `tag` with BuildKit from the streamed context, labelled as the grader's.
async fn build_streamed(
    docker: &Docker,
    files: &[(PathBuf, String)],
    dockerfile: &Path,
    tag: &str,
) -> Result<(), String> {
    use futures_util::StreamExt;
    use testcontainers::bollard::query_parameters::{BuildImageOptions, BuilderVersion};
    let context = streamed_context(files, dockerfile)
        .await
        .map_err(|e| format!("could not pack the build context: {e}"))?;
    let body = testcontainers::bollard::body_try_stream(context);
    // BuildKit wants a session id; nothing is served on it (the context is the body).
    let session = format!(
        "grader-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.to_string()),
        rm: true,
        version: BuilderVersion::BuilderBuildKit,
        session: Some(session),
        labels: Some(HashMap::from([(LABEL_BUILD.to_string(), "1".to_string())])),
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(body));
    while let Some(item) = stream.next().await {
        if let Err(err) = item {
            // Worded as the client library worded it, which `build_error_reason` reads.
            return Err(format!("failed to build the image '{tag}', error: {err}"));
        }
    }
    Ok(())
}

/// Runs the build with the classic builder (no BuildKit session, nothing pulled, no tag,
/// intermediate containers removed even on failure) and appends its output to `log`. The
/// images of the steps it built are removed after it (a failed build leaves them dangling);
/// steps taken from the cache are left as they were.
async fn classic_build_log(
    docker: &Docker,
    files: &[(PathBuf, String)],
    dockerfile: &Path,
    log: &Path,
) {
    use futures_util::StreamExt;
    use testcontainers::bollard::query_parameters::{
        BuildImageOptions, BuilderVersion, RemoveImageOptions,
    };
    let Ok(context) = streamed_context(files, dockerfile).await else {
        append_line(log, "(could not pack the build context again)");
        return;
    };
    let body = testcontainers::bollard::body_try_stream(context);
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        rm: true,
        forcerm: true,
        version: BuilderVersion::BuilderV1,
        labels: Some(HashMap::from([(LABEL_BUILD.to_string(), "1".to_string())])),
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(body));
    let mut steps = StepImages::default();
    // The steps run the learner's commands, which may print without end: build.log stays under
    // its cap, counting what the host build wrote before.
    let mut out = CappedLog::append_to(log, BUILD_LOG_CAP)
        .ok()
        .map(|l| l.keeping_tail(BUILD_LOG_TAIL));
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    // The classic builder colours a step's stderr; the log is plain text.
                    let text = text.replace("\u{1b}[91m", "").replace("\u{1b}[0m", "");
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        steps.read(line);
                        if let Some(out) = out.as_mut() {
                            let _ = out.write(format!("{line}\n").as_bytes());
                        }
                    }
                }
            }
            Err(e) => {
                append_line(log, &e.to_string());
                break;
            }
        }
    }
    let options = RemoveImageOptions {
        noprune: true,
        ..Default::default()
    };
    for id in steps.built.iter().rev() {
        // Only an image nobody tagged: a step image is never tagged, so this leaves alone
        // anything the output named that is someone's.
        let untagged = docker
            .inspect_image(id)
            .await
            .is_ok_and(|image| image.repo_tags.as_ref().is_none_or(Vec::is_empty));
        if untagged {
            let _ = docker.remove_image(id, Some(options.clone()), None).await;
        }
    }
}

/// The images the classic builder made for the steps it ran (` ---> 3f2a…` after a step), from
/// its output lines: not the base image of a `FROM` step, nor one taken from the cache
/// (` ---> Using cache` comes first).
#[derive(Default)]
struct StepImages {
    built: Vec<String>,
    /// The next image id is not one this build made.
    skip_next: bool,
}

impl StepImages {
    /// At most this many (a Dockerfile has tens of steps; the output is the service's).
    const MAX: usize = 1000;

    fn read(&mut self, line: &str) {
        let line = line.trim();
        if let Some(step) = line.strip_prefix("Step ") {
            let instruction = step.split_once(" : ").map_or("", |(_, i)| i.trim_start());
            self.skip_next = instruction
                .get(..5)
                .is_some_and(|i| i.eq_ignore_ascii_case("FROM "));
            return;
        }
        let Some(rest) = line.strip_prefix("---> ") else {
            return;
        };
        let rest = rest.trim();
        if rest == "Using cache" {
            self.skip_next = true;
        } else if !rest.is_empty()
            && rest.chars().all(|c| c.is_ascii_hexdigit())
            && !std::mem::take(&mut self.skip_next)
            && self.built.len() < Self::MAX
        {
            self.built.push(rest.to_string());
        }
    }
}

/// The daemon's words for a failed build, without the client's wrapping.
fn build_error_reason(error: &str) -> String {
    let inner = error
        .split("error: \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .or_else(|| {
            error
                .split("message: \"")
                .nth(1)
                .and_then(|s| s.split('"').next())
        });
    format!(
        "docker build failed: {}",
        inner.unwrap_or(error).replace("\\\"", "\"")
    )
}

fn append_line(path: &Path, line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// `postgres` with the same settings as the local runtime's server (`local/postgres.rs`): the
/// logging the database probes read, and the server settings (a short `deadlock_timeout`).
fn postgres_command() -> Vec<String> {
    use super::local::postgres::{LOG_SETTINGS, SERVER_SETTINGS};
    let mut cmd = vec!["postgres".to_string()];
    let settings = ["shared_preload_libraries=pg_stat_statements", "fsync=off"]
        .into_iter()
        .chain(LOG_SETTINGS.iter().copied())
        .chain(SERVER_SETTINGS.iter().copied());
    for setting in settings {
        cmd.push("-c".into());
        cmd.push(setting.into());
    }
    cmd
}

fn tail_lines(path: &Path, lines: usize) -> Vec<String> {
    // The same bounded reader as the local runtime's: only the end of the file, lines cut.
    super::local::process::tail_lines(path, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_go_through_the_host_gateway() {
        assert_eq!(
            container_url("http://127.0.0.1:4100/pay"),
            "http://host.docker.internal:4100/pay"
        );
        assert_eq!(
            container_url("http://localhost:80"),
            "http://host.docker.internal:80"
        );
        assert_eq!(
            container_url("http://127.0.0.10:80"),
            "http://127.0.0.10:80"
        );
        assert_eq!(container_url("debug"), "debug");
    }

    #[test]
    fn image_names_split_at_the_tag_only() {
        assert_eq!(split_image("postgres:15"), ("postgres".into(), "15".into()));
        assert_eq!(
            split_image("host:5000/pg"),
            ("host:5000/pg".into(), "latest".into())
        );
        assert_eq!(
            split_image("host:5000/pg:16"),
            ("host:5000/pg".into(), "16".into())
        );
    }

    #[test]
    fn step_images_are_the_ones_the_build_made() {
        let output = "Step 1/4 : FROM alpine:3.19
 ---> 05455a08881e
Step 2/4 : COPY . /app
 ---> Using cache
 ---> 1a2b3c4d5e6f
Step 3/4 : RUN make
 ---> Running in 9f8e7d6c5b4a
Removing intermediate container 9f8e7d6c5b4a
 ---> abcdef012345
Step 4/4 : RUN false
 ---> Running in 0123456789ab
The command '/bin/sh -c false' returned a non-zero code: 1";
        let mut steps = StepImages::default();
        output.lines().for_each(|l| steps.read(l));
        assert_eq!(steps.built, vec!["abcdef012345"]);
    }

    /// The context is packed into a file, not memory: what a build sends is read from disk.
    #[test]
    fn the_build_context_is_packed_into_a_file() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join("big.bin"), vec![7u8; 3 << 20]).unwrap();
        let files = context_files(dir.path()).unwrap();
        let mut packed = pack_context(&files, &dir.path().join("Dockerfile")).unwrap();
        assert!(packed.metadata().unwrap().len() > 3 << 20);
        let mut archive = Vec::new();
        packed.read_to_end(&mut archive).unwrap();
        let names: Vec<String> = tar::Archive::new(&archive[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["Dockerfile", "big.bin"]);
    }

    /// A file with holes goes in as a regular entry: Docker rejects GNU sparse headers.
    #[test]
    fn a_sparse_file_is_packed_as_a_regular_file() {
        use std::io::{Read, Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let mut holes = std::fs::File::create(dir.path().join("holes.db")).unwrap();
        holes.seek(SeekFrom::Start(8 << 20)).unwrap();
        holes.write_all(b"end").unwrap();
        holes.sync_all().unwrap();
        drop(holes);
        let files = context_files(dir.path()).unwrap();
        let mut packed = pack_context(&files, &dir.path().join("Dockerfile")).unwrap();
        let mut archive = Vec::new();
        packed.read_to_end(&mut archive).unwrap();
        for entry in tar::Archive::new(&archive[..]).entries().unwrap() {
            let entry = entry.unwrap();
            assert_eq!(entry.header().entry_type(), tar::EntryType::Regular);
            if entry.path().unwrap().ends_with("holes.db") {
                assert_eq!(entry.size(), (8 << 20) + 3);
            }
        }
    }

    #[test]
    fn dockerignore_subset() {
        let ignore = DockerIgnore(vec![
            (true, "*".into()),
            (false, "Dockerfile".into()),
            (false, ".docker/bin".into()),
            (true, "**/*.tmp".into()),
        ]);
        assert!(ignore.excludes("src/main.rs"));
        assert!(!ignore.excludes(".docker/bin"));
        assert!(!ignore.excludes("Dockerfile"));
        assert!(ignore.excludes("a/b/c.tmp"));
        assert!(glob_match("target", "target"));
        assert!(!glob_match("*.rs", "src/main.rs"));
        assert!(glob_match("src/*.rs", "src/main.rs"));
    }

    #[test]
    fn context_hash_changes_with_content_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM x\n").unwrap();
        std::fs::write(dir.path().join("app.sh"), "echo 1\n").unwrap();
        std::fs::create_dir(dir.path().join(".grader")).unwrap();
        std::fs::write(dir.path().join(".grader/report.json"), "{}").unwrap();
        let hash = || {
            let files = context_files(dir.path()).unwrap();
            context_hash(&files, &dir.path().join("Dockerfile")).unwrap()
        };
        let first = hash();
        assert_eq!(first, hash());
        std::fs::write(dir.path().join(".grader/report.json"), "{\"x\":1}").unwrap();
        assert_eq!(first, hash(), "artifacts are not part of the context");
        std::fs::write(dir.path().join("app.sh"), "echo 2\n").unwrap();
        assert_ne!(first, hash());
    }

    #[test]
    fn docker_times_compare_and_convert() {
        let a = DockerTime::parse("2026-11-30T21:29:26.5091Z").unwrap();
        let b = DockerTime::parse("2026-11-30T21:29:26.50912Z").unwrap();
        let c = DockerTime::parse("2026-11-30T21:29:27Z").unwrap();
        assert_eq!(a.nanos, 509_100_000);
        assert!(a < b && b < c, "{a:?} {b:?} {c:?}");
        assert_eq!(
            DockerTime::parse("1970-01-01T00:00:00Z")
                .unwrap()
                .unix_seconds(),
            0
        );
        assert_eq!(
            DockerTime::parse("2024-02-29T12:00:00.1Z")
                .unwrap()
                .unix_seconds(),
            1_709_208_000
        );
        assert!(DockerTime::parse("2026-11-30T21:29:26.5091+01:00").is_none());
        assert!(DockerTime::parse("garbage").is_none());
    }

    #[test]
    fn a_dead_owner_is_not_alive() {
        assert!(owner_alive(&owner_id()));
        assert!(!owner_alive("999999999:1"));
        assert!(!owner_alive(&format!("{}:1", std::process::id())));
        assert!(!owner_alive("garbage"));
    }
}
