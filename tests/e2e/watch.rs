//! `grader watch` as a learner runs it: a first verdict, a save that plants a bug, the next
//! verdict showing it, with PostgreSQL started once; then Ctrl-C leaves nothing behind.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::support::*;
use super::{grader_temp_dirs, leftovers};

/// Copies a service folder's files (not its caches).
fn copy_service(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap().filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_file() {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

/// Collects a pipe into a shared string, as a terminal would show it.
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    out
}

fn wait_for(what: &str, text: &Arc<Mutex<String>>, pred: impl Fn(&str) -> bool, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !pred(&text.lock().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "no {what} within {secs}s; so far:\n{}",
            text.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_save_regrades_on_warm_databases_and_ctrl_c_leaves_nothing() {
    let marker = format!("GRADER_E2E_MARKER={}-watch", std::process::id());
    let (key, value) = marker.split_once('=').unwrap();
    let tmp = own_tmpdir("e2e-watch-tmp");
    let service = tempfile::tempdir().unwrap();
    copy_service(
        &repo_root().join("tests/independent/python"),
        service.path(),
    );
    let mut child = Command::new(grader_bin())
        .arg("watch")
        .arg(service.path())
        .args(["--exercise", "api-design", "--seed", "4242"])
        .args(["--debounce-ms", "200"])
        .env("NO_COLOR", "1")
        .env(key, value)
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());

    wait_for(
        "first verdict",
        &stdout,
        |s| s.contains("37 passed, 0 failed"),
        120,
    );
    let during_run = grader_temp_dirs(tmp.path());
    assert!(
        !during_run.is_empty(),
        "the warm PostgreSQL has no temp dir"
    );

    // The learner's edit: a create answers 200 instead of 201.
    let products = service.path().join("products.py");
    let source = std::fs::read_to_string(&products).unwrap();
    assert!(source.contains("req.reply(201, prod"));
    std::fs::write(
        &products,
        source.replace("req.reply(201, prod", "req.reply(200, prod"),
    )
    .unwrap();
    wait_for(
        "verdict after the save",
        &stdout,
        |s| s.contains("api-design/create-returns-201"),
        60,
    );
    wait_for(
        "the screen's last line",
        &stdout,
        |s| s.matches("\nnext: ").count() >= 2,
        30,
    );
    let screen = stdout.lock().unwrap().clone();
    let second = &screen[screen.find("37 passed").unwrap()..];
    assert!(
        second.contains("FAIL  api-design/create-returns-201"),
        "{second}"
    );
    assert!(second.contains("after products.py"), "{second}");

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = exit_within(&mut child, Duration::from_secs(60), "watch after Ctrl-C");
    let log = stderr.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(
        log.matches("starting PostgreSQL").count(),
        1,
        "PostgreSQL starts once per session:\n{log}"
    );
    let pg_log =
        std::fs::read_to_string(service.path().join(".grader/watch/postgres.log")).unwrap();
    assert_eq!(pg_log.matches("started postgres").count(), 1, "{pg_log}");
    let left: Vec<String> = grader_temp_dirs(tmp.path()).into_iter().collect();
    assert!(left.is_empty(), "temp dirs left after Ctrl-C: {left:?}");
    let procs = leftovers(&marker, &during_run);
    assert!(procs.is_empty(), "processes left after Ctrl-C: {procs:?}");

    // Both runs went into the learner's record.
    let progress: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(service.path().join(".grader/progress.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        progress["exercises"]["api-design"]["checks"]["create-returns-201"],
        "fail"
    );
    assert_eq!(
        progress["exercises"]["api-design"]["checks"]["head-no-body"],
        "pass"
    );
    // `grader status` reads it back: the exercise is under way, and the next step names it.
    let status = Command::new(grader_bin())
        .arg("status")
        .arg(service.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("◐ api-design"), "{text}");
    assert!(text.contains("next: api-design has"), "{text}");
}
