//! The white-box probes of the `security` exercise against real processes: a small Python
//! service started by the local runtime (its output captured in `service.log`) and the grader's
//! own PostgreSQL, where the test stores rows as a service would.

use std::path::PathBuf;
use std::time::Duration;

use grader::engine::http::HttpClient;
use grader::engine::{CheckContext, Failure};
use grader::runtime::{start_local, Phase, ProgressSink, RunningService, ServicePlan};
use grader::spec::template::Scope;
use grader::upstream::Upstreams;
use rand::SeedableRng;
use serde_json::json;

struct Quiet;

impl ProgressSink for Quiet {
    fn phase_started(&self, _: Phase, _: &str) {}
    fn phase_finished(&self, _: Phase, _: Duration) {}
}

/// Answers every GET with 200; writes the Authorization header to stdout for `/leak`.
const PY_SERVICE: &str = r#"
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/leak":
            print("auth header:", self.headers.get("Authorization"), flush=True)
        else:
            print("GET", self.path, "as someone", flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args):
        pass
print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

async fn start() -> (tempfile::TempDir, RunningService) {
    let root = tempfile::Builder::new()
        .prefix("grader-probes-security-")
        .tempdir()
        .unwrap();
    let work: PathBuf = root.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("service.py"), PY_SERVICE).unwrap();
    let plan = ServicePlan {
        service_dir: work.clone(),
        build: None,
        build_timeout: Duration::from_secs(60),
        command: "exec python3 service.py".into(),
        workdir: work,
        env: vec![],
        port_env: "PORT".into(),
        health_path: "/healthz".into(),
        protocol: grader::manifest::Protocol::Http,
        startup_timeout: Duration::from_secs(30),
        postgres_env: Some("DATABASE_URL".into()),
        redis_env: None,
        broker_env: None,
        rabbitmq_env_override: None,
        database_link: false,
        artifacts_dir: root.path().join("artifacts"),
        before_service: None,
    };
    let service = start_local(&plan, &Quiet, None)
        .await
        .expect("service starts");
    (root, service)
}

async fn probe(
    service: &RunningService,
    name: &str,
    params: &str,
    scope: Scope,
) -> (Result<(), Failure>, Vec<String>) {
    let call = grader::probes::parse(name, Some(&toml::from_str(params).unwrap())).unwrap();
    let http = HttpClient::new().unwrap();
    let upstreams = Upstreams::default();
    let mut ctx = CheckContext {
        http: &http,
        service,
        scope,
        rng: rand_chacha::ChaCha8Rng::seed_from_u64(7),
        exchanges: Vec::new(),
        vars: &[],
        tokens: grader::engine::tokens::CheckTokens {
            vars: &[],
            used: &[],
        },
        upstreams: &upstreams,
        measurements: Vec::new(),
    };
    let result = grader::probes::run(&call, &mut ctx).await;
    (result, ctx.measurements)
}

fn failure(r: Result<(), Failure>) -> String {
    match r {
        Err(Failure::Fail(info)) => info.message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

const SALTED: [&str; 2] = [
    "$scrypt$ln=17,r=8,p=1$c2FsdEFBQUFBQUFB$aGFzaEFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
    "$scrypt$ln=17,r=8,p=1$c2FsdEJCQkJCQkJC$aGFzaEJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJC",
];

#[tokio::test]
async fn stored_secrets_reads_the_services_tables() {
    let (_root, service) = start().await;
    let url = service.postgres.as_ref().expect("postgres").url.clone();
    let db = grader::pg::connect(&url, "postgres").await.unwrap();
    db.batch_execute(
        "CREATE TABLE accounts (id bigserial PRIMARY KEY, username text UNIQUE, password_hash text);
         CREATE SCHEMA audit;
         CREATE TABLE audit.events (id bigserial PRIMARY KEY, body jsonb, raw bytea);",
    )
    .await
    .unwrap();
    for (user, hash) in [("alice", SALTED[0]), ("bob", SALTED[1])] {
        db.execute(
            "INSERT INTO accounts (username, password_hash) VALUES ($1, $2)",
            &[&user, &hash],
        )
        .await
        .unwrap();
    }
    let mut scope = Scope::new();
    scope.insert("password".into(), json!("correct horse battery"));
    let params = r#"
        accounts = [
          { identifier = "alice", secret = "{{password}}" },
          { identifier = "bob", secret = "{{password}}" },
        ]
    "#;
    let (result, measured) = probe(&service, "stored_secrets", params, scope.clone()).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        measured[0].starts_with("read 2 rows of 2 tables (audit.events, public.accounts)"),
        "{measured:?}"
    );
    assert_eq!(
        measured[1],
        "alice: scrypt ln=17 r=8 p=1 in public.accounts.password_hash"
    );

    // The password kept as bytes in an audit row: as good as plain text.
    db.execute(
        "INSERT INTO audit.events (body, raw) VALUES ('{\"user\": \"alice\"}', $1)",
        &[&b"correct horse battery".as_slice()],
    )
    .await
    .unwrap();
    let (result, _) = probe(&service, "stored_secrets", params, scope.clone()).await;
    assert_eq!(
        failure(result),
        "a password is stored in a readable form: audit.events.raw (row 1 read): the password of alice and bob in plain text (as bytes)"
    );
    db.batch_execute("TRUNCATE audit.events").await.unwrap();

    // One salt for everyone.
    db.execute("UPDATE accounts SET password_hash = $1", &[&SALTED[0]])
        .await
        .unwrap();
    let (result, _) = probe(&service, "stored_secrets", params, scope).await;
    assert!(failure(result)
        .starts_with("accounts alice and bob have the same password and the same stored hash"),);
    service.shutdown().await;
}

#[tokio::test]
async fn service_log_reads_what_the_service_wrote() {
    let (_root, service) = start().await;
    let mut scope = Scope::new();
    scope.insert(
        "token".into(),
        json!("eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImF1ZCI6Im5vdGVzLWFwaSJ9.c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMTIzNDU2Nzg5MA"),
    );
    let params = |path: &str| {
        format!(
            r#"
            secrets = ["{{{{token}}}}"]
            settle = "200ms"
            requests = [{{ method = "GET", path = "{path}", headers = {{ Authorization = "Bearer {{{{token}}}}" }}, status = 200 }}]
            "#
        )
    };
    let (result, measured) = probe(&service, "service_log", &params("/quiet"), scope.clone()).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(measured[0].starts_with("scanned "), "{measured:?}");
    assert!(
        measured[0].ends_with("for 1 secret: none found"),
        "{measured:?}"
    );

    let (result, _) = probe(&service, "service_log", &params("/leak"), scope.clone()).await;
    let message = failure(result);
    assert!(
        message.starts_with("the service's output contains `{{token}}` (line "),
        "{message}"
    );

    // A service the grader did not start: its output is not the grader's to read.
    let external = RunningService::external(service.base_url.clone(), "/healthz");
    let (result, _) = probe(&external, "service_log", &params("/quiet"), scope).await;
    assert!(
        matches!(&result, Err(Failure::Skip(why)) if why.contains("--runtime external")),
        "{result:?}"
    );
    service.shutdown().await;
}
