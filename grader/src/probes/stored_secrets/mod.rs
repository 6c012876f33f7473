//! `stored_secrets` (white box): after the requests, reads every row of the service's tables
//! through the grader's own PostgreSQL connection and fails when a secret is stored in plain text
//! or as an unsalted fast digest, or when an account's password is not a salted password hash
//! (argon2id/argon2i, bcrypt or scrypt) with at least OWASP's minimum cost.

pub mod hashes;
pub mod params;
mod run;

pub use params::{parse, StoredSecrets as Params};
pub use run::run;
