//! What a packaged CLI ships beside the binary, generated from the one CLI definition
//! ([`crate::cli::Cli`]), so it can never disagree with the flags: shell completion scripts
//! (`grader completions SHELL`, with `clap_complete`) and man pages (`grader man`, with
//! `clap_mangen`).

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::Cli;
use crate::scoring::exit;

/// The completion script for `shell`, e.g. for `~/.local/share/bash-completion/completions/grader`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "grader", out);
}

/// The man page of `grader` as roff, with its subcommands listed.
pub fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// Writes `grader.1` and one page per subcommand (`grader-check.1`, ...) into `dir`.
pub fn man_pages_to(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
}

/// `grader completions SHELL`: the script on stdout.
pub fn print_completions(shell: clap_complete::Shell) -> i32 {
    completions(shell, &mut std::io::stdout().lock());
    exit::OK
}

/// `grader man [--out DIR]`: the page on stdout, or every page into DIR.
pub fn print_man(out: Option<&Path>) -> i32 {
    let written = match out {
        Some(dir) => {
            man_pages_to(dir).map_err(|e| format!("cannot write to {}: {e}", dir.display()))
        }
        None => man_page(&mut std::io::stdout().lock()).map_err(|e| e.to_string()),
    };
    match written {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("grader: {e}");
            exit::USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{completions, man_page, man_pages_to};

    /// A man page: after clap_mangen's two-line preamble (the `\*(Aq` string for `'`, by
    /// `.ie`/`.el`), the first request is the title, `.TH`.
    fn assert_starts_with_th(page: &str) {
        let first = page
            .lines()
            .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
            .unwrap_or_default();
        assert!(first.starts_with(".TH grader"), "{page}");
        // Every request is one the man macros define (what `groff -man -ww` accepts silently).
        const REQUESTS: &[&str] = &[
            "ie", "el", "TH", "SH", "SS", "TP", "IP", "PP", "LP", "RS", "RE", "br", "B", "I", "nf",
            "fi", "sp", "in",
        ];
        for line in page.lines().filter(|l| l.starts_with('.')) {
            let name = line[1..].split(' ').next().unwrap_or_default();
            assert!(REQUESTS.contains(&name), "unknown roff request {line:?}");
        }
    }

    #[test]
    fn bash_completions_name_every_subcommand() {
        let mut out = Vec::new();
        completions(clap_complete::Shell::Bash, &mut out);
        let script = String::from_utf8(out).unwrap();
        for name in [
            "check",
            "exercises",
            "lint",
            "prove",
            "explain",
            "hint",
            "completions",
            "man",
        ] {
            assert!(script.contains(name), "the bash script lacks {name}");
        }
        assert!(script.contains("--format"), "{script}");
        assert!(script.contains("html"), "the --format values lack html");
        assert!(script.contains("--color"), "the global --color flag");
        for shell in [
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::PowerShell,
            clap_complete::Shell::Elvish,
        ] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            assert!(
                String::from_utf8(out).unwrap().contains("explain"),
                "{shell}"
            );
        }
    }

    #[test]
    fn man_page_is_roff_with_every_subcommand() {
        let mut out = Vec::new();
        man_page(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        assert_starts_with_th(&page);
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
            assert!(page.contains(section), "no {section}:\n{page}");
        }
        assert!(page.contains("grader\\-check(1)"), "{page}");
        // Every line is a roff request, a comment or text; none starts with a stray `'`.
        for line in page.lines() {
            assert!(!line.starts_with('\''), "{line:?}");
        }
    }

    #[test]
    fn man_out_writes_a_page_per_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        man_pages_to(&dir.path().join("man1")).unwrap();
        for page in [
            "grader.1",
            "grader-check.1",
            "grader-explain.1",
            "grader-man.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join("man1").join(page))
                .unwrap_or_else(|e| panic!("{page}: {e}"));
            assert_starts_with_th(&text);
        }
    }
}
