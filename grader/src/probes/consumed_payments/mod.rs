//! `consumed_payments`: the grader is the producer. It places a resource through the API, then
//! publishes settlement messages for it to the service's exchange (with `mandatory`, so a message
//! no queue takes is reported, and a publisher confirm) and checks the effect through the API and
//! in the service's table. Scenarios: `duplicates` (each message published twice, one again after
//! it was applied: the consumer must apply each event id once), `crash` (the service's tables are
//! locked so that its consumer waits mid-message, the service is killed with SIGKILL, the locks are
//! released and the service restarted: a message acknowledged before its commit is lost) and
//! `poison` (messages that can never be processed must reach the dead-letter queue, once each,
//! without holding up the valid message behind them).

pub mod params;
mod run;

pub use params::{parse, Params};
pub use run::run;
