//! `openapi_document`: the service publishes an OpenAPI 3.1 document that is valid against the
//! published schema, gives every operation a unique `operationId`, and documents the operations
//! the exercise names.

pub mod params;
mod run;

pub use params::{parse, OpenapiDocument as Params};
pub use run::run;
