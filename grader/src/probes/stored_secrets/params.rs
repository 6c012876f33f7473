//! `stored_secrets` parameters: the requests that create the accounts, the accounts (identifier
//! and secret, templates), and the minimum costs of the password hashes.

use schemars::JsonSchema;
use serde::Deserialize;

use super::hashes::{Argon2Min, Policy, ScryptMin};
use crate::probes::request::{de, request, template_strings, ProbeRequest};

/// Rows read per table, at most.
pub const DEFAULT_MAX_ROWS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct StoredSecrets {
    /// Sent first, in order, each judged like an `upstream_calls` request (sign-ups, say).
    pub requests: Vec<ProbeRequest>,
    pub accounts: Vec<Account>,
    pub policy: Policy,
    /// Rows read per table, at most (the report says when a table had more).
    pub max_rows_per_table: u64,
}

/// An account the requests created: its identifier (a username) and its secret (a password).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "StoredSecretsAccount")]
pub struct Account {
    pub identifier: String,
    pub secret: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "StoredSecretsParams")]
pub struct Raw {
    #[serde(default)]
    #[schemars(with = "Vec<crate::probes::request::RawRequest>")]
    requests: Vec<toml::Value>,
    accounts: Vec<Account>,
    argon2: Option<Vec<RawArgon2>>,
    scrypt: Option<Vec<RawScrypt>>,
    bcrypt_min_cost: Option<u32>,
    max_rows_per_table: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "StoredSecretsArgon2")]
pub struct RawArgon2 {
    memory_kib: u64,
    iterations: u64,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "StoredSecretsScrypt")]
pub struct RawScrypt {
    ln: u32,
    r: u64,
    p: u64,
}

pub fn parse(params: toml::Value) -> Result<StoredSecrets, String> {
    let raw: Raw = de("params of `stored_secrets`", params)?;
    let requests = raw
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, v)| request("stored_secrets", i, v))
        .collect::<Result<Vec<_>, _>>()?;
    if raw.accounts.is_empty() {
        return Err("params.accounts lists the accounts the requests create: at least one `{ identifier = \"{{user}}\", secret = \"{{password}}\" }`".into());
    }
    for (i, a) in raw.accounts.iter().enumerate() {
        if a.identifier.trim().is_empty() || a.secret.trim().is_empty() {
            return Err(format!(
                "params.accounts[{i}] needs a non-empty `identifier` and `secret`"
            ));
        }
    }
    let mut policy = Policy::default();
    if let Some(a) = raw.argon2 {
        if a.is_empty() {
            return Err(
                "params.argon2 lists minimum configurations; leave it out for OWASP's".into(),
            );
        }
        policy.argon2 = a
            .into_iter()
            .map(|a| Argon2Min {
                memory_kib: a.memory_kib,
                iterations: a.iterations,
            })
            .collect();
    }
    if let Some(s) = raw.scrypt {
        if s.is_empty() || s.iter().any(|s| s.ln == 0 || s.ln > 40) {
            return Err("params.scrypt lists minimum configurations `{ ln, r, p }` (N = 2^ln, ln from 1 to 40); leave it out for OWASP's".into());
        }
        policy.scrypt = s
            .into_iter()
            .map(|s| ScryptMin {
                ln: s.ln,
                r: s.r,
                p: s.p,
            })
            .collect();
    }
    if let Some(c) = raw.bcrypt_min_cost {
        if !(4..=31).contains(&c) {
            return Err("params.bcrypt_min_cost is a bcrypt cost, 4 to 31".into());
        }
        policy.bcrypt_min_cost = c;
    }
    let max_rows_per_table = raw.max_rows_per_table.unwrap_or(DEFAULT_MAX_ROWS);
    if max_rows_per_table == 0 {
        return Err("params.max_rows_per_table must be at least 1".into());
    }
    Ok(StoredSecrets {
        requests,
        accounts: raw.accounts,
        policy,
        max_rows_per_table,
    })
}

impl StoredSecrets {
    /// Template strings the probe will render, for the static variable check.
    pub fn template_strings(&self) -> Vec<String> {
        let mut out = template_strings(&self.requests, None);
        for a in &self.accounts {
            out.push(a.identifier.clone());
            out.push(a.secret.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<StoredSecrets, String> {
        parse(toml::from_str(text).unwrap())
    }

    #[test]
    fn sign_ups_and_accounts_parse_with_owasp_defaults() {
        let p = parse_text(
            r#"
            accounts = [
              { identifier = "{{user1}}", secret = "{{password}}" },
              { identifier = "{{user2}}", secret = "{{password}}" },
            ]
            [[requests]]
            method = "POST"
            path = "/accounts"
            json = { username = "{{user1}}", password = "{{password}}" }
            status = 201
            "#,
        )
        .unwrap();
        assert_eq!(p.requests.len(), 1);
        assert_eq!(p.accounts.len(), 2);
        assert_eq!(p.policy, Policy::default());
        assert_eq!(p.max_rows_per_table, DEFAULT_MAX_ROWS);
        let t = p.template_strings();
        assert!(t.contains(&"{{user2}}".to_string()) && t.contains(&"{{password}}".to_string()));
    }

    #[test]
    fn thresholds_can_be_set_and_mistakes_are_named() {
        let p = parse_text(
            r#"
            accounts = [{ identifier = "a", secret = "b" }]
            argon2 = [{ memory_kib = 65536, iterations = 3 }]
            scrypt = [{ ln = 18, r = 8, p = 1 }]
            bcrypt_min_cost = 12
            max_rows_per_table = 50
            "#,
        )
        .unwrap();
        assert_eq!(p.policy.argon2[0].memory_kib, 65536);
        assert_eq!(p.policy.scrypt[0].ln, 18);
        assert_eq!(p.policy.bcrypt_min_cost, 12);
        assert_eq!(p.max_rows_per_table, 50);

        assert!(parse_text("accounts = []")
            .unwrap_err()
            .contains("at least one"));
        assert!(
            parse_text(r#"accounts = [{ identifier = "", secret = "b" }]"#)
                .unwrap_err()
                .contains("non-empty")
        );
        assert!(
            parse_text(r#"accounts = [{ identifier = "a", password = "b" }]"#)
                .unwrap_err()
                .contains("unknown field `password`")
        );
        assert!(parse_text(
            "accounts = [{ identifier = \"a\", secret = \"b\" }]\nbcrypt_min_cost = 40"
        )
        .unwrap_err()
        .contains("4 to 31"));
        assert!(
            parse_text("accounts = [{ identifier = \"a\", secret = \"b\" }]\nargon2 = []")
                .unwrap_err()
                .contains("OWASP")
        );
    }
}
