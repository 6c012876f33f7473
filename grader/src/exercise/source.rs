//! Where exercise files come from: a folder on disk (authors, `--exercises-dir`) or the copy
//! embedded in the binary at build time (learners, who only have the `grader` executable).

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir};

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../exercises");

#[derive(Debug, Clone)]
pub enum ExerciseSource {
    Dir(PathBuf),
    Embedded,
}

impl ExerciseSource {
    /// Human-readable prefix for file names in messages.
    pub fn describe(&self) -> String {
        match self {
            ExerciseSource::Dir(p) => crate::diagnostic::display_path(p),
            ExerciseSource::Embedded => "exercises (built in)".into(),
        }
    }

    /// Reads a file by its path relative to the exercises root. `Ok(None)` when absent.
    pub fn read(&self, rel: &str) -> std::io::Result<Option<String>> {
        match self {
            ExerciseSource::Dir(root) => match std::fs::read_to_string(root.join(rel)) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
            ExerciseSource::Embedded => Ok(EMBEDDED
                .get_file(rel)
                .map(|f| String::from_utf8_lossy(f.contents()).into_owned())),
        }
    }

    /// Names of exercise folders (those holding an `exercise.toml`), sorted.
    pub fn exercise_dirs(&self) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        match self {
            ExerciseSource::Dir(root) => {
                for entry in std::fs::read_dir(root)? {
                    let entry = entry?;
                    if entry.path().join("exercise.toml").is_file() {
                        out.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
            }
            ExerciseSource::Embedded => {
                for dir in EMBEDDED.dirs() {
                    if dir.get_file(dir.path().join("exercise.toml")).is_some() {
                        out.push(dir.path().to_string_lossy().into_owned());
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Display name of a file for diagnostics.
    pub fn display_name(&self, rel: &str) -> String {
        match self {
            ExerciseSource::Dir(root) => crate::diagnostic::display_path(&root.join(rel)),
            ExerciseSource::Embedded => format!("exercises/{rel}"),
        }
    }

    /// The exercises folder of this source tree, when the binary runs from a checkout.
    pub fn checkout_dir() -> Option<PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../exercises");
        p.is_dir().then_some(p)
    }
}
