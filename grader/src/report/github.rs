//! Markdown for a GitHub Actions job summary (`$GITHUB_STEP_SUMMARY`).
//!
//! Sections: a headline with score and status, the run problem if any, a table of skill areas,
//! a table of the checks that did not pass, then one collapsible `<details>` block per failed or
//! errored check with its curl command, the response, expected/actual and hint.
//!
//! Learner-controlled text (messages, bodies, headers, logs) is escaped so that it can't inject
//! Markdown or HTML: outside code blocks every character with a meaning (`escape`) becomes an
//! HTML entity; code blocks use a fence longer than any run of backticks inside them. No line of
//! the output starts with `::`, so echoing the summary to a workflow log can't issue workflow
//! commands.

use super::{body_excerpt, header_matters, percent, sanitize, status_line, Counts, BODY_MAX_CHARS};
use crate::outcome::{
    CheckResult, Exchange, FailureDetail, ProblemKind, RunReport, RunStatus, Status,
};

/// Cells of the skill bars in the skills table.
const BAR: usize = 10;

/// Renders the job summary, ending with a newline.
pub fn render(report: &RunReport) -> String {
    let mut md = String::new();
    headline(&mut md, report);
    if let Some(problem) = &report.problem {
        let (alert, heading) = match problem.kind {
            ProblemKind::ServiceBuild => ("CAUTION", "The service did not build, so no check could run."),
            ProblemKind::ServiceStart => ("CAUTION", "The service did not start, so no check could run."),
            ProblemKind::Infrastructure => (
                "WARNING",
                "The grader's infrastructure failed. This is not the learner's fault; the results are incomplete.",
            ),
            ProblemKind::Interrupted => ("WARNING", "The run was interrupted; the results are incomplete."),
            ProblemKind::TimedOut => ("CAUTION", "The service's checks took longer than --timeout, so the run was stopped."),
        };
        md.push_str(&format!(
            "> [!{alert}]\n> **{heading}**\n> {}\n",
            escape(&problem.message)
        ));
        if let Some(fix) = &problem.fix {
            md.push_str(&format!(">\n> **Fix:** {}\n", escape(fix)));
        }
        md.push('\n');
        if !problem.log_tail.is_empty() {
            md.push_str(&format!(
                "<details><summary>Log (last {} lines)</summary>\n\n",
                problem.log_tail.len()
            ));
            code_block(&mut md, "text", &problem.log_tail.join("\n"));
            md.push_str("</details>\n\n");
        }
    } else if report.status == RunStatus::Error {
        let errors = Counts::of(report).errors;
        md.push_str(&format!(
            "> [!WARNING]\n> The grader could not run {errors} {}. This is not the learner's fault; \
             the score may be incomplete.\n\n",
            if errors == 1 { "check" } else { "checks" }
        ));
    }
    skills_table(&mut md, report);
    non_passing_table(&mut md, report);
    failure_details(&mut md, report);
    let mut md = super::defuse_workflow_commands(md.trim_end());
    md.push('\n');
    md
}

fn status_emoji(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Pass => "✅",
        RunStatus::Fail => "❌",
        RunStatus::Error => "⚠️",
    }
}

fn check_emoji(status: Status) -> &'static str {
    match status {
        Status::Pass => "✅ pass",
        Status::Fail => "❌ fail",
        Status::Error => "⚠️ error",
        Status::Skip => "⏭️ skip",
    }
}

fn headline(md: &mut String, report: &RunReport) {
    md.push_str(&format!(
        "## {} grader: {}/{} points ({}) — {}\n\n",
        status_emoji(report.status),
        report.score.earned,
        report.score.possible,
        percent(report.score.percent),
        report.status.as_str()
    ));
    md.push_str(&format!(
        "{}  \nSeed <code>{}</code> — replay with <code>{}</code>",
        Counts::of(report).line(),
        report.seed,
        escape(&report.replay)
    ));
    if !report.runtime.artifacts_dir.is_empty() {
        md.push_str(&format!(
            "  \nArtifacts: <code>{}</code>",
            escape(&report.runtime.artifacts_dir)
        ));
    }
    md.push_str("\n\n");
}

fn skills_table(md: &mut String, report: &RunReport) {
    if report.skills.is_empty() {
        return;
    }
    md.push_str("### Skills\n\n");
    md.push_str("| Skill | Score | Points | Checks passed |\n|---|---|---:|---:|\n");
    for skill in &report.skills {
        let filled = bar_cells(skill.percent);
        md.push_str(&format!(
            "| {} <code>{}</code> | {}{} {} | {}/{} | {}/{} |\n",
            escape(&skill.title),
            escape(&skill.id),
            "█".repeat(filled),
            "░".repeat(BAR - filled),
            percent(skill.percent),
            skill.earned,
            skill.possible,
            skill.passed,
            skill.total
        ));
    }
    md.push('\n');
}

fn non_passing_table(md: &mut String, report: &RunReport) {
    let not_passed: Vec<&CheckResult> = report
        .checks
        .iter()
        .filter(|c| c.status != Status::Pass)
        .collect();
    if report.checks.is_empty() {
        md.push_str("No checks ran.\n\n");
        return;
    }
    if not_passed.is_empty() {
        md.push_str(&format!("All {} checks passed.\n\n", report.checks.len()));
        return;
    }
    let all: Vec<&CheckResult> = report.checks.iter().collect();
    if let Some(message) = super::common_skip_message(&all) {
        md.push_str(&format!(
            "All {} checks were skipped: {}.\n\n",
            report.checks.len(),
            escape(message)
        ));
        return;
    }
    md.push_str("### Checks that did not pass\n\n");
    md.push_str("| Status | Check | Task | Points | What happened |\n|---|---|---:|---:|---|\n");
    for check in not_passed {
        md.push_str(&format!(
            "| {} | <code>{}</code><br>{} | {} | {}/{} | {} |\n",
            check_emoji(check.status),
            escape(&check.id),
            escape(&check.title),
            check.task.map(|t| t.to_string()).unwrap_or_default(),
            check.earned,
            check.points,
            check.message.as_deref().map(escape).unwrap_or_default()
        ));
    }
    md.push('\n');
}

fn failure_details(md: &mut String, report: &RunReport) {
    let failed: Vec<&CheckResult> = report
        .checks
        .iter()
        .filter(|c| matches!(c.status, Status::Fail | Status::Error))
        .collect();
    if failed.is_empty() {
        return;
    }
    md.push_str("### Details\n\n");
    for check in failed {
        let task = check
            .task
            .map(|t| format!(" (task {t})"))
            .unwrap_or_default();
        md.push_str(&format!(
            "<details><summary>{} <code>{}</code> — {}{task}</summary>\n\n",
            check_emoji(check.status),
            escape(&check.id),
            escape(&check.title)
        ));
        if let Some(message) = &check.message {
            md.push_str(&format!("**{}**\n\n", escape(message)));
        }
        if check.status == Status::Error {
            md.push_str(
                "The grader could not run this check. This is not the learner's fault; the score \
                 is incomplete.\n\n",
            );
        }
        if let Some(detail) = &check.detail {
            detail_body(md, detail);
        }
        md.push_str("</details>\n\n");
    }
}

fn detail_body(md: &mut String, detail: &FailureDetail) {
    if !detail.why.is_empty() {
        md.push_str(&format!("**Why:** {}\n\n", escape(&detail.why)));
    }
    let total = detail.exchanges.len();
    for (i, exchange) in detail.exchanges.iter().enumerate() {
        exchange_block(md, exchange, i + 1, total);
    }
    let mut facts = Vec::new();
    if !detail.expected.is_empty() {
        facts.push(format!("- **Expected:** {}", escape(&detail.expected)));
    }
    if !detail.actual.is_empty() {
        facts.push(format!("- **Actual:** {}", escape(&detail.actual)));
    }
    for evidence in &detail.evidence {
        facts.push(format!("- **Evidence:** {}", escape(evidence)));
    }
    if !detail.hint.is_empty() {
        facts.push(format!("- **Hint:** {}", escape(&detail.hint)));
    }
    if !detail.spec.is_empty() {
        let spec: Vec<String> = detail.spec.iter().map(|s| escape(s)).collect();
        facts.push(format!("- **Spec:** {}", spec.join(", ")));
    }
    if !facts.is_empty() {
        md.push_str(&facts.join("\n"));
        md.push_str("\n\n");
    }
    if !detail.service_log_tail.is_empty() {
        md.push_str(&format!(
            "Service log (last {} lines):\n\n",
            detail.service_log_tail.len()
        ));
        code_block(md, "text", &detail.service_log_tail.join("\n"));
    }
}

fn exchange_block(md: &mut String, exchange: &Exchange, n: usize, total: usize) {
    md.push_str(&format!(
        "Step {n} of {total}: {}\n\n",
        escape(&exchange.step)
    ));
    code_block(md, "sh", &exchange.curl);
    if let Some(token) = &exchange.request.token {
        md.push_str("The bearer token, decoded:\n\n");
        let decoded = serde_json::json!({"header": token.header, "claims": token.claims});
        code_block(
            md,
            "json",
            &serde_json::to_string_pretty(&decoded).unwrap_or_default(),
        );
    }
    if let Some(response) = &exchange.response {
        let mut text = status_line(response.status);
        let mut hidden = 0;
        for (name, value) in &response.headers {
            if header_matters(name) {
                text.push_str(&format!("\n{name}: {value}"));
            } else {
                hidden += 1;
            }
        }
        let excerpt = body_excerpt(response, false);
        if !excerpt.text.is_empty() {
            text.push_str("\n\n");
            text.push_str(&excerpt.text);
        }
        if excerpt.more_bytes > 0 {
            text.push_str(&format!("\n… ({} more bytes)", excerpt.more_bytes));
        }
        code_block(md, "http", &text);
        if hidden > 0 {
            md.push_str(&format!(
                "<sub>{hidden} more {} not shown.</sub>\n\n",
                if hidden == 1 { "header" } else { "headers" }
            ));
        }
    }
    if let Some(error) = &exchange.transport_error {
        md.push_str(&format!("**No response:** {}\n\n", escape(error)));
    } else if exchange.response.is_none() {
        md.push_str("**No response.**\n\n");
    }
}

/// A fenced code block holding `text` literally: the fence is longer than any run of backticks
/// in the text, so the text can't close it.
fn code_block(md: &mut String, lang: &str, text: &str) {
    let text = sanitize(text);
    let text: String = text.chars().take(BODY_MAX_CHARS * 4).collect();
    let longest_run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat((longest_run + 1).max(3));
    md.push_str(&format!("{fence}{lang}\n{text}\n{fence}\n\n"));
}

/// Escapes text for Markdown and HTML contexts alike (paragraphs, table cells, `<summary>`,
/// `<code>`): characters with a meaning become HTML entities, line breaks become spaces.
pub(crate) fn escape(text: &str) -> String {
    let text = sanitize(text);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // An apostrophe means nothing to Markdown, and no attribute here is quoted with it.
        if let Some(entity) = super::html_entity(c).filter(|_| c != '\'') {
            out.push_str(entity);
            continue;
        }
        match c {
            '|' => out.push_str("&#124;"),
            '`' => out.push_str("&#96;"),
            '*' => out.push_str("&#42;"),
            '_' => out.push_str("&#95;"),
            '[' => out.push_str("&#91;"),
            ']' => out.push_str("&#93;"),
            '~' => out.push_str("&#126;"),
            '\\' => out.push_str("&#92;"),
            '@' => out.push_str("&#64;"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn bar_cells(percent: f64) -> usize {
    if !percent.is_finite() || percent <= 0.0 {
        0
    } else if percent >= 100.0 {
        BAR
    } else {
        ((percent / 100.0 * BAR as f64).round() as usize).clamp(1, BAR - 1)
    }
}
