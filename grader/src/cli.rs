//! Command-line interface: parses flags, calls the grading-run API (`crate::run`) and writes the
//! reports. Policy decisions (exit codes, what goes to stdout) live here; the grading itself is
//! reusable from tests, `prove` and future front ends.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::diagnostic::Diagnostics;
use crate::exercise::coverage::{self, Cover};
use crate::exercise::{self, Catalog, ExerciseSource};
use crate::outcome::{ProblemKind, RunReport};
use crate::progress::Progress;
use crate::report::{self, human::HumanStyle, Format};
use crate::run::{self, Cancel, RunError, RunRequest, RuntimeKind};
use crate::scoring::{self, exit};

pub mod batch;
pub mod docs;
pub mod init;
pub mod new_exercise;
pub mod schema;
pub mod watch;

#[derive(Parser, Debug)]
#[command(
    name = "grader",
    version,
    about = "Grades a real HTTP service against backend-engineering exercises",
    long_about = "Grades a real HTTP service against backend-engineering exercises.\n\nRun `grader check` in your service's folder: it starts your service with a throwaway PostgreSQL, sends the exercise's checks, and explains every failure with a curl command you can paste."
)]
pub struct Cli {
    /// When to colour the output: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    #[command(subcommand)]
    pub command: Command,
}

/// `--color`: overrides the terminal detection (and `NO_COLOR`) for every coloured output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

// Parsed once per process; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the service in PATH (default: the current folder) and grade it.
    Check(CheckArgs),
    /// List the exercises, their skill areas and checks.
    Exercises {
        /// Print the coverage matrix instead: each README requirement and the checks that can
        /// fail it.
        #[arg(long)]
        coverage: bool,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Validate every exercise file (for instructors); errors give file:line:col. Every README
    /// requirement must be covered by a check (or marked not graded, or listed as untested).
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
        /// Prove one exercise: the reference on it, its variants, its checks' coverage.
        #[arg(long, value_name = "ID")]
        exercise: Option<String>,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Write a starter service in DIR (default: the current folder): it answers /healthz and
    /// connects to PostgreSQL, with a grader.toml for the exercises; never overwrites a file.
    Init {
        /// Folder to write into (created when missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Language of the starter.
        #[arg(long, value_enum)]
        lang: init::Lang,
        /// Exercise to attempt (repeatable; default: the first of the curriculum).
        #[arg(long = "exercise", short = 'e', value_name = "ID")]
        exercises: Vec<String>,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Re-grade on every save: the service is rebuilt and restarted, PostgreSQL and Redis stay
    /// up (each run gets a fresh copy of the database), last run's failures run first.
    Watch(WatchArgs),
    /// Where you stand: each exercise's checks that pass (from .grader/progress.json, kept by
    /// every run), a bar per skill, and what to do next.
    Status {
        /// Folder of the service (holding grader.toml and .grader/).
        #[arg(default_value = ".")]
        path: PathBuf,
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
    /// Print one staged hint for a failing check: stage 1 nudges, the last names the mechanism.
    Hint {
        /// Check id, e.g. api-design/create-returns-201
        check: String,
        /// Which hint, from 1.
        #[arg(default_value_t = 1)]
        stage: usize,
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Grade a whole class: every submission in SUBMISSIONS as its own run, --jobs at a time,
    /// resumable, with a class report (CSV, JSON, HTML); `batch merge` combines shards.
    Batch(batch::BatchArgs),
    /// Write a new exercise's skeleton (for instructors): DIR/ID/README.md and exercise.toml with
    /// one example check, accepted by `grader lint` as written; never overwrites.
    NewExercise(new_exercise::NewExerciseArgs),
    /// Print the JSON Schema of exercise.toml or grader.toml, for editors (taplo, Even Better
    /// TOML): save it and name it in a `#:schema FILE` first line.
    Schema {
        #[arg(value_enum)]
        file: schema::SchemaFile,
    },
    /// Print a shell completion script for SHELL (bash, zsh, fish, powershell or elvish).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write grader.1 and one page per subcommand into --out DIR.
    Man {
        /// Write the pages into this folder instead of printing grader.1.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// Read exercises from this folder instead of the copy built into grader.
    #[arg(long, env = "GRADER_EXERCISES_DIR", value_name = "DIR")]
    pub exercises_dir: Option<PathBuf>,
}

/// What `check` and `watch` grade: a service folder, and which of its exercises and checks.
#[derive(Args, Debug)]
pub struct Target {
    /// Folder of the service (holding grader.toml).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Grade these exercises instead of the ones grader.toml lists (repeatable).
    #[arg(long = "exercise", short = 'e', value_name = "ID")]
    pub exercises: Vec<String>,
    /// Run only these checks: `exercise/check`, `check` or a whole `exercise` (repeatable).
    #[arg(long, value_name = "CHECK")]
    pub only: Vec<String>,
}

impl Target {
    /// A run request for this target, the rest at its defaults.
    fn request(&self) -> RunRequest {
        RunRequest {
            exercises: self.exercises.clone(),
            only: self.only.clone(),
            ..RunRequest::new(&self.path)
        }
    }
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub target: Target,
    /// Seed of the random data for every run of this session (a fresh one when absent, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Quiet time after a change before re-grading, so one save of many files is one run.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub debounce_ms: u64,
    /// Stop after this many runs (for scripts and tests; default: until Ctrl-C).
    #[arg(long, value_name = "N", hide = true)]
    pub max_runs: Option<u32>,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: Target,
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
    /// The most the checks may take, all together (e.g. 10m): a service that answers slowly, or
    /// never, then fails at this limit instead of costing every check its own timeouts.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// The service is not trusted (a submission): it must run under --runtime docker, and a
    /// `[docker] build` command, which would run on this machine, fails the build instead.
    #[arg(long)]
    pub untrusted: bool,
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
    // Every coloured stream (reports, diagnostics) asks anstream, which reads this choice.
    match cli.color {
        ColorWhen::Auto => {}
        ColorWhen::Always => anstream::ColorChoice::Always.write_global(),
        ColorWhen::Never => anstream::ColorChoice::Never.write_global(),
    }
    match cli.command {
        Command::Check(args) => check(args).await,
        Command::Batch(args) => batch::run(args).await,
        Command::Completions { shell } => docs::print_completions(shell),
        Command::Man { out } => docs::print_man(out.as_deref()),
        Command::NewExercise(args) => new_exercise::run(&args),
        Command::Schema { file } => schema::print(file),
        Command::Exercises { coverage, source } => match coverage {
            true => print_coverage(&source),
            false => list_exercises(&source),
        },
        Command::Lint(source) => lint(&source),
        Command::Explain { check, source } => explain(&check, &source),
        Command::Hint {
            check,
            stage,
            source,
        } => hint(&check, stage, &source),
        Command::Watch(args) => match load_catalog(&args.source) {
            Ok(catalog) => watch::run(args, &catalog).await,
            Err(code) => code,
        },
        Command::Status { path, source } => status(&path, &source),
        Command::Init {
            dir,
            lang,
            exercises,
            source,
        } => load_catalog(&source).map_or_else(|c| c, |c| init::run(&dir, lang, &exercises, &c)),
        Command::Prove {
            path,
            seed,
            jobs,
            variants,
            exercise,
            source,
        } => match load_catalog(&source) {
            Ok(catalog) => {
                let variants = variants.unwrap_or_else(|| path.join(crate::prove::VARIANTS_FILE));
                let (canceller, cancel) = Cancel::new();
                let mut interrupt = Interrupt::new();
                let watcher = tokio::spawn(async move {
                    interrupt.wait().await;
                    canceller.cancel();
                });
                let code = crate::prove::run(
                    &path,
                    &variants,
                    &catalog,
                    seed,
                    jobs,
                    exercise.as_deref(),
                    cancel,
                )
                .await;
                watcher.abort();
                code
            }
            Err(code) => code,
        },
    }
}

pub(crate) fn exercise_source(args: &SourceArgs) -> ExerciseSource {
    match &args.exercises_dir {
        Some(dir) => ExerciseSource::Dir(dir.clone()),
        None => ExerciseSource::Embedded,
    }
}

pub(crate) fn stderr_color() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
}

pub(crate) fn print_diagnostics(d: &Diagnostics) {
    let _ = write!(anstream::stderr(), "{}", d.render(stderr_color()));
}

pub(crate) fn load_catalog(source: &SourceArgs) -> Result<Catalog, i32> {
    exercise::load_catalog(&exercise_source(source)).map_err(|d| {
        print_diagnostics(&d);
        exit::USAGE
    })
}

fn lint(source: &SourceArgs) -> i32 {
    let Ok(catalog) = load_catalog(source) else {
        return exit::USAGE;
    };
    let mut problems = Diagnostics::default();
    for exercise in &catalog.exercises {
        problems.0.extend(coverage::problems(exercise).0);
        problems.0.extend(exercise::hints::problems(exercise).0);
    }
    if !problems.is_empty() {
        print_diagnostics(&problems);
        return exit::USAGE;
    }
    let checks: usize = catalog.exercises.iter().map(|e| e.checks.len()).sum();
    let (mut covered, mut untested, mut not_graded) = (0, 0, 0);
    for exercise in &catalog.exercises {
        for (_, cover) in coverage::matrix(exercise) {
            match cover {
                Cover::Checks(_) => covered += 1,
                Cover::Untested => untested += 1,
                Cover::NotGraded => not_graded += 1,
                Cover::Missing => {}
            }
        }
    }
    println!(
        "ok: {} skills, {} exercises, {checks} checks in {}",
        catalog.skills.len(),
        catalog.exercises.len(),
        exercise_source(source).describe()
    );
    println!(
        "requirements: {covered} covered by checks, {not_graded} not graded, {untested} untested (listed in `untested`; `grader exercises --coverage` shows them)"
    );
    exit::OK
}

fn print_coverage(source: &SourceArgs) -> i32 {
    let Ok(catalog) = load_catalog(source) else {
        return exit::USAGE;
    };
    for exercise in &catalog.exercises {
        println!("{}", exercise.id);
        for (requirement, cover) in coverage::matrix(exercise) {
            let what = match cover {
                Cover::Checks(checks) => checks.join(", "),
                Cover::NotGraded => "(not graded)".into(),
                Cover::Untested => "UNTESTED".into(),
                Cover::Missing => "MISSING: no check, not listed as untested".into(),
            };
            println!("  {:<12} {what}", requirement.id);
        }
    }
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
    let Some((ex, c)) = find_check(&catalog, id) else {
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
    println!(
        "stuck? `grader hint {}/{}` gives hints one stage at a time",
        ex.id, c.id
    );
    if !c.spec.is_empty() {
        println!("spec: {}", c.spec.join("; "));
    }
    if !c.covers.is_empty() {
        println!("\nrequirements it grades (exercises/{}/README.md):", ex.id);
        for cover in &c.covers {
            let line = ex
                .readme
                .as_ref()
                .zip(ex.requirements.iter().find(|r| r.id == cover.id))
                .map(|(readme, r)| line_around(&readme.text, r.span.start))
                .unwrap_or_default();
            println!("  [{}] {line}", cover.id);
        }
    }
    exit::OK
}

/// A check by `exercise/check` or unique `check` (for `explain` and `hint`); an unknown one is
/// reported, with the nearest id.
fn find_check<'a>(
    catalog: &'a Catalog,
    id: &str,
) -> Option<(&'a exercise::Exercise, &'a exercise::Check)> {
    let found = catalog.find_check(id);
    if found.is_none() {
        let ids = catalog.check_ids();
        let near = crate::diagnostic::did_you_mean(
            id,
            ids.iter()
                .flat_map(|s| [s.as_str(), s.split_once('/').map_or(s.as_str(), |(_, c)| c)]),
        )
        .map(|s| format!("did you mean \"{s}\"? "))
        .unwrap_or_default();
        eprintln!("grader: no check \"{id}\"; {near}`grader exercises` lists them");
    }
    found
}

fn hint(id: &str, stage: usize, source: &SourceArgs) -> i32 {
    let Ok(catalog) = load_catalog(source) else {
        return exit::USAGE;
    };
    let Some((ex, c)) = find_check(&catalog, id) else {
        return exit::USAGE;
    };
    match exercise::hints::render(ex, c, stage) {
        Ok(text) => {
            print!("{text}");
            exit::OK
        }
        Err(message) => {
            eprintln!("grader: {message}");
            exit::USAGE
        }
    }
}

async fn check(args: CheckArgs) -> i32 {
    let Ok(catalog) = load_catalog(&args.source) else {
        return exit::USAGE;
    };
    if let Some(min) = args.min_score {
        if !(0.0..=100.0).contains(&min) {
            eprintln!("grader: --min-score is a percentage from 0 to 100");
            return exit::USAGE;
        }
    }
    if args.untrusted && !matches!(args.runtime, RuntimeKind::Docker | RuntimeKind::External) {
        eprintln!(
            "grader: --untrusted needs --runtime docker: the local runtime runs the service as \
             you, with your files and your network (see docs/SECURITY.md)"
        );
        return exit::USAGE;
    }
    let request = RunRequest {
        runtime: args.runtime,
        url: args.url.clone(),
        seed: args.seed,
        artifacts_dir: args.artifacts_dir.clone(),
        checks_timeout: args.timeout,
        untrusted: args.untrusted,
        ..args.target.request()
    };
    let plan = match run::plan(&request, &catalog) {
        Ok(p) => p,
        Err(e) => return run_error(e),
    };
    let machine_output = args.format != Format::Human && args.output.is_none();
    let progress = Progress::new(!machine_output || std::io::stderr().is_terminal());
    // Ctrl-C and SIGTERM cancel the run; it stops everything it started before returning.
    let (canceller, cancel) = Cancel::new();
    let mut interrupt = Interrupt::new();
    let watcher = tokio::spawn(async move {
        interrupt.wait().await;
        canceller.cancel();
    });
    let outcome = run::execute(plan, &progress, cancel).await;
    watcher.abort();
    let report = match outcome {
        Ok(r) => r,
        Err(e) => return run_error(e),
    };
    let interrupted = report
        .problem
        .as_ref()
        .is_some_and(|p| p.kind == ProblemKind::Interrupted);
    let code = scoring::exit_code(report.status, &report.score, args.min_score, interrupted);
    let artifacts_dir = PathBuf::from(&report.runtime.artifacts_dir);
    if let Err(e) = write_reports(&args, &report, &artifacts_dir) {
        eprintln!("grader: {e}");
        return exit::USAGE;
    }
    let next = keep_progress(&args.target.path, &report, &catalog);
    if args.format == Format::Human && args.output.is_none() && !interrupted {
        if let Some(next) = next {
            say(&next);
        }
    }
    code
}

/// A line on stderr that is only advice: a reader that has gone away (a closed pipe) must not
/// turn it into a panic or change the exit code.
pub(crate) fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Adds a run's verdicts to `.grader/progress.json` and returns the next step, for one line
/// after the report. A record that cannot be read or written is a warning: the run's verdicts
/// stand.
pub(crate) fn keep_progress(
    service_dir: &Path,
    report: &RunReport,
    catalog: &Catalog,
) -> Option<String> {
    use crate::curriculum::{next_step, ProgressRecord};
    let kept = ProgressRecord::load(service_dir).and_then(|mut record| {
        record.record(report);
        record.save(service_dir)?;
        Ok(record)
    });
    match kept {
        Ok(record) => Some(next_step(&record, catalog)),
        Err(e) => {
            say(&format!("grader: progress not recorded: {e}"));
            None
        }
    }
}

fn status(path: &Path, source: &SourceArgs) -> i32 {
    use crate::curriculum::{render_status, ProgressRecord, PROGRESS_FILE};
    let Ok(catalog) = load_catalog(source) else {
        return exit::USAGE;
    };
    match ProgressRecord::load(path) {
        Ok(record) => {
            let file = crate::diagnostic::display_path(&path.join(PROGRESS_FILE));
            print!("{}", render_status(&record, &catalog, &file));
            exit::OK
        }
        Err(e) => {
            eprintln!("grader: {e}");
            exit::USAGE
        }
    }
}

/// The README line holding a requirement marker, without markup noise, for `explain`.
fn line_around(text: &str, offset: usize) -> String {
    let start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[offset..]
        .find('\n')
        .map(|i| offset + i)
        .unwrap_or(text.len());
    text[start..end]
        .trim()
        .trim_start_matches(['-', '|', ' '])
        .trim_end_matches(['|', ' '])
        .to_string()
}

/// Prints why a run could not start and returns its exit code.
pub(crate) fn run_error(e: RunError) -> i32 {
    match e {
        RunError::Usage(message) => {
            eprintln!("grader: {message}");
            exit::USAGE
        }
        RunError::Diagnostics(d) => {
            print_diagnostics(&d);
            exit::USAGE
        }
        RunError::Infrastructure(message) => {
            eprintln!("grader: {message}");
            exit::INFRASTRUCTURE
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
    // The JSON report is always kept with the run's logs, whatever was asked on stdout. Written
    // by replacing the old file (which the service could have swapped for a FIFO, a link or a
    // read-only "100%" report); a failure is loud, never a stale report left in place.
    let report_path = artifacts_dir.join("report.json");
    crate::artifacts::write_replacing(&report_path, json.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", report_path.display()))?;
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
pub(crate) struct Interrupt {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupt {
    pub(crate) fn new() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Interrupt {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    pub(crate) async fn wait(&mut self) {
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
