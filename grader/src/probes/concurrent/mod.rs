//! `concurrent`: fires the requests together (or staggered), then checks each response, that none
//! is a 5xx, that every 2xx names the same resource, and the upstream's call counts.

pub mod params;
mod run;

pub use params::{parse_concurrent as parse, Concurrent as Params};
pub use run::run;
