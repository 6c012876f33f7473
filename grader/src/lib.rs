//! `grader`: grades real HTTP services against backend-engineering exercises.
//!
//! Data flows one way: [`manifest`] -> [`runtime`] -> [`engine`] -> [`scoring`] -> [`report`].
//! See `docs/ARCHITECTURE.md`.

pub mod outcome;
pub mod runtime;
