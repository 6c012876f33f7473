//! Requirement coverage: every normative sentence of an exercise README carries an id
//! (`[pag-5.2]`), and every check names the ids it can fail (`covers = ["pag-5.2"]`). `grader
//! lint` turns this into errors: a requirement no check covers, a check that covers nothing, an
//! id that does not exist. Requirements no check can observe are marked `[pag-5.2 not graded]`
//! in the README, so learners know; requirements that could be checked but are not yet are
//! listed in the exercise's `untested`, so the debt is visible (`grader exercises --coverage`)
//! and cannot grow silently.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::Exercise;
use crate::diagnostic::{did_you_mean, Diagnostic, Diagnostics};

/// An id written in a README.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    pub id: String,
    /// False for `[id not graded]`: advice no check can observe.
    pub graded: bool,
    /// Byte range of the marker in the README.
    pub span: Range<usize>,
}

/// An id named in `exercise.toml` (a check's `covers`, or `untested`), with where it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct IdRef {
    pub id: String,
    pub span: Range<usize>,
}

/// The requirement markers of a README, in order. Code (fenced blocks and inline spans) is
/// skipped, so an example in backticks is not a requirement.
pub fn requirements(readme: &str) -> Vec<Requirement> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut fenced = false;
    // An inline code span may wrap onto the next line; a blank line ends any that is open.
    let mut in_code = false;
    for line in readme.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
        } else if trimmed.trim().is_empty() {
            in_code = false;
        } else if !fenced {
            scan_line(line, offset, &mut in_code, &mut out);
        }
        offset += line.len();
    }
    out
}

fn scan_line(line: &str, offset: usize, in_code: &mut bool, out: &mut Vec<Requirement>) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'`' => *in_code = !*in_code,
            b'[' if !*in_code => {
                if let Some(len) = line[i..].find(']') {
                    if let Some((id, graded)) = parse_marker(&line[i + 1..i + len]) {
                        out.push(Requirement {
                            id,
                            graded,
                            span: offset + i..offset + i + len + 1,
                        });
                        i += len;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// `pag-5.2` or `pag-5.2 not graded`.
fn parse_marker(inner: &str) -> Option<(String, bool)> {
    let (id, graded) = match inner.strip_suffix(" not graded") {
        Some(id) => (id, false),
        None => (inner, true),
    };
    is_requirement_id(id).then(|| (id.to_string(), graded))
}

/// `[a-z]+-\d+(\.\d+)*`
pub fn is_requirement_id(id: &str) -> bool {
    let Some((prefix, number)) = id.split_once('-') else {
        return false;
    };
    !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_lowercase())
        && !number.is_empty()
        && number
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// What covers a requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cover {
    /// These checks can fail a service that breaks it.
    Checks(Vec<String>),
    /// Marked `not graded` in the README.
    NotGraded,
    /// Listed in `untested`: no check yet.
    Untested,
    /// Nothing: a lint error.
    Missing,
}

/// Each requirement of an exercise, in README order, with what covers it.
pub fn matrix(exercise: &Exercise) -> Vec<(Requirement, Cover)> {
    let mut by_id: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for check in &exercise.checks {
        for c in &check.covers {
            by_id
                .entry(c.id.as_str())
                .or_default()
                .push(check.id.clone());
        }
    }
    let untested: BTreeSet<&str> = exercise.untested.iter().map(|u| u.id.as_str()).collect();
    exercise
        .requirements
        .iter()
        .map(|r| {
            let cover = if !r.graded {
                Cover::NotGraded
            } else if let Some(checks) = by_id.get(r.id.as_str()) {
                Cover::Checks(checks.clone())
            } else if untested.contains(r.id.as_str()) {
                Cover::Untested
            } else {
                Cover::Missing
            };
            (r.clone(), cover)
        })
        .collect()
}

/// Every coverage problem of an exercise, located in its README or exercise.toml.
pub fn problems(exercise: &Exercise) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let file = &exercise.file;
    let Some(readme) = &exercise.readme else {
        return diags;
    };
    let mut seen: BTreeMap<&str, &Requirement> = BTreeMap::new();
    for r in &exercise.requirements {
        if seen.insert(&r.id, r).is_some() {
            diags.push(
                Diagnostic::new(readme, r.span.clone(), format!("requirement id [{}] is used twice", r.id))
                    .with_help("ids are stable and unique within a README: give this requirement the next free number"),
            );
        }
    }
    let known: Vec<&str> = seen.keys().copied().collect();
    let unknown = |id: &IdRef, what: &str| {
        let help = match did_you_mean(&id.id, known.iter().copied()) {
            Some(s) => format!("did you mean \"{s}\"?"),
            None => "write the id in the README next to the requirement, like `[pag-1.1]`".into(),
        };
        Diagnostic::new(
            file,
            id.span.clone(),
            format!(
                "{what} names \"{}\", which is not a requirement id in {}",
                id.id, readme.name
            ),
        )
        .with_help(help)
    };
    for check in &exercise.checks {
        if check.covers.is_empty() {
            diags.push(
                Diagnostic::new(file, check.span.clone(), format!("check \"{}\" covers no requirement", check.id))
                    .with_help("add covers = [\"...\"] with the README requirement ids a service breaking them would fail this check for"),
            );
        }
        for c in &check.covers {
            match seen.get(c.id.as_str()) {
                None => diags.push(unknown(c, &format!("check \"{}\"", check.id))),
                Some(r) if !r.graded => diags.push(
                    Diagnostic::new(
                        file,
                        c.span.clone(),
                        format!(
                            "[{}] is marked `not graded` in the README, but check \"{}\" covers it",
                            c.id, check.id
                        ),
                    )
                    .with_help("drop `not graded` from the README marker: a check does grade it"),
                ),
                Some(_) => {}
            }
        }
    }
    let covered: BTreeSet<&str> = exercise
        .checks
        .iter()
        .flat_map(|c| c.covers.iter().map(|i| i.id.as_str()))
        .collect();
    for u in &exercise.untested {
        match seen.get(u.id.as_str()) {
            None => diags.push(unknown(u, "`untested`")),
            Some(_) if covered.contains(u.id.as_str()) => diags.push(
                Diagnostic::new(
                    file,
                    u.span.clone(),
                    format!("[{}] is listed in `untested`, but a check covers it", u.id),
                )
                .with_help("remove it from `untested`"),
            ),
            Some(_) => {}
        }
    }
    for (r, cover) in matrix(exercise) {
        if cover == Cover::Missing {
            diags.push(
                Diagnostic::new(readme, r.span.clone(), format!("requirement [{}] has no check that can fail it", r.id))
                    .with_help(format!("add \"{}\" to the `covers` of a check that tests it (or write one); mark it `[{} not graded]` if no check can observe it", r.id, r.id)),
            );
        }
    }
    diags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_outside_code_are_requirements() {
        let readme = "Intro `[api-9.9]` here, `a code span\nthat wraps` [api-0.0].\n\n| a | b [api-0.1] |\n\n```\n[api-0.2]\n```\nAdvice [api-0.3 not graded]. A [link] and [x-y].\n";
        let found = requirements(readme);
        let ids: Vec<(&str, bool)> = found.iter().map(|r| (r.id.as_str(), r.graded)).collect();
        assert_eq!(
            ids,
            [("api-0.0", true), ("api-0.1", true), ("api-0.3", false)]
        );
        assert_eq!(&readme[found[1].span.clone()], "[api-0.1]");
    }

    #[test]
    fn ids_have_a_prefix_and_dotted_numbers() {
        assert!(is_requirement_id("pag-5.2"));
        assert!(is_requirement_id("idx-1"));
        assert!(!is_requirement_id("pag-"));
        assert!(!is_requirement_id("Pag-1"));
        assert!(!is_requirement_id("pag-1..2"));
        assert!(!is_requirement_id("pag"));
    }
}
