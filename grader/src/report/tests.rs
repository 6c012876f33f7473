//! Snapshot tests: every renderer × every report state, plus the properties the snapshots can't
//! show (colour doesn't change the text, escaping, round trips).

use super::fixtures::{
    all_pass, bearer_token, checks_timed_out, hostile_html, mixed, service_did_not_start,
};
use super::human::HumanStyle;
use super::{body_excerpt, github, html, human, json, junit, render, sanitize, Counts, Format};
use crate::outcome::{RecordedResponse, RunReport, Status};

const PLAIN: HumanStyle = HumanStyle {
    color: false,
    verbose: false,
};
const VERBOSE: HumanStyle = HumanStyle {
    color: false,
    verbose: true,
};
const COLOR: HumanStyle = HumanStyle {
    color: true,
    verbose: false,
};

fn fixtures() -> Vec<(&'static str, RunReport)> {
    vec![
        ("mixed", mixed()),
        ("service_did_not_start", service_did_not_start()),
        ("all_pass", all_pass()),
        ("bearer_token", bearer_token()),
    ]
}

/// A request with a bearer JWS shows the token decoded (header and claims), in every format
/// that shows the request.
#[test]
fn human_bearer_token() {
    insta::assert_snapshot!(human::render(&bearer_token(), &PLAIN));
}

#[test]
fn github_bearer_token() {
    insta::assert_snapshot!(github::render(&bearer_token()));
}

#[test]
fn decoded_tokens_reach_json_and_junit() {
    let json = json::render(&bearer_token());
    assert!(json.contains("\"token\": {"), "{json}");
    assert!(json.contains("\"alg\": \"none\""), "{json}");
    let xml = junit::render(&bearer_token());
    assert!(xml.contains("token claims"), "{xml}");
}

#[test]
fn human_mixed() {
    insta::assert_snapshot!(human::render(&mixed(), &PLAIN));
}

#[test]
fn human_mixed_verbose() {
    insta::assert_snapshot!(human::render(&mixed(), &VERBOSE));
}

#[test]
fn human_service_did_not_start() {
    insta::assert_snapshot!(human::render(&service_did_not_start(), &PLAIN));
}

/// A run stopped at its `--timeout`, in every format.
#[test]
fn checks_timed_out_in_every_format() {
    let report = checks_timed_out();
    insta::assert_snapshot!("timed_out_human", human::render(&report, &PLAIN));
    insta::assert_snapshot!("timed_out_github", github::render(&report));
    insta::assert_snapshot!("timed_out_junit", junit::render(&report));
    insta::assert_snapshot!("timed_out_html", html::render(&report));
}

#[test]
fn human_all_pass() {
    insta::assert_snapshot!(human::render(&all_pass(), &PLAIN));
}

/// `grader watch`'s screen in every state: failures (the first in full), the service did not
/// start (the problem, nothing per check), everything passes (bars and score only).
#[test]
fn compact_mixed() {
    insta::assert_snapshot!(human::render_compact(&mixed(), &PLAIN));
}

#[test]
fn compact_service_did_not_start() {
    insta::assert_snapshot!(human::render_compact(&service_did_not_start(), &PLAIN));
}

/// A service that fails nearly everything (a fresh starter) still gets a screen, not a wall: the
/// first failure in full, a dozen more by name, the rest counted.
#[test]
fn compact_counts_the_failures_it_does_not_list() {
    let mut report = mixed();
    let failing = report
        .checks
        .iter()
        .find(|c| c.status == Status::Fail)
        .unwrap()
        .clone();
    for i in 0..20 {
        let mut more = failing.clone();
        more.id = format!("api-design/more-{i}");
        report.checks.push(more);
    }
    let not_passing = report
        .checks
        .iter()
        .filter(|c| matches!(c.status, Status::Fail | Status::Error))
        .count();
    let text = human::render_compact(&report, &PLAIN);
    let listed = text
        .lines()
        .filter(|l| l.starts_with("  FAIL") || l.starts_with("  ERROR"))
        .count();
    assert_eq!(listed, 12, "{text}");
    let unlisted = not_passing - 1 - 12;
    assert!(text.contains(&format!("… and {unlisted} more")), "{text}");
}

#[test]
fn compact_all_pass() {
    insta::assert_snapshot!(human::render_compact(&all_pass(), &PLAIN));
}

#[test]
fn json_mixed() {
    insta::assert_snapshot!(json::render(&mixed()));
}

#[test]
fn json_service_did_not_start() {
    insta::assert_snapshot!(json::render(&service_did_not_start()));
}

#[test]
fn json_all_pass() {
    insta::assert_snapshot!(json::render(&all_pass()));
}

#[test]
fn junit_mixed() {
    insta::assert_snapshot!(junit::render(&mixed()));
}

#[test]
fn junit_service_did_not_start() {
    insta::assert_snapshot!(junit::render(&service_did_not_start()));
}

#[test]
fn junit_all_pass() {
    insta::assert_snapshot!(junit::render(&all_pass()));
}

#[test]
fn github_mixed() {
    insta::assert_snapshot!(github::render(&mixed()));
}

#[test]
fn github_service_did_not_start() {
    insta::assert_snapshot!(github::render(&service_did_not_start()));
}

#[test]
fn github_all_pass() {
    insta::assert_snapshot!(github::render(&all_pass()));
}

#[test]
fn render_dispatches_on_format() {
    let report = mixed();
    assert_eq!(
        render(&report, Format::Human, &PLAIN),
        human::render(&report, &PLAIN)
    );
    assert_eq!(render(&report, Format::Json, &PLAIN), json::render(&report));
    assert_eq!(
        render(&report, Format::Junit, &PLAIN),
        junit::render(&report)
    );
    assert_eq!(
        render(&report, Format::Github, &PLAIN),
        github::render(&report)
    );
    assert_eq!(render(&report, Format::Html, &PLAIN), html::render(&report));
}

#[test]
fn every_format_ends_with_one_newline() {
    for (name, report) in fixtures() {
        for format in [
            Format::Human,
            Format::Json,
            Format::Junit,
            Format::Github,
            Format::Html,
        ] {
            let out = render(&report, format, &PLAIN);
            assert!(
                out.ends_with('\n') && !out.ends_with("\n\n"),
                "{format:?} of {name} must end with exactly one newline"
            );
        }
    }
}

#[test]
fn colour_changes_nothing_but_colour() {
    for (name, report) in fixtures() {
        let coloured = human::render(&report, &COLOR);
        assert!(coloured.contains("\u{1b}["), "{name}: no colour at all");
        assert_eq!(
            sanitize(&coloured),
            human::render(&report, &PLAIN),
            "{name}: text differs with colour on"
        );
        assert!(
            !human::render(&report, &PLAIN).contains('\u{1b}'),
            "{name}: escape codes with colour off"
        );
    }
}

#[test]
fn human_report_ends_with_the_counts_line() {
    let counts_line =
        regex::Regex::new(r"^(\d+) passed, (\d+) failed, (\d+) errors?, (\d+) skipped$").unwrap();
    for (name, report) in fixtures() {
        let out = human::render(&report, &PLAIN);
        let last = out.lines().last().unwrap();
        assert!(counts_line.is_match(last), "{name}: last line is {last:?}");
        assert_eq!(last, Counts::of(&report).line());
    }
    assert_eq!(
        Counts::of(&mixed()).line(),
        "4 passed, 2 failed, 1 error, 1 skipped"
    );
}

#[test]
fn json_round_trips() {
    for (name, report) in fixtures() {
        let rendered = json::render(&report);
        let parsed: RunReport = serde_json::from_str(&rendered).unwrap();
        assert_eq!(json::render(&parsed), rendered, "{name}");
    }
}

#[test]
fn junit_is_valid_and_counts_match() {
    for (name, report) in fixtures() {
        let xml = junit::render(&report);
        let parsed = quick_junit::Report::deserialize_from_str(&xml)
            .unwrap_or_else(|e| panic!("{name}: invalid JUnit: {e}"));
        let counts = Counts::of(&report);
        let problem_cases = usize::from(report.problem.is_some());
        assert_eq!(parsed.tests, counts.total() + problem_cases, "{name}");
        assert_eq!(
            parsed.failures,
            counts.failed
                + usize::from(report.problem.as_ref().is_some_and(|p| matches!(
                    p.kind,
                    crate::outcome::ProblemKind::ServiceBuild
                        | crate::outcome::ProblemKind::ServiceStart
                ))),
            "{name}"
        );
        for suite in &parsed.test_suites {
            assert!(
                suite
                    .properties
                    .iter()
                    .any(|p| p.name.as_str() == "seed" && p.value.as_str() == "1234"),
                "{name}: suite {} has no seed",
                suite.name.as_str()
            );
        }
    }
}

#[test]
fn junit_failure_carries_the_teaching_detail() {
    let xml = junit::render(&mixed());
    for needle in [
        "$ curl -i -X POST",
        "HTTP 422 Unprocessable Content",
        "expected: 201 Created",
        "actual: 422 Unprocessable Content",
        "hint: The product the grader sent is valid",
        "spec: RFC 9110 §15.3.2",
        "acquiring connection (5 of 5 in use)",
    ] {
        assert!(xml.contains(needle), "JUnit lacks {needle:?}");
    }
}

/// A hostile service: its body, headers, logs and the messages quoting them try to break out of
/// the Markdown and to issue workflow commands.
fn hostile() -> RunReport {
    let mut report = mixed();
    let evil = "::set-output name=x::y | <script>alert(1)</script> `code` *bold* [link](http://x) @org/team";
    let check = &mut report.checks[1];
    check.message = Some(format!("answered {evil}"));
    check.title = format!("title {evil}");
    let detail = check.detail.as_mut().unwrap();
    detail.actual = evil.to_string();
    detail.evidence = vec![format!("line one\n::error::injected\n{evil}")];
    detail.service_log_tail = vec![
        "::add-mask::secret".into(),
        "  ::stop-commands::token".into(),
        "```".into(),
        "</details><img src=x onerror=alert(1)>".into(),
    ];
    let response = detail.exchanges[0].response.as_mut().unwrap();
    response.body = "````\n::warning::body\n</pre>".into();
    response.body_bytes = response.body.len() as u64;
    response
        .headers
        .push(("location".into(), "::debug::header".into()));
    report
}

/// The lines of a Markdown document that are not inside a fenced code block.
fn outside_code_blocks(md: &str) -> String {
    let mut out = String::new();
    let mut fence: Option<usize> = None;
    for line in md.lines() {
        let ticks = line.chars().take_while(|&c| c == '`').count();
        match fence {
            None if ticks >= 3 => fence = Some(ticks),
            Some(open) if ticks >= open && line.trim_end().len() == ticks => fence = None,
            None => {
                out.push_str(line);
                out.push('\n');
            }
            Some(_) => {}
        }
    }
    assert!(fence.is_none(), "unclosed code block");
    out
}

#[test]
fn github_summary_escapes_learner_text() {
    let md = github::render(&hostile());
    for line in md.lines() {
        assert!(
            !line.trim_start().starts_with("::"),
            "workflow command survived: {line:?}"
        );
    }
    // Outside fenced code blocks (where text is literal), no learner HTML survives.
    let outside = outside_code_blocks(&md);
    assert!(
        !outside.contains("<script"),
        "raw HTML survived:\n{outside}"
    );
    assert!(!outside.contains("<img"), "raw HTML survived:\n{outside}");
    assert!(!outside.contains("</pre>"), "raw HTML survived:\n{outside}");
    assert_eq!(
        outside.matches("<details>").count(),
        outside.matches("</details>").count(),
        "details opened or closed by learner text"
    );
    // Every table row keeps its column count: no `|` from learner text.
    for line in md.lines().filter(|l| l.starts_with("| ")) {
        let cells = line.matches('|').count();
        assert!(cells == 5 || cells == 6, "table row broken: {line:?}");
    }
    // Fences are longer than any backtick run inside them: the 4-backtick body can't close them.
    assert!(md.contains("`````http\n"), "fence not lengthened:\n{md}");
    insta::assert_snapshot!(md);
}

#[test]
fn human_report_strips_terminal_escapes_from_learner_text() {
    let mut report = mixed();
    report.checks[5].detail.as_mut().unwrap().service_log_tail =
        vec!["\u{1b}[31mERROR\u{1b}[0m boom\u{7}".into()];
    let out = human::render(&report, &PLAIN);
    assert!(out.contains("│ ERROR boom\u{fffd}"), "{out}");
    assert!(!out.contains('\u{1b}'));
}

fn response(content_type: &str, body: &str, body_bytes: u64, truncated: bool) -> RecordedResponse {
    RecordedResponse {
        status: 200,
        headers: vec![("content-type".into(), content_type.into())],
        body: body.into(),
        body_bytes,
        body_truncated: truncated,
    }
}

#[test]
fn compact_json_bodies_are_reindented_in_order() {
    let body = r#"{"z":1,"a":[],"b":{"c":"x,{y}:\"q\""},"d":[1,2]}"#;
    let excerpt = body_excerpt(
        &response("application/json", body, body.len() as u64, false),
        false,
    );
    assert_eq!(
        excerpt.text,
        "{\n  \"z\": 1,\n  \"a\": [],\n  \"b\": {\n    \"c\": \"x,{y}:\\\"q\\\"\"\n  },\n  \"d\": [\n    1,\n    2\n  ]\n}"
    );
    assert_eq!(excerpt.more_bytes, 0);
}

#[test]
fn long_bodies_are_cut_with_a_byte_count() {
    let body: String = (0..100).map(|i| format!("line {i}\n")).collect();
    let excerpt = body_excerpt(
        &response("text/plain", &body, body.len() as u64, false),
        false,
    );
    assert_eq!(excerpt.text.lines().count(), 20);
    let shown: usize = (0..20).map(|i| format!("line {i}\n").len()).sum();
    assert_eq!(excerpt.more_bytes, (body.len() - shown) as u64);

    let full = body_excerpt(
        &response("text/plain", &body, body.len() as u64, false),
        true,
    );
    assert_eq!(full.more_bytes, 0);

    let one_line = "x".repeat(5000);
    let excerpt = body_excerpt(&response("text/plain", &one_line, 9000, true), false);
    assert_eq!(excerpt.text.len(), 2000);
    assert_eq!(excerpt.more_bytes, 7000);
}

#[test]
fn every_state_is_covered_by_the_fixtures() {
    let all: Vec<Status> = fixtures()
        .iter()
        .flat_map(|(_, r)| r.checks.iter().map(|c| c.status))
        .collect();
    for status in [Status::Pass, Status::Fail, Status::Error, Status::Skip] {
        assert!(all.contains(&status), "no fixture has a {status:?} check");
    }
}

/// The example in docs/REPORT.md is a valid report and uses no field the model doesn't have.
#[test]
fn report_md_example_matches_the_model() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/REPORT.md");
    let doc = std::fs::read_to_string(path).expect("docs/REPORT.md exists");
    let example = doc
        .split("## Example")
        .nth(1)
        .and_then(|s| s.split("```json\n").nth(1))
        .and_then(|s| s.split("\n```").next())
        .expect("docs/REPORT.md has a ```json block under ## Example");
    let written: serde_json::Value = serde_json::from_str(example).expect("example is JSON");
    let report: RunReport =
        serde_json::from_value(written.clone()).expect("example is a RunReport");
    assert_eq!(
        serde_json::to_value(&report).unwrap(),
        written,
        "the example in docs/REPORT.md has fields the model doesn't (or misses some)"
    );
    let counts = Counts::of(&report);
    assert_eq!(
        (counts.passed, counts.failed, counts.errors, counts.skipped),
        (1, 1, 1, 1)
    );
}

/// Each kind of run problem gets its own heading, and the grader's own failures say they are not
/// the learner's fault.
#[test]
fn every_problem_kind_is_explained() {
    use crate::outcome::{ProblemKind, RunStatus};
    for (kind, status, needle) in [
        (ProblemKind::ServiceBuild, RunStatus::Fail, "did not build"),
        (ProblemKind::ServiceStart, RunStatus::Fail, "did not start"),
        (ProblemKind::Infrastructure, RunStatus::Error, "fault"),
        (ProblemKind::Interrupted, RunStatus::Error, "interrupted"),
        (ProblemKind::TimedOut, RunStatus::Fail, "--timeout"),
    ] {
        let mut report = service_did_not_start();
        report.status = status;
        report.problem.as_mut().unwrap().kind = kind;
        let human = human::render(&report, &PLAIN);
        let top = human.lines().nth(2).unwrap();
        assert!(top.contains(needle), "{kind:?}: {top:?}");
        assert!(github::render(&report).contains(needle), "{kind:?}");
        assert!(junit::render(&report).contains("run/"), "{kind:?}");
    }
}

/// What a hostile service can put in a body, a header or a log line: workflow commands in every
/// spelling the GitHub runner reads, bidi overrides, characters XML forbids, escapes, controls.
const HOSTILE_PIECES: &[&str] = &[
    "::error title=grader::all checks passed",
    "  ::add-mask::secret",
    "\t::stop-commands::x",
    "::notice::",
    "##[error]fake",
    "x ##[group]y",
    "#",
    "[",
    ":",
    "\n",
    "\r\n",
    "\r",
    " ",
    "\u{202e}gnp.exe",
    "\u{2066}",
    "\u{200f}",
    "\u{fffe}",
    "\u{ffff}",
    "\u{fdd0}",
    "\u{1fffe}",
    "\u{1b}[31mred\u{1b}[0m",
    "\u{0}",
    "\u{7}",
    "\u{85}",
    "plain text",
    "é",
];

/// A random hostile string from the seeded stream.
fn hostile_text(rng: &mut rand_chacha::ChaCha8Rng) -> String {
    use rand::Rng;
    (0..rng.gen_range(1..12))
        .map(|_| HOSTILE_PIECES[rng.gen_range(0..HOSTILE_PIECES.len())])
        .collect()
}

/// No line a runner reads as a command, no bidi override, no control but the newline, nothing
/// XML forbids.
fn assert_defused(format: &str, text: &str) {
    if let Some(problem) = super::undefused(text) {
        panic!("{format}: {problem}");
    }
}

/// A property, checked on 300 seeded random hostile strings: whatever a service answers, no
/// format writes a workflow command, a bidi override or a character XML forbids, and the JSON
/// report still carries the text unchanged (its escaping is lossless).
#[test]
fn hostile_text_is_defused_in_every_format() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    for _ in 0..300 {
        let text = hostile_text(&mut rng);
        assert_defused("sanitize", &sanitize(&text));
        let mut report = mixed();
        let failed = report
            .checks
            .iter_mut()
            .find(|c| c.status == Status::Fail)
            .expect("the mixed fixture has a failure");
        failed.message = Some(text.clone());
        let detail = failed.detail.as_mut().expect("a failure has detail");
        detail.actual = text.clone();
        if let Some(resp) = detail
            .exchanges
            .iter_mut()
            .find_map(|e| e.response.as_mut())
        {
            resp.body = text.clone();
            resp.body_bytes = text.len() as u64;
        }
        assert_defused("human", &human::render(&report, &VERBOSE));
        assert_defused("github", &github::render(&report));
        assert_defused("junit", &junit::render(&report));
        let page = html::render(&report);
        assert_defused("html", &page);
        assert_html_is_ours("html", &page);
        let json_text = json::render(&report);
        assert_defused("json", &json_text);
        let back: serde_json::Value = serde_json::from_str(&json_text).unwrap();
        let original = serde_json::to_value(&report).unwrap();
        assert_eq!(back, original, "the JSON report changed the text");
    }
}

#[test]
fn html_mixed() {
    insta::assert_snapshot!(html::render(&mixed()));
}

#[test]
fn html_service_did_not_start() {
    insta::assert_snapshot!(html::render(&service_did_not_start()));
}

#[test]
fn html_all_pass() {
    insta::assert_snapshot!(html::render(&all_pass()));
}

#[test]
fn html_bearer_token() {
    insta::assert_snapshot!(html::render(&bearer_token()));
}

/// Every `<` of `page` opens or closes one of [`html::ELEMENTS`], no tag has an event handler, and
/// every container the report opens is closed as often as it is opened.
fn assert_html_is_ours(name: &str, page: &str) {
    let body = page
        .split_once("</style>")
        .map(|(_, b)| b)
        .expect("the page has its style sheet");
    let tag = regex::Regex::new(r"^<(/?)([a-z][a-z0-9]*)((?:\s[^<>]*)?)>").unwrap();
    let handler = regex::Regex::new(r"(?i)\son[a-z]+\s*=").unwrap();
    for (i, _) in page.match_indices('<') {
        let rest = &page[i..];
        if rest.starts_with("<!DOCTYPE html>") || rest.starts_with("</style>") {
            continue;
        }
        if page[..i].contains("<style>") && !page[..i].contains("</style>") {
            continue; // inside our own style sheet
        }
        let m = tag.captures(rest).unwrap_or_else(|| {
            panic!(
                "{name}: a `<` that is no tag: {:?}",
                &rest[..rest.len().min(60)]
            )
        });
        assert!(
            html::ELEMENTS.contains(&&m[2]),
            "{name}: element <{}> is not the report's",
            &m[2]
        );
        assert!(
            !handler.is_match(&m[3]),
            "{name}: event handler in {:?}",
            &m[0]
        );
    }
    for element in ["details", "pre", "section", "li", "dl", "code", "span", "p"] {
        assert_eq!(
            body.matches(&format!("<{element}>")).count()
                + body.matches(&format!("<{element} ")).count(),
            body.matches(&format!("</{element}>")).count(),
            "{name}: <{element}> opened and closed unevenly"
        );
    }
    assert_eq!(page.matches("<style>").count(), 1, "{name}");
    assert!(!page.contains("<script"), "{name}: a script element");
}

/// A hostile service can't add markup, script, event handlers or bidi reordering to the page:
/// its text shows literally.
#[test]
fn html_escapes_hostile_text() {
    let page = html::render(&hostile_html());
    assert_html_is_ours("hostile", &page);
    assert_defused("hostile", &page);
    for shown in [
        "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;",
        "&lt;img src=x onerror=alert(1)&gt;",
        "&quot; onmouseover=&quot;alert(1)&quot; x=&quot;",
        "&#39; autofocus onfocus=&#39;alert(1)",
        "&amp;lt;b&amp;gt;already escaped",
        "&lt;U+202E&gt;gnp.exe&lt;U+2066&gt;x&lt;U+200F&gt;",
    ] {
        assert!(page.contains(shown), "the page lacks {shown:?}");
    }
    assert!(!page.contains('\u{1b}'), "an escape sequence survived");
    insta::assert_snapshot!(page);
}

/// The page loads nothing and runs nothing: a CSP forbids it, and it has no URL to fetch
/// (no `src`, `href` or `url(`).
#[test]
fn html_is_self_contained() {
    for (name, report) in fixtures() {
        let page = html::render(&report);
        assert!(
            page.contains(&format!(
                "<meta http-equiv=\"Content-Security-Policy\" content=\"{}\">",
                html::CSP
            )),
            "{name}"
        );
        assert!(html::CSP.starts_with("default-src 'none';"));
        for needle in [" src=", " href=", "url(", "@import", "<script", "<link"] {
            assert!(!page.contains(needle), "{name}: {needle:?} in the page");
        }
    }
}
