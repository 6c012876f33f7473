//! The local runtime against real processes: PostgreSQL, Redis, `sh`, `python3`. No mocks.
//!
//! Each test has its own artifacts and work dirs. Leftovers are checked by the pids and paths of
//! this test's own run, never by scanning for names, since other runs may share the machine.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use grader::runtime::{
    start_local, Phase, ProgressSink, RunningService, ServicePlan, ServiceState, StartError,
};

/// Records phase events, to check that progress is reported.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Phase, bool)>>);

impl ProgressSink for Recorder {
    fn phase_started(&self, phase: Phase, _what: &str) {
        self.0.lock().expect("lock").push((phase, false));
    }
    fn phase_finished(&self, phase: Phase, _elapsed: Duration) {
        self.0.lock().expect("lock").push((phase, true));
    }
}

impl Recorder {
    fn events(&self) -> Vec<(Phase, bool)> {
        self.0.lock().expect("lock").clone()
    }
}

/// A tiny HTTP service: `/healthz` answers 200 with the value of `$DATABASE_URL`, `/redis` with
/// `$REDIS_URL`, `/amqp` with `$AMQP_URL`, on the port from `$PORT`.
const PY_SERVICE: &str = r#"
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        var = {"/healthz": "DATABASE_URL", "/redis": "REDIS_URL", "/amqp": "AMQP_URL"}.get(self.path)
        if var is None:
            self.send_response(404); self.end_headers(); return
        body = os.environ.get(var, "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

struct Dirs {
    _root: tempfile::TempDir,
    work: PathBuf,
    artifacts: PathBuf,
}

fn dirs() -> Dirs {
    let root = tempfile::Builder::new()
        .prefix("grader-runtime-test-")
        .tempdir()
        .expect("tempdir");
    let work = root.path().join("work");
    std::fs::create_dir(&work).expect("mkdir work");
    std::fs::write(work.join("service.py"), PY_SERVICE).expect("write service.py");
    // Not created: the runtime must create it.
    let artifacts = root.path().join("artifacts");
    Dirs {
        work,
        artifacts,
        _root: root,
    }
}

fn plan(dirs: &Dirs, command: &str) -> ServicePlan {
    ServicePlan {
        service_dir: dirs.work.clone(),
        build: None,
        build_timeout: Duration::from_secs(60),
        command: command.to_string(),
        workdir: dirs.work.clone(),
        env: vec![("GRADER_TEST".to_string(), "1".to_string())],
        port_env: "PORT".to_string(),
        health_path: "/healthz".to_string(),
        protocol: grader::manifest::Protocol::Http,
        startup_timeout: Duration::from_secs(30),
        postgres_env: None,
        redis_env: None,
        broker_env: None,
        rabbitmq_env_override: None,
        database_link: false,
        artifacts_dir: dirs.artifacts.clone(),
        before_service: None,
    }
}

const PY_COMMAND: &str = "exec python3 service.py";

/// Whether a process with this pid exists and is not a zombie.
fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(state_and_pgrp(&stat), Some(('Z' | 'X', _))),
        Err(_) => false,
    }
}

/// Whether any non-zombie process is in process group `pgid`.
fn group_alive(pgid: i32) -> bool {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| state_and_pgrp(&stat))
        .any(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X')
}

fn state_and_pgrp(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    fields.next()?;
    Some((state, fields.next()?.parse().ok()?))
}

/// Asserts that every process and temp dir of `pids` is gone.
fn assert_all_gone(pids: &grader::runtime::local::DebugPids) {
    for pid in [pids.service_pgid, pids.postgres_pid, pids.redis_pid]
        .into_iter()
        .flatten()
    {
        assert!(!pid_alive(pid), "process {pid} still runs");
        assert!(!group_alive(pid), "process group {pid} still has members");
    }
    for dir in &pids.temp_dirs {
        assert!(!dir.exists(), "temp dir {} still exists", dir.display());
    }
}

/// The temp dir PostgreSQL used, as logged in `postgres.log` ("grader: initdb of <dir>/data ...").
fn postgres_temp_dir(artifacts: &Path) -> PathBuf {
    let log = std::fs::read_to_string(artifacts.join("postgres.log")).expect("postgres.log");
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("grader: initdb of "))
        .expect("initdb line in postgres.log");
    let data = line.split(" with ").next().expect("path");
    Path::new(data).parent().expect("parent").to_path_buf()
}

/// Pids of servers logged as "grader: started <name> (pid N) ...".
fn logged_pids(log: &Path) -> Vec<i32> {
    std::fs::read_to_string(log)
        .expect("log")
        .lines()
        .filter_map(|l| l.split("(pid ").nth(1)?.split(')').next()?.parse().ok())
        .collect()
}

fn redis_ping(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

async fn started(plan: &ServicePlan, progress: &Recorder) -> RunningService {
    match start_local(plan, progress, None).await {
        Ok(running) => running,
        Err(e) => panic!("start failed: {e} ({e:?})"),
    }
}

#[tokio::test]
async fn service_with_postgres_starts_and_everything_is_gone_after_shutdown() {
    let dirs = dirs();
    let mut plan = plan(&dirs, PY_COMMAND);
    plan.postgres_env = Some("DATABASE_URL".to_string());
    let progress = Recorder::default();
    let running = started(&plan, &progress).await;
    eprintln!("timings: {:?}", running.timings);

    let pg = running.postgres.clone().expect("postgres info");
    assert_eq!(pg.database, "app");
    assert!(
        pg.url.starts_with("postgres://postgres:")
            && pg.url.ends_with(&format!("@127.0.0.1:{}/app", pg.port)),
        "the grader's URL carries the superuser's password: {}",
        pg.url
    );
    assert!(
        pg.service_url.starts_with("postgres://app:")
            && pg
                .service_url
                .ends_with(&format!("@127.0.0.1:{}/app", pg.port)),
        "the service's URL is its own role's: {}",
        pg.service_url
    );
    assert_eq!(running.base_url.host_str(), Some("127.0.0.1"));
    assert_eq!(running.state(), ServiceState::Running);

    // The service got the URL in its environment.
    let body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(running.base_url.join("/healthz").expect("url"))
        .send()
        .await
        .expect("GET /healthz")
        .text()
        .await
        .expect("body");
    assert_eq!(body, pg.service_url);
    service_cannot_become_or_disturb_the_grader(&pg).await;

    let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .expect("connect to the grader's postgres");
    let driver = tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'",
            &[],
        )
        .await
        .expect("query");
    assert_eq!(row.get::<_, i64>(0), 1);
    client
        .query_one("SELECT count(*) FROM pg_stat_statements", &[])
        .await
        .expect("pg_stat_statements is usable");
    drop(client);
    let _ = driver.await;

    assert!(running.log_tail(10).iter().any(|l| l == "listening"));
    let pids = running.debug_pids().expect("local run");
    assert!(pids.service_pgid.is_some() && pids.postgres_pid.is_some());
    assert_eq!(pids.temp_dirs.len(), 1);
    assert!(pids.temp_dirs[0].exists());
    for pid in [pids.service_pgid, pids.postgres_pid].into_iter().flatten() {
        assert!(pid_alive(pid));
    }

    running.shutdown().await;
    assert_all_gone(&pids);
    assert!(
        dirs.artifacts.join("service.log").exists(),
        "artifacts are kept"
    );
    assert!(
        dirs.artifacts.join("postgres.log").exists(),
        "artifacts are kept"
    );
    assert_eq!(
        progress.events(),
        vec![
            (Phase::Postgres, false),
            (Phase::Postgres, true),
            (Phase::ServiceStart, false),
            (Phase::ServiceStart, true),
        ]
    );
}

/// What a hostile service tries with the database: logging in as the grader's roles without their
/// password (trust auth let it), and, as its own role, tampering that would turn the grader's
/// measurements into grader errors. Each must be refused by PostgreSQL.
async fn service_cannot_become_or_disturb_the_grader(pg: &grader::runtime::PostgresInfo) {
    for user in ["postgres", "grader_probe"] {
        let url = format!("postgres://{user}@127.0.0.1:{}/app", pg.port);
        let refused = tokio_postgres::connect(&url, tokio_postgres::NoTls).await;
        assert!(refused.is_err(), "{user} logged in without a password");
        let url = format!("postgres://{user}:wrong@127.0.0.1:{}/app", pg.port);
        let refused = tokio_postgres::connect(&url, tokio_postgres::NoTls).await;
        assert!(refused.is_err(), "{user} logged in with a wrong password");
    }
    let (service, connection) = tokio_postgres::connect(&pg.service_url, tokio_postgres::NoTls)
        .await
        .expect("the service's own URL works");
    let driver = tokio::spawn(connection);
    let is_superuser: String = service
        .query_one("SHOW is_superuser", &[])
        .await
        .expect("SHOW is_superuser")
        .get(0);
    assert_eq!(is_superuser, "off");
    // What a service needs: tables, indexes, a trusted extension.
    service
        .batch_execute(
            "CREATE TABLE t (id bigint PRIMARY KEY, email text); CREATE INDEX ON t (email); \
             CREATE EXTENSION IF NOT EXISTS citext; DROP TABLE t",
        )
        .await
        .expect("the service can create what its migrations need");
    // One session of the grader's, for the service to try to end.
    let (grader, grader_connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .expect("the grader's URL works");
    let grader_driver = tokio::spawn(grader_connection);
    for tampering in [
        "DROP EXTENSION pg_stat_statements",
        "SELECT pg_stat_statements_reset()",
        "ALTER DATABASE app SET statement_timeout = 1",
        "ALTER ROLE postgres NOLOGIN",
        "CREATE ROLE impostor SUPERUSER LOGIN",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'postgres'",
    ] {
        let error = service.batch_execute(tampering).await.expect_err(tampering);
        assert_eq!(
            error.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{tampering}: {error:?}"
        );
    }
    grader
        .query_one("SELECT 1", &[])
        .await
        .expect("the grader's session survived");
    drop(grader);
    let _ = grader_driver.await;
    drop(service);
    let _ = driver.await;
}

#[tokio::test]
async fn redis_answers_ping_and_is_gone_after_shutdown() {
    let dirs = dirs();
    let mut plan = plan(&dirs, PY_COMMAND);
    plan.redis_env = Some("REDIS_URL".to_string());
    let progress = Recorder::default();
    let running = started(&plan, &progress).await;

    let redis = running.redis.clone().expect("redis info");
    assert_eq!(redis.url, format!("redis://127.0.0.1:{}", redis.port));
    assert!(redis_ping(redis.port).expect("PING").starts_with("+PONG"));
    let body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(running.base_url.join("/redis").expect("url"))
        .send()
        .await
        .expect("GET /redis")
        .text()
        .await
        .expect("body");
    assert_eq!(body, redis.url);

    let pids = running.debug_pids().expect("local run");
    assert!(pids.redis_pid.is_some());
    running.shutdown().await;
    assert_all_gone(&pids);
    assert!(
        redis_ping(redis.port).is_err(),
        "nobody answers on the port"
    );
}

#[tokio::test]
async fn service_exiting_early_is_reported_and_postgres_is_torn_down() {
    let dirs = dirs();
    let mut plan = plan(&dirs, "echo boom; exit 3");
    plan.postgres_env = Some("DATABASE_URL".to_string());
    let progress = Recorder::default();
    let error = start_local(&plan, &progress, None)
        .await
        .err()
        .expect("start must fail");
    match &error {
        StartError::ServiceDidNotStart { message, log_tail } => {
            assert!(message.contains("exited with code 3"), "{message}");
            assert!(message.contains("/healthz"), "{message}");
            assert!(log_tail.iter().any(|l| l.contains("boom")), "{log_tail:?}");
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let temp_dir = postgres_temp_dir(&dirs.artifacts);
    assert!(temp_dir.starts_with(std::env::temp_dir()));
    assert!(!temp_dir.exists(), "{} left behind", temp_dir.display());
    let pids = logged_pids(&dirs.artifacts.join("postgres.log"));
    assert_eq!(pids.len(), 1);
    assert!(
        !pid_alive(pids[0]) && !group_alive(pids[0]),
        "postgres still runs"
    );
    let events = progress.events();
    assert!(events.contains(&(Phase::Teardown, true)), "{events:?}");
    assert!(!events.contains(&(Phase::ServiceStart, true)), "{events:?}");
}

#[tokio::test]
async fn service_that_never_answers_times_out_and_is_killed() {
    let dirs = dirs();
    // Ignores SIGTERM too, so teardown has to escalate to SIGKILL.
    let mut plan = plan(
        &dirs,
        "echo $$ > service.pid; trap '' TERM; echo waiting; while :; do sleep 1; done",
    );
    plan.startup_timeout = Duration::from_secs(2);
    let error = start_local(&plan, &Recorder::default(), None)
        .await
        .err()
        .expect("start must fail");
    match &error {
        StartError::ServiceDidNotStart { message, log_tail } => {
            assert!(
                message.contains("did not answer 2xx on /healthz within 2s"),
                "{message}"
            );
            assert!(message.contains("connection refused"), "{message}");
            assert!(log_tail.iter().any(|l| l == "waiting"), "{log_tail:?}");
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let pid: i32 = std::fs::read_to_string(dirs.work.join("service.pid"))
        .expect("service.pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(!pid_alive(pid), "the service still runs");
    assert!(!group_alive(pid), "the service's children still run");
}

#[tokio::test]
async fn failing_build_is_reported_with_its_log() {
    let dirs = dirs();
    let mut plan = plan(&dirs, PY_COMMAND);
    plan.build = Some("echo compiling; echo 'error[E0425]: cannot find value' >&2; exit 2".into());
    let progress = Recorder::default();
    let error = start_local(&plan, &progress, None)
        .await
        .err()
        .expect("start must fail");
    match &error {
        StartError::BuildFailed { reason, log_tail } => {
            assert!(reason.contains("exited with code 2"), "{reason}");
            assert_eq!(log_tail, &["compiling", "error[E0425]: cannot find value"]);
        }
        other => panic!("unexpected error: {other:?}"),
    }
    assert!(dirs.artifacts.join("build.log").exists());
    assert!(!progress
        .events()
        .iter()
        .any(|(p, _)| *p == Phase::ServiceStart));
}

/// A build that prints without end fills `build.log` up to its cap; its last lines (the error)
/// are kept after a marker saying how much was dropped, and the build runs to its end (its
/// output is read, never blocked on).
#[tokio::test]
async fn a_flooding_build_is_capped_in_its_log_and_keeps_its_error() {
    use grader::runtime::capped_log::{cap_marker, BUILD_LOG_CAP, BUILD_LOG_TAIL};
    let dirs = dirs();
    let mut plan = plan(&dirs, PY_COMMAND);
    let flood = BUILD_LOG_CAP + 4 * 1024 * 1024;
    plan.build = Some(format!(
        "yes 'compiling a crate' | head -c {flood}; echo; echo 'error: the real cause' >&2; exit 3"
    ));
    let error = start_local(&plan, &Recorder::default(), None)
        .await
        .err()
        .expect("start must fail");
    let StartError::BuildFailed { reason, log_tail } = &error else {
        panic!("unexpected error: {error:?}");
    };
    assert!(reason.contains("exited with code 3"), "{reason}");
    assert_eq!(
        log_tail.last().map(String::as_str),
        Some("error: the real cause")
    );
    let text = std::fs::read_to_string(dirs.artifacts.join("build.log")).unwrap();
    let (head, end) = text
        .split_once(&cap_marker(BUILD_LOG_CAP))
        .expect("the marker");
    // The cap, and a newline ending the line it cut.
    assert_eq!(head.len() as u64, BUILD_LOG_CAP + 1);
    let kept = end.split_once('\n').unwrap().1;
    assert!(kept.len() <= BUILD_LOG_TAIL && kept.starts_with("compiling a crate\n"));
    assert!(kept.ends_with("error: the real cause\n"));
}

#[tokio::test]
async fn build_that_hangs_times_out() {
    let dirs = dirs();
    let mut plan = plan(&dirs, PY_COMMAND);
    plan.build = Some("echo $$ > build.pid; echo building; sleep 60".into());
    plan.build_timeout = Duration::from_secs(1);
    let error = start_local(&plan, &Recorder::default(), None)
        .await
        .err()
        .expect("start must fail");
    match &error {
        StartError::BuildFailed { reason, log_tail } => {
            assert!(reason.contains("did not finish within 1s"), "{reason}");
            assert_eq!(log_tail, &["building"]);
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let pid: i32 = std::fs::read_to_string(dirs.work.join("build.pid"))
        .expect("build.pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(!pid_alive(pid) && !group_alive(pid), "the build still runs");
}

#[tokio::test]
async fn drop_without_shutdown_kills_everything() {
    let dirs = dirs();
    let mut plan = plan(&dirs, PY_COMMAND);
    plan.postgres_env = Some("DATABASE_URL".to_string());
    plan.redis_env = Some("REDIS_URL".to_string());
    let running = started(&plan, &Recorder::default()).await;
    let pids = running.debug_pids().expect("local run");
    assert_eq!(pids.temp_dirs.len(), 2);
    // What a panic unwinding through the engine does: drop, no shutdown.
    drop(running);
    assert_all_gone(&pids);
}

#[tokio::test]
async fn service_state_reports_an_exit_after_start() {
    let dirs = dirs();
    // Healthy once, then exits with 7 as soon as it has answered.
    std::fs::write(
        dirs.work.join("once.py"),
        r#"
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
        self.wfile.flush()
        os._exit(7)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#,
    )
    .expect("write once.py");
    let plan = plan(&dirs, "exec python3 once.py");
    let running = started(&plan, &Recorder::default()).await;
    let mut state = running.state();
    for _ in 0..100 {
        if state != ServiceState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        state = running.state();
    }
    assert_eq!(
        state,
        ServiceState::Exited {
            code: Some(7),
            signal: None
        }
    );
    let pids = running.debug_pids().expect("local run");
    running.shutdown().await;
    assert_all_gone(&pids);
}

#[tokio::test]
async fn before_service_hook_loads_data_before_the_service_starts() {
    let dirs = dirs();
    let mut plan = plan(&dirs, PY_COMMAND);
    plan.postgres_env = Some("DATABASE_URL".to_string());
    plan.before_service = Some(grader::runtime::BeforeService(std::sync::Arc::new(|pg| {
        Box::pin(async move {
            let (client, connection) = tokio_postgres::connect(&pg, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            client
                .batch_execute("CREATE TABLE seeded (n int); INSERT INTO seeded VALUES (42);")
                .await
                .map_err(|e| e.to_string())
        })
    })));
    let progress = Recorder::default();
    let running = started(&plan, &progress).await;
    let pg = running.postgres.clone().expect("postgres info");
    let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let n: i32 = client
        .query_one("SELECT n FROM seeded", &[])
        .await
        .expect("seeded")
        .get(0);
    assert_eq!(n, 42);
    drop(client);
    running.shutdown().await;
}

#[tokio::test]
async fn failing_before_service_hook_is_an_infrastructure_error() {
    let dirs = dirs();
    let mut plan = plan(&dirs, PY_COMMAND);
    plan.postgres_env = Some("DATABASE_URL".to_string());
    plan.before_service = Some(grader::runtime::BeforeService(std::sync::Arc::new(|_pg| {
        Box::pin(async { Err("COPY failed: disk full".to_string()) })
    })));
    let progress = Recorder::default();
    match start_local(&plan, &progress, None).await {
        Err(StartError::Infrastructure { message, .. }) => {
            assert!(message.contains("disk full"), "{message}")
        }
        Err(other) => panic!("expected an infrastructure error, got {other:?}"),
        Ok(_) => panic!("expected the start to fail"),
    }
}

async fn get_text(base: &url::Url, path: &str) -> String {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(base.join(path).expect("url"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .text()
        .await
        .expect("body")
}

async fn amqp_connect(url: &str) -> Result<lapin::Connection, String> {
    let connect = lapin::Connection::connect(url, lapin::ConnectionProperties::default());
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 10s".to_string()),
    }
}

/// `basic.get` of one message from `queue`, bounded.
async fn amqp_get(channel: &lapin::Channel, queue: &str) -> Result<Option<Vec<u8>>, String> {
    let get = channel.basic_get(
        queue.into(),
        lapin::options::BasicGetOptions { no_ack: true },
    );
    match tokio::time::timeout(Duration::from_secs(5), get).await {
        Ok(Ok(message)) => Ok(message.map(|m| m.delivery.data.clone())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5s".to_string()),
    }
}

/// Every process and temp dir of a broker run, including the broker's helpers outside its
/// process group and the service of before a restart.
fn assert_broker_run_gone(pids: &grader::runtime::local::DebugPids, earlier_services: &[i32]) {
    assert_all_gone(pids);
    for pid in [pids.broker_pid, pids.epmd_pid]
        .into_iter()
        .flatten()
        .chain(earlier_services.iter().copied())
    {
        assert!(!pid_alive(pid), "process {pid} still runs");
        assert!(!group_alive(pid), "process group {pid} still has members");
    }
    for pid in &pids.broker_helper_pids {
        assert!(!pid_alive(*pid), "the broker's helper {pid} still runs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_run_links_cuts_restarts_and_leaves_nothing() {
    let dirs = dirs();
    std::fs::write(dirs.work.join("broker.py"), PY_SERVICE).expect("write broker.py");
    let mut plan = plan(&dirs, "exec python3 broker.py");
    plan.postgres_env = Some("DATABASE_URL".to_string());
    plan.broker_env = Some("AMQP_URL".to_string());
    // Long enough that a broker started after the build (not beside it) would show in the order
    // of the progress events.
    plan.build = Some("sleep 2".to_string());
    let progress = Recorder::default();
    let running = started(&plan, &progress).await;
    eprintln!("timings: {:?}", running.timings);
    let events = progress.events();
    let at = |event: (Phase, bool)| {
        events
            .iter()
            .position(|e| *e == event)
            .unwrap_or_else(|| panic!("{event:?} missing from {events:?}"))
    };
    assert!(
        at((Phase::Broker, false)) < at((Phase::Build, true))
            && at((Phase::Build, false)) < at((Phase::Broker, true)),
        "the broker and the build did not overlap: {events:?}"
    );
    assert!(running.timings.broker > Duration::ZERO);

    let broker = running.broker.clone().expect("broker info");
    assert!(
        broker.grader_url.starts_with("amqp://grader:"),
        "{}",
        broker.grader_url
    );
    assert!(broker.grader_url.ends_with("/%2f"), "{}", broker.grader_url);
    assert_ne!(
        broker.grader_url, broker.service_url,
        "the service must go through the link"
    );
    assert_eq!(
        url::Url::parse(&broker.service_url)
            .expect("service url")
            .port(),
        Some(broker.link.listen_addr().port())
    );
    // The service got the link's URL.
    assert_eq!(
        get_text(&running.base_url, "/amqp").await,
        broker.service_url
    );

    // The grader logs in directly; a message it queues is read through the link.
    let direct = amqp_connect(&broker.grader_url)
        .await
        .expect("grader login");
    let direct_channel = direct.create_channel().await.expect("channel");
    direct_channel
        .queue_declare(
            "grader-test".into(),
            lapin::options::QueueDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("declare");
    direct_channel
        .basic_publish(
            "".into(),
            "grader-test".into(),
            lapin::options::BasicPublishOptions::default(),
            b"through the link",
            lapin::BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("publish confirmed");
    let linked = amqp_connect(&broker.service_url)
        .await
        .expect("login through the link");
    let linked_channel = linked.create_channel().await.expect("channel");
    assert_eq!(
        amqp_get(&linked_channel, "grader-test").await.expect("get"),
        Some(b"through the link".to_vec())
    );

    // Cut: the open connection dies, new ones fail, the grader's own still works.
    broker.link.cut();
    assert!(broker.link.is_cut());
    assert!(
        amqp_get(&linked_channel, "grader-test").await.is_err(),
        "a connection through the link survived the cut"
    );
    assert!(
        amqp_connect(&broker.service_url).await.is_err(),
        "a new connection got through a cut link"
    );
    assert!(amqp_get(&direct_channel, "grader-test").await.is_ok());
    broker.link.restore();
    assert!(!broker.link.is_cut());
    let again = amqp_connect(&broker.service_url)
        .await
        .expect("login after restore");
    let _ = again.close(200, "done".into()).await;
    let _ = direct.close(200, "done".into()).await;

    // Killed, then started again on the same URL.
    let first_service = running
        .debug_pids()
        .expect("local")
        .service_pgid
        .expect("pgid");
    let state = running
        .signal_service(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(5))
        .await
        .expect("signal");
    assert_eq!(
        state,
        ServiceState::Exited {
            code: None,
            signal: Some(9)
        }
    );
    assert_eq!(running.state(), state);
    let took = running.restart_service().await.expect("restart");
    eprintln!("restart after SIGKILL took {took:?}");
    assert_eq!(running.state(), ServiceState::Running);
    assert_eq!(
        get_text(&running.base_url, "/amqp").await,
        broker.service_url
    );
    let second_service = running
        .debug_pids()
        .expect("local")
        .service_pgid
        .expect("pgid");
    assert_ne!(first_service, second_service);
    assert!(!pid_alive(first_service));

    // A restart of a running service kills it first.
    running
        .restart_service()
        .await
        .expect("restart while running");
    assert_eq!(running.state(), ServiceState::Running);
    assert!(
        !group_alive(second_service),
        "the running service was not killed"
    );
    let log = std::fs::read_to_string(dirs.artifacts.join("service.log")).expect("service.log");
    assert_eq!(
        log.matches("grader: restarted the service").count(),
        2,
        "{log}"
    );
    assert_eq!(log.matches("listening").count(), 3, "{log}");

    let pids = running.debug_pids().expect("local run");
    assert!(pids.broker_pid.is_some() && pids.epmd_pid.is_some());
    assert!(
        !pids.broker_helper_pids.is_empty(),
        "beam's helpers (erl_child_setup) were not found, so their teardown is not checked"
    );
    assert_eq!(pids.temp_dirs.len(), 2, "{:?}", pids.temp_dirs);
    let link_addr = broker.link.listen_addr();
    running.shutdown().await;
    assert_broker_run_gone(&pids, &[first_service, second_service]);
    assert!(
        TcpStream::connect(link_addr).is_err(),
        "the link still listens after teardown"
    );
    let broker_log =
        std::fs::read_to_string(dirs.artifacts.join("rabbitmq.log")).expect("rabbitmq.log");
    assert!(
        broker_log.contains("Server startup complete"),
        "{broker_log}"
    );
}

#[tokio::test]
async fn a_plan_without_a_broker_starts_none() {
    let dirs = dirs();
    let plan = plan(&dirs, PY_COMMAND);
    let progress = Recorder::default();
    let running = started(&plan, &progress).await;
    assert!(running.broker.is_none());
    assert_eq!(running.timings.broker, Duration::ZERO);
    let pids = running.debug_pids().expect("local run");
    assert_eq!((pids.broker_pid, pids.epmd_pid), (None, None));
    assert!(!dirs.artifacts.join("rabbitmq.log").exists());
    assert!(!progress.events().iter().any(|(p, _)| *p == Phase::Broker));
    running.shutdown().await;
    assert_all_gone(&pids);
}
