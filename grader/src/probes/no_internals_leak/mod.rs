//! `no_internals_leak`: sends awkward input and fails on any response that leaks a stack trace, a
//! database error or a source path, or when the service stops answering its health path.

pub mod params;
mod run;

pub use params::{parse, NoInternalsLeak as Params};
pub use run::{reveals, run};
