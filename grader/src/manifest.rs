//! The learner's `grader.toml`: how to build and start their service, and what it attempts.
//!
//! A minimal manifest is two lines:
//!
//! ```toml
//! exercises = ["api-design"]
//! service.command = "python3 app.py"
//! ```
//!
//! Everything else has a default (see the README's manifest reference). Parsing never starts
//! anything; it turns text into a [`Manifest`] or into located [`Diagnostics`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use crate::diagnostic::{
    did_you_mean, display_path, from_toml_error, Diagnostic, Diagnostics, SourceFile,
};

pub const MANIFEST_FILE: &str = "grader.toml";

const DEFAULT_HEALTH_PATH: &str = "/healthz";
const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_PORT_ENV: &str = "PORT";
const DEFAULT_POSTGRES_ENV: &str = "DATABASE_URL";
const DEFAULT_REDIS_ENV: &str = "REDIS_URL";

/// A validated manifest. Spans are kept where later checks (against the exercise catalogue) may
/// need to point back into the file.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: SourceFile,
    pub exercises: Vec<Spanned<String>>,
    pub service: ServiceSection,
    /// Env var that receives the PostgreSQL URL; `None` when the service opts out.
    pub postgres_env: Option<String>,
    /// Env var that receives the Redis URL; `None` unless the service asks for Redis.
    pub redis_env: Option<String>,
    /// `[rabbitmq] env = "NAME"`: the service's name for the broker URL variable. Whether a run
    /// has a broker is the exercises' call, not the manifest's; `None` keeps their default.
    pub rabbitmq_env: Option<String>,
    /// Renamed env vars of mock upstreams (`[upstreams.payments] env = "PSP_URL"`), by upstream
    /// name; an upstream not listed keeps the exercise's default (e.g. `PAYMENTS_URL`).
    pub upstream_env: BTreeMap<String, String>,
    /// `[docker]`: settings of the docker runtime only.
    pub docker: DockerSection,
}

/// `[docker]` in `grader.toml`: how `--runtime docker` builds the image and which images provide
/// PostgreSQL, Redis and RabbitMQ (the `GRADER_POSTGRES_IMAGE` / `GRADER_REDIS_IMAGE` /
/// `GRADER_RABBITMQ_IMAGE` env vars win).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Docker")]
pub struct DockerSection {
    /// Dockerfile, relative to the service folder (the build context); default `Dockerfile`.
    pub dockerfile: Option<String>,
    /// Shell command run on the host before the image is built (e.g. to put a binary in the
    /// context); `service.build` belongs to the local runtime and does not run.
    pub build: Option<String>,
    /// PostgreSQL image (`GRADER_POSTGRES_IMAGE` wins).
    pub postgres_image: Option<String>,
    /// Redis image (`GRADER_REDIS_IMAGE` wins).
    pub redis_image: Option<String>,
    /// RabbitMQ image (`GRADER_RABBITMQ_IMAGE` wins).
    pub rabbitmq_image: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServiceSection {
    /// Start command; required for the local runtime only.
    pub command: Option<String>,
    pub build: Option<String>,
    /// Relative to the manifest's folder.
    pub workdir: PathBuf,
    pub health_path: String,
    pub startup_timeout: Duration,
    pub build_timeout: Duration,
    pub port_env: String,
    pub env: BTreeMap<String, String>,
    /// Span of the `[service]` table (or of the file start), for "command is missing" errors.
    pub span: std::ops::Range<usize>,
}

/// A learner's `grader.toml`: how to build and start their service, and which exercises it
/// attempts.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "grader.toml")]
struct RawManifest {
    /// Ids of the exercises the service attempts (`grader exercises` lists them), e.g.
    /// `["api-design"]`.
    #[schemars(with = "Vec<String>")]
    exercises: Spanned<Vec<Spanned<String>>>,
    /// How to build and start the service.
    service: Option<RawService>,
    /// The PostgreSQL database the grader gives the service (on by default).
    postgres: Option<RawDependency>,
    /// A Redis the grader starts for the service (off by default).
    redis: Option<RawDependency>,
    /// The name of the variable that receives the RabbitMQ URL, for exercises with a broker.
    rabbitmq: Option<RawRabbitMq>,
    /// Renamed variables of the exercises' mock upstreams, by upstream name
    /// (`[upstreams.payments] env = "PSP_URL"`).
    #[serde(default)]
    upstreams: BTreeMap<String, RawUpstreamEnv>,
    /// Settings of the docker runtime (`--runtime docker`) only.
    #[serde(default)]
    docker: DockerSection,
}

/// A mock upstream's variable, renamed.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "UpstreamEnv")]
struct RawUpstreamEnv {
    /// The variable that receives the upstream's URL, e.g. `PSP_URL`.
    #[schemars(with = "String")]
    env: Spanned<String>,
}

/// `[service]`: how the local runtime builds and starts the service.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Service")]
struct RawService {
    /// The shell command that starts the service (required for the local runtime), e.g.
    /// `python3 app.py`. It must listen on the port in `$PORT`.
    #[schemars(with = "Option<String>")]
    command: Option<Spanned<String>>,
    /// A shell command run once before the service starts, e.g. `cargo build --release`.
    #[schemars(with = "Option<String>")]
    build: Option<Spanned<String>>,
    /// The folder the commands run in, relative to grader.toml (default `.`).
    #[schemars(with = "Option<String>")]
    workdir: Option<Spanned<String>>,
    /// The path that answers 2xx once the service is ready (default `/healthz`).
    #[schemars(with = "Option<String>")]
    health_path: Option<Spanned<String>>,
    /// How long the service may take to become healthy, e.g. "30s" (the default).
    #[schemars(with = "Option<String>")]
    startup_timeout: Option<Spanned<String>>,
    /// How long `build` may take, e.g. "10m" (the default).
    #[schemars(with = "Option<String>")]
    build_timeout: Option<Spanned<String>>,
    /// The variable that receives the port to listen on (default `PORT`).
    #[schemars(with = "Option<String>")]
    port_env: Option<Spanned<String>>,
    /// Extra environment variables for the service.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    env: BTreeMap<Spanned<String>, String>,
}

/// `[rabbitmq]`: only the variable's name; the exercises decide whether there is a broker.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RabbitMq")]
struct RawRabbitMq {
    /// The variable that receives the broker's URL (default: the exercise's, `AMQP_URL`).
    #[schemars(with = "Option<String>")]
    env: Option<Spanned<String>>,
}

/// A database the grader provides to the service.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Dependency")]
struct RawDependency {
    /// Whether the service gets it (PostgreSQL: default true; Redis: default false).
    enabled: Option<bool>,
    /// The variable that receives its URL (`DATABASE_URL` / `REDIS_URL` by default).
    #[schemars(with = "Option<String>")]
    env: Option<Spanned<String>>,
}

/// The JSON Schema (draft 7) of `grader.toml`, pretty-printed, ending with a newline: the content
/// of `docs/grader-toml.schema.json`, printed by `grader schema grader-toml`.
pub fn schema() -> String {
    // Draft 7, without `null` in the types of optional fields: TOML has no null.
    let mut settings = schemars::gen::SchemaSettings::draft07();
    settings.option_add_null_type = false;
    let schema = settings
        .into_generator()
        .into_root_schema_for::<RawManifest>();
    crate::spec::schema::pretty(&schema)
}

impl Manifest {
    /// Reads `<dir>/grader.toml`. A missing file is a diagnostic too, pointing at the fix.
    pub fn load(dir: &Path) -> Result<Manifest, Diagnostics> {
        let path = dir.join(MANIFEST_FILE);
        let name = display_path(&path);
        match std::fs::read_to_string(&path) {
            Ok(text) => Manifest::parse(SourceFile::new(name, text)),
            Err(err) => {
                let file = SourceFile::new(name, "");
                let help = if err.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "create {MANIFEST_FILE} in your service's folder, for example:\n\n    exercises = [\"api-design\"]\n    service.command = \"python3 app.py\"\n\n    or grade a running service with --runtime external --url URL --exercise ID"
                    )
                } else {
                    "check the file's permissions".to_string()
                };
                Err(
                    Diagnostic::new(&file, 0..0, format!("cannot read {MANIFEST_FILE}: {err}"))
                        .with_help(help)
                        .into(),
                )
            }
        }
    }

    pub fn parse(file: SourceFile) -> Result<Manifest, Diagnostics> {
        let raw: RawManifest = toml::from_str(&file.text)
            .map_err(|e| Diagnostics::from(from_toml_error(&file, &e)))?;
        let mut diags = Diagnostics::default();

        if raw.exercises.get_ref().is_empty() {
            diags.push(
                Diagnostic::new(&file, raw.exercises.span(), "`exercises` is empty")
                    .with_help("name at least one exercise, e.g. exercises = [\"api-design\"]; `grader exercises` lists them"),
            );
        }

        // Spanned<RawService> would break dotted keys (`service.command = ...`) in toml 0.8, so
        // the table's position is found in the text instead.
        let service_span = ["[service]", "service."]
            .iter()
            .find_map(|needle| file.text.find(needle).map(|i| i..i + needle.len() - 1))
            .unwrap_or(0..0);
        let service = match raw.service {
            Some(s) => parse_service(&file, s, service_span, &mut diags),
            None => ServiceSection {
                command: None,
                build: None,
                workdir: PathBuf::from("."),
                health_path: DEFAULT_HEALTH_PATH.into(),
                startup_timeout: DEFAULT_STARTUP_TIMEOUT,
                build_timeout: DEFAULT_BUILD_TIMEOUT,
                port_env: DEFAULT_PORT_ENV.into(),
                env: BTreeMap::new(),
                span: service_span,
            },
        };

        let postgres_env =
            dependency_env(&file, raw.postgres, true, DEFAULT_POSTGRES_ENV, &mut diags);
        let redis_env = dependency_env(&file, raw.redis, false, DEFAULT_REDIS_ENV, &mut diags);
        let rabbitmq_env = raw
            .rabbitmq
            .and_then(|r| r.env)
            .and_then(|v| env_name(&file, v, &mut diags));
        let mut upstream_env = BTreeMap::new();
        for (name, u) in raw.upstreams {
            if let Some(var) = env_name(&file, u.env, &mut diags) {
                upstream_env.insert(name, var);
            }
        }

        diags.into_result(Manifest {
            exercises: raw.exercises.into_inner(),
            service,
            postgres_env,
            redis_env,
            rabbitmq_env,
            upstream_env,
            docker: raw.docker,
            file,
        })
    }

    /// Checks that every exercise named exists, pointing at the unknown name with a suggestion.
    pub fn check_exercises<'a>(
        &self,
        known: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<(), Diagnostics> {
        let mut diags = Diagnostics::default();
        for ex in &self.exercises {
            let name = ex.get_ref();
            if !known.clone().any(|k| k == name) {
                let all: Vec<&str> = known.clone().collect();
                let help = match did_you_mean(name, all.iter().copied()) {
                    Some(s) => format!("did you mean \"{s}\"?"),
                    None => format!("known exercises: {}", all.join(", ")),
                };
                diags.push(
                    Diagnostic::new(
                        &self.file,
                        ex.span(),
                        format!("unknown exercise \"{name}\""),
                    )
                    .with_help(help),
                );
            }
        }
        diags.into_result(())
    }

    /// The runtime's view of this manifest. `service_dir` is the manifest's folder.
    pub fn service_plan(
        &self,
        service_dir: &Path,
        artifacts_dir: &Path,
    ) -> Result<ServicePlan, Diagnostics> {
        let Some(command) = self.service.command.clone() else {
            return Err(Diagnostic::new(
                &self.file,
                self.service.span.clone(),
                "the local runtime needs a start command, and `service.command` is missing",
            )
            .with_help("add for example: service.command = \"python3 app.py\"  (it runs with sh -c in the service folder)")
            .into());
        };
        let workdir = service_dir.join(&self.service.workdir);
        Ok(ServicePlan {
            service_dir: service_dir.to_path_buf(),
            build: self.service.build.clone(),
            build_timeout: self.service.build_timeout,
            command,
            workdir,
            env: self
                .service
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            port_env: self.service.port_env.clone(),
            health_path: self.service.health_path.clone(),
            protocol: Protocol::Http,
            startup_timeout: self.service.startup_timeout,
            postgres_env: self.postgres_env.clone(),
            redis_env: self.redis_env.clone(),
            broker_env: None,
            rabbitmq_env_override: self.rabbitmq_env.clone(),
            database_link: false,
            artifacts_dir: artifacts_dir.to_path_buf(),
            before_service: None,
        })
    }

    /// The plan for `--runtime docker`: the image's own CMD starts the service, so
    /// `service.command` may be missing (it is then empty in the plan and unused).
    pub fn docker_service_plan(
        &self,
        service_dir: &Path,
        artifacts_dir: &Path,
    ) -> Result<ServicePlan, Diagnostics> {
        let mut manifest = self.clone();
        manifest.service.command.get_or_insert_with(String::new);
        manifest.service_plan(service_dir, artifacts_dir)
    }

    pub fn exercise_ids(&self) -> Vec<String> {
        self.exercises.iter().map(|e| e.get_ref().clone()).collect()
    }
}

fn parse_service(
    file: &SourceFile,
    s: RawService,
    span: std::ops::Range<usize>,
    diags: &mut Diagnostics,
) -> ServiceSection {
    let mut non_empty = |v: Option<Spanned<String>>, key: &str| -> Option<String> {
        let v = v?;
        if v.get_ref().trim().is_empty() {
            diags.push(
                Diagnostic::new(file, v.span(), format!("`service.{key}` is empty"))
                    .with_help(format!("remove `{key}` or give it a shell command")),
            );
            None
        } else {
            Some(v.into_inner())
        }
    };
    let command = non_empty(s.command, "command");
    let build = non_empty(s.build, "build");

    let health_path = match s.health_path {
        Some(p) if !p.get_ref().starts_with('/') => {
            diags.push(
                Diagnostic::new(file, p.span(), "`health_path` must start with `/`").with_help(
                    format!("write \"/{}\"", p.get_ref().trim_start_matches('/')),
                ),
            );
            DEFAULT_HEALTH_PATH.to_string()
        }
        Some(p) => p.into_inner(),
        None => DEFAULT_HEALTH_PATH.to_string(),
    };

    let startup_timeout = duration(
        file,
        s.startup_timeout,
        "startup_timeout",
        DEFAULT_STARTUP_TIMEOUT,
        diags,
    );
    let build_timeout = duration(
        file,
        s.build_timeout,
        "build_timeout",
        DEFAULT_BUILD_TIMEOUT,
        diags,
    );

    let port_env = match s.port_env {
        Some(v) => env_name(file, v, diags).unwrap_or_else(|| DEFAULT_PORT_ENV.into()),
        None => DEFAULT_PORT_ENV.into(),
    };

    let mut env = BTreeMap::new();
    for (k, v) in s.env {
        if let Some(name) = env_name(file, k, diags) {
            env.insert(name, v);
        }
    }

    let workdir = match s.workdir {
        Some(w)
            if Path::new(w.get_ref()).is_absolute()
                || w.get_ref().split('/').any(|c| c == "..") =>
        {
            // A workdir outside the service folder would make the docker runtime's build
            // context disagree with the local runtime; keep both honest.
            diags.push(
                Diagnostic::new(file, w.span(), "`workdir` must be a path inside the service folder")
                    .with_help("use a relative path such as \"server\" (or leave it out for the folder itself)"),
            );
            PathBuf::from(".")
        }
        Some(w) => PathBuf::from(w.into_inner()),
        None => PathBuf::from("."),
    };

    ServiceSection {
        command,
        build,
        workdir,
        health_path,
        startup_timeout,
        build_timeout,
        port_env,
        env,
        span,
    }
}

fn duration(
    file: &SourceFile,
    value: Option<Spanned<String>>,
    key: &str,
    default: Duration,
    diags: &mut Diagnostics,
) -> Duration {
    let Some(v) = value else { return default };
    match humantime::parse_duration(v.get_ref()) {
        Ok(d) if d.is_zero() => {
            diags.push(Diagnostic::new(
                file,
                v.span(),
                format!("`{key}` must be longer than zero"),
            ));
            default
        }
        Ok(d) => d,
        Err(e) => {
            diags.push(
                Diagnostic::new(file, v.span(), format!("`{key}` is not a duration: {e}"))
                    .with_help("write a number with a unit, such as \"30s\", \"2m\" or \"1m 30s\""),
            );
            default
        }
    }
}

fn env_name(file: &SourceFile, v: Spanned<String>, diags: &mut Diagnostics) -> Option<String> {
    let name = v.get_ref();
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Some(v.into_inner())
    } else {
        diags.push(
            Diagnostic::new(file, v.span(), format!("\"{name}\" is not a valid environment variable name"))
                .with_help("use letters, digits and underscores, not starting with a digit (e.g. DATABASE_URL)"),
        );
        None
    }
}

fn dependency_env(
    file: &SourceFile,
    raw: Option<RawDependency>,
    enabled_by_default: bool,
    default_env: &str,
    diags: &mut Diagnostics,
) -> Option<String> {
    // Naming a table (`[redis]`) is asking for the dependency, unless it says `enabled = false`.
    let enabled = match &raw {
        Some(r) => r.enabled.unwrap_or(true),
        None => enabled_by_default,
    };
    if !enabled {
        return None;
    }
    match raw.and_then(|r| r.env) {
        Some(v) => env_name(file, v, diags).or_else(|| Some(default_env.into())),
        None => Some(default_env.into()),
    }
}

/// What to run, fully resolved from the manifest (paths absolute, defaults applied).
#[derive(Debug, Clone)]
pub struct ServicePlan {
    /// Folder holding the learner's `grader.toml`.
    pub service_dir: PathBuf,
    /// Shell command (run with `sh -c`) that builds the service, if any.
    pub build: Option<String>,
    pub build_timeout: Duration,
    /// Shell command (run with `sh -c`) that starts the service.
    pub command: String,
    /// Working directory of build and command.
    pub workdir: PathBuf,
    /// Extra environment for the service (manifest `[service.env]`). The grader's own environment
    /// is inherited too.
    pub env: Vec<(String, String)>,
    /// Name of the env var that carries the port the service must listen on.
    pub port_env: String,
    /// Path polled with GET until it answers 2xx, e.g. `/healthz` (an HTTP service).
    pub health_path: String,
    /// How readiness is asked: `health_path` over HTTP, or the gRPC health service. Set by the
    /// run (`Grpc` when an exercise of the run is served over gRPC); `Http` from the manifest.
    pub protocol: Protocol,
    pub startup_timeout: Duration,
    /// `Some(env var name)` when the service wants PostgreSQL, e.g. `DATABASE_URL`.
    pub postgres_env: Option<String>,
    /// `Some(env var name)` when the service wants Redis, e.g. `REDIS_URL`.
    pub redis_env: Option<String>,
    /// `Some(env var name)` when the run needs a RabbitMQ broker (an exercise of the run uses
    /// one): the runtime starts the run's own and gives the service its URL, through the link,
    /// in this variable. Set by the run, from [`ServicePlan::broker_env_name`]; `None` from the
    /// manifest.
    pub broker_env: Option<String>,
    /// `[rabbitmq] env` of the manifest, if any (see [`ServicePlan::broker_env_name`]).
    pub rabbitmq_env_override: Option<String>,
    /// The service reaches PostgreSQL through a [`crate::runtime::FaultLink`] the grader can
    /// stall or cut (a check of the run makes the database fail). Set by the run; `false` from
    /// the manifest, so other runs talk to the database directly.
    pub database_link: bool,
    /// Directory for this run's artifacts: `service.log`, `build.log`, `postgres.log`.
    pub artifacts_dir: PathBuf,
    /// Runs once PostgreSQL is up and before the service starts (exercise schemas and data sets
    /// the grader loads). An `Err` is the grader's failure (infrastructure), not the learner's.
    pub before_service: Option<BeforeService>,
}

/// What a service speaks, as its exercise says (`protocol = "grpc"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1: ready once `health_path` answers 2xx.
    #[default]
    Http,
    /// gRPC over h2c: ready once `grpc.health.v1.Health/Check` (service `""`) answers `SERVING`.
    Grpc,
}

impl ServicePlan {
    /// Where readiness is asked: the health path, or the gRPC health service.
    pub fn readiness_target(&self) -> &str {
        match self.protocol {
            Protocol::Http => &self.health_path,
            Protocol::Grpc => "grpc.health.v1.Health/Check",
        }
    }

    /// The variable a broker URL goes in: the manifest's `[rabbitmq] env` when it names one,
    /// otherwise the exercise's default (`AMQP_URL`).
    pub fn broker_env_name(&self, exercise_default: &str) -> String {
        self.rabbitmq_env_override
            .clone()
            .unwrap_or_else(|| exercise_default.to_string())
    }
}

/// A hook given the grader-owned database before the service starts.
#[derive(Clone)]
pub struct BeforeService(pub std::sync::Arc<BeforeServiceFn>);

/// The hook's signature: it gets a connection URL of the grader's database (on 127.0.0.1, as the
/// superuser) and loads what the exercises need. Plain text, so whoever writes a hook (the data
/// sets) needs no runtime type.
pub type BeforeServiceFn = dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
    + Send
    + Sync;

impl std::fmt::Debug for BeforeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeService(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed schema must be the one the code generates.
    #[test]
    fn committed_schema_is_up_to_date() {
        crate::spec::schema::assert_committed(
            "grader-toml.schema.json",
            &super::schema(),
            "the types grader.toml is parsed into (manifest.rs).\n\
             Regenerate it with:  UPDATE_SCHEMA=1 cargo test -p grader schema\n\
             and review the diff.",
        );
    }

    fn parse(text: &str) -> Result<Manifest, Diagnostics> {
        Manifest::parse(SourceFile::new("grader.toml", text))
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m =
            parse("exercises = [\"api-design\"]\nservice.command = \"python3 app.py\"\n").unwrap();
        assert_eq!(m.exercise_ids(), vec!["api-design"]);
        assert_eq!(m.service.command.as_deref(), Some("python3 app.py"));
        assert_eq!(m.service.health_path, "/healthz");
        assert_eq!(m.service.port_env, "PORT");
        assert_eq!(m.postgres_env.as_deref(), Some("DATABASE_URL"));
        assert_eq!(m.redis_env, None);
    }

    #[test]
    fn redis_table_turns_redis_on_and_postgres_can_be_turned_off() {
        let m = parse("exercises = [\"x\"]\n[redis]\n[postgres]\nenabled = false\n").unwrap();
        assert_eq!(m.redis_env.as_deref(), Some("REDIS_URL"));
        assert_eq!(m.postgres_env, None);
    }

    #[test]
    fn misspelt_key_is_located_with_a_suggestion() {
        let err = parse("exercises = [\"x\"]\n[service]\ncomand = \"run\"\n").unwrap_err();
        let text = err.render(false);
        assert!(
            text.starts_with("grader.toml:3:1: error: unknown field `comand`"),
            "{text}"
        );
        assert!(text.contains("did you mean `command`?"), "{text}");
    }

    #[test]
    fn bad_values_are_all_reported_at_once() {
        let err = parse(
            "exercises = [\"x\"]\n[service]\nhealth_path = \"healthz\"\nstartup_timeout = \"soon\"\nport_env = \"1PORT\"\n",
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 3, "{err}");
        let text = err.render(false);
        assert!(
            text.contains("grader.toml:3:15: error: `health_path` must start with `/`"),
            "{text}"
        );
        assert!(
            text.contains("grader.toml:4:19: error: `startup_timeout` is not a duration"),
            "{text}"
        );
        assert!(
            text.contains(
                "grader.toml:5:12: error: \"1PORT\" is not a valid environment variable name"
            ),
            "{text}"
        );
    }

    #[test]
    fn upstream_env_vars_can_be_renamed() {
        let m = parse("exercises = [\"x\"]\n[upstreams.payments]\nenv = \"PSP_URL\"\n").unwrap();
        assert_eq!(
            m.upstream_env.get("payments").map(String::as_str),
            Some("PSP_URL")
        );
        assert!(parse("exercises = [\"x\"]\n[upstreams.payments]\nenv = \"1X\"\n").is_err());
    }

    #[test]
    fn rabbitmq_table_renames_the_broker_variable() {
        let plan = |m: &Manifest| {
            m.service_plan(Path::new("/svc"), Path::new("/svc/.grader"))
                .unwrap()
        };
        let m = parse("exercises = [\"x\"]\nservice.command = \"run\"\n").unwrap();
        assert_eq!(m.rabbitmq_env, None);
        let default = plan(&m);
        assert_eq!(
            default.broker_env, None,
            "the run, not the manifest, asks for a broker"
        );
        assert_eq!(default.broker_env_name("AMQP_URL"), "AMQP_URL");

        let m =
            parse("exercises = [\"x\"]\nservice.command = \"run\"\n[rabbitmq]\nenv = \"BROKER\"\n")
                .unwrap();
        assert_eq!(m.rabbitmq_env.as_deref(), Some("BROKER"));
        let renamed = plan(&m);
        assert_eq!(renamed.rabbitmq_env_override.as_deref(), Some("BROKER"));
        assert_eq!(renamed.broker_env_name("AMQP_URL"), "BROKER");
        assert_eq!(renamed.broker_env, None);

        // An empty table is allowed and changes nothing.
        let m = parse("exercises = [\"x\"]\n[rabbitmq]\n").unwrap();
        assert_eq!(m.rabbitmq_env, None);
    }

    #[test]
    fn bad_rabbitmq_table_is_located() {
        let err = parse("exercises = [\"x\"]\n[rabbitmq]\nenv = \"AMQP-URL\"\n").unwrap_err();
        let text = err.render(false);
        assert!(
            text.contains(
                "grader.toml:3:7: error: \"AMQP-URL\" is not a valid environment variable name"
            ),
            "{text}"
        );
        let err = parse("exercises = [\"x\"]\n[rabbitmq]\nenabled = true\n").unwrap_err();
        let text = err.render(false);
        assert!(
            text.starts_with("grader.toml:3:1: error: unknown field `enabled`"),
            "{text}"
        );
        let err = parse("exercises = [\"x\"]\n[docker]\nrabbitmq_image = 3\n").unwrap_err();
        assert!(err.render(false).starts_with("grader.toml:3:"), "{err}");
        let m = parse("exercises = [\"x\"]\n[docker]\nrabbitmq_image = \"mq:local\"\n").unwrap();
        assert_eq!(m.docker.rabbitmq_image.as_deref(), Some("mq:local"));
    }

    #[test]
    fn unknown_exercise_suggests_the_closest() {
        let m = parse("exercises = [\"api-desing\"]\n").unwrap();
        let err = m
            .check_exercises(["api-design", "pagination"].into_iter())
            .unwrap_err();
        let text = err.render(false);
        assert!(
            text.contains("grader.toml:1:14: error: unknown exercise \"api-desing\""),
            "{text}"
        );
        assert!(text.contains("did you mean \"api-design\"?"), "{text}");
    }

    #[test]
    fn missing_command_is_reported_when_a_local_plan_is_needed() {
        let m = parse("exercises = [\"x\"]\n").unwrap();
        let err = m
            .service_plan(Path::new("/svc"), Path::new("/svc/.grader"))
            .unwrap_err();
        assert!(err.render(false).contains("`service.command` is missing"));
    }

    #[test]
    fn docker_table_sets_images_and_needs_no_command() {
        let m = parse(
            "exercises = [\"x\"]\n[docker]\npostgres_image = \"pg:local\"\nredis_image = \"r:7\"\nbuild = \"make\"\n",
        )
        .unwrap();
        assert_eq!(m.docker.postgres_image.as_deref(), Some("pg:local"));
        assert_eq!(m.docker.redis_image.as_deref(), Some("r:7"));
        assert_eq!(m.docker.build.as_deref(), Some("make"));
        assert!(m
            .docker_service_plan(Path::new("/svc"), Path::new("/svc/.grader"))
            .is_ok());
        let err = parse("exercises = [\"x\"]\n[docker]\npostgres = \"pg\"\n").unwrap_err();
        assert!(
            err.render(false).contains("unknown field `postgres`"),
            "{err}"
        );
    }

    #[test]
    fn toml_syntax_error_is_located() {
        let err = parse("exercises = [\"x\"\n").unwrap_err();
        let text = err.render(false);
        assert!(text.starts_with("grader.toml:"), "{text}");
    }
}
