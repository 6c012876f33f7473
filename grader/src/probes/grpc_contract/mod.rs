//! `grpc_contract`: asks the service what it serves through server reflection (v1, falling back
//! to v1alpha), and judges it against the exercise's own `.proto`, compiled by `protox`: the
//! services reflection must list, and every method, message and field of the contract's service
//! with its name, number, type and streaming (additions are fine).

pub mod params;
mod run;

pub use params::{parse, GrpcContract as Params};
pub use run::run;
