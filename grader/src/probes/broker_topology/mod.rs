//! `broker_topology`: the exchanges and queues an exercise's README names exist on the broker once
//! the service is healthy (passive declares: the grader never creates them itself, so a service
//! that forgot one is told which).

pub mod params;
mod run;

pub use params::{parse, Params};
pub use run::run;
