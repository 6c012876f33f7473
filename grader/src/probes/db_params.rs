//! What the database probes' parameters share: read-only `sample` queries that pick real rows of
//! the grader's data set (and compute the answers and budgets that follow from them), answers to
//! compare with a sample, budgets that may come from a sample, and the size above which a table
//! counts as large.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{query, template_strings as request_templates, ProbeRequest};
use crate::spec::{template, JsonQuery};

pub const DEFAULT_LARGE: f64 = 10_000.0;

pub fn parse_sample(raw: BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    for (name, sql) in &raw {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("sample `{name}` is not a variable name"));
        }
        let head = sql.trim_start().to_ascii_lowercase();
        if !(head.starts_with("select") || head.starts_with("with")) {
            return Err(format!(
                "sample `{name}` must be a read-only SELECT (the grader never changes the learner's data)"
            ));
        }
    }
    Ok(raw.into_iter().collect())
}

/// Template strings for the static variable check, with the sampled variables (which exist only
/// at run time) replaced by text.
pub fn template_strings(requests: &[ProbeRequest], sample: &[(String, String)]) -> Vec<String> {
    request_templates(requests, None)
        .into_iter()
        .map(|mut s| {
            for (name, _) in sample {
                s = s.replace(&format!("{{{{{name}}}}}"), "sampled");
            }
            s
        })
        .collect()
}

/// The sample variable a template names when it is exactly `{{name}}`.
fn sampled_var(what: &str, text: &str, sample: &[(String, String)]) -> Result<String, String> {
    let vars = template::variables(text)?;
    match vars.as_slice() {
        [name] if text.trim() == format!("{{{{{name}}}}}") => {
            if sample.iter().any(|(n, _)| n == name) {
                Ok(name.clone())
            } else {
                Err(format!(
                    "{what} \"{text}\" must name a `sample` variable (the grader computes it from its data set)"
                ))
            }
        }
        _ => Err(format!(
            "{what} must be one sample variable, written \"{{{{name}}}}\"; got \"{text}\""
        )),
    }
}

/// Checks that a description only names sample variables.
fn check_description(what: &str, text: &str, sample: &[(String, String)]) -> Result<(), String> {
    for v in template::variables(text)? {
        if !sample.iter().any(|(n, _)| *n == v) {
            return Err(format!(
                "{what} names `{{{{{v}}}}}`, which is not a `sample` variable"
            ));
        }
    }
    Ok(())
}

/// A budget: a number, or a sample variable the grader computes from its data set (a budget that
/// scales with what the query must read).
#[derive(Debug, Clone, PartialEq)]
pub enum Budget {
    Fixed(f64),
    Sampled(String),
}

impl Budget {
    pub fn parse(
        what: &str,
        v: Option<toml::Value>,
        sample: &[(String, String)],
    ) -> Result<Option<Budget>, String> {
        Ok(match v {
            None => None,
            Some(toml::Value::Integer(n)) => Some(Budget::Fixed(n as f64)),
            Some(toml::Value::Float(f)) => Some(Budget::Fixed(f)),
            Some(toml::Value::String(s)) => Some(Budget::Sampled(sampled_var(what, &s, sample)?)),
            Some(other) => {
                return Err(format!(
                    "{what} must be a number or a sample variable (\"{{{{name}}}}\"), not {}",
                    other.type_str()
                ))
            }
        })
    }

    /// The budget's value; a sampled one must be a number.
    pub fn value(&self, scope: &template::Scope) -> Result<f64, String> {
        match self {
            Budget::Fixed(n) => Ok(*n),
            Budget::Sampled(name) => scope
                .get(name)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| format!("sample `{name}` must give a number to serve as a budget")),
        }
    }

    /// How the budget was set, for messages: "" or " (computed from the data set: `name`)".
    pub fn origin(&self) -> String {
        match self {
            Budget::Fixed(_) => String::new(),
            Budget::Sampled(name) => {
                format!(" (computed from the data set by sample `{name}`)")
            }
        }
    }
}

/// An answer the grader knows from its own data: the elements a JSONPath selects in a response
/// must equal, in order and field by field, the JSON array a sample query computed.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The request (1-based) or page whose response is compared.
    pub at: usize,
    /// Selects the list's elements (`$.items[*]`), or the document itself (`$`).
    pub items: JsonQuery,
    /// Fields compared in each element; dotted for nested objects (`customer.email`).
    pub fields: Vec<String>,
    /// The sample variable holding the expected array.
    pub equals: String,
    /// What the expected list is, for messages (may name sample variables).
    pub what: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DbAnswer")]
pub struct RawAnswer {
    request: Option<usize>,
    page: Option<usize>,
    items: Option<String>,
    fields: Vec<String>,
    equals: String,
    what: Option<String>,
}

/// Parses `answers`. `at_key` is `request` (query_plan) or `page` (deep_pages); `valid` says
/// which numbers it may take.
pub fn parse_answers(
    raw: Vec<toml::Value>,
    at_key: &str,
    valid: impl Fn(usize) -> bool,
    sample: &[(String, String)],
) -> Result<Vec<Answer>, String> {
    raw.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let what = format!("answers[{i}]");
            let a: RawAnswer = v
                .try_into()
                .map_err(|e: toml::de::Error| format!("{what}: {}", e.message()))?;
            let at = match (at_key, a.request, a.page) {
                ("request", n, None) => n.unwrap_or(1),
                ("page", None, n) => n.unwrap_or(1),
                _ => return Err(format!("{what}: use `{at_key}` to say which response")),
            };
            if !valid(at) {
                return Err(format!("{what}: there is no {at_key} {at}"));
            }
            if a.fields.is_empty()
                || a.fields.iter().any(|f| {
                    f.is_empty()
                        || f.split('.')
                            .any(|p| p.is_empty() || p.chars().any(char::is_whitespace))
                })
            {
                return Err(format!(
                    "{what}: `fields` lists the fields to compare (`id`, `customer.email`)"
                ));
            }
            let description = a.what.unwrap_or_else(|| "the grader's data set".into());
            check_description(&format!("{what}.what"), &description, sample)?;
            Ok(Answer {
                at,
                items: query(a.items.as_deref().unwrap_or("$.items[*]"))?,
                fields: a.fields,
                equals: sampled_var(&format!("{what}.equals"), &a.equals, sample)?,
                what: description,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, String)> {
        vec![
            ("expected".into(), "SELECT 1".into()),
            ("budget".into(), "SELECT 2".into()),
        ]
    }

    #[test]
    fn budgets_are_numbers_or_sample_variables() {
        let s = sample();
        assert_eq!(
            Budget::parse("b", Some(toml::Value::Integer(40)), &s).unwrap(),
            Some(Budget::Fixed(40.0))
        );
        assert_eq!(
            Budget::parse("b", Some(toml::Value::String("{{budget}}".into())), &s).unwrap(),
            Some(Budget::Sampled("budget".into()))
        );
        let err = Budget::parse("b", Some(toml::Value::String("{{nope}}".into())), &s).unwrap_err();
        assert!(err.contains("must name a `sample` variable"), "{err}");
        let err =
            Budget::parse("b", Some(toml::Value::String("x{{budget}}".into())), &s).unwrap_err();
        assert!(err.contains("one sample variable"), "{err}");
        let mut scope = template::Scope::new();
        scope.insert("budget".into(), serde_json::json!(31));
        assert_eq!(Budget::Sampled("budget".into()).value(&scope), Ok(31.0));
    }

    #[test]
    fn answers_name_a_sample_and_a_response() {
        let v: toml::Value = toml::from_str(
            r#"a = [{ request = 2, fields = ["id", "customer.email"], equals = "{{expected}}", what = "orders of {{budget}}" }]"#,
        )
        .unwrap();
        let raw = v["a"].as_array().unwrap().clone();
        let a = parse_answers(raw.clone(), "request", |n| n <= 2, &sample()).unwrap();
        assert_eq!((a[0].at, a[0].items.text.as_str()), (2, "$.items[*]"));
        assert_eq!(a[0].equals, "expected");
        let err = parse_answers(raw.clone(), "request", |n| n <= 1, &sample()).unwrap_err();
        assert!(err.contains("no request 2"), "{err}");
        let err = parse_answers(raw, "page", |_| true, &sample()).unwrap_err();
        assert!(err.contains("use `page`"), "{err}");
        let v: toml::Value =
            toml::from_str(r#"a = [{ fields = ["id"], equals = "{{x}}" }]"#).unwrap();
        let err = parse_answers(
            v["a"].as_array().unwrap().clone(),
            "request",
            |_| true,
            &sample(),
        )
        .unwrap_err();
        assert!(err.contains("must name a `sample` variable"), "{err}");
    }
}
