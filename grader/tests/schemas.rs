//! The published JSON Schemas (`docs/exercise.schema.json`, `docs/grader-toml.schema.json`,
//! `docs/class-report.schema.json`) are
//! right, not only up to date: every file the repository ships validates against them with an
//! independent validator (the `jsonschema` crate), and a misspelled key does not.
//! (That the committed files equal the generated ones is tested next to the code that generates
//! them: `exercise::schema` and `manifest`.)

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn validator(file: &str) -> jsonschema::Validator {
    let path = root().join("docs").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft7::new(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid draft 7 schema: {e}", path.display()))
}

/// The TOML document as the JSON an editor's validator sees.
fn json_of(toml_text: &str) -> serde_json::Value {
    let value: toml::Value =
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("not TOML: {}", e.message()));
    serde_json::to_value(value).unwrap()
}

fn errors(v: &jsonschema::Validator, toml_text: &str) -> Vec<String> {
    v.iter_errors(&json_of(toml_text))
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn files(pattern_dirs: &[&str], name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in pattern_dirs {
        let dir = root().join(dir);
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path().join(name);
            if path.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn assert_all_valid(v: &jsonschema::Validator, paths: &[PathBuf]) {
    let mut failures = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).unwrap();
        for e in errors(v, &text) {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn shipped_exercises() -> Vec<PathBuf> {
    let found = files(&["exercises"], "exercise.toml");
    assert!(found.len() >= 8, "exercises not found: {found:?}");
    found
}

#[test]
fn every_shipped_exercise_is_valid() {
    assert_all_valid(&validator("exercise.schema.json"), &shipped_exercises());
}

#[test]
fn every_grader_toml_in_the_repository_is_valid() {
    let mut paths = vec![root().join("tests/reference-service/grader.toml")];
    paths.extend(files(&["tests/independent", "scaffolds"], "grader.toml"));
    // The fixtures are valid manifests too, except the one that exists to be invalid.
    paths.extend(
        files(&["tests/fixtures"], "grader.toml")
            .into_iter()
            .filter(|p| !p.to_string_lossy().contains("bad-manifest")),
    );
    assert!(paths.len() >= 10, "{paths:?}");
    assert_all_valid(&validator("grader-toml.schema.json"), &paths);
}

/// The first shipped exercise, with `edit` applied to its text; the edit must change it.
fn edited(path: &Path, from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    text.replacen(from, to, 1)
}

#[test]
fn misspelled_keys_and_wrong_values_are_rejected() {
    let v = validator("exercise.schema.json");
    let pagination = root().join("exercises/pagination/exercise.toml");
    let api = root().join("exercises/api-design/exercise.toml");
    let cases = [
        // A check's key (RawCheck denies unknown fields).
        (&api, "[[check]]\n", "[[check]]\npoinst = 3\n", "poinst"),
        // A top-level key.
        (
            &api,
            "\ndifficulty = ",
            "\ndificulty = 1\ndifficulty = ",
            "dificulty",
        ),
        // A step's expectation.
        (
            &api,
            "expect.status = ",
            "expect.statsu = 1\nexpect.status = ",
            "statsu",
        ),
        // A probe's params: the schema of `params` depends on `probe`.
        (
            &pagination,
            "[check.params]\npath =",
            "[check.params]\nmax_page = 3\npath =",
            "max_page",
        ),
        // An unknown probe.
        (
            &pagination,
            "probe = \"paginate\"",
            "probe = \"paginat\"",
            "paginat",
        ),
        // A variable's generator.
        (&api, "{ gen = \"sku\" }", "{ gen = \"skew\" }", "skew"),
    ];
    for (path, from, to, word) in cases {
        let text = edited(path, from, to);
        let found = errors(&v, &text);
        assert!(
            !found.is_empty(),
            "{} with {word:?} passed the schema",
            path.display()
        );
    }

    let m = validator("grader-toml.schema.json");
    let found = errors(
        &m,
        "exercises = [\"api-design\"]\nservice.comand = \"python3 app.py\"\n",
    );
    assert!(!found.is_empty(), "service.comand passed the schema");
    assert!(
        errors(&m, "service.command = \"python3 app.py\"\n").len() == 1,
        "exercises is required"
    );
    assert!(errors(
        &m,
        "exercises = [\"api-design\"]\nservice.command = \"python3 app.py\"\n"
    )
    .is_empty());
}

/// `docs/class-report.schema.json` describes what `grader batch` writes: the fixture class's
/// `class.json`, each of its `result.json` files (the schema's `SubmissionResult`), and not a
/// class whose verdict is misspelled.
#[test]
fn the_class_report_and_every_result_validate_against_their_schema() {
    use grader::batch::fixtures;
    let path = root().join("docs/class-report.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let class_validator = jsonschema::draft7::new(&schema).unwrap();
    let class: serde_json::Value =
        serde_json::from_str(&fixtures::class_report().to_json()).unwrap();
    let problems: Vec<String> = class_validator
        .iter_errors(&class)
        .map(|e| e.to_string())
        .collect();
    assert!(problems.is_empty(), "class.json: {problems:?}");
    let mut wrong = class.clone();
    wrong["submissions"][0]["verdict"] = "passed".into();
    assert!(
        !class_validator.is_valid(&wrong),
        "a misspelled verdict validated"
    );

    let mut result_schema = schema.clone();
    result_schema["$ref"] = "#/definitions/SubmissionResult".into();
    for key in ["required", "properties", "type", "title"] {
        result_schema.as_object_mut().unwrap().remove(key);
    }
    let result_validator = jsonschema::draft7::new(&result_schema).unwrap();
    let (_, results) = fixtures::results();
    for result in &results {
        let json = serde_json::to_value(result).unwrap();
        let problems: Vec<String> = result_validator
            .iter_errors(&json)
            .map(|e| e.to_string())
            .collect();
        assert!(
            problems.is_empty(),
            "{}'s result.json: {problems:?}",
            result.student
        );
    }
    let mut no_key = serde_json::to_value(&results[0]).unwrap();
    no_key.as_object_mut().unwrap().remove("key");
    assert!(
        !result_validator.is_valid(&no_key),
        "a result without its key validated"
    );
}
