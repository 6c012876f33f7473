//! The grader's mock OpenID-Connect issuer (`kind = "oidc-issuer"`): the identity provider a
//! service trusts for its access tokens.
//!
//! It serves `GET /.well-known/openid-configuration` (`issuer` = its own URL exactly, `jwks_uri`)
//! and `GET /.well-known/jwks.json` (every key it ever signed with: one RSA 2048 key for RS256
//! and one P-256 key for ES256 per generation). It signs the tokens of `gen = "jwt"` variables
//! ([`Issuer::mint`]), including the forged ones of `attack`.
//!
//! **Keys.** Generation 0 is made when the run starts (in the background, off the async
//! threads: RSA key generation takes a while); each [`Issuer::rotate`] adds a generation, which
//! becomes the one tokens are signed with, while the JWKS keeps listing the old ones. Every key
//! comes from a ChaCha stream seeded by the run's seed, the upstream's name and the generation
//! number, so `--seed N` replays the same keys (and kids: RFC 7638 thumbprints). The key of
//! `attack = "unknown-kid"` comes from a stream of its own and is never published.

use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use p256::ecdsa::signature::Signer as _;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::SignatureEncoding as _;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::spec::template::{self, Scope};
use crate::spec::token::{JwtAlg, JwtAttack, JwtSpec};

/// RSA modulus size of the issuer's keys.
const RSA_BITS: usize = 2048;

/// One generation of signing keys: an RSA key (RS256) and a P-256 key (ES256).
struct KeyPair {
    rsa: RsaKey,
    ec: EcKey,
}

struct RsaKey {
    kid: String,
    signing: rsa::pkcs1v15::SigningKey<Sha256>,
    jwk: Value,
    /// The public key as SPKI PEM text: the HMAC secret of the algorithm-confusion attack.
    pem: String,
}

struct EcKey {
    kid: String,
    signing: p256::ecdsa::SigningKey,
    jwk: Value,
}

impl KeyPair {
    /// Deterministic for a stream: same seed, same keys.
    fn generate(rng: &mut rand_chacha::ChaCha8Rng) -> Result<KeyPair, String> {
        let private = rsa::RsaPrivateKey::new(rng, RSA_BITS)
            .map_err(|e| format!("cannot generate an RSA key: {e}"))?;
        let public = private.to_public_key();
        let (n, e) = (
            b64(&public.n().to_bytes_be()),
            b64(&public.e().to_bytes_be()),
        );
        // RFC 7638: the thumbprint of the required members, in lexicographic order.
        let rsa_kid = thumbprint(&format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#));
        let pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| format!("cannot encode the RSA public key: {e}"))?;
        let ec = p256::ecdsa::SigningKey::random(rng);
        let point = ec.verifying_key().to_encoded_point(false);
        let (x, y) = match (point.x(), point.y()) {
            (Some(x), Some(y)) => (b64(x), b64(y)),
            _ => return Err("the P-256 public key has no coordinates".into()),
        };
        let ec_kid = thumbprint(&format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#
        ));
        Ok(KeyPair {
            rsa: RsaKey {
                jwk: json!({"kty": "RSA", "kid": rsa_kid, "use": "sig", "alg": "RS256", "n": n, "e": e}),
                kid: rsa_kid,
                signing: rsa::pkcs1v15::SigningKey::<Sha256>::new(private),
                pem,
            },
            ec: EcKey {
                jwk: json!({"kty": "EC", "kid": ec_kid, "use": "sig", "alg": "ES256", "crv": "P-256", "x": x, "y": y}),
                kid: ec_kid,
                signing: ec,
            },
        })
    }

    fn kid(&self, alg: JwtAlg) -> &str {
        match alg {
            JwtAlg::Rs256 => &self.rsa.kid,
            JwtAlg::Es256 => &self.ec.kid,
        }
    }

    /// The JWS signature of `input` (RS256: PKCS#1 v1.5; ES256: the 64-byte `r || s`).
    fn sign(&self, alg: JwtAlg, input: &[u8]) -> Vec<u8> {
        match alg {
            JwtAlg::Rs256 => self.rsa.signing.sign(input).to_vec(),
            JwtAlg::Es256 => {
                let signature: p256::ecdsa::Signature = self.ec.signing.sign(input);
                signature.to_bytes().to_vec()
            }
        }
    }
}

#[derive(Default)]
struct Keys {
    /// Published generations, oldest first; the last one signs.
    generations: Vec<Arc<KeyPair>>,
    /// The key pair of `attack = "unknown-kid"`, never published.
    unpublished: Option<Arc<KeyPair>>,
}

/// A running issuer's keys and identity. Shared by its HTTP routes and the engine.
pub struct Issuer {
    name: String,
    url: String,
    audience: String,
    seed: u64,
    keys: Mutex<Keys>,
    /// One key generation at a time (the slow part runs on a blocking thread, outside `keys`).
    keygen: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Issuer({} at {})", self.name, self.url)
    }
}

impl Issuer {
    pub fn new(name: &str, url: &str, audience: &str, seed: u64) -> Issuer {
        Issuer {
            name: name.to_string(),
            url: url.to_string(),
            audience: audience.to_string(),
            seed,
            keys: Mutex::new(Keys::default()),
            keygen: tokio::sync::Mutex::new(()),
        }
    }

    /// The issuer identifier: its URL as handed to the service, no trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Key generations published so far (0 until the first keys exist).
    pub fn generations(&self) -> usize {
        self.lock().generations.len()
    }

    /// The stream a generation's keys come from: the run's seed, the issuer, the generation.
    fn stream(&self, what: &str) -> rand_chacha::ChaCha8Rng {
        crate::spec::random::check_rng(self.seed, &format!("@oidc-issuer/{}", self.name), what)
    }

    async fn generate(&self, what: String) -> Result<Arc<KeyPair>, String> {
        let mut rng = self.stream(&what);
        tokio::task::spawn_blocking(move || KeyPair::generate(&mut rng).map(Arc::new))
            .await
            .map_err(|e| format!("key generation stopped: {e}"))?
    }

    /// Makes sure the first generation of keys exists (generating it when it does not).
    pub async fn ready(&self) -> Result<(), String> {
        let _one = self.keygen.lock().await;
        if !self.lock().generations.is_empty() {
            return Ok(());
        }
        let pair = self.generate("keys-0".into()).await?;
        self.lock().generations.push(pair);
        Ok(())
    }

    /// Rotates: a new key of each algorithm is published next to the old ones and signs from now
    /// on. Returns the number of generations.
    pub async fn rotate(&self) -> Result<usize, String> {
        self.ready().await?;
        let _one = self.keygen.lock().await;
        let n = self.lock().generations.len();
        let pair = self.generate(format!("keys-{n}")).await?;
        let mut keys = self.lock();
        keys.generations.push(pair);
        Ok(keys.generations.len())
    }

    /// Makes sure the never-published key pair of `attack = "unknown-kid"` exists.
    pub async fn ready_unpublished(&self) -> Result<(), String> {
        let _one = self.keygen.lock().await;
        if self.lock().unpublished.is_some() {
            return Ok(());
        }
        let pair = self.generate("unpublished".into()).await?;
        self.lock().unpublished = Some(pair);
        Ok(())
    }

    /// `GET /.well-known/openid-configuration`.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.url,
            "jwks_uri": format!("{}/.well-known/jwks.json", self.url),
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["id_token"],
            "claims_supported": ["iss", "sub", "aud", "exp", "nbf", "iat", "roles", "scope"],
        })
    }

    /// `GET /.well-known/jwks.json`: every published key, oldest generation first.
    pub async fn jwks(&self) -> Result<Value, String> {
        self.ready().await?;
        let keys: Vec<Value> = self
            .lock()
            .generations
            .iter()
            .flat_map(|g| [g.rsa.jwk.clone(), g.ec.jwk.clone()])
            .collect();
        Ok(json!({ "keys": keys }))
    }

    /// The kid tokens of `alg` are signed with now, once keys exist.
    pub fn current_kid(&self, alg: JwtAlg) -> Option<String> {
        let keys = self.lock();
        keys.generations.last().map(|g| g.kid(alg).to_string())
    }

    /// The claims a token declared by `spec` carries, at `now` (Unix seconds).
    pub fn claims(
        &self,
        spec: &JwtSpec,
        scope: &Scope,
        now: i64,
    ) -> Result<Map<String, Value>, String> {
        let mut claims = Map::new();
        let iss = match &spec.iss {
            Some(t) => template::render(t, scope)?,
            None => self.url.clone(),
        };
        claims.insert("iss".into(), Value::String(iss));
        if let Some(sub) = &spec.sub {
            claims.insert("sub".into(), Value::String(template::render(sub, scope)?));
        }
        let aud = match &spec.aud {
            Some(aud) => template::render_json(aud, scope)?,
            None => Value::String(self.audience.clone()),
        };
        claims.insert("aud".into(), aud);
        claims.insert("iat".into(), Value::from(now));
        if let Some(nbf) = spec.not_before {
            claims.insert("nbf".into(), Value::from(now + nbf));
        }
        claims.insert("exp".into(), Value::from(now + spec.expires_in));
        let roles = spec
            .roles
            .iter()
            .map(|r| template::render(r, scope).map(Value::String))
            .collect::<Result<Vec<_>, _>>()?;
        claims.insert("roles".into(), Value::Array(roles));
        if let Some(s) = &spec.scope {
            claims.insert("scope".into(), Value::String(template::render(s, scope)?));
        }
        for (k, v) in &spec.claims {
            claims.insert(
                template::render(k, scope)?,
                template::render_json(v, scope)?,
            );
        }
        Ok(claims)
    }

    /// Signs the token `spec` declares (or forges it, for an `attack`), with the templates
    /// rendered against `scope`, at `now` (Unix seconds). Returns the compact JWS. Needs the
    /// keys: [`Issuer::ready`] (and [`Issuer::ready_unpublished`] for `unknown-kid`) first.
    pub fn mint(&self, spec: &JwtSpec, scope: &Scope, now: i64) -> Result<String, String> {
        let claims = self.claims(spec, scope, now)?;
        let (current, unpublished) = {
            let keys = self.lock();
            (keys.generations.last().cloned(), keys.unpublished.clone())
        };
        let current = current.ok_or_else(|| {
            format!(
                "the issuer `{}` has no keys yet (a grader bug: keys are made before minting)",
                self.name
            )
        })?;
        let alg = spec.alg;
        let header = |alg: &str, kid: &str| json!({"alg": alg, "typ": "JWT", "kid": kid});
        let payload = b64(Value::Object(claims.clone()).to_string().as_bytes());
        let signed = |pair: &KeyPair, header: &Value, payload: &str| {
            let input = format!("{}.{payload}", b64(header.to_string().as_bytes()));
            let signature = pair.sign(alg, input.as_bytes());
            (input, signature)
        };
        let token = match spec.attack {
            None => {
                let (input, sig) =
                    signed(&current, &header(alg.as_str(), current.kid(alg)), &payload);
                format!("{input}.{}", b64(&sig))
            }
            Some(JwtAttack::None) => {
                let h = header("none", current.kid(alg));
                format!("{}.{payload}.", b64(h.to_string().as_bytes()))
            }
            Some(JwtAttack::Hs256PublicKey) => {
                let h = header("HS256", &current.rsa.kid);
                let input = format!("{}.{payload}", b64(h.to_string().as_bytes()));
                let mut mac = Hmac::<Sha256>::new_from_slice(current.rsa.pem.as_bytes())
                    .map_err(|e| e.to_string())?;
                mac.update(input.as_bytes());
                format!("{input}.{}", b64(&mac.finalize().into_bytes()))
            }
            Some(JwtAttack::TamperedSignature) => {
                let (input, mut sig) =
                    signed(&current, &header(alg.as_str(), current.kid(alg)), &payload);
                let middle = sig.len() / 2;
                sig[middle] ^= 0xff;
                format!("{input}.{}", b64(&sig))
            }
            Some(JwtAttack::UnknownKid) => {
                let stray = unpublished.ok_or_else(|| {
                    format!(
                        "the issuer `{}` has no unpublished key (a grader bug: it is made before minting)",
                        self.name
                    )
                })?;
                // A kid no published key has: random-looking, different for every token.
                let kid = thumbprint(&format!("unknown-kid/{}/{payload}", stray.kid(alg)));
                let (input, sig) = signed(&stray, &header(alg.as_str(), &kid[..22]), &payload);
                format!("{input}.{}", b64(&sig))
            }
            Some(JwtAttack::UnlistedKid) => {
                // The right key under a name the key set does not list.
                let kid = thumbprint(&format!("unlisted-kid/{}/{payload}", current.kid(alg)));
                let (input, sig) = signed(&current, &header(alg.as_str(), &kid[..22]), &payload);
                format!("{input}.{}", b64(&sig))
            }
            Some(JwtAttack::TamperedClaims) => {
                // Signed over another subject; carries the declared claims.
                let mut other = claims.clone();
                let sub = other.get("sub").map(template::text_of).unwrap_or_default();
                other.insert("sub".into(), Value::String(format!("{sub}-signed")));
                let h = header(alg.as_str(), current.kid(alg));
                let (_, sig) = signed(
                    &current,
                    &h,
                    &b64(Value::Object(other).to_string().as_bytes()),
                );
                format!("{}.{payload}.{}", b64(h.to_string().as_bytes()), b64(&sig))
            }
        };
        Ok(token)
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn thumbprint(canonical: &str) -> String {
    b64(&Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::token;

    fn spec(extra: &str) -> JwtSpec {
        let t: toml::Table =
            toml::from_str(&format!("gen = \"jwt\"\nsub = \"{{{{user}}}}\"\n{extra}")).unwrap();
        token::parse(&t, &["issuer".to_string()]).unwrap()
    }

    fn scope() -> Scope {
        let mut s = Scope::new();
        s.insert("user".into(), json!("amber-otter-42"));
        s
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn parts(token: &str) -> (Value, Value, Vec<u8>) {
        let p: Vec<&str> = token.split('.').collect();
        assert_eq!(p.len(), 3, "{token}");
        let json = |s: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
        (
            json(p[0]),
            json(p[1]),
            URL_SAFE_NO_PAD.decode(p[2]).unwrap(),
        )
    }

    /// Verifies with jsonwebtoken (its own RSA/ECDSA code paths), a key picked from the JWKS
    /// by kid as a service would.
    fn verify(token: &str, jwks: &Value, issuer: &Issuer) -> Result<Value, String> {
        use jsonwebtoken::{decode, decode_header, jwk::JwkSet, DecodingKey, Validation};
        let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
        let header = decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.ok_or("no kid")?;
        let jwk = set.find(&kid).ok_or(format!("unknown kid {kid}"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        use jsonwebtoken::Algorithm::{ES256, RS256};
        if !matches!(header.alg, RS256 | ES256) {
            return Err(format!("alg {:?} is not accepted", header.alg));
        }
        // One algorithm, the header's: jsonwebtoken refuses a key of another family for it.
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[issuer.audience()]);
        validation.set_issuer(&[issuer.url()]);
        decode::<Value>(token, &key, &validation)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }

    async fn issuer(seed: u64) -> Issuer {
        let i = Issuer::new("issuer", "http://127.0.0.1:41234", "notes-api", seed);
        i.ready().await.unwrap();
        i
    }

    #[tokio::test]
    async fn jwks_and_discovery_have_the_documented_shape() {
        let i = issuer(7).await;
        let d = i.discovery();
        assert_eq!(d["issuer"], "http://127.0.0.1:41234");
        assert_eq!(
            d["jwks_uri"],
            "http://127.0.0.1:41234/.well-known/jwks.json"
        );
        assert_eq!(
            d["id_token_signing_alg_values_supported"],
            json!(["RS256", "ES256"])
        );
        let jwks = i.jwks().await.unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (
                &keys[0]["kty"],
                &keys[0]["alg"],
                &keys[0]["use"],
                &keys[0]["e"]
            ),
            (
                &json!("RSA"),
                &json!("RS256"),
                &json!("sig"),
                &json!("AQAB")
            )
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(keys[0]["n"].as_str().unwrap())
                .unwrap()
                .len(),
            256
        );
        assert_eq!(
            (
                &keys[1]["kty"],
                &keys[1]["alg"],
                &keys[1]["crv"],
                &keys[1]["use"]
            ),
            (
                &json!("EC"),
                &json!("ES256"),
                &json!("P-256"),
                &json!("sig")
            )
        );
        for k in keys {
            assert_eq!(k["kid"].as_str().unwrap().len(), 43, "{k}");
            assert!(k.get("d").is_none(), "no private part is published: {k}");
        }
    }

    #[tokio::test]
    async fn tokens_of_each_algorithm_verify_against_the_jwks() {
        let i = issuer(7).await;
        let jwks = i.jwks().await.unwrap();
        for alg in ["RS256", "ES256"] {
            let s = spec(&format!(
                "alg = \"{alg}\"\nroles = [\"admin\"]\nscope = \"notes:read\"\nclaims = {{ tenant = \"t-{{{{user}}}}\" }}"
            ));
            let token = i.mint(&s, &scope(), now()).unwrap();
            let (header, _, sig) = parts(&token);
            assert_eq!(header["alg"], alg);
            assert_eq!(header["typ"], "JWT");
            assert_eq!(sig.len(), if alg == "RS256" { 256 } else { 64 });
            let claims = verify(&token, &jwks, &i).unwrap();
            assert_eq!(claims["sub"], "amber-otter-42");
            assert_eq!(claims["aud"], "notes-api");
            assert_eq!(claims["iss"], "http://127.0.0.1:41234");
            assert_eq!(claims["roles"], json!(["admin"]));
            assert_eq!(claims["scope"], "notes:read");
            assert_eq!(claims["tenant"], "t-amber-otter-42");
            let (iat, exp) = (
                claims["iat"].as_i64().unwrap(),
                claims["exp"].as_i64().unwrap(),
            );
            assert_eq!(exp - iat, 300);
            assert!(claims.get("nbf").is_none());
        }
        // Expired, not yet valid, other audience: well signed, refused by a verifier.
        let expired = i
            .mint(&spec("expires_in = \"-5m\""), &scope(), now())
            .unwrap();
        assert!(verify(&expired, &jwks, &i).unwrap_err().contains("Expired"));
        let early = spec("not_before = \"5m\"");
        let (_, claims, _) = parts(&i.mint(&early, &scope(), 1000).unwrap());
        assert_eq!(
            (claims["nbf"].as_i64(), claims["exp"].as_i64()),
            (Some(1300), Some(1300))
        );
        let other = i
            .mint(
                &spec("aud = \"billing\"\niss = \"https://evil.test\""),
                &scope(),
                now(),
            )
            .unwrap();
        let (_, claims, _) = parts(&other);
        assert_eq!(
            (&claims["aud"], &claims["iss"]),
            (&json!("billing"), &json!("https://evil.test"))
        );
        assert!(verify(&other, &jwks, &i).is_err());
    }

    #[tokio::test]
    async fn every_attack_is_what_it_claims() {
        let i = issuer(7).await;
        i.ready_unpublished().await.unwrap();
        let jwks = i.jwks().await.unwrap();
        let published: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        let t = now();
        let honest = i.mint(&spec(""), &scope(), t).unwrap();
        let (_, honest_claims, honest_sig) = parts(&honest);

        let none = i.mint(&spec("attack = \"none\""), &scope(), t).unwrap();
        assert!(none.ends_with('.'));
        let (h, c, sig) = parts(&none);
        assert_eq!((h["alg"].as_str(), sig.len()), (Some("none"), 0));
        assert_eq!(c, honest_claims);
        assert!(verify(&none, &jwks, &i).is_err());

        let confused = i
            .mint(&spec("attack = \"hs256-public-key\""), &scope(), t)
            .unwrap();
        let (h, c, sig) = parts(&confused);
        assert_eq!(h["alg"], "HS256");
        assert_eq!(h["kid"].as_str(), Some(published[0]));
        assert_eq!(c, honest_claims);
        // A verifier that takes `alg` from the header and the RSA key's PEM as the secret accepts it.
        let pem = {
            let keys = i.lock();
            keys.generations[0].rsa.pem.clone()
        };
        assert!(
            pem.starts_with("-----BEGIN PUBLIC KEY-----\n")
                && pem.ends_with("-----END PUBLIC KEY-----\n")
        );
        let input = confused.rsplit_once('.').unwrap().0;
        let mut mac = Hmac::<Sha256>::new_from_slice(pem.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        assert_eq!(mac.finalize().into_bytes().to_vec(), sig);
        assert!(verify(&confused, &jwks, &i).is_err());

        let tampered = i
            .mint(&spec("attack = \"tampered-signature\""), &scope(), t)
            .unwrap();
        let (h, c, sig) = parts(&tampered);
        assert_eq!(
            (h["kid"].as_str(), &c),
            (Some(published[0]), &honest_claims)
        );
        assert_eq!(sig.len(), honest_sig.len());
        assert_eq!(
            sig.iter().zip(&honest_sig).filter(|(a, b)| a != b).count(),
            1
        );
        assert!(verify(&tampered, &jwks, &i)
            .unwrap_err()
            .contains("InvalidSignature"));

        for alg in ["RS256", "ES256"] {
            let stray = i
                .mint(
                    &spec(&format!("attack = \"unknown-kid\"\nalg = \"{alg}\"")),
                    &scope(),
                    t,
                )
                .unwrap();
            let (h, _, _) = parts(&stray);
            let kid = h["kid"].as_str().unwrap();
            assert!(!published.contains(&kid), "{kid}");
            assert!(verify(&stray, &jwks, &i)
                .unwrap_err()
                .contains("unknown kid"));
            // ... but it is a real signature, by a key that is not the issuer's.
            let keys = i.lock();
            let mut stray_jwks = keys.unpublished.as_ref().unwrap().rsa.jwk.clone();
            if alg == "ES256" {
                stray_jwks = keys.unpublished.as_ref().unwrap().ec.jwk.clone();
            }
            stray_jwks["kid"] = json!(kid);
            drop(keys);
            verify(&stray, &json!({"keys": [stray_jwks]}), &i).unwrap();
        }

        // The issuer's own signature under a kid the key set does not list.
        let unlisted = i
            .mint(&spec("attack = \"unlisted-kid\""), &scope(), t)
            .unwrap();
        let (h, _, _) = parts(&unlisted);
        let kid = h["kid"].as_str().unwrap().to_string();
        assert!(!published.contains(&kid.as_str()), "{kid}");
        assert!(verify(&unlisted, &jwks, &i)
            .unwrap_err()
            .contains("unknown kid"));
        let mut relabelled = jwks.clone();
        relabelled["keys"][0]["kid"] = json!(kid);
        verify(&unlisted, &relabelled, &i).unwrap();

        let forged = i
            .mint(&spec("attack = \"tampered-claims\""), &scope(), t)
            .unwrap();
        let (h, c, _) = parts(&forged);
        assert_eq!((h["alg"].as_str(), &c), (Some("RS256"), &honest_claims));
        assert!(verify(&forged, &jwks, &i)
            .unwrap_err()
            .contains("InvalidSignature"));
        // The signature is the issuer's, over the same claims with another subject.
        let mut signed_claims = honest_claims.clone();
        signed_claims["sub"] = json!("amber-otter-42-signed");
        let (head, _, sig) = forged.split('.').map(str::to_string).fold(
            (String::new(), String::new(), String::new()),
            |(a, b, c), p| {
                if a.is_empty() {
                    (p, b, c)
                } else if b.is_empty() {
                    (a, p, c)
                } else {
                    (a, b, p)
                }
            },
        );
        let resigned = format!("{head}.{}.{sig}", b64(signed_claims.to_string().as_bytes()));
        verify(&resigned, &jwks, &i).unwrap();
    }

    #[tokio::test]
    async fn rotation_keeps_old_keys_and_signs_with_the_new() {
        let i = issuer(7).await;
        let before = i.mint(&spec(""), &scope(), now()).unwrap();
        let old_kid = i.current_kid(JwtAlg::Rs256).unwrap();
        assert_eq!(i.rotate().await.unwrap(), 2);
        let jwks = i.jwks().await.unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids.len(), 4);
        assert_eq!(kids[0], old_kid);
        let after = i.mint(&spec(""), &scope(), now()).unwrap();
        let (h, _, _) = parts(&after);
        assert_eq!(h["kid"].as_str(), Some(kids[2]));
        assert_ne!(kids[2], old_kid);
        verify(&before, &jwks, &i).unwrap();
        verify(&after, &jwks, &i).unwrap();
        let es = i.mint(&spec("alg = \"ES256\""), &scope(), now()).unwrap();
        assert_eq!(parts(&es).0["kid"].as_str(), Some(kids[3]));
        // A rotation with the JWKS of before: the service must fetch again to know the new kid.
        let old_jwks = json!({"keys": [jwks["keys"][0], jwks["keys"][1]]});
        assert!(verify(&after, &old_jwks, &i)
            .unwrap_err()
            .contains("unknown kid"));
    }

    #[tokio::test]
    async fn the_seed_replays_the_keys() {
        let (a, b, c) = (issuer(7).await, issuer(7).await, issuer(8).await);
        let jwks = |i: &Issuer| {
            let keys = i.lock();
            keys.generations
                .iter()
                .map(|g| (g.rsa.jwk.clone(), g.ec.jwk.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(jwks(&a), jwks(&b));
        assert_ne!(jwks(&a), jwks(&c));
        a.rotate().await.unwrap();
        b.rotate().await.unwrap();
        assert_eq!(jwks(&a), jwks(&b));
        // The same claims at the same second give the same token (RS256 and RFC 6979 are
        // deterministic).
        assert_eq!(
            a.mint(&spec("alg = \"ES256\""), &scope(), 1000).unwrap(),
            b.mint(&spec("alg = \"ES256\""), &scope(), 1000).unwrap()
        );
    }
}
