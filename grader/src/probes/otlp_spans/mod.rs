//! `otlp_spans`: the service exports its spans to the grader's OTLP collector. One request with a
//! known `traceparent` through a route that calls a mock upstream; then, within `wait`, the
//! collector must hold the span tree of that request: a SERVER span whose parent is the caller's
//! span, a CLIENT span under it for the upstream call, the HTTP semantic-convention attributes on
//! both, and the parent id the upstream received naming one of those spans.

pub mod params;
mod run;

pub use params::{parse, OtlpSpans as Params};
pub use run::run;
