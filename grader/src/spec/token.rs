//! `gen = "jwt"` variables: access tokens the grader's mock OpenID issuer (an `oidc-issuer`
//! upstream) signs when a check runs. This is the declaration only, plain data; the issuer
//! (`upstream::issuer`) holds the keys and signs, the engine mints a check's tokens.
//!
//! ```toml
//! [vars]
//! user  = { gen = "slug" }
//! token = { gen = "jwt", sub = "{{user}}", roles = ["admin"], scope = "notes:read" }
//! late  = { gen = "jwt", sub = "{{user}}", expires_in = "-5m" }        # expired
//! forged = { gen = "jwt", sub = "{{user}}", attack = "hs256-public-key" }
//! ```

use serde_json::Value;

use super::template;

/// The signature algorithm of a minted token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlg {
    Rs256,
    Es256,
}

impl JwtAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlg::Rs256 => "RS256",
            JwtAlg::Es256 => "ES256",
        }
    }
}

/// A token that must be refused, made on purpose (`attack = "none"`, ... in exercise.toml; the
/// schema's names are the kebab-case ones the parser reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JwtAttack {
    /// Header `alg: none`, empty signature, claims otherwise valid.
    None,
    /// Algorithm confusion: `alg: HS256`, HMAC key = the issuer's current RSA public key as SPKI
    /// PEM text, `kid` = that key's kid.
    Hs256PublicKey,
    /// A valid token whose signature bytes were altered (still valid base64url).
    TamperedSignature,
    /// Signed by a key the issuer never publishes, with a random `kid`.
    UnknownKid,
    /// Signed by the issuer's current (published) key, but the header names a `kid` that is not
    /// in the key set: a service that falls back to trying every key accepts it.
    UnlistedKid,
    /// The signature was made over other claims (another `sub`) than the token carries.
    TamperedClaims,
}

pub const ATTACKS: &[&str] = &[
    "none",
    "hs256-public-key",
    "tampered-signature",
    "unknown-kid",
    "unlisted-kid",
    "tampered-claims",
];

impl JwtAttack {
    pub fn parse(text: &str) -> Option<JwtAttack> {
        Some(match text {
            "none" => JwtAttack::None,
            "hs256-public-key" => JwtAttack::Hs256PublicKey,
            "tampered-signature" => JwtAttack::TamperedSignature,
            "unknown-kid" => JwtAttack::UnknownKid,
            "unlisted-kid" => JwtAttack::UnlistedKid,
            "tampered-claims" => JwtAttack::TamperedClaims,
            _ => return None,
        })
    }
}

/// What a `gen = "jwt"` variable declares. String fields may hold `{{var}}` templates naming
/// the exercise's other (non-jwt) variables.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtSpec {
    /// The `oidc-issuer` upstream that signs it (resolved at parse time: the only one, when the
    /// variable does not name it).
    pub issuer: String,
    /// `sub` claim (template); no `sub` claim when absent.
    pub sub: Option<String>,
    /// `roles` claim (templates), always present (default `[]`).
    pub roles: Vec<String>,
    /// `scope` claim (template), when given.
    pub scope: Option<String>,
    pub alg: JwtAlg,
    /// `exp` = now + this (seconds; negative for an expired token). Default 300.
    pub expires_in: i64,
    /// `nbf` = now + this, when given; no `nbf` claim otherwise.
    pub not_before: Option<i64>,
    /// `aud` override: a string or an array of strings (templates). Default: the issuer's
    /// `audience`.
    pub aud: Option<Value>,
    /// `iss` override (template). Default: the issuer's URL.
    pub iss: Option<String>,
    /// Extra claims laid over the standard ones (templates rendered, types kept).
    pub claims: serde_json::Map<String, Value>,
    /// Rotate the issuer's keys (once per check that uses the variable) before signing.
    pub rotate: bool,
    pub attack: Option<JwtAttack>,
}

impl JwtSpec {
    /// Every template string, for the static variable check.
    pub fn template_strings(&self) -> Result<Vec<String>, String> {
        let mut names = Vec::new();
        for s in self
            .sub
            .iter()
            .chain(&self.roles)
            .chain(&self.scope)
            .chain(&self.iss)
        {
            names.extend(template::variables(s)?);
        }
        if let Some(aud) = &self.aud {
            names.extend(template::variables_in_json(aud)?);
        }
        names.extend(template::variables_in_json(&Value::Object(
            self.claims.clone(),
        ))?);
        Ok(names)
    }
}

const FIELDS: &[&str] = &[
    "gen",
    "issuer",
    "sub",
    "roles",
    "scope",
    "alg",
    "expires_in",
    "not_before",
    "aud",
    "iss",
    "claims",
    "rotate",
    "attack",
];

/// Parses `{ gen = "jwt", ... }`. `issuers` are the exercise's `oidc-issuer` upstreams.
pub fn parse(t: &toml::Table, issuers: &[String]) -> Result<JwtSpec, String> {
    if let Some(extra) = t.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "`{extra}` does not apply to gen = \"jwt\"; its fields are {}",
            FIELDS[1..].join(", ")
        ));
    }
    let string = |k: &str| -> Result<Option<String>, String> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{k}` of a jwt variable must be a string")),
        }
    };
    let issuer = match string("issuer")? {
        Some(name) if issuers.contains(&name) => name,
        Some(name) => {
            return Err(format!(
                "issuer \"{name}\" is not an oidc-issuer upstream of this exercise ({})",
                describe_issuers(issuers)
            ))
        }
        None => match issuers {
            [only] => only.clone(),
            [] => {
                return Err("a jwt variable needs an oidc-issuer upstream to sign it: declare [upstreams.NAME] with kind = \"oidc-issuer\"".into())
            }
            _ => {
                return Err(format!(
                    "this exercise has several oidc-issuer upstreams ({}): name one with `issuer`",
                    describe_issuers(issuers)
                ))
            }
        },
    };
    let roles = match t.get("roles") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or("`roles` must be an array of strings")?,
        Some(_) => return Err("`roles` must be an array of strings".into()),
    };
    let alg = match string("alg")?.as_deref() {
        None | Some("RS256") => JwtAlg::Rs256,
        Some("ES256") => JwtAlg::Es256,
        Some(other) => {
            return Err(format!(
                "alg \"{other}\" is not \"RS256\" or \"ES256\" (forged algorithms are `attack`s)"
            ))
        }
    };
    let expires_in = match string("expires_in")? {
        None => 300,
        Some(d) => signed_seconds(&d).map_err(|e| format!("`expires_in`: {e}"))?,
    };
    let not_before = string("not_before")?
        .map(|d| signed_seconds(&d).map_err(|e| format!("`not_before`: {e}")))
        .transpose()?;
    let aud = match t.get("aud") {
        None => None,
        Some(toml::Value::String(s)) => Some(Value::String(s.clone())),
        Some(toml::Value::Array(items)) if items.iter().all(|i| i.is_str()) => Some(Value::Array(
            items
                .iter()
                .filter_map(|i| i.as_str().map(|s| Value::String(s.to_string())))
                .collect(),
        )),
        Some(_) => return Err("`aud` must be a string or an array of strings".into()),
    };
    let claims = match t.get("claims") {
        None => serde_json::Map::new(),
        Some(v @ toml::Value::Table(_)) => match super::predicate::to_json(v)? {
            Value::Object(map) => map,
            _ => unreachable!("a table converts to an object"),
        },
        Some(_) => return Err("`claims` must be a table of extra claims".into()),
    };
    let rotate = match t.get("rotate") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => return Err("`rotate` must be true or false".into()),
    };
    let attack = match string("attack")? {
        None => None,
        Some(a) => Some(JwtAttack::parse(&a).ok_or_else(|| {
            format!(
                "attack \"{a}\" is unknown; use one of {}",
                ATTACKS
                    .iter()
                    .map(|a| format!("\"{a}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?),
    };
    let spec = JwtSpec {
        issuer,
        sub: string("sub")?,
        roles,
        scope: string("scope")?,
        alg,
        expires_in,
        not_before,
        aud,
        iss: string("iss")?,
        claims,
        rotate,
        attack,
    };
    spec.template_strings()?;
    Ok(spec)
}

fn describe_issuers(issuers: &[String]) -> String {
    if issuers.is_empty() {
        "it has none".into()
    } else {
        format!("it has {}", issuers.join(", "))
    }
}

/// `"5m"` → 300, `"-5m"` → -300 (humantime durations with an optional sign).
pub fn signed_seconds(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    let (sign, rest) = match trimmed.strip_prefix('-') {
        Some(rest) => (-1, rest.trim_start()),
        None => (1, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let d = humantime::parse_duration(rest).map_err(|e| {
        format!("\"{text}\" is not a duration ({e}); write e.g. \"5m\", \"90s\" or \"-5m\"")
    })?;
    let secs = i64::try_from(d.as_secs())
        .ok()
        .filter(|s| *s <= 10 * 365 * 24 * 3600)
        .ok_or_else(|| format!("\"{text}\" is longer than ten years"))?;
    Ok(sign * secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(text: &str) -> Result<JwtSpec, String> {
        let t: toml::Table = toml::from_str(text).unwrap();
        parse(&t, &["issuer".to_string()])
    }

    #[test]
    fn defaults_and_fields() {
        let s = jwt("gen = \"jwt\"\nsub = \"{{user}}\"").unwrap();
        assert_eq!(s.issuer, "issuer");
        assert_eq!(
            (s.alg, s.expires_in, s.not_before),
            (JwtAlg::Rs256, 300, None)
        );
        assert!(s.roles.is_empty() && !s.rotate && s.attack.is_none());
        assert_eq!(s.template_strings().unwrap(), ["user"]);
        let s = jwt(
            "gen = \"jwt\"\nalg = \"ES256\"\nexpires_in = \"-5m\"\nnot_before = \"1h\"\n\
             aud = [\"a\", \"{{x}}\"]\nclaims = { tenant = \"{{t}}\", n = 1 }\n\
             roles = [\"admin\"]\nrotate = true\nattack = \"unknown-kid\"",
        )
        .unwrap();
        assert_eq!(
            (s.alg, s.expires_in, s.not_before),
            (JwtAlg::Es256, -300, Some(3600))
        );
        assert_eq!(s.attack, Some(JwtAttack::UnknownKid));
        assert_eq!(s.template_strings().unwrap(), ["x", "t"]);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| jwt(&format!("gen = \"jwt\"\n{text}")).unwrap_err();
        assert!(err("subject = \"a\"").contains("`subject` does not apply"));
        assert!(err("alg = \"HS256\"").contains("alg \"HS256\""));
        assert!(err("attack = \"nope\"").contains("\"tampered-claims\""));
        assert!(err("expires_in = \"soon\"").contains("`expires_in`"));
        assert!(err("not_before = \"-\"").contains("`not_before`"));
        assert!(err("issuer = \"other\"").contains("not an oidc-issuer upstream"));
        assert!(err("roles = \"admin\"").contains("array of strings"));
        assert!(err("sub = \"{{a-b}}\"").contains("not a variable name"));
        let t: toml::Table = toml::from_str("gen = \"jwt\"").unwrap();
        assert!(parse(&t, &[])
            .unwrap_err()
            .contains("kind = \"oidc-issuer\""));
        assert!(parse(&t, &["a".into(), "b".into()])
            .unwrap_err()
            .contains("name one with `issuer`"));
        assert_eq!(signed_seconds("+90s"), Ok(90));
        assert_eq!(signed_seconds("- 1m"), Ok(-60));
    }
}
