//! The vocabulary every check is written in: requests with `{{var}}` templates, expectations
//! (statuses, header and JSON predicates), captures, and seeded random data. Declarative steps and
//! probe parameters are both made of these; `exercise` parses files into them, `engine` runs them.
//! This module depends on nothing but `diagnostic`, so every other layer can use it.

pub mod calendar;
pub mod predicate;
pub mod random;
pub mod schema;
pub mod template;
pub mod token;

use regex::Regex;
use serde_json::Value;
use serde_json_path::JsonPath;

pub use predicate::{Predicate, PredicateOp};
pub use random::VarGen;

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub action: StepAction,
    pub captures: Vec<(String, CaptureSpec)>,
    /// How many times the step is sent in a row (1 = once); every answer is judged.
    pub repeat: u32,
}

impl Step {
    /// The variables the step sets for later ones: its captures, or its SQL query's.
    pub fn captured_names(&self) -> Vec<String> {
        let sql = match &self.action {
            StepAction::Sql(sql) => sql.captures.iter().map(|(n, _)| n.clone()).collect(),
            StepAction::Http { .. } => Vec::new(),
        };
        self.captures
            .iter()
            .map(|(n, _)| n.clone())
            .chain(sql)
            .collect()
    }

    /// An SQL query that keeps values for later steps (a count to compare after a request).
    pub fn keeps_sql_values(&self) -> bool {
        matches!(&self.action, StepAction::Sql(sql) if !sql.captures.is_empty())
    }
}

/// What a step does: send a request to the service, or read (or try to write) the service's
/// database as the grader.
#[derive(Debug, Clone)]
pub enum StepAction {
    Http {
        request: RequestSpec,
        expect: Expect,
    },
    Sql(SqlSpec),
}

/// A white-box step: SQL the grader runs on the service's database as PostgreSQL's superuser.
/// Parameters are templates, always sent as text (`$1`; cast in the SQL: `id::text = $1`), so a
/// value the service chose can never change the statement.
#[derive(Debug, Clone)]
pub struct SqlSpec {
    pub statement: String,
    pub params: Vec<String>,
    /// `sql.capture`: variable name → column of the row a query found, for later steps.
    pub captures: Vec<(String, String)>,
    pub expect: SqlExpect,
}

#[derive(Debug, Clone)]
pub enum SqlExpect {
    /// `sql.query`: read-only; it must find exactly one row, whose columns (by name) must hold the
    /// predicates.
    Row(Vec<(String, Predicate)>),
    /// `sql.statement` with `sql.refused = "23"`: a write run in a transaction the grader always
    /// rolls back. PostgreSQL must refuse it with an SQLSTATE starting with this (a class like
    /// `23`, integrity constraint violation, or a whole code like `23514`), after it matched a
    /// row: a statement that changed nothing proved nothing.
    Refused(String),
}

/// A request whose strings may hold `{{var}}` templates.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: String,
    /// Path (with query) relative to the service, or an absolute URL from a capture.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<BodySpec>,
}

#[derive(Debug, Clone)]
pub enum BodySpec {
    /// Sent as JSON; `Content-Type: application/json` unless the step sets one.
    Json(Value),
    /// Sent byte for byte (after templating).
    Raw(String),
}

#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub status: Option<StatusSpec>,
    pub headers: Vec<(String, Predicate)>,
    pub json: Vec<(JsonQuery, Predicate)>,
    pub body: Option<Predicate>,
    /// `no_body = true`: the step goes over a raw connection, and not one byte may follow the
    /// response head (HEAD, 204 and 304 responses have no body; RFC 9110 §6.4.1).
    pub no_body: bool,
}

/// Accepted status codes: exact codes and/or classes like `4xx`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSpec {
    pub codes: Vec<u16>,
    pub classes: Vec<u16>,
}

impl StatusSpec {
    /// `201`, `[200, 201]` or `"4xx"` from a file.
    pub fn parse(v: &toml::Value) -> Result<StatusSpec, String> {
        let mut spec = StatusSpec {
            codes: Vec::new(),
            classes: Vec::new(),
        };
        let items: Vec<&toml::Value> = match v {
            toml::Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        if items.is_empty() {
            return Err("`status` is an empty list".into());
        }
        for item in items {
            match item {
                toml::Value::Integer(i) if (100..=599).contains(i) => spec.codes.push(*i as u16),
                toml::Value::String(s) if s.len() == 3 && s.ends_with("xx") => {
                    match s[..1].parse::<u16>() {
                        Ok(c) if (1..=5).contains(&c) => spec.classes.push(c),
                        _ => return Err(format!("\"{s}\" is not a status class")),
                    }
                }
                other => return Err(format!("{other} is not a status code")),
            }
        }
        Ok(spec)
    }

    pub fn accepts(&self, status: u16) -> bool {
        self.codes.contains(&status) || self.classes.contains(&(status / 100))
    }

    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.codes.iter().map(|c| c.to_string()).collect();
        parts.extend(self.classes.iter().map(|c| format!("{c}xx")));
        match parts.len() {
            0 => "any status".into(),
            1 => parts.remove(0),
            _ => {
                let last = parts.pop().unwrap_or_default();
                format!("{} or {}", parts.join(", "), last)
            }
        }
    }
}

/// A compiled JSONPath with its source text for messages.
#[derive(Debug, Clone)]
pub struct JsonQuery {
    pub text: String,
    pub path: JsonPath,
}

#[derive(Debug, Clone)]
pub enum CaptureSpec {
    Header(String),
    Json(JsonQuery),
}

/// A regex with its source text for messages.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    pub regex: Regex,
}
