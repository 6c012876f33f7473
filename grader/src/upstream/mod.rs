//! Grader-owned mock upstreams: small HTTP servers the learner's service calls (a payment
//! provider, later a slow catalogue for caching, a flaky partner for resilience).
//!
//! Exercises declare them (`[upstreams.NAME]`, see [`spec`]); the CLI starts them before the
//! service, on a free port, and hands each URL to the service in an env var. Per run, each one
//! records every call (method, path, headers, body, key) so checks can count calls per route and
//! per key, and probes can change a route's latency and faults for the duration of one check.
//!
//! They run in-process, as tokio tasks: [`Upstreams::shutdown`] stops them, and dropping the
//! handle aborts them, so nothing outlives the run.

pub mod issuer;
pub mod spec;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::task::JoinSet;

pub use issuer::Issuer;
pub use spec::{
    Behaviour, CannedBody, Fault, IssuerDocument, KeySource, RouteSpec, Store, UpstreamKind,
    UpstreamSpec,
};

/// Request bodies above this are cut (the mock is not a storage service).
const MAX_BODY: usize = 1024 * 1024;

/// Where the mocks listen, and which host the service is told to call.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// Address the mocks bind to (default 127.0.0.1).
    pub bind: IpAddr,
    /// Host written into the URL handed to the service (default: the bind address). A container
    /// runtime sets this to the host gateway, e.g. `host.docker.internal`.
    pub advertise_host: String,
    /// The run's seed: an `oidc-issuer`'s keys come from it, so `--seed N` replays them.
    pub seed: u64,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            bind: IpAddr::from([127, 0, 0, 1]),
            advertise_host: "127.0.0.1".into(),
            seed: 0,
        }
    }
}

/// One recorded call to a mock.
#[derive(Debug, Clone)]
pub struct Call {
    /// `POST /charges`, or the method and path of an unknown route.
    pub route: String,
    pub known_route: bool,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The key the route counts by, when it has one and the request carried it.
    pub key: Option<String>,
    /// What the mock answered: `201`, `status 503`, `no answer (timeout)`, ...
    pub answered: String,
}

impl Call {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A running mock upstream.
pub struct Upstream {
    pub spec: UpstreamSpec,
    /// URL handed to the service, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The keys and tokens of a `kind = "oidc-issuer"` upstream.
    issuer: Option<Arc<Issuer>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// Current behaviour per route (index as in `spec.routes`).
    behaviour: Vec<Behaviour>,
    /// Calls per route so far, for `{{seq}}`.
    seq: Vec<u64>,
    /// Documents kept per key by `store = "write"` routes, shown by `store = "read"` routes.
    documents: BTreeMap<String, serde_json::Map<String, Value>>,
    /// Index in `calls` of the first call of the current check (see [`Upstream::calls`]).
    check_start: usize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({} at {})", self.spec.name, self.url)
    }
}

impl Upstream {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn route_index(&self, route: &str) -> Result<usize, String> {
        self.spec
            .routes
            .iter()
            .position(|r| r.id() == route)
            .ok_or_else(|| {
                format!(
                    "upstream `{}` has no route \"{route}\"; it has: {}",
                    self.spec.name,
                    self.spec
                        .routes
                        .iter()
                        .map(RouteSpec::id)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// The calls to `route` (`POST /charges`). With a `key`: every call of the run with that key
    /// (keys come from a check's own random data, so they are that check's). Without one: the
    /// calls since the current check began ([`Upstreams::begin_check`]), so a route without keys
    /// (an issuer's JWKS) is counted per check too.
    pub fn calls(&self, route: &str, key: Option<&str>) -> Vec<Call> {
        let state = self.lock();
        let since = if key.is_none() { state.check_start } else { 0 };
        state.calls[since.min(state.calls.len())..]
            .iter()
            .filter(|c| c.known_route && c.route == route)
            .filter(|c| key.is_none() || c.key.as_deref() == key)
            .cloned()
            .collect()
    }

    /// The issuer behind a `kind = "oidc-issuer"` upstream.
    pub fn issuer(&self) -> Option<&Arc<Issuer>> {
        self.issuer.as_ref()
    }

    /// Every call so far, in arrival order.
    pub fn all_calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How the route counts keys, for messages ("order_id", "header Idempotency-Key").
    pub fn key_name(&self, route: &str) -> Option<String> {
        let i = self.route_index(route).ok()?;
        self.spec.routes[i].key.as_ref().map(KeySource::describe)
    }

    /// Changes a route's behaviour until the end of the current check.
    pub fn set_behaviour(&self, route: &str, behaviour: Behaviour) -> Result<(), String> {
        let i = self.route_index(route)?;
        self.lock().behaviour[i] = behaviour;
        Ok(())
    }

    pub fn behaviour(&self, route: &str) -> Result<Behaviour, String> {
        let i = self.route_index(route)?;
        Ok(self.lock().behaviour[i].clone())
    }

    fn reset_behaviour(&self) {
        let declared: Vec<Behaviour> = self
            .spec
            .routes
            .iter()
            .map(|r| r.behaviour.clone())
            .collect();
        self.lock().behaviour = declared;
    }

    /// Declared behaviour back, and the calls counted without a key start from here.
    fn begin_check(&self) {
        self.reset_behaviour();
        let mut state = self.lock();
        state.check_start = state.calls.len();
    }
}

/// Every mock of a run. Cheap to clone (shared); the default holds none.
#[derive(Clone, Default)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    upstreams: Vec<Arc<Upstream>>,
    tasks: Mutex<
        Vec<(
            tokio::sync::watch::Sender<bool>,
            tokio::task::JoinHandle<()>,
        )>,
    >,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, task) in tasks.drain(..) {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.inner.upstreams.iter()).finish()
    }
}

impl Upstreams {
    /// Starts one mock per spec (specs with the same name are started once) on free ports.
    pub async fn start(specs: &[UpstreamSpec], options: &UpstreamOptions) -> Result<Self, String> {
        let mut upstreams = Vec::new();
        let mut tasks = Vec::new();
        for spec in specs {
            if upstreams
                .iter()
                .any(|u: &Arc<Upstream>| u.spec.name == spec.name)
            {
                continue;
            }
            let listener = tokio::net::TcpListener::bind((options.bind, 0))
                .await
                .map_err(|e| {
                    format!(
                        "cannot listen on {} for mock upstream `{}`: {e}",
                        options.bind, spec.name
                    )
                })?;
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            let url = format!("http://{}:{port}", options.advertise_host);
            let issuer = match &spec.kind {
                UpstreamKind::Routes => None,
                UpstreamKind::OidcIssuer { audience } => {
                    let issuer = Arc::new(Issuer::new(&spec.name, &url, audience, options.seed));
                    // The first keys are made while the service starts (RSA generation takes a
                    // moment); whoever needs them first waits for them.
                    tokio::spawn({
                        let issuer = issuer.clone();
                        async move {
                            let _ = issuer.ready().await;
                        }
                    });
                    Some(issuer)
                }
            };
            let upstream = Arc::new(Upstream {
                spec: spec.clone(),
                url,
                issuer,
                state: Mutex::new(State {
                    calls: Vec::new(),
                    behaviour: spec.routes.iter().map(|r| r.behaviour.clone()).collect(),
                    seq: vec![0; spec.routes.len()],
                    documents: BTreeMap::new(),
                    check_start: 0,
                }),
            });
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(serve(listener, upstream.clone(), stopped));
            upstreams.push(upstream);
            tasks.push((stop, task));
        }
        Ok(Upstreams {
            inner: Arc::new(Inner {
                upstreams,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.inner.upstreams.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.inner.upstreams.iter()
    }

    pub fn get(&self, name: &str) -> Result<&Arc<Upstream>, String> {
        self.inner
            .upstreams
            .iter()
            .find(|u| u.spec.name == name)
            .ok_or_else(|| format!("no mock upstream `{name}` is running for this exercise"))
    }

    /// `(env var, value)` for the service: each URL under the exercise's default name or the
    /// learner's rename, then the settings each upstream declares in `service_env`.
    pub fn env_vars(&self, renames: &BTreeMap<String, String>) -> Vec<(String, String)> {
        self.inner
            .upstreams
            .iter()
            .flat_map(|u| {
                let var = renames
                    .get(&u.spec.name)
                    .cloned()
                    .unwrap_or_else(|| u.spec.env.clone());
                std::iter::once((var, u.url.clone())).chain(u.spec.service_env.iter().cloned())
            })
            .collect()
    }

    /// Puts every route back to its declared behaviour (called between checks).
    pub fn reset_behaviour(&self) {
        for u in &self.inner.upstreams {
            u.reset_behaviour();
        }
    }

    /// Before a check: puts the routes of the named upstreams back to their declared behaviour,
    /// and starts counting their calls without a key afresh ([`Upstream::calls`]), without
    /// touching the mocks of an exercise graded at the same time.
    pub fn begin_check(&self, names: &[String]) {
        for u in &self.inner.upstreams {
            if names.contains(&u.spec.name) {
                u.begin_check();
            }
        }
    }

    /// Stops accepting, closes open connections (held "timeout" calls included) and waits.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> = {
            let mut guard = self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner());
            guard.drain(..).collect()
        };
        for (stop, mut task) in tasks {
            let _ = stop.send(true);
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    upstream: Arc<Upstream>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let upstream = upstream.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(upstream.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Returned by the handler to make hyper close the connection without an answer.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose (fault = drop)")
    }
}

impl std::error::Error for DropConnection {}

async fn handle(
    upstream: Arc<Upstream>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let route_id = format!("{} {}", parts.method, parts.uri.path());
    let matched = upstream.spec.routes.iter().enumerate().find_map(|(i, r)| {
        r.matches(parts.method.as_str(), parts.uri.path())
            .map(|params| (i, params))
    });
    let Some((index, path_params)) = matched else {
        upstream.lock().calls.push(Call {
            route: route_id.clone(),
            known_route: false,
            headers,
            body,
            key: None,
            answered: "404".into(),
        });
        return Ok(json_response(
            404,
            &json!({ "error": format!("the mock upstream `{}` has no route {route_id}", upstream.spec.name) }),
            &[],
        ));
    };
    let route = &upstream.spec.routes[index];
    // Calls are recorded under the route's declared id, so `GET /profiles/{user}` counts them all.
    let route_id = route.id();
    let request_json: Option<Value> = serde_json::from_slice(&body).ok();
    let key = match &route.key {
        None => None,
        Some(KeySource::Path(name)) => path_params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone()),
        Some(KeySource::Header(h)) => headers.iter().find(|(k, _)| k == h).map(|(_, v)| v.clone()),
        Some(KeySource::Json { path, .. }) => request_json.as_ref().and_then(|doc| {
            path.query(doc)
                .at_most_one()
                .ok()
                .flatten()
                .map(crate::spec::template::text_of)
        }),
    };
    // Decide everything under the lock, so concurrent calls see consistent counts and faults.
    let (behaviour, seq, on_arrival) = {
        let mut state = upstream.lock();
        state.seq[index] += 1;
        let seq = state.seq[index];
        let current = state.behaviour[index].clone();
        let mut effective = current.clone();
        if let Some(n) = current.fault_times {
            if n == 0 {
                effective.fault = None;
            } else {
                state.behaviour[index].fault_times = Some(n - 1);
            }
        }
        let answered = match effective.fault {
            Some(f) => f.describe(),
            None => route.response.status.to_string(),
        };
        state.calls.push(Call {
            route: route_id,
            known_route: true,
            headers,
            body,
            key: key.clone(),
            answered,
        });
        // `read_on_arrival`: the document as it is now, before the delay lets writes land.
        let on_arrival = match (route.read_on_arrival, &key) {
            (true, Some(key)) => Some(state.documents.get(key).cloned().unwrap_or_default()),
            _ => None,
        };
        (effective, seq, on_arrival)
    };
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }
    match behaviour.fault {
        Some(Fault::Timeout) => {
            // Held until the caller gives up or the run ends (shutdown aborts the connection).
            std::future::pending::<()>().await;
            Err(DropConnection)
        }
        Some(Fault::Drop) => Err(DropConnection),
        Some(Fault::Status(status)) => Ok(json_response(
            status,
            &json!({ "error": "simulated upstream failure", "status": status }),
            &[],
        )),
        None if matches!(route.response.body, CannedBody::Issuer(_)) => {
            Ok(issuer_document(&upstream, route).await)
        }
        None => {
            // The write lands only when the call succeeds, as at a real system of record.
            let kept = match (route.store, &key) {
                (Some(_), Some(_)) if on_arrival.is_some() => on_arrival,
                (Some(store), Some(key)) => {
                    let mut state = upstream.lock();
                    let document = state.documents.entry(key.clone()).or_default();
                    if let (Store::Write, Some(Value::Object(fields))) =
                        (store, request_json.as_ref())
                    {
                        document.extend(fields.clone());
                    }
                    Some(document.clone())
                }
                _ => None,
            };
            Ok(canned(
                route,
                seq,
                request_json.as_ref(),
                &path_params,
                kept.as_ref(),
            ))
        }
    }
}

/// The discovery document or the JWKS of an `oidc-issuer` upstream.
async fn issuer_document(upstream: &Upstream, route: &RouteSpec) -> Response<Full<Bytes>> {
    let document = match (&route.response.body, &upstream.issuer) {
        (CannedBody::Issuer(IssuerDocument::Discovery), Some(issuer)) => Ok(issuer.discovery()),
        (CannedBody::Issuer(IssuerDocument::Jwks), Some(issuer)) => issuer.jwks().await,
        _ => Err(format!("`{}` is not an oidc-issuer", upstream.spec.name)),
    };
    match document {
        Ok(body) => json_response(route.response.status, &body, &route.response.headers),
        Err(e) => json_response(500, &json!({ "error": e }), &[]),
    }
}

fn canned(
    route: &RouteSpec,
    seq: u64,
    request: Option<&Value>,
    path_params: &[(String, String)],
    kept: Option<&serde_json::Map<String, Value>>,
) -> Response<Full<Bytes>> {
    let mut scope = crate::spec::template::Scope::new();
    scope.insert("seq".into(), Value::from(seq));
    if let Some(Value::Object(fields)) = request {
        for (k, v) in fields {
            scope.insert(format!("request_{k}"), v.clone());
        }
    }
    for (name, value) in path_params {
        scope.insert(format!("path_{name}"), Value::String(value.clone()));
    }
    let r = &route.response;
    match &r.body {
        CannedBody::Json(v) => match crate::spec::template::render_json(v, &scope) {
            Ok(mut body) => {
                if let (Some(kept), Value::Object(fields)) = (kept, &mut body) {
                    fields.extend(kept.clone());
                }
                json_response(r.status, &body, &r.headers)
            }
            Err(e) => json_response(
                400,
                &json!({ "error": format!("the request lacks what the mock needs to answer: {e}") }),
                &[],
            ),
        },
        CannedBody::Text(t) => {
            let text = crate::spec::template::render(t, &scope).unwrap_or_else(|_| t.clone());
            response(r.status, text.into_bytes(), None, &r.headers)
        }
        CannedBody::Empty => response(r.status, Vec::new(), None, &r.headers),
        // Answered by `issuer_document` before this is reached.
        CannedBody::Issuer(_) => json_response(500, &json!({ "error": "not an issuer" }), &[]),
    }
}

fn json_response(status: u16, body: &Value, headers: &[(String, String)]) -> Response<Full<Bytes>> {
    response(
        status,
        serde_json::to_vec(body).unwrap_or_default(),
        Some("application/json"),
        headers,
    )
}

fn response(
    status: u16,
    body: Vec<u8>,
    content_type: Option<&str>,
    headers: &[(String, String)],
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| {
            let mut r = Response::new(Full::new(Bytes::from_static(b"bad canned response")));
            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> UpstreamSpec {
        let v: toml::Value = toml::from_str(
            r#"
            [[route]]
            method = "POST"
            path = "/charges"
            key = { json = "$.order_id" }
            response.status = 201
            response.json = { id = "ch_{{seq}}", amount_cents = "{{request_amount_cents}}" }
            "#,
        )
        .unwrap();
        spec::parse("payments", &v).unwrap()
    }

    #[tokio::test]
    async fn counts_calls_per_key_and_injects_faults() {
        let ups = Upstreams::start(&[spec()], &UpstreamOptions::default())
            .await
            .unwrap();
        let up = ups.get("payments").unwrap().clone();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("{}/charges", up.url);
        let r = client
            .post(&url)
            .json(&json!({"order_id": "o-1", "amount_cents": 250}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, json!({"id": "ch_1", "amount_cents": 250}));
        up.set_behaviour(
            "POST /charges",
            Behaviour {
                fault: Some(Fault::Status(503)),
                fault_times: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        let r = client
            .post(&url)
            .json(&json!({"order_id": "o-1", "amount_cents": 250}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let r = client
            .post(&url)
            .json(&json!({"order_id": "o-2", "amount_cents": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(up.calls("POST /charges", Some("o-1")).len(), 2);
        assert_eq!(up.calls("POST /charges", Some("o-2")).len(), 1);
        up.set_behaviour(
            "POST /charges",
            Behaviour {
                fault: Some(Fault::Drop),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(client
            .post(&url)
            .json(&json!({"order_id": "o-3"}))
            .send()
            .await
            .is_err());
        ups.reset_behaviour();
        assert_eq!(up.behaviour("POST /charges").unwrap(), Behaviour::default());
        // A held call ("timeout") must not keep shutdown waiting.
        up.set_behaviour(
            "POST /charges",
            Behaviour {
                fault: Some(Fault::Timeout),
                ..Default::default()
            },
        )
        .unwrap();
        let held = tokio::spawn({
            let client = client.clone();
            let url = url.clone();
            async move {
                client
                    .post(&url)
                    .json(&json!({"order_id": "o-4"}))
                    .send()
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(up.calls("POST /charges", Some("o-4")).len(), 1);
        let started = std::time::Instant::now();
        ups.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(held.await.unwrap().is_err());
        assert!(client.post(&url).send().await.is_err());
    }

    fn profiles() -> UpstreamSpec {
        let v: toml::Value = toml::from_str(
            r#"
            service_env = { CACHE_TTL_SECONDS = "2" }
            [[route]]
            method = "GET"
            path = "/profiles/{user}"
            key = { path = "user" }
            store = "read"
            response.json = { user_id = "{{path_user}}", display_name = "Customer {{path_user}}" }
            [[route]]
            method = "PATCH"
            path = "/profiles/{user}"
            key = { path = "user" }
            store = "write"
            response.json = { user_id = "{{path_user}}", display_name = "Customer {{path_user}}" }
            "#,
        )
        .unwrap();
        spec::parse("profiles", &v).unwrap()
    }

    #[tokio::test]
    async fn path_keys_count_per_segment_and_writes_are_kept() {
        let ups = Upstreams::start(&[profiles()], &UpstreamOptions::default())
            .await
            .unwrap();
        let up = ups.get("profiles").unwrap().clone();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = |user: &str| {
            let request = client.get(format!("{}/profiles/{user}", up.url));
            async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
        };
        assert_eq!(
            get("amber").await,
            json!({"user_id": "amber", "display_name": "Customer amber"})
        );
        let changed: Value = client
            .patch(format!("{}/profiles/amber", up.url))
            .json(&json!({"display_name": "Blue Heron"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(changed["display_name"], "Blue Heron");
        assert_eq!(get("amber").await["display_name"], "Blue Heron");
        // Another key keeps its canned answer; a percent-encoded segment is decoded.
        assert_eq!(get("b%2Dcat").await["display_name"], "Customer b-cat");
        assert_eq!(up.calls("GET /profiles/{user}", Some("amber")).len(), 2);
        assert_eq!(up.calls("PATCH /profiles/{user}", Some("amber")).len(), 1);
        assert_eq!(up.calls("GET /profiles/{user}", Some("b-cat")).len(), 1);
        // A path with an extra segment is no route of the mock.
        let unknown = client
            .get(format!("{}/profiles/amber/extra", up.url))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
        assert_eq!(
            ups.env_vars(&BTreeMap::new()),
            vec![
                ("PROFILES_URL".to_string(), up.url.clone()),
                ("CACHE_TTL_SECONDS".to_string(), "2".to_string()),
            ]
        );
        ups.shutdown().await;
    }

    #[tokio::test]
    async fn read_on_arrival_answers_the_document_as_it_was_when_the_call_came() {
        let v: toml::Value = toml::from_str(
            r#"
            [[route]]
            method = "GET"
            path = "/profiles/{user}"
            key = { path = "user" }
            delay = "400ms"
            store = "read"
            read_on_arrival = true
            response.json = { user_id = "{{path_user}}", display_name = "Customer {{path_user}}" }
            [[route]]
            method = "PATCH"
            path = "/profiles/{user}"
            key = { path = "user" }
            store = "write"
            response.json = { user_id = "{{path_user}}" }
            "#,
        )
        .unwrap();
        let ups = Upstreams::start(
            &[spec::parse("profiles", &v).unwrap()],
            &UpstreamOptions::default(),
        )
        .await
        .unwrap();
        let up = ups.get("profiles").unwrap().clone();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("{}/profiles/amber", up.url);
        // A slow lookup starts, a write lands during its delay: the lookup still answers the
        // document it started with; the next one sees the write.
        let slow = tokio::spawn({
            let request = client.get(&url);
            async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let patched = client
            .patch(&url)
            .json(&json!({"display_name": "Blue Heron"}))
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 200);
        assert_eq!(slow.await.unwrap()["display_name"], "Customer amber");
        let after: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(after["display_name"], "Blue Heron");
        ups.shutdown().await;
    }
}
