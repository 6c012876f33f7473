//! `grader new-exercise`: the skeleton passes `grader lint` as written, next to the shipped
//! exercises; an existing folder or an invalid id is refused with exit 2 and nothing changes.

use std::path::Path;
use std::process::{Command, Output};

fn grader(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_grader"))
        .args(args)
        .env_remove("GRADER_EXERCISES_DIR")
        .env("NO_COLOR", "1")
        .output()
        .expect("grader runs")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A temporary copy of the repository's exercises folder (skills.toml and every exercise).
fn exercises_copy() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../exercises");
    let dir = tmp.path().join("exercises");
    copy_dir(&shipped, &dir);
    let dir = dir.to_string_lossy().into_owned();
    (tmp, dir)
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_skeleton_passes_lint_as_written() {
    let (_tmp, dir) = exercises_copy();
    let out = grader(&["new-exercise", "rate-limiting", "--exercises-dir", &dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let written = Path::new(&dir).join("rate-limiting");
    let toml = std::fs::read_to_string(written.join("exercise.toml")).unwrap();
    assert!(toml.starts_with("#:schema ../../docs/exercise.schema.json\n"));
    assert!(toml.contains("id = \"rate-limiting\""), "{toml}");
    let readme = std::fs::read_to_string(written.join("README.md")).unwrap();
    assert!(readme.contains("[rl-1.1]"), "{readme}");

    let out = grader(&["lint", "--exercises-dir", &dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The shipped exercises and the new one, all linted.
    let exercises = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("exercise.toml").is_file())
        .count();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{exercises} exercises")),
        "{exercises} exercises expected: {}",
        text(&out)
    );
}

#[test]
fn an_existing_folder_or_an_invalid_id_is_refused_and_nothing_changes() {
    let (_tmp, dir) = exercises_copy();
    let caching = Path::new(&dir).join("caching");
    let before: Vec<(String, Vec<u8>)> = snapshot(&caching);

    let out = grader(&["new-exercise", "caching", "--exercises-dir", &dir]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(&caching), before, "caching/ changed");

    for bad in ["Rate_Limiting", "x-", "a/b", "../escape", ""] {
        let out = grader(&["new-exercise", bad, "--exercises-dir", &dir]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not a valid exercise id"),
            "{bad:?}: {}",
            text(&out)
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut shipped: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../exercises"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    shipped.sort();
    assert_eq!(names, shipped, "a refused id wrote something");
}

/// Every file under `dir`, by relative path, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            for (rel, bytes) in snapshot(&entry.path()) {
                out.push((
                    format!("{}/{rel}", entry.file_name().to_string_lossy()),
                    bytes,
                ));
            }
        } else {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            ));
        }
    }
    out.sort();
    out
}
