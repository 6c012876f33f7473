//! `grader new-exercise ID` (for instructors): writes `DIR/ID/README.md` and
//! `DIR/ID/exercise.toml` from the template in `scaffolds/exercise/` (built into the binary),
//! with one example check that `grader lint` accepts as written. Never overwrites: an existing
//! folder is refused before anything is written.
//!
//! The template's placeholders: `{id}` (the exercise id), `{prefix}` (the README's requirement
//! id prefix, `[{prefix}-1.1]`) and `{skill}` (the first skill of DIR/skills.toml).

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir};

use crate::scoring::exit;

static TEMPLATE: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../scaffolds/exercise");

#[derive(clap::Args, Debug)]
pub struct NewExerciseArgs {
    /// The exercise's id (kebab-case, e.g. rate-limiting): its folder's name too.
    pub id: String,
    /// The exercises folder to write into (it holds skills.toml).
    #[arg(
        long,
        env = "GRADER_EXERCISES_DIR",
        value_name = "DIR",
        default_value = "exercises"
    )]
    pub exercises_dir: PathBuf,
}

pub fn run(args: &NewExerciseArgs) -> i32 {
    match write(&args.exercises_dir, &args.id) {
        Ok(dir) => {
            let dir = crate::diagnostic::display_path(&dir);
            println!("wrote {dir}/README.md and {dir}/exercise.toml");
            println!(
                "next: write the task statement and the checks (exercises/AUTHORING.md), then run\n  grader lint --exercises-dir {}",
                crate::diagnostic::display_path(&args.exercises_dir)
            );
            exit::OK
        }
        Err(message) => {
            eprintln!("error: {message}");
            exit::USAGE
        }
    }
}

/// Writes the skeleton and returns its folder; an error says what to do instead.
pub fn write(exercises_dir: &Path, id: &str) -> Result<PathBuf, String> {
    if !crate::exercise::is_kebab(id) {
        return Err(format!(
            "\"{id}\" is not a valid exercise id: use lower-case letters, digits and dashes, e.g. \"rate-limiting\""
        ));
    }
    let skills_file = exercises_dir.join("skills.toml");
    let skills = std::fs::read_to_string(&skills_file).map_err(|e| {
        format!(
            "cannot read {}: {e} (is {} the exercises folder? pass --exercises-dir)",
            crate::diagnostic::display_path(&skills_file),
            crate::diagnostic::display_path(exercises_dir)
        )
    })?;
    let skill = first_skill(&skills).ok_or_else(|| {
        format!(
            "{} lists no [[skill]]",
            crate::diagnostic::display_path(&skills_file)
        )
    })?;
    let dir = exercises_dir.join(id);
    // create_dir fails on an existing folder (or file): nothing is ever overwritten.
    if let Err(e) = std::fs::create_dir(&dir) {
        return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} already exists; pick another id (new-exercise never overwrites)",
                crate::diagnostic::display_path(&dir)
            )
        } else {
            format!(
                "cannot create {}: {e}",
                crate::diagnostic::display_path(&dir)
            )
        });
    }
    let prefix = prefix(id);
    for file in TEMPLATE.files() {
        let text = String::from_utf8_lossy(file.contents())
            .replace("{id}", id)
            .replace("{prefix}", &prefix)
            .replace("{skill}", &skill);
        let path = dir.join(file.path());
        std::fs::write(&path, text).map_err(|e| {
            format!(
                "cannot write {}: {e}",
                crate::diagnostic::display_path(&path)
            )
        })?;
    }
    Ok(dir)
}

/// The first `[[skill]]`'s id of skills.toml.
fn first_skill(skills_toml: &str) -> Option<String> {
    let value: toml::Value = toml::from_str(skills_toml).ok()?;
    let first = value.get("skill")?.as_array()?.first()?;
    Some(first.get("id")?.as_str()?.to_string())
}

/// The requirement id prefix: the initials of a multi-word id (`rate-limiting` → `rl`), the
/// first three letters of a one-word id (`caching` → `cac`); letters only, as the README's ids
/// require.
fn prefix(id: &str) -> String {
    let words: Vec<&str> = id.split('-').filter(|w| !w.is_empty()).collect();
    let letters: String = if words.len() > 1 {
        words.iter().filter_map(|w| w.chars().next()).collect()
    } else {
        id.chars().take(3).collect()
    };
    let letters: String = letters.chars().filter(|c| c.is_ascii_lowercase()).collect();
    if letters.is_empty() {
        "ex".into()
    } else {
        letters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_letters() {
        assert_eq!(prefix("rate-limiting"), "rl");
        assert_eq!(prefix("caching"), "cac");
        assert_eq!(prefix("http2-push"), "hp");
        assert_eq!(prefix("42"), "ex");
    }

    #[test]
    fn the_template_has_both_files() {
        let mut names: Vec<String> = TEMPLATE
            .files()
            .map(|f| f.path().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["README.md", "exercise.toml"]);
    }
}
