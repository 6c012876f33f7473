//! Command-line interface: parses flags and wires manifest -> runtime -> engine -> scoring ->
//! reports. Policy decisions (exit codes, what goes to stdout) live here; the modules it calls
//! stay reusable from tests.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::diagnostic::Diagnostics;
use crate::engine::{self, random, RunOptions};
use crate::exercise::{self, Catalog, Exercise, ExerciseSource};
use crate::manifest::{display_path, Manifest, MANIFEST_FILE};
use crate::outcome::{
    CheckResult, ProblemKind, RunProblem, RunReport, RuntimeInfo, Status, Timings, REPORT_VERSION,
};
use crate::progress::Progress;
use crate::report::{self, human::HumanStyle, Format};
use crate::runtime::{self, RunningService, StartError};
use crate::scoring::{self, exit};
use crate::upstream::{UpstreamOptions, Upstreams};

#[derive(Parser, Debug)]
#[command(
    name = "grader",
    version,
    about = "Grades a real HTTP service against backend-engineering exercises",
    long_about = "Grades a real HTTP service against backend-engineering exercises.\n\nRun `grader check` in your service's folder: it starts your service with a throwaway PostgreSQL, sends the exercise's checks, and explains every failure with a curl command you can paste."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the service in PATH (default: the current folder) and grade it.
    Check(CheckArgs),
    /// List the exercises, their skill areas and checks.
    Exercises(SourceArgs),
    /// Validate every exercise file (for instructors); errors give file:line:col.
    Lint(SourceArgs),
    /// Prove every check honest (for instructors): the reference service in PATH passes, and each
    /// known-bad variant in PATH/variants.toml fails exactly the checks it lists.
    Prove {
        /// Folder of the reference service (holding grader.toml and variants.toml).
        path: PathBuf,
        /// Seed of the random data for every run.
        #[arg(long, default_value_t = 4242)]
        seed: u64,
        /// How many runs at once (each owns a database and a service).
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// The variants file (default: PATH/variants.toml).
        #[arg(long, value_name = "FILE")]
        variants: Option<PathBuf>,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Show what a check expects, why it matters, a hint and its spec references.
    Explain {
        /// Check id, e.g. api-design/create-returns-201
        check: String,
        #[command(flatten)]
        source: SourceArgs,
    },
}

#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// Read exercises from this folder instead of the copy built into grader.
    #[arg(long, env = "GRADER_EXERCISES_DIR", value_name = "DIR")]
    pub exercises_dir: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
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

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Folder of the service (holding grader.toml).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Grade these exercises instead of the ones grader.toml lists (repeatable).
    #[arg(long = "exercise", short = 'e', value_name = "ID")]
    pub exercises: Vec<String>,
    /// Run only these checks: `exercise/check`, `check` or a whole `exercise` (repeatable).
    #[arg(long, value_name = "CHECK")]
    pub only: Vec<String>,
    /// Where the service runs.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Local)]
    pub runtime: RuntimeKind,
    /// Base URL of an already running service (with --runtime external).
    #[arg(long, value_name = "URL")]
    pub url: Option<url::Url>,
    /// Seed of the random data; a run prints its seed, and --seed replays it.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Report format written to stdout, or to --output.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Write the report to FILE instead of stdout (the human summary still goes to stdout).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Exit 0 when the score (percent) reaches this, even if some checks failed.
    #[arg(long, value_name = "PERCENT")]
    pub min_score: Option<f64>,
    /// Keep this run's logs and report.json here (default: <PATH>/.grader/last-run).
    #[arg(long, value_name = "DIR")]
    pub artifacts_dir: Option<PathBuf>,
    /// Show every response header and the full exchanges of failures.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Runs the CLI and returns the process exit code.
pub async fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    match cli.command {
        Command::Check(args) => check(args).await,
        Command::Exercises(source) => list_exercises(&source),
        Command::Lint(source) => lint(&source),
        Command::Explain { check, source } => explain(&check, &source),
        Command::Prove {
            path,
            seed,
            jobs,
            variants,
            source,
        } => match load_catalog(&source) {
            Ok(catalog) => {
                let variants = variants.unwrap_or_else(|| path.join(crate::prove::VARIANTS_FILE));
                crate::prove::run(
                    &path,
                    &variants,
                    source.exercises_dir.clone(),
                    &catalog,
                    seed,
                    jobs,
                )
            }
            Err(code) => code,
        },
    }
}

fn exercise_source(args: &SourceArgs) -> ExerciseSource {
    match &args.exercises_dir {
        Some(dir) => ExerciseSource::Dir(dir.clone()),
        None => ExerciseSource::Embedded,
    }
}

fn stderr_color() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
}

fn print_diagnostics(d: &Diagnostics) {
    let _ = write!(anstream::stderr(), "{}", d.render(stderr_color()));
}

fn load_catalog(source: &SourceArgs) -> Result<Catalog, i32> {
    exercise::load_catalog(&exercise_source(source)).map_err(|d| {
        print_diagnostics(&d);
        exit::USAGE
    })
}

fn lint(source: &SourceArgs) -> i32 {
    let Ok(catalog) = load_catalog(source) else {
        return exit::USAGE;
    };
    let checks: usize = catalog.exercises.iter().map(|e| e.checks.len()).sum();
    println!(
        "ok: {} skills, {} exercises, {checks} checks in {}",
        catalog.skills.len(),
        catalog.exercises.len(),
        exercise_source(source).describe()
    );
    exit::OK
}

fn list_exercises(source: &SourceArgs) -> i32 {
    let Ok(catalog) = load_catalog(source) else {
        return exit::USAGE;
    };
    for ex in &catalog.exercises {
        let points: u32 = ex.checks.iter().map(|c| c.points).sum();
        println!("{:<20} {}", ex.id, ex.title);
        println!(
            "{:<20} skills: {}  difficulty: {}/10  checks: {}  points: {points}",
            "",
            ex.skills.join(", "),
            ex.difficulty,
            ex.checks.len()
        );
        for c in &ex.checks {
            let task = c.task.map(|t| format!("task {t}")).unwrap_or_default();
            println!("{:<20}   {:<28} {:<8} {}", "", c.id, task, c.title);
        }
    }
    exit::OK
}

fn explain(id: &str, source: &SourceArgs) -> i32 {
    let Ok(catalog) = load_catalog(source) else {
        return exit::USAGE;
    };
    let found = catalog.exercises.iter().find_map(|ex| {
        ex.checks
            .iter()
            .find(|c| id == format!("{}/{}", ex.id, c.id) || id == c.id)
            .map(|c| (ex, c))
    });
    let Some((ex, c)) = found else {
        eprintln!("grader: no check \"{id}\"; `grader exercises` lists them");
        return exit::USAGE;
    };
    println!("{}/{}  {}", ex.id, c.id, c.title);
    if let Some(t) = c.task.and_then(|n| ex.tasks.iter().find(|t| t.number == n)) {
        println!(
            "task {}. {}  (exercises/{}/README.md)",
            t.number, t.title, ex.id
        );
    }
    println!("skill: {}   points: {}", c.skill, c.points);
    println!("\nwhy:  {}\nhint: {}", c.why, c.hint);
    if !c.spec.is_empty() {
        println!("spec: {}", c.spec.join("; "));
    }
    exit::OK
}

/// Everything `check` needs once flags and files are validated.
struct Plan<'a> {
    exercises: Vec<&'a Exercise>,
    service_dir: PathBuf,
    manifest: Option<Manifest>,
    seed: u64,
    replay: String,
}

fn plan<'a>(args: &CheckArgs, catalog: &'a Catalog) -> Result<Plan<'a>, i32> {
    let service_dir = std::fs::canonicalize(&args.path).map_err(|e| {
        eprintln!(
            "grader: cannot open the service folder {}: {e}",
            args.path.display()
        );
        exit::USAGE
    })?;
    let has_manifest = service_dir.join(MANIFEST_FILE).is_file();
    let manifest = if args.runtime != RuntimeKind::External || has_manifest {
        Some(Manifest::load(&service_dir).map_err(|d| {
            print_diagnostics(&d);
            exit::USAGE
        })?)
    } else {
        None
    };
    let known = catalog.exercises.iter().map(|e| e.id.as_str());
    let ids: Vec<String> = if !args.exercises.is_empty() {
        for id in &args.exercises {
            if catalog.exercise(id).is_none() {
                let names: Vec<&str> = known.clone().collect();
                let hint = crate::diagnostic::did_you_mean(id, names.iter().copied())
                    .map(|s| format!("did you mean \"{s}\"?"))
                    .unwrap_or_else(|| format!("known exercises: {}", names.join(", ")));
                eprintln!("grader: unknown exercise \"{id}\"; {hint}");
                return Err(exit::USAGE);
            }
        }
        args.exercises.clone()
    } else if let Some(m) = &manifest {
        m.check_exercises(known).map_err(|d| {
            print_diagnostics(&d);
            exit::USAGE
        })?;
        m.exercise_ids()
    } else {
        eprintln!(
            "grader: no {MANIFEST_FILE} in {}; name the exercises with --exercise ID",
            display_path(&service_dir)
        );
        return Err(exit::USAGE);
    };
    if args.runtime == RuntimeKind::External && args.url.is_none() {
        eprintln!("grader: --runtime external needs --url, e.g. --url http://127.0.0.1:8080");
        return Err(exit::USAGE);
    }
    if let Some(min) = args.min_score {
        if !(0.0..=100.0).contains(&min) {
            eprintln!("grader: --min-score is a percentage from 0 to 100");
            return Err(exit::USAGE);
        }
    }
    let exercises: Vec<&Exercise> = ids.iter().filter_map(|id| catalog.exercise(id)).collect();
    for only in &args.only {
        let exists = exercises
            .iter()
            .any(|ex| ex.checks.iter().any(|c| options_match(only, &ex.id, &c.id)));
        if !exists {
            eprintln!("grader: --only {only} matches no check of the selected exercises; `grader exercises` lists them");
            return Err(exit::USAGE);
        }
    }
    let seed = args.seed.unwrap_or_else(random::fresh_seed);
    let mut replay = format!("grader check {}", shell_word(&display_path(&service_dir)));
    for e in &args.exercises {
        replay.push_str(&format!(" --exercise {e}"));
    }
    for o in &args.only {
        replay.push_str(&format!(" --only {o}"));
    }
    if args.runtime == RuntimeKind::External {
        if let Some(url) = &args.url {
            replay.push_str(&format!(" --runtime external --url {url}"));
        }
    }
    replay.push_str(&format!(" --seed {seed}"));
    Ok(Plan {
        exercises,
        service_dir,
        manifest,
        seed,
        replay,
    })
}

fn options_match(only: &str, exercise: &str, check: &str) -> bool {
    RunOptions {
        seed: 0,
        only: vec![only.to_string()],
        ..Default::default()
    }
    .selects(exercise, check)
}

fn shell_word(s: &str) -> String {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| s.to_string())
}

async fn check(mut args: CheckArgs) -> i32 {
    let Ok(catalog) = load_catalog(&args.source) else {
        return exit::USAGE;
    };
    let mut plan = match plan(&args, &catalog) {
        Ok(p) => p,
        Err(code) => return code,
    };
    // The docker runtime's settings; `--runtime auto` settles on docker or local here.
    let docker_options = plan
        .manifest
        .as_ref()
        .map(|m| runtime::docker::DockerOptions::new(&plan.service_dir, &m.docker));
    let mut runtime_choice = None;
    if args.runtime == RuntimeKind::Auto {
        let dockerfile = docker_options
            .as_ref()
            .map(|o| o.dockerfile.clone())
            .unwrap_or_else(|| plan.service_dir.join("Dockerfile"));
        let (docker, why) = runtime::docker::choose_auto(&dockerfile).await;
        args.runtime = if docker {
            RuntimeKind::Docker
        } else {
            RuntimeKind::Local
        };
        runtime_choice = Some(format!(
            "  runtime     {} ({why})",
            if docker { "docker" } else { "local" }
        ));
    }
    if args.runtime == RuntimeKind::Docker {
        if let Some(problem) = runtime::docker::daemon_problem().await {
            eprintln!("grader: --runtime docker: {problem}; or use --runtime local");
            return exit::INFRASTRUCTURE;
        }
        plan.replay = plan
            .replay
            .replacen(" --seed ", " --runtime docker --seed ", 1);
    }
    let default_artifacts = plan.service_dir.join(".grader").join("last-run");
    let artifacts_dir = args
        .artifacts_dir
        .clone()
        .unwrap_or_else(|| default_artifacts.clone());
    let mut service_plan = match (&plan.manifest, args.runtime) {
        (Some(m), RuntimeKind::Local) => match m.service_plan(&plan.service_dir, &artifacts_dir) {
            Ok(p) => Some(p),
            Err(d) => {
                print_diagnostics(&d);
                return exit::USAGE;
            }
        },
        (Some(m), RuntimeKind::Docker) => {
            match m.docker_service_plan(&plan.service_dir, &artifacts_dir) {
                Ok(p) => Some(p),
                Err(d) => {
                    print_diagnostics(&d);
                    return exit::USAGE;
                }
            }
        }
        _ => None,
    };
    // Exercises with a `[dataset]`: the grader loads it before the service starts.
    let datasets: Vec<_> = plan
        .exercises
        .iter()
        .filter_map(|e| e.dataset.clone().map(|d| (e.id.clone(), d)))
        .collect();
    let mut data_stats = None;
    if let (Some(sp), Some((hook, stats))) = (
        service_plan.as_mut(),
        crate::dataset::before_service(datasets, plan.seed),
    ) {
        sp.before_service = Some(hook);
        data_stats = Some(stats);
    }
    if let Err(e) = prepare_artifacts(&artifacts_dir, artifacts_dir == default_artifacts) {
        eprintln!("grader: cannot create {}: {e}", artifacts_dir.display());
        return exit::USAGE;
    }

    let started_at = std::time::SystemTime::now();
    let clock = Instant::now();
    let machine_output = args.format != Format::Human && args.output.is_none();
    let progress = Progress::new(!machine_output || std::io::stderr().is_terminal());
    progress.line(&format!(
        "grader {} · seed {} · exercises: {}",
        env!("CARGO_PKG_VERSION"),
        plan.seed,
        plan.exercises
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(choice) = &runtime_choice {
        progress.line(choice);
    }

    let mut interrupt = Interrupt::new();
    let mut timings = Timings::default();
    let mut problem: Option<RunProblem> = None;
    let mut interrupted = false;

    // Mock upstreams first: the service gets their URLs when it starts.
    // A container reaches the mocks through the host gateway, not the host's loopback.
    let upstream_options = if args.runtime == RuntimeKind::Docker {
        runtime::docker::upstream_options().await
    } else {
        UpstreamOptions::default()
    };
    let (upstreams, upstream_problem) = start_upstreams(
        &plan,
        service_plan.as_mut(),
        args.runtime == RuntimeKind::External,
        &upstream_options,
        &progress,
    )
    .await;
    problem = problem.or(upstream_problem);

    let service: Option<RunningService> = match (&service_plan, &args.url) {
        _ if problem.is_some() => None,
        (Some(sp), _) => {
            let docker = (args.runtime == RuntimeKind::Docker)
                .then_some(docker_options.as_ref())
                .flatten();
            let start = async {
                match docker {
                    Some(options) => runtime::start_docker(sp, options, &progress).await,
                    None => runtime::start_local(sp, &progress).await,
                }
            };
            tokio::select! {
                r = start => match r {
                    Ok(s) => Some(s),
                    Err(e) => {
                        problem = Some(start_problem(e, &artifacts_dir));
                        None
                    }
                },
                _ = interrupt.wait() => {
                    interrupted = true;
                    None
                }
            }
        }
        (None, Some(url)) => Some(RunningService::external(url.clone())),
        (None, None) => None,
    };

    let mut results: Vec<CheckResult> = Vec::new();
    let mut service_url = String::new();
    if let Some(service) = service {
        timings.postgres_ms = ms(service.timings.postgres);
        timings.redis_ms = ms(service.timings.redis);
        timings.data_setup_ms = ms(service.timings.data_setup);
        if let Some(stats) = data_stats.as_ref().and_then(|s| s.lock().ok()?.clone()) {
            progress.line(&format!("  data        {}", stats.summary()));
        }
        timings.build_ms = ms(service.timings.build);
        timings.service_start_ms = ms(service.timings.service_start);
        service_url = service.base_url.to_string();
        let options = RunOptions {
            seed: plan.seed,
            only: args.only.clone(),
            upstreams: upstreams.clone(),
        };
        let checks_clock = Instant::now();
        tokio::select! {
            r = engine::run(&plan.exercises, &service, &options, &progress) => match r {
                Ok(r) => results = r,
                Err(e) => problem = Some(RunProblem { kind: ProblemKind::Infrastructure, message: e, fix: None, log_tail: vec![] }),
            },
            _ = interrupt.wait() => interrupted = true,
        }
        timings.checks_ms = ms(checks_clock.elapsed());
        progress.finish_checks();
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
    fill_unrun(&mut results, &plan.exercises, &args.only, problem.as_ref());

    let score = scoring::overall(&results);
    let status = scoring::run_status(&results, problem.as_ref());
    let report = RunReport {
        version: REPORT_VERSION,
        grader_version: env!("CARGO_PKG_VERSION").into(),
        status,
        seed: plan.seed,
        replay: plan.replay.clone(),
        started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
        duration_ms: ms(clock.elapsed()),
        runtime: RuntimeInfo {
            kind: match args.runtime {
                RuntimeKind::Local | RuntimeKind::Auto => "local".into(),
                RuntimeKind::External => "external".into(),
                RuntimeKind::Docker => "docker".into(),
            },
            service_url,
            service_dir: display_path(&plan.service_dir),
            artifacts_dir: display_path(&artifacts_dir),
        },
        timings,
        skills: scoring::by_skill(&results, &catalog),
        exercises: scoring::by_exercise(&results, &plan.exercises),
        score,
        checks: results,
        problem,
    };
    let code = scoring::exit_code(report.status, &report.score, args.min_score, interrupted);
    if let Err(e) = write_reports(&args, &report, &artifacts_dir) {
        eprintln!("grader: {e}");
        return exit::USAGE;
    }
    code
}

/// Starts the exercises' mock upstreams and hands their URLs to the service (an external service
/// cannot be told: the URLs are printed, to be configured by hand).
async fn start_upstreams(
    plan: &Plan<'_>,
    service_plan: Option<&mut runtime::ServicePlan>,
    external: bool,
    options: &UpstreamOptions,
    progress: &Progress,
) -> (Upstreams, Option<RunProblem>) {
    let specs: Vec<_> = plan
        .exercises
        .iter()
        .flat_map(|e| e.upstreams.iter().cloned())
        .collect();
    if specs.is_empty() {
        return (Upstreams::default(), None);
    }
    let upstreams = match Upstreams::start(&specs, options).await {
        Ok(u) => u,
        Err(message) => {
            let problem = RunProblem {
                kind: ProblemKind::Infrastructure,
                message: format!("the grader could not start its mock upstreams: {message}"),
                fix: Some("this is not your service's fault; run again, and report it with this output if it repeats".into()),
                log_tail: vec![],
            };
            return (Upstreams::default(), Some(problem));
        }
    };
    let renames = plan
        .manifest
        .as_ref()
        .map(|m| m.upstream_env.clone())
        .unwrap_or_default();
    let vars = upstreams.env_vars(&renames);
    // Each upstream's URL, then the settings it hands the service (e.g. a cache TTL).
    for (var, value) in &vars {
        if external {
            progress.line(&format!(
                "  upstream    set {var}={value} on your service yourself (--runtime external cannot pass it)"
            ));
        } else {
            progress.line(&format!("  upstream    {var}={value}"));
        }
    }
    if let Some(sp) = service_plan {
        sp.env.extend(vars);
    }
    (upstreams, None)
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Files a run writes to its artifacts folder.
const ARTIFACT_FILES: &[&str] = &[
    "report.json",
    "service.log",
    "build.log",
    "postgres.log",
    "redis.log",
];

/// Removes the previous run's files (only the grader's own), so logs always belong to this run.
fn prepare_artifacts(dir: &Path, is_default: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for name in ARTIFACT_FILES {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    // Keep `.grader/` out of the learner's git history without asking them to edit .gitignore.
    if is_default {
        if let Some(parent) = dir.parent() {
            let ignore = parent.join(".gitignore");
            if !ignore.exists() {
                std::fs::write(ignore, "*\n")?;
            }
        }
    }
    Ok(())
}

fn start_problem(e: StartError, artifacts_dir: &Path) -> RunProblem {
    let log = |name: &str| display_path(&artifacts_dir.join(name));
    match e {
        StartError::BuildFailed { reason, log_tail } => RunProblem {
            kind: ProblemKind::ServiceBuild,
            message: format!("your build command failed ({reason})"),
            fix: Some(format!(
                "run the build command from grader.toml yourself and fix the errors it shows; the full output is in {}",
                log("build.log")
            )),
            log_tail,
        },
        StartError::ServiceDidNotStart { message, log_tail } => RunProblem {
            kind: ProblemKind::ServiceStart,
            message,
            fix: Some(format!(
                "start the service yourself with the command from grader.toml and PORT set, and make sure the health path answers 200; its output is in {}",
                log("service.log")
            )),
            log_tail,
        },
        StartError::MissingBinary { what, install_hint } => RunProblem {
            kind: ProblemKind::Infrastructure,
            message: format!("{what} is not installed, so the grader cannot provide it"),
            fix: Some(install_hint),
            log_tail: vec![],
        },
        StartError::Infrastructure { what, message, log_tail } => RunProblem {
            kind: ProblemKind::Infrastructure,
            message: format!("the grader could not start {what}: {message}"),
            fix: Some("this is not your service's fault; run again, and report it with this output if it repeats".into()),
            log_tail,
        },
        StartError::Interrupted => RunProblem {
            kind: ProblemKind::Interrupted,
            message: "interrupted while starting".into(),
            fix: None,
            log_tail: vec![],
        },
    }
}

fn fill_unrun(
    results: &mut Vec<CheckResult>,
    exercises: &[&Exercise],
    only: &[String],
    problem: Option<&RunProblem>,
) {
    let options = RunOptions {
        seed: 0,
        only: only.to_vec(),
        ..Default::default()
    };
    let (status, message) = match problem.map(|p| p.kind) {
        Some(ProblemKind::Infrastructure) => (
            Status::Error,
            "not run: the grader could not provide what the service needs (see above)",
        ),
        Some(ProblemKind::Interrupted) => (Status::Skip, "not run: interrupted"),
        Some(ProblemKind::ServiceBuild) => (Status::Skip, "not run: the service did not build"),
        Some(ProblemKind::ServiceStart) | None => {
            (Status::Skip, "not run: the service did not start")
        }
    };
    for ex in exercises {
        for c in &ex.checks {
            let id = format!("{}/{}", ex.id, c.id);
            if !options.selects(&ex.id, &c.id) || results.iter().any(|r| r.id == id) {
                continue;
            }
            results.push(CheckResult {
                id,
                exercise: ex.id.clone(),
                title: c.title.clone(),
                skill: c.skill.clone(),
                task: c.task,
                points: c.points,
                earned: 0,
                status,
                duration_ms: 0,
                message: Some(message.into()),
                measurements: Vec::new(),
                detail: None,
            });
        }
    }
}

fn write_reports(args: &CheckArgs, report: &RunReport, artifacts_dir: &Path) -> Result<(), String> {
    let json = report::render(
        report,
        Format::Json,
        &HumanStyle {
            color: false,
            verbose: false,
        },
    );
    // The JSON report is always kept with the run's logs, whatever was asked on stdout.
    let _ = std::fs::write(artifacts_dir.join("report.json"), &json);
    if let Ok(summary) = std::env::var("GITHUB_STEP_SUMMARY") {
        if !summary.is_empty() {
            let md = report::render(
                report,
                Format::Github,
                &HumanStyle {
                    color: false,
                    verbose: false,
                },
            );
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&summary)
                .map_err(|e| format!("cannot write the GitHub summary to {summary}: {e}"))?;
            let _ = f.write_all(md.as_bytes());
        }
    }
    let stdout_color =
        anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never;
    let human = |color| {
        report::render(
            report,
            Format::Human,
            &HumanStyle {
                color,
                verbose: args.verbose,
            },
        )
    };
    // Files and machine formats never carry colour codes.
    let plain = |format| {
        report::render(
            report,
            format,
            &HumanStyle {
                color: false,
                verbose: args.verbose,
            },
        )
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, plain(args.format))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let _ = write!(anstream::stdout(), "{}", human(stdout_color));
        }
        None if args.format == Format::Human => {
            let _ = write!(anstream::stdout(), "{}", human(stdout_color));
        }
        None => {
            let _ = std::io::stdout().write_all(plain(args.format).as_bytes());
        }
    }
    Ok(())
}

/// Ctrl-C and SIGTERM, as one future that can be awaited repeatedly.
struct Interrupt {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupt {
    fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Interrupt {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = next(&mut self.int) => {},
            _ = next(&mut self.term) => {},
        }
    }
}

/// The next delivery of a signal, or never when it could not be installed.
async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
