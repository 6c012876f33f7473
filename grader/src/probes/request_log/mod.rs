//! `request_log`: every request the grader sends carries its own `X-Request-Id` and
//! `traceparent`; afterwards the service's output must hold exactly one JSON line per request,
//! found by that request id, with the method, route template, status, duration and trace id the
//! grader knows to be true (OBS-8).

pub mod params;
mod run;

pub use params::{parse, RequestLog as Params};
pub use run::run;
