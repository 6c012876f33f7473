//! Grader-owned mock upstreams: small HTTP servers the learner's service calls (a payment
//! provider, later a slow catalogue for caching, a flaky partner for resilience).
//!
//! Exercises declare them (`[upstreams.NAME]`, see [`spec`]); the CLI starts them before the
//! service, on a free port, and hands each URL to the service in an env var. Per run, each one
//! counts every call per route and per key, and keeps the last calls (method, path, headers,
//! body, key) as evidence and for checks of their bodies, so checks can count calls per route and
//! per key, and probes can change a route's latency and faults for the duration of one check.
//!
//! The service is untrusted, so what a mock keeps is bounded: the last [`MAX_KEPT_CALLS`] calls,
//! [`MAX_KEPT_BODY`] bytes of each body, counts for [`MAX_COUNTED_KEYS`] distinct keys and
//! [`MAX_STORED_DOCUMENTS`] documents of [`MAX_DOCUMENT_BYTES`] each; the
//! counts stay exact when calls are dropped from the kept ones.
//!
//! They run in-process, as tokio tasks: [`Upstreams::shutdown`] stops them, and dropping the
//! handle aborts them, so nothing outlives the run.

pub mod collector;
pub mod issuer;
mod reset;
pub mod spec;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::task::JoinSet;

pub use collector::Collector;
pub use issuer::Issuer;
pub use spec::{
    Behaviour, CannedBody, Fault, IssuerDocument, KeySource, RouteSpec, Store, UpstreamKind,
    UpstreamSpec,
};

/// Request bodies above this are cut (the mock is not a storage service).
const MAX_BODY: usize = 1024 * 1024;

/// Calls kept per upstream (older ones are dropped, but still counted). Checks read the calls of
/// one check: the biggest burst in the shipped exercises is 50 concurrent requests, each making
/// at most a call or two, so this is far above what any check reads.
pub const MAX_KEPT_CALLS: usize = 1000;

/// Bytes of a call's body kept (the whole body, up to [`MAX_BODY`], is still read to find its
/// key). The bodies checks read are small JSON documents (a charge, a profile change).
pub const MAX_KEPT_BODY: usize = 16 * 1024;

/// Bytes of a call's headers kept (names and values); later headers are dropped.
const MAX_KEPT_HEADERS: usize = 8 * 1024;

/// Bytes of a call's key kept for display (keys are matched by hash, so a long key still counts).
const MAX_KEPT_KEY: usize = 256;

/// Distinct keys counted per upstream. A run's keys come from its checks' data (an order id per
/// check or request), a few hundred at most; a service that sends more stops being counted per
/// key, and a check asking for a key it did not count says so.
pub const MAX_COUNTED_KEYS: usize = 100_000;

/// Documents a `store = "write"` route keeps per upstream, and the JSON size of each. A check
/// writes a document or two (a profile); a service that writes past either bound gets the answer
/// a real system of record gives when full (507, or 413 for a document too big), and the grader's
/// memory stays bounded.
pub const MAX_STORED_DOCUMENTS: usize = 10_000;
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

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
    /// The first headers, up to [`MAX_KEPT_HEADERS`] bytes.
    pub headers: Vec<(String, String)>,
    /// The first [`MAX_KEPT_BODY`] bytes of the body.
    pub body: Vec<u8>,
    /// Bytes of the body that were not kept (0 when it is whole).
    pub body_dropped: usize,
    /// The key the route counts by, when it has one and the request carried it (its first
    /// [`MAX_KEPT_KEY`] bytes, for display).
    pub key: Option<String>,
    /// The whole key's hash, which calls are matched by.
    key_hash: Option<u64>,
    /// What the mock answered: `201`, `status 503`, `no answer (timeout)`, ...
    pub answered: String,
    /// When the call arrived, on the grader's clock: retries' spacing is measured from these.
    pub arrived_at: Instant,
}

impl Call {
    /// The body as JSON; `None` when it is not JSON or was not kept whole.
    pub fn json(&self) -> Option<Value> {
        if self.body_dropped > 0 {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }
}

/// The calls to one route (for one key, or in the current check): how many there were, and the
/// last of them, as kept.
#[derive(Debug, Clone)]
pub struct RouteCalls {
    /// How many calls the mock received: exact even when some are no longer kept, unless
    /// `counted` is false.
    pub count: usize,
    /// False when the key asked for came after [`MAX_COUNTED_KEYS`] distinct keys, so its calls
    /// were not counted: `count` is then only the calls still kept.
    pub counted: bool,
    /// The last of those calls, oldest first: the first `count - kept.len()` were dropped
    /// (an upstream keeps its last [`MAX_KEPT_CALLS`] calls).
    pub kept: Vec<Call>,
}

impl RouteCalls {
    /// How many of the calls are no longer kept.
    pub fn dropped(&self) -> usize {
        self.count.saturating_sub(self.kept.len())
    }
}

/// A running mock upstream.
pub struct Upstream {
    pub spec: UpstreamSpec,
    /// URL handed to the service, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The keys and tokens of a `kind = "oidc-issuer"` upstream.
    issuer: Option<Arc<Issuer>>,
    /// The spans a `kind = "otlp-collector"` upstream received.
    collector: Option<Arc<Collector>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last [`MAX_KEPT_CALLS`] calls, oldest first.
    kept: VecDeque<Call>,
    /// Calls received so far (kept or not): the last kept one is call number `arrived`.
    arrived: u64,
    /// Current behaviour per route (index as in `spec.routes`).
    behaviour: Vec<Behaviour>,
    /// Calls per route so far, for `{{seq}}` and for counts without a key.
    seq: Vec<u64>,
    /// `seq` when the current check began (see [`Upstream::calls`]).
    seq_at_check_start: Vec<u64>,
    /// Calls per (route, key) hash, for at most [`MAX_COUNTED_KEYS`] keys.
    per_key: HashMap<u64, u64>,
    /// A key came after `per_key` was full, so some keys' calls were not counted.
    keys_uncounted: bool,
    /// Hashes keys with a random seed, so a service cannot aim a collision at a check's key.
    key_hasher: std::collections::hash_map::RandomState,
    /// Documents kept per key by `store = "write"` routes, shown by `store = "read"` routes.
    documents: BTreeMap<String, serde_json::Map<String, Value>>,
    /// `arrived` when the current check began.
    check_start: u64,
    /// Calls per route being answered right now (a delay or a held `timeout` included).
    in_flight: Vec<u32>,
    /// The most `in_flight` reached since [`Upstream::reset_peak`] (or the check began).
    peak_in_flight: Vec<u32>,
    /// The last [`MAX_KEPT_CALLS`] calls that ended, oldest first.
    ended: VecDeque<Ended>,
}

/// A call that ended: answered, or given up by the caller (its connection closed) while the
/// mock was still waiting out the route's delay.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    route: usize,
    pub arrived_at: Instant,
    pub ended_at: Instant,
    /// The route's delay had passed when the call ended (so the mock answered, or held a
    /// `timeout` fault); `false`: the caller left during the delay.
    pub waited_out: bool,
}

impl State {
    /// The document kept under `key`, with `fields` laid over it first (a write). Refused, with
    /// the status and error to answer, past [`MAX_STORED_DOCUMENTS`] or [`MAX_DOCUMENT_BYTES`].
    fn store(
        &mut self,
        key: &str,
        fields: Option<&serde_json::Map<String, Value>>,
    ) -> Result<serde_json::Map<String, Value>, (u16, String)> {
        let mut document = self.documents.get(key).cloned().unwrap_or_default();
        let Some(fields) = fields else {
            return Ok(document);
        };
        if !self.documents.contains_key(key) && self.documents.len() >= MAX_STORED_DOCUMENTS {
            return Err((
                507,
                format!("the mock upstream keeps at most {MAX_STORED_DOCUMENTS} documents"),
            ));
        }
        document.extend(fields.clone());
        let size = serde_json::to_vec(&document).map_or(usize::MAX, |b| b.len());
        if size > MAX_DOCUMENT_BYTES {
            return Err((
                413,
                format!("a document the mock upstream keeps is at most {MAX_DOCUMENT_BYTES} bytes of JSON; this write makes it {size}"),
            ));
        }
        self.documents.insert(key.to_string(), document.clone());
        Ok(document)
    }

    fn new(routes: usize) -> State {
        State {
            seq: vec![0; routes],
            seq_at_check_start: vec![0; routes],
            in_flight: vec![0; routes],
            peak_in_flight: vec![0; routes],
            ..State::default()
        }
    }

    fn key_hash(&self, route: usize, key: &str) -> u64 {
        self.key_hasher.hash_one((route, key))
    }

    /// Counts a call by its key and keeps it, dropping the oldest kept call when full (calls
    /// per route are counted in `seq`).
    fn record(&mut self, call: Call) {
        self.arrived += 1;
        if let Some(hash) = call.key_hash {
            if let Some(n) = self.per_key.get_mut(&hash) {
                *n += 1;
            } else if self.per_key.len() < MAX_COUNTED_KEYS {
                self.per_key.insert(hash, 1);
            } else {
                self.keys_uncounted = true;
            }
        }
        if self.kept.len() == MAX_KEPT_CALLS {
            self.kept.pop_front();
        }
        self.kept.push_back(call);
    }
}

/// A call as kept: its body, headers and key cut to what the mock keeps.
fn kept_call(
    route: String,
    known_route: bool,
    headers: Vec<(String, String)>,
    mut body: Vec<u8>,
    key: Option<(String, u64)>,
    answered: String,
) -> Call {
    let body_dropped = body.len().saturating_sub(MAX_KEPT_BODY);
    body.truncate(MAX_KEPT_BODY);
    body.shrink_to_fit();
    let mut header_bytes = 0;
    let headers = headers
        .into_iter()
        .take_while(|(name, value)| {
            header_bytes += name.len() + value.len();
            header_bytes <= MAX_KEPT_HEADERS
        })
        .collect();
    let (key, key_hash) = match key {
        Some((text, hash)) => (Some(cut_text(&text, MAX_KEPT_KEY)), Some(hash)),
        None => (None, None),
    };
    Call {
        route,
        known_route,
        headers,
        body,
        body_dropped,
        key,
        key_hash,
        answered,
        arrived_at: Instant::now(),
    }
}

/// The first `max` bytes of `text` (at a character boundary), with `…` when it was longer.
fn cut_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
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
    /// (an issuer's JWKS) is counted per check too. The count is exact; the calls themselves are
    /// the last ones kept.
    pub fn calls(&self, route: &str, key: Option<&str>) -> RouteCalls {
        let state = self.lock();
        let Ok(index) = self.route_index(route) else {
            return RouteCalls {
                count: 0,
                counted: true,
                kept: Vec::new(),
            };
        };
        let first_kept = state.arrived - state.kept.len() as u64;
        let (since, key_hash) = match key {
            None => (state.check_start, None),
            Some(key) => (0, Some(state.key_hash(index, key))),
        };
        let kept: Vec<Call> = state
            .kept
            .iter()
            .skip(since.saturating_sub(first_kept) as usize)
            .filter(|c| c.known_route && c.route == route)
            .filter(|c| key_hash.is_none() || c.key_hash == key_hash)
            .cloned()
            .collect();
        let (count, counted) = match key_hash {
            None => (state.seq[index] - state.seq_at_check_start[index], true),
            Some(hash) => match state.per_key.get(&hash) {
                Some(n) => (*n, true),
                None => (kept.len() as u64, !state.keys_uncounted),
            },
        };
        RouteCalls {
            count: count as usize,
            counted,
            kept,
        }
    }

    /// The issuer behind a `kind = "oidc-issuer"` upstream.
    pub fn issuer(&self) -> Option<&Arc<Issuer>> {
        self.issuer.as_ref()
    }

    /// The collector behind a `kind = "otlp-collector"` upstream.
    pub fn collector(&self) -> Option<&Arc<Collector>> {
        self.collector.as_ref()
    }

    /// The calls kept (the last [`MAX_KEPT_CALLS`]), in arrival order, and how many came before
    /// them and were dropped.
    pub fn all_calls(&self) -> (Vec<Call>, u64) {
        let state = self.lock();
        let dropped = state.arrived - state.kept.len() as u64;
        (state.kept.iter().cloned().collect(), dropped)
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
        state.check_start = state.arrived;
        state.seq_at_check_start = state.seq.clone();
        state.peak_in_flight = state.in_flight.clone();
    }

    /// Calls to `route` in flight now, and the most in flight at once since the last reset.
    pub fn in_flight(&self, route: &str) -> Result<(u32, u32), String> {
        let i = self.route_index(route)?;
        let state = self.lock();
        Ok((state.in_flight[i], state.peak_in_flight[i]))
    }

    /// The calls to `route` that arrived at or after `since` and have ended, in the order they
    /// ended.
    pub fn ended_since(&self, route: &str, since: Instant) -> Result<Vec<Ended>, String> {
        let i = self.route_index(route)?;
        let state = self.lock();
        Ok(state
            .ended
            .iter()
            .filter(|e| e.route == i && e.arrived_at >= since)
            .copied()
            .collect())
    }

    /// Starts measuring the peak of calls in flight on `route` afresh, from those in flight now.
    pub fn reset_peak(&self, route: &str) -> Result<(), String> {
        let i = self.route_index(route)?;
        let mut state = self.lock();
        state.peak_in_flight[i] = state.in_flight[i];
        Ok(())
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
    /// Starts one mock per spec on free ports. Specs with the same name (two exercises of a run
    /// that share a dependency, such as graphql's and grpc's loyalty service) are started once,
    /// as the first declares it, with every spec's `service_env` (the first's value wins).
    pub async fn start(specs: &[UpstreamSpec], options: &UpstreamOptions) -> Result<Self, String> {
        let mut merged: Vec<UpstreamSpec> = Vec::new();
        for spec in specs {
            match merged.iter_mut().find(|m| m.name == spec.name) {
                Some(first) => {
                    for (key, value) in &spec.service_env {
                        if !first.service_env.iter().any(|(k, _)| k == key) {
                            first.service_env.push((key.clone(), value.clone()));
                        }
                    }
                }
                None => merged.push(spec.clone()),
            }
        }
        let mut upstreams = Vec::new();
        let mut tasks = Vec::new();
        for spec in &merged {
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
            let collector =
                (spec.kind == UpstreamKind::OtlpCollector).then(|| Arc::new(Collector::default()));
            let issuer = match &spec.kind {
                UpstreamKind::Routes | UpstreamKind::OtlpCollector => None,
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
                collector,
                state: Mutex::new(State {
                    behaviour: spec.routes.iter().map(|r| r.behaviour.clone()).collect(),
                    ..State::new(spec.routes.len())
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
                let (stream, reset) = reset::ResettableStream::new(stream);
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(upstream.clone(), reset.clone(), req)
                    });
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

/// A call being answered; counted out of the route's calls in flight, and recorded as ended,
/// when dropped: hyper drops a call's handler when its caller closes the connection, so an
/// abandoned call ends when its caller leaves.
struct InFlight<'a> {
    upstream: &'a Upstream,
    route: usize,
    arrived_at: Instant,
    waited_out: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.upstream.lock();
        state.in_flight[self.route] = state.in_flight[self.route].saturating_sub(1);
        if state.ended.len() >= MAX_KEPT_CALLS {
            state.ended.pop_front();
        }
        state.ended.push_back(Ended {
            route: self.route,
            arrived_at: self.arrived_at,
            ended_at: Instant::now(),
            waited_out: self.waited_out,
        });
    }
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
    reset: reset::ResetFlag,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec());
    if let Some(collector) = &upstream.collector {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let answer = match &body {
            Ok(bytes) => collector.export(
                parts.method.as_str(),
                parts.uri.path(),
                header("content-type"),
                header("content-encoding"),
                bytes,
            ),
            Err(_) => collector::Answer {
                status: 413,
                content_type: "text/plain; charset=utf-8",
                body: format!("an export is at most {MAX_BODY} bytes: export more often")
                    .into_bytes(),
            },
        };
        return Ok(response(
            answer.status,
            answer.body,
            Some(answer.content_type),
            &[],
        ));
    }
    let body = body.unwrap_or_default();
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
        let call = kept_call(route_id.clone(), false, headers, body, None, "404".into());
        upstream.lock().record(call);
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
    let (behaviour, seq, on_arrival, key) = {
        let mut state = upstream.lock();
        let key = key.map(|k| {
            let hash = state.key_hash(index, &k);
            (k, hash)
        });
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
        // `read_on_arrival`: the document as it is now, before the delay lets writes land.
        let on_arrival = match (route.read_on_arrival, &key) {
            (true, Some((key, _))) => Some(state.documents.get(key).cloned().unwrap_or_default()),
            _ => None,
        };
        let call = kept_call(route_id, true, headers, body, key.clone(), answered);
        state.record(call);
        state.in_flight[index] += 1;
        state.peak_in_flight[index] = state.peak_in_flight[index].max(state.in_flight[index]);
        let key = key.map(|(k, _)| k);
        (effective, seq, on_arrival, key)
    };
    // Counted out however the call ends: answered, dropped, or abandoned by the caller.
    let mut in_flight = InFlight {
        upstream: &upstream,
        route: index,
        arrived_at: Instant::now(),
        waited_out: false,
    };
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }
    in_flight.waited_out = true;
    match behaviour.fault {
        Some(Fault::Timeout) => {
            // Held until the caller gives up or the run ends (shutdown aborts the connection).
            std::future::pending::<()>().await;
            Err(DropConnection)
        }
        Some(Fault::Drop) => Err(DropConnection),
        Some(Fault::Reset) => {
            reset.raise();
            Err(DropConnection)
        }
        Some(Fault::Status(status)) => {
            let retry_after = behaviour
                .retry_after
                .map(|s| ("retry-after".to_string(), s.to_string()));
            Ok(json_response(
                status,
                &json!({ "error": "simulated upstream failure", "status": status }),
                retry_after.as_slice(),
            ))
        }
        None if matches!(route.response.body, CannedBody::Issuer(_)) => {
            Ok(issuer_document(&upstream, route).await)
        }
        None => {
            // The write lands only when the call succeeds, as at a real system of record.
            let kept = match (route.store, &key) {
                (Some(_), Some(_)) if on_arrival.is_some() => on_arrival,
                (Some(store), Some(key)) => {
                    let mut state = upstream.lock();
                    let fields = match (store, request_json.as_ref()) {
                        (Store::Write, Some(Value::Object(fields))) => Some(fields),
                        _ => None,
                    };
                    match state.store(key, fields) {
                        Ok(document) => Some(document),
                        Err((status, error)) => {
                            return Ok(json_response(status, &json!({ "error": error }), &[]))
                        }
                    }
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

    /// Two exercises sharing a dependency: one mock, and the service gets both exercises'
    /// settings for it.
    #[tokio::test]
    async fn upstreams_of_one_name_start_once_with_every_exercises_service_env() {
        let mut first = spec();
        first.env = "PAYMENTS_URL".into();
        let mut second = spec();
        second.service_env = vec![("API_TOKENS".into(), "t=7".into())];
        let ups = Upstreams::start(&[first, second], &UpstreamOptions::default())
            .await
            .unwrap();
        assert_eq!(ups.iter().count(), 1);
        let vars = ups.env_vars(&BTreeMap::new());
        assert_eq!(vars.len(), 2, "{vars:?}");
        assert_eq!(vars[0].0, "PAYMENTS_URL");
        assert_eq!(vars[1], ("API_TOKENS".to_string(), "t=7".to_string()));
    }

    #[tokio::test]
    async fn resets_says_retry_after_and_measures_calls_in_flight() {
        let ups = Upstreams::start(&[spec()], &UpstreamOptions::default())
            .await
            .unwrap();
        let up = ups.get("payments").unwrap().clone();
        let url = format!("{}/charges", up.url);
        let set = |fault, retry_after, delay| {
            up.set_behaviour(
                "POST /charges",
                Behaviour {
                    fault,
                    retry_after,
                    delay,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        // A raw socket, so the reset is seen as the kernel reports it, not as a client's guess.
        set(Some(Fault::Reset), None, Duration::ZERO);
        let mut stream = tokio::net::TcpStream::connect(up.url.trim_start_matches("http://"))
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"POST /charges HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let read = stream.read(&mut buf).await;
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::ConnectionReset),
            "a reset, not a clean close"
        );

        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        set(Some(Fault::Status(503)), Some(1), Duration::ZERO);
        let r = client.post(&url).json(&json!({})).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");

        set(None, None, Duration::from_millis(300));
        up.reset_peak("POST /charges").unwrap();
        let calls = (0..4).map(|i| {
            client
                .post(&url)
                .json(&json!({"order_id": format!("o-{i}"), "amount_cents": 1}))
                .send()
        });
        let answers = futures_util::future::join_all(calls).await;
        assert!(answers.iter().all(|r| r.as_ref().unwrap().status() == 201));
        assert_eq!(up.in_flight("POST /charges").unwrap(), (0, 4));
        let (kept, _) = up.all_calls();
        let last_four = &kept[kept.len() - 4..];
        let spread = last_four[3].arrived_at - last_four[0].arrived_at;
        assert!(
            spread < Duration::from_millis(300),
            "arrival times are taken as calls come in: {spread:?}"
        );
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
        assert_eq!(up.calls("POST /charges", Some("o-1")).count, 2);
        assert_eq!(up.calls("POST /charges", Some("o-2")).count, 1);
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
        assert_eq!(up.calls("POST /charges", Some("o-4")).count, 1);
        let started = std::time::Instant::now();
        ups.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(held.await.unwrap().is_err());
        assert!(client.post(&url).send().await.is_err());
    }

    #[tokio::test]
    async fn keeps_the_last_calls_with_cut_bodies_and_counts_them_all() {
        let ups = Upstreams::start(&[spec()], &UpstreamOptions::default())
            .await
            .unwrap();
        let up = ups.get("payments").unwrap().clone();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("{}/charges", up.url);
        let padding = "x".repeat(MAX_KEPT_BODY + 4096);
        let total = MAX_KEPT_CALLS + 200;
        for i in 0..total {
            let order = if i % 2 == 0 { "even" } else { "odd" };
            let r = client
                .post(&url)
                .json(&json!({"order_id": order, "amount_cents": 1, "padding": padding}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
        let (kept, dropped) = up.all_calls();
        assert_eq!(kept.len(), MAX_KEPT_CALLS);
        assert_eq!(dropped, 200);
        assert!(kept.iter().all(|c| c.body.len() == MAX_KEPT_BODY));
        assert!(kept
            .iter()
            .all(|c| c.body_dropped > 4096 && c.json().is_none()));
        // The counts are exact though the first calls were dropped.
        let even = up.calls("POST /charges", Some("even"));
        assert_eq!((even.count, even.counted), (total / 2, true));
        assert_eq!(even.kept.len(), MAX_KEPT_CALLS / 2);
        assert_eq!(even.dropped(), 100);
        assert_eq!(up.calls("POST /charges", None).count, total);
        ups.begin_check(&["payments".to_string()]);
        client
            .post(&url)
            .json(&json!({"order_id": "odd", "amount_cents": 1}))
            .send()
            .await
            .unwrap();
        let this_check = up.calls("POST /charges", None);
        assert_eq!((this_check.count, this_check.kept.len()), (1, 1));
        assert_eq!(this_check.kept[0].json().unwrap()["order_id"], "odd");
        ups.shutdown().await;
    }

    #[test]
    fn counts_a_bounded_number_of_keys_and_says_when_one_was_not_counted() {
        let mut state = State::new(1);
        let call = |state: &State, key: &str| {
            let hash = state.key_hash(0, key);
            let long_header = ("x-pad".to_string(), "h".repeat(MAX_KEPT_HEADERS));
            let headers = vec![("a".to_string(), "b".to_string()), long_header];
            kept_call(
                "POST /charges".into(),
                true,
                headers,
                Vec::new(),
                Some((key.repeat(100), hash)),
                "201".into(),
            )
        };
        for i in 0..MAX_COUNTED_KEYS + 10 {
            let c = call(&state, &format!("k{i}"));
            state.record(c);
        }
        assert_eq!(state.per_key.len(), MAX_COUNTED_KEYS);
        assert!(state.keys_uncounted);
        assert_eq!(state.kept.len(), MAX_KEPT_CALLS);
        let last = state.kept.back().unwrap();
        assert!(last.key.as_ref().unwrap().len() <= MAX_KEPT_KEY + '…'.len_utf8());
        assert_eq!(last.headers.len(), 1);
    }

    #[test]
    fn keeps_a_bounded_number_of_documents_of_bounded_size() {
        let mut state = State::new(1);
        let fields = |v: Value| v.as_object().unwrap().clone();
        for i in 0..MAX_STORED_DOCUMENTS {
            state
                .store(&format!("k{i}"), Some(&fields(json!({"n": i}))))
                .unwrap();
        }
        let full = state.store("one-more", Some(&fields(json!({"n": 0}))));
        assert_eq!(full.unwrap_err().0, 507);
        // A read of an unknown key and a write to a kept one still work when full.
        assert!(state.store("never-written", None).unwrap().is_empty());
        let kept = state.store("k1", Some(&fields(json!({"m": 2})))).unwrap();
        assert_eq!(Value::Object(kept), json!({"n": 1, "m": 2}));
        let big = "x".repeat(MAX_DOCUMENT_BYTES);
        let too_big = state.store("k2", Some(&fields(json!({"pad": big}))));
        assert_eq!(too_big.unwrap_err().0, 413);
        assert_eq!(
            Value::Object(state.store("k2", None).unwrap()),
            json!({"n": 2})
        );
        assert_eq!(state.documents.len(), MAX_STORED_DOCUMENTS);
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
        assert_eq!(up.calls("GET /profiles/{user}", Some("amber")).count, 2);
        assert_eq!(up.calls("PATCH /profiles/{user}", Some("amber")).count, 1);
        assert_eq!(up.calls("GET /profiles/{user}", Some("b-cat")).count, 1);
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
