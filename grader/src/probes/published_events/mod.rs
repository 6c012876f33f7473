//! `published_events`: places (and cancels) resources through the API and reads what the service
//! publishes from a queue of the grader's own, bound to the service's exchange. The grader knows
//! every fact it caused, so it counts: each placed resource gives exactly one "created" event, each
//! cancellation one "cancelled" event, in that order, with the fields the request carried and ids
//! that tell events apart. With `outage = true` the service is cut off the broker while it
//! writes, killed with SIGKILL, and started again once the broker is back: only events it stored
//! with its data (a transactional outbox) survive that.

pub mod params;
mod run;

pub use params::{parse, Params};
pub use run::run;
