//! `deep_pages`: page N of a list, reached through its next links, must cost about what page 1
//! costs in shared buffers.

pub mod params;
mod run;

pub use params::{parse_deep_pages as parse, DeepPages as Params};
pub use run::run;
