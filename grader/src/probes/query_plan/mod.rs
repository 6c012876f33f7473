//! `query_plan`: sends the requests, then judges the statements the service ran for them, read
//! from `pg_stat_statements`: their plans, buffers and number.

pub mod params;
mod run;

pub use params::{parse_query_plan as parse, QueryPlan as Params};
pub use run::run;
