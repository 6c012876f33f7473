//! `contract_diff`: two revisions of the service's document, the one clients were built from and
//! the current one, compared with oasdiff's error-level breaking-change rules
//! (`openapi::diff`): each change that would break a client of the first fails the check, named
//! by its rule.

pub mod params;
mod run;

pub use params::{parse, ContractDiff as Params};
pub use run::run;
