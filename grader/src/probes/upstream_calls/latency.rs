//! `under_upstream_delay` on an `upstream_calls` request: the response must arrive in less than a
//! share of the mock upstream's delay, which shows it was answered without waiting for the
//! upstream (a cache hit). `waits_for_upstream` is the converse: the response must not arrive
//! before the delay has passed, which shows it waited for a fresh answer (a miss, not a stale
//! entry served while it is refreshed in the background).
//!
//! The bound is relative to the delay the grader itself imposes on the mock, never an absolute
//! time: a response that waited for the upstream cannot be faster than the mock's sleep, so a
//! failure is certain, and a cache hit has the whole rest of the delay as its margin.

use std::time::Duration;

use crate::engine::{FailInfo, Failure};
use crate::probes::request::UpstreamParams;
use crate::upstream::Upstream;

/// Fails when `took` is not under `share` of the route's current delay (the check's own `delay`,
/// or the route's declared one).
pub(crate) fn check(
    u: &UpstreamParams,
    upstream: &Upstream,
    request: &str,
    summary: &str,
    share: f64,
    took: Duration,
) -> Result<(), Failure> {
    let delay = route_delay(u, upstream, "under_upstream_delay")?;
    let bound = delay.mul_f64(share);
    if took < bound {
        return Ok(());
    }
    // Past the whole delay, the exact time says nothing more (and varies from run to run).
    let actual = if took >= delay {
        format!(
            "as long as the upstream's whole {} ms delay, or longer",
            delay.as_millis()
        )
    } else {
        format!("{} ms", took.as_millis())
    };
    Err(Failure::Fail(FailInfo {
        message: format!(
            "{request} ({summary}) took {actual}; expected under {} ms ({}% of the {} ms {} ({}) takes to answer): it waited for the upstream instead of answering from the cache",
            bound.as_millis(),
            (share * 100.0).round(),
            delay.as_millis(),
            u.name,
            u.route
        ),
        expected: format!(
            "an answer in under {} ms, without waiting for {}",
            bound.as_millis(),
            u.name
        ),
        actual: format!("an answer after {actual}"),
        ..Default::default()
    }))
}

fn route_delay(u: &UpstreamParams, upstream: &Upstream, option: &str) -> Result<Duration, Failure> {
    let delay = upstream.behaviour(&u.route).map_err(Failure::Error)?.delay;
    if delay.is_zero() {
        return Err(Failure::Error(format!(
            "`{option}` compares with the delay of {} ({}), which has none; give the route or params.upstream a `delay`",
            u.name, u.route
        )));
    }
    Ok(delay)
}

/// Fails when `took` is shorter than the route's delay: the answer cannot have come from the
/// upstream, which had not answered yet.
pub(crate) fn check_waited(
    u: &UpstreamParams,
    upstream: &Upstream,
    request: &str,
    summary: &str,
    took: Duration,
) -> Result<(), Failure> {
    let delay = route_delay(u, upstream, "waits_for_upstream")?;
    if took >= delay {
        return Ok(());
    }
    Err(Failure::Fail(waited_too_little(
        u, request, summary, delay, took,
    )))
}

fn waited_too_little(
    u: &UpstreamParams,
    request: &str,
    summary: &str,
    delay: Duration,
    took: Duration,
) -> FailInfo {
    FailInfo {
        message: format!(
            "{request} ({summary}) was answered in {} ms, before {} ({}) could have answered (it takes {} ms): the answer came from a stored entry, not from a fresh lookup",
            took.as_millis(),
            u.name,
            u.route,
            delay.as_millis()
        ),
        expected: format!(
            "an answer after the {} ms lookup at {} (an expired entry is a miss)",
            delay.as_millis(),
            u.name
        ),
        actual: format!(
            "an answer after {} ms: a stale entry served while it is refreshed",
            took.as_millis()
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> UpstreamParams {
        UpstreamParams {
            name: "profiles".into(),
            route: "GET /profiles/{user}".into(),
            key: None,
            calls: None,
            max_calls: None,
            delay: None,
            fault: None,
            fault_times: None,
            body_json: Vec::new(),
            noun: "lookup".into(),
        }
    }

    #[test]
    fn an_answer_faster_than_the_upstream_names_both_times() {
        let info = waited_too_little(
            &params(),
            "read it again",
            "GET /profiles/amber",
            Duration::from_millis(300),
            Duration::from_millis(4),
        );
        assert!(
            info.message.contains("answered in 4 ms"),
            "{}",
            info.message
        );
        assert!(info.message.contains("it takes 300 ms"), "{}", info.message);
        assert!(info.actual.contains("stale entry"), "{}", info.actual);
    }
}
