//! One self-contained HTML page: the report to open in a browser, attach to a CI run or send to a
//! mentor.
//!
//! Layout, top to bottom: a header (grader version, service, runtime, seed, the replay command),
//! the run problem if any, the score and verdict, a bar per skill area, then every check grouped
//! by exercise. A failed or errored check is a `<details>` block, open by default, holding what
//! the human report shows: the message, why, each exchange (curl command, decoded token,
//! response), expected and actual, evidence, hint, spec references and the service's log.
//!
//! The page needs nothing but itself: inline CSS, no JavaScript, no external resource, and a
//! `Content-Security-Policy` that forbids loading or running anything else. Everything the
//! service controls (bodies, headers, status text, log lines, messages quoting them) goes through
//! [`escape`]: it is [`sanitize`]d like in every other report, then every character with a
//! meaning in HTML becomes an entity, so it can only ever be text.

use super::human::{
    check_points, log_label, more, next_step, problem_heading, run_status_text, status_tag,
    ERROR_NOTE,
};
use super::{
    body_excerpt, duration, exercise_order, header_matters, percent, points, sanitize, status_line,
    Counts,
};
use crate::outcome::{
    CheckResult, Exchange, FailureDetail, ProblemKind, RunProblem, RunReport, Status,
};

/// Forbids everything but the page's own inline styles: no script, no image, no font, no
/// request of any kind, no form, no frame, no `<base>`.
pub(crate) const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; \
     script-src 'none'; connect-src 'none'; font-src 'none'; form-action 'none'; \
     frame-ancestors 'none'; base-uri 'none'";

pub(crate) const STYLE: &str = include_str!("html.css");

/// Every element the page is made of. Tests check a page (and the DOM a browser builds from it)
/// has no other: anything else would have come from the service's text.
#[doc(hidden)]
pub const ELEMENTS: &[&str] = &[
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "main",
    "header",
    "h1",
    "h2",
    "h3",
    "h4",
    "dl",
    "dt",
    "dd",
    "div",
    "p",
    "span",
    "code",
    "pre",
    "section",
    "ul",
    "li",
    "details",
    "summary",
    "figure",
    "figcaption",
];

/// Renders the page, ending with a newline.
pub fn render(report: &RunReport) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let title = format!(
        "grader: {}/{} ({}) — {}",
        report.score.earned,
        points(report.score.possible),
        percent(report.score.percent),
        report.status.as_str()
    );
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str(&format!(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
    ));
    h.push_str("<meta name=\"referrer\" content=\"no-referrer\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str(&format!("<title>{}</title>\n", escape(&title)));
    h.push_str(&format!("<style>\n{STYLE}</style>\n</head>\n"));
    h.push_str(&format!(
        "<body class=\"run-{}\">\n<main>\n",
        report.status.as_str()
    ));
    header(&mut h, report);
    if let Some(problem) = &report.problem {
        run_problem(&mut h, problem);
    }
    score(&mut h, report);
    skills(&mut h, report);
    checks(&mut h, report);
    h.push_str("</main>\n</body>\n</html>\n");
    // Whatever echoes this page to a CI log: no line of it is a workflow command.
    super::defuse_workflow_commands(&h)
}

/// Learner-controlled text as HTML text or attribute value: [`sanitize`]d (no controls, no bidi
/// overrides, no ANSI escapes), then `& < > " '` as entities.
pub(crate) fn escape(text: &str) -> String {
    let text = sanitize(text);
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match super::html_entity(c) {
            Some(entity) => out.push_str(entity),
            None => out.push(c),
        }
    }
    out
}

/// An `id` attribute value from a check or exercise id: letters, digits, `-`, `_` and `.` kept,
/// anything else (a `/`) as `-`.
fn anchor(prefix: &str, id: &str) -> String {
    let slug: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{prefix}-{slug}")
}

/// Status as a word and a symbol, so it reads without colour.
fn badge(status: Status) -> String {
    let symbol = match status {
        Status::Pass => "✓",
        Status::Fail => "✗",
        Status::Error => "!",
        Status::Skip => "–",
    };
    format!(
        "<span class=\"badge {}\"><span aria-hidden=\"true\">{symbol}</span> {}</span>",
        status.as_str(),
        status_tag(status)
    )
}

fn header(h: &mut String, report: &RunReport) {
    let rt = &report.runtime;
    h.push_str("<header id=\"run\">\n<h1>grader report</h1>\n<dl class=\"meta\">\n");
    let mut row = |label: &str, value: String| {
        h.push_str(&format!("<div><dt>{label}</dt><dd>{value}</dd></div>\n"));
    };
    row("grader", escape(&report.grader_version));
    if !rt.service_dir.is_empty() {
        row(
            "service",
            format!("<code>{}</code>", escape(&rt.service_dir)),
        );
    }
    let runtime = if rt.service_url.is_empty() {
        escape(&rt.kind)
    } else {
        format!(
            "{} at <code>{}</code>",
            escape(&rt.kind),
            escape(&rt.service_url)
        )
    };
    row("runtime", runtime);
    row("seed", format!("<code>{}</code>", report.seed));
    row("started", escape(&report.started_at));
    row("time", duration(report.duration_ms));
    if !rt.artifacts_dir.is_empty() {
        row(
            "artifacts",
            format!("<code>{}</code>", escape(&rt.artifacts_dir)),
        );
    }
    h.push_str("</dl>\n");
    h.push_str(&format!(
        "<p class=\"replay\">Replay this run with the same data: <code id=\"replay\">{}</code> \
         <span class=\"note\">(replays the data, not thread timing)</span></p>\n</header>\n",
        escape(&report.replay)
    ));
}

fn score(h: &mut String, report: &RunReport) {
    let counts = Counts::of(report);
    h.push_str(&format!(
        "<section id=\"score\" class=\"verdict {}\" aria-label=\"score\">\n",
        report.status.as_str()
    ));
    h.push_str(&format!(
        "<p class=\"points\"><span class=\"big\">{}</span>/{} <span class=\"pct\">{}</span></p>\n",
        report.score.earned,
        points(report.score.possible),
        percent(report.score.percent)
    ));
    h.push_str(&format!(
        "<p class=\"status\">{}</p>\n<p class=\"counts\">{}</p>\n",
        escape(&run_status_text(report)),
        counts.line()
    ));
    if let Some(next) = next_step(report) {
        h.push_str(&format!("<p class=\"next\">Next: {}</p>\n", escape(&next)));
    }
    h.push_str("</section>\n");
}

fn run_problem(h: &mut String, problem: &RunProblem) {
    let class = match problem.kind {
        ProblemKind::ServiceBuild | ProblemKind::ServiceStart | ProblemKind::TimedOut => "fail",
        ProblemKind::Infrastructure | ProblemKind::Interrupted => "error",
    };
    h.push_str(&format!(
        "<section id=\"problem\" class=\"problem {class}\" role=\"alert\">\n<h2>{}</h2>\n",
        problem_heading(problem.kind)
    ));
    let mut facts = vec![("what", escape(&problem.message), "")];
    if let Some(fix) = &problem.fix {
        facts.push(("fix", escape(fix), ""));
    }
    facts_list(h, &facts);
    log_block(h, "log", &problem.log_tail);
    h.push_str("</section>\n");
}

/// Band of a percentage, as a class: full, at least half, less.
fn band(percent: f64) -> &'static str {
    if percent >= 100.0 {
        "high"
    } else if percent >= 50.0 {
        "mid"
    } else {
        "low"
    }
}

fn skills(h: &mut String, report: &RunReport) {
    if report.skills.is_empty() {
        return;
    }
    h.push_str("<section id=\"skills\">\n<h2>Skills</h2>\n<ul class=\"skills\">\n");
    for skill in &report.skills {
        let width = if skill.percent.is_finite() {
            skill.percent.clamp(0.0, 100.0)
        } else {
            0.0
        };
        h.push_str(&format!(
            "<li id=\"{}\"><span class=\"skill\">{} <code>{}</code></span>\
             <span class=\"bar\" aria-hidden=\"true\"><span class=\"fill {}\" style=\"width: {width:.1}%\"></span></span>\
             <span class=\"pct\">{}</span><span class=\"of\">{}/{} pts · {}/{} checks</span></li>\n",
            anchor("skill", &skill.id),
            escape(&skill.title),
            escape(&skill.id),
            band(skill.percent),
            percent(skill.percent),
            skill.earned,
            skill.possible,
            skill.passed,
            skill.total
        ));
    }
    h.push_str("</ul>\n</section>\n");
}

fn checks(h: &mut String, report: &RunReport) {
    h.push_str("<section id=\"checks\">\n<h2>Checks</h2>\n");
    if report.checks.is_empty() {
        h.push_str("<p>No checks ran.</p>\n</section>\n");
        return;
    }
    for (exercise, title) in exercise_order(report) {
        h.push_str(&format!(
            "<section class=\"exercise\" id=\"{}\">\n<h3><code>{}</code>",
            anchor("exercise", exercise),
            escape(exercise)
        ));
        if let Some(title) = title {
            h.push_str(&format!(" {}", escape(title)));
        }
        if let Some(score) = report.exercises.iter().find(|e| e.id == exercise) {
            h.push_str(&format!(
                " <span class=\"of\">({}/{})</span>",
                score.earned,
                points(score.possible)
            ));
        }
        h.push_str("</h3>\n");
        let checks: Vec<&CheckResult> = report
            .checks
            .iter()
            .filter(|c| c.exercise == exercise)
            .collect();
        let shared_skip = super::common_skip_message(&checks);
        if let Some(message) = shared_skip {
            h.push_str(&format!(
                "<p class=\"note\">All {} checks skipped: {}</p>\n",
                checks.len(),
                escape(message)
            ));
        }
        h.push_str("<ul class=\"checks\">\n");
        for check in checks {
            check_item(h, check, shared_skip.is_some());
        }
        h.push_str("</ul>\n</section>\n");
    }
    h.push_str("</section>\n");
}

/// The row of a check: badge, id, title, points.
fn check_row(check: &CheckResult) -> String {
    let task = check
        .task
        .map(|t| format!("<span class=\"task\">task {t}</span>"))
        .unwrap_or_default();
    format!(
        "{} <code class=\"id\">{}</code> <span class=\"title\">{}</span> {task}<span class=\"of\">{}</span>",
        badge(check.status),
        escape(&check.id),
        escape(&check.title),
        check_points(check)
    )
}

fn check_item(h: &mut String, check: &CheckResult, skip_reason_shown: bool) {
    let status = check.status.as_str();
    let id = anchor("check", &check.id);
    if !matches!(check.status, Status::Fail | Status::Error) {
        h.push_str(&format!(
            "<li class=\"check {status}\" id=\"{id}\"><div class=\"row\">{}</div>",
            check_row(check)
        ));
        for measured in &check.measurements {
            h.push_str(&format!("<p class=\"measured\">{}</p>", escape(measured)));
        }
        if let (Status::Skip, Some(message), false) =
            (check.status, &check.message, skip_reason_shown)
        {
            h.push_str(&format!("<p class=\"note\">{}</p>", escape(message)));
        }
        h.push_str("</li>\n");
        return;
    }
    h.push_str(&format!(
        "<li class=\"check {status}\" id=\"{id}\"><details open>\n<summary class=\"row\">{}</summary>\n<div class=\"detail\">\n",
        check_row(check)
    ));
    if let Some(message) = &check.message {
        h.push_str(&format!("<p class=\"message\">{}</p>\n", escape(message)));
    }
    if check.status == Status::Error {
        h.push_str(&format!("<p class=\"note\">{ERROR_NOTE}</p>\n"));
    }
    if let Some(detail) = &check.detail {
        failure_detail(h, detail);
    }
    h.push_str("</div>\n</details></li>\n");
}

/// A `<dl>` of labelled facts; `class` styles the value (`expected`, `actual`, `hint`).
fn facts_list(h: &mut String, facts: &[(&str, String, &str)]) {
    if facts.is_empty() {
        return;
    }
    h.push_str("<dl class=\"facts\">\n");
    for (label, value, class) in facts {
        let class = if class.is_empty() {
            String::new()
        } else {
            format!(" class=\"{class}\"")
        };
        h.push_str(&format!("<dt>{label}</dt><dd{class}>{value}</dd>\n"));
    }
    h.push_str("</dl>\n");
}

fn failure_detail(h: &mut String, detail: &FailureDetail) {
    let mut facts = Vec::new();
    if !detail.expected.is_empty() {
        facts.push(("expected", escape(&detail.expected), "expected"));
    }
    if !detail.actual.is_empty() {
        facts.push(("actual", escape(&detail.actual), "actual"));
    }
    for evidence in &detail.evidence {
        facts.push(("evidence", escape(evidence), "evidence"));
    }
    if !detail.why.is_empty() {
        facts.push(("why", escape(&detail.why), ""));
    }
    if !detail.hint.is_empty() {
        facts.push(("hint", escape(&detail.hint), "hint"));
    }
    if !detail.spec.is_empty() {
        let spec: Vec<String> = detail.spec.iter().map(|s| escape(s)).collect();
        facts.push(("spec", spec.join(", "), "spec"));
    }
    facts_list(h, &facts);
    let total = detail.exchanges.len();
    for (i, exchange) in detail.exchanges.iter().enumerate() {
        exchange_block(h, exchange, i + 1, total);
    }
    log_block(h, "service log", &detail.service_log_tail);
}

fn log_block(h: &mut String, what: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    h.push_str(&format!(
        "<figure class=\"log\"><figcaption>{}</figcaption><pre>{}</pre></figure>\n",
        log_label(what, lines.len()),
        escape(&lines.join("\n"))
    ));
}

fn exchange_block(h: &mut String, exchange: &Exchange, n: usize, total: usize) {
    h.push_str(&format!(
        "<section class=\"exchange\">\n<h4>Step {n} of {total}: {}</h4>\n",
        escape(&exchange.step)
    ));
    h.push_str(&format!(
        "<pre class=\"curl\" aria-label=\"request as a curl command\"><span class=\"prompt\" aria-hidden=\"true\">$ </span>{}</pre>\n",
        escape(&exchange.curl)
    ));
    if let Some(token) = &exchange.request.token {
        h.push_str(&format!(
            "<dl class=\"token\"><dt>token header</dt><dd><code>{}</code></dd><dt>token claims</dt><dd><code>{}</code></dd></dl>\n",
            escape(&token.header.to_string()),
            escape(&token.claims.to_string())
        ));
    }
    if let Some(response) = &exchange.response {
        h.push_str(&format!(
            "<div class=\"response\"><p class=\"status-line\">{}</p>\n",
            status_line(response.status)
        ));
        let (shown, hidden): (Vec<_>, Vec<_>) = response
            .headers
            .iter()
            .partition(|(name, _)| header_matters(name));
        let header_lines = |headers: &[&(String, String)]| -> String {
            headers
                .iter()
                .map(|(name, value)| {
                    format!(
                        "<span class=\"hname\">{}:</span> {}",
                        escape(name),
                        escape(value).replace('\n', " ")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        if !shown.is_empty() {
            h.push_str(&format!(
                "<pre class=\"headers\">{}</pre>\n",
                header_lines(&shown)
            ));
        }
        if !hidden.is_empty() {
            h.push_str(&format!(
                "<details class=\"more-headers\"><summary>{}</summary><pre class=\"headers\">{}</pre></details>\n",
                more(hidden.len() as u64, "header", "headers"),
                header_lines(&hidden)
            ));
        }
        let excerpt = body_excerpt(response, false);
        if !excerpt.text.is_empty() {
            h.push_str(&format!(
                "<pre class=\"body\">{}</pre>\n",
                escape(&excerpt.text)
            ));
        } else if excerpt.more_bytes == 0 {
            h.push_str("<p class=\"note\">(empty body)</p>\n");
        }
        if excerpt.more_bytes > 0 {
            h.push_str(&format!(
                "<p class=\"note\">({})</p>\n",
                more(excerpt.more_bytes, "byte", "bytes")
            ));
        }
        h.push_str("</div>\n");
    }
    match (&exchange.transport_error, &exchange.response) {
        (Some(error), _) => h.push_str(&format!(
            "<p class=\"transport\"><span aria-hidden=\"true\">✗</span> {}</p>\n",
            escape(error)
        )),
        (None, None) => h.push_str(
            "<p class=\"transport\"><span aria-hidden=\"true\">✗</span> no response</p>\n",
        ),
        (None, Some(_)) => {}
    }
    h.push_str("</section>\n");
}
