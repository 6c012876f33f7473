//! What the fuzz targets in `fuzz/` (cargo fuzz, libFuzzer) feed arbitrary bytes to: every place
//! the grader reads text that a person wrote (`grader.toml`, an exercise's files) or that a
//! service sent (an HTTP response). Each function panics only when a property breaks, so a crash
//! the fuzzer finds is a bug: a panic inside the grader, or a property below.
//!
//! The same functions run in `cargo test` over `fuzz/regressions/<target>/` (every input a fuzzer
//! ever crashed on, kept once fixed) and over the seed corpus the targets start from.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::diagnostic::{Diagnostic, Diagnostics, SourceFile};
use crate::engine::http::Response;
use crate::exercise::{self, Catalog, CheckBody, ExerciseSource};
use crate::manifest::Manifest;
use crate::spec::template::Scope;
use crate::spec::{Expect, StepAction};

/// `grader.toml` as a learner may write it: parsing never panics, an error points inside the
/// file, and the exercises it names are checked against the built-in catalogue.
pub fn grader_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Manifest::parse(SourceFile::new("grader.toml", text)) {
        Ok(manifest) => {
            let known = builtin_catalog().exercises.iter().map(|e| e.id.as_str());
            if let Err(diagnostics) = manifest.check_exercises(known) {
                assert_located(&diagnostics);
            }
            let _ = manifest.exercise_ids();
        }
        Err(diagnostics) => assert_located(&diagnostics),
    }
}

/// An exercise as an instructor may write it, in a temp copy of `exercises/` per exercise that
/// holds `skills.toml`, that exercise and its prerequisites (so one input loads few); removed when
/// dropped.
pub struct ExerciseFuzzer {
    _copies: tempfile::TempDir,
    roots: Vec<(String, PathBuf)>,
}

impl ExerciseFuzzer {
    pub fn new() -> std::io::Result<Self> {
        let copies = tempfile::Builder::new()
            .prefix("grader-fuzz-exercises-")
            .tempdir()?;
        let source = exercises_dir();
        let mut names: Vec<String> = std::fs::read_dir(&source)?
            .flatten()
            .filter(|e| e.path().join("exercise.toml").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut roots = Vec::new();
        for name in names {
            let root = copies.path().join(&name);
            std::fs::create_dir_all(&root)?;
            std::fs::copy(source.join("skills.toml"), root.join("skills.toml"))?;
            for needed in with_prerequisites(&name) {
                copy_tree(&source.join(&needed), &root.join(&needed))?;
            }
            roots.push((name, root));
        }
        Ok(ExerciseFuzzer {
            _copies: copies,
            roots,
        })
    }

    /// Each exercise's own `exercise.toml` behind the byte that picks it: where fuzzing starts
    /// (scripts/fuzz writes them into the corpus), and inputs that must load without a problem.
    pub fn seeds(&self) -> std::io::Result<Vec<(String, Vec<u8>)>> {
        let source = exercises_dir();
        let mut seeds = Vec::new();
        for (pick, (name, _)) in self.roots.iter().enumerate() {
            let mut seed = vec![pick as u8];
            seed.extend(std::fs::read(source.join(name).join("exercise.toml"))?);
            seeds.push((name.clone(), seed));
        }
        Ok(seeds)
    }

    /// The first byte picks the exercise, the rest replaces its `exercise.toml` (its README and
    /// data stay). Loading and `grader lint`'s checks never panic, every error points inside a
    /// file, and every hint stage of a loaded exercise renders.
    pub fn run(&self, data: &[u8]) {
        let Some((&pick, toml)) = data.split_first() else {
            return;
        };
        let (name, root) = &self.roots[pick as usize % self.roots.len()];
        std::fs::write(root.join(name).join("exercise.toml"), toml)
            .expect("the fuzz copy of exercises/ is writable");
        match exercise::load_catalog(&ExerciseSource::Dir(root.clone())) {
            Ok(catalog) => {
                for exercise in &catalog.exercises {
                    let mut problems = exercise::coverage::problems(exercise);
                    problems.0.extend(exercise::hints::problems(exercise).0);
                    assert_located(&problems);
                    let _ = exercise::coverage::matrix(exercise);
                    for check in &exercise.checks {
                        for stage in 0..=check.hints.len() {
                            let _ = exercise::hints::render(exercise, check, stage);
                        }
                    }
                }
            }
            Err(diagnostics) => assert_located(&diagnostics),
        }
    }
}

/// An HTTP response as a service may send it (`HTTP/1.1 200 OK`, header lines, a blank line, the
/// body; inputs hyper would refuse are skipped). Every step's expectations in the built-in
/// catalogue judge it without panicking; the Link, date, bearer and cursor readers take its
/// headers and body; a Location the grader would follow leads back to the service; and a report
/// showing it writes no workflow command, control or bidi character in any format.
pub fn service_response(data: &[u8]) {
    let Some(response) = parse_response(data) else {
        return;
    };
    for (expect, scope) in step_expectations() {
        let _ = crate::engine::assert::check_expect(expect, &response, scope);
    }

    let base = url::Url::parse("http://127.0.0.1:4000/").expect("a valid URL");
    for (name, value) in &response.headers {
        let text = String::from_utf8_lossy(value.as_bytes());
        match name.as_str() {
            "link" => {
                if let Some(next) = crate::probes::paginate::next_link(&text) {
                    assert_leads_back(&base, &next);
                }
            }
            "location" | "content-location" => assert_leads_back(&base, &text),
            "date" | "last-modified" | "expires" => {
                let _ = crate::probes::revalidate::parse_http_date(&text);
            }
            _ => {}
        }
        let _ = crate::engine::http::decode_bearer(&text);
    }
    let body = response.text();
    if body.len() <= 4096 {
        let _ = crate::probes::paginate::cursor::tampered(&body);
    }

    let recorded = crate::engine::http::record_response(&response);
    assert!(recorded.body.chars().count() <= crate::engine::http::MAX_SHOWN_BODY_CHARS);
    let mut report = crate::report::fixtures::mixed();
    let failed = report
        .checks
        .iter_mut()
        .find_map(|c| c.detail.as_mut())
        .expect("the mixed fixture has a failure with detail");
    failed.actual = body;
    if let Some(exchange) = failed.exchanges.first_mut() {
        exchange.response = Some(recorded);
    }
    let style = crate::report::human::HumanStyle {
        color: false,
        verbose: true,
    };
    for format in <crate::report::Format as clap::ValueEnum>::value_variants() {
        let text = crate::report::render(&report, *format, &style);
        if let Some(problem) = crate::report::undefused(&text) {
            panic!("{format:?} report: {problem}");
        }
    }
}

/// Every step's expectations in the built-in catalogue, each with its check's variables (drawn
/// from seed 1) and its captures (all "1"): made once, judged against every input.
fn step_expectations() -> &'static [(&'static Expect, Scope)] {
    static EXPECTATIONS: OnceLock<Vec<(&'static Expect, Scope)>> = OnceLock::new();
    EXPECTATIONS.get_or_init(|| {
        let mut out = Vec::new();
        for exercise in &builtin_catalog().exercises {
            for check in &exercise.checks {
                let CheckBody::Steps(steps) = &check.body else {
                    continue;
                };
                let mut scope = crate::spec::random::generate(
                    &exercise.vars,
                    &mut crate::spec::random::check_rng(1, &exercise.id, &check.id),
                );
                for step in steps {
                    for (name, _) in &step.captures {
                        scope.insert(name.clone(), serde_json::Value::String("1".into()));
                    }
                }
                for step in steps {
                    if let StepAction::Http { expect, .. } = &step.action {
                        out.push((expect, scope.clone()));
                    }
                }
            }
        }
        out
    })
}

/// Every diagnostic points inside its file, on a character boundary, and renders.
fn assert_located(diagnostics: &Diagnostics) {
    for Diagnostic { file, span, .. } in &diagnostics.0 {
        let text = &file.text;
        assert!(
            span.start <= span.end && span.end <= text.len(),
            "{}: span {span:?} outside a file of {} bytes",
            file.name,
            text.len()
        );
        assert!(
            text.is_char_boundary(span.start) && text.is_char_boundary(span.end),
            "{}: span {span:?} splits a character",
            file.name
        );
    }
    let _ = diagnostics.render(false);
    let _ = diagnostics.render(true);
}

/// A URL the grader would follow (resolved as a probe resolves it) is on the service's origin.
fn assert_leads_back(base: &url::Url, target: &str) {
    if let Ok(url) = crate::engine::resolve_on_service(base, base, target) {
        assert_eq!(
            url.origin(),
            base.origin(),
            "{target:?} resolved to {url}, off the service"
        );
    }
}

/// A status line, header lines, an empty line and the body, read by httparse as hyper reads a
/// response; `None` for what hyper would refuse.
fn parse_response(data: &[u8]) -> Option<Response> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Response::new(&mut slots);
    let httparse::Status::Complete(length) = head.parse(data).ok()? else {
        return None;
    };
    let status = head.code?;
    if !(100..=999).contains(&status) {
        return None;
    }
    let mut headers = HeaderMap::new();
    for header in head.headers.iter() {
        headers.append(
            HeaderName::from_bytes(header.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(header.value).ok()?,
        );
    }
    Some(Response {
        status,
        headers,
        body: data[length..].to_vec(),
        truncated: false,
    })
}

fn exercises_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../exercises")
}

/// The built-in exercises, loaded once.
fn builtin_catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        exercise::load_catalog(&ExerciseSource::Embedded).expect("the built-in exercises load")
    })
}

/// `name` and every exercise it needs first, as the built-in catalogue says.
fn with_prerequisites(name: &str) -> BTreeSet<String> {
    let catalog = builtin_catalog();
    let mut needed = BTreeSet::new();
    let mut todo = vec![name.to_string()];
    while let Some(next) = todo.pop() {
        if needed.insert(next.clone()) {
            if let Some(exercise) = catalog.exercises.iter().find(|e| e.id == next) {
                todo.extend(exercise.prerequisites.iter().cloned());
            }
        }
    }
    needed
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input a fuzzer crashed on (kept once fixed) and every seed, through its target.
    #[test]
    fn the_fuzz_regressions_and_seeds_pass() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let exercises = ExerciseFuzzer::new().unwrap();
        let exercise_files = |data: &[u8]| exercises.run(data);
        type Target<'a> = (&'a str, &'a dyn Fn(&[u8]));
        let targets: [Target; 3] = [
            ("grader_toml", &grader_toml),
            ("exercise_files", &exercise_files),
            ("service_response", &service_response),
        ];
        let mut ran = 0;
        for (target, run) in targets {
            for folder in ["regressions", "seeds"] {
                let Ok(dir) = std::fs::read_dir(fuzz.join(folder).join(target)) else {
                    continue;
                };
                for entry in dir.flatten() {
                    run(&std::fs::read(entry.path()).unwrap());
                    ran += 1;
                }
            }
        }
        assert!(ran >= 10, "only {ran} fuzz inputs found under {fuzz:?}");
        for (name, seed) in exercises.seeds().unwrap() {
            exercises.run(&seed);
            let root = exercises.roots.iter().find(|(n, _)| *n == name).unwrap();
            assert!(
                exercise::load_catalog(&ExerciseSource::Dir(root.1.clone())).is_ok(),
                "{name}'s own exercise.toml, as a seed, does not load"
            );
        }
    }

    #[test]
    fn a_location_off_the_service_is_never_followed() {
        service_response(b"HTTP/1.1 302 Found\r\nLocation: //127.0.0.2:4000/x\r\n\r\n");
        service_response(b"HTTP/1.1 302 Found\r\nLocation: /\\127.0.0.2:4000/x\r\n\r\n");
        service_response(b"HTTP/1.1 200 OK\r\nLink: <//evil:4000/p2>; rel=next\r\n\r\n[]");
    }
}
