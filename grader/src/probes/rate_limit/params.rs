//! `rate_limit` parameters: the attempt to repeat, the limit, what the refusal must carry, and
//! the two requests that show the limit is per client and ends when it says it does.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::probes::request::{de, query, request, template_strings_except, ProbeRequest};
use crate::spec::{predicate, JsonQuery, Predicate, StatusSpec};

/// Variables the probe itself provides: the attempt's number, from 1 (`limit + 1` is the refused
/// one, `limit + 2` the other client's request, `limit + 3` the retry).
pub const PROBE_VARS: &[&str] = &["attempt"];

/// The most attempts a check may allow before the refusal.
const MAX_LIMIT: u32 = 1000;
/// The longest `Retry-After` a check may accept (the probe waits that long).
const MAX_RETRY_AFTER: u64 = 120;

#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Sent first, in order, each judged as its `status` says: what the attempts need to exist
    /// (the accounts whose logins are limited, say).
    pub setup: Vec<ProbeRequest>,
    /// The attempt, sent `limit + 1` times back to back on one warm connection.
    pub request: ProbeRequest,
    /// Attempt `limit + 1`, when it differs from the others: the right password, say, so that a
    /// service that checks the password before the limit is seen to.
    pub over_limit: Option<ProbeRequest>,
    /// Attempts 1 to `limit` are served; attempt `limit + 1` must be refused with 429.
    pub limit: u32,
    /// Statuses attempts 1 to `limit` may answer (a wrong password's 401, say); never 429.
    pub within_limit_status: StatusSpec,
    /// Sent right after the refusal, as another client: must not be 429, must match its `status`.
    pub other_client: Option<ProbeRequest>,
    /// Sent once the refusal's `Retry-After` (plus [`super::run::RETRY_MARGIN`]) has passed on the
    /// grader's clock: must not be 429, must match its `status`.
    pub after_retry: Option<ProbeRequest>,
    /// The most seconds `Retry-After` may state (the window the README promises).
    pub max_retry_after: u64,
    /// The period the limit counts attempts over. When a slow service makes the attempts take
    /// longer than this, the earliest have left the window before attempt `limit + 1` is sent:
    /// that attempt being served then proves nothing, and the check says so as an error.
    pub window: Option<std::time::Duration>,
    /// JSONPath = predicate on the 429's body (a problem document, say).
    pub expect_json: Vec<(JsonQuery, Predicate)>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RateLimitParams")]
pub struct Raw {
    #[serde(default)]
    #[schemars(with = "Vec<crate::probes::request::RawRequest>")]
    setup: Vec<toml::Value>,
    #[schemars(with = "crate::probes::request::RawRequest")]
    request: toml::Value,
    #[schemars(with = "Option<crate::probes::request::RawRequest>")]
    over_limit: Option<toml::Value>,
    limit: u32,
    #[schemars(with = "crate::spec::schema::StatusSchema")]
    within_limit_status: toml::Value,
    #[schemars(with = "Option<crate::probes::request::RawRequest>")]
    other_client: Option<toml::Value>,
    #[schemars(with = "Option<crate::probes::request::RawRequest>")]
    after_retry: Option<toml::Value>,
    max_retry_after: u64,
    window: Option<String>,
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, serde_json::Value>")]
    expect_json: BTreeMap<String, toml::Value>,
}

pub fn parse(params: toml::Value) -> Result<RateLimit, String> {
    let raw: Raw = de("params of `rate_limit`", params)?;
    if raw.limit == 0 || raw.limit > MAX_LIMIT {
        return Err(format!(
            "`limit` is the number of attempts served before the refusal, 1 to {MAX_LIMIT}"
        ));
    }
    if raw.max_retry_after == 0 || raw.max_retry_after > MAX_RETRY_AFTER {
        return Err(format!(
            "`max_retry_after` is the most seconds the 429's Retry-After may state, 1 to {MAX_RETRY_AFTER} (the probe waits that long; give the check a `timeout` above it)"
        ));
    }
    let mut setup = Vec::new();
    for (i, v) in raw.setup.into_iter().enumerate() {
        let mut r = request("rate_limit", i, v).map_err(|e| format!("params.setup: {e}"))?;
        if r.same_as.is_some() {
            return Err("params.setup requests take no `same_as`".into());
        }
        r.name = match r.name.strip_prefix("request ") {
            Some(n) => format!("setup {n}"),
            None => r.name,
        };
        setup.push(r);
    }
    let mut attempt =
        request("rate_limit", 0, raw.request).map_err(|e| format!("params.request: {e}"))?;
    if attempt.expect.status.is_some() || !attempt.expect.json.is_empty() {
        return Err("params.request takes no `status` or `expect_json`: attempts 1 to `limit` are judged by `within_limit_status`, the next must answer 429 (with params.expect_json)".into());
    }
    attempt.name = named(attempt.name, "attempt");
    let over_limit = match raw.over_limit {
        None => None,
        Some(v) => {
            let mut r =
                request("rate_limit", 0, v).map_err(|e| format!("params.over_limit: {e}"))?;
            if r.expect.status.is_some() || !r.expect.json.is_empty() {
                return Err("params.over_limit takes no `status` or `expect_json`: it must answer 429 (with params.expect_json)".into());
            }
            r.name = named(r.name, "attempt");
            Some(r)
        }
    };
    let within_limit_status = StatusSpec::parse(&raw.within_limit_status)
        .map_err(|e| format!("params.within_limit_status: {e}"))?;
    if within_limit_status.accepts(429) {
        return Err(
            "params.within_limit_status must not accept 429: attempts within the limit are served"
                .into(),
        );
    }
    let follow_up = |v: Option<toml::Value>, what: &str| -> Result<Option<ProbeRequest>, String> {
        let Some(v) = v else { return Ok(None) };
        let mut r = request("rate_limit", 0, v).map_err(|e| format!("params.{what}: {e}"))?;
        if r.expect.status.as_ref().is_some_and(|s| s.accepts(429)) {
            return Err(format!("params.{what}.status must not accept 429"));
        }
        if r.same_as.is_some() {
            return Err(format!("params.{what} takes no `same_as`"));
        }
        r.name = named(r.name, &what.replace('_', " "));
        Ok(Some(r))
    };
    let other_client = follow_up(raw.other_client, "other_client")?;
    let after_retry = follow_up(raw.after_retry, "after_retry")?;
    let mut expect_json = Vec::new();
    for (path, pred) in raw.expect_json {
        expect_json.push((query(&path)?, predicate::parse(&pred)?));
    }
    Ok(RateLimit {
        setup,
        request: attempt,
        over_limit,
        limit: raw.limit,
        within_limit_status,
        other_client,
        after_retry,
        max_retry_after: raw.max_retry_after,
        window: raw
            .window
            .as_deref()
            .map(|w| crate::probes::request::duration("`window`", w))
            .transpose()?,
        expect_json,
    })
}

/// `request 1` (the parser's default name) becomes the role the request plays.
fn named(name: String, role: &str) -> String {
    if name == "request 1" {
        role.to_string()
    } else {
        name
    }
}

impl RateLimit {
    /// Template strings the probe will render, for the static variable check (`{{attempt}}` is
    /// the probe's own).
    pub fn template_strings(&self) -> Vec<String> {
        let mut requests = self.setup.clone();
        requests.push(self.request.clone());
        requests.extend(self.over_limit.clone());
        requests.extend(self.other_client.clone());
        requests.extend(self.after_retry.clone());
        let mut out = template_strings_except(&requests, PROBE_VARS);
        for (_, p) in &self.expect_json {
            out.extend(predicate::template_strings(p).into_iter().map(String::from));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<RateLimit, String> {
        parse(toml::from_str(text).unwrap())
    }

    const LOGIN: &str = r#"
        limit = 5
        within_limit_status = [401]
        max_retry_after = 10
        expect_json = { "$.status" = 429 }
        request = { method = "POST", path = "/accounts/login", json = { username = "{{user}}", password = "wrong-{{attempt}}" } }
        other_client = { method = "POST", path = "/accounts/login", json = { username = "{{other}}", password = "x" }, status = [401] }
        after_retry = { method = "POST", path = "/accounts/login", json = { username = "{{user}}", password = "{{password}}" }, status = 200 }
    "#;

    #[test]
    fn setup_requests_are_named_and_their_templates_checked() {
        let text = format!(
            "setup = [{{ method = \"POST\", path = \"/accounts\", json = {{ username = \"{{{{user}}}}\" }}, status = 201 }}]\n{LOGIN}"
        );
        let p = parse_text(&text).unwrap();
        assert_eq!(p.setup.len(), 1);
        assert_eq!(p.setup[0].name, "setup 1");
        assert!(p.template_strings().contains(&"{{user}}".to_string()));
        let same_as =
            format!("setup = [{{ method = \"GET\", path = \"/x\", same_as = 1 }}]\n{LOGIN}");
        assert!(parse_text(&same_as).is_err());
    }

    #[test]
    fn the_attempt_past_the_limit_may_differ_but_never_expects_a_status() {
        let over = |extra: &str| {
            format!("over_limit = {{ method = \"POST\", path = \"/accounts/login\", json = {{ password = \"{{{{password}}}}\" }}{extra} }}\n{LOGIN}")
        };
        let p = parse_text(&over("")).unwrap();
        assert_eq!(p.over_limit.as_ref().unwrap().name, "attempt");
        assert!(p.template_strings().contains(&"{{password}}".to_string()));
        assert!(parse_text(&over(", status = 200")).is_err());
    }

    #[test]
    fn a_login_limit_parses_with_its_follow_ups() {
        let p = parse_text(LOGIN).unwrap();
        assert_eq!(p.limit, 5);
        assert!(p.within_limit_status.accepts(401));
        assert_eq!(p.max_retry_after, 10);
        assert_eq!(p.request.name, "attempt");
        assert_eq!(p.other_client.as_ref().unwrap().name, "other client");
        assert!(p
            .after_retry
            .as_ref()
            .unwrap()
            .expect
            .status
            .as_ref()
            .unwrap()
            .accepts(200));
        assert_eq!(p.expect_json.len(), 1);
        // `{{attempt}}` is the probe's; the rest are the exercise's variables.
        let vars: Vec<String> = p
            .template_strings()
            .iter()
            .flat_map(|s| crate::spec::template::variables(s).unwrap())
            .collect();
        assert!(vars.contains(&"user".to_string()) && vars.contains(&"password".to_string()));
        assert!(!vars.contains(&"attempt".to_string()));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |limit: u32, status: &str, max: u64, extra: &str| {
            parse_text(&format!(
                "limit = {limit}\nwithin_limit_status = {status}\nmax_retry_after = {max}\n{extra}\n\
                 request = {{ method = \"POST\", path = \"/login\" }}"
            ))
            .unwrap_err()
        };
        assert!(err(0, "[401]", 10, "").contains("1 to 1000"));
        assert!(err(5, "[401]", 0, "").contains("`max_retry_after`"));
        assert!(err(5, "[401]", 600, "").contains("1 to 120"));
        assert!(err(5, "[401, 429]", 10, "").contains("must not accept 429"));
        assert!(err(5, "[401]", 10, "windw = \"3s\"").contains("unknown field `windw`"));
        assert!(err(
            5,
            "[401]",
            10,
            "after_retry = { method = \"GET\", path = \"/x\", status = \"4xx\" }"
        )
        .contains("after_retry.status must not accept 429"));
        let with_status = parse_text(
            "limit = 5\nwithin_limit_status = 401\nmax_retry_after = 10\n\
             request = { method = \"POST\", path = \"/login\", status = 401 }",
        );
        assert!(with_status.unwrap_err().contains("`within_limit_status`"));
    }
}
