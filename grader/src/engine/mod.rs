//! The engine: what a check runs with. [`CheckContext`] (the bounded HTTP client, the service,
//! the check's seeded data and random stream, the mock upstreams, what was measured), declarative
//! `step`s, `assert` (predicates shared by steps and probes), `http` (the client, curl
//! rendering, bearer tokens decoded for the report) and `tokens` (the check's `gen = "jwt"`
//! variables, minted by the mock issuer). Probes (`crate::probes`) build on it; the grading run (`crate::run`) drives it.
//! It never starts processes (the runtime does), never parses exercise files (`exercise` does)
//! and never computes scores (scoring does).

pub mod assert;
pub mod broker;
pub mod http;
pub mod lifecycle;
pub mod sql;
pub mod step;
#[cfg(test)]
pub mod test_service;
pub mod tokens;
pub mod wire;

use rand_chacha::ChaCha8Rng;
use url::Url;

use crate::outcome::Exchange;
use crate::runtime::{RunningService, ServiceState};
use crate::spec::random;
use crate::spec::template::Scope;
use http::{HttpClient, OutgoingRequest, Response};

/// Lines of service log attached to a failure caused by a crash or hang.
pub const LOG_TAIL_LINES: usize = 30;

/// Why a check did not pass.
#[derive(Debug)]
pub enum Failure {
    /// The service misbehaved.
    Fail(FailInfo),
    /// The grader (or the exercise file) could not run the check.
    Error(String),
    /// The check cannot be judged where the service runs (e.g. its output is not the grader's
    /// to read with `--runtime external`): reported as `skip` with this reason, never a pass.
    Skip(String),
}

#[derive(Debug, Default)]
pub struct FailInfo {
    /// One line, e.g. `create a product: expected status 201, got 200`.
    pub message: String,
    pub expected: String,
    pub actual: String,
    pub evidence: Vec<String>,
    pub log_tail: Vec<String>,
}

/// A failed check's verdict: one line, what was expected, what came instead, the evidence.
pub fn fail(
    message: String,
    expected: impl Into<String>,
    actual: String,
    evidence: Vec<String>,
) -> Failure {
    Failure::Fail(FailInfo {
        message,
        expected: expected.into(),
        actual,
        evidence,
        ..Default::default()
    })
}

/// What a step or probe works with while a check runs.
pub struct CheckContext<'a> {
    pub http: &'a HttpClient,
    pub service: &'a RunningService,
    /// Generated data and captures.
    pub scope: Scope,
    /// The check's own random stream (derived from the run seed and the check id).
    pub rng: ChaCha8Rng,
    /// Exchanges shown in the report; probes may trim them to the ones that matter.
    pub exchanges: Vec<Exchange>,
    /// The exercise's variable generators, for probes that need fresh data per request.
    pub vars: &'a [(String, crate::spec::VarGen)],
    /// The `gen = "jwt"` variables the check uses, minted again with every fresh scope.
    pub tokens: tokens::CheckTokens<'a>,
    /// The run's mock upstreams: read their calls, change a route's latency or faults (until the
    /// check ends).
    pub upstreams: &'a crate::upstream::Upstreams,
    /// What the check measured (buffers, statements, ratios), reported on a pass too, so a
    /// learner sees how far from the budget their service is.
    pub measurements: Vec<String>,
}

impl CheckContext<'_> {
    /// Records a figure the check measured, e.g. "23.0 shared buffers per request (budget 40)".
    pub fn measured(&mut self, line: String) {
        self.measurements.push(line);
    }

    /// A new set of generated values (from this check's stream), e.g. a fresh unique SKU for
    /// each of many requests, with the check's tokens minted for them (no rotation). A token that
    /// cannot be minted is left out, so a template naming it fails as "not defined".
    pub fn fresh_scope(&mut self) -> Scope {
        let mut scope = random::generate(self.vars, &mut self.rng);
        let _ = tokens::mint(self.tokens, &mut scope, self.upstreams);
        scope
    }

    /// The URL of a path on the service. Absolute URLs (from a Location header) are accepted when
    /// they point at the service's own host. Everything is resolved the way a browser would (the
    /// URL crate, WHATWG rules: `//host/x` and `/\\host/x` name another host, schemes in any case),
    /// and anything that does not lead back to the service fails the check: the grader never
    /// sends a request to a host a service named.
    pub fn url(&self, path: &str) -> Result<Url, Failure> {
        resolve_on_service(&self.service.base_url, &self.service.base_url, path)
            .map_err(fail_simple)
    }

    /// Sends a request and records the exchange. A transport problem is the service's failure;
    /// when the service process has died, the failure says so and carries its last log lines.
    pub async fn send(&mut self, step: &str, req: OutgoingRequest) -> Result<Response, Failure> {
        let summary = format!("{} {}", req.method, req.url.path());
        let sent = self.http.send(step, req).await;
        self.exchanges.push(sent.exchange);
        match sent.response {
            Ok(response) => Ok(response),
            Err(transport) => Err(self.transport_failure(step, &summary, transport).await),
        }
    }

    /// Sends a request on a fresh socket and reads the wire as it is (see [`wire`]): the
    /// response's `body` is every byte that followed its head, whatever the framing rules say.
    /// The exchange is recorded with those bytes as its body.
    pub async fn send_raw(
        &mut self,
        step: &str,
        req: OutgoingRequest,
    ) -> Result<wire::RawResponse, Failure> {
        let summary = format!("{} {}", req.method, req.url.path());
        let result = wire::exchange_raw(&req, self.http.timeout()).await;
        self.exchanges.push(crate::outcome::Exchange {
            step: step.to_string(),
            request: http::record_request(&req),
            curl: http::curl_command(&req),
            response: result
                .as_ref()
                .ok()
                .map(|raw| http::record_response(&raw.response)),
            transport_error: result.as_ref().err().cloned(),
        });
        match result {
            Ok(raw) => Ok(raw),
            Err(transport) => Err(self.transport_failure(step, &summary, transport).await),
        }
    }

    /// The failure for a request that got no response: the service's exit (with its last log
    /// lines) when it died, the log tail when it hung.
    pub(crate) async fn transport_failure(
        &self,
        step: &str,
        summary: &str,
        transport: String,
    ) -> Failure {
        let mut info = FailInfo {
            message: format!("{step}: {transport}"),
            expected: format!("a response to {summary}"),
            actual: transport,
            ..Default::default()
        };
        if let ServiceState::Exited { code, signal } =
            self.service.state_after_transport_error().await
        {
            info.message = format!(
                "{step}: your service {} while handling {summary}",
                exit_words(code, signal)
            );
            info.log_tail = self.service.log_tail(LOG_TAIL_LINES);
        } else if is_hang(&info.actual) {
            info.log_tail = self.service.log_tail(LOG_TAIL_LINES);
        }
        Failure::Fail(info)
    }
}

/// Whether a transport error says the service did not answer in time (the client's messages:
/// "no complete response within 10s", "no complete response head", "... request timeout").
pub fn is_hang(transport: &str) -> bool {
    transport.contains("no complete response") || transport.contains("timeout")
}

/// "exited with code 1" / "was killed by signal 9"
pub fn exit_words(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        (None, None) => "exited".into(),
    }
}

pub(crate) fn fail_simple(message: String) -> Failure {
    Failure::Fail(FailInfo {
        actual: message.clone(),
        message,
        ..Default::default()
    })
}

/// Resolves `path` (a path, or a URL from a Location header, a Link header or a body) against
/// `from` (the URL it came with), and checks it leads back to the service at `base`; see
/// [`CheckContext::url`]. `Err` says why it does not.
pub fn resolve_on_service(base: &Url, from: &Url, path: &str) -> Result<Url, String> {
    let url = from
        .join(path)
        .map_err(|e| format!("\"{path}\" is not a valid path: {e}"))?;
    let same_origin = url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default();
    if same_origin {
        return Ok(url);
    }
    let local = matches!(url.scheme(), "http" | "https")
        && matches!(
            url.host_str(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "0.0.0.0")
        );
    // A service in a container may name itself by its own port (http://localhost:8080/x): keep
    // the path, but send it where the service actually listens. Only a URL written as absolute
    // gets this; a relative one that resolved elsewhere (`//localhost:9/x`) is another host.
    if local && path.contains("://") {
        let mut fixed = base.clone();
        fixed.set_path(url.path());
        fixed.set_query(url.query());
        return Ok(fixed);
    }
    Err(format!(
        "the URL \"{path}\" points at another host ({}); the service's own URLs must lead back to it (use a path like /products/1, or your own host)",
        url.origin().ascii_serialization()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_urls_that_lead_back_to_the_service_are_followed() {
        let base = Url::parse("http://127.0.0.1:4000/").unwrap();
        let ok = |p: &str| resolve_on_service(&base, &base, p).unwrap().to_string();
        assert_eq!(
            ok("/accounts/1?x=2"),
            "http://127.0.0.1:4000/accounts/1?x=2"
        );
        assert_eq!(
            ok("http://localhost:8080/accounts/1"),
            "http://127.0.0.1:4000/accounts/1"
        );
        assert_eq!(ok("HTTP://127.0.0.1:4000/a"), "http://127.0.0.1:4000/a");
        let page = Url::parse("http://127.0.0.1:4000/items?limit=2").unwrap();
        assert_eq!(
            resolve_on_service(&base, &page, "?cursor=x")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:4000/items?cursor=x"
        );
        for elsewhere in [
            "//127.0.0.2:4000/accounts/1",
            "/\\127.0.0.2:4000/accounts/1",
            "http://127.0.0.2:4000/x",
            "HTTP://example.com/x",
            "//localhost:9/x",
            "file:///etc/passwd",
        ] {
            let err = resolve_on_service(&base, &base, elsewhere).unwrap_err();
            assert!(err.contains("points at another host"), "{elsewhere}: {err}");
        }
    }
}
