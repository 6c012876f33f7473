//! `grader`: grades real HTTP services against backend-engineering exercises.
//!
//! Data flows one way: [`manifest`] -> [`runtime`] -> [`engine`] -> [`scoring`] -> [`report`].
//! See `docs/ARCHITECTURE.md`.

pub mod cli;
pub mod dataset;
pub mod diagnostic;
pub mod engine;
pub mod exercise;
pub mod manifest;
pub mod outcome;
pub mod progress;
pub mod prove;
pub mod report;
pub mod runtime;
pub mod scoring;
pub mod upstream;
