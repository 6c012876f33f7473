//! Docker runtime: the learner's service as a container built from its Dockerfile, with
//! PostgreSQL and Redis as containers on a per-run network (testcontainers 0.28).
//!
//! - **Reached from the host only through mapped ports on 127.0.0.1** (`get_host_port_ipv4`),
//!   never container IPs. The service reaches PostgreSQL and Redis by the names `postgres` and
//!   `redis` (extra hosts on the run's network) and the grader's mock upstreams through the host
//!   gateway (`host.docker.internal`, see [`container_url`]).
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
    InspectContainerOptions, ListContainersOptions, ListNetworksOptions, RemoveContainerOptions,
};
use testcontainers::bollard::Docker;
use testcontainers::core::{BuildImageOptions, IntoContainerPort, WaitFor};
use testcontainers::runners::{AsyncBuilder, AsyncRunner};
use testcontainers::{ContainerAsync, GenericBuildableImage, GenericImage, ImageExt};
use tokio::io::AsyncBufReadExt;

use super::*;

/// Label naming one run; teardown removes everything carrying it.
pub const LABEL_RUN: &str = "grader.run";
/// Label naming the grader process (`<pid>:<start time>`); the start-up sweep reads it.
pub const LABEL_OWNER: &str = "grader.owner";
/// Default images: the official ones, major version pinned (scripts/build-offline-images builds
/// local stand-ins under the same tags).
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:15";
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7";
/// Port the service listens on inside its container (`PORT`).
const SERVICE_PORT: u16 = 8080;
/// Limits of the service container.
pub const MEMORY_LIMIT: i64 = 512 * 1024 * 1024;
pub const PIDS_LIMIT: i64 = 256;
pub const NANO_CPUS: i64 = 1_000_000_000;
const LOG_TAIL: usize = 30;
const HEALTH_INTERVAL: Duration = Duration::from_millis(100);
const HEALTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
const DEPENDENCY_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace between SIGTERM and SIGKILL when the service container stops.
const STOP_GRACE_SECS: i32 = 5;

/// Settings of the docker runtime, from `[docker]` in grader.toml and the environment.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Absolute path of the Dockerfile (inside the service folder, the build context).
    pub dockerfile: PathBuf,
    /// Runs on the host before the image build (`[docker] build`).
    pub host_build: Option<String>,
    pub postgres_image: String,
    pub redis_image: String,
}

impl DockerOptions {
    /// Images: `GRADER_POSTGRES_IMAGE` / `GRADER_REDIS_IMAGE` win over `[docker]`, which wins
    /// over the defaults.
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
    service: Option<ContainerAsync<GenericImage>>,
    service_log: PathBuf,
    state: Arc<Mutex<ServiceState>>,
    /// Set by the monitor when the kernel killed the service for its memory limit.
    oom_killed: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    torn_down: bool,
}

/// Everything [`DockerEnvironment::start`] hands back.
pub struct Started {
    pub env: DockerEnvironment,
    pub postgres: Option<PostgresInfo>,
    pub redis: Option<RedisInfo>,
    pub timings: StartTimings,
    pub base_url: url::Url,
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
            service: None,
            service_log: plan.artifacts_dir.join("service.log"),
            state: Arc::new(Mutex::new(ServiceState::Running)),
            oom_killed: Arc::default(),
            tasks: Vec::new(),
            torn_down: false,
        };
        match env.start_all(plan, options, progress).await {
            Ok((postgres, redis, timings, base_url)) => Ok(Started {
                env,
                postgres,
                redis,
                timings,
                base_url,
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

        // PostgreSQL (then the data sets), Redis and the image build need nothing from each
        // other: they overlap. Each branch runs to its end, so a container that did start is
        // kept for teardown (and logged) even when another branch failed.
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
        let image = async {
            let started = Instant::now();
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
        let (database, cache, image) = tokio::join!(database, cache, image);
        // Keep every container that started, before looking at any error.
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
        if let Some((container, info, ip, postgres_took, data_took)) = database {
            self.follow_logs(&container, &plan.artifacts_dir.join("postgres.log"));
            self.postgres = Some(container);
            extra_hosts.push(format!("postgres:{ip}"));
            if let Some(var) = &plan.postgres_env {
                service_env.push((var.clone(), "postgres://postgres@postgres:5432/app".into()));
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
        let (image, build_took) = image?;
        timings.build = build_took;

        progress.phase_started(
            Phase::ServiceStart,
            &format!(
                "starting the service container, waiting for {}",
                plan.health_path
            ),
        );
        let started = Instant::now();
        let mut request = image
            .with_exposed_port(SERVICE_PORT.tcp())
            .with_network(&network)
            .with_labels(self.labels())
            .with_container_name(format!("grader-{}-service", self.run));
        for (k, v) in &plan.env {
            request = request.with_env_var(k, container_url(v));
        }
        for (k, v) in service_env {
            request = request.with_env_var(k, v);
        }
        request = request
            .with_env_var(&plan.port_env, SERVICE_PORT.to_string())
            .with_env_var("HOST", "0.0.0.0");
        let request = request.with_host_config_modifier(move |hc| {
            hc.memory = Some(MEMORY_LIMIT);
            hc.memory_swap = Some(MEMORY_LIMIT);
            hc.nano_cpus = Some(NANO_CPUS);
            hc.pids_limit = Some(PIDS_LIMIT);
            hc.privileged = Some(false);
            hc.security_opt = Some(vec!["no-new-privileges".into()]);
            hc.extra_hosts = Some(extra_hosts.clone());
        });
        // Created empty now, so the log tail never shows an earlier run's lines.
        std::fs::File::create(&self.service_log).map_err(|e| {
            infra(
                "your service",
                format!("{}: {e}", self.service_log.display()),
            )
        })?;
        let container = request
            .start()
            .await
            .map_err(|e| StartError::ServiceDidNotStart {
                message: format!("your service's container did not start: {e}"),
                log_tail: vec![],
            })?;
        self.follow_logs(&container, &self.service_log.clone());
        let port = container
            .get_host_port_ipv4(SERVICE_PORT.tcp())
            .await
            .map_err(|e| infra("your service", e.to_string()))?;
        self.monitor(container.id().to_string(), docker.clone());
        self.service = Some(container);
        let base_url = url::Url::parse(&format!("http://127.0.0.1:{port}"))
            .map_err(|e| infra("your service", e.to_string()))?;
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
            .with_env_var("POSTGRES_PASSWORD", "postgres")
            .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
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
            url: format!("postgres://postgres@127.0.0.1:{port}/app"),
            port,
            database: "app".into(),
        };
        if let Err(e) = prepare_database(&info).await {
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
    fn follow_logs(&mut self, container: &ContainerAsync<GenericImage>, path: &Path) {
        let Ok(file) = std::fs::File::create(path) else {
            return;
        };
        let file = Arc::new(Mutex::new(file));
        for reader in [container.stdout(true), container.stderr(true)] {
            let file = file.clone();
            self.tasks.push(tokio::spawn(async move {
                let mut lines = reader.lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = writeln!(f, "{line}");
                }
            }));
        }
    }

    /// Keeps [`ServiceState`] current without blocking `state()`: polls the container.
    fn monitor(&mut self, id: String, docker: Docker) {
        let state = self.state.clone();
        let oom = self.oom_killed.clone();
        self.tasks.push(tokio::spawn(async move {
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

    async fn wait_healthy(
        &self,
        plan: &ServicePlan,
        base_url: &url::Url,
    ) -> Result<(), StartError> {
        let health = format!(
            "{}{}",
            base_url.as_str().trim_end_matches('/'),
            plan.health_path
        );
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| infra("your service", e.to_string()))?;
        let deadline = Instant::now() + plan.startup_timeout;
        let mut last;
        loop {
            if let ServiceState::Exited { code, .. } = self.service_state() {
                return Err(StartError::ServiceDidNotStart {
                    message: format!(
                        "your service's container {} before it answered on {}",
                        self.describe_exit(code),
                        plan.health_path
                    ),
                    log_tail: self.service_log_tail(LOG_TAIL),
                });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let per_request = remaining.clamp(Duration::from_millis(100), HEALTH_REQUEST_TIMEOUT);
            match client.get(&health).timeout(per_request).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("status {}", r.status()),
                Err(e) if e.is_timeout() => last = "no answer".into(),
                Err(_) => last = "no connection".into(),
            }
            if Instant::now() >= deadline {
                let mut message = format!(
                    "your service did not answer 2xx on {} within {} (last attempt: {last})",
                    plan.health_path,
                    humantime::format_duration(plan.startup_timeout)
                );
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
        for container in [self.redis.take(), self.postgres.take()]
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
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.torn_down = true;
        started.elapsed()
    }
}

impl Drop for DockerEnvironment {
    fn drop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        if !self.torn_down && self.docker.is_some() {
            // testcontainers' own Drop removes the containers too, but not our network, and only
            // inside a runtime; this works anywhere.
            remove_run_blocking(&self.run);
        }
    }
}

fn dependency_error(what: &str, image: &str, error: String) -> StartError {
    if error.contains("PullImage") || error.contains("pull") {
        let variable = if what == "Redis" {
            "GRADER_REDIS_IMAGE"
        } else {
            "GRADER_POSTGRES_IMAGE"
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

/// Creates `pg_stat_statements` in `app` once PostgreSQL accepts connections. With the official
/// image the ready line also appears for its init-time server, so connecting is retried.
async fn prepare_database(info: &PostgresInfo) -> Result<(), StartError> {
    let deadline = Instant::now() + DEPENDENCY_TIMEOUT;
    let mut last;
    loop {
        let attempt = async {
            let client = crate::pg::connect(&info.url, "postgres").await?;
            client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .await
                .map_err(|e| e.to_string())
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
    let out = std::fs::File::create(&log)
        .map_err(|e| infra("the build command", format!("{}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| infra("the build command", e.to_string()))?;
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
    let kill_group = |pid: Option<u32>| {
        if let Some(pid) = pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    };
    match status {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(StartError::BuildFailed {
            reason: format!("`{build}` exited with {s}"),
            log_tail: tail_lines(&log, LOG_TAIL),
        }),
        Ok(Err(e)) => Err(infra("the build command", e.to_string())),
        Err(_) => {
            kill_group(child.id());
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
    let mut buildable =
        GenericBuildableImage::new("grader-svc", &hash).with_dockerfile(options.dockerfile.clone());
    for (path, rel) in &files {
        if rel != "Dockerfile" {
            buildable = buildable.with_file(path.clone(), rel.clone());
        }
    }
    let build = buildable.build_image_with(BuildImageOptions::new().with_skip_if_exists(true));
    let log = plan.artifacts_dir.join("build.log");
    match tokio::time::timeout(plan.build_timeout, build).await {
        Ok(Ok(image)) => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .ok();
            if let Some(f) = f.as_mut() {
                let _ = writeln!(f, "built image {tag}");
            }
            Ok(image)
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

/// Runs the build with the classic builder (no BuildKit session, nothing pulled, no tag,
/// intermediate containers removed even on failure) and appends its output to `log`.
async fn classic_build_log(
    docker: &Docker,
    files: &[(PathBuf, String)],
    dockerfile: &Path,
    log: &Path,
) {
    use futures_util::StreamExt;
    use testcontainers::bollard::query_parameters::{BuildImageOptions, BuilderVersion};
    let files = files.to_vec();
    let dockerfile = dockerfile.to_path_buf();
    let tar = tokio::task::spawn_blocking(move || {
        let mut builder = tar::Builder::new(Vec::new());
        builder.append_path_with_name(&dockerfile, "Dockerfile")?;
        for (path, rel) in &files {
            if rel != "Dockerfile" {
                builder.append_path_with_name(path, rel)?;
            }
        }
        builder.into_inner()
    })
    .await;
    let Ok(Ok(tar)) = tar else {
        append_line(log, "(could not pack the build context again)");
        return;
    };
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        rm: true,
        forcerm: true,
        version: BuilderVersion::BuilderV1,
        ..Default::default()
    };
    let mut stream = docker.build_image(
        options,
        None,
        Some(testcontainers::bollard::body_full(tar.into())),
    );
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    // The classic builder colours a step's stderr; the log is plain text.
                    let text = text.replace("\u{1b}[91m", "").replace("\u{1b}[0m", "");
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        append_line(log, line);
                    }
                }
            }
            Err(e) => {
                append_line(log, &e.to_string());
                break;
            }
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
    fn a_dead_owner_is_not_alive() {
        assert!(owner_alive(&owner_id()));
        assert!(!owner_alive("999999999:1"));
        assert!(!owner_alive(&format!("{}:1", std::process::id())));
        assert!(!owner_alive("garbage"));
    }
}
