//! `shutdown`: sends `SIGTERM` to the service while requests wait on a slow mock upstream, and
//! judges what a graceful shutdown must do, from outside: every request in flight gets its
//! answer, a new request after the signal is refused (or answered `503`), and every process of
//! the service is gone within the bound. The service is started again afterwards, whatever
//! happened, so the run goes on.

pub mod params;
pub mod run;

pub use params::{parse, Shutdown as Params};
pub use run::run;
