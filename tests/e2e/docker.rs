//! The docker runtime end to end (`--runtime docker`): the same check results as the local
//! runtime for the reference service and known-bad variants, nothing left behind after a run or
//! after SIGINT/SIGTERM, and misbehaving containers (memory hog, fork bomb) stopped and reported.
//!
//! Needs a Docker daemon and the offline images (scripts/build-offline-images, which .ci/run
//! runs); without a daemon every test says so and passes without checking anything.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

/// Tests here count the daemon's labelled objects, so they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        // CI sets GRADER_REQUIRE_DOCKER so a missing daemon fails there instead of passing.
        assert!(
            std::env::var_os("GRADER_REQUIRE_DOCKER").is_none(),
            "GRADER_REQUIRE_DOCKER is set but `docker info` failed"
        );
        eprintln!("no Docker daemon: docker runtime tests skipped");
    }
    ok
}

/// Containers, networks and volumes carrying the grader's run label (this test binary runs its
/// tests one at a time, so any is a leftover).
fn labelled_leftovers() -> Vec<String> {
    let mut found = Vec::new();
    for what in [
        vec!["ps", "-aq"],
        vec!["network", "ls", "-q"],
        vec!["volume", "ls", "-q"],
    ] {
        let out = Command::new("docker")
            .args(&what)
            .args(["--filter", "label=grader.run"])
            .output()
            .expect("docker CLI runs");
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            found.push(format!("{} {id}", what[0]));
        }
    }
    found
}

fn statuses(run: &Run) -> BTreeMap<String, String> {
    run.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn docker_runtime_matches_local_and_leaves_nothing() {
    let _serial = serial();
    if !docker_available() {
        return;
    }
    for bug in ["", "no-405", "duplicate-500", "leak-db-errors"] {
        let env: Vec<(&str, &str)> = if bug.is_empty() {
            vec![]
        } else {
            vec![("REFSVC_BUG", bug)]
        };
        // The reference on every exercise of its grader.toml (mock upstreams included); each
        // variant on the exercise its bug belongs to.
        let args: &[&str] = if bug.is_empty() {
            &["--seed", "7"]
        } else {
            &["--exercise", "api-design", "--seed", "7"]
        };
        let local = grade(&reference_dir(), args, &env);
        let started = Instant::now();
        let docker = grade_docker(args, bug);
        eprintln!("{bug:?}: docker run took {:?}", started.elapsed());
        assert_eq!(
            docker.json()["runtime"]["kind"],
            "docker",
            "{}",
            docker.human_summary()
        );
        assert_eq!(
            statuses(&local),
            statuses(&docker),
            "bug {bug:?}: docker and local disagree\n{}",
            docker.human_summary()
        );
        assert_eq!(local.code, docker.code, "{}", docker.human_summary());
        let left = labelled_leftovers();
        assert!(left.is_empty(), "left behind after {bug:?}: {left:?}");
    }
}

/// The reference service in docker, with `REFSVC_BUG` handed to the container (a container does
/// not inherit the grader's environment): a folder with the same Dockerfile and binary (built by
/// the reference run before it) and a grader.toml that sets the bug in `service.env`.
fn grade_docker(args: &[&str], bug: &str) -> Run {
    let mut all = vec!["--runtime", "docker"];
    all.extend_from_slice(args);
    if bug.is_empty() {
        return grade(&reference_dir(), &all, &[]);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".docker")).unwrap();
    for f in ["Dockerfile", ".dockerignore", ".docker/reference-service"] {
        std::fs::copy(reference_dir().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("grader.toml"),
        format!(
            "exercises = [\"api-design\"]\n[service]\nstartup_timeout = \"60s\"\nenv = {{ REFSVC_BUG = \"{bug}\" }}\n"
        ),
    )
    .unwrap();
    grade(dir.path(), &all, &[])
}

#[test]
fn a_second_run_reuses_the_image() {
    let _serial = serial();
    if !docker_available() {
        return;
    }
    let args = [
        "--runtime",
        "docker",
        "--exercise",
        "api-design",
        "--seed",
        "1",
    ];
    let first = grade(&reference_dir(), &args, &[]);
    assert_eq!(first.code, 0, "{}", first.human_summary());
    let second = grade(&reference_dir(), &args, &[]);
    assert_eq!(second.code, 0, "{}", second.human_summary());
    let build_log =
        std::fs::read_to_string(second.artifacts.path().join("build.log")).unwrap_or_default();
    assert!(
        build_log.contains("reusing image grader-svc:"),
        "{build_log}\n{}",
        second.human_summary()
    );
    eprintln!(
        "build first {} ms, second {} ms; service start {} ms",
        first.json()["timings"]["build_ms"],
        second.json()["timings"]["build_ms"],
        second.json()["timings"]["service_start_ms"]
    );
}

fn misbehaving(fixture_name: &str, expect: &str) {
    let _serial = serial();
    if !docker_available() {
        return;
    }
    let started = Instant::now();
    let run = grade(&fixture(fixture_name), &["--runtime", "docker"], &[]);
    assert_eq!(run.code, 1, "{}", run.human_summary());
    let report = run.json();
    assert_eq!(report["problem"]["kind"], "service_start", "{report:#}");
    let message = report["problem"]["message"].as_str().unwrap();
    assert!(message.contains(expect), "{message}");
    assert!(started.elapsed() < Duration::from_secs(120));
    let left = labelled_leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_service_over_its_memory_limit_is_stopped_and_fails() {
    misbehaving("docker-memory-hog", "exceeding its memory limit");
}

#[test]
fn a_fork_bomb_is_contained_and_fails() {
    // The message names the process limit when the daemon's stats answer in time (they may not on
    // a loaded machine); either way the start fails and the grader survives.
    misbehaving(
        "docker-fork-bomb",
        "did not answer 2xx on /healthz within 8s",
    );
}

fn interrupt_mid_run(signal: Signal) {
    let _serial = serial();
    if !docker_available() {
        return;
    }
    let artifacts = tempfile::tempdir().unwrap();
    let mut child = Command::new(grader_bin())
        .arg("check")
        .arg(reference_dir())
        .args(["--runtime", "docker", "--seed", "3", "--artifacts-dir"])
        .arg(artifacts.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut sent = false;
    for line in stderr.lines() {
        let line = line.unwrap();
        // Interrupt while PostgreSQL runs and the service starts: the most to clean up.
        let now = line.trim_start().starts_with("PostgreSQL") && line.contains("ready");
        seen.push(line);
        if now {
            let during = labelled_leftovers();
            assert!(!during.is_empty(), "the run created nothing to clean up?");
            kill(Pid::from_raw(child.id() as i32), signal).unwrap();
            sent = true;
            break;
        }
    }
    assert!(sent, "never saw PostgreSQL ready: {seen:#?}");
    let status = exit_within(
        &mut child,
        Duration::from_secs(60),
        &format!("grader after {signal}"),
    );
    assert_eq!(status.code(), Some(130), "{seen:#?}");
    let left = labelled_leftovers();
    assert!(left.is_empty(), "left behind after {signal}: {left:?}");
}

#[test]
fn sigint_and_sigterm_leave_no_container_or_network() {
    interrupt_mid_run(Signal::SIGINT);
    interrupt_mid_run(Signal::SIGTERM);
}

#[test]
fn a_failing_image_build_shows_the_steps_output() {
    let _serial = serial();
    if !docker_available() {
        return;
    }
    let run = grade(
        &fixture("docker-build-fails"),
        &["--runtime", "docker"],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.human_summary());
    let report = run.json();
    assert_eq!(report["problem"]["kind"], "service_build", "{report:#}");
    let tail = report["problem"]["log_tail"].to_string();
    assert!(tail.contains("expected ';' before"), "{report:#}");
    let left = labelled_leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}
