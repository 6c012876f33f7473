//! Evaluates expectations and predicates against a response. Steps and probes both use this, so
//! an assertion reads the same wherever it fails.

use serde_json::Value;

use super::http::Response;
use crate::spec::template::{self, Scope};
use crate::spec::{Expect, Predicate, PredicateOp};

/// One expectation that did not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// What was looked at: `status`, `header Location`, `$.price_cents`, `body`.
    pub subject: String,
    pub expected: String,
    pub actual: String,
}

/// One line per mismatch, `subject: expected` or `subject: actual`, for a failure's
/// expected/actual fields.
pub fn mismatch_lines(mismatches: &[Mismatch], side: fn(&Mismatch) -> &str) -> String {
    mismatches
        .iter()
        .map(|m| format!("{}: {}", m.subject, side(m)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A value under test: JSON from a JSONPath, text from a header or body, or nothing.
#[derive(Debug, Clone)]
pub enum Actual {
    Missing,
    Text(String),
    Json(Value),
}

impl Actual {
    fn describe(&self) -> String {
        match self {
            Actual::Missing => "absent".into(),
            Actual::Text(t) if t.is_empty() => "empty".into(),
            Actual::Text(t) => format!("\"{}\"", shorten(t, 200)),
            Actual::Json(v) => describe_json(v),
        }
    }
}

/// Checks every expectation of a step; an empty result means the response is as expected.
pub fn check_expect(
    expect: &Expect,
    resp: &Response,
    scope: &Scope,
) -> Result<Vec<Mismatch>, String> {
    let mut out = Vec::new();
    if let Some(status) = &expect.status {
        if !status.accepts(resp.status) {
            out.push(Mismatch {
                subject: "status".into(),
                expected: status.describe(),
                actual: resp.status.to_string(),
            });
        }
    }
    for (name, pred) in &expect.headers {
        let actual = resp
            .header(name)
            .map(Actual::Text)
            .unwrap_or(Actual::Missing);
        out.extend(
            check(pred, &actual, scope)?
                .into_iter()
                .map(|(expected, actual)| Mismatch {
                    subject: format!("header {}", display_header(name)),
                    expected,
                    actual,
                }),
        );
    }
    if !expect.json.is_empty() {
        match serde_json::from_slice::<Value>(&resp.body) {
            Ok(doc) => {
                for (query, pred) in &expect.json {
                    let nodes = query.path.query(&doc);
                    let actual = if pred.is_over_all_matches() {
                        Actual::Json(Value::Array(nodes.all().into_iter().cloned().collect()))
                    } else {
                        match nodes.at_most_one() {
                        Ok(Some(v)) => Actual::Json(v.clone()),
                        Ok(None) => Actual::Missing,
                        Err(_) => {
                            return Err(format!(
                            "JSONPath {} matched several values; the exercise should select one (or judge them all with `includes` / `excludes`)",
                            query.text
                        ))
                        }
                    }
                    };
                    out.extend(check(pred, &actual, scope)?.into_iter().map(
                        |(expected, actual)| Mismatch {
                            subject: query.text.clone(),
                            expected,
                            actual,
                        },
                    ));
                }
            }
            Err(e) => out.push(Mismatch {
                subject: "body".into(),
                expected: "a JSON document".into(),
                actual: if resp.body.is_empty() {
                    "an empty body".into()
                } else {
                    format!(
                        "text that is not JSON ({e}), Content-Type {}: \"{}\"",
                        resp.header("content-type")
                            .unwrap_or_else(|| "absent".into()),
                        shorten(&resp.text(), 120)
                    )
                },
            }),
        }
    }
    if let Some(pred) = &expect.body {
        let actual = Actual::Text(resp.text());
        out.extend(
            check(pred, &actual, scope)?
                .into_iter()
                .map(|(expected, actual)| Mismatch {
                    subject: "body".into(),
                    expected,
                    actual,
                }),
        );
    }
    Ok(out)
}

/// Evaluates a predicate; returns (expected, actual) for each operator that failed.
/// `Err` means the exercise itself is broken (a template referring to nothing).
pub fn check(
    pred: &Predicate,
    actual: &Actual,
    scope: &Scope,
) -> Result<Vec<(String, String)>, String> {
    let mut failures = Vec::new();
    for op in &pred.ops {
        if let Some(expected) = failed(op, actual, scope)? {
            failures.push((expected, actual.describe()));
        }
    }
    Ok(failures)
}

/// `Some(expected)` when the operator does not hold.
fn failed(op: &PredicateOp, actual: &Actual, scope: &Scope) -> Result<Option<String>, String> {
    let text = match actual {
        Actual::Text(t) => Some(t.clone()),
        Actual::Json(Value::String(s)) => Some(s.clone()),
        Actual::Json(v) => Some(v.to_string()),
        Actual::Missing => None,
    };
    let render = |s: &str| template::render(s, scope);
    Ok(match op {
        PredicateOp::Equals(v) => {
            let want = template::render_json(v, scope)?;
            (!equals(actual, &want)).then(|| describe_json(&want))
        }
        PredicateOp::NotEquals(v) => {
            let want = template::render_json(v, scope)?;
            equals(actual, &want).then(|| format!("anything but {}", describe_json(&want)))
        }
        PredicateOp::Exists(true) => matches!(actual, Actual::Missing).then(|| "present".into()),
        PredicateOp::Exists(false) => (!matches!(actual, Actual::Missing)).then(|| "absent".into()),
        PredicateOp::Matches(p) => (!text.as_deref().is_some_and(|t| p.regex.is_match(t)))
            .then(|| format!("matching /{}/", p.text)),
        PredicateOp::NotMatches(p) => text
            .as_deref()
            .is_some_and(|t| p.regex.is_match(t))
            .then(|| format!("not matching /{}/", p.text)),
        PredicateOp::Contains(s) => {
            let s = render(s)?;
            (!text.as_deref().is_some_and(|t| t.contains(&s)))
                .then(|| format!("containing \"{s}\""))
        }
        PredicateOp::NotContains(s) => {
            let s = render(s)?;
            text.as_deref()
                .is_some_and(|t| t.contains(&s))
                .then(|| format!("not containing \"{s}\""))
        }
        PredicateOp::StartsWith(s) => {
            let s = render(s)?;
            (!text.as_deref().is_some_and(|t| t.starts_with(&s)))
                .then(|| format!("starting with \"{s}\""))
        }
        PredicateOp::OneOf(values) => {
            let wants = values
                .iter()
                .map(|v| template::render_json(v, scope))
                .collect::<Result<Vec<_>, _>>()?;
            (!wants.iter().any(|w| equals(actual, w))).then(|| {
                format!(
                    "one of {}",
                    wants
                        .iter()
                        .map(describe_json)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        }
        PredicateOp::Includes(v) | PredicateOp::Excludes(v) => {
            let want = template::render_json(v, scope)?;
            let found = match actual {
                Actual::Json(Value::Array(items)) => items
                    .iter()
                    .any(|item| equals(&Actual::Json(item.clone()), &want)),
                Actual::Missing => false,
                other => equals(other, &want),
            };
            match op {
                PredicateOp::Includes(_) if !found => {
                    Some(format!("values including {}", describe_json(&want)))
                }
                PredicateOp::Excludes(_) if found => {
                    Some(format!("values without {}", describe_json(&want)))
                }
                _ => None,
            }
        }
        PredicateOp::Type(t) => (!has_type(actual, t)).then(|| format!("a JSON {t}")),
        PredicateOp::Empty(want_empty) => {
            let empty = match actual {
                Actual::Missing => true,
                Actual::Text(t) => t.is_empty(),
                Actual::Json(Value::String(s)) => s.is_empty(),
                Actual::Json(Value::Array(a)) => a.is_empty(),
                Actual::Json(Value::Object(o)) => o.is_empty(),
                Actual::Json(_) => false,
            };
            (empty != *want_empty).then(|| {
                if *want_empty {
                    "empty".into()
                } else {
                    "not empty".into()
                }
            })
        }
        PredicateOp::MediaType(want) => {
            let want = render(want)?;
            let got = text.as_deref().map(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
            (got.as_deref() != Some(want.as_str())).then(|| format!("media type {want}"))
        }
        PredicateOp::ListContains(items) => {
            let have: Vec<String> = text
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(|s| s.trim().to_string())
                .collect();
            let mut missing = Vec::new();
            for item in items {
                let item = render(item)?;
                if !have.contains(&item) {
                    missing.push(item);
                }
            }
            (!missing.is_empty()).then(|| {
                format!(
                    "a list including {}",
                    items
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        }
    })
}

fn equals(actual: &Actual, want: &Value) -> bool {
    match actual {
        Actual::Missing => false,
        Actual::Json(v) => json_equals(v, want),
        Actual::Text(t) => match want {
            Value::String(s) => t == s,
            other => t == &other.to_string(),
        },
    }
}

/// JSON equality that treats 5 and 5.0 as the same number.
fn json_equals(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

fn has_type(actual: &Actual, t: &str) -> bool {
    let Actual::Json(v) = actual else {
        return t == "string" && matches!(actual, Actual::Text(_));
    };
    match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => false,
    }
}

/// A JSON value for messages, with its type when that is the likely mistake ("404" vs 404).
pub fn describe_json(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{}\" (a string)", shorten(s, 200)),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => shorten(&other.to_string(), 200),
    }
}

fn display_header(lower: &str) -> String {
    lower
        .split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::predicate::parse;
    use serde_json::json;

    fn pred(toml_text: &str) -> Predicate {
        let v: toml::Value = toml::from_str(&format!("p = {toml_text}")).unwrap();
        parse(&v["p"]).unwrap()
    }

    #[test]
    fn numbers_compare_by_value_and_strings_do_not_equal_numbers() {
        let scope = Scope::new();
        assert!(check(&pred("404"), &Actual::Json(json!(404)), &scope)
            .unwrap()
            .is_empty());
        let fails = check(&pred("404"), &Actual::Json(json!("404")), &scope).unwrap();
        assert_eq!(
            fails,
            vec![("404".to_string(), "\"404\" (a string)".to_string())]
        );
    }

    #[test]
    fn media_type_ignores_parameters_and_case() {
        let scope = Scope::new();
        let p = pred(r#"{ media_type = "application/problem+json" }"#);
        assert!(check(
            &p,
            &Actual::Text("Application/Problem+JSON; charset=utf-8".into()),
            &scope
        )
        .unwrap()
        .is_empty());
        assert_eq!(check(&p, &Actual::Missing, &scope).unwrap().len(), 1);
    }

    #[test]
    fn includes_and_excludes_judge_every_selected_value() {
        let mut scope = Scope::new();
        scope.insert("mine".into(), json!("n-2"));
        scope.insert("theirs".into(), json!("n-5"));
        let p = pred(r#"{ includes = "{{mine}}", excludes = "{{theirs}}" }"#);
        assert!(p.is_over_all_matches());
        let ids = |v: Value| Actual::Json(v);
        assert!(check(&p, &ids(json!(["n-1", "n-2"])), &scope)
            .unwrap()
            .is_empty());
        // A leaked id fails `excludes` even though the list also holds the caller's own.
        let fails = check(&p, &ids(json!(["n-2", "n-5"])), &scope).unwrap();
        assert_eq!(fails.len(), 1);
        assert!(fails[0].0.contains("without \"n-5\""), "{fails:?}");
        // Nothing selected: nothing is included, and nothing is leaked.
        let fails = check(&p, &Actual::Missing, &scope).unwrap();
        assert_eq!(fails.len(), 1);
        assert!(fails[0].0.contains("including"), "{fails:?}");
        assert!(crate::spec::predicate::parse(
            &toml::from_str::<toml::Value>("x = { includes = 1, exists = true }").unwrap()["x"]
        )
        .is_err());
    }

    #[test]
    fn list_contains_reads_comma_separated_tokens() {
        let scope = Scope::new();
        let p = pred(r#"{ list_contains = ["GET", "POST"] }"#);
        assert!(check(&p, &Actual::Text("GET, HEAD,POST".into()), &scope)
            .unwrap()
            .is_empty());
        assert_eq!(
            check(&p, &Actual::Text("GET, HEAD".into()), &scope)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn templates_render_in_expectations() {
        let mut scope = Scope::new();
        scope.insert("price".into(), json!(990));
        assert!(
            check(&pred(r#""{{price}}""#), &Actual::Json(json!(990)), &scope)
                .unwrap()
                .is_empty()
        );
        assert!(check(&pred(r#""{{nope}}""#), &Actual::Json(json!(1)), &scope).is_err());
    }
}
