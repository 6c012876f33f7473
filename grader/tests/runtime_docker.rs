//! The docker runtime's start-up sweep: what a dead grader left behind (by its `grader.owner`
//! label) is removed, what a live grader owns is kept. Needs a Docker daemon; skipped without one.

use std::collections::HashMap;

use grader::runtime::docker::{self, LABEL_OWNER, LABEL_RUN};
use testcontainers::bollard::models::NetworkCreateRequest;
use testcontainers::bollard::query_parameters::ListNetworksOptions;

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
