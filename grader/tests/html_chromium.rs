//! The HTML report in a real browser: headless Chromium loads the page written for a report full of
//! hostile service text, and the DOM it builds holds the report's elements and none of the
//! service's; a screenshot of it is a real PNG.
//!
//! Skips (saying why) without a `chromium` on PATH, unless `GRADER_REQUIRE_CHROMIUM` is set, as CI
//! does: there a missing browser fails. Every Chromium run has its own profile folder, a
//! 60-second limit and its own process group, killed whole afterwards; the test fails if any
//! process of that run is still alive.
//!
//! `GRADER_KEEP_SCREENSHOT=FILE` keeps a copy of the screenshot, to look at.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use grader::batch::{class_html, fixtures as class_fixtures};
use grader::report::{fixtures, html};

/// How long one Chromium run may take before it is killed.
const LIMIT: Duration = Duration::from_secs(60);

/// `chromium` on PATH, or `None` after saying why the test skips.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        // CI sets GRADER_REQUIRE_CHROMIUM so a missing browser fails there instead of passing.
        assert!(
            std::env::var_os("GRADER_REQUIRE_CHROMIUM").is_none(),
            "GRADER_REQUIRE_CHROMIUM is set but there is no chromium on PATH (scripts/setup \
             installs it)"
        );
        eprintln!("no chromium on PATH: skipped (scripts/setup installs it)");
    }
    found
}

/// Pids of live processes whose command line mentions `marker`.
fn processes_mentioning(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| String::from_utf8_lossy(&cmd).contains(marker))
        })
        .collect()
}

/// Runs headless Chromium on `page` with `args`, in a fresh profile and process group, within
/// [`LIMIT`]; returns its stdout. Panics (after killing every process of the run) on a timeout,
/// a failure, or a process that outlives the run.
fn run_chromium(browser: &Path, page: &Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            &profile_arg,
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .process_group(0)
        .spawn()
        .expect("chromium starts");
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    // Whatever happened, nothing of this run lives on: its group first, then anything that left
    // the group but still names the run's profile.
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    let marker = profile.path().to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut survivors = processes_mentioning(&marker);
    while !survivors.is_empty() && Instant::now() < deadline {
        for pid in &survivors {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
        survivors = processes_mentioning(&marker);
    }
    let stderr = std::fs::read_to_string(err.path()).unwrap_or_default();
    let Some(status) = status else {
        panic!("chromium took longer than {LIMIT:?} and was killed; stderr:\n{stderr}");
    };
    assert!(
        status.success(),
        "chromium failed: {status}; stderr:\n{stderr}"
    );
    assert!(
        survivors.is_empty(),
        "chromium processes outlived the run: {survivors:?}"
    );
    drop(profile);
    std::fs::read_to_string(out.path()).unwrap()
}

#[test]
fn chromium_renders_the_report_and_no_hostile_markup() {
    let Some(browser) = chromium() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let report = fixtures::hostile_html();
    std::fs::write(&page, html::render(&report)).unwrap();

    let dom = run_chromium(&browser, &page, &["--dump-dom"]);
    for id in [
        "id=\"run\"",
        "id=\"score\"",
        "id=\"skills\"",
        "id=\"checks\"",
        "id=\"exercise-api-design\"",
        "id=\"check-api-design-create-returns-201\"",
        "id=\"skill-http-semantics\"",
    ] {
        assert!(dom.contains(id), "the DOM lacks {id}:\n{dom}");
    }
    for status in ["pass", "fail", "error", "skip"] {
        assert!(
            dom.contains(&format!("<li class=\"check {status}\"")),
            "no {status} check in the DOM"
        );
    }
    assert_eq!(
        dom.matches("<li class=\"check ").count(),
        report.checks.len()
    );
    assert!(dom.contains("<span class=\"big\">5</span>/13 pts"), "{dom}");
    assert!(dom.contains("38.5%"));
    // Failures are open <details>, readable without a click.
    assert_eq!(dom.matches("<details open=\"\">").count(), 3, "{dom}");

    // The hostile text is text: Chromium built no element from it.
    let element = regex::Regex::new(r"<([a-zA-Z][a-zA-Z0-9-]*)([^>]*)>").unwrap();
    let handler = regex::Regex::new(r"(?i)\son[a-z]+\s*=").unwrap();
    for m in element.captures_iter(&dom) {
        assert!(
            html::ELEMENTS.contains(&&m[1]),
            "Chromium built a <{}> element from the page",
            &m[1]
        );
        assert!(
            !handler.is_match(&m[2]),
            "an event handler attribute: {}",
            &m[0]
        );
    }
    assert_eq!(dom.matches("<style").count(), 1, "a second style element");
    assert!(dom.contains("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(dom.contains("&lt;U+202E&gt;gnp.exe"));
    assert!(!dom.contains('\u{202e}'));

    let png = dir.path().join("report.png");
    let shot_arg = format!("--screenshot={}", png.display());
    run_chromium(
        &browser,
        &page,
        &["--hide-scrollbars", "--window-size=1100,1600", &shot_arg],
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is no PNG"
    );
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1100, 1600));
    // A blank page compresses to a few kilobytes; this one has text and colour.
    assert!(
        bytes.len() > 50_000,
        "the screenshot is suspiciously small ({} bytes)",
        bytes.len()
    );
    if let Some(keep) = std::env::var_os("GRADER_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
    eprintln!("chromium test took {:?}", started.elapsed());
}

#[test]
fn chromium_renders_the_class_page_and_no_hostile_markup() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("class.html");
    let class = class_fixtures::class_report();
    std::fs::write(&page, class_html::render(&class)).unwrap();
    let dom = run_chromium(&browser, &page, &["--dump-dom"]);
    for id in [
        "id=\"distribution\"",
        "id=\"overall\"",
        "id=\"skill-api-design\"",
        "id=\"skill-idempotency\"",
        "id=\"most-failed\"",
        "id=\"student-fay\"",
    ] {
        assert!(dom.contains(id), "the DOM lacks {id}:\n{dom}");
    }
    // One histogram per distribution, ten columns each, the counts as the class has them.
    assert_eq!(
        dom.matches("class=\"hist\"").count(),
        1 + class.skills.len()
    );
    let counts: Vec<u32> = regex::Regex::new(r#"data-count="(\d+)""#)
        .unwrap()
        .captures_iter(&dom)
        .map(|c| c[1].parse().unwrap())
        .collect();
    let mut expected: Vec<u32> = class.score.histogram.to_vec();
    for skill in &class.skills {
        expected.extend(skill.distribution.histogram);
    }
    assert_eq!(counts, expected);
    assert_eq!(
        dom.matches("<tr id=\"student-").count(),
        class.submissions.len()
    );
    assert!(
        dom.contains("<a href=\"submissions/cy/report.html\">cy</a>"),
        "{dom}"
    );

    let element = regex::Regex::new(r"<([a-zA-Z][a-zA-Z0-9-]*)([^>]*)>").unwrap();
    for m in element.captures_iter(&dom) {
        assert!(
            class_html::ELEMENTS.contains(&&m[1]),
            "Chromium built a <{}> element from the class page",
            &m[1]
        );
    }
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!dom.contains('\u{202e}'));
}
