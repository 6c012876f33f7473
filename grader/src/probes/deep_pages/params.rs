//! `deep_pages` parameters: the list to walk, how deep, the allowed cost ratio, and what the pages
//! must hold.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::db_params::{parse_answers, parse_sample, Answer, DEFAULT_LARGE};
use crate::probes::request::de;
use crate::probes::request::{query, request, ProbeRequest};
use crate::spec::JsonQuery;

/// `deep_pages`: the buffers of page `page` of a list, reached through its next links, must stay
/// within `max_ratio` of page 1's; no item may appear on two pages, and `answers` compare pages
/// with the grader's data set.
#[derive(Debug, Clone)]
pub struct DeepPages {
    pub sample: Vec<(String, String)>,
    /// The first page.
    pub request: ProbeRequest,
    /// JSONPath of the next page's link (a path or URL); absent or null on the last page.
    pub next: JsonQuery,
    pub page: u32,
    pub max_ratio: f64,
    pub large_table_rows: f64,
    /// Selects a page's items (`$.items[*]`).
    pub items: JsonQuery,
    /// An item's identity inside it (`$.id`): no identity may appear on two pages.
    pub identity: JsonQuery,
    /// Pages compared with answers computed from the grader's data set (`page = 1` or `page`).
    pub answers: Vec<Answer>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DeepPagesParams")]
pub struct RawDeepPages {
    #[serde(default)]
    sample: BTreeMap<String, String>,
    #[schemars(with = "crate::probes::request::RawRequest")]
    request: toml::Value,
    next: Option<String>,
    page: Option<u32>,
    max_ratio: Option<f64>,
    large_table_rows: Option<f64>,
    items: Option<String>,
    identity: Option<String>,
    #[serde(default)]
    #[schemars(with = "Vec<crate::probes::db_params::RawAnswer>")]
    answers: Vec<toml::Value>,
}

pub fn parse_deep_pages(params: toml::Value) -> Result<DeepPages, String> {
    let raw: RawDeepPages = de("params of `deep_pages`", params)?;
    let page = raw.page.unwrap_or(50);
    if !(2..=500).contains(&page) {
        return Err("`page` must be from 2 to 500".into());
    }
    let max_ratio = raw.max_ratio.unwrap_or(3.0);
    if max_ratio < 1.0 {
        return Err("`max_ratio` must be at least 1".into());
    }
    let sample = parse_sample(raw.sample)?;
    let answers = parse_answers(
        raw.answers,
        "page",
        |n| n == 1 || n == page as usize,
        &sample,
    )?;
    Ok(DeepPages {
        sample,
        request: request("deep_pages", 0, raw.request)?,
        next: query(raw.next.as_deref().unwrap_or("$.next"))?,
        page,
        max_ratio,
        large_table_rows: raw.large_table_rows.unwrap_or(DEFAULT_LARGE),
        items: query(raw.items.as_deref().unwrap_or("$.items[*]"))?,
        identity: query(raw.identity.as_deref().unwrap_or("$.id"))?,
        answers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> toml::Value {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn deep_pages_params() {
        let p = parse_deep_pages(v(r#"request = { method = "GET", path = "/x" }"#)).unwrap();
        assert_eq!(
            (p.page, p.max_ratio, p.next.text.as_str()),
            (50, 3.0, "$.next")
        );
        assert_eq!(
            (p.items.text.as_str(), p.identity.text.as_str()),
            ("$.items[*]", "$.id")
        );
        assert!(
            parse_deep_pages(v(r#"request = { method = "GET", path = "/x" }
page = 1"#))
            .is_err()
        );
        let err = parse_deep_pages(v(r#"request = { method = "GET", path = "/x" }
page = 5
sample = { deep = "SELECT json_agg(1)" }
answers = [{ page = 4, fields = ["id"], equals = "{{deep}}" }]"#))
        .unwrap_err();
        assert!(err.contains("no page 4"), "{err}");
    }
}
