//! The report a learner reads at the terminal.
//!
//! Layout, top to bottom:
//!
//! 1. one header line (grader version, service, seed);
//! 2. the run problem, when the run as a whole went wrong (service did not build or start, ...);
//! 3. one line per check, grouped by exercise, with the one-line message under each check that
//!    did not pass;
//! 4. a detailed block per failed or errored check: what was sent (as a `curl` command), what came
//!    back, expected vs actual, evidence, hint, spec references and the service's log;
//! 5. a summary: a bar per skill area, score, status, seed and replay command, artifacts;
//! 6. the counts line (`3 passed, 2 failed, 1 error, 1 skipped`), always last and alone on its
//!    line, for tools that scrape the output.
//!
//! Colour is optional ([`HumanStyle::color`]); the text is identical with and without it.

use anstyle::{AnsiColor, Style};

use super::{
    body_excerpt, duration, exercise_order, header_matters, percent, points, sanitize, status_line,
    wrap, Counts,
};
use crate::outcome::{
    CheckResult, Exchange, FailureDetail, ProblemKind, RunProblem, RunReport, RunStatus, Status,
};

/// How the human report is drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HumanStyle {
    /// Emit ANSI colours. The CLI decides (terminal, `NO_COLOR`, `--color`) through `anstream`;
    /// tests use `false`.
    pub color: bool,
    /// Show every response header, whole bodies, durations and the timing breakdown.
    pub verbose: bool,
}

/// Width of rules and of wrapped prose.
const WIDTH: usize = 100;
/// Width of the right-aligned labels (`expected:`, `hint:`) in failure blocks and the summary.
const LABEL: usize = 9;
/// Cells of a skill bar.
const BAR: usize = 20;
/// Failures listed one line each under the first on the compact screen; the rest are counted.
const COMPACT_OTHERS: usize = 12;
/// Check lines longer than this don't pad titles to a common width.
const MAX_ALIGNED_LINE: usize = 130;

const PASS: Style = AnsiColor::Green.on_default().bold();
const FAIL: Style = AnsiColor::Red.on_default().bold();
const ERROR: Style = AnsiColor::Yellow.on_default().bold();
const SKIP: Style = Style::new().dimmed();
const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();
const GREEN: Style = AnsiColor::Green.on_default();
const RED: Style = AnsiColor::Red.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const CYAN: Style = AnsiColor::Cyan.on_default();

/// Renders the human report. Ends with the counts line and a newline.
pub fn render(report: &RunReport, style: &HumanStyle) -> String {
    let mut w = Writer::new(*style);
    header(&mut w, report);
    if let Some(problem) = &report.problem {
        w.blank();
        run_problem(&mut w, problem);
    }
    check_list(&mut w, report);
    for check in &report.checks {
        if matches!(check.status, Status::Fail | Status::Error) {
            w.blank();
            check_detail(&mut w, check);
        }
    }
    w.blank();
    summary(&mut w, report);
    w.blank();
    w.line(Counts::of(report).line());
    // The last word on what a CI runner reads: whatever layout put learner text at a line's start
    // (a message that begins with `::`, indented), no line of the report is a workflow command.
    super::defuse_workflow_commands(&w.out)
}

/// The screen `grader watch` redraws after each run: the run problem, or the first failure in
/// full and one line per other check that did not pass; then a bar per skill, the score and the
/// counts line. What passed is only counted: the learner is working on what did not.
pub fn render_compact(report: &RunReport, style: &HumanStyle) -> String {
    let mut w = Writer::new(*style);
    if let Some(problem) = &report.problem {
        run_problem(&mut w, problem);
        w.blank();
    }
    let not_passed: Vec<&CheckResult> = report
        .checks
        .iter()
        .filter(|c| matches!(c.status, Status::Fail | Status::Error))
        .collect();
    if let Some((first, others)) = not_passed.split_first() {
        check_detail(&mut w, first);
        w.rule("");
        if !others.is_empty() {
            w.blank();
            w.line(w.paint(BOLD, "also not passing"));
            let id_width = others.iter().map(|c| c.id.chars().count()).max();
            let id_width = id_width.unwrap_or(0);
            for check in others.iter().take(COMPACT_OTHERS) {
                let tag = format!("{:<5}", status_tag(check.status));
                let tag = w.paint(status_style(check.status), &tag);
                let message = check.message.as_deref().map(sanitize).unwrap_or_default();
                let message = one_line(&message, WIDTH.saturating_sub(id_width + 10));
                w.line(format!("  {tag}  {:<id_width$}  {message}", check.id));
            }
            if others.len() > COMPACT_OTHERS {
                let more = format!(
                    "… and {} more (`grader check` shows every one)",
                    others.len() - COMPACT_OTHERS
                );
                w.line(format!("  {}", w.paint(DIM, &more)));
            }
            w.blank();
        }
    }
    skill_bars(&mut w, report);
    score_line(&mut w, report);
    w.blank();
    w.line(Counts::of(report).line());
    super::defuse_workflow_commands(&w.out)
}

/// The detailed block of one failed or errored check, without colour: the teaching detail other
/// reports (JUnit) repeat. Starts with the check's title line, ends with a newline.
pub(crate) fn check_detail_plain(check: &CheckResult) -> String {
    let mut w = Writer::new(HumanStyle::default());
    check_detail_body(&mut w, check);
    super::defuse_workflow_commands(&w.out)
}

/// Accumulates lines, colouring only when asked.
struct Writer {
    out: String,
    style: HumanStyle,
}

impl Writer {
    fn new(style: HumanStyle) -> Self {
        Writer {
            out: String::new(),
            style,
        }
    }

    /// `text` in `style` (plain when colour is off).
    fn paint(&self, style: Style, text: &str) -> String {
        if self.style.color && style != Style::new() && !text.is_empty() {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_string()
        }
    }

    fn line(&mut self, text: impl AsRef<str>) {
        self.out.push_str(text.as_ref().trim_end());
        self.out.push('\n');
    }

    fn blank(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }

    fn rule(&mut self, title: &str) {
        let line = if title.is_empty() {
            "─".repeat(WIDTH)
        } else {
            format!(
                "── {title} {}",
                "─".repeat(WIDTH.saturating_sub(title.chars().count() + 4))
            )
        };
        let painted = self.paint(DIM, &line);
        self.line(painted);
    }

    /// `label:` right-aligned in the label column, then `value` wrapped (when `wrap_value`) with
    /// continuation lines aligned under it.
    fn labelled(&mut self, label: &str, value: &str, value_style: Style, wrap_value: bool) {
        let lines = if wrap_value {
            wrap(value, WIDTH - LABEL - 3)
        } else {
            value.lines().map(str::to_string).collect()
        };
        for (i, text) in lines.iter().enumerate() {
            let head = if i == 0 {
                self.paint(BOLD, &format!("{:>LABEL$}:", label))
            } else {
                " ".repeat(LABEL + 1)
            };
            let text = self.paint(value_style, text);
            self.line(format!("  {head} {text}"));
        }
    }
}

fn status_style(status: Status) -> Style {
    match status {
        Status::Pass => PASS,
        Status::Fail => FAIL,
        Status::Error => ERROR,
        Status::Skip => SKIP,
    }
}

pub(super) fn status_tag(status: Status) -> &'static str {
    match status {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Error => "ERROR",
        Status::Skip => "SKIP",
    }
}

fn header(w: &mut Writer, report: &RunReport) {
    let mut parts = vec![format!("grader {}", report.grader_version)];
    if !report.runtime.service_dir.is_empty() {
        parts.push(sanitize(&report.runtime.service_dir));
    }
    if report.runtime.service_url.is_empty() {
        parts.push(format!("{} runtime", report.runtime.kind));
    } else {
        parts.push(format!(
            "{} service at {}",
            report.runtime.kind,
            sanitize(&report.runtime.service_url)
        ));
    }
    parts.push(format!("seed {}", report.seed));
    let text = w.paint(DIM, &parts.join(" · "));
    w.line(text);
}

pub(super) fn problem_heading(kind: ProblemKind) -> &'static str {
    match kind {
        ProblemKind::ServiceBuild => "Your service did not build, so no check could run.",
        ProblemKind::ServiceStart => "Your service did not start, so no check could run.",
        ProblemKind::Infrastructure => {
            "The grader's infrastructure failed. This is not your fault; the results are incomplete."
        }
        ProblemKind::Interrupted => "The run was interrupted; the results are incomplete.",
        ProblemKind::TimedOut => {
            "Your service's checks took longer than --timeout, so the run was stopped."
        }
    }
}

fn problem_style(kind: ProblemKind) -> Style {
    match kind {
        ProblemKind::ServiceBuild | ProblemKind::ServiceStart | ProblemKind::TimedOut => FAIL,
        ProblemKind::Infrastructure | ProblemKind::Interrupted => ERROR,
    }
}

fn run_problem(w: &mut Writer, problem: &RunProblem) {
    let heading = w.paint(problem_style(problem.kind), problem_heading(problem.kind));
    w.line(heading);
    w.labelled("what", &sanitize(&problem.message), Style::new(), true);
    if let Some(fix) = &problem.fix {
        w.labelled("fix", &sanitize(fix), Style::new(), true);
    }
    log_tail(w, "log", &problem.log_tail);
}

fn log_tail(w: &mut Writer, what: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let label = w.paint(BOLD, &format!("{}:", log_label(what, lines.len())));
    w.line(format!("  {label}"));
    let gutter = w.paint(DIM, "│");
    for line in lines {
        for part in sanitize(line).lines() {
            w.line(format!("    {gutter} {part}"));
        }
    }
}

/// `(2 pts)` when everything was earned, `(0/2 pts)` otherwise.
pub(super) fn check_points(check: &CheckResult) -> String {
    if check.earned == check.points {
        format!("({})", points(check.points))
    } else {
        format!("({}/{})", check.earned, points(check.points))
    }
}

fn check_list(w: &mut Writer, report: &RunReport) {
    if report.checks.is_empty() {
        w.blank();
        w.line("No checks ran.");
        return;
    }
    let id_width = report
        .checks
        .iter()
        .map(|c| c.id.chars().count())
        .max()
        .unwrap_or(0);
    let title_width = report
        .checks
        .iter()
        .map(|c| c.title.chars().count())
        .max()
        .unwrap_or(0);
    let points_width = report
        .checks
        .iter()
        .map(|c| check_points(c).chars().count())
        .max()
        .unwrap_or(0);
    let pad_titles = 2 + 5 + 2 + id_width + 2 + title_width + 2 + points_width <= MAX_ALIGNED_LINE;

    for (exercise, title) in exercise_order(report) {
        w.blank();
        let score = report.exercises.iter().find(|e| e.id == exercise);
        let mut heading = w.paint(BOLD, exercise);
        if let Some(title) = title {
            heading.push_str(&format!("  {}", sanitize(title)));
        }
        if let Some(score) = score {
            let pts = format!("{}/{}", score.earned, points(score.possible));
            heading.push_str(&format!("  {}", w.paint(DIM, &format!("({pts})"))));
        }
        w.line(heading);

        let checks: Vec<&CheckResult> = report
            .checks
            .iter()
            .filter(|c| c.exercise == exercise)
            .collect();
        if let Some(message) = super::common_skip_message(&checks) {
            if !w.style.verbose {
                // The service never started: one line instead of the same reason per check.
                let tag = w.paint(SKIP, "SKIP ");
                let text = format!("all {} checks: {}", checks.len(), sanitize(message));
                let text = w.paint(DIM, &text);
                w.line(format!("  {tag}  {text}"));
                continue;
            }
        }
        for check in checks {
            let tag = format!("{:<5}", status_tag(check.status));
            let tag = w.paint(status_style(check.status), &tag);
            let title = sanitize(&check.title);
            let title = if pad_titles {
                format!("{title:<title_width$}")
            } else {
                title
            };
            let mut line = format!("  {tag}  {:<id_width$}  {title}", check.id);
            let pts = check_points(check);
            if w.style.verbose {
                line.push_str(&format!(
                    "  {pts:<points_width$}  {:>7}",
                    duration(check.duration_ms)
                ));
            } else {
                line.push_str(&format!("  {pts}"));
            }
            w.line(line);
            // What a passing check measured, dimmed under it: how far from the budget.
            for measured in &check.measurements {
                for part in wrap(&sanitize(measured), WIDTH - 9) {
                    let part = w.paint(DIM, &part);
                    w.line(format!("         {part}"));
                }
            }
            match (&check.message, check.status) {
                (_, Status::Pass) | (None, _) => {}
                (Some(message), Status::Skip) => {
                    // A skip has no detailed block: its reason is shown whole.
                    for part in wrap(&sanitize(message), WIDTH - 9) {
                        let part = w.paint(DIM, &part);
                        w.line(format!("         {part}"));
                    }
                }
                (Some(message), _) => {
                    // The detailed block below repeats it whole; here it stays one line.
                    let first = one_line(&sanitize(message), WIDTH - 9);
                    w.line(format!("         {first}"));
                }
            }
        }
    }
}

fn check_detail(w: &mut Writer, check: &CheckResult) {
    w.rule("");
    check_detail_body(w, check);
}

fn check_detail_body(w: &mut Writer, check: &CheckResult) {
    let tag = w.paint(status_style(check.status), status_tag(check.status));
    let mut about = Vec::new();
    if let Some(task) = check.task {
        about.push(format!("task {task}"));
    }
    about.push(format!("{}/{}", check.earned, points(check.points)));
    let id = w.paint(BOLD, &check.id);
    w.line(format!("{tag}  {id}  ({})", about.join(", ")));
    let indent = " ".repeat(status_tag(check.status).len() + 2);
    for part in wrap(&sanitize(&check.title), WIDTH - indent.len()) {
        let part = w.paint(BOLD, &part);
        w.line(format!("{indent}{part}"));
    }
    if let Some(message) = &check.message {
        let style = match check.status {
            Status::Fail => RED,
            Status::Error => YELLOW,
            _ => Style::new(),
        };
        for part in wrap(&sanitize(message), WIDTH - indent.len()) {
            let part = w.paint(style, &part);
            w.line(format!("{indent}{part}"));
        }
    }

    if check.status == Status::Error {
        w.blank();
        w.labelled("note", ERROR_NOTE, DIM, true);
    }

    if let Some(detail) = &check.detail {
        failure_detail(w, detail);
    }
}

fn failure_detail(w: &mut Writer, detail: &FailureDetail) {
    if !detail.why.is_empty() {
        w.blank();
        w.labelled("why", &sanitize(&detail.why), Style::new(), true);
    }

    let total = detail.exchanges.len();
    for (i, exchange) in detail.exchanges.iter().enumerate() {
        w.blank();
        exchange_block(w, exchange, i + 1, total);
    }

    let mut facts: Vec<(&str, String, Style)> = Vec::new();
    if !detail.expected.is_empty() {
        facts.push(("expected", sanitize(&detail.expected), GREEN));
    }
    if !detail.actual.is_empty() {
        facts.push(("actual", sanitize(&detail.actual), RED));
    }
    for (i, evidence) in detail.evidence.iter().enumerate() {
        facts.push((
            if i == 0 { "evidence" } else { "" },
            sanitize(evidence),
            Style::new(),
        ));
    }
    if !facts.is_empty() {
        w.blank();
        for (label, value, style) in facts {
            if label.is_empty() {
                for part in wrap(&value, WIDTH - LABEL - 3) {
                    let part = w.paint(style, &part);
                    w.line(format!("  {} {part}", " ".repeat(LABEL + 1)));
                }
            } else {
                w.labelled(label, &value, style, true);
            }
        }
    }
    if !detail.hint.is_empty() || !detail.spec.is_empty() {
        w.blank();
        if !detail.hint.is_empty() {
            w.labelled("hint", &sanitize(&detail.hint), CYAN, true);
        }
        if !detail.spec.is_empty() {
            w.labelled(
                "spec",
                &sanitize(&detail.spec.join(", ")),
                Style::new(),
                true,
            );
        }
    }
    if !detail.service_log_tail.is_empty() {
        w.blank();
        log_tail(w, "service log", &detail.service_log_tail);
    }
}

fn exchange_block(w: &mut Writer, exchange: &Exchange, n: usize, total: usize) {
    let heading = format!("step {n} of {total}: {}", sanitize(&exchange.step));
    let heading = w.paint(BOLD, &heading);
    w.line(format!("  {heading}"));

    // The curl command is meant to be pasted: print it whole, continuation lines indented.
    for (i, part) in sanitize(&exchange.curl).lines().enumerate() {
        let text = if i == 0 {
            format!("{} {}", w.paint(DIM, "$"), w.paint(CYAN, part))
        } else {
            format!("  {}", w.paint(CYAN, part))
        };
        w.line(format!("    {text}"));
    }
    // What the bearer token says: header and claims, as compact JSON.
    if let Some(token) = &exchange.request.token {
        for (label, value) in [
            ("token header", &token.header),
            ("token claims", &token.claims),
        ] {
            let label = w.paint(DIM, &format!("{label}:"));
            w.line(format!("    {label} {}", sanitize(&value.to_string())));
        }
    }

    if let Some(response) = &exchange.response {
        let status = w.paint(BOLD, &status_line(response.status));
        w.line(format!("    {status}"));
        let mut hidden = 0;
        for (name, value) in &response.headers {
            if w.style.verbose || header_matters(name) {
                let name = w.paint(DIM, &format!("{}:", sanitize(name)));
                w.line(format!("    {name} {}", sanitize(value).replace('\n', " ")));
            } else {
                hidden += 1;
            }
        }
        if hidden > 0 {
            let note = format!(
                "({}; --verbose shows all)",
                more(hidden, "header", "headers")
            );
            let note = w.paint(DIM, &note);
            w.line(format!("    {note}"));
        }
        let excerpt = body_excerpt(response, w.style.verbose);
        if !excerpt.text.is_empty() {
            w.line("");
            for part in excerpt.text.lines() {
                w.line(format!("    {part}"));
            }
        } else if excerpt.more_bytes == 0 {
            let note = w.paint(DIM, "(empty body)");
            w.line(format!("    {note}"));
        }
        if excerpt.more_bytes > 0 {
            let note = format!("({})", more(excerpt.more_bytes, "byte", "bytes"));
            let note = w.paint(DIM, &note);
            w.line(format!("    {note}"));
        }
    }
    match (&exchange.transport_error, &exchange.response) {
        (Some(error), _) => {
            for (i, part) in wrap(&sanitize(error), WIDTH - 6).iter().enumerate() {
                let mark = if i == 0 { "✗" } else { " " };
                let text = w.paint(RED, &format!("{mark} {part}"));
                w.line(format!("    {text}"));
            }
        }
        (None, None) => {
            let text = w.paint(RED, "✗ no response");
            w.line(format!("    {text}"));
        }
        (None, Some(_)) => {}
    }
}

fn summary(w: &mut Writer, report: &RunReport) {
    w.rule("summary");
    skill_bars(w, report);
    score_line(w, report);

    let (status_text, style) = (run_status_text(report), status_text_style(report.status));
    let status_text = w.paint(style, &status_text);
    w.line(format!(
        "  {} {status_text}",
        w.paint(BOLD, &format!("{:>LABEL$}:", "status"))
    ));

    if let Some(next) = next_step(report) {
        w.labelled("next", &next, Style::new(), false);
    }
    w.labelled(
        "seed",
        &format!(
            "{} — replay with: {} (replays the data, not thread timing)",
            report.seed,
            sanitize(&report.replay)
        ),
        Style::new(),
        false,
    );
    if !report.runtime.artifacts_dir.is_empty() {
        w.labelled(
            "artifacts",
            &sanitize(&report.runtime.artifacts_dir),
            Style::new(),
            false,
        );
    }
    let mut time = duration(report.duration_ms);
    if w.style.verbose {
        let t = &report.timings;
        let phases: Vec<String> = [
            ("build", t.build_ms),
            ("postgres", t.postgres_ms),
            ("data", t.data_setup_ms),
            ("redis", t.redis_ms),
            ("rabbitmq", t.broker_ms),
            ("start", t.service_start_ms),
            ("checks", t.checks_ms),
            ("teardown", t.teardown_ms),
        ]
        .iter()
        .filter(|(_, ms)| *ms > 0)
        .map(|(name, ms)| format!("{name} {}", duration(*ms)))
        .collect();
        if !phases.is_empty() {
            time.push_str(&format!("  ({})", phases.join(", ")));
        }
    }
    w.labelled("time", &time, Style::new(), false);
}

/// A bar per skill area, with its percent, points and checks.
fn skill_bars(w: &mut Writer, report: &RunReport) {
    if !report.skills.is_empty() {
        let id_width = report
            .skills
            .iter()
            .map(|s| s.id.chars().count())
            .max()
            .unwrap_or(0);
        let pts_width = report
            .skills
            .iter()
            .map(|s| format!("{}/{}", s.earned, s.possible).len())
            .max()
            .unwrap_or(0);
        let checks_width = report
            .skills
            .iter()
            .map(|s| format!("{}/{}", s.passed, s.total).len())
            .max()
            .unwrap_or(0);
        for skill in &report.skills {
            let filled = bar_cells(skill.percent);
            let style = band_style(skill.percent);
            let bar = format!(
                "{}{}",
                w.paint(style, &"█".repeat(filled)),
                w.paint(DIM, &"░".repeat(BAR - filled))
            );
            let pct = w.paint(style, &format!("{:>6}", percent(skill.percent)));
            let pts = format!("{}/{}", skill.earned, skill.possible);
            let checks = format!("{}/{}", skill.passed, skill.total);
            w.line(format!(
                "  {:<id_width$}  {bar}  {pct}  {pts:>pts_width$} pts  {checks:>checks_width$} checks",
                skill.id
            ));
        }
        w.blank();
    }
}

fn score_line(w: &mut Writer, report: &RunReport) {
    let score = format!(
        "{}/{}  ({})",
        report.score.earned,
        points(report.score.possible),
        percent(report.score.percent)
    );
    w.labelled("score", &score, BOLD, false);
}

/// The run's verdict in words, as the summary shows it: `fail — 2 failed, 1 skipped`.
pub(super) fn run_status_text(report: &RunReport) -> String {
    let counts = Counts::of(report);
    match report.status {
        RunStatus::Pass => "pass — every check passed".to_string(),
        RunStatus::Fail => match &report.problem {
            Some(p) if matches!(p.kind, ProblemKind::ServiceBuild | ProblemKind::ServiceStart) => {
                format!("fail — {}", problem_short(p.kind))
            }
            _ => {
                let mut parts = vec![format!("{} failed", counts.failed)];
                if counts.skipped > 0 {
                    parts.push(format!("{} skipped", counts.skipped));
                }
                format!("fail — {}", parts.join(", "))
            }
        },
        RunStatus::Error => match &report.problem {
            Some(p) => format!("error — {} (not your fault)", problem_short(p.kind)),
            None => format!(
                "error — the grader could not run {} {} (not your fault); the score may be incomplete",
                counts.errors,
                if counts.errors == 1 { "check" } else { "checks" }
            ),
        },
    }
}

fn status_text_style(status: RunStatus) -> Style {
    match status {
        RunStatus::Pass => PASS,
        RunStatus::Fail => FAIL,
        RunStatus::Error => ERROR,
    }
}

/// The next thing to do: fix the first failure, e.g. `fix the first failure, api-design/x (task 2)`.
pub(super) fn next_step(report: &RunReport) -> Option<String> {
    let first = report.checks.iter().find(|c| c.status == Status::Fail)?;
    let task = first
        .task
        .map(|t| format!(" (task {t})"))
        .unwrap_or_default();
    Some(format!("fix the first failure, {}{task}", first.id))
}

/// The note under an errored check: not the learner's fault.
pub(super) const ERROR_NOTE: &str = "This is not your fault: the grader could not run this check, \
     so your score is incomplete. Run again; if it keeps happening, report it with the artifacts \
     folder.";

/// `service log (last 3 lines)`.
pub(super) fn log_label(what: &str, lines: usize) -> String {
    format!(
        "{what} (last {lines} {})",
        if lines == 1 { "line" } else { "lines" }
    )
}

/// `(3 more headers; --verbose shows all)` → the count part: `3 more headers`.
pub(super) fn more(n: u64, one: &str, many: &str) -> String {
    format!("{n} more {}", if n == 1 { one } else { many })
}

pub(super) fn problem_short(kind: ProblemKind) -> &'static str {
    match kind {
        ProblemKind::ServiceBuild => "the service did not build (see the top of this report)",
        ProblemKind::ServiceStart => "the service did not start (see the top of this report)",
        ProblemKind::Infrastructure => {
            "the grader's infrastructure failed (see the top of this report)"
        }
        ProblemKind::Interrupted => "the run was interrupted",
        ProblemKind::TimedOut => {
            "the checks took longer than --timeout (see the top of this report)"
        }
    }
}

/// Filled cells of a skill bar. Deterministic; only 100% fills the bar and only 0% leaves it
/// empty.
/// The first line of `text`, cut to `width` characters with `…` when anything is left out.
fn one_line(text: &str, width: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    let more_lines = text.lines().nth(1).is_some();
    if first.chars().count() <= width && !more_lines {
        return first.to_string();
    }
    let mut cut: String = first.chars().take(width.saturating_sub(1)).collect();
    if first.chars().count() > width - 1 {
        // Cut at a word boundary when there is one in the second half.
        if let Some(space) = cut.rfind(' ').filter(|&i| i > width / 2) {
            cut.truncate(space);
        }
    }
    format!("{}…", cut.trim_end())
}

fn bar_cells(percent: f64) -> usize {
    if !percent.is_finite() || percent <= 0.0 {
        return 0;
    }
    if percent >= 100.0 {
        return BAR;
    }
    let cells = (percent / 100.0 * BAR as f64).round() as usize;
    cells.clamp(1, BAR - 1)
}

fn band_style(percent: f64) -> Style {
    if percent >= 100.0 {
        GREEN
    } else if percent >= 50.0 {
        YELLOW
    } else {
        RED
    }
}

#[cfg(test)]
mod tests {
    use super::{bar_cells, one_line};

    #[test]
    fn one_line_cuts_at_a_word_with_an_ellipsis() {
        assert_eq!(one_line("short", 20), "short");
        assert_eq!(one_line("two\nlines", 20), "two…");
        assert_eq!(
            one_line("the response body broke off after ten bytes", 30),
            "the response body broke off…"
        );
        assert_eq!(one_line(&"x".repeat(40), 10), format!("{}…", "x".repeat(9)));
    }

    #[test]
    fn bar_is_full_only_at_100_and_empty_only_at_0() {
        assert_eq!(bar_cells(0.0), 0);
        assert_eq!(bar_cells(0.1), 1);
        assert_eq!(bar_cells(50.0), 10);
        assert_eq!(bar_cells(99.9), 19);
        assert_eq!(bar_cells(100.0), 20);
        assert_eq!(bar_cells(f64::NAN), 0);
    }
}
