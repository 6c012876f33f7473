//! `grpc_calls`: unary gRPC calls built from JSON, each with the status code it must get (never a
//! guess: the exercise lists the codes its README allows), what its response message must hold,
//! the `google.rpc.BadRequest` details an `INVALID_ARGUMENT` must carry (AIP-193), and a status
//! message free of internals; answers compared with the grader's own data (`sample`), and SQL
//! whose answers the calls must not change (a refused call changes nothing).

pub mod params;
mod run;

pub use params::{parse, GrpcCalls as Params};
pub use run::run;
