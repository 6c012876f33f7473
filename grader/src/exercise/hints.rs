//! Staged hints: each check's `hints = [...]` in exercise.toml, two to four stages from a nudge
//! (where to look) to the mechanism (what to use), never code. `grader hint CHECK [STAGE]` prints
//! one stage at a time ([`render`]); `grader lint` checks the stages ([`problems`]).
//!
//! What lint calls code (documented in exercises/AUTHORING.md, "Staged hints"): a Markdown code
//! fence; code punctuation (`=>`, `::`, `();`, a `;` inside braces, a line ending in `;` or
//! `{`); and a SQL statement with concrete operands: an upper-case verb (`SELECT`, `INSERT`,
//! `INTO`, `UPDATE`, `DELETE`, `CREATE`) followed within four words by a clause keyword (`FROM`,
//! `VALUES`, `SET`, `WHERE`, `ON`) with a lower-case name or `*` in between. Naming a mechanism
//! in prose passes: `SELECT ... FOR UPDATE`, `INSERT ... ON CONFLICT DO NOTHING`, a unique index.

use std::ops::Range;

use super::{Check, Exercise};
use crate::diagnostic::{Diagnostic, Diagnostics};

/// Fewest and most stages a check's `hints` may have.
pub const STAGES: std::ops::RangeInclusive<usize> = 2..=4;
/// Longest stage, in characters: a hint is read on a terminal, in one breath.
pub const MAX_CHARS: usize = 280;
/// Width `grader hint` wraps a stage to.
const WIDTH: usize = 100;

const HELP: &str = "2 to 4 stages: a nudge (where to look), then narrower, the last naming the \
                    mechanism; see \"Staged hints\" in exercises/AUTHORING.md";

/// `grader lint`'s errors about staged hints: every check has 2 to 4, each short, not code, and
/// not a repeat of the one before.
pub fn problems(exercise: &Exercise) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let file = &exercise.file;
    for check in &exercise.checks {
        let at =
            |span: &Range<usize>, message: String| Diagnostic::new(file, span.clone(), message);
        let Some(first) = check.hints.first() else {
            let message = format!(
                "check \"{}\" has no staged hints; add hints = [...]",
                check.id
            );
            diags.push(at(&check.span, message).with_help(HELP));
            continue;
        };
        if !STAGES.contains(&check.hints.len()) {
            let message = format!(
                "check \"{}\" has {} staged hints; write 2 to 4",
                check.id,
                check.hints.len()
            );
            diags.push(at(&first.span, message).with_help(HELP));
        }
        let mut previous: Option<String> = None;
        for (n, stage) in check.hints.iter().enumerate() {
            let n = n + 1;
            let text = stage.text.trim();
            let chars = text.chars().count();
            let problem = if text.is_empty() {
                Some((
                    format!("hint {n} is empty"),
                    "say where to look, in a sentence".into(),
                ))
            } else if chars > MAX_CHARS {
                Some((
                    format!("hint {n} has {chars} characters, more than {MAX_CHARS}"),
                    "one idea per stage; move the rest to the next stage".to_string(),
                ))
            } else if let Some(why) = code_in(text) {
                Some((
                    format!("hint {n} looks like code: {why}"),
                    "name the mechanism in prose (e.g. `SELECT ... FOR UPDATE`); the learner writes the code".into(),
                ))
            } else if previous.as_deref() == Some(normalized(text).as_str()) {
                Some((
                    format!("hint {n} repeats hint {}", n - 1),
                    "each stage narrows the one before: say something new".into(),
                ))
            } else {
                None
            };
            if let Some((message, help)) = problem {
                diags.push(at(&stage.span, message).with_help(help));
            }
            previous = Some(normalized(text));
        }
    }
    diags
}

/// Why `text` looks like code, or `None` for prose (the rule is in the module documentation).
pub fn code_in(text: &str) -> Option<String> {
    if text.contains("```") {
        return Some("it has a Markdown code fence (```)".into());
    }
    if let Some(token) = ["=>", "::", "();"].into_iter().find(|t| text.contains(t)) {
        return Some(format!("it has `{token}`"));
    }
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ';' if depth > 0 => return Some("it has a `;` inside braces".into()),
            _ => {}
        }
    }
    if text
        .lines()
        .any(|l| l.trim_end().ends_with(';') || l.trim_end().ends_with('{'))
    {
        return Some("a line ends like a statement (`;` or `{`)".into());
    }
    sql_statement(text)
}

const SQL_VERBS: &[&str] = &["SELECT", "INSERT", "INTO", "UPDATE", "DELETE", "CREATE"];
const SQL_CLAUSES: &[&str] = &["FROM", "VALUES", "SET", "WHERE", "ON"];

/// An upper-case SQL verb and clause with a lower-case name or `*` between them.
fn sql_statement(text: &str) -> Option<String> {
    let bare = |w: &str| w.trim_matches(|c: char| ",;:()".contains(c)).to_string();
    let words: Vec<String> = text.split_whitespace().map(bare).collect();
    for (i, verb) in words.iter().enumerate() {
        if !SQL_VERBS.contains(&verb.as_str()) {
            continue;
        }
        let rest = &words[i + 1..];
        let Some(j) = rest
            .iter()
            .take(4)
            .position(|w| SQL_CLAUSES.contains(&w.as_str()))
        else {
            continue;
        };
        if rest[..j].iter().any(|w| is_operand(w)) {
            return Some(format!(
                "`{verb} {} {}` is a SQL statement; elide the names, as in `{verb} ... {}`",
                rest[..j].join(" "),
                rest[j],
                rest[j]
            ));
        }
    }
    None
}

/// A name or `*` in a SQL statement: `orders`, `o.id`, `*`.
fn is_operand(word: &str) -> bool {
    word == "*"
        || word.starts_with(|c: char| c.is_ascii_lowercase())
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// For comparing stages: case, spacing and final punctuation do not make a stage new.
fn normalized(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(['.', '!', '?'])
        .to_lowercase()
}

/// What `grader hint` prints for stage `stage` (from 1) of a check: the stage wrapped to 100
/// columns, then how to get the next one or, after the last, where to read on. A check without
/// staged hints (an exercise folder of one's own) has its `hint` as its only stage.
pub fn render(exercise: &Exercise, check: &Check, stage: usize) -> Result<String, String> {
    let id = format!("{}/{}", exercise.id, check.id);
    let stages: Vec<&str> = match check.hints.is_empty() {
        true => vec![check.hint.as_str()],
        false => check.hints.iter().map(|s| s.text.as_str()).collect(),
    };
    let total = stages.len();
    if !(1..=total).contains(&stage) {
        return Err(format!(
            "{id} has {total} hint{}; stage {stage} does not exist, ask for 1 to {total}",
            if total == 1 { "" } else { "s" }
        ));
    }
    let text = format!(
        "hint {stage} of {total} for {id}: {}",
        stages[stage - 1].trim()
    );
    let next = if stage < total {
        format!(
            "still stuck? `grader hint {id} {}` gives the next hint",
            stage + 1
        )
    } else {
        let task = check
            .task
            .and_then(|n| exercise.tasks.iter().find(|t| t.number == n))
            .map(|t| format!("task {} ({}) of ", t.number, t.title))
            .unwrap_or_default();
        format!(
            "that was the last hint: `grader explain {id}` says why it matters, and {task}exercises/{}/README.md states the contract",
            exercise.id
        )
    };
    let mut out = String::new();
    for line in crate::report::wrap(&text, WIDTH)
        .into_iter()
        .chain(crate::report::wrap(&next, WIDTH))
    {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exercise::parse::tests::{catalog_with, SEC_CHECK, SEC_HEAD};

    /// The `sec` test exercise with one check whose `hints` line is `hints`.
    fn with_hints(hints: &str) -> Exercise {
        let check = SEC_CHECK.replace("hint = \"h\"\n", &format!("hint = \"h\"\n{hints}\n"));
        let catalog = catalog_with(&format!(
            "{SEC_HEAD}[vars]\nadmin = {{ gen = \"slug\" }}\n{check}"
        ))
        .unwrap_or_else(|d| panic!("{}", d.render(false)));
        let mut ex = catalog.exercises.into_iter().next().unwrap();
        // A stable name instead of the temporary folder's, for the messages and snapshots.
        ex.file = crate::diagnostic::SourceFile::new("sec/exercise.toml", ex.file.text.clone());
        ex
    }

    fn messages(hints: &str) -> Vec<String> {
        problems(&with_hints(hints))
            .0
            .iter()
            .map(|d| d.render(false).lines().next().unwrap().to_string())
            .collect()
    }

    const GOOD: &str = "hints = [\"Read task 1 of the README: who may see the stats?\", \"Look at the token's roles claim.\", \"Answer 403 when the admin role is missing.\"]";

    #[test]
    fn good_hints_pass() {
        assert!(messages(GOOD).is_empty());
        let ex = with_hints(GOOD);
        assert_eq!(ex.checks[0].hints.len(), 3);
        let stage = &ex.checks[0].hints[1];
        assert_eq!(
            &ex.file.text[stage.span.clone()],
            "\"Look at the token's roles claim.\""
        );
    }

    #[test]
    fn every_rule_is_a_located_error() {
        assert_eq!(
            messages(""),
            ["sec/exercise.toml:9:6: error: check \"admin\" has no staged hints; add hints = [...]"]
        );
        assert_eq!(
            messages("hints = [\"only one\"]"),
            ["sec/exercise.toml:14:10: error: check \"admin\" has 1 staged hints; write 2 to 4"]
        );
        let five = "hints = [\"a\", \"b\", \"c\", \"d\", \"e\"]";
        assert_eq!(
            messages(five),
            ["sec/exercise.toml:14:10: error: check \"admin\" has 5 staged hints; write 2 to 4"]
        );
        let long = format!("hints = [\"a\", \"{}\"]", "x".repeat(281));
        assert_eq!(
            messages(&long),
            ["sec/exercise.toml:14:15: error: hint 2 has 281 characters, more than 280"]
        );
        assert_eq!(
            messages("hints = [\"a\", \"  \"]"),
            ["sec/exercise.toml:14:15: error: hint 2 is empty"]
        );
        let fence = "hints = [\"a\", \"like this: ```if x```\"]";
        assert_eq!(messages(fence), ["sec/exercise.toml:14:15: error: hint 2 looks like code: it has a Markdown code fence (```)"]);
        let repeat = "hints = [\"Look at the roles.\", \"look at the  roles\"]";
        assert_eq!(
            messages(repeat),
            ["sec/exercise.toml:14:32: error: hint 2 repeats hint 1"]
        );
    }

    #[test]
    fn code_is_flagged_and_mechanisms_in_prose_pass() {
        for code in [
            "if (user.isAdmin()) { return 403; }",
            "match role { Admin => ok }",
            "call db::insert first",
            "run res.status(403);",
            "then call flush(); and return",
            "let x = 1;",
            "SELECT * FROM orders",
            "SELECT balance FROM accounts WHERE id = $1 FOR UPDATE",
            "INSERT INTO orders VALUES (1)",
            "UPDATE accounts SET balance = 0",
            "CREATE UNIQUE INDEX orders_key ON orders (key)",
        ] {
            assert!(code_in(code).is_some(), "not flagged: {code}");
        }
        for prose in [
            "Lock the row you read with SELECT ... FOR UPDATE, inside the transaction.",
            "A unique index and catching the unique-violation error (SQLSTATE 23505).",
            "Use INSERT ... ON CONFLICT DO NOTHING and read back the stored row.",
            "Compare the If-None-Match value with the current ETag; answer 304 when they match.",
            "A CREATE INDEX on the column the WHERE clause filters on.",
            "Send {\"name\": \"x\"} with curl and look at the status: 201 or 200?",
            "UPDATE ... SET with the new balance, after a check in the same statement",
            "Read the README: which fields are required?",
            "Use the writable fields only (sku, name); ignore the rest.",
            "Answer 201 with Location /wallets/{id}; send an ETag on GET.",
        ] {
            assert_eq!(code_in(prose), None, "flagged: {prose}");
        }
    }

    #[test]
    fn located_error_snapshot() {
        let d = problems(&with_hints("hints = [\"Look.\", \"SELECT * FROM stats\"]"));
        insta::assert_snapshot!(d.render(false));
    }

    #[test]
    fn stages_render_with_the_way_on() {
        let ex = with_hints("hints = [\"Read task 1 of the README: who may see the stats? Call the endpoint with curl and a token of each kind, and compare the statuses you get.\", \"Look at the token's roles claim.\"]");
        let c = &ex.checks[0];
        insta::assert_snapshot!(format!(
            "{}---\n{}",
            render(&ex, c, 1).unwrap(),
            render(&ex, c, 2).unwrap()
        ));
        assert_eq!(
            render(&ex, c, 3).unwrap_err(),
            "sec/admin has 2 hints; stage 3 does not exist, ask for 1 to 2"
        );
        assert!(render(&ex, c, 0).is_err());
    }
}
