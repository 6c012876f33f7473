//! Built-in probes: Rust code for what declarative steps cannot say. Each probe lives in its own
//! file; `exercise::probes` parses its parameters.

mod concurrent;
mod db;
mod deep_pages;
mod no_internals_leak;
mod paginate;
mod query_plan;
mod redundant_indexes;
mod revalidate;
mod upstream_calls;
mod upstream_latency;

use super::{CheckContext, Failure};
use crate::exercise::ProbeCall;

pub async fn run(call: &ProbeCall, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    match call {
        ProbeCall::NoInternalsLeak(params) => no_internals_leak::run(params, ctx).await,
        ProbeCall::Concurrent(params) => concurrent::run(params, ctx).await,
        ProbeCall::UpstreamCalls(params) => upstream_calls::run(params, ctx).await,
        ProbeCall::QueryPlan(params) => query_plan::run(params, ctx).await,
        ProbeCall::DeepPages(params) => deep_pages::run(params, ctx).await,
        ProbeCall::RedundantIndexes(params) => redundant_indexes::run(params, ctx).await,
        ProbeCall::Paginate(params) => paginate::run(params, ctx).await,
        ProbeCall::Revalidate(params) => revalidate::run(params, ctx).await,
    }
}
