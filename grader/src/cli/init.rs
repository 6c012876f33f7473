//! `grader init`: writes a starter service from the scaffolds built into the binary, so it works
//! from `cargo install` without the repository.
//!
//! Each `scaffolds/<lang>/` folder is copied as it is, except two files: `grader.toml`, whose
//! `exercises = [...]` line is replaced with the exercises asked for, and `INIT.txt`, which is not
//! copied but printed as the next steps (`{dir}` and `{exercise}` filled in). Nothing is
//! overwritten: every target is checked before the first file is written.

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir, DirEntry};

use crate::exercise::Catalog;
use crate::manifest::MANIFEST_FILE;

static SCAFFOLDS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../scaffolds");

/// The next-steps text of a scaffold, printed instead of written.
const NEXT_STEPS_FILE: &str = "INIT.txt";
/// Printed before the next steps when an exercise asked for is served over gRPC, which the
/// starters (HTTP servers) are not: what to replace, with which libraries (`{grpc}` filled in).
const GRPC_NOTE_FILE: &str = "INIT-grpc.txt";

/// What a build or a run leaves in a scaffold folder of a checkout (`grader check scaffolds/go`
/// run in place): never part of a starter, even if it was embedded.
const LEFT_BY_BUILDS: &[&str] = &[
    "target",
    ".build",
    ".docker",
    ".grader",
    ".venv",
    "node_modules",
    "__pycache__",
];

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Node,
    Go,
    Java,
}

impl Lang {
    pub const ALL: [Lang; 5] = [Lang::Rust, Lang::Python, Lang::Node, Lang::Go, Lang::Java];

    /// The scaffold's folder under `scaffolds/`.
    pub fn folder(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Node => "node",
            Lang::Go => "go",
            Lang::Java => "java",
        }
    }
}

/// What `grader init` wrote, for the message that follows.
#[derive(Debug)]
pub struct Written {
    /// Paths relative to the target folder, sorted.
    pub files: Vec<PathBuf>,
    pub exercises: Vec<String>,
    /// The scaffold's next steps with the folder and exercise filled in.
    pub next_steps: String,
}

/// Why nothing (or not everything) was written; every case is the caller's to fix (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0}")]
    Usage(String),
    /// Files that exist already; nothing was written.
    #[error("{}", refuse_message(.0))]
    Exists(Vec<PathBuf>),
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

fn refuse_message(paths: &[PathBuf]) -> String {
    let what = match paths {
        [one] => format!("{} already exists", one.display()),
        many => {
            let list: Vec<String> = many.iter().map(|p| format!("  {}", p.display())).collect();
            format!("{} files already exist:\n{}\n", many.len(), list.join("\n"))
        }
    };
    format!(
        "{what}; grader init never overwrites a file, and nothing was written. Move them away or \
         choose another folder (`grader init DIR --lang ...` creates DIR)"
    )
}

/// The exercise a learner starts with: the first of the curriculum, i.e. one without
/// prerequisites in the earliest skill area (`exercises/skills.toml` order).
pub fn first_exercise(catalog: &Catalog) -> Option<&str> {
    let skill_rank = |id: &str| {
        catalog
            .skills
            .iter()
            .position(|s| s.id == id)
            .unwrap_or(usize::MAX)
    };
    catalog
        .exercises
        .iter()
        .filter(|e| e.prerequisites.is_empty())
        .min_by_key(|e| {
            let rank = e.skills.first().map_or(usize::MAX, |s| skill_rank(s));
            (rank, e.difficulty, e.id.clone())
        })
        .map(|e| e.id.as_str())
}

/// Checks the exercise ids against the catalogue (the first one of the curriculum when none is
/// given), with a suggestion for a misspelt one.
pub fn choose_exercises(requested: &[String], catalog: &Catalog) -> Result<Vec<String>, InitError> {
    if requested.is_empty() {
        return first_exercise(catalog)
            .map(|id| vec![id.to_string()])
            .ok_or_else(|| InitError::Usage("the exercise catalogue is empty".into()));
    }
    let names: Vec<&str> = catalog.exercises.iter().map(|e| e.id.as_str()).collect();
    let mut chosen: Vec<String> = Vec::new();
    for id in requested {
        if catalog.exercise(id).is_none() {
            let hint = crate::diagnostic::did_you_mean(id, names.iter().copied())
                .map(|s| format!("did you mean \"{s}\"?"))
                .unwrap_or_else(|| format!("known exercises: {}", names.join(", ")));
            return Err(InitError::Usage(format!(
                "unknown exercise \"{id}\"; {hint}"
            )));
        }
        if !chosen.contains(id) {
            chosen.push(id.clone());
        }
    }
    Ok(chosen)
}

/// A file of a starter: its path relative to the starter's folder, and its bytes.
type File = (PathBuf, Vec<u8>);

/// What a scaffold says after writing its files (unfilled).
struct Notes {
    next_steps: String,
    grpc: String,
}

/// The files of a scaffold (path relative to the scaffold, contents), `grader.toml` made for
/// `exercises`, plus its notes.
fn scaffold_files(lang: Lang, exercises: &[String]) -> Result<(Vec<File>, Notes), InitError> {
    let root = SCAFFOLDS
        .get_dir(lang.folder())
        .ok_or_else(|| InitError::Usage(format!("no scaffold for {}", lang.folder())))?;
    let mut files = Vec::new();
    collect(root, Path::new(root.path()), &mut files);
    files.sort();
    let mut notes = Notes {
        next_steps: String::new(),
        grpc: String::new(),
    };
    let mut manifest_found = false;
    let mut out = Vec::new();
    for (rel, contents) in files {
        if rel == Path::new(NEXT_STEPS_FILE) {
            notes.next_steps = String::from_utf8_lossy(&contents).into_owned();
        } else if rel == Path::new(GRPC_NOTE_FILE) {
            notes.grpc = String::from_utf8_lossy(&contents).into_owned();
        } else if rel == Path::new(MANIFEST_FILE) {
            manifest_found = true;
            let text = String::from_utf8_lossy(&contents);
            out.push((rel, with_exercises(&text, exercises)?.into_bytes()));
        } else {
            out.push((rel, contents));
        }
    }
    if !manifest_found {
        return Err(InitError::Usage(format!(
            "the {} scaffold has no {MANIFEST_FILE}",
            lang.folder()
        )));
    }
    Ok((out, notes))
}

fn collect(dir: &Dir<'static>, root: &Path, out: &mut Vec<File>) {
    for entry in dir.entries() {
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if LEFT_BY_BUILDS.contains(&name) {
            continue;
        }
        match entry {
            DirEntry::Dir(d) => collect(d, root, out),
            DirEntry::File(f) => out.push((rel.to_path_buf(), f.contents().to_vec())),
        }
    }
}

/// The scaffold's `grader.toml` with its one `exercises = [...]` line naming `exercises`.
fn with_exercises(template: &str, exercises: &[String]) -> Result<String, InitError> {
    let list: Vec<String> = exercises
        .iter()
        .map(|e| toml::Value::String(e.clone()).to_string())
        .collect();
    let line = format!("exercises = [{}]", list.join(", "));
    let mut replaced = 0;
    let text: Vec<&str> = template
        .lines()
        .map(|l| {
            if l.starts_with("exercises = [") {
                replaced += 1;
                line.as_str()
            } else {
                l
            }
        })
        .collect();
    if replaced != 1 {
        return Err(InitError::Usage(format!(
            "the scaffold's {MANIFEST_FILE} needs exactly one `exercises = [...]` line, found {replaced}"
        )));
    }
    Ok(text.join("\n") + "\n")
}

/// Writes the `lang` starter into `dir` (created when missing) for `exercises` (already checked
/// against the catalogue), of which `grpc` are served over gRPC. Refuses, writing nothing, when
/// any file it would write exists.
pub fn write(
    dir: &Path,
    lang: Lang,
    exercises: &[String],
    grpc: &[String],
) -> Result<Written, InitError> {
    let (files, notes) = scaffold_files(lang, exercises)?;
    let next_steps = if grpc.is_empty() {
        notes.next_steps
    } else {
        let grpc_note = notes.grpc.replace("{grpc}", &grpc.join(", "));
        format!("{}\n\n{}", grpc_note.trim_end(), notes.next_steps)
    };
    let mut conflicts = Vec::new();
    for (rel, _) in &files {
        let target = dir.join(rel);
        // A file where a folder must go blocks the write as much as the file itself.
        let blocked = target
            .ancestors()
            .take_while(|a| *a != dir && a.starts_with(dir))
            .find(|a| {
                let is_target = *a == target.as_path();
                match std::fs::symlink_metadata(a) {
                    Ok(m) => is_target || !m.is_dir(),
                    Err(_) => false,
                }
            });
        if let Some(path) = blocked {
            if !conflicts.iter().any(|c: &PathBuf| c == path) {
                conflicts.push(path.to_path_buf());
            }
        }
    }
    if let Ok(m) = std::fs::metadata(dir) {
        if !m.is_dir() {
            conflicts.insert(0, dir.to_path_buf());
        }
    }
    if !conflicts.is_empty() {
        return Err(InitError::Exists(conflicts));
    }
    for (rel, contents) in &files {
        let target = dir.join(rel);
        let fail = |error| InitError::Write {
            path: target.clone(),
            error,
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        // create_new: a file that appeared since the check is still never overwritten.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(fail)?;
        f.write_all(contents).map_err(fail)?;
    }
    let dir_arg = dir.display().to_string();
    let quoted = shlex::try_quote(&dir_arg)
        .map(|q| q.into_owned())
        .unwrap_or(dir_arg);
    let next_steps = next_steps
        .lines()
        // `cd .` says nothing.
        .filter(|l| !(l.contains("{dir}") && dir == Path::new(".")))
        .map(|l| {
            l.replace("{dir}", &quoted)
                .replace("{exercise}", &exercises[0])
        })
        .collect::<Vec<_>>()
        .join("\n");
    Ok(Written {
        files: files.into_iter().map(|(rel, _)| rel).collect(),
        exercises: exercises.to_vec(),
        next_steps,
    })
}

/// `grader init`: checks the request, writes the starter and prints what to do next. Returns the
/// exit code.
pub fn run(dir: &Path, lang: Lang, requested: &[String], catalog: &Catalog) -> i32 {
    use crate::scoring::exit;
    let result = choose_exercises(requested, catalog).and_then(|chosen| {
        let grpc: Vec<String> = chosen
            .iter()
            .filter(|id| {
                catalog
                    .exercise(id)
                    .is_some_and(|e| e.protocol == crate::exercise::Protocol::Grpc)
            })
            .cloned()
            .collect();
        write(dir, lang, &chosen, &grpc)
    });
    match result {
        Ok(written) => {
            println!(
                "Wrote a {} starter for {} in {}:",
                lang.folder(),
                written.exercises.join(", "),
                dir.display()
            );
            for f in &written.files {
                println!("  {}", f.display());
            }
            println!();
            println!("{}", written.next_steps.trim_end());
            exit::OK
        }
        Err(e) => {
            eprintln!("grader: {e}");
            exit::USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exercise::{load_catalog, ExerciseSource};
    use crate::manifest::Manifest;

    fn catalog() -> Catalog {
        load_catalog(&ExerciseSource::Embedded).expect("embedded exercises load")
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_language_writes_a_manifest_naming_the_exercises() {
        for lang in Lang::ALL {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("svc");
            let exercises = ids(&["api-design", "pagination"]);
            let written = write(&dir, lang, &exercises, &[]).unwrap();
            let manifest =
                Manifest::load(&dir).unwrap_or_else(|d| panic!("{lang:?}: {}", d.render(false)));
            assert_eq!(manifest.exercise_ids(), exercises, "{lang:?}");
            assert!(manifest.service.command.is_some(), "{lang:?}");
            assert_eq!(manifest.service.health_path, "/healthz", "{lang:?}");
            assert_eq!(manifest.postgres_env.as_deref(), Some("DATABASE_URL"));
            // Every file listed is on disk with the scaffold's bytes; INIT.txt is printed instead.
            for rel in &written.files {
                assert!(dir.join(rel).is_file(), "{lang:?}: {}", rel.display());
            }
            for must in ["README.md", "Dockerfile", MANIFEST_FILE, ".gitignore"] {
                assert!(
                    written.files.iter().any(|f| f == Path::new(must)),
                    "{lang:?}: {must}"
                );
            }
            assert!(!dir.join(NEXT_STEPS_FILE).exists());
            assert!(written.next_steps.contains("grader check"), "{lang:?}");
            assert!(written.next_steps.contains("cd "), "{lang:?}");
            assert!(
                !written.next_steps.contains('{'),
                "{lang:?}: {}",
                written.next_steps
            );
            let text = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
            assert!(text.contains("FROM debian:bookworm-slim"), "{lang:?}");
        }
    }

    #[test]
    fn the_project_manifest_declares_the_driver() {
        let cases = [
            (Lang::Rust, "Cargo.toml", "tokio-postgres"),
            (Lang::Python, "requirements.txt", "psycopg"),
            (Lang::Node, "package.json", "\"pg\""),
            (Lang::Go, "go.mod", "github.com/jackc/pgx"),
            (Lang::Java, "pom.xml", "org.postgresql"),
        ];
        for (lang, file, needle) in cases {
            let tmp = tempfile::tempdir().unwrap();
            write(tmp.path(), lang, &ids(&["api-design"]), &[]).unwrap();
            let text = std::fs::read_to_string(tmp.path().join(file)).unwrap();
            assert!(text.contains(needle), "{lang:?}: {file} lacks {needle}");
        }
    }

    #[test]
    fn refuses_to_overwrite_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("app.py"), "mine").unwrap();
        let err = write(tmp.path(), Lang::Python, &ids(&["api-design"]), &[]).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, InitError::Exists(ref p) if p.len() == 1),
            "{message}"
        );
        assert!(message.contains("app.py already exists"), "{message}");
        assert!(message.contains("nothing was written"), "{message}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("app.py")).unwrap(),
            "mine"
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the learner's own file: {left:?}");
    }

    #[test]
    fn a_file_where_a_folder_goes_is_a_conflict_too() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("src"), "not a folder").unwrap();
        let err = write(tmp.path(), Lang::Rust, &ids(&["api-design"]), &[]).unwrap_err();
        assert!(err.to_string().contains("src already exists"), "{err}");
        assert!(!tmp.path().join("Cargo.toml").exists());
    }

    #[test]
    fn a_second_init_refuses_naming_every_file() {
        let tmp = tempfile::tempdir().unwrap();
        let first = write(tmp.path(), Lang::Go, &ids(&["api-design"]), &[]).unwrap();
        let err = write(tmp.path(), Lang::Go, &ids(&["pagination"]), &[]).unwrap_err();
        let InitError::Exists(paths) = &err else {
            panic!("{err}")
        };
        assert_eq!(paths.len(), first.files.len());
        // The first grader.toml is untouched.
        let m = Manifest::load(tmp.path()).unwrap();
        assert_eq!(m.exercise_ids(), ids(&["api-design"]));
    }

    #[test]
    fn another_language_in_a_non_empty_folder_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        write(tmp.path(), Lang::Java, &ids(&["api-design"]), &[]).unwrap();
        assert!(tmp.path().join("src/main/java/service/Main.java").is_file());
    }

    #[test]
    fn unknown_exercise_suggests_the_nearest() {
        let err = choose_exercises(&ids(&["api-desing"]), &catalog()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("unknown exercise \"api-desing\""),
            "{message}"
        );
        assert!(
            message.contains("did you mean \"api-design\"?"),
            "{message}"
        );
        let err = choose_exercises(&ids(&["zzz"]), &catalog()).unwrap_err();
        assert!(err.to_string().contains("known exercises: "), "{err}");
    }

    #[test]
    fn default_exercise_is_the_first_of_the_curriculum() {
        assert_eq!(
            choose_exercises(&[], &catalog()).unwrap(),
            ids(&["api-design"])
        );
        // Repeats collapse, order is kept.
        assert_eq!(
            choose_exercises(
                &ids(&["pagination", "api-design", "pagination"]),
                &catalog()
            )
            .unwrap(),
            ids(&["pagination", "api-design"])
        );
    }

    #[test]
    fn a_grpc_exercise_gets_each_starters_grpc_note_first() {
        for lang in Lang::ALL {
            let tmp = tempfile::tempdir().unwrap();
            let written = write(
                tmp.path(),
                lang,
                &ids(&["api-design", "grpc"]),
                &ids(&["grpc"]),
            )
            .unwrap();
            assert!(
                written
                    .next_steps
                    .starts_with("grpc is served over gRPC, and this starter answers HTTP only."),
                "{lang:?}: {}",
                written.next_steps
            );
            assert!(written.next_steps.contains("Next:"), "{lang:?}");
            assert!(
                !written.files.iter().any(|f| f.ends_with(GRPC_NOTE_FILE)),
                "{lang:?}: the note is printed, not written"
            );
            let http = tempfile::tempdir().unwrap();
            let plain = write(http.path(), lang, &ids(&["api-design"]), &[]).unwrap();
            assert!(!plain.next_steps.contains("gRPC"), "{lang:?}");
        }
    }

    #[test]
    fn unknown_language_is_a_usage_error() {
        use clap::Parser;
        let err = crate::cli::Cli::try_parse_from(["grader", "init", "x", "--lang", "cobol"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        let text = err.to_string();
        assert!(text.contains("rust") && text.contains("java"), "{text}");
    }

    #[test]
    fn next_steps_quote_the_folder_and_name_the_exercise() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("my service");
        let written = write(&dir, Lang::Node, &ids(&["caching"]), &[]).unwrap();
        assert!(
            written.next_steps.contains("cd '"),
            "{}",
            written.next_steps
        );
        assert!(written.next_steps.contains("exercises/caching/README.md"));
    }

    /// A build run inside a checkout's scaffold folder (`cargo build` in scaffolds/rust) would
    /// embed its output in grader; this keeps that from going unnoticed.
    #[test]
    fn the_embedded_scaffolds_are_small() {
        fn size(dir: &Dir<'static>) -> usize {
            dir.entries()
                .iter()
                .map(|e| match e {
                    DirEntry::Dir(d) => size(d),
                    DirEntry::File(f) => f.contents().len(),
                })
                .sum()
        }
        let total = size(&SCAFFOLDS);
        assert!(
            total < 512 * 1024,
            "scaffolds/ embeds {total} bytes: build output in it?"
        );
    }
}
