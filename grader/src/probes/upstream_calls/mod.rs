//! `upstream_calls`: sends the requests in order, with latency or a fault set on a mock upstream
//! for this check, judges each response, then counts the upstream's calls. Its response judging
//! (`run::judge`, `run::Seen`) is shared by the other probes that send requests.

mod latency;
pub mod params;
pub mod run;

pub use params::{parse_upstream_calls as parse, UpstreamCalls as Params};
pub use run::run;
