//! `rate_limit`: N attempts back to back on one warm connection are served, attempt N+1 is
//! refused with 429 and a usable `Retry-After`, another client is unaffected, and the same client
//! is served again once the stated time has passed.

pub mod params;
mod retry_after;
mod run;

pub use params::{parse, RateLimit as Params};
pub use run::run;
