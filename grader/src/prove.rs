//! `grader prove`: the instructor's proof that every check is honest.
//!
//! A check is proven twice: a correct service passes it, and some known-bad variant of that
//! service fails it. `variants.toml` (next to the reference service) names the env var that
//! switches a planted bug on, and for each bug the exact checks it must fail. `prove` grades the
//! reference once, then every variant on its own exercise, each as its own grading run (own
//! databases, service and temp folder, as isolated as a learner's `grader check`), and reports
//! mismatches and the checks no variant catches.

use std::collections::BTreeSet;
use std::path::Path;

use futures_util::StreamExt;
use serde::Deserialize;

use crate::diagnostic::{display_path, from_toml_error, Diagnostics, SourceFile};
use crate::exercise::Catalog;
use crate::manifest::Manifest;
use crate::outcome::Status;
use crate::run::{self, Cancel, Quiet, RunError, RunRequest};
use crate::scoring::exit;

pub const VARIANTS_FILE: &str = "variants.toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantsFile {
    /// Env var that selects the planted bug, e.g. `REFSVC_BUG`.
    pub env: String,
    pub variant: Vec<Variant>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub exercise: String,
    pub bug: String,
    /// Exactly the checks (`exercise/check`) this bug must fail.
    pub fails: Vec<String>,
    /// Another service folder, relative to the variants file, with bugs of its own (for example
    /// one written independently from the README); default the reference service.
    #[serde(default)]
    pub service: Option<String>,
    /// That service's switch; default the file's `env`.
    #[serde(default)]
    pub env: Option<String>,
    /// For the end-to-end snapshots only: the failures' evidence varies between runs (cursors
    /// from the service's clock, what a race let through), so snapshots keep statuses only.
    #[serde(default)]
    pub volatile_evidence: bool,
    /// For the end-to-end tests only: graded here, but left out of CI's run because other
    /// variants of the exercise catch the same checks (a time budget; `grader prove` still
    /// grades it).
    #[serde(default)]
    pub soak: bool,
}

pub fn load(path: &Path) -> Result<VariantsFile, Diagnostics> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let file = SourceFile::new(display_path(path), text);
    toml::from_str(&file.text).map_err(|e| Diagnostics::from(from_toml_error(&file, &e)))
}

/// Outcome of one graded run: the ids of checks that did not pass, or why the run broke.
struct Graded {
    failed: BTreeSet<String>,
    percent: f64,
    errors: Vec<String>,
}

/// Grades the service through the grading-run API (each run owns its databases, service and
/// temp folder, exactly as a learner's `grader check` would), quietly.
async fn grade(
    service: &Path,
    catalog: &Catalog,
    exercise: Option<&str>,
    env: Option<(&str, &str)>,
    seed: u64,
    cancel: &Cancel,
) -> Result<Graded, String> {
    let artifacts = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut request = RunRequest::new(service);
    request.seed = Some(seed);
    request.artifacts_dir = Some(artifacts.path().to_path_buf());
    request.exercises = exercise.map(|e| vec![e.to_string()]).unwrap_or_default();
    request.service_env = env
        .map(|(k, v)| vec![(k.to_string(), v.to_string())])
        .unwrap_or_default();
    let describe = |e: RunError| match e {
        RunError::Usage(m) | RunError::Infrastructure(m) => m,
        RunError::Diagnostics(d) => d.render(false),
    };
    let plan = run::plan(&request, catalog).map_err(describe)?;
    let report = run::execute(plan, &Quiet, cancel.clone())
        .await
        .map_err(describe)?;
    if let Some(problem) = &report.problem {
        if report
            .checks
            .iter()
            .all(|c| c.status != Status::Pass && c.status != Status::Fail)
        {
            return Err(format!("no check ran: {}", problem.message));
        }
    }
    Ok(Graded {
        failed: report
            .checks
            .iter()
            .filter(|c| c.status != Status::Pass)
            .map(|c| c.id.clone())
            .collect(),
        percent: report.score.percent,
        errors: report
            .checks
            .iter()
            .filter(|c| c.status == Status::Error)
            .map(|c| format!("{}: {}", c.id, c.message.as_deref().unwrap_or("")))
            .collect(),
    })
}

/// Runs the proof and prints it; returns the exit code (0 proven, 1 not, 2 bad input).
pub async fn run(
    service: &Path,
    variants_file: &Path,
    catalog: &Catalog,
    seed: u64,
    jobs: usize,
    only_exercise: Option<&str>,
    cancel: Cancel,
) -> i32 {
    let variants = match load(variants_file) {
        Ok(mut v) => {
            // `--exercise`: one exercise's proof, for an author working on it.
            if let Some(only) = only_exercise {
                v.variant.retain(|variant| variant.exercise == only);
            }
            v
        }
        Err(d) => {
            eprint!("{}", d.render(false));
            return exit::USAGE;
        }
    };
    let manifest = match Manifest::load(service) {
        Ok(m) => m,
        Err(d) => {
            eprint!("{}", d.render(false));
            return exit::USAGE;
        }
    };
    println!(
        "proving {} with {} variants ({}), seed {seed}",
        display_path(service),
        variants.variant.len(),
        variants.env
    );
    let mut ok = true;
    match grade(service, catalog, only_exercise, None, seed, &cancel).await {
        Ok(g) if g.failed.is_empty() => println!("  {:<32} {:>6.1}%  ok", "reference", g.percent),
        Ok(g) => {
            ok = false;
            println!(
                "  {:<32} {:>6.1}%  NOT PROVEN: the correct service fails {:?}",
                "reference", g.percent, g.failed
            );
        }
        Err(e) => {
            ok = false;
            println!("  {:<32} ERROR: {e}", "reference");
        }
    }

    // Variants run `jobs` at a time; each owns a database and a service process. A variant of
    // another service (an independent implementation) runs that service, with its own switch.
    let variants_dir = variants_file.parent().unwrap_or(Path::new("."));
    let cancel_ref = &cancel;
    let default_env = variants.env.as_str();
    let mut results: Vec<(usize, Result<Graded, String>)> = futures_util::stream::iter(
        variants
            .variant
            .iter()
            .enumerate()
            .map(|(i, v)| async move {
                let own_service = v.service.as_deref().map(|s| variants_dir.join(s));
                let env = v.env.as_deref().unwrap_or(default_env);
                let r = grade(
                    own_service.as_deref().unwrap_or(service),
                    catalog,
                    Some(&v.exercise),
                    Some((env, &v.bug)),
                    seed,
                    cancel_ref,
                )
                .await;
                (i, r)
            }),
    )
    .buffer_unordered(jobs.max(1))
    .collect()
    .await;
    results.sort_by_key(|(i, _)| *i);
    for ((_, result), v) in results.into_iter().zip(&variants.variant) {
        let expected: BTreeSet<String> = v.fails.iter().cloned().collect();
        match result {
            Ok(g) if !g.errors.is_empty() => {
                ok = false;
                println!(
                    "  {:<32} ERROR: grader errors: {}",
                    v.bug,
                    g.errors.join("; ")
                );
            }
            Ok(g) if g.failed == expected => {
                println!(
                    "  {:<32} fails {} check{}  ok",
                    v.bug,
                    expected.len(),
                    if expected.len() == 1 { "" } else { "s" }
                );
            }
            Ok(g) => {
                ok = false;
                let extra: Vec<&String> = g.failed.difference(&expected).collect();
                let missed: Vec<&String> = expected.difference(&g.failed).collect();
                println!("  {:<32} MISMATCH", v.bug);
                if !missed.is_empty() {
                    println!("      expected to fail but passed: {missed:?}");
                }
                if !extra.is_empty() {
                    println!("      failed but not listed:       {extra:?}");
                }
            }
            Err(e) => {
                ok = false;
                println!("  {:<32} ERROR: {e}", v.bug);
            }
        }
    }

    let caught: BTreeSet<&String> = variants.variant.iter().flat_map(|v| &v.fails).collect();
    let mut all = Vec::new();
    for id in manifest.exercise_ids() {
        if only_exercise.is_some_and(|only| only != id) {
            continue;
        }
        if let Some(ex) = catalog.exercise(&id) {
            all.extend(ex.checks.iter().map(|c| format!("{}/{}", ex.id, c.id)));
        }
    }
    let uncaught: Vec<&String> = all.iter().filter(|id| !caught.contains(id)).collect();
    println!(
        "coverage: {}/{} checks are caught by at least one variant",
        all.len() - uncaught.len(),
        all.len()
    );
    if !uncaught.is_empty() {
        ok = false;
        for id in uncaught {
            println!("  not caught by any variant: {id}");
        }
    }
    println!("{}", if ok { "proven" } else { "NOT proven" });
    if ok {
        exit::OK
    } else {
        exit::CHECKS_FAILED
    }
}
