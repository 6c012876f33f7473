//! End-to-end tests: the real `grader` binary against real services, as a user runs it.
//!
//! - the reference service scores 100%;
//! - every known-bad variant (tests/reference-service/variants.toml) fails exactly its checks,
//!   snapshotted as the JSON report with volatile fields redacted;
//! - every check is caught by at least one variant;
//! - broken manifests and exercise files give located errors;
//! - crashing, hanging and lying services give failed checks with the cause, never a hang.

mod batch;
mod init;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::*;

#[test]
fn reference_service_scores_100_percent() {
    let run = grade(&reference_dir(), &["--seed", "4242"], &[]);
    assert_eq!(run.code, 0, "reference failed:\n{}", run.human_summary());
    let report = run.json();
    assert_eq!(report["score"]["percent"], 100.0, "{}", run.human_summary());
    let checks = report["checks"].as_array().unwrap();
    assert!(
        checks.len() >= 12,
        "api-design needs at least 12 checks, found {}",
        checks.len()
    );
    assert!(checks.iter().all(|c| c["status"] == "pass"));
    assert_eq!(report["skills"][0]["id"], "api-design");
    assert_eq!(report["skills"][0]["percent"], 100.0);
    insta::assert_json_snapshot!("reference", redact(&report));
}

/// Exercises whose runs mostly wait rather than compute: a breaker's cool-down, backoff, a hung
/// database, a broker's redelivery, a gRPC deadline, shutdown and paused stream (a resilience run
/// takes about 50 s for 5 s of CPU, a grpc run 16 s for 3 s). Their
/// variants are graded by a test of their own, beside the others instead of in their slots, which
/// shortened CI's longest test by about a third.
const WAITING_EXERCISES: &[&str] = &["integration-resilience", "event-driven", "grpc"];

#[test]
fn every_variant_fails_exactly_its_checks() {
    let variants = variants()
        .into_iter()
        .filter(|v| !WAITING_EXERCISES.contains(&v.exercise.as_str()))
        .collect();
    // Three at a time: each run owns a PostgreSQL and a service. Interleaved, so that the runs
    // side by side are of different exercises: three transactions variants at once (200
    // concurrent transfers each, on two cores) made a correct answer miss its 10 s.
    grade_variants(interleaved_by_exercise(variants), 3);
}

/// The variants of `WAITING_EXERCISES`, two at a time (`cargo test every_variant_fails` runs both
/// tests).
#[test]
fn every_variant_fails_exactly_its_checks_of_waiting_exercises() {
    let variants = variants()
        .into_iter()
        .filter(|v| WAITING_EXERCISES.contains(&v.exercise.as_str()))
        .collect();
    grade_variants(interleaved_by_exercise(variants), 2);
}

/// Grades each variant, `parallel` at a time, and asserts it fails exactly its checks, with the
/// report its snapshot holds.
fn grade_variants(variants: Vec<Variant>, parallel: usize) {
    if std::env::var("E2E_EXERCISE").is_err() && std::env::var("E2E_SERVICE").is_err() {
        assert!(
            !variants.is_empty(),
            "no variant to grade: variants.toml lost them"
        );
    }
    let jobs = variants.clone();
    let grade_variant = |v: Variant| {
        grade(
            &v.dir(),
            &["--seed", "4242", "--exercise", &v.exercise],
            &[(v.switch(), &v.bug)],
        )
    };
    let mut runs = run_parallel(parallel, jobs, grade_variant);
    // Three runs side by side can still starve one on two cores (a 50-request burst whose
    // provider call missed its 5 s). A variant whose verdicts differ is graded once more, alone;
    // only a difference that stays is a failure, and the first one is printed either way.
    for (variant, run) in variants.iter().zip(runs.iter_mut()) {
        if not_passed(&run.json()) != variant.fails.iter().cloned().collect() {
            eprintln!(
                "variant {}: failed {:?} side by side with others; grading it again alone",
                variant.bug,
                not_passed(&run.json())
            );
            *run = grade_variant(variant.clone());
        }
    }
    // Where the test's time goes (seen with --nocapture): the slowest variants are the first to
    // move to soak when CI runs long.
    let mut timings: Vec<(Duration, &str)> = variants
        .iter()
        .zip(&runs)
        .map(|(v, r)| (r.elapsed, v.bug.as_str()))
        .collect();
    timings.sort_by(|a, b| b.cmp(a));
    for (elapsed, bug) in &timings {
        eprintln!("variant timing: {:>6.1} s  {bug}", elapsed.as_secs_f64());
    }
    let mut problems = Vec::new();
    for (variant, run) in variants.iter().zip(&runs) {
        let report = run.json();
        let failed = not_passed(&run.json());
        let expected: BTreeSet<String> = variant.fails.iter().cloned().collect();
        if failed != expected {
            problems.push(format!(
                "variant {}: expected to fail {:?}\n  but failed {:?}\n{}",
                variant.bug,
                expected,
                failed,
                run.human_summary()
            ));
        }
        if run.code != 1 {
            problems.push(format!(
                "variant {}: exit code {} (expected 1)",
                variant.bug, run.code
            ));
        }
        let errors: Vec<&Value> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "error")
            .collect();
        if !errors.is_empty() {
            problems.push(format!(
                "variant {}: grader errors (never the service's fault): {errors:?}",
                variant.bug
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    for (variant, run) in variants.iter().zip(&runs) {
        let report = redact(&run.json());
        let report = if variant.volatile_evidence {
            redact_evidence(report)
        } else {
            report
        };
        insta::assert_json_snapshot!(variant.snapshot_name(), report);
    }
}

/// The variants in rounds of one per exercise (each exercise's in file order).
fn interleaved_by_exercise(variants: Vec<Variant>) -> Vec<Variant> {
    let mut queues: Vec<(String, std::collections::VecDeque<Variant>)> = Vec::new();
    for v in variants {
        match queues
            .iter_mut()
            .find(|(exercise, _)| *exercise == v.exercise)
        {
            Some((_, queue)) => queue.push_back(v),
            None => queues.push((v.exercise.clone(), [v].into())),
        }
    }
    let mut out = Vec::new();
    while queues.iter().any(|(_, queue)| !queue.is_empty()) {
        out.extend(queues.iter_mut().filter_map(|(_, queue)| queue.pop_front()));
    }
    out
}

/// Correct designs other than the reference's own must score 100% too (`REFSVC_STYLE`,
/// tests/reference-service/src/orders.rs): one partial index per status (judged on the plans that
/// ran, not on a generic plan that cannot use it), an expression index on `(email::citext)`
/// (matched as the index's first key, not as text), every statement prefixed with a comment
/// (`/* app=refsvc route=... */`, which must not hide it), and a background worker polling the
/// database every millisecond (its statements land in every measurement window, and must be left
/// out: without that, the N+1 and buffer checks fail).
#[test]
fn legitimate_index_designs_pass() {
    let styles = [
        "partial-status-index",
        "citext-email",
        "sql-comments",
        "background-poller",
    ];
    let runs = run_parallel(2, styles.map(String::from).to_vec(), |style| {
        let grade_once = || {
            grade(
                &reference_dir(),
                &["--seed", "4242", "--exercise", "database-indexing"],
                &[("REFSVC_STYLE", style.as_str())],
            )
        };
        // Whether a poll of the background worker lands inside a measurement window is up to
        // the scheduler; a run where none did tested nothing, so it is graded again (at most 3).
        let mut run = grade_once();
        for _ in 0..2 {
            let landed = run.json()["checks"].as_array().is_some_and(|checks| {
                checks.iter().any(|c| {
                    c["measurements"]
                        .to_string()
                        .contains("background statements left out")
                })
            });
            if style != "background-poller" || landed {
                break;
            }
            run = grade_once();
        }
        run
    });
    let mut problems = Vec::new();
    for (style, run) in styles.iter().zip(&runs) {
        let report = run.json();
        let checks = report["checks"].as_array().unwrap();
        if run.code != 0 || report["score"]["percent"] != 100.0 || checks.len() < 14 {
            problems.push(format!(
                "REFSVC_STYLE={style}: exit {}, {}% over {} checks\n{}",
                run.code,
                report["score"]["percent"],
                checks.len(),
                run.human_summary()
            ));
        }
        // The poller must have landed in a window and been left out, or this run tested nothing.
        let n_plus_one = checks
            .iter()
            .find(|c| c["id"] == "database-indexing/orders-list-no-n-plus-one")
            .map(|c| c["measurements"].to_string())
            .unwrap_or_default();
        if *style == "background-poller" && !n_plus_one.contains("background statements left out") {
            problems.push(format!(
                "REFSVC_STYLE={style}: the poller's statements were never left out: {n_plus_one}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The independent services (written from the READMEs alone) pass every check of every exercise,
/// as written and in each of their unusual but correct designs: a Redis cache, version ETags, a
/// refused (not clamped) limit, 400 for validation, reads in transactions, a per-status partial
/// index, a citext expression index, sqlcommenter comments on every statement (Python); integer
/// ids, conditional UPDATEs instead of row locks, the fraud check first, 422 for an unknown wallet,
/// 502 for a failed fraud check, 409 for a key in flight, a one-statement statement and ETags that
/// change with the balance (Java); OpenTelemetry metric names, `:id` route templates, /metrics
/// counted too, plain-text lines among the JSON ones and OTLP exported as JSON (Python
/// observability); 422 for validation, absolute Locations, `; charset=utf-8` on every body, 415
/// for a declared non-JSON body and `12500.0` read as an integer (Python contracts).
#[test]
fn independent_service_passes_in_every_style() {
    // (service, INDEP_STYLE, exercise): "" grades every exercise its grader.toml lists.
    // Two runs at a time, taken from the end of the list: the two Java runs (200 concurrent
    // transfers each, with a 2 s fraud-check timeout of the service's own) sit at opposite ends so
    // they never share the two cores with each other (side by side, one once timed out a fraud
    // call: a verdict on this test's schedule, not on the service).
    let runs: Vec<(&str, &str, &str)> = vec![
        (
            "java-ledger",
            "int-ids,conditional-update,fraud-first,unknown-422,fraud-502,idem-409,statement-one-query,etag-strict",
            "",
        ),
        ("python", "", ""),
        (
            "python",
            "redis,version-etag,refuse-limit,validation-400,txn-reads",
            "",
        ),
        ("python", "partial-index", "database-indexing"),
        ("python", "citext", "database-indexing"),
        ("python", "sql-comments", "database-indexing"),
        ("python-security", "", ""),
        (
            "python-security",
            "forbidden-403,strict-fields,cap-limit,echo-request-headers",
            "",
        ),
        ("python-events", "", ""),
        ("python-events", "uuid,reserve-in-tx,outbox-delete", ""),
        // python-observability as written: its three CI variants show every check passing
        // (each fails a different one), so CI grades only its styles here.
        (
            "python-observability",
            "otel-names,colon-routes,count-metrics,text-banner,int-ids,no-status-histogram",
            "",
        ),
        ("python-resilience", "", ""),
        (
            "python-resilience",
            "threads,504-on-timeout,breaker-lock-free",
            "",
        ),
        ("python-contracts", "", ""),
        (
            "python-contracts",
            "validate-422,absolute-location,charset-param,strict-media-type,integral-floats",
            "",
        ),
        (
            "node-graphql",
            "join-customers,no-get,json-400,validation-422,prefer-json,count-introspection,plain-cursor,offset-createdat",
            "",
        ),
        ("java-ledger", "", ""),
    ];
    let results = run_parallel(
        2,
        runs.iter()
            .map(|(d, s, e)| (d.to_string(), s.to_string(), e.to_string()))
            .collect(),
        |(service, style, exercise)| {
            let dir = repo_root().join("tests/independent").join(service);
            let mut args = vec!["--seed".to_string(), "4242".to_string()];
            if !exercise.is_empty() {
                args.extend(["--exercise".to_string(), exercise]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            grade(&dir, &args, &[("INDEP_STYLE", style.as_str())])
        },
    );
    let mut problems = Vec::new();
    for ((service, style, _), run) in runs.iter().zip(&results) {
        let report = run.json();
        if run.code != 0 || report["score"]["percent"] != 100.0 {
            problems.push(format!(
                "{service} with INDEP_STYLE={style}: exit {}, {}%\n{}",
                run.code,
                report["score"]["percent"],
                run.human_summary()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn every_check_is_caught_by_some_variant() {
    let caught: BTreeSet<String> = all_variants().into_iter().flat_map(|v| v.fails).collect();
    let catalog = grader::exercise::load_catalog(&grader::exercise::ExerciseSource::Dir(
        repo_root().join("exercises"),
    ))
    .expect("exercises load");
    let manifest = grader::manifest::Manifest::load(&reference_dir()).expect("reference manifest");
    let mut uncaught = Vec::new();
    for id in manifest.exercise_ids() {
        let ex = catalog.exercise(&id).unwrap();
        for c in &ex.checks {
            let full = format!("{}/{}", ex.id, c.id);
            if !caught.contains(&full) {
                uncaught.push(full);
            }
        }
    }
    assert!(
        uncaught.is_empty(),
        "checks no known-bad variant catches: {uncaught:?}"
    );
}

/// CI grades every variant but the `soak = true` ones (its time budget); that may drop realistic
/// bugs from CI, never a check, nor a service: for each exercise, the variants CI grades fail
/// every check that any variant fails, and every service with variants for an exercise keeps at
/// least one of them in CI (a bug planted in an independent implementation stays proven there).
#[test]
fn soak_variants_add_no_check_ci_misses() {
    // Services CI cannot run at all: python-grpc needs grpcio and protoc from Debian, and the
    // gRPC issue keeps scripts/setup from installing anything new (its checks are proven in CI
    // by the reference's variants; this service is graded by `grader prove` and scripts/soak).
    const SOAK_ONLY_SERVICES: &[&str] = &["../independent/python-grpc"];
    use std::collections::BTreeMap;
    let mut all: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut in_ci: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut services: BTreeMap<(Option<String>, String), usize> = BTreeMap::new();
    for v in all_variants() {
        all.entry(v.exercise.clone())
            .or_default()
            .extend(v.fails.iter().cloned());
        let kept = services
            .entry((v.service.clone(), v.exercise.clone()))
            .or_default();
        let ci = in_ci.entry(v.exercise.clone()).or_default();
        if !v.soak {
            ci.extend(v.fails);
            *kept += 1;
        }
    }
    let mut missed = Vec::new();
    for (exercise, checks) in &all {
        for check in checks.difference(&in_ci[exercise]) {
            missed.push(format!("{check} (only soak variants fail it)"));
        }
    }
    for ((service, exercise), kept) in &services {
        if *kept == 0 && !SOAK_ONLY_SERVICES.contains(&service.as_deref().unwrap_or("")) {
            missed.push(format!(
                "{exercise}: every variant of service {service:?} is soak; keep one in CI"
            ));
        }
    }
    assert!(missed.is_empty(), "{missed:#?}");
}

#[test]
fn same_seed_replays_the_same_data() {
    // The seed must reproduce the run: the generated data (visible in the failing variant's
    // messages and exchanges) is identical across two runs with the same seed.
    // `--exercise api-design`: the reference's other exercises would start a broker and load a
    // data set this check never reads.
    let env = [("REFSVC_BUG", "duplicate-500")];
    let args = |seed: &'static str| {
        [
            "--seed",
            seed,
            "--exercise",
            "api-design",
            "--only",
            "duplicate-sku-409",
        ]
    };
    let a = grade(&reference_dir(), &args("99"), &env).json();
    let b = grade(&reference_dir(), &args("99"), &env).json();
    let body = |r: &Value| r["checks"][0]["detail"]["exchanges"][0]["request"]["body"].clone();
    assert_eq!(body(&a), body(&b));
    assert!(body(&a).as_str().unwrap().contains("SKU-"));
    let c = grade(&reference_dir(), &args("100"), &env).json();
    assert_ne!(body(&a), body(&c));
    assert_eq!(
        a["replay"].as_str().unwrap().split(' ').next_back(),
        Some("99")
    );
}

#[test]
fn malformed_manifest_is_located_and_exits_2() {
    let run = grade(&fixture("bad-manifest"), &[], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    insta::assert_snapshot!("bad-manifest", normalise_paths(&run.stderr));
}

#[test]
fn shipped_exercises_lint_clean_with_every_requirement_accounted_for() {
    let out = std::process::Command::new(grader_bin())
        .args(["lint", "--exercises-dir"])
        .arg(repo_root().join("exercises"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("requirements: "), "{stdout}");
}

#[test]
fn malformed_exercise_files_are_located_and_exit_2() {
    let dir = fixture("bad-exercises");
    let out = std::process::Command::new(grader_bin())
        .args(["lint", "--exercises-dir"])
        .arg(&dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    insta::assert_snapshot!("bad-exercises", normalise_paths(&stderr));
}

#[test]
fn service_that_exits_early_fails_with_its_last_lines() {
    let run = grade(&fixture("crash-on-start"), &["--seed", "1"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["status"], "fail");
    assert_eq!(report["problem"]["kind"], "service_start");
    let message = report["problem"]["message"].as_str().unwrap();
    assert!(
        message.contains("exited with code 3 before it answered on /healthz"),
        "{message}"
    );
    let tail = report["problem"]["log_tail"].to_string();
    assert!(tail.contains("config file app.yaml not found"), "{tail}");
    assert!(report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["status"] == "skip"));
    insta::assert_json_snapshot!("crash-on-start", redact(&report));
}

#[test]
fn hostile_services_fail_checks_with_the_cause() {
    let cases = [
        ("hang", "no complete response within 10s"),
        ("huge", "expected status 201, got 200"),
        ("lie", "broke off"),
        ("crash", "exited with code 139"),
    ];
    let runs = run_parallel(
        2,
        cases.iter().map(|(m, _)| m.to_string()).collect(),
        |mode| {
            grade(
                &fixture("hostile"),
                &[
                    "--seed",
                    "7",
                    "--only",
                    "create-returns-201",
                    "--only",
                    "unknown-route-404",
                ],
                &[("HOSTILE_MODE", mode.as_str())],
            )
        },
    );
    for ((mode, needle), run) in cases.iter().zip(&runs) {
        assert_eq!(run.code, 1, "mode {mode}: {}", run.stderr);
        let report = run.json();
        let first = &report["checks"][0];
        assert_eq!(first["status"], "fail", "mode {mode}: {first}");
        let message = first["message"].as_str().unwrap();
        assert!(message.contains(needle), "mode {mode}: {message}");
        if *mode == "crash" {
            // After the crash, later checks are skipped with the cause instead of failing.
            let second = &report["checks"][1];
            assert_eq!(second["status"], "skip", "{second}");
            assert!(second["message"]
                .as_str()
                .unwrap()
                .contains("exited with code 139"));
            assert!(first["detail"]["service_log_tail"]
                .to_string()
                .contains("exiting"));
        }
    }
}

/// `--timeout` bounds the checks all together: a service that never answers fails at the limit
/// (here during the first check's 10 s request timeout), the checks that had not finished are
/// skipped with the cause, and the run is the service's failure (exit 1), not an interruption.
#[test]
fn the_checks_stop_at_the_runs_timeout_and_the_service_fails() {
    // Without the limit the first check would fail after its own 10 s request timeout.
    let run = grade(
        &fixture("hostile"),
        &[
            "--seed",
            "7",
            "--only",
            "create-returns-201",
            "--only",
            "unknown-route-404",
            "--timeout",
            "3s",
        ],
        &[("HOSTILE_MODE", "hang")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["status"], "fail", "{report}");
    assert_eq!(report["problem"]["kind"], "timed_out", "{report}");
    let checks = report["checks"].as_array().unwrap();
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "api-design/create-returns-201",
            "api-design/unknown-route-404"
        ],
        "in file order"
    );
    for check in checks {
        assert_eq!(check["status"], "skip", "{check}");
        assert!(
            check["message"].as_str().unwrap().contains("--timeout"),
            "{check}"
        );
    }
}

#[test]
fn a_hanging_service_costs_three_timeouts_then_the_rest_is_skipped_with_the_cause() {
    let run = grade(
        &fixture("hostile"),
        &[
            "--seed",
            "7",
            "--only",
            "create-returns-201",
            "--only",
            "unknown-route-404",
            "--only",
            "read-unknown-404",
            "--only",
            "malformed-json-400",
            "--only",
            "wrong-content-type-415",
        ],
        &[("HOSTILE_MODE", "hang")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    let checks = report["checks"].as_array().unwrap();
    let statuses: Vec<&str> = checks
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["fail", "fail", "fail", "skip", "skip"],
        "{report}"
    );
    let skipped = checks[3]["message"].as_str().unwrap();
    assert!(
        skipped.contains("3 checks in a row") && skipped.contains("hanging"),
        "{skipped}"
    );
}

#[test]
fn report_formats_agree() {
    let env = [("REFSVC_BUG", "no-405")];
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("report.xml");
    let run = grade(
        &reference_dir(),
        &[
            "--seed",
            "5",
            // One exercise, so the counts below do not change when exercises are added.
            "--exercise",
            "api-design",
            "--format",
            "junit",
            "--output",
            junit.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(run.code, 1);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let catalog = grader::exercise::load_catalog(&grader::exercise::ExerciseSource::Dir(
        repo_root().join("exercises"),
    ))
    .expect("exercises load");
    let checks = catalog.exercise("api-design").unwrap().checks.len();
    let fails = all_variants()
        .into_iter()
        .find(|v| v.bug == "no-405")
        .unwrap()
        .fails
        .len();
    assert_eq!(xml.matches("<testcase").count(), checks, "{xml}");
    assert_eq!(xml.matches("<failure").count(), fails, "{xml}");
    assert!(xml.contains("method-not-allowed-405"));
    // The human report went to stdout and ends with the counts line CI tools read.
    let counts = format!("{} passed, {fails} failed", checks - fails);
    assert!(run.stdout.contains(&counts), "{counts}\n{}", run.stdout);
    // The JSON report is always kept with the run's artifacts, whatever the chosen format.
    assert_eq!(run.json()["checks"].as_array().unwrap().len(), checks);
}

/// Only api-design, the variant's exercise: the reference on every exercise is
/// `reference_service_scores_100_percent`'s job, and grading it twice at once in CI only adds
/// load (and time-bound checks that a loaded machine makes late).
#[test]
fn prove_reports_a_variant_whose_expectation_is_wrong() {
    let out = std::process::Command::new(grader_bin())
        .arg("prove")
        .arg(reference_dir())
        .arg("--exercise")
        .arg("api-design")
        .arg("--variants")
        .arg(fixture("prove/wrong-variants.toml"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("reference") && stdout.contains("100.0%  ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("no-405") && stdout.contains("MISMATCH"),
        "{stdout}"
    );
    assert!(
        stdout.contains("expected to fail but passed: [\"api-design/head-no-body\"]"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "failed but not listed:       [\"api-design/item-405-allow\", \"api-design/method-not-allowed-405\"]"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("not caught by any variant"), "{stdout}");
    assert!(stdout.trim_end().ends_with("NOT proven"), "{stdout}");
}

/// A variant with `service` and `env` of its own is graded on that service with that switch, not
/// on the reference with the file's switch (where the bug name would mean nothing).
#[test]
fn prove_grades_a_variant_on_its_own_service() {
    let out = std::process::Command::new(grader_bin())
        .arg("prove")
        .arg(reference_dir())
        .arg("--exercise")
        .arg("api-contracts")
        .arg("--variants")
        .arg(fixture("prove/independent-variant.toml"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("list-keeps-deleted"))
        .unwrap_or_else(|| panic!("no line for the variant:\n{stdout}"));
    assert!(line.ends_with("fails 1 check  ok"), "{stdout}");
    // One variant cannot catch every check: the proof as a whole is refused, and says why.
    assert!(stdout.contains("not caught by any variant"), "{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stdout}");
}

/// Starts an empty service (no database) by hand, as a learner would for `--runtime external`,
/// and waits (bounded) until it listens; returns the process and its URL. The starters that
/// `grader init` writes are graded in init.rs.
fn start_empty_service() -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let service = std::process::Command::new("python3")
        .arg(fixture("empty-service/app.py"))
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the empty service did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (service, url)
}

#[test]
fn external_runtime_grades_a_running_service() {
    // A service somebody else started: the grader only sends requests to it.
    let (mut service, url) = start_empty_service();
    let run = grade(
        &fixture("empty-service"),
        &["--runtime", "external", "--url", &url, "--seed", "2"],
        &[],
    );
    let _ = service.kill();
    let _ = service.wait();
    assert_eq!(run.code, 1, "{}", run.human_summary());
    let report = run.json();
    assert_eq!(report["runtime"]["kind"], "external");
    assert_eq!(report["timings"]["postgres_ms"], 0);
    let statuses: BTreeSet<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["fail"]),
        "{}",
        run.human_summary()
    );
}

#[test]
fn database_checks_are_errors_without_the_graders_database() {
    // With --runtime external the grader owns no PostgreSQL: the database-indexing checks cannot
    // run, and say it is the grader's limitation (error, exit 3), never the service's failure.
    let (mut service, url) = start_empty_service();
    let run = grade(
        &fixture("empty-service"),
        &[
            "--runtime",
            "external",
            "--url",
            &url,
            "--exercise",
            "database-indexing",
            "--seed",
            "2",
        ],
        &[],
    );
    let _ = service.kill();
    let _ = service.wait();
    assert_eq!(run.code, 3, "{}", run.human_summary());
    let report = run.json();
    for c in report["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "error", "{c}");
        let message = c["message"].as_str().unwrap();
        assert!(
            message.contains("--runtime external") && message.contains("not your service's fault"),
            "{message}"
        );
    }
}
