//! `trace_context`: W3C Trace Context on the wire. The grader sends a request that makes the
//! service call a mock upstream, with a valid `traceparent`, none, or a malformed one, and reads
//! the `traceparent` the upstream received: the same trace with a new parent, a new trace, or a
//! new trace that never repeats the malformed value (OBS-6, OBS-7).

pub mod params;
mod run;

pub use params::{parse, TraceContext as Params};
pub(crate) use run::send_through;
pub use run::{parse_traceparent, run};
