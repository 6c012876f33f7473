//! What the database probes' parameters share: read-only `sample` queries that pick real rows of
//! the grader's data set, and the size above which a table counts as large.

use std::collections::BTreeMap;

use crate::probes::request::{template_strings as request_templates, ProbeRequest};

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
