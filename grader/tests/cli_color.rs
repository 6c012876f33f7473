//! `--color` and `NO_COLOR`, on the real binary with its output piped (never a terminal here).
//!
//! Two outputs are coloured: the human report of `grader check` on stdout, and located
//! diagnostics (`grader lint`, a broken exercise file) on stderr. The report comes from a real run
//! of a service that dies on start (`tests/fixtures/crash-on-start`, about a second): its report
//! has the red "did not start" heading, bold labels and dimmed log gutters. The `NO_COLOR` cases
//! use `lint`, which needs no database.

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `grader ARGS` with the colour variables of the environment removed, then `env` set.
fn grader(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grader"));
    cmd.args(args).current_dir(repo());
    for var in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "TERM", "CI"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("grader runs")
}

fn has_ansi(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\x1b[")
}

fn crash_on_start_report(color: &str) -> String {
    let artifacts = tempfile::tempdir().unwrap();
    let out = grader(
        &[
            "--color",
            color,
            "check",
            "tests/fixtures/crash-on-start",
            "--seed",
            "1",
            "--artifacts-dir",
            artifacts.path().to_str().unwrap(),
        ],
        &[],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("did not start"),
        "no human report on stdout:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn color_always_colours_a_piped_report_and_never_does_not() {
    let always = crash_on_start_report("always");
    assert!(
        has_ansi(always.as_bytes()),
        "no colour with --color always:\n{always}"
    );
    assert!(
        always.contains("\x1b[31mYour service did not start"),
        "{always:?}"
    );
    let never = crash_on_start_report("never");
    assert!(
        !never.contains('\x1b'),
        "colour with --color never:\n{never:?}"
    );
}

#[test]
fn no_color_is_respected_unless_color_is_asked_for() {
    let lint = ["lint", "--exercises-dir", "tests/fixtures/bad-exercises"];
    let with = |flags: &[&str], env: &[(&str, &str)]| {
        let args: Vec<&str> = flags.iter().chain(lint.iter()).copied().collect();
        let out = grader(&args, env);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("unknown skill"),
            "no diagnostic: {out:?}"
        );
        has_ansi(&out.stderr)
    };
    // CLICOLOR_FORCE colours a pipe in auto mode; NO_COLOR wins over it.
    assert!(with(&[], &[("CLICOLOR_FORCE", "1")]));
    assert!(!with(&[], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]));
    // An explicit flag wins over both.
    assert!(with(&["--color", "always"], &[("NO_COLOR", "1")]));
    assert!(!with(&["--color", "never"], &[("CLICOLOR_FORCE", "1")]));
    // The flag is global: after the subcommand too.
    let out = grader(
        &[
            "lint",
            "--exercises-dir",
            "tests/fixtures/bad-exercises",
            "--color",
            "always",
        ],
        &[],
    );
    assert!(has_ansi(&out.stderr), "{out:?}");
}
