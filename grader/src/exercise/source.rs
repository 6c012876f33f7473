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

    /// SHA-256 over `skills.toml` and every file of the named exercises (paths sorted): a batch
    /// re-grades when an exercise's checks, data or README change.
    pub fn fingerprint(&self, exercise_ids: &[String]) -> std::io::Result<String> {
        use sha2::{Digest, Sha256};
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        match self {
            ExerciseSource::Dir(root) => {
                fn walk(
                    root: &Path,
                    rel: &Path,
                    out: &mut Vec<(String, Vec<u8>)>,
                ) -> std::io::Result<()> {
                    for entry in std::fs::read_dir(root.join(rel))? {
                        let entry = entry?;
                        let rel = rel.join(entry.file_name());
                        if entry.file_type()?.is_dir() {
                            walk(root, &rel, out)?;
                        } else {
                            out.push((
                                rel.to_string_lossy().into_owned(),
                                std::fs::read(root.join(&rel))?,
                            ));
                        }
                    }
                    Ok(())
                }
                files.push((
                    "skills.toml".into(),
                    std::fs::read(root.join("skills.toml"))?,
                ));
                for id in exercise_ids {
                    walk(root, Path::new(id), &mut files)?;
                }
            }
            ExerciseSource::Embedded => {
                fn walk(dir: &Dir<'_>, out: &mut Vec<(String, Vec<u8>)>) {
                    for file in dir.files() {
                        out.push((
                            file.path().to_string_lossy().into_owned(),
                            file.contents().to_vec(),
                        ));
                    }
                    for sub in dir.dirs() {
                        walk(sub, out);
                    }
                }
                if let Some(skills) = EMBEDDED.get_file("skills.toml") {
                    files.push(("skills.toml".into(), skills.contents().to_vec()));
                }
                for id in exercise_ids {
                    if let Some(dir) = EMBEDDED.get_dir(id) {
                        walk(dir, &mut files);
                    }
                }
            }
        }
        files.sort();
        let mut hasher = Sha256::new();
        for (name, contents) in files {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update((contents.len() as u64).to_le_bytes());
            hasher.update(&contents);
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
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
