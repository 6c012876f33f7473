//! Realistic reports for the snapshot tests, built in code with fixed times and durations.

use crate::outcome::{
    CheckResult, DecodedToken, Exchange, ExerciseScore, FailureDetail, ProblemKind,
    RecordedRequest, RecordedResponse, RunProblem, RunReport, RunStatus, RuntimeInfo, Score,
    SkillScore, Status, Timings, REPORT_VERSION,
};

const URL: &str = "http://127.0.0.1:41823";

fn base(status: RunStatus) -> RunReport {
    RunReport {
        version: REPORT_VERSION,
        grader_version: "0.1.0".into(),
        status,
        seed: 1234,
        replay: "grader check --seed 1234".into(),
        started_at: "2026-11-28T15:04:05Z".into(),
        duration_ms: 8_423,
        runtime: RuntimeInfo {
            kind: "local".into(),
            service_url: URL.into(),
            service_dir: "/home/ada/catalogue".into(),
            artifacts_dir: "/home/ada/catalogue/.grader/runs/2026-11-28T15-04-05Z".into(),
        },
        timings: Timings {
            build_ms: 1_210,
            postgres_ms: 1_840,
            data_setup_ms: 0,
            redis_ms: 0,
            broker_ms: 0,
            service_start_ms: 612,
            checks_ms: 4_611,
            teardown_ms: 150,
        },
        score: Score {
            earned: 0,
            possible: 0,
            percent: 0.0,
        },
        skills: vec![],
        exercises: vec![],
        checks: vec![],
        problem: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    name: &str,
    title: &str,
    skill: &str,
    task: u32,
    points: u32,
    status: Status,
    duration_ms: u64,
    message: Option<&str>,
    detail: Option<FailureDetail>,
) -> CheckResult {
    CheckResult {
        id: format!("api-design/{name}"),
        exercise: "api-design".into(),
        title: title.into(),
        skill: skill.into(),
        task: Some(task),
        points,
        earned: if status == Status::Pass { points } else { 0 },
        status,
        duration_ms,
        message: message.map(str::to_string),
        measurements: Vec::new(),
        detail,
    }
}

fn product_json() -> String {
    r#"{"sku":"SKU-7F3A21","name":"Blue enamel mug","description":null,"price_cents":1250}"#
        .to_string()
}

/// `POST /products` answered 422 problem+json for a valid product.
fn create_fails() -> CheckResult {
    let body = product_json();
    let problem = r#"{"type":"about:blank","title":"Unprocessable Entity","status":422,"detail":"Failed to deserialize the JSON body into the target type: description: invalid type: null, expected a string at line 1 column 69"}"#;
    check(
        "create-returns-201",
        "Creating a product returns 201 with a Location",
        "http-semantics",
        2,
        2,
        Status::Fail,
        14,
        Some("POST /products answered 422 Unprocessable Content; expected 201 Created"),
        Some(FailureDetail {
            expected: "201 Created, with a Location header naming the new product".into(),
            actual: "422 Unprocessable Content, no Location header".into(),
            why: "A client that gets 201 and a Location knows, without guessing, that something \
                  was created and where it lives."
                .into(),
            hint: "The product the grader sent is valid: description is optional and may be null. \
                   Check how your JSON decoding treats null for an optional field."
                .into(),
            spec: vec!["RFC 9110 §15.3.2".into(), "RFC 9110 §10.2.2".into()],
            evidence: vec![
                "the request body follows every rule in the README table (\"description\": null is allowed)"
                    .into(),
            ],
            exchanges: vec![Exchange {
                step: "create a product".into(),
                request: RecordedRequest {
                    method: "POST".into(),
                    url: format!("{URL}/products"),
                    headers: vec![
                        ("content-type".into(), "application/json".into()),
                        ("accept".into(), "application/json".into()),
                    ],
                    body: Some(body.clone()),
                    token: None,
                },
                curl: format!(
                    "curl -i -X POST '{URL}/products' \\\n  -H 'content-type: application/json' \\\n  -H 'accept: application/json' \\\n  --data-raw '{body}'"
                ),
                response: Some(RecordedResponse {
                    status: 422,
                    headers: vec![
                        ("content-type".into(), "application/problem+json".into()),
                        ("content-length".into(), problem.len().to_string()),
                        ("date".into(), "Sat, 28 Nov 2026 15:04:07 GMT".into()),
                    ],
                    body: problem.into(),
                    body_bytes: problem.len() as u64,
                    body_truncated: false,
                }),
                transport_error: None,
            }],
            service_log_tail: vec![],
        }),
    )
}

/// A body that is not JSON made the service hang.
fn malformed_hangs() -> CheckResult {
    check(
        "malformed-json-400",
        "A body that is not JSON answers 400",
        "error-handling",
        5,
        2,
        Status::Fail,
        5_003,
        Some("POST /products with a body that is not JSON got no response within 5s"),
        Some(FailureDetail {
            expected: "400 Bad Request, as problem details".into(),
            actual: "no response within 5s".into(),
            why: "A client that sends a broken body must learn quickly that the fault is its own, \
                  not wait and retry."
                .into(),
            hint: "Look at what your handler does when parsing fails: is a database connection or \
                   a lock still held on that path?"
                .into(),
            spec: vec!["RFC 9110 §15.5.1".into(), "RFC 9457 §3".into()],
            evidence: vec![],
            exchanges: vec![Exchange {
                step: "send a body that is not JSON".into(),
                request: RecordedRequest {
                    method: "POST".into(),
                    url: format!("{URL}/products"),
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: Some(r#"{"sku": "SKU-"#.into()),
                    token: None,
                },
                curl: format!(
                    "curl -i -X POST '{URL}/products' \\\n  -H 'content-type: application/json' \\\n  --data-raw '{{\"sku\": \"SKU-'"
                ),
                response: None,
                transport_error: Some("no response within 5s".into()),
            }],
            service_log_tail: vec![
                "2026-11-28T15:04:09.112Z  INFO catalogue::http: POST /products".into(),
                "2026-11-28T15:04:09.113Z  WARN catalogue::products: invalid body: EOF while parsing a string at line 1 column 13".into(),
                "2026-11-28T15:04:09.113Z DEBUG catalogue::db: acquiring connection (5 of 5 in use)".into(),
            ],
        }),
    )
}

/// A report with a check in every state: pass, fail (problem+json response), fail (no
/// response, service log), error (grader's PostgreSQL), skip (dependency failed).
pub fn mixed() -> RunReport {
    let mut report = base(RunStatus::Error);
    report.checks = vec![
        check(
            "healthz",
            "GET /healthz answers 200",
            "http-semantics",
            1,
            1,
            Status::Pass,
            3,
            None,
            None,
        ),
        create_fails(),
        check(
            "read-returns-product",
            "Reading a product returns it with 200",
            "http-semantics",
            3,
            2,
            Status::Skip,
            0,
            Some("requires api-design/create-returns-201, which failed"),
            None,
        ),
        check(
            "unknown-id-404",
            "An unknown product id answers 404",
            "http-semantics",
            3,
            1,
            Status::Pass,
            5,
            None,
            None,
        ),
        check(
            "errors-are-problem-details",
            "Errors are RFC 9457 problem details",
            "error-handling",
            4,
            2,
            Status::Pass,
            21,
            None,
            None,
        ),
        malformed_hangs(),
        check(
            "sku-unique-409",
            "A taken SKU answers 409 and creates nothing",
            "error-handling",
            7,
            2,
            Status::Error,
            2_004,
            Some(
                "could not connect to the grader's PostgreSQL: connection refused (127.0.0.1:54321)",
            ),
            None,
        ),
        check(
            "wrong-method-405",
            "An unsupported method answers 405 with Allow",
            "http-semantics",
            11,
            1,
            Status::Pass,
            4,
            None,
            None,
        ),
    ];
    report.score = Score {
        earned: 5,
        possible: 13,
        percent: 38.5,
    };
    report.skills = vec![
        SkillScore {
            id: "http-semantics".into(),
            title: "HTTP semantics".into(),
            earned: 3,
            possible: 7,
            percent: 42.9,
            passed: 3,
            total: 5,
        },
        SkillScore {
            id: "error-handling".into(),
            title: "Error handling".into(),
            earned: 2,
            possible: 6,
            percent: 33.3,
            passed: 1,
            total: 3,
        },
    ];
    report.exercises = vec![ExerciseScore {
        id: "api-design".into(),
        title: "API design: a product catalogue".into(),
        earned: 5,
        possible: 13,
        percent: 38.5,
        passed: 4,
        total: 8,
    }];
    report
}

/// A forged token (`alg: none`) was accepted: the exchange carries the decoded bearer token.
pub fn bearer_token() -> RunReport {
    let mut report = base(RunStatus::Fail);
    // {"alg":"none","typ":"JWT","kid":"Zq3…"} . {"iss":…,"sub":"amber-otter-42",…} . (empty)
    let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": "ZqvX9n3q0y1wJx6XbXvV8m0wq2bW0eW8pG7y8QvC5dI"});
    let claims = serde_json::json!({
        "iss": "http://127.0.0.1:41234",
        "sub": "amber-otter-42",
        "aud": "notes-api",
        "iat": 1795878245,
        "exp": 1795878545,
        "roles": ["admin"],
    });
    let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiWnF2WDluM3EweTF3Sng2WGJYdlY4bTB3cTJiVzBlVzhwRzd5OFF2QzVkSSJ9.eyJpc3MiOiJodHRwOi8vMTI3LjAuMC4xOjQxMjM0Iiwic3ViIjoiYW1iZXItb3R0ZXItNDIiLCJhdWQiOiJub3Rlcy1hcGkiLCJpYXQiOjE3OTU4NzgyNDUsImV4cCI6MTc5NTg3ODU0NSwicm9sZXMiOlsiYWRtaW4iXX0.";
    let stats = r#"{"notes":3,"accounts":2}"#;
    let mut failed = check(
        "alg-none-refused",
        "A token with alg none is refused",
        "security",
        2,
        2,
        Status::Fail,
        9,
        Some("GET /admin/stats with an unsigned token (alg none): expected status 401, got 200"),
        Some(FailureDetail {
            expected: "status: 401".into(),
            actual: "status: 200".into(),
            why: "An unsigned token is anyone's token.".into(),
            hint: "Accept only the algorithms you expect.".into(),
            spec: vec!["RFC 8725 §3.1".into()],
            evidence: vec![],
            exchanges: vec![Exchange {
                step: "read the stats with an unsigned token".into(),
                request: RecordedRequest {
                    method: "GET".into(),
                    url: format!("{URL}/admin/stats"),
                    headers: vec![("Authorization".into(), format!("Bearer {token}"))],
                    body: None,
                    token: Some(DecodedToken { header, claims }),
                },
                curl: format!("curl -i {URL}/admin/stats -H 'Authorization: Bearer {token}'"),
                response: Some(RecordedResponse {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: stats.into(),
                    body_bytes: stats.len() as u64,
                    body_truncated: false,
                }),
                transport_error: None,
            }],
            service_log_tail: vec![],
        }),
    );
    failed.id = "security/alg-none-refused".into();
    failed.exercise = "security".into();
    report.checks = vec![failed];
    report.score = Score {
        earned: 0,
        possible: 2,
        percent: 0.0,
    };
    report.skills = vec![SkillScore {
        id: "security".into(),
        title: "Security".into(),
        earned: 0,
        possible: 2,
        percent: 0.0,
        passed: 0,
        total: 1,
    }];
    report.exercises = vec![ExerciseScore {
        id: "security".into(),
        title: "Security: a multi-tenant notes service".into(),
        earned: 0,
        possible: 2,
        percent: 0.0,
        passed: 0,
        total: 1,
    }];
    report
}

/// The checks took longer than `--timeout`: those that finished keep their verdicts, the check
/// that was running and the ones after it are skipped as not finished.
pub fn checks_timed_out() -> RunReport {
    let mut report = mixed();
    report.status = RunStatus::Fail;
    let first_unfinished = report.checks.len() / 2;
    for check in &mut report.checks[first_unfinished..] {
        check.status = Status::Skip;
        check.earned = 0;
        check.duration_ms = 0;
        check.message =
            Some("not finished: the checks took longer than --timeout (see above)".into());
        check.detail = None;
    }
    report.problem = Some(RunProblem {
        kind: ProblemKind::TimedOut,
        message: "the checks took longer than --timeout 10m, all together; the service was \
                  stopped, and the checks that had not finished count as not passed"
            .into(),
        fix: Some(
            "find the requests your service answers slowly, or never; a larger --timeout only \
             hides them"
                .into(),
        ),
        log_tail: vec![],
    });
    // The sums follow the checks that still count.
    let sum = |keep: &dyn Fn(&CheckResult) -> bool| -> (u32, u32) {
        let kept = report.checks.iter().filter(|c| keep(c));
        kept.fold((0, 0), |(earned, passed), c| {
            (
                earned + c.earned,
                passed + u32::from(c.status == Status::Pass),
            )
        })
    };
    let percent = |earned: u32, possible: u32| f64::from(earned) * 100.0 / f64::from(possible);
    let (earned, _) = sum(&|_| true);
    report.score.earned = earned;
    report.score.percent = percent(earned, report.score.possible);
    let exercises: Vec<(u32, u32)> = report
        .exercises
        .iter()
        .map(|e| sum(&|c: &CheckResult| c.exercise == e.id))
        .collect();
    for (exercise, (earned, passed)) in report.exercises.iter_mut().zip(exercises) {
        (exercise.earned, exercise.passed) = (earned, passed);
        exercise.percent = percent(earned, exercise.possible);
    }
    let skills: Vec<(u32, u32)> = report
        .skills
        .iter()
        .map(|k| sum(&|c: &CheckResult| c.skill == k.id))
        .collect();
    for (skill, (earned, passed)) in report.skills.iter_mut().zip(skills) {
        (skill.earned, skill.passed) = (earned, passed);
        skill.percent = percent(earned, skill.possible);
    }
    report
}

/// The service never started: a run problem with a log tail, every check skipped.
pub fn service_did_not_start() -> RunReport {
    let mut report = mixed();
    report.status = RunStatus::Fail;
    report.duration_ms = 3_512;
    report.timings = Timings {
        build_ms: 1_210,
        postgres_ms: 1_840,
        service_start_ms: 312,
        teardown_ms: 150,
        ..Timings::default()
    };
    report.runtime.service_url = String::new();
    for check in &mut report.checks {
        check.status = Status::Skip;
        check.earned = 0;
        check.duration_ms = 0;
        check.message = Some("the service did not start".into());
        check.detail = None;
    }
    report.score.earned = 0;
    report.score.percent = 0.0;
    for skill in &mut report.skills {
        skill.earned = 0;
        skill.percent = 0.0;
        skill.passed = 0;
    }
    for exercise in &mut report.exercises {
        exercise.earned = 0;
        exercise.percent = 0.0;
        exercise.passed = 0;
    }
    report.problem = Some(RunProblem {
        kind: ProblemKind::ServiceStart,
        message: "The service exited with status 101 before GET /healthz answered (after 0.3s)."
            .into(),
        fix: Some(
            "Listen on the port given in the PORT environment variable: the grader picks a free \
             port for every run, and your service seems to bind a fixed one."
                .into(),
        ),
        log_tail: vec![
            "    Finished `release` profile [optimized] target(s) in 0.21s".into(),
            "     Running `target/release/catalogue`".into(),
            "thread 'main' panicked at src/main.rs:31:48:".into(),
            "called `Result::unwrap()` on an `Err` value: Os { code: 98, kind: AddrInUse, message: \"Address already in use\" }".into(),
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace".into(),
        ],
    });
    report
}

/// Every check of two exercises passed.
pub fn all_pass() -> RunReport {
    let mut report = base(RunStatus::Pass);
    let mut checks = mixed().checks;
    for check in &mut checks {
        check.status = Status::Pass;
        check.earned = check.points;
        check.message = None;
        check.detail = None;
        check.duration_ms = 12;
    }
    checks.push(CheckResult {
        id: "pagination/cursor-walk-is-stable".into(),
        exercise: "pagination".into(),
        title: "Walking all pages while rows change skips and repeats nothing".into(),
        skill: "data-access".into(),
        task: Some(4),
        points: 3,
        earned: 3,
        status: Status::Pass,
        duration_ms: 840,
        message: None,
        measurements: vec![
            "walked 12 pages of up to 20 items: 231 items, each seen exactly once".into(),
        ],
        detail: None,
    });
    checks.push(CheckResult {
        id: "pagination/limit-is-capped".into(),
        exercise: "pagination".into(),
        title: "A limit above the maximum is capped, not rejected".into(),
        skill: "http-semantics".into(),
        task: None,
        points: 1,
        earned: 1,
        status: Status::Pass,
        duration_ms: 9,
        message: None,
        measurements: Vec::new(),
        detail: None,
    });
    report.checks = checks;
    report.score = Score {
        earned: 17,
        possible: 17,
        percent: 100.0,
    };
    report.skills = vec![
        SkillScore {
            id: "http-semantics".into(),
            title: "HTTP semantics".into(),
            earned: 8,
            possible: 8,
            percent: 100.0,
            passed: 6,
            total: 6,
        },
        SkillScore {
            id: "error-handling".into(),
            title: "Error handling".into(),
            earned: 6,
            possible: 6,
            percent: 100.0,
            passed: 3,
            total: 3,
        },
        SkillScore {
            id: "data-access".into(),
            title: "Data access".into(),
            earned: 3,
            possible: 3,
            percent: 100.0,
            passed: 1,
            total: 1,
        },
    ];
    report.exercises = vec![
        ExerciseScore {
            id: "api-design".into(),
            title: "API design: a product catalogue".into(),
            earned: 13,
            possible: 13,
            percent: 100.0,
            passed: 8,
            total: 8,
        },
        ExerciseScore {
            id: "pagination".into(),
            title: "Pagination that holds under writes".into(),
            earned: 4,
            possible: 4,
            percent: 100.0,
            passed: 2,
            total: 2,
        },
    ];
    report
}

/// What a hostile service can answer, aimed at an HTML page: markup and script in bodies,
/// headers, log lines, step names and messages, an attribute breakout, bidi controls.
pub const HOSTILE_HTML: &[&str] = &[
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "\" onmouseover=\"alert(1)\" x=\"",
    "' autofocus onfocus='alert(1)",
    "</pre></details><iframe src=\"http://evil.example/\"></iframe>",
    "<!-- --><style>body{display:none}</style>",
    "&lt;b&gt;already escaped&lt;/b&gt; &amp;",
    "\u{202e}gnp.exe\u{2066}x\u{200f}",
    "\u{1b}[31mred\u{1b}[0m\u{0}",
];

/// The mixed report with [`HOSTILE_HTML`] in every place a service's text reaches.
pub fn hostile_html() -> RunReport {
    let evil = HOSTILE_HTML.join(" ");
    let mut report = mixed();
    report.runtime.service_dir = format!("/home/ada/{evil}");
    let check = &mut report.checks[1];
    check.message = Some(format!("answered {evil}"));
    let detail = check.detail.as_mut().expect("the failure has detail");
    detail.actual = evil.clone();
    detail.evidence = vec![format!("line one\n{evil}")];
    detail.service_log_tail = HOSTILE_HTML.iter().map(|s| s.to_string()).collect();
    let exchange = &mut detail.exchanges[0];
    exchange.step = format!("step {evil}");
    exchange.curl = format!("curl -i '{URL}/products' --data-raw '{evil}'");
    let response = exchange
        .response
        .as_mut()
        .expect("the failure has a response");
    response.body = HOSTILE_HTML.join("\n");
    response.body_bytes = response.body.len() as u64;
    response.headers.push(("location".into(), evil.clone()));
    response.headers.push((format!("x-{evil}"), evil.clone()));
    let skip = &mut report.checks[2];
    skip.message = Some(format!("requires {evil}"));
    report.checks[0].measurements = vec![format!("measured {evil}")];
    report
}
