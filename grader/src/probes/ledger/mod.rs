//! `ledger`: opens accounts, fires a burst of transfers among them at once, reads statements
//! while the burst runs, then proves that money was conserved: every balance, through the API and
//! in the service's own table, equals its opening balance plus the transfers the service
//! accepted, none is negative, and every statement read added up.

pub mod params;
mod run;

pub use params::{parse_ledger as parse, Ledger as Params};
pub use run::run;
