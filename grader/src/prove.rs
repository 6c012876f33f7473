//! `grader prove`: the instructor's proof that every check is honest.
//!
//! A check is proven twice: a correct service passes it, and some known-bad variant of that
//! service fails it. `variants.toml` (next to the reference service) names the env var that
//! switches a planted bug on, and for each bug the exact checks it must fail. `prove` grades the
//! reference once, then every variant on its own exercise, each in a separate `grader check`
//! process (so runs are isolated exactly as a learner's would be), and reports mismatches and the
//! checks no variant catches.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::diagnostic::{from_toml_error, Diagnostics, SourceFile};
use crate::exercise::Catalog;
use crate::manifest::{display_path, Manifest};
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

fn grade(
    exe: &Path,
    service: &Path,
    exercises_dir: Option<&Path>,
    exercise: Option<&str>,
    env: Option<(&str, &str)>,
    seed: u64,
) -> Result<Graded, String> {
    let artifacts = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("check")
        .arg(service)
        .args(["--seed", &seed.to_string(), "--artifacts-dir"])
        .arg(artifacts.path())
        .args(["--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(dir) = exercises_dir {
        cmd.arg("--exercises-dir").arg(dir);
    }
    if let Some(ex) = exercise {
        cmd.args(["--exercise", ex]);
    }
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run grader: {e}"))?;
    let report: serde_json::Value = std::fs::read_to_string(artifacts.path().join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| {
            format!(
                "no report (exit {:?}): {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
    let checks = report["checks"].as_array().cloned().unwrap_or_default();
    Ok(Graded {
        failed: checks
            .iter()
            .filter(|c| c["status"] != "pass")
            .filter_map(|c| c["id"].as_str().map(str::to_string))
            .collect(),
        percent: report["score"]["percent"].as_f64().unwrap_or(0.0),
        errors: checks
            .iter()
            .filter(|c| c["status"] == "error")
            .map(|c| {
                format!(
                    "{}: {}",
                    c["id"].as_str().unwrap_or("?"),
                    c["message"].as_str().unwrap_or("")
                )
            })
            .collect(),
    })
}

/// Runs the proof and prints it; returns the exit code (0 proven, 1 not, 2 bad input).
pub fn run(
    service: &Path,
    variants_file: &Path,
    exercises_dir: Option<PathBuf>,
    catalog: &Catalog,
    seed: u64,
    jobs: usize,
) -> i32 {
    let variants = match load(variants_file) {
        Ok(v) => v,
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
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("grader: cannot find its own executable: {e}");
            return exit::INFRASTRUCTURE;
        }
    };
    let dir = exercises_dir.as_deref();
    println!(
        "proving {} with {} variants ({}), seed {seed}",
        display_path(service),
        variants.variant.len(),
        variants.env
    );
    let mut ok = true;
    match grade(&exe, service, dir, None, None, seed) {
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

    // Variants run `jobs` at a time; each owns a database and a service process.
    let queue = std::sync::Mutex::new(
        variants
            .variant
            .iter()
            .cloned()
            .enumerate()
            .collect::<Vec<_>>(),
    );
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((i, v)) = next else { break };
                let r = grade(
                    &exe,
                    service,
                    dir,
                    Some(&v.exercise),
                    Some((&variants.env, &v.bug)),
                    seed,
                );
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
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
