//! Start-up pieces of a run: the data-set hook, the mock upstreams, the artifacts folder, what a
//! start-up error means to the learner, and the checks that never ran.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{selects, Plan, RunEvents};
use crate::dataset::{self, LoadStats};
use crate::diagnostic::display_path;
use crate::exercise::{Exercise, Protocol};
use crate::outcome::{CheckResult, ProblemKind, RunProblem, Status};
use crate::runtime::{BeforeService, ServicePlan, StartError};
use crate::upstream::{UpstreamOptions, Upstreams};

/// Hands the runtime a hook that loads every exercise's `[dataset]` into the grader's database
/// before the service starts; the load's figures land in the returned cell. `None` when no
/// exercise declares a data set.
pub fn attach_datasets(
    service_plan: &mut ServicePlan,
    exercises: &[&Exercise],
    seed: u64,
) -> Option<Arc<Mutex<Option<LoadStats>>>> {
    let datasets: Vec<_> = exercises
        .iter()
        .filter_map(|e| e.dataset.clone().map(|d| (e.id.clone(), d)))
        .collect();
    if datasets.is_empty() {
        return None;
    }
    let stats: Arc<Mutex<Option<LoadStats>>> = Arc::default();
    let cell = stats.clone();
    let datasets = Arc::new(datasets);
    service_plan.before_service = Some(BeforeService(Arc::new(move |database_url: String| {
        let datasets = datasets.clone();
        let cell = cell.clone();
        Box::pin(async move {
            let loaded = dataset::load(&datasets, seed, &database_url).await?;
            *cell.lock().unwrap_or_else(|e| e.into_inner()) = Some(loaded);
            Ok(())
        })
    })));
    Some(stats)
}

/// Starts the exercises' mock upstreams and hands their URLs to the service (an external service
/// cannot be told: the URLs are printed, to be configured by hand).
pub async fn upstreams(
    plan: &Plan<'_>,
    service_plan: Option<&mut ServicePlan>,
    external: bool,
    options: &UpstreamOptions,
    events: &dyn RunEvents,
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
            events.line(&format!(
                "  upstream    set {var}={value} on your service yourself (--runtime external cannot pass it)"
            ));
        } else {
            events.line(&format!("  upstream    {var}={value}"));
        }
    }
    if let Some(sp) = service_plan {
        sp.env.extend(vars);
    }
    (upstreams, None)
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
pub fn prepare_artifacts(dir: &Path, is_default: bool) -> std::io::Result<()> {
    // `.grader/last-run` lives in the service's folder, which the service can write: never
    // through a link it planted there.
    if is_default {
        crate::artifacts::refuse_links(dir, 1)?;
    }
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

/// What went wrong before any check ran, and its fix. `protocol` says how the service tells it
/// is ready, for the fix of a service that never did.
pub fn problem(e: StartError, artifacts_dir: &Path, protocol: Protocol) -> RunProblem {
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
        StartError::BuildRefused { message, fix } => RunProblem {
            kind: ProblemKind::ServiceBuild,
            message,
            fix: Some(fix),
            log_tail: vec![],
        },
        StartError::ServiceDidNotStart { message, log_tail } => RunProblem {
            kind: ProblemKind::ServiceStart,
            message,
            fix: Some(format!(
                "start the service yourself with the command from grader.toml and PORT set, and make sure {}; its output is in {}",
                match protocol {
                    Protocol::Http => "the health path answers 200",
                    Protocol::Grpc => "it serves gRPC and grpc.health.v1.Health/Check answers SERVING (grpcurl -plaintext 127.0.0.1:$PORT grpc.health.v1.Health/Check)",
                },
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
        StartError::MissingImage { what, message, fix } => RunProblem {
            kind: ProblemKind::Infrastructure,
            message: format!("the grader could not start {what}: {message}"),
            fix: Some(fix),
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

/// Orders results as the exercises and their files list the checks (a stopped run collects them
/// as they ended, and adds the unrun ones last). Stable, so results of one check keep their order.
pub fn sort_in_file_order(results: &mut [CheckResult], exercises: &[&Exercise]) {
    let position = |id: &str| {
        exercises
            .iter()
            .flat_map(|ex| ex.checks.iter().map(move |c| (ex, c)))
            .position(|(ex, c)| {
                id.strip_prefix(ex.id.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    == Some(c.id.as_str())
            })
            .unwrap_or(usize::MAX)
    };
    results.sort_by_cached_key(|r| position(&r.id));
}

pub fn fill_unrun(
    results: &mut Vec<CheckResult>,
    exercises: &[&Exercise],
    only: &[String],
    problem: Option<&RunProblem>,
) {
    let (status, message) = match problem.map(|p| p.kind) {
        // One explanation (the run's problem) for the whole run, not an error block per check.
        Some(ProblemKind::Infrastructure) => (
            Status::Skip,
            "not run: the grader could not provide what the service needs (see above)",
        ),
        Some(ProblemKind::Interrupted) => (Status::Skip, "not run: interrupted"),
        Some(ProblemKind::TimedOut) => (
            Status::Skip,
            "not finished: the checks took longer than --timeout (see above)",
        ),
        Some(ProblemKind::ServiceBuild) => (Status::Skip, "not run: the service did not build"),
        Some(ProblemKind::ServiceStart) | None => {
            (Status::Skip, "not run: the service did not start")
        }
    };
    for ex in exercises {
        for c in &ex.checks {
            let id = format!("{}/{}", ex.id, c.id);
            if !selects(only, &ex.id, &c.id) || results.iter().any(|r| r.id == id) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_that_never_got_ready_is_told_how_its_protocol_says_ready() {
        let never_ready = || StartError::ServiceDidNotStart {
            message: "your service did not get ready".into(),
            log_tail: vec![],
        };
        let fix = |protocol| {
            problem(never_ready(), Path::new(".grader/last-run"), protocol)
                .fix
                .unwrap()
        };
        assert!(fix(Protocol::Http).contains("the health path answers 200"));
        let grpc = fix(Protocol::Grpc);
        assert!(
            grpc.contains("grpc.health.v1.Health/Check answers SERVING")
                && !grpc.contains("health path"),
            "{grpc}"
        );
    }
}
