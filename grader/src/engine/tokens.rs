//! The `gen = "jwt"` variables of a check: minted when the check runs (so `exp` counts from
//! then), after its other variables, by the `oidc-issuer` upstream each names. Only the tokens
//! the check uses are minted; minting draws nothing from the check's random stream, so the other
//! variables keep their values for a seed.
//!
//! Order: before the check's first request, [`prepare`] makes the keys the tokens need (the
//! issuer's first keys, the unpublished key of `attack = "unknown-kid"`) and rotates each issuer
//! **once** when any token of the check has `rotate = true`; then [`mint`] signs every token with
//! the issuer's current keys (the new ones after a rotation). Probes that take fresh values per
//! request ([`super::CheckContext::fresh_scope`]) mint the tokens again, without rotating.

use crate::spec::template::Scope;
use crate::spec::token::{JwtAttack, JwtSpec};
use crate::spec::VarGen;
use crate::upstream::{Issuer, Upstreams};

/// The tokens a check uses: names into the exercise's variables.
#[derive(Debug, Clone, Copy)]
pub struct CheckTokens<'a> {
    pub vars: &'a [(String, VarGen)],
    pub used: &'a [String],
}

impl<'a> CheckTokens<'a> {
    fn iter(self) -> impl Iterator<Item = (&'a str, &'a JwtSpec)> {
        self.vars.iter().filter_map(move |(name, gen)| {
            let spec = gen.jwt()?;
            self.used.contains(name).then_some((name.as_str(), spec))
        })
    }

    pub fn is_empty(self) -> bool {
        self.iter().next().is_none()
    }
}

fn issuer<'u>(upstreams: &'u Upstreams, spec: &JwtSpec) -> Result<&'u Issuer, String> {
    upstreams
        .get(&spec.issuer)?
        .issuer()
        .map(|i| &**i)
        .ok_or_else(|| format!("upstream `{}` is not an oidc-issuer", spec.issuer))
}

/// Makes the keys the check's tokens need, and rotates each issuer once if a token asks.
pub async fn prepare(tokens: CheckTokens<'_>, upstreams: &Upstreams) -> Result<(), String> {
    let mut rotated: Vec<&str> = Vec::new();
    for (_, spec) in tokens.iter() {
        let issuer = issuer(upstreams, spec)?;
        issuer.ready().await?;
        if spec.attack == Some(JwtAttack::UnknownKid) {
            issuer.ready_unpublished().await?;
        }
        if spec.rotate && !rotated.contains(&spec.issuer.as_str()) {
            issuer.rotate().await?;
            rotated.push(&spec.issuer);
        }
    }
    Ok(())
}

/// Signs each token with the templates rendered against `scope`, and adds it to `scope`.
pub fn mint(
    tokens: CheckTokens<'_>,
    scope: &mut Scope,
    upstreams: &Upstreams,
) -> Result<(), String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for (name, spec) in tokens.iter() {
        let token = issuer(upstreams, spec)?
            .mint(spec, scope, now)
            .map_err(|e| format!("cannot mint the token `{name}`: {e}"))?;
        scope.insert(name.to_string(), serde_json::Value::String(token));
    }
    Ok(())
}
