//! Report writers: turn one [`RunReport`] into text for a person, a CI system or a tool.
//!
//! Every writer only reads the result model in [`crate::outcome`]; none of them runs checks,
//! computes scores or decides exit codes. Each writer is a pure function from a report to a
//! `String`, so the output is deterministic and every state is snapshot-tested
//! (`report/snapshots/`).
//!
//! | format | module | for |
//! |---|---|---|
//! | [`Format::Human`] | [`human`] | the learner at a terminal |
//! | [`Format::Json`] | [`json`] | tools and CI: the versioned contract in `docs/REPORT.md` |
//! | [`Format::Junit`] | [`junit`] | CI test-report viewers (GitLab, Jenkins, GitHub test reporters) |
//! | [`Format::Github`] | [`github`] | `$GITHUB_STEP_SUMMARY` (Markdown) |
//! | [`Format::Html`] | [`html`] | one self-contained page to open in a browser or attach to CI |

use crate::outcome::{RecordedResponse, RunReport, Status};

pub mod github;
pub mod html;
pub mod human;
pub mod json;
pub mod junit;

/// Example reports in every state, for the snapshot tests and the HTML report's browser test.
#[doc(hidden)]
pub mod fixtures;
#[cfg(test)]
mod tests;

/// Output format of a report, as chosen on the command line (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Format {
    /// Readable report for a terminal: every check, every failure with its curl command, a
    /// score per skill area.
    #[default]
    Human,
    /// The versioned JSON report (see docs/REPORT.md), for tools and CI.
    Json,
    /// JUnit XML: one testsuite per exercise, one testcase per check.
    Junit,
    /// Markdown for a GitHub Actions job summary ($GITHUB_STEP_SUMMARY).
    Github,
    /// One self-contained HTML page (no script, nothing external): open it in a browser.
    Html,
}

/// Renders `report` in `format`. `style` only affects [`Format::Human`].
///
/// The result always ends with a newline. Writing it somewhere (stdout through `anstream`, a
/// file) is the caller's job.
pub fn render(report: &RunReport, format: Format, style: &human::HumanStyle) -> String {
    match format {
        Format::Human => human::render(report, style),
        Format::Json => json::render(report),
        Format::Junit => junit::render(report),
        Format::Github => github::render(report),
        Format::Html => html::render(report),
    }
}

/// How many checks ended in each [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Checks with status `pass`.
    pub passed: usize,
    /// Checks with status `fail`.
    pub failed: usize,
    /// Checks with status `error`.
    pub errors: usize,
    /// Checks with status `skip`.
    pub skipped: usize,
}

impl Counts {
    /// Counts the checks of `report` by status.
    pub fn of(report: &RunReport) -> Self {
        let mut counts = Counts::default();
        for check in &report.checks {
            match check.status {
                Status::Pass => counts.passed += 1,
                Status::Fail => counts.failed += 1,
                Status::Error => counts.errors += 1,
                Status::Skip => counts.skipped += 1,
            }
        }
        counts
    }

    /// Number of checks in total.
    pub fn total(&self) -> usize {
        self.passed + self.failed + self.errors + self.skipped
    }

    /// The counts line tools read at the end of the human report, e.g.
    /// `14 passed, 2 failed, 0 errors, 0 skipped`. It always matches
    /// `^(\d+) passed, (\d+) failed, (\d+) errors?, (\d+) skipped$`.
    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} {}, {} skipped",
            self.passed,
            self.failed,
            self.errors,
            if self.errors == 1 { "error" } else { "errors" },
            self.skipped
        )
    }
}

/// Exercise ids (with titles) in report order, then any exercise that only appears in checks.
pub(crate) fn exercise_order(report: &RunReport) -> Vec<(&str, Option<&str>)> {
    let mut order: Vec<(&str, Option<&str>)> = report
        .exercises
        .iter()
        .map(|e| (e.id.as_str(), Some(e.title.as_str())))
        .collect();
    for check in &report.checks {
        if !order.iter().any(|(id, _)| *id == check.exercise) {
            order.push((check.exercise.as_str(), None));
        }
    }
    order
}

/// Response headers worth showing by default: the ones HTTP checks are about. The human report
/// shows every header in verbose mode.
pub(crate) const HEADERS_THAT_MATTER: &[&str] = &[
    "content-type",
    "location",
    "allow",
    "content-length",
    "etag",
    "cache-control",
    "retry-after",
    "www-authenticate",
    "link",
    "vary",
    "last-modified",
];

/// True when the response header `name` is shown in a non-verbose report.
/// The message shared by every check of a group when all of them (several) were skipped for the
/// same reason, so reports can say it once.
pub(crate) fn common_skip_message<'a>(
    checks: &[&'a crate::outcome::CheckResult],
) -> Option<&'a str> {
    let first = checks.first()?.message.as_deref()?;
    let shared = checks.len() > 1
        && checks
            .iter()
            .all(|c| c.status == Status::Skip && c.message.as_deref() == Some(first));
    shared.then_some(first)
}

pub(crate) fn header_matters(name: &str) -> bool {
    HEADERS_THAT_MATTER
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// The reason phrase of a status code (RFC 9110 §15), or `""` for a code it doesn't name.
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The status line of a response as shown in reports: `HTTP 422 Unprocessable Content`.
pub(crate) fn status_line(status: u16) -> String {
    match reason_phrase(status) {
        "" => format!("HTTP {status}"),
        reason => format!("HTTP {status} {reason}"),
    }
}

/// `1 pt`, `2 pts`.
pub(crate) fn points(n: u32) -> String {
    if n == 1 {
        "1 pt".to_string()
    } else {
        format!("{n} pts")
    }
}

/// `312ms`, `8.4s`, `1m 41s`.
pub(crate) fn duration(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let secs = ms / 1000;
        format!("{}m {:02}s", secs / 60, secs % 60)
    }
}

/// Percent with one decimal, as every report prints it: `41.7%`.
pub(crate) fn percent(p: f64) -> String {
    format!("{p:.1}%")
}

/// Makes learner-controlled text safe to print, in every human-facing format (terminal, JUnit,
/// GitHub): removes ANSI escape sequences (a service log in colour), turns tabs into spaces and
/// other control characters, and characters XML forbids (U+FFFE, U+FFFF, the other
/// noncharacters), into `�`; shows bidirectional overrides as `<U+202E>` instead of letting them
/// reorder the line; and defuses CI workflow commands a hostile body could smuggle into a log: a
/// line starting (after blanks) with `::` and any `##[` get a zero-width space, so they read the
/// same but a GitHub runner no longer acts on them. Newlines are kept.
pub(crate) fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI (`ESC [ params final`) or a two-character escape: drop it.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\n' => out.push('\n'),
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\t' => out.push_str("    "),
            c if is_bidi_control(c) => out.push_str(&format!("<U+{:04X}>", c as u32)),
            c if c.is_control() || is_noncharacter(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    defuse_workflow_commands(&out)
}

/// What in `text` a reader would act on instead of showing it, if anything: a line a GitHub
/// runner reads as a workflow command (`::` after blanks, or `##[` anywhere), a bidi control, a
/// control character other than the newline, or a character XML forbids. Every format's output
/// must give `None` whatever a service sent (the report tests and the fuzz targets check it).
pub fn undefused(text: &str) -> Option<String> {
    for line in text.lines() {
        if line.trim_start().starts_with("::") {
            return Some(format!("a line starts with a workflow command: {line:?}"));
        }
        if line.contains("##[") {
            return Some(format!("`##[` in {line:?}"));
        }
    }
    text.chars().find_map(|c| {
        let what = if is_bidi_control(c) {
            "bidi control"
        } else if c != '\n' && c.is_control() {
            "control character"
        } else if matches!(c, '\u{fffe}' | '\u{ffff}') {
            "character XML forbids"
        } else {
            return None;
        };
        Some(format!("{what} U+{:04X}", c as u32))
    })
}

/// Characters that reorder the text around them (Unicode bidi embeddings, overrides, isolates and
/// marks): "Trojan Source" in a report.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Unicode noncharacters (U+FDD0 to U+FDEF, and the last two code points of every plane): XML
/// 1.0 forbids U+FFFE and U+FFFF outright, and none of them is text.
pub(crate) fn is_noncharacter(c: char) -> bool {
    let n = c as u32;
    (0xfdd0..=0xfdef).contains(&n) || (n & 0xfffe) == 0xfffe
}

/// A zero-width space after the `::` that starts a line (after blanks) and inside every `##[`:
/// a GitHub Actions runner reads those as workflow commands (`::add-mask::`, `::error`,
/// `::stop-commands::`, the legacy `##[error]`) in any log line it prints.
pub(crate) fn defuse_workflow_commands(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let line = if trimmed.starts_with("::") {
            let blanks = line.len() - trimmed.len();
            format!("{}:\u{200b}{}", &line[..blanks], &trimmed[1..])
        } else {
            line.to_string()
        };
        out.push_str(&line.replace("##[", "##\u{200b}["));
    }
    out
}

/// The entity for a character with a meaning in HTML text or a quoted attribute value.
pub(crate) fn html_entity(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '"' => Some("&quot;"),
        '\'' => Some("&#39;"),
        _ => None,
    }
}

/// How a response body is shown: the text, and how many bytes of it are not shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BodyExcerpt {
    /// Sanitised text to show; empty for an empty body.
    pub text: String,
    /// Bytes of the body that are not in `text` (cut by the grader or by the report).
    pub more_bytes: u64,
}

/// Lines of a body shown by default.
pub(crate) const BODY_MAX_LINES: usize = 20;
/// Characters of a body shown by default.
pub(crate) const BODY_MAX_CHARS: usize = 2000;

/// The part of a response body a report shows.
///
/// A compact JSON body is re-indented (keys keep their order) when it then fits the limits.
/// Otherwise the body is cut to [`BODY_MAX_LINES`] lines and [`BODY_MAX_CHARS`] characters,
/// unless `full` is set.
pub(crate) fn body_excerpt(response: &RecordedResponse, full: bool) -> BodyExcerpt {
    let body = response.body.as_str();
    let not_recorded = response.body_bytes.saturating_sub(body.len() as u64);
    let is_json = response
        .headers
        .iter()
        .any(|(name, value)| name.eq_ignore_ascii_case("content-type") && value.contains("json"));
    if is_json
        && !response.body_truncated
        && !body.trim().is_empty()
        && serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok()
    {
        let pretty = reindent_json(body);
        if full
            || (pretty.lines().count() <= BODY_MAX_LINES
                && pretty.chars().count() <= BODY_MAX_CHARS)
        {
            return BodyExcerpt {
                text: sanitize(&pretty),
                more_bytes: not_recorded,
            };
        }
    }
    let shown = if full {
        body
    } else {
        cut(body, BODY_MAX_LINES, BODY_MAX_CHARS)
    };
    let shown_trimmed = shown.trim_end_matches(['\n', '\r']);
    BodyExcerpt {
        text: sanitize(shown_trimmed),
        more_bytes: not_recorded + (body.len() - shown.len()) as u64,
    }
}

/// The longest prefix of `text` with at most `max_lines` lines and `max_chars` characters.
fn cut(text: &str, max_lines: usize, max_chars: usize) -> &str {
    let mut end = text.len();
    if let Some((i, _)) = text.match_indices('\n').nth(max_lines.saturating_sub(1)) {
        end = i + 1;
    }
    if let Some((i, _)) = text.char_indices().nth(max_chars) {
        end = end.min(i);
    }
    &text[..end]
}

/// Re-indents valid JSON with two spaces, keeping keys, numbers and strings exactly as sent.
fn reindent_json(json: &str) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    }
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut chars = json.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    out.push(c);
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
            }
            '{' | '[' => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// Splits `text` into lines of at most `width` characters at spaces (a longer word gets a line of
/// its own). Existing line breaks are kept.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split(' ').filter(|w| !w.is_empty()) {
            let needed = if line.is_empty() { 0 } else { 1 } + word.chars().count();
            if !line.is_empty() && line.chars().count() + needed > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
}
