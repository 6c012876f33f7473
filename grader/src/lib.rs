//! `grader`: grades real HTTP services against backend-engineering exercises.
//!
//! Data flows one way: [`manifest`] -> [`runtime`] -> [`engine`] (steps and [`probes`]) ->
//! [`scoring`] -> [`report`], driven by one grading run ([`run`]).
//! See `docs/ARCHITECTURE.md`.

pub mod artifacts;
pub mod batch;
pub mod cli;
pub mod curriculum;
pub mod dataset;
pub mod diagnostic;
pub mod engine;
pub mod exercise;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod manifest;
pub mod outcome;
pub mod pg;
pub mod probes;
pub mod progress;
pub mod prove;
pub mod report;
pub mod run;
pub mod runtime;
pub mod scoring;
pub mod spec;
pub mod upstream;
