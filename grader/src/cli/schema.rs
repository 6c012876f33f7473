//! `grader schema FILE`: prints the JSON Schema of `exercise.toml` or `grader.toml` (the ones
//! published in `docs/`), so a learner outside this repository can save it next to their
//! grader.toml and point their editor at it.

/// Which file's schema.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaFile {
    /// A learner's grader.toml (docs/grader-toml.schema.json).
    GraderToml,
    /// An exercise's exercise.toml (docs/exercise.schema.json).
    Exercise,
}

pub fn print(file: SchemaFile) -> i32 {
    let text = match file {
        SchemaFile::GraderToml => crate::manifest::schema(),
        SchemaFile::Exercise => crate::exercise::schema::schema(),
    };
    print!("{text}");
    crate::scoring::exit::OK
}
