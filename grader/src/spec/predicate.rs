//! Predicates: what an expectation says about a value (a header, a JSONPath result, the body).
//!
//! In an exercise file a predicate is either a bare value (`= "{{sku}}"`, meaning equals) or a
//! table of operators that must all hold (`= { exists = true, matches = "^/products/" }`).
//! Evaluation lives in `engine::assert`; this module only parses.

use regex::Regex;
use serde_json::Value;

use super::Pattern;

#[derive(Debug, Clone)]
pub struct Predicate {
    pub ops: Vec<PredicateOp>,
}

/// One operator. String operands may hold `{{var}}` templates (except regexes).
#[derive(Debug, Clone)]
pub enum PredicateOp {
    Equals(Value),
    NotEquals(Value),
    /// `true`: the value is present; `false`: it is absent.
    Exists(bool),
    Matches(Pattern),
    NotMatches(Pattern),
    Contains(String),
    NotContains(String),
    StartsWith(String),
    OneOf(Vec<Value>),
    /// JSON type: string, number, integer, boolean, object, array, null.
    Type(String),
    /// `true`: empty string / array / object (or absent body).
    Empty(bool),
    /// Media type equality ignoring parameters and case, e.g. `application/problem+json`.
    MediaType(String),
    /// A comma-separated header list (like `Allow`) contains every token.
    ListContains(Vec<String>),
    /// One of the values a JSONPath selects (any number of them) equals this one.
    Includes(Value),
    /// None of the values a JSONPath selects equals this one (true when it selects nothing).
    Excludes(Value),
}

impl Predicate {
    /// `includes` and `excludes` judge every value a JSONPath selects, not exactly one.
    pub fn is_over_all_matches(&self) -> bool {
        self.ops
            .iter()
            .all(|op| matches!(op, PredicateOp::Includes(_) | PredicateOp::Excludes(_)))
    }
}

pub const JSON_TYPES: &[&str] = &[
    "string", "number", "integer", "boolean", "object", "array", "null",
];

pub const OPERATORS: &[&str] = &[
    "equals",
    "not_equals",
    "exists",
    "matches",
    "not_matches",
    "contains",
    "not_contains",
    "starts_with",
    "one_of",
    "type",
    "empty",
    "media_type",
    "list_contains",
    "includes",
    "excludes",
];

/// Parses a predicate from its TOML value. Errors are plain messages; the caller locates them.
pub fn parse(value: &toml::Value) -> Result<Predicate, String> {
    let table = match value {
        toml::Value::Table(t) => t,
        other => {
            return Ok(Predicate {
                ops: vec![PredicateOp::Equals(to_json(other)?)],
            })
        }
    };
    if table.is_empty() {
        return Err(format!(
            "an empty predicate checks nothing; use one of: {}",
            OPERATORS.join(", ")
        ));
    }
    let mut ops = Vec::new();
    for (key, v) in table {
        let op = match key.as_str() {
            "equals" => PredicateOp::Equals(to_json(v)?),
            "not_equals" => PredicateOp::NotEquals(to_json(v)?),
            "includes" => PredicateOp::Includes(to_json(v)?),
            "excludes" => PredicateOp::Excludes(to_json(v)?),
            "exists" => PredicateOp::Exists(boolean(key, v)?),
            "empty" => PredicateOp::Empty(boolean(key, v)?),
            "matches" => PredicateOp::Matches(pattern(key, v)?),
            "not_matches" => PredicateOp::NotMatches(pattern(key, v)?),
            "contains" => PredicateOp::Contains(string(key, v)?),
            "not_contains" => PredicateOp::NotContains(string(key, v)?),
            "starts_with" => PredicateOp::StartsWith(string(key, v)?),
            "media_type" => PredicateOp::MediaType(string(key, v)?.to_ascii_lowercase()),
            "one_of" => match v {
                toml::Value::Array(items) if !items.is_empty() => {
                    PredicateOp::OneOf(items.iter().map(to_json).collect::<Result<_, _>>()?)
                }
                _ => return Err("`one_of` takes a non-empty array".into()),
            },
            "list_contains" => match v {
                toml::Value::Array(items) if !items.is_empty() => PredicateOp::ListContains(
                    items
                        .iter()
                        .map(|i| string(key, i))
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err("`list_contains` takes a non-empty array of strings".into()),
            },
            "type" => {
                let t = string(key, v)?;
                if !JSON_TYPES.contains(&t.as_str()) {
                    return Err(format!(
                        "unknown type \"{t}\"; use one of: {}",
                        JSON_TYPES.join(", ")
                    ));
                }
                PredicateOp::Type(t)
            }
            other => {
                let help = match crate::diagnostic::did_you_mean(other, OPERATORS.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("use one of: {}", OPERATORS.join(", ")),
                };
                return Err(format!("unknown predicate `{other}`; {help}"));
            }
        };
        ops.push(op);
    }
    let predicate = Predicate { ops };
    let over_all = predicate
        .ops
        .iter()
        .any(|op| matches!(op, PredicateOp::Includes(_) | PredicateOp::Excludes(_)));
    if over_all && !predicate.is_over_all_matches() {
        return Err("`includes` and `excludes` judge every value a JSONPath selects (`$.items[*].id`); write other operators in another expectation".into());
    }
    Ok(predicate)
}

fn boolean(key: &str, v: &toml::Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("`{key}` takes true or false"))
}

fn string(key: &str, v: &toml::Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("`{key}` takes a string"))
}

fn pattern(key: &str, v: &toml::Value) -> Result<Pattern, String> {
    let text = string(key, v)?;
    let regex = Regex::new(&text).map_err(|e| format!("`{key}` is not a valid regex: {e}"))?;
    Ok(Pattern { text, regex })
}

/// TOML to JSON. Dates have no JSON form, so they are refused rather than guessed.
pub fn to_json(v: &toml::Value) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or("NaN and infinity have no JSON form")?,
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Array(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(t) => {
            let mut map = serde_json::Map::new();
            for (k, v) in t {
                map.insert(k.clone(), to_json(v)?);
            }
            Value::Object(map)
        }
        toml::Value::Datetime(d) => {
            return Err(format!(
                "TOML dates have no JSON form; quote it as a string: \"{d}\""
            ))
        }
    })
}

/// Strings a predicate renders, for template checks.
pub fn template_strings(p: &Predicate) -> Vec<&str> {
    let mut out = Vec::new();
    fn from_value<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|i| from_value(i, out)),
            Value::Object(m) => m.values().for_each(|i| from_value(i, out)),
            _ => {}
        }
    }
    for op in &p.ops {
        match op {
            PredicateOp::Equals(v)
            | PredicateOp::NotEquals(v)
            | PredicateOp::Includes(v)
            | PredicateOp::Excludes(v) => from_value(v, &mut out),
            PredicateOp::OneOf(vs) => vs.iter().for_each(|v| from_value(v, &mut out)),
            PredicateOp::Contains(s)
            | PredicateOp::NotContains(s)
            | PredicateOp::StartsWith(s)
            | PredicateOp::MediaType(s) => out.push(s),
            PredicateOp::ListContains(items) => out.extend(items.iter().map(String::as_str)),
            _ => {}
        }
    }
    out
}
