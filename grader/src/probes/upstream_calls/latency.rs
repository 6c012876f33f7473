//! `under_upstream_delay` on an `upstream_calls` request: the response must arrive in less than a
//! share of the mock upstream's delay, which shows it was answered without waiting for the
//! upstream (a cache hit).
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
    let delay = upstream.behaviour(&u.route).map_err(Failure::Error)?.delay;
    if delay.is_zero() {
        return Err(Failure::Error(format!(
            "`under_upstream_delay` compares with the delay of {} ({}), which has none; give the route or params.upstream a `delay`",
            u.name, u.route
        )));
    }
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
