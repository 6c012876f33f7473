//! `grpc_deadline`: calls a method whose work waits on a slow mock upstream, with a deadline
//! shorter than the upstream's delay, and judges both ends: the call ends by the deadline plus a
//! slack, with `DEADLINE_EXCEEDED` (or `OK` before the deadline, when the README allows giving
//! up early), and the service's own upstream request is abandoned (its connection closed) by the
//! deadline plus the slack. The grader's client does not enforce the deadline, so a late answer
//! shows a server that ignored it.

pub mod params;
mod run;

pub use params::{parse, GrpcDeadline as Params};
pub use run::run;
