//! `grader init` then `grader check`, as a learner starts: each language's starter builds, starts,
//! connects to the grader's PostgreSQL, logs its requests and fails every check cleanly (a
//! failure with what to build, never a grader error).
//!
//! The starters' dependencies come from the registries a learner uses (crates.io, PyPI, npm, the
//! Go proxy, Maven Central); this machine reaches only crates.io and Debian's packages, so the
//! other languages run on Debian's (scripts/setup installs them), through the same grader.toml:
//! a virtual environment that sees Debian's Flask and psycopg, NODE_PATH to Debian's pg,
//! GOPROXY=off for Debian's pgx, and Debian's JDBC driver on the classpath.
//!
//! A language whose toolchain is missing is skipped with a note, except where
//! `GRADER_REQUIRE_TOOLCHAINS=1` (CI) makes it a failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Where scripts/setup unpacks Debian's node-pg when the installed node is not Debian's (whose
/// node-* packages cannot be installed next to another build of node).
const NODE_PG_UNPACKED: &str = "/usr/local/share/grader/nodejs";

/// run_parallel takes its items from the end: Rust, the slowest to build, starts first.
const LANGS: [&str; 5] = ["java", "go", "node", "python", "rust"];

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn node_path() -> String {
    format!("/usr/share/nodejs:{NODE_PG_UNPACKED}")
}

/// The environment `grader check` needs for `lang` on this machine, or what is missing.
fn toolchain(lang: &str) -> Result<Vec<(String, String)>, String> {
    match lang {
        "rust" => {
            if !succeeds(Command::new("cargo").arg("--version")) {
                return Err("cargo".into());
            }
            // The first build of axum, tokio and tokio-postgres takes a while; a folder of the
            // workspace's target keeps it for the next run.
            let target = Path::new(grader_bin())
                .parent()
                .and_then(Path::parent)
                .expect("grader runs from <target>/debug")
                .join("scaffold-rust");
            Ok(vec![(
                "CARGO_TARGET_DIR".into(),
                target.display().to_string(),
            )])
        }
        "python" => {
            if !succeeds(Command::new("/usr/bin/python3").args(["-c", "import flask, psycopg"])) {
                return Err(
                    "/usr/bin/python3 with flask and psycopg 3 (python3-flask python3-psycopg)"
                        .into(),
                );
            }
            Ok(vec![])
        }
        "node" => {
            if !succeeds(
                Command::new("node")
                    .args(["-e", "require('pg')"])
                    .env("NODE_PATH", node_path()),
            ) {
                return Err("node with pg (node-pg)".into());
            }
            Ok(vec![("NODE_PATH".into(), node_path())])
        }
        "go" => {
            let pgx = Path::new("/usr/share/gocode/src/github.com/jackc/pgx/v4");
            if !succeeds(Command::new("go").arg("version")) || !pgx.is_dir() {
                return Err("go with pgx v4 (golang-go golang-github-jackc-pgx-v4-dev)".into());
            }
            Ok(vec![("GOPROXY".into(), "off".into())])
        }
        "java" => {
            if !succeeds(Command::new("javac").arg("-version"))
                || !Path::new("/usr/share/java/postgresql.jar").is_file()
            {
                return Err("a JDK with the PostgreSQL JDBC driver (default-jdk-headless libpostgresql-jdbc-java)".into());
            }
            Ok(vec![])
        }
        other => panic!("no toolchain check for {other}"),
    }
}

fn init(dir: &Path, lang: &str, extra: &[&str]) -> std::process::Output {
    Command::new(grader_bin())
        .arg("init")
        .arg(dir)
        .args(["--lang", lang])
        .args(extra)
        .env("NO_COLOR", "1")
        .output()
        .expect("grader runs")
}

struct Graded {
    lang: String,
    run: Run,
    /// The service's own output (stdout and stderr) from the run's artifacts.
    service_log: String,
    elapsed: Duration,
    _dir: tempfile::TempDir,
}

fn init_and_grade((lang, env): (String, Vec<(String, String)>)) -> Graded {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my-service");
    let out = init(&dir, &lang, &["--exercise", "api-design"]);
    assert!(
        out.status.success(),
        "{lang}: grader init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if lang == "python" {
        // The learner's step is `python3 -m venv .venv && .venv/bin/pip install -r
        // requirements.txt`; without PyPI, the venv sees Debian's packages instead.
        let venv = Command::new("/usr/bin/python3")
            .args(["-m", "venv", "--system-site-packages", "--without-pip"])
            .arg(dir.join(".venv"))
            .status()
            .unwrap();
        assert!(venv.success(), "python3 -m venv failed");
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let run = grade(&dir, &["--format", "json", "--seed", "4242"], &env);
    let service_log =
        std::fs::read_to_string(run.artifacts.path().join("service.log")).unwrap_or_default();
    Graded {
        lang,
        run,
        service_log,
        elapsed: started.elapsed(),
        _dir: tmp,
    }
}

#[test]
fn every_starter_builds_starts_and_fails_every_check_cleanly() {
    let mut ready = Vec::new();
    let mut missing = Vec::new();
    for lang in LANGS {
        match toolchain(lang) {
            Ok(env) => ready.push((lang.to_string(), env)),
            Err(what) => missing.push(format!("{lang}: {what}")),
        }
    }
    if !missing.is_empty() {
        let message = format!(
            "toolchains missing (scripts/setup installs them): {}",
            missing.join("; ")
        );
        assert!(
            std::env::var("GRADER_REQUIRE_TOOLCHAINS").as_deref() != Ok("1"),
            "{message}"
        );
        eprintln!("skipping those languages: {message}");
    }

    let catalog = grader::exercise::load_catalog(&grader::exercise::ExerciseSource::Dir(
        repo_root().join("exercises"),
    ))
    .expect("exercises load");
    let expected: BTreeSet<String> = catalog
        .exercise("api-design")
        .unwrap()
        .checks
        .iter()
        .map(|c| format!("api-design/{}", c.id))
        .collect();

    // Two at a time: each run owns a PostgreSQL and a service, and the machine has two cores.
    let results = run_parallel(2, ready, init_and_grade);
    let mut problems = Vec::new();
    for g in &results {
        eprintln!(
            "{}: init + check took {:.1}s",
            g.lang,
            g.elapsed.as_secs_f64()
        );
        let lang = &g.lang;
        let summary = || format!("{}\n--- service.log ---\n{}", g.run.stderr, g.service_log);
        // --format json: the report on stdout is the one kept with the artifacts.
        let Ok(report) = serde_json::from_str::<Value>(&g.run.stdout) else {
            problems.push(format!("{lang}: no JSON report on stdout\n{}", summary()));
            continue;
        };
        if report != g.run.json() {
            problems.push(format!("{lang}: stdout and report.json differ"));
        }
        if g.run.code != 1 {
            problems.push(format!("{lang}: exit code {} (expected 1)", g.run.code));
        }
        if !report["problem"].is_null() {
            problems.push(format!(
                "{lang}: the run had a problem (build or start): {}\n{}",
                report["problem"],
                summary()
            ));
            continue;
        }
        // An empty service passes nothing: every route but /healthz answers 501, which is what
        // each api-design check's first step rules out (201, 404, 400, 405, 415 ... expected).
        // So every check is a failure of the service, none an error of the grader or a skip.
        let checks = report["checks"].as_array().unwrap();
        let ids: BTreeSet<String> = checks
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        if ids != expected {
            problems.push(format!("{lang}: graded {ids:?}, expected {expected:?}"));
        }
        let not_failed: Vec<String> = checks
            .iter()
            .filter(|c| c["status"] != "fail")
            .map(|c| format!("{} {}: {}", c["id"], c["status"], c["message"]))
            .collect();
        if !not_failed.is_empty() {
            problems.push(format!(
                "{lang}: checks that did not fail: {not_failed:#?}\n{}",
                summary()
            ));
        }
        if report["score"]["percent"] != 0.0 {
            problems.push(format!("{lang}: score {}", report["score"]["percent"]));
        }
        // One log line per request: the health probe, and a 501 for the first check's POST.
        for line in ["GET /healthz 200", "POST /products 501"] {
            if !g.service_log.contains(line) {
                problems.push(format!("{lang}: service.log lacks {line:?}\n{}", summary()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn a_starter_that_cannot_reach_the_database_stops_with_the_reason() {
    // Every starter connects at startup; here with the Python one (the quickest to start), run
    // by hand with a DATABASE_URL where nothing listens.
    if toolchain("python").is_err() {
        assert!(
            std::env::var("GRADER_REQUIRE_TOOLCHAINS").as_deref() != Ok("1"),
            "python with flask and psycopg is missing"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    assert!(init(tmp.path(), "python", &[]).status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new("/usr/bin/python3")
        .arg("app.py")
        .current_dir(tmp.path())
        .env("DATABASE_URL", format!("postgres://u@127.0.0.1:{port}/db"))
        .env("PORT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to PostgreSQL at DATABASE_URL"),
        "{stderr}"
    );
}

#[test]
fn init_refuses_to_overwrite_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("svc");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("main.go"), "package mine\n").unwrap();
    let out = init(&dir, "go", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("main.go already exists"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "nothing else was written: {left:?}");

    let out = init(&dir, "go", &["--exercise", "idempotensy"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("did you mean \"idempotency\"?"), "{stderr}");
}
