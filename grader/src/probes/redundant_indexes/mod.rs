//! `redundant_indexes`: no index duplicates another or is a leading prefix of another.

pub mod params;
mod run;

pub use params::{parse_redundant_indexes as parse, RedundantIndexes as Params};
pub use run::run;
