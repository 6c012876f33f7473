//! `service_log` parameters: the requests that hand the service secrets, the secrets (templates),
//! and how long to let its output settle before reading it.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{de, duration, request, template_strings, ProbeRequest};
use crate::spec::template;

/// How long the output may settle by default (a logger's buffer, Docker's log stream).
const DEFAULT_SETTLE: Duration = Duration::from_millis(500);
const MAX_SETTLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ServiceLog {
    /// Sent first, in order, each judged like an `upstream_calls` request.
    pub requests: Vec<ProbeRequest>,
    /// What must never be written: `"{{alice_token}}"`, `"{{password}}"`.
    pub secrets: Vec<String>,
    /// Waited after the last response before reading the output.
    pub settle: Duration,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ServiceLogParams")]
pub struct Raw {
    #[schemars(with = "Vec<crate::probes::request::RawRequest>")]
    requests: Vec<toml::Value>,
    secrets: Vec<String>,
    settle: Option<String>,
}

pub fn parse(params: toml::Value) -> Result<ServiceLog, String> {
    let raw: Raw = de("params of `service_log`", params)?;
    let requests = raw
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, v)| request("service_log", i, v))
        .collect::<Result<Vec<_>, _>>()?;
    if requests.is_empty() {
        return Err("params.requests hands the service its secrets: at least one request".into());
    }
    if raw.secrets.is_empty() {
        return Err("params.secrets lists what the output must not contain, e.g. [\"{{token}}\", \"{{password}}\"]".into());
    }
    for s in &raw.secrets {
        if template::variables(s)
            .map(|v| v.is_empty())
            .unwrap_or(false)
        {
            return Err(format!(
                "params.secrets: \"{s}\" names no variable; a secret is the run's own random data, e.g. \"{{{{password}}}}\""
            ));
        }
    }
    let settle = raw
        .settle
        .as_deref()
        .map(|s| duration("params.settle", s))
        .transpose()?
        .unwrap_or(DEFAULT_SETTLE);
    if settle > MAX_SETTLE {
        return Err(format!(
            "params.settle is at most {}s",
            MAX_SETTLE.as_secs()
        ));
    }
    Ok(ServiceLog {
        requests,
        secrets: raw.secrets,
        settle,
    })
}

impl ServiceLog {
    /// Template strings the probe will render, for the static variable check.
    pub fn template_strings(&self) -> Vec<String> {
        let mut out = template_strings(&self.requests, None);
        out.extend(self.secrets.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<ServiceLog, String> {
        parse(toml::from_str(text).unwrap())
    }

    const REQUEST: &str = r#"requests = [{ method = "GET", path = "/notes", headers = { Authorization = "Bearer {{token}}" }, status = 200 }]"#;

    #[test]
    fn requests_secrets_and_settle_parse() {
        let p = parse_text(&format!(
            "{REQUEST}\nsecrets = [\"{{{{token}}}}\", \"{{{{password}}}}\"]\nsettle = \"1s\""
        ))
        .unwrap();
        assert_eq!(p.secrets.len(), 2);
        assert_eq!(p.settle, Duration::from_secs(1));
        let p = parse_text(&format!("{REQUEST}\nsecrets = [\"{{{{token}}}}\"]")).unwrap();
        assert_eq!(p.settle, DEFAULT_SETTLE);
        assert!(p
            .template_strings()
            .contains(&"Bearer {{token}}".to_string()));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |extra: &str| parse_text(&format!("{REQUEST}\n{extra}")).unwrap_err();
        assert!(err("secrets = []").contains("params.secrets lists"));
        assert!(err("secrets = [\"hunter2\"]").contains("names no variable"));
        assert!(err("secrets = [\"{{t}}\"]\nsettle = \"1 fortnight\"").contains("not a duration"));
        assert!(err("secrets = [\"{{t}}\"]\nsettle = \"1m\"").contains("at most 10s"));
        assert!(err("secrets = [\"{{t}}\"]\nlog = true").contains("unknown field `log`"));
    }
}
