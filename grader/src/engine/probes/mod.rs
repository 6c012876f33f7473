//! Built-in probes: Rust code for what declarative steps cannot say. Each probe lives in its own
//! file; `exercise::probes` parses its parameters.

mod no_internals_leak;

use super::{CheckContext, Failure};
use crate::exercise::ProbeCall;

pub async fn run(call: &ProbeCall, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    match call {
        ProbeCall::NoInternalsLeak(params) => no_internals_leak::run(params, ctx).await,
    }
}
