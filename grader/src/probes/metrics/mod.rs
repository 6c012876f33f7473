//! `metrics`: scrapes the service's Prometheus endpoint before and after known traffic and judges
//! one aspect of what it shows: that it is the text format at all (`exposition`), that its request
//! counter grew by exactly the requests sent (`counter`), that its latency histogram is one and
//! measured in seconds (`histogram`), or that route labels are templates (`cardinality`).

pub mod exposition;
pub mod params;
mod run;

pub use params::{parse, Metrics as Params};
pub use run::run;
