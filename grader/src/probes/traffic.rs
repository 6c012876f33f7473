//! Known traffic for the telemetry probes (`metrics`, `request_log`): requests sent a counted
//! number of times, each with the route template the service's telemetry must name it by, each
//! response judged, and what was sent remembered (the status the service chose, how long the
//! grader waited, the request and trace ids it attached) so that what the service reports can be
//! compared with what really happened.
//!
//! ```toml
//! [[check.params.traffic]]
//! route = "/shipments/{id}"        # the route template, as the README writes it
//! times = 4                        # 1 to 500
//! fresh = true                     # a new set of [vars] values for each request
//! request = { method = "GET", path = "/shipments/{{missing_id}}", status = 404 }
//! ```

use std::time::{Duration, Instant};

use rand::Rng;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::engine::step::{apply_captures, build_request};
use crate::engine::{CheckContext, Failure};
use crate::probes::request::{de, request, ProbeRequest};
use crate::probes::upstream_calls::run::{judge, Seen};

/// Most requests one entry sends.
const MAX_TIMES: u32 = 500;

/// Requests sent the same way, `times` times.
#[derive(Debug, Clone)]
pub struct TrafficEntry {
    /// The route template the service's telemetry must use: `/shipments/{id}`.
    pub route: String,
    pub times: u32,
    /// A new set of generated values for each request (a new id every time).
    pub fresh: bool,
    pub request: ProbeRequest,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TrafficEntry")]
pub struct RawTrafficEntry {
    route: String,
    #[serde(default = "one")]
    times: u32,
    #[serde(default)]
    fresh: bool,
    #[schemars(with = "crate::probes::request::RawRequest")]
    request: toml::Value,
}

fn one() -> u32 {
    1
}

pub fn parse_traffic(probe: &str, values: Vec<toml::Value>) -> Result<Vec<TrafficEntry>, String> {
    if values.is_empty() {
        return Err(format!(
            "params.traffic of `{probe}` lists the requests to send: at least one"
        ));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let raw: RawTrafficEntry = de(&format!("params.traffic[{}] of `{probe}`", i + 1), v)?;
            if raw.times == 0 || raw.times > MAX_TIMES {
                return Err(format!(
                    "params.traffic[{}].times is 1 to {MAX_TIMES}",
                    i + 1
                ));
            }
            if !raw.route.starts_with('/') {
                return Err(format!(
                    "params.traffic[{}].route \"{}\" is a route template such as \"/shipments/{{id}}\"",
                    i + 1,
                    raw.route
                ));
            }
            let request = request(probe, i, raw.request)?;
            if raw.fresh && !request.captures.is_empty() {
                return Err(format!(
                    "params.traffic[{}]: a `fresh` request cannot capture (each has its own values)",
                    i + 1
                ));
            }
            Ok(TrafficEntry {
                route: raw.route,
                times: raw.times,
                fresh: raw.fresh,
                request,
            })
        })
        .collect()
}

/// The set-up requests (`setup = [...]`) a telemetry probe sends before its traffic.
pub fn parse_setup(probe: &str, values: Vec<toml::Value>) -> Result<Vec<ProbeRequest>, String> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| request(probe, i, v))
        .collect()
}

/// Template strings of the set-up and traffic requests, for the static variable check.
pub fn template_strings(setup: &[ProbeRequest], traffic: &[TrafficEntry]) -> Vec<String> {
    let mut all = setup.to_vec();
    all.extend(traffic.iter().map(|t| t.request.clone()));
    crate::probes::request::template_strings(&all, None)
}

/// One request as sent and answered.
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    /// The route template it belongs to.
    pub route: String,
    /// The path as sent (`/shipments/3f2a…`).
    pub path: String,
    /// The segments of `path` that stand where `route` has a placeholder: the ids that must
    /// never appear in a label.
    pub ids: Vec<String>,
    pub status: u16,
    /// From just before sending to the end of the response, on the grader's clock: the service's
    /// own measurement of the request cannot be longer.
    pub elapsed: Duration,
    /// The `X-Request-Id` and trace id the grader attached, when it attached them.
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
}

/// Whether to attach an `X-Request-Id` and a W3C `traceparent` (new random ids) to each request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tagging {
    None,
    RequestAndTraceIds,
}

/// Sends every entry's requests in order, judging each response as the request expects. Keeps
/// the first and last exchanges of each entry in the report.
pub async fn send(
    ctx: &mut CheckContext<'_>,
    traffic: &[TrafficEntry],
    tagging: Tagging,
) -> Result<Vec<Sent>, Failure> {
    let identity = crate::probes::request::query("$.id").map_err(Failure::Error)?;
    let mut sent = Vec::new();
    for entry in traffic {
        let kept_from = ctx.exchanges.len();
        for n in 0..entry.times {
            let saved = if entry.fresh {
                let fresh = ctx.fresh_scope();
                Some(std::mem::replace(&mut ctx.scope, fresh))
            } else {
                None
            };
            let result = send_one(ctx, entry, tagging, &identity).await;
            if let Some(saved) = saved {
                ctx.scope = saved;
            }
            sent.push(result?);
            // The first and the last exchange of an entry are enough to show it.
            if n >= 2 {
                ctx.exchanges.remove(kept_from + 1);
            }
        }
    }
    Ok(sent)
}

async fn send_one(
    ctx: &mut CheckContext<'_>,
    entry: &TrafficEntry,
    tagging: Tagging,
    identity: &crate::spec::JsonQuery,
) -> Result<Sent, Failure> {
    let mut req = build_request(ctx, &entry.request.spec)?;
    let (mut request_id, mut trace_id) = (None, None);
    if tagging == Tagging::RequestAndTraceIds {
        let rid = format!("grader-{:016x}", ctx.rng.gen::<u64>());
        let (tid, parent) = new_trace(&mut ctx.rng);
        req.headers.push(("X-Request-Id".into(), rid.clone()));
        req.headers
            .push(("traceparent".into(), format!("00-{tid}-{parent}-01")));
        request_id = Some(rid);
        trace_id = Some(tid);
    }
    let method = req.method.clone();
    let path = req.url.path().to_string();
    let summary = format!("{method} {path}");
    let started = Instant::now();
    let resp = ctx.send(&entry.request.name, req).await?;
    let elapsed = started.elapsed();
    let seen: Vec<Seen> = Vec::new();
    if let Some(info) = judge(ctx, &entry.request, &summary, &resp, &seen, identity)? {
        return Err(Failure::Fail(info));
    }
    apply_captures(ctx, &entry.request.name, &entry.request.captures, &resp)?;
    Ok(Sent {
        ids: placeholder_segments(&entry.route, &path),
        method,
        route: entry.route.clone(),
        path,
        status: resp.status,
        elapsed,
        request_id,
        trace_id,
    })
}

/// A new W3C trace id (32 lower-case hex digits) and parent span id (16), never all zeros.
pub fn new_trace(rng: &mut impl Rng) -> (String, String) {
    let trace: u128 = rng.gen::<u128>() | 1;
    let parent: u64 = rng.gen::<u64>() | 1;
    (format!("{trace:032x}"), format!("{parent:016x}"))
}

/// Whether a placeholder segment of a template: `{id}`, and the other spellings routers use
/// (`:id`, `<id>`, `<int:id>`, `*`).
fn is_placeholder(segment: &str) -> bool {
    (segment.starts_with('{') && segment.ends_with('}') && segment.len() > 2)
        || (segment.starts_with('<') && segment.ends_with('>') && segment.len() > 2)
        || (segment.starts_with(':') && segment.len() > 1)
        || segment == "*"
}

/// Whether a label value names the route template `template` in any router's spelling:
/// `/shipments/{id}` matches `/shipments/{id}`, `/shipments/:id`, `/shipments/<id>` and
/// `/shipments/{shipment_id}`; never `/shipments/3f2a…`. A trailing slash is ignored.
pub fn route_matches(label: &str, template: &str) -> bool {
    let trim = |s: &str| -> String {
        let s = s.split('?').next().unwrap_or(s);
        if s.len() > 1 {
            s.trim_end_matches('/').to_string()
        } else {
            s.to_string()
        }
    };
    let (label, template) = (trim(label), trim(template));
    let label: Vec<&str> = label.split('/').collect();
    let template: Vec<&str> = template.split('/').collect();
    label.len() == template.len()
        && label.iter().zip(&template).all(|(l, t)| {
            if is_placeholder(t) {
                is_placeholder(l)
            } else {
                l == t
            }
        })
}

/// The segments of `path` where `template` has a placeholder.
fn placeholder_segments(template: &str, path: &str) -> Vec<String> {
    let path = path.split('?').next().unwrap_or(path);
    template
        .split('/')
        .zip(path.split('/'))
        .filter(|(t, _)| is_placeholder(t))
        .map(|(_, p)| p.to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_match_templates_in_every_routers_spelling() {
        for label in [
            "/shipments/{id}",
            "/shipments/:id",
            "/shipments/<id>",
            "/shipments/<int:id>",
            "/shipments/{shipment_id}",
            "/shipments/{id}/",
        ] {
            assert!(route_matches(label, "/shipments/{id}"), "{label}");
        }
        for label in [
            "/shipments/3f2a9c",
            "/shipments",
            "/shipments/{id}/x",
            "/quotes",
            "/shipments/{}",
        ] {
            assert!(!route_matches(label, "/shipments/{id}"), "{label}");
        }
        assert!(route_matches("/quotes", "/quotes"));
        assert!(route_matches("/quotes/", "/quotes"));
        assert!(route_matches("/", "/"));
    }

    #[test]
    fn the_ids_of_a_path_are_its_placeholder_segments() {
        assert_eq!(
            placeholder_segments("/shipments/{id}", "/shipments/abc-1?x=1"),
            vec!["abc-1"]
        );
        assert!(placeholder_segments("/quotes", "/quotes").is_empty());
    }

    #[test]
    fn traces_are_lower_hex_and_never_zero() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (t, p) = new_trace(&mut rng);
        assert_eq!((t.len(), p.len()), (32, 16));
        assert!(t
            .chars()
            .chain(p.chars())
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}
