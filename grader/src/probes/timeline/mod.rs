//! `timeline`: drives a mock upstream through phases (healthy, failing N times, hanging, down,
//! slow, back up), sends requests in each, and judges what the service did from the mock's own
//! call log on the grader's clock: how many calls each phase caused, the gaps between one
//! request's attempts, whether those gaps differ between requests (jitter), and the most calls
//! in flight at once. Resilience checks (timeouts, retries, backoff, `Retry-After`, circuit
//! breaker, bulkhead, fallback) are built from it.

pub mod params;
pub mod run;

pub use params::{parse, Timeline as Params};
pub use run::run;
