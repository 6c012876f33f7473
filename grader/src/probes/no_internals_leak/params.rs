//! `no_internals_leak` parameters: the write endpoint to attack, and which fields take strings
//! and numbers.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::spec::template;

/// `no_internals_leak`: sends awkward input (control characters, huge numbers, wrong types,
/// deeply nested JSON, invalid UTF-8, odd ids) and fails if any response leaks a stack trace, a
/// database error or a source path, or if the service stops answering its health path.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "NoInternalsLeakParams")]
pub struct NoInternalsLeak {
    /// Method of the write endpoint to attack, e.g. `POST`.
    pub method: String,
    /// Path of the write endpoint, e.g. `/products`.
    pub path: String,
    /// A valid JSON body (templates allowed); the probe breaks one field at a time.
    pub body: Value,
    /// Fields that take strings: get control characters, NUL, very long text, wrong types.
    #[serde(default)]
    pub string_fields: Vec<String>,
    /// Fields that take numbers: get huge, fractional, negative and non-numeric values.
    #[serde(default)]
    pub number_fields: Vec<String>,
    /// Prefix of an item URL, e.g. `/products/`; odd ids are appended and sent with GET.
    pub item_path: Option<String>,
    /// Health path that must still answer 2xx after the barrage.
    #[serde(default = "default_health")]
    pub health_path: String,
    /// Request headers sent with every request the probe makes (templates allowed), e.g.
    /// `Authorization = "Bearer {{token}}"` for an endpoint behind authentication.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Every 5xx must be a problem document whose `status` is the response's (the README's "a
    /// plain 500 problem document"): a framework's default HTML or text error page fails.
    #[serde(default)]
    pub server_errors_are_problems: bool,
}

fn default_health() -> String {
    "/healthz".into()
}

pub fn parse(params: toml::Value) -> Result<NoInternalsLeak, String> {
    let p: NoInternalsLeak = params
        .try_into()
        .map_err(|e: toml::de::Error| format!("params of `no_internals_leak`: {}", e.message()))?;
    if !p.body.is_object() {
        return Err(
            "params.body of `no_internals_leak` must be a table (a valid JSON object body)".into(),
        );
    }
    if let Some(name) = p.headers.keys().find(|k| {
        k.eq_ignore_ascii_case("content-type") || k.eq_ignore_ascii_case("content-length")
    }) {
        return Err(format!(
            "params.headers of `no_internals_leak` must not set `{name}`: the probe sets it for each awkward body"
        ));
    }
    for f in p.string_fields.iter().chain(&p.number_fields) {
        if p.body.get(f).is_none() {
            return Err(format!(
                "field `{f}` is listed but not present in params.body"
            ));
        }
    }
    Ok(p)
}

impl NoInternalsLeak {
    /// Template strings the probe will render, for the static variable check.
    pub fn template_strings(&self) -> Vec<String> {
        let mut out = vec![self.path.clone()];
        if let Ok(vars) = template::variables_in_json(&self.body) {
            out.extend(vars.into_iter().map(|v| format!("{{{{{v}}}}}")));
        }
        out.extend(self.item_path.clone());
        out.extend(self.headers.values().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<NoInternalsLeak, String> {
        parse(toml::from_str(text).unwrap())
    }

    const BASE: &str = r#"
        method = "POST"
        path = "/notes"
        body = { title = "{{title}}" }
        string_fields = ["title"]
    "#;

    #[test]
    fn headers_are_optional_and_templated() {
        assert!(parse_text(BASE).unwrap().headers.is_empty());
        let p = parse_text(&format!(
            "{BASE}\nheaders = {{ Authorization = \"Bearer {{{{token}}}}\" }}"
        ))
        .unwrap();
        assert_eq!(p.headers["Authorization"], "Bearer {{token}}");
        assert!(p
            .template_strings()
            .contains(&"Bearer {{token}}".to_string()));
    }

    #[test]
    fn headers_may_not_set_the_body_framing() {
        let err = parse_text(&format!(
            "{BASE}\nheaders = {{ content-type = \"text/plain\" }}"
        ))
        .unwrap_err();
        assert!(err.contains("must not set `content-type`"), "{err}");
    }
}
