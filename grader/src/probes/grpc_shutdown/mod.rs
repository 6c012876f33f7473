//! `grpc_shutdown`: sends `SIGTERM` while a unary call waits on a slow mock upstream, and judges
//! what a load balancer needs from a gRPC server that is going away: the health service says
//! `NOT_SERVING` soon (for the whole server and for the service), the server keeps answering for
//! a while (health checks and new calls), the call in flight gets its answer, and the process
//! exits with status 0 within the bound. The service is started again afterwards, whatever
//! happened, so the run goes on.

pub mod params;
mod run;

pub use params::{parse, GrpcShutdown as Params};
pub use run::run;
