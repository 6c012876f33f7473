//! `grader batch` end to end: a roster of 14 submissions graded 2 at a time (the reference, eight
//! of its known-bad variants, a git repository at a tag, a service that crashes, one that hangs,
//! one whose build fails, a folder with nothing to grade). Each verdict must be what a single
//! `grader check` gives; nothing may be left behind; a second run keeps every result; shards
//! cover the roster and merge into the same class report.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::*;

/// Every batch here finishes well within this (the hanging service costs 3 × 10 s).
const BATCH_TIMEOUT: Duration = Duration::from_secs(600);

/// A grader.toml running the reference binary on api-design, with a planted bug or none.
fn reference_manifest(binary: &Path, bug: Option<&str>) -> String {
    let env = bug
        .map(|b| format!("env = {{ REFSVC_BUG = \"{b}\" }}\n"))
        .unwrap_or_default();
    format!(
        "exercises = [\"api-design\"]\n[service]\ncommand = \"exec {}\"\nhealth_path = \"/healthz\"\n\
         startup_timeout = \"60s\"\n{env}[postgres]\nenv = \"DATABASE_URL\"\n",
        binary.display()
    )
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// What a submission must come out as: its verdict, the checks that must not pass (None: every
/// check), and text its result's message must hold.
struct Expected {
    verdict: &'static str,
    not_passed: Option<BTreeSet<String>>,
    message: &'static str,
}

/// Writes the class into `root` and returns the roster file and each student's expectation.
fn write_class(root: &Path) -> (PathBuf, Vec<(String, Expected)>) {
    let binary = reference_binary();
    let mut rows = vec!["student,path_or_git_url,ref".to_string()];
    let mut expected = Vec::new();
    let mut folder = |student: &str, manifest: Option<String>, e: Expected| {
        let dir = root.join("subs").join(student);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(m) = manifest {
            write(&dir.join("grader.toml"), &m);
        }
        rows.push(format!("{student},subs/{student},"));
        expected.push((student.to_string(), e));
    };
    folder(
        "ref",
        Some(reference_manifest(&binary, None)),
        Expected {
            verdict: "pass",
            not_passed: Some(BTreeSet::new()),
            message: "",
        },
    );
    // Eight api-design bugs: each must fail exactly the checks variants.toml lists, which is
    // what `every_variant_fails_exactly_its_checks` asserts of a single `grader check`.
    let bugs: Vec<Variant> = all_variants()
        .into_iter()
        .filter(|v| v.exercise == "api-design" && v.service.is_none() && !v.soak)
        .take(8)
        .collect();
    assert_eq!(bugs.len(), 8);
    for v in &bugs {
        folder(
            &format!("bug-{}", v.bug),
            Some(reference_manifest(&binary, Some(&v.bug))),
            Expected {
                verdict: "fail",
                not_passed: Some(v.fails.iter().cloned().collect()),
                message: "checks failed",
            },
        );
    }
    let crash = std::fs::read_to_string(fixture("crash-on-start").join("grader.toml")).unwrap();
    folder(
        "crashes",
        Some(crash),
        Expected {
            verdict: "fail",
            not_passed: None,
            message: "exited with code 3",
        },
    );
    folder(
        "build-fails",
        Some(
            "exercises = [\"api-design\"]\n[service]\nbuild = \"echo 'error[E0425]: cannot find value x' >&2; exit 101\"\n\
             command = \"sleep 60\"\n"
                .into(),
        ),
        Expected {
            verdict: "fail",
            not_passed: None,
            message: "build command failed",
        },
    );
    folder(
        "empty",
        None,
        Expected {
            verdict: "unusable",
            // The submission's own folder, never the copy the grader made of it.
            not_passed: None,
            message: "subs/empty/grader.toml",
        },
    );
    // The hostile fixture hangs on every request but /healthz.
    let hang_dir = root.join("subs/hangs");
    std::fs::create_dir_all(&hang_dir).unwrap();
    std::fs::copy(fixture("hostile").join("app.py"), hang_dir.join("app.py")).unwrap();
    folder(
        "hangs",
        Some(std::fs::read_to_string(fixture("hostile").join("grader.toml")).unwrap()),
        Expected {
            verdict: "fail",
            not_passed: None,
            message: "checks failed",
        },
    );
    // A repository whose HEAD is buggy and whose tag `graded` is correct: the ref is graded.
    let repo = root.join("repos/tagged");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "--quiet"]);
    write(
        &repo.join("grader.toml"),
        &reference_manifest(&binary, None),
    );
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "--quiet", "-m", "correct"]);
    git(&repo, &["tag", "graded"]);
    write(
        &repo.join("grader.toml"),
        &reference_manifest(&binary, Some("create-200-no-location")),
    );
    git(&repo, &["commit", "--quiet", "-am", "buggy"]);
    rows.push("tagged,repos/tagged,graded".into());
    expected.push((
        "tagged".into(),
        Expected {
            verdict: "pass",
            not_passed: Some(BTreeSet::new()),
            message: "",
        },
    ));
    let roster = root.join("roster.csv");
    write(&roster, &(rows.join("\n") + "\n"));
    (roster, expected)
}

struct BatchRun {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn batch(args: &[&str], tmp: &Path) -> BatchRun {
    let started = Instant::now();
    let mut child = Command::new(grader_bin())
        .arg("batch")
        .args(args)
        .env("NO_COLOR", "1")
        .env("TMPDIR", tmp)
        .env_remove("REFSVC_BUG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("grader runs");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let status = exit_within(&mut child, BATCH_TIMEOUT, "grader batch");
    BatchRun {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: started.elapsed(),
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Live processes whose command line mentions `marker`.
fn processes_mentioning(marker: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != std::process::id() as i32)
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(marker).then(|| format!("{pid}: {cmd}"))
        })
        .collect()
}

/// No process of the batch lives on, and its TMPDIR is empty (no clone, copy or database).
fn assert_nothing_left(tmp: &Path) {
    let left = processes_mentioning(tmp.to_str().unwrap());
    assert!(left.is_empty(), "processes left: {left:?}");
    let temp_left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(temp_left.is_empty(), "temp files left: {temp_left:?}");
}

#[test]
fn batch_grades_a_class_like_single_checks_resumes_and_shards() {
    let work = own_tmpdir("grader-batch-e2e-");
    let tmp = own_tmpdir("grader-batch-tmp-");
    let (roster, expected) = write_class(work.path());
    let out = work.path().join("out");
    let out_str = out.to_str().unwrap();
    let roster_str = roster.to_str().unwrap();
    let args = [
        roster_str,
        "-e",
        "api-design",
        "--runtime",
        "local",
        "--jobs",
        "2",
        "--seed",
        "77",
        "--out",
        out_str,
    ];
    let first = batch(&args, tmp.path());
    let context = format!("--- stdout\n{}\n--- stderr\n{}", first.stdout, first.stderr);
    assert_eq!(first.code, 0, "{context}");
    assert!(
        first.stderr.contains("WARNING: --runtime local"),
        "{context}"
    );

    // Every submission's verdict and not-passed checks, from its kept result and report.
    let class = read_json(&out.join("class.json"));
    assert_eq!(class["counts"]["submissions"], 14, "{context}");
    assert_eq!(class["counts"]["pass"], 2, "{context}");
    assert_eq!(class["counts"]["unusable"], 1, "{context}");
    assert_eq!(class["counts"]["error"], 0, "{context}");
    for (student, want) in &expected {
        let dir = out.join("submissions").join(student);
        let result = read_json(&dir.join("result.json"));
        assert_eq!(result["verdict"], want.verdict, "{student}: {result:#}");
        let message = result["message"].as_str().unwrap_or("");
        assert!(
            message.contains(want.message),
            "{student}: message {message:?}"
        );
        if want.verdict == "unusable" {
            assert!(!dir.join("report.json").exists());
            continue;
        }
        let report = read_json(&dir.join("report.json"));
        match &want.not_passed {
            Some(set) => assert_eq!(&not_passed(&report), set, "{student}"),
            None => assert!(
                statuses(&report).iter().all(|(_, s)| s != "pass"),
                "{student}: a check passed"
            ),
        }
    }
    let hung = read_json(&out.join("submissions/hangs/report.json"));
    let hang_text = hung.to_string();
    assert!(hang_text.contains("3 checks in a row"), "{hang_text}");
    assert_eq!(
        read_json(&out.join("submissions/build-fails/report.json"))["problem"]["kind"],
        "service_build"
    );

    // The submissions' own folders are only read: the batch graded copies of them.
    for student in ["ref", "crashes", "hangs"] {
        let folder = work.path().join("subs").join(student);
        assert!(
            !folder.join(".grader").exists(),
            "the batch wrote into {}",
            folder.display()
        );
    }
    let report_replay = read_json(&out.join("submissions/ref/report.json"))["replay"].clone();
    assert!(
        report_replay.as_str().unwrap().contains("subs/ref"),
        "the kept report names the submission's folder: {report_replay}"
    );
    let replay = read_json(&out.join("submissions/ref/result.json"))["replay"].clone();
    assert!(
        replay.as_str().unwrap().contains(&format!(
            "grader check {}",
            work.path().join("subs/ref").display()
        )),
        "the replay names the submission's folder, not the copy graded: {replay}"
    );

    // A single `grader check` with the seed the batch gave the student: the same statuses.
    for student in ["bug-create-200-no-location", "crashes"] {
        let result = read_json(&out.join("submissions").join(student).join("result.json"));
        let seed = result["seed"].as_u64().unwrap().to_string();
        let single = grade(
            &work.path().join("subs").join(student),
            &["-e", "api-design", "--seed", &seed],
            &[],
        );
        let batch_report = read_json(&out.join("submissions").join(student).join("report.json"));
        assert_eq!(
            statuses(&single.json()),
            statuses(&batch_report),
            "{student}"
        );
        assert_eq!(single.json()["score"], batch_report["score"], "{student}");
        assert!(
            result["replay"]
                .as_str()
                .unwrap()
                .contains(&format!("--seed {seed}")),
            "{result:#}"
        );
    }
    assert!(
        read_json(&out.join("submissions/tagged/result.json"))["replay"]
            .as_str()
            .unwrap()
            .contains("<a clone of"),
        "a clone's replay names the repository, not a deleted folder"
    );

    // Nothing left behind: no process of the batch, no temp folder (clones, databases).
    assert_nothing_left(tmp.path());

    // The class report's three forms agree with the results.
    let csv = std::fs::read_to_string(out.join("class.csv")).unwrap();
    assert_eq!(csv.lines().count(), 15, "{csv}");
    assert!(csv.starts_with("student,verdict,percent,earned,possible,api-design,message\n"));
    assert!(csv.contains("\nref,pass,100.0,"), "{csv}");
    let html = std::fs::read_to_string(out.join("class.html")).unwrap();
    assert!(html.contains("id=\"student-tagged\""));

    // A second run grades nothing: every result is kept, and the class report is the same.
    let first_class = std::fs::read_to_string(out.join("class.json")).unwrap();
    let again = batch(&args, tmp.path());
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains("14 submission(s) kept from an earlier run"),
        "{}",
        again.stderr
    );
    assert_eq!(
        std::fs::read_to_string(out.join("class.json")).unwrap(),
        first_class
    );
    eprintln!(
        "batch of 14 with --jobs 2: {:.1} s; the re-run that kept them all: {:.1} s",
        first.took.as_secs_f64(),
        again.took.as_secs_f64()
    );

    // Shards: each slice of a copy of the graded folder (so nothing is graded again), disjoint,
    // covering the roster, merged into the unsharded class report.
    let mut shard_dirs = Vec::new();
    let mut students: Vec<String> = Vec::new();
    for index in 0..3 {
        let dir = work.path().join(format!("shard-{index}"));
        let copied = Command::new("cp")
            .args(["-a", out_str, dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(copied.success());
        let shard = format!("{index}/3");
        let mut shard_args = args.to_vec();
        let dir_str = dir.to_str().unwrap().to_string();
        *shard_args.last_mut().unwrap() = &dir_str;
        shard_args.extend(["--shard", &shard]);
        let run = batch(&shard_args, tmp.path());
        assert_eq!(run.code, 0, "{}", run.stderr);
        let part = read_json(&dir.join("class.json"));
        students.extend(
            part["submissions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["student"].as_str().unwrap().to_string()),
        );
        shard_dirs.push(dir_str);
    }
    let mut sorted = students.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), students.len(), "shards overlap: {students:?}");
    assert_eq!(
        sorted.len(),
        14,
        "shards do not cover the roster: {students:?}"
    );
    let merged = work.path().join("merged");
    let mut merge_args = vec!["merge"];
    merge_args.extend(shard_dirs.iter().map(String::as_str));
    merge_args.extend(["--out", merged.to_str().unwrap()]);
    let run = batch(&merge_args, tmp.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(merged.join("class.json")).unwrap(),
        first_class,
        "the merged shards differ from the unsharded class report"
    );
    assert!(merged.join("submissions/ref/report.html").is_file());

    // Merging one shard twice is refused: a student would count twice.
    let twice = batch(
        &[
            "merge",
            &shard_dirs[0],
            &shard_dirs[0],
            "--out",
            work.path().join("twice").to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(twice.code, 2);
    assert!(
        twice.stderr.contains("shards must be disjoint"),
        "{}",
        twice.stderr
    );
}

#[test]
fn a_bad_roster_is_located_and_nothing_runs() {
    let work = own_tmpdir("grader-batch-bad-");
    let roster = work.path().join("roster.csv");
    std::fs::write(
        &roster,
        "student,path_or_git_url,ref\nada,a,\nada,b,\n../x,c,\n",
    )
    .unwrap();
    let run = batch(
        &[
            roster.to_str().unwrap(),
            "-e",
            "api-design",
            "--out",
            work.path().join("out").to_str().unwrap(),
        ],
        work.path(),
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    for expected in [
        "roster.csv:3:1",
        "listed twice",
        "roster.csv:4:1",
        "not usable as a folder name",
    ] {
        assert!(
            run.stderr.contains(expected),
            "{expected:?} missing:\n{}",
            run.stderr
        );
    }
    assert!(
        !work.path().join("out").exists(),
        "a bad roster wrote output"
    );
}

/// Ctrl-C in the middle of a class: the running submission is stopped with everything it
/// started, what finished is kept, and the next run grades only the rest.
#[test]
fn an_interrupted_batch_keeps_what_finished_and_leaves_nothing() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let work = own_tmpdir("grader-batch-int-");
    let tmp = own_tmpdir("grader-batch-int-tmp-");
    let binary = reference_binary();
    let subs = work.path().join("subs");
    write(
        &subs.join("a-first/grader.toml"),
        &reference_manifest(&binary, None),
    );
    // Hangs on every request but /healthz: still running when the signal comes.
    std::fs::create_dir_all(subs.join("b-hangs")).unwrap();
    for f in ["app.py", "grader.toml"] {
        std::fs::copy(fixture("hostile").join(f), subs.join("b-hangs").join(f)).unwrap();
    }
    write(
        &subs.join("c-last/grader.toml"),
        &reference_manifest(&binary, None),
    );
    let out = work.path().join("out");
    let args = [
        subs.to_str().unwrap(),
        "-e",
        "api-design",
        "--runtime",
        "local",
        "--jobs",
        "1",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ];
    let mut child = Command::new(grader_bin())
        .arg("batch")
        .args(args)
        .env("NO_COLOR", "1")
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    // The first result is kept, and the hanging service is up: a database and a service run.
    let deadline = Instant::now() + Duration::from_secs(120);
    let second_is_running = || {
        out.join("submissions/a-first/result.json").is_file()
            && !processes_mentioning(tmp.path().to_str().unwrap()).is_empty()
    };
    while !second_is_running() {
        assert!(
            Instant::now() < deadline,
            "the batch never got to its second submission"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = exit_within(
        &mut child,
        Duration::from_secs(60),
        "grader batch after SIGINT",
    );
    let printed = lines.join().unwrap();
    assert_eq!(status.code(), Some(130), "{printed}");
    assert!(
        printed.contains("interrupted; 1 result(s) kept"),
        "{printed}"
    );
    assert!(
        !out.join("submissions/b-hangs/result.json").exists(),
        "an interrupted run was kept"
    );
    assert_nothing_left(tmp.path());

    // The next run keeps a-first and grades the other two (b-hangs now fixed).
    std::fs::remove_file(subs.join("b-hangs/app.py")).unwrap();
    write(
        &subs.join("b-hangs/grader.toml"),
        &reference_manifest(&binary, None),
    );
    let again = batch(&args, tmp.path());
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains("1 submission(s) kept from an earlier run"),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("b-hangs  pass"), "{}", again.stderr);
    assert!(again.stderr.contains("c-last  pass"), "{}", again.stderr);
}

/// A SIGKILLed batch cannot clean up itself: its supervisor kills the submission's service and
/// database and removes the copy of the submission (`grader-batch-*`) and every temp dir.
#[test]
fn a_killed_batch_leaves_nothing_behind() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let work = own_tmpdir("grader-batch-kill-");
    let tmp = own_tmpdir("grader-batch-kill-tmp-");
    let subs = work.path().join("subs");
    // Hangs on every request but /healthz: still running when the signal comes.
    std::fs::create_dir_all(subs.join("hangs")).unwrap();
    for f in ["app.py", "grader.toml"] {
        std::fs::copy(fixture("hostile").join(f), subs.join("hangs").join(f)).unwrap();
    }
    let out = work.path().join("out");
    let mut child = Command::new(grader_bin())
        .arg("batch")
        .args([
            subs.to_str().unwrap(),
            "-e",
            "api-design",
            "--runtime",
            "local",
        ])
        .args(["--jobs", "1", "--out", out.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let copy_exists = || {
        std::fs::read_dir(tmp.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("grader-batch-")
        })
    };
    let started =
        || copy_exists() && !processes_mentioning(tmp.path().to_str().unwrap()).is_empty();
    while !started() {
        assert!(
            Instant::now() < deadline,
            "the batch never started its submission"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    exit_within(
        &mut child,
        Duration::from_secs(10),
        "grader batch after SIGKILL",
    );
    // The supervisor works after the grader is gone, bounded by its own waits.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let clean = processes_mentioning(tmp.path().to_str().unwrap()).is_empty()
            && std::fs::read_dir(tmp.path()).unwrap().next().is_none();
        if clean || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_nothing_left(tmp.path());
}

/// The grader's failure is never the student's: with no Docker daemon, each submission is tried
/// twice and reported as `error` (exit 3), kept out of the scores, and graded again next time.
#[test]
fn a_grader_error_is_tried_twice_then_reported_as_error_not_fail() {
    let work = own_tmpdir("grader-batch-err-");
    let binary = reference_binary();
    write(
        &work.path().join("subs/ada/grader.toml"),
        &reference_manifest(&binary, None),
    );
    let out = work.path().join("out");
    let mut command = Command::new(grader_bin());
    command
        .args(["batch", work.path().join("subs").to_str().unwrap()])
        .args([
            "-e",
            "api-design",
            "--runtime",
            "docker",
            "--seed",
            "1",
            "--out",
        ])
        .arg(&out)
        .env("NO_COLOR", "1")
        .env(
            "DOCKER_HOST",
            format!("unix://{}/no-daemon.sock", work.path().display()),
        )
        .stdin(Stdio::null());
    for round in 1..=2 {
        let run = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(3), "round {round}: {stderr}");
        assert!(
            stderr.contains("ada: grader error, trying once more"),
            "{stderr}"
        );
        let result = read_json(&out.join("submissions/ada/result.json"));
        assert_eq!(result["verdict"], "error");
        assert_eq!(result["attempts"], 2);
        assert!(
            result["message"]
                .as_str()
                .unwrap()
                .contains("no Docker daemon"),
            "{result:#}"
        );
        let class = read_json(&out.join("class.json"));
        assert_eq!(class["counts"]["error"], 1);
        assert_eq!(class["score"]["scored"], 0, "an error has no score");
        let csv = std::fs::read_to_string(out.join("class.csv")).unwrap();
        assert!(csv.contains("\nada,error,,,"), "{csv}");
    }
}

/// Under --runtime docker a class's code runs only in containers: a submission whose grader.toml
/// asks for a command on the grading machine (`[docker] build`) is unusable, and the command
/// never runs.
#[test]
fn a_submission_cannot_run_a_host_command_under_docker() {
    let work = own_tmpdir("grader-batch-host-");
    let marker = work.path().join("host-command-ran");
    write(
        &work.path().join("subs/mallory/grader.toml"),
        &format!(
            "exercises = [\"api-design\"]\n[docker]\nbuild = \"touch {}\"\n",
            marker.display()
        ),
    );
    std::fs::write(
        work.path().join("subs/mallory/Dockerfile"),
        "FROM debian:bookworm-slim\n",
    )
    .unwrap();
    let out = work.path().join("out");
    let run = Command::new(grader_bin())
        .args(["batch", work.path().join("subs").to_str().unwrap()])
        .args(["-e", "api-design", "--seed", "1", "--out"])
        .arg(&out)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    let result = read_json(&out.join("submissions/mallory/result.json"));
    assert_eq!(result["verdict"], "unusable", "{result:#}");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("[docker] build"),
        "{result:#}"
    );
    assert!(!marker.exists(), "the submission's host command ran");
}

/// `--timeout` stops a run that takes longer (here a service that hangs on every request, whose
/// checks would otherwise cost 3 × 10 s) and fails it, saying why; nothing is left behind.
#[test]
fn a_run_over_the_timeout_is_stopped_and_failed() {
    let work = own_tmpdir("grader-batch-timeout-");
    let tmp = own_tmpdir("grader-batch-timeout-tmp-");
    let subs = work.path().join("subs");
    std::fs::create_dir_all(subs.join("slow")).unwrap();
    for f in ["app.py", "grader.toml"] {
        std::fs::copy(fixture("hostile").join(f), subs.join("slow").join(f)).unwrap();
    }
    let out = work.path().join("out");
    let started = Instant::now();
    let run = batch(
        &[
            subs.to_str().unwrap(),
            "-e",
            "api-design",
            "--runtime",
            "local",
            "--timeout",
            "6s",
            "--seed",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
    let result = read_json(&out.join("submissions/slow/result.json"));
    assert_eq!(result["verdict"], "fail", "{result:#}");
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("longer than --timeout 6s"),
        "{result:#}"
    );
    assert_nothing_left(tmp.path());
}
