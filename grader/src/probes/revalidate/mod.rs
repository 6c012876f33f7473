//! `revalidate`: reads a resource, judges its validators, then revalidates it with conditional
//! requests and judges each 304 against the 200 it stands for.

pub mod params;
mod run;

pub use params::{parse, Revalidate as Params};
pub use run::{parse_http_date, run};
