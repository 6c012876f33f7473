//! `contract`: requests sent in order (with expectations and captures, like `upstream_calls`),
//! each response also held to the service's own OpenAPI document: documented status, media
//! type, body schema, required headers. Operations the exercise names as deprecated must be
//! marked so in the document and announce it on every response (RFC 9745 `Deprecation`, RFC 8594
//! `Sunset`).

pub mod params;
mod run;

pub use params::{parse, Contract as Params};
pub use run::run;
