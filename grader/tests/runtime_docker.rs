//! The docker runtime against a real daemon: the start-up sweep (what a dead grader left behind,
//! by its `grader.owner` label, is removed; what a live grader owns is kept), and a run with a
//! broker (the link, a restart that keeps the service's port, nothing left after teardown).
//! Needs a Docker daemon and the offline images; skipped without a daemon.

use std::collections::HashMap;
use std::time::Duration;

use grader::manifest::DockerSection;
use grader::runtime::docker::{self, LABEL_OWNER, LABEL_RUN};
use grader::runtime::{
    docker_run_label, start_docker, Phase, ProgressSink, ServicePlan, ServiceState,
};
use testcontainers::bollard::models::NetworkCreateRequest;
use testcontainers::bollard::query_parameters::{ListContainersOptions, ListNetworksOptions};

async fn network_exists(docker: &testcontainers::bollard::Docker, name: &str) -> bool {
    let options = ListNetworksOptions {
        filters: Some(HashMap::from([(
            "name".to_string(),
            vec![name.to_string()],
        )])),
    };
    docker
        .list_networks(Some(options))
        .await
        .unwrap()
        .iter()
        .any(|n| n.name.as_deref() == Some(name))
}

#[tokio::test(flavor = "multi_thread")]
async fn sweep_removes_only_what_dead_graders_left() {
    if let Some(problem) = docker::daemon_problem().await {
        // CI sets GRADER_REQUIRE_DOCKER so a missing daemon fails there instead of passing.
        assert!(
            std::env::var_os("GRADER_REQUIRE_DOCKER").is_none(),
            "GRADER_REQUIRE_DOCKER is set but {problem}"
        );
        eprintln!("no Docker daemon: skipped");
        return;
    }
    let docker = testcontainers::core::client::docker_client_instance()
        .await
        .unwrap();
    let me = std::process::id();
    // A pid that cannot be running (above pid_max), and ourselves with a wrong start time.
    let dead = [
        (format!("grader-sweep-test-{me}-a"), "4194999:1".to_string()),
        (format!("grader-sweep-test-{me}-b"), format!("{me}:1")),
    ];
    let start: u64 = std::fs::read_to_string(format!("/proc/{me}/stat"))
        .unwrap()
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let alive = (format!("grader-sweep-test-{me}-c"), format!("{me}:{start}"));
    for (name, owner) in dead.iter().chain([&alive]) {
        docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                labels: Some(HashMap::from([
                    (LABEL_RUN.to_string(), name.clone()),
                    (LABEL_OWNER.to_string(), owner.clone()),
                ])),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    docker::sweep_stale(&docker).await;
    for (name, _) in &dead {
        assert!(!network_exists(&docker, name).await, "{name} was not swept");
    }
    assert!(
        network_exists(&docker, &alive.0).await,
        "a live grader's network was removed"
    );
    docker.remove_network(&alive.0).await.unwrap();
}

/// A service for the broker test in Perl, which the offline base image has (PostgreSQL's
/// packages need it): `/healthz`, `/amqp` (the URL it got) and `/probe`, which opens a TCP
/// connection to the broker's host and port from `$AMQP_URL`, sends the AMQP protocol header and
/// answers `ok` when a method frame (connection.start) comes back.
const PERL_SERVICE: &str = r#"
use strict; use warnings; use IO::Socket::INET; use IO::Select;
$| = 1;
$SIG{TERM} = sub { exit 0 };
my $server = IO::Socket::INET->new(LocalAddr => '0.0.0.0', LocalPort => $ENV{PORT},
    Listen => 16, ReuseAddr => 1) or die "listen: $!";
print "listening\n";
sub probe {
    my ($host, $port) = ($ENV{AMQP_URL} // '') =~ m{@([^:/]+):(\d+)/} or return 'error: no URL';
    my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Timeout => 5)
        or return "error: connect: $!";
    print $s "AMQP\x00\x00\x09\x01";
    return 'error: no answer' unless IO::Select->new($s)->can_read(5);
    my $n = sysread($s, my $buf, 7);
    return 'error: closed' unless $n;
    return ord(substr($buf, 0, 1)) == 1 ? 'ok' : 'error: not a method frame';
}
while (my $c = $server->accept) {
    my $line = <$c> // '';
    my ($path) = $line =~ m{^GET (\S+)};
    while (my $h = <$c>) { last if $h =~ /^\r?\n$/; }
    my ($status, $body) = (200, '');
    $path //= '';
    if ($path eq '/healthz') { $body = 'ok' }
    elsif ($path eq '/amqp') { $body = $ENV{AMQP_URL} // '' }
    elsif ($path eq '/probe') { $body = probe() }
    else { $status = 404 }
    print $c "HTTP/1.1 $status X\r\nContent-Length: " . length($body)
        . "\r\nConnection: close\r\n\r\n$body";
    close $c;
}
"#;

async fn get_text(base: &url::Url, path: &str) -> String {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(base.join(path).unwrap())
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Containers and networks carrying this run's label.
async fn run_leftovers(docker: &testcontainers::bollard::Docker, run: &str) -> Vec<String> {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_RUN}={run}")])]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .unwrap();
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .unwrap();
    containers
        .into_iter()
        .map(|c| format!("container {:?}", c.names))
        .chain(
            networks
                .into_iter()
                .map(|n| format!("network {:?}", n.name)),
        )
        .collect()
}

struct Quiet;

impl ProgressSink for Quiet {
    fn phase_started(&self, _: Phase, _: &str) {}
    fn phase_finished(&self, _: Phase, _: Duration) {}
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_container_link_and_restart_keep_the_port() {
    if let Some(problem) = docker::daemon_problem().await {
        assert!(
            std::env::var_os("GRADER_REQUIRE_DOCKER").is_none(),
            "GRADER_REQUIRE_DOCKER is set but {problem}"
        );
        eprintln!("no Docker daemon: skipped");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("grader-docker-broker-")
        .tempdir()
        .unwrap();
    let work = dir.path().join("svc");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(work.join("server.pl"), PERL_SERVICE).unwrap();
    std::fs::write(
        work.join("Dockerfile"),
        "FROM debian:bookworm-slim\nCOPY server.pl /server.pl\nCMD [\"perl\", \"/server.pl\"]\n",
    )
    .unwrap();
    let plan = ServicePlan {
        service_dir: work.clone(),
        build: None,
        build_timeout: Duration::from_secs(300),
        command: String::new(),
        workdir: work.clone(),
        env: vec![],
        port_env: "PORT".into(),
        health_path: "/healthz".into(),
        protocol: grader::manifest::Protocol::Http,
        startup_timeout: Duration::from_secs(60),
        postgres_env: None,
        redis_env: None,
        broker_env: Some("AMQP_URL".into()),
        rabbitmq_env_override: None,
        database_link: false,
        artifacts_dir: dir.path().join("artifacts"),
        before_service: None,
    };
    let options = docker::DockerOptions::new(&work, &DockerSection::default());
    let running = match start_docker(&plan, &options, &Quiet).await {
        Ok(running) => running,
        Err(e) => panic!("start failed: {e} ({e:?})"),
    };
    eprintln!("timings: {:?}", running.timings);
    let run = docker_run_label(&running).expect("a docker run");
    let broker = running.broker.clone().expect("broker info");
    let base_url = running.base_url.clone();

    // The service got the link's address, as containers reach the host.
    assert_eq!(get_text(&base_url, "/amqp").await, broker.service_url);
    let service_url = url::Url::parse(&broker.service_url).unwrap();
    assert_eq!(service_url.port(), Some(broker.link.listen_addr().port()));
    assert_ne!(broker.service_url, broker.grader_url);
    // The grader logs in directly; the container reaches the broker through the link.
    let direct = lapin::Connection::connect(&broker.grader_url, Default::default())
        .await
        .expect("grader login");
    assert_eq!(get_text(&base_url, "/probe").await, "ok");
    broker.link.cut();
    let cut = get_text(&base_url, "/probe").await;
    assert!(
        cut.starts_with("error"),
        "the broker answered through a cut link: {cut}"
    );
    assert!(
        direct.status().connected(),
        "the grader's own connection was cut"
    );
    broker.link.restore();
    assert_eq!(get_text(&base_url, "/probe").await, "ok");
    let _ = direct.close(200, "done".into()).await;

    // Killed, then the same container started again on the same host port.
    let state = running
        .signal_service(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10))
        .await
        .expect("signal");
    assert!(
        matches!(state, ServiceState::Exited { .. }),
        "still running after SIGKILL: {state:?}"
    );
    let took = running.restart_service().await.expect("restart");
    eprintln!("restart of the service container took {took:?}");
    assert_eq!(running.state(), ServiceState::Running);
    assert_eq!(running.base_url, base_url);
    assert_eq!(get_text(&base_url, "/amqp").await, broker.service_url);
    // The monitor would report a stale exit within its interval.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(running.state(), ServiceState::Running);
    let log_path = running.service_log_path().unwrap().to_path_buf();
    let mut log = String::new();
    for _ in 0..50 {
        log = std::fs::read_to_string(&log_path).unwrap();
        if log.matches("listening").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        log.matches("grader: restarted the service").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("listening").count(), 2, "{log}");
    assert!(
        log.find("grader: restarted the service") < log.rfind("listening"),
        "{log}"
    );
    // Docker's timestamps (used to skip the first start's output) are not in the log.
    assert!(
        log.lines()
            .all(|l| l == "listening" || l == "grader: restarted the service"),
        "{log}"
    );

    let docker = testcontainers::core::client::docker_client_instance()
        .await
        .unwrap();
    assert!(!run_leftovers(&docker, &run).await.is_empty());
    let link = broker.link.listen_addr();
    running.shutdown().await;
    assert_eq!(run_leftovers(&docker, &run).await, Vec::<String>::new());
    assert!(
        tokio::net::TcpStream::connect(link).await.is_err(),
        "the link still listens after teardown"
    );
}
