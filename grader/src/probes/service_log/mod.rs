//! `service_log`: after the requests, the service's own output (stdout and stderr, as the
//! runtime captured it) must not contain any of the secrets: tokens, passwords, and for a JWS its
//! signature or payload alone.

pub mod params;
mod run;

pub use params::{parse, ServiceLog as Params};
pub use run::run;
pub(crate) use run::{read_tail, MAX_READ, NOT_CAPTURED};
