//! `grpc_stream`: a server-streaming method, read two ways. `order`: the first messages are
//! compared, in order and field by field, with what the grader computes from its data. `pace`:
//! a few messages are read, then nothing for a while (the client's HTTP/2 window fills and the
//! server's writes must wait), then the call is cancelled; the rows the service's statements
//! returned meanwhile are counted in `pg_stat_statements` (statements naming the tables, and
//! every cursor `FETCH`), which shows whether its reads followed the reader and stopped.

pub mod params;
mod run;

pub use params::{parse, GrpcStream as Params};
pub use run::run;
