//! The `oidc-issuer` mock upstream as a grading run starts it: declared in an exercise's TOML,
//! started by `Upstreams::start` with the run's seed, fetched over HTTP as a service would, its
//! calls counted per check, and tokens minted by the engine for a check that rotates.

use std::collections::BTreeMap;

use grader::engine::tokens::{self, CheckTokens};
use grader::spec::template::Scope;
use grader::spec::token;
use grader::spec::VarGen;
use grader::upstream::spec::{self, DISCOVERY_ROUTE, JWKS_ROUTE};
use grader::upstream::{Behaviour, Fault, UpstreamOptions, Upstreams};
use serde_json::{json, Value};

const ISSUER: &str = r#"
kind = "oidc-issuer"
env = "AUTH_ISSUER_URL"
service_env = { AUTH_AUDIENCE = "notes-api" }
audience = "notes-api"
"#;

async fn start(seed: u64) -> Upstreams {
    let spec = spec::parse("issuer", &toml::from_str(ISSUER).unwrap()).unwrap();
    let options = UpstreamOptions {
        seed,
        ..Default::default()
    };
    Upstreams::start(&[spec], &options).await.unwrap()
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn discovery_and_jwks_over_http_counted_per_check() {
    let ups = start(42).await;
    let up = ups.get("issuer").unwrap().clone();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    assert_eq!(
        ups.env_vars(&BTreeMap::new()),
        vec![
            ("AUTH_ISSUER_URL".to_string(), up.url.clone()),
            ("AUTH_AUDIENCE".to_string(), "notes-api".to_string()),
        ]
    );
    let (status, discovery) = get(
        &client,
        &format!("{}/.well-known/openid-configuration", up.url),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(discovery["issuer"], json!(up.url));
    assert!(!up.url.ends_with('/'));
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap().to_string();
    assert_eq!(jwks_uri, format!("{}/.well-known/jwks.json", up.url));
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["RS256", "ES256"])
    );
    let (status, jwks) = get(&client, &jwks_uri).await;
    assert_eq!(status, 200);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    get(&client, &jwks_uri).await;
    let (status, _) = get(&client, &format!("{}/authorize", up.url)).await;
    assert_eq!(status, 404);

    // Counted under their route ids; without a key, per check.
    assert_eq!(up.calls(JWKS_ROUTE, None).count, 2);
    assert_eq!(up.calls(DISCOVERY_ROUTE, None).count, 1);
    ups.begin_check(&["issuer".to_string()]);
    assert_eq!(up.calls(JWKS_ROUTE, None).count, 0);

    // A check whose token rotates: the issuer publishes a new pair, signs with it, keeps the old.
    let vars: Vec<(String, VarGen)> = ["{ gen = \"jwt\", sub = \"{{user}}\", rotate = true }"]
        .iter()
        .map(|text| {
            let t: toml::Table = toml::from_str(&format!("v = {text}")).unwrap();
            let spec = token::parse(t["v"].as_table().unwrap(), &["issuer".into()]).unwrap();
            ("token".to_string(), VarGen::Jwt(Box::new(spec)))
        })
        .collect();
    let used = vec!["token".to_string()];
    let check = CheckTokens {
        vars: &vars,
        used: &used,
    };
    tokens::prepare(check, &ups).await.unwrap();
    let mut scope = Scope::new();
    scope.insert("user".into(), json!("amber-otter-42"));
    tokens::mint(check, &mut scope, &ups).unwrap();
    let token = scope["token"].as_str().unwrap().to_string();
    let (_, rotated) = get(&client, &jwks_uri).await;
    let (old, new) = (kids(&jwks), kids(&rotated));
    assert_eq!(new.len(), 4);
    assert_eq!(&new[..2], &old[..]);
    let header: Value = {
        use base64::Engine as _;
        let head = token.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(head)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["kid"], json!(new[2]));
    assert_eq!(up.calls(JWKS_ROUTE, None).count, 1);

    // Its routes take latency and faults like any other, for one check.
    up.set_behaviour(
        JWKS_ROUTE,
        Behaviour {
            fault: Some(Fault::Status(503)),
            fault_times: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(get(&client, &jwks_uri).await.0, 503);
    assert_eq!(get(&client, &jwks_uri).await.0, 200);
    assert_eq!(up.calls(JWKS_ROUTE, None).count, 3);
    ups.shutdown().await;

    // The same seed publishes the same keys in another run.
    let again = start(42).await;
    let url = again.get("issuer").unwrap().url.clone();
    let (_, replayed) = get(&client, &format!("{url}/.well-known/jwks.json")).await;
    assert_eq!(kids(&replayed), old);
    again.shutdown().await;
}
