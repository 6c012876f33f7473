//! The deployment manifests and CI workflows under `deploy/` and `ci/`: nothing here runs a
//! cluster or a CI service. Every YAML file is parsed, the fields that decide whether a class is
//! graded whole and once are asserted, and the commands the files would run are run by bash with
//! a stand-in `grader` on the PATH that records its arguments, which are then checked against the
//! real CLI (`check`) or the flags of `grader batch` (until it exists in `grader::cli::Cli`, when
//! the real parser takes over for it too).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{CommandFactory, Parser};
use yaml_rust2::{Yaml, YamlLoader};

/// Every YAML file under deploy/ and ci/, each asserted by a test below. A new file must be added
/// here, and to a test that checks what it does.
const COVERED: &[&str] = &[
    "ci/github-actions/classroom.yml",
    "ci/github-actions/grade.yml",
    "ci/gitlab/classroom.gitlab-ci.yml",
    "ci/gitlab/grade.gitlab-ci.yml",
    "deploy/kubernetes/grade-class-sandboxed.yaml",
    "deploy/kubernetes/grade-class.yaml",
    "deploy/kubernetes/merge-job.yaml",
    "deploy/kubernetes/results-pvc.yaml",
];

/// The Kubernetes Jobs that grade shards of a class.
const GRADING_JOBS: &[&str] = &[
    "deploy/kubernetes/grade-class.yaml",
    "deploy/kubernetes/grade-class-sandboxed.yaml",
];

const SAMPLE_SEED: &str = "4242";
const SAMPLE_EXERCISES: &str = "api-design idempotency";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("grader/ has a parent")
        .to_path_buf()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every file under deploy/ and ci/, as paths relative to the repository root.
fn deploy_and_ci_files() -> Vec<String> {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in ["deploy", "ci"] {
        files_under(&root.join(dir), &mut files);
    }
    let mut rel: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    rel.sort();
    rel
}

fn is_yaml(path: &str) -> bool {
    path.ends_with(".yml") || path.ends_with(".yaml")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// All documents of a YAML file; panics with the parser's position when it does not parse.
fn load(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

fn load_one(rel: &str) -> Yaml {
    let mut docs = load(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

/// A scalar as text (numbers and booleans too), or None.
fn text(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text_at(y: &Yaml, what: &str) -> String {
    text(y).unwrap_or_else(|| panic!("{what}: expected a scalar, found {y:?}"))
}

fn int_at(y: &Yaml, what: &str) -> i64 {
    y.as_i64()
        .unwrap_or_else(|| panic!("{what}: expected an integer, found {y:?}"))
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().map(Vec::as_slice).unwrap_or(&[])
}

fn hash_pairs(y: &Yaml) -> Vec<(String, &Yaml)> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (text(k).expect("scalar key"), v))
                .collect()
        })
        .unwrap_or_default()
}

/// Every scalar under the key `key`, anywhere in the tree.
fn values_of_key(y: &Yaml, key: &str, out: &mut Vec<String>) {
    match y {
        Yaml::Hash(h) => {
            for (k, v) in h {
                if k.as_str() == Some(key) {
                    if let Some(t) = text(v) {
                        out.push(t);
                    }
                }
                values_of_key(v, key, out);
            }
        }
        Yaml::Array(a) => a.iter().for_each(|v| values_of_key(v, key, out)),
        _ => {}
    }
}

/// Matches `*` (any run of characters but `/`), as the shell expands a path pattern.
fn glob_matches(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

// ----- a stand-in grader, and bash -----

/// Runs `script` with bash (errexit, nounset, pipefail) in `cwd`, with only `env` (and a PATH
/// whose first folder has a `grader` that records its arguments), and returns the status and
/// every grader command line it ran.
struct Shell {
    dir: tempfile::TempDir,
}

struct ShellRun {
    success: bool,
    stderr: String,
    calls: Vec<Vec<String>>,
}

impl Shell {
    fn new() -> Shell {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let grader = bin.join("grader");
        std::fs::write(
            &grader,
            "#!/bin/sh\n{ for a in \"$@\"; do printf '%s\\0' \"$a\"; done; printf '\\001\\0'; } >> \"$GRADER_RECORD\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&grader, std::fs::Permissions::from_mode(0o755)).unwrap();
        Shell { dir }
    }

    fn run(&self, script: &str, env: &BTreeMap<String, String>, cwd: &Path) -> ShellRun {
        let record = tempfile::NamedTempFile::new_in(self.dir.path()).unwrap();
        let output = Command::new("bash")
            .args(["--noprofile", "--norc", "-euo", "pipefail", "-c", script])
            .current_dir(cwd)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin",
                    self.dir.path().join("bin").display()
                ),
            )
            .env("HOME", self.dir.path())
            .envs(env)
            .env("GRADER_RECORD", record.path())
            .output()
            .expect("bash runs");
        let recorded = std::fs::read(record.path()).unwrap();
        let mut calls = Vec::new();
        let mut call = Vec::new();
        for field in recorded.split(|&b| b == 0).filter(|f| !f.is_empty()) {
            if field == [1] {
                calls.push(std::mem::take(&mut call));
            } else {
                call.push(String::from_utf8(field.to_vec()).unwrap());
            }
        }
        ShellRun {
            success: output.status.success(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            calls,
        }
    }
}

// ----- grader command lines -----

/// Flags of `grader batch` and `grader batch merge` (the interface of issue #16), with whether
/// each takes a value. Used while `grader batch` is not in the CLI yet.
const BATCH_FLAGS: &[(&str, bool)] = &[
    ("--exercise", true),
    ("-e", true),
    ("--jobs", true),
    ("--runtime", true),
    ("--out", true),
    ("--seed", true),
    ("--shard", true),
    ("--exercises-dir", true),
];
const MERGE_FLAGS: &[(&str, bool)] = &[("--out", true)];

/// A parsed `grader batch` command line: positionals and flag values.
#[derive(Debug)]
struct Batch {
    merge: bool,
    positionals: Vec<String>,
    flags: Vec<(String, String)>,
}

impl Batch {
    fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(f, _)| f == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn parse_batch(argv: &[String], what: &str) -> Batch {
    assert_eq!(
        argv.first().map(String::as_str),
        Some("batch"),
        "{what}: {argv:?}"
    );
    let merge = argv.get(1).map(String::as_str) == Some("merge");
    let (known, rest) = match merge {
        true => (MERGE_FLAGS, &argv[2..]),
        false => (BATCH_FLAGS, &argv[1..]),
    };
    let mut batch = Batch {
        merge,
        positionals: Vec::new(),
        flags: Vec::new(),
    };
    let mut args = rest.iter();
    while let Some(arg) = args.next() {
        if !arg.starts_with('-') {
            batch.positionals.push(arg.clone());
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let takes_value = known
            .iter()
            .find(|(f, _)| *f == name)
            .unwrap_or_else(|| panic!("{what}: unknown flag {name} in {argv:?}"))
            .1;
        assert!(takes_value, "{what}: {name} takes no value");
        let value = inline
            .or_else(|| args.next().cloned())
            .unwrap_or_else(|| panic!("{what}: {name} without a value in {argv:?}"));
        assert!(
            !value.is_empty() && !value.starts_with('-'),
            "{what}: {name} has no value (empty variable?) in {argv:?}"
        );
        let name = if name == "-e" { "--exercise" } else { name };
        batch.flags.push((name.to_string(), value));
    }
    match merge {
        true => {
            assert!(!batch.positionals.is_empty(), "{what}: merge of no folder");
            assert!(batch.flag("--out").is_some(), "{what}: merge needs --out");
        }
        false => {
            assert_eq!(
                batch.positionals.len(),
                1,
                "{what}: one SUBMISSIONS: {argv:?}"
            );
            assert!(!batch.all("--exercise").is_empty(), "{what}: no --exercise");
            if let Some(jobs) = batch.flag("--jobs") {
                assert!(
                    jobs.parse::<u32>().is_ok_and(|j| j > 0),
                    "{what}: --jobs {jobs}"
                );
            }
            if let Some(runtime) = batch.flag("--runtime") {
                assert!(
                    ["docker", "local"].contains(&runtime),
                    "{what}: --runtime {runtime}"
                );
            }
            if let Some(seed) = batch.flag("--seed") {
                assert!(
                    seed.parse::<u64>().is_ok(),
                    "{what}: --seed {seed} is not a number"
                );
            }
            if let Some(shard) = batch.flag("--shard") {
                let (i, n) = parse_shard(shard, what);
                assert!(i < n, "{what}: --shard {shard}");
            }
        }
    }
    // Once `grader batch` is part of the CLI, its own parser has the last word.
    if grader::cli::Cli::command()
        .find_subcommand("batch")
        .is_some()
    {
        let full = std::iter::once("grader".to_string()).chain(argv.iter().cloned());
        if let Err(e) = grader::cli::Cli::try_parse_from(full) {
            panic!("{what}: `grader {}` does not parse:\n{e}", argv.join(" "));
        }
    }
    batch
}

fn parse_shard(shard: &str, what: &str) -> (u64, u64) {
    let (i, n) = shard
        .split_once('/')
        .unwrap_or_else(|| panic!("{what}: --shard {shard} is not I/N"));
    let parse = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|_| panic!("{what}: --shard {shard} is not I/N"))
    };
    (parse(i), parse(n))
}

/// A `grader check` command line, parsed by the real CLI; returns its arguments.
fn parse_check(argv: &[String], what: &str) -> grader::cli::CheckArgs {
    let full = std::iter::once("grader".to_string()).chain(argv.iter().cloned());
    match grader::cli::Cli::try_parse_from(full) {
        Ok(cli) => match cli.command {
            grader::cli::Command::Check(args) => args,
            other => panic!("{what}: expected `grader check`, got {other:?}"),
        },
        Err(e) => panic!("{what}: `grader {}` does not parse:\n{e}", argv.join(" ")),
    }
}

// ----- GitHub Actions: ${{ }} expressions and a job run by bash -----

/// Values of the expression contexts of one simulated workflow run.
struct Gh {
    declared_inputs: BTreeSet<String>,
    values: HashMap<String, String>,
    file: String,
}

impl Gh {
    fn new(wf: &Yaml, file: &str, inputs: &[(&str, &str)]) -> Gh {
        let on = &wf["on"];
        let mut declared_inputs = BTreeSet::new();
        for trigger in ["workflow_call", "workflow_dispatch"] {
            for (name, _) in hash_pairs(&on[trigger]["inputs"]) {
                declared_inputs.insert(name);
            }
        }
        let mut gh = Gh {
            declared_inputs,
            values: HashMap::new(),
            file: file.to_string(),
        };
        for (name, value) in inputs {
            assert!(
                gh.declared_inputs.contains(*name),
                "{file}: no input {name}"
            );
            gh.values
                .insert(format!("inputs.{name}"), value.to_string());
        }
        gh
    }

    fn lookup(&self, key: &str) -> String {
        if let Some(v) = self.values.get(key) {
            return v.clone();
        }
        if let Some(input) = key.strip_prefix("inputs.") {
            assert!(
                self.declared_inputs.contains(input),
                "{}: ${{{{ {key} }}}} names an input the workflow does not declare",
                self.file
            );
            return String::new();
        }
        if key.starts_with("vars.") {
            return String::new();
        }
        panic!("{}: ${{{{ {key} }}}} has no value at this point", self.file)
    }

    /// `a || b || 'literal'` and `fromJSON(x)`: what the workflows use outside `if:`.
    fn eval(&self, expr: &str) -> String {
        if let Some(inner) = expr
            .strip_prefix("fromJSON(")
            .and_then(|e| e.strip_suffix(')'))
        {
            return self.eval(inner.trim());
        }
        for alt in expr.split("||").map(str::trim) {
            let value = match alt.strip_prefix('\'').and_then(|a| a.strip_suffix('\'')) {
                Some(literal) => literal.to_string(),
                None => {
                    assert!(
                        alt.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                        "{}: unsupported expression `{expr}`",
                        self.file
                    );
                    self.lookup(alt)
                }
            };
            if !value.is_empty() && value != "false" {
                return value;
            }
        }
        String::new()
    }

    fn expand(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${{") {
            out.push_str(&rest[..start]);
            let end = start
                + rest[start..]
                    .find("}}")
                    .unwrap_or_else(|| panic!("{}: unclosed ${{{{ in {text}", self.file));
            out.push_str(&self.eval(rest[start + 3..end].trim()));
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn env_of(&self, y: &Yaml, env: &mut BTreeMap<String, String>) {
        for (k, v) in hash_pairs(y) {
            env.insert(k, self.expand(&text_at(v, "env value")));
        }
    }
}

#[derive(Debug, Clone)]
struct Artifact {
    name: String,
    path: String,
    always: bool,
    include_hidden: bool,
}

#[derive(Default)]
struct GhJobRun {
    calls: Vec<Vec<String>>,
    uploads: Vec<Artifact>,
    download_patterns: Vec<String>,
    outputs: HashMap<String, String>,
    summary: String,
    cwd: Option<tempfile::TempDir>,
}

/// Runs one job of a workflow: every `run` step (whatever its `if:`) with bash and the stand-in
/// grader, upload steps recorded, download steps laid out as download-artifact does (one folder
/// per artifact under `path`) from `available` artifact names.
fn run_gh_job(
    wf: &Yaml,
    job_id: &str,
    gh: &mut Gh,
    shell: &Shell,
    available: &[String],
) -> GhJobRun {
    let job = &wf["jobs"][job_id];
    assert!(!job.is_badvalue(), "{}: no job {job_id}", gh.file);
    let cwd = tempfile::tempdir().unwrap();
    let github_output = cwd.path().join(".github_output");
    let github_summary = cwd.path().join(".github_step_summary");
    let mut run = GhJobRun::default();
    for step in list(&job["steps"]) {
        let mut env = BTreeMap::new();
        gh.env_of(&wf["env"], &mut env);
        gh.env_of(&job["env"], &mut env);
        gh.env_of(&step["env"], &mut env);
        env.insert("GITHUB_OUTPUT".into(), github_output.display().to_string());
        env.insert(
            "GITHUB_STEP_SUMMARY".into(),
            github_summary.display().to_string(),
        );
        env.insert("RUNNER_TEMP".into(), cwd.path().display().to_string());
        let step_name = step["name"]
            .as_str()
            .map(|n| gh.expand(n))
            .unwrap_or_default();
        let always = step["if"].as_str().is_some_and(|c| c.contains("always()"));
        if let Some(script) = step["run"].as_str() {
            std::fs::write(&github_output, "").unwrap();
            let result = shell.run(&gh.expand(script), &env, cwd.path());
            assert!(
                result.success,
                "{}: job {job_id}, step `{step_name}` failed:\n{}",
                gh.file, result.stderr
            );
            run.calls.extend(result.calls);
            if let Some(id) = step["id"].as_str() {
                for line in std::fs::read_to_string(&github_output).unwrap().lines() {
                    let (k, v) = line.split_once('=').expect("key=value in GITHUB_OUTPUT");
                    gh.values
                        .insert(format!("steps.{id}.outputs.{k}"), v.into());
                }
            }
        } else if let Some(uses) = step["uses"].as_str() {
            let with = &step["with"];
            let with_text = |key: &str| text(&with[key]).map(|v| gh.expand(&v));
            if uses.starts_with("actions/upload-artifact@") {
                run.uploads.push(Artifact {
                    name: with_text("name").expect("upload-artifact with a name"),
                    path: with_text("path").expect("upload-artifact with a path"),
                    always,
                    include_hidden: with_text("include-hidden-files").as_deref() == Some("true"),
                });
            } else if uses.starts_with("actions/download-artifact@") {
                let pattern = with_text("pattern").expect("download by pattern");
                let path = with_text("path").unwrap_or_else(|| ".".into());
                for name in available.iter().filter(|n| glob_matches(&pattern, n)) {
                    std::fs::create_dir_all(cwd.path().join(&path).join(name)).unwrap();
                }
                run.download_patterns.push(pattern);
            } else {
                assert!(uses.starts_with("actions/checkout@"), "{}: {uses}", gh.file);
            }
        }
    }
    for (k, v) in hash_pairs(&job["outputs"]) {
        run.outputs.insert(k, gh.expand(&text_at(v, "job output")));
    }
    run.summary = std::fs::read_to_string(&github_summary).unwrap_or_default();
    run.cwd = Some(cwd);
    run
}

fn needs_of(job: &Yaml) -> Vec<String> {
    match &job["needs"] {
        Yaml::Array(a) => a.iter().filter_map(text).collect(),
        other => text(other).into_iter().collect(),
    }
}

// ----- Kubernetes -----

/// The containers of a Job's pod (init containers first).
fn pod_containers(job: &Yaml) -> Vec<&Yaml> {
    let spec = &job["spec"]["template"]["spec"];
    list(&spec["initContainers"])
        .iter()
        .chain(list(&spec["containers"]))
        .collect()
}

fn container<'a>(job: &'a Yaml, name: &str) -> &'a Yaml {
    pod_containers(job)
        .into_iter()
        .find(|c| c["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// A container's env as Kubernetes gives it for `completion_index`: literal values, and the
/// completion-index annotation through the downward API.
fn k8s_env(c: &Yaml, completion_index: i64, file: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for var in list(&c["env"]) {
        let name = text_at(&var["name"], "env name");
        let value = if let Some(v) = text(&var["value"]) {
            v
        } else {
            let path = text_at(
                &var["valueFrom"]["fieldRef"]["fieldPath"],
                &format!("{file}: env {name}"),
            );
            assert_eq!(
                path, "metadata.annotations['batch.kubernetes.io/job-completion-index']",
                "{file}: env {name} comes from a field that is not the completion index"
            );
            completion_index.to_string()
        };
        env.insert(name, value);
    }
    env
}

/// `$(VAR)` in command and args, replaced as the kubelet does (only variables of the env list;
/// `$$` escapes).
fn k8s_expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(close) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..close + 1];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[pos..pos + close + 3]),
            }
            rest = &after[close + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The grader command lines a container runs at `completion_index`: its args after `grader`, or
/// those a `sh -c` script runs.
fn k8s_grader_calls(
    c: &Yaml,
    completion_index: i64,
    file: &str,
    shell: &Shell,
) -> Vec<Vec<String>> {
    let env = k8s_env(c, completion_index, file);
    let expand = |y: &Yaml| -> Vec<String> {
        list(y)
            .iter()
            .map(|a| k8s_expand(&text_at(a, "command/args"), &env))
            .collect()
    };
    let command = expand(&c["command"]);
    let args = expand(&c["args"]);
    for arg in command.iter().chain(&args) {
        assert!(
            !arg.contains("$("),
            "{file}: `{arg}` names a variable the container's env does not declare, so \
             Kubernetes leaves it unexpanded"
        );
    }
    match command.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["grader"] => vec![args],
        ["sh", "-c"] | ["/bin/sh", "-c"] => {
            let cwd = tempfile::tempdir().unwrap();
            let run = shell.run(&args.join("\n"), &env, cwd.path());
            assert!(run.success, "{file}: the script fails:\n{}", run.stderr);
            run.calls
        }
        _ => panic!("{file}: command {command:?}: expected [grader] or [sh, -c]"),
    }
}

/// The volume mounted at the longest mount path that is a prefix of `path`: (claim, read-only).
fn k8s_volume_of(job: &Yaml, c: &Yaml, path: &str, file: &str) -> (String, bool) {
    let mount = list(&c["volumeMounts"])
        .iter()
        .filter(|m| {
            let at = m["mountPath"].as_str().unwrap_or_default();
            path == at || path.starts_with(&format!("{}/", at.trim_end_matches('/')))
        })
        .max_by_key(|m| m["mountPath"].as_str().unwrap_or_default().len())
        .unwrap_or_else(|| panic!("{file}: nothing is mounted where {path} is"));
    let name = mount["name"].as_str().unwrap();
    let volume = list(&job["spec"]["template"]["spec"]["volumes"])
        .iter()
        .find(|v| v["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{file}: no volume {name}"));
    let claim = volume["persistentVolumeClaim"]["claimName"]
        .as_str()
        .unwrap_or_else(|| panic!("{file}: {path} is not on a PersistentVolumeClaim"));
    (claim.to_string(), mount["readOnly"].as_bool() == Some(true))
}

fn assert_resources(job: &Yaml, file: &str) {
    for c in pod_containers(job) {
        let name = c["name"].as_str().unwrap_or("?");
        for kind in ["requests", "limits"] {
            let r = &c["resources"][kind];
            assert!(
                !r["memory"].is_badvalue(),
                "{file}: container {name} has no memory {kind}"
            );
        }
        assert!(
            !c["resources"]["requests"]["cpu"].is_badvalue(),
            "{file}: container {name} has no cpu request"
        );
    }
}

/// What the shards of one grading Job write: for each completion index, its `--out` and seed.
struct K8sShards {
    n: i64,
    outs: Vec<String>,
    results_claim: String,
}

fn k8s_grading_job(file: &str, shell: &Shell) -> K8sShards {
    let job = load_one(file);
    assert_eq!(job["kind"].as_str(), Some("Job"), "{file}");
    let spec = &job["spec"];
    assert_eq!(
        spec["completionMode"].as_str(),
        Some("Indexed"),
        "{file}: completionMode"
    );
    let n = int_at(&spec["completions"], &format!("{file}: completions"));
    assert!(n >= 1, "{file}: completions {n}");
    let parallelism = int_at(&spec["parallelism"], &format!("{file}: parallelism"));
    assert!(
        (1..=n).contains(&parallelism),
        "{file}: parallelism {parallelism} must be between 1 and completions ({n})"
    );
    assert!(
        spec["backoffLimitPerIndex"].as_i64().is_some() || spec["backoffLimit"].as_i64().is_some(),
        "{file}: no backoffLimitPerIndex or backoffLimit"
    );
    assert!(
        spec["activeDeadlineSeconds"]
            .as_i64()
            .is_some_and(|s| s > 0),
        "{file}: no activeDeadlineSeconds"
    );
    let pod = &spec["template"]["spec"];
    assert_eq!(
        pod["restartPolicy"].as_str(),
        Some("Never"),
        "{file}: restartPolicy"
    );
    assert_resources(&job, file);

    let grader = container(&job, "grader");
    let mut outs = Vec::new();
    let mut seeds = BTreeSet::new();
    let mut results_claim = None;
    for index in 0..n {
        let calls = k8s_grader_calls(grader, index, file, shell);
        assert_eq!(calls.len(), 1, "{file}: one grader command, got {calls:?}");
        let batch = parse_batch(&calls[0], file);
        assert!(
            !batch.merge,
            "{file}: a grading Job runs `grader batch`, not merge"
        );
        assert_eq!(
            batch.flag("--shard"),
            Some(format!("{index}/{n}").as_str()),
            "{file}: completion index {index} of {n} must grade --shard {index}/{n}"
        );
        let seed = batch
            .flag("--seed")
            .unwrap_or_else(|| panic!("{file}: no --seed"));
        seeds.insert(seed.to_string());
        let out = batch
            .flag("--out")
            .unwrap_or_else(|| panic!("{file}: no --out"))
            .to_string();
        let (claim, read_only) = k8s_volume_of(&job, grader, &out, file);
        assert!(!read_only, "{file}: --out {out} is on a read-only mount");
        assert!(
            results_claim.get_or_insert(claim.clone()) == &claim,
            "{file}: shards write to different volumes"
        );
        let submissions = &batch.positionals[0];
        let (_, read_only) = k8s_volume_of(&job, grader, submissions, file);
        assert!(
            read_only,
            "{file}: the submissions ({submissions}) must be mounted read-only"
        );
        outs.push(out);
    }
    assert_eq!(
        seeds.len(),
        1,
        "{file}: the shards get different seeds: {seeds:?}"
    );
    let distinct: BTreeSet<_> = outs.iter().collect();
    assert_eq!(
        distinct.len(),
        outs.len(),
        "{file}: two shards write the same --out: {outs:?}"
    );
    K8sShards {
        n,
        outs,
        results_claim: results_claim.unwrap(),
    }
}

// ----- the tests -----

#[test]
fn every_yaml_file_under_deploy_and_ci_parses_and_is_covered_by_a_test() {
    let yaml: Vec<String> = deploy_and_ci_files()
        .into_iter()
        .filter(|f| is_yaml(f))
        .collect();
    for file in &yaml {
        let docs = load(file);
        assert!(!docs.is_empty(), "{file}: no YAML document");
    }
    let covered: Vec<String> = COVERED.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        yaml, covered,
        "the YAML files under deploy/ and ci/ differ from those this test covers (COVERED)"
    );
}

/// Registry hosts, spelled in pieces so that this file does not contain them either.
fn registry_hosts() -> Vec<String> {
    [
        ["docker", "io"].join("."),
        ["ghcr", "io"].join("."),
        ["quay", "io"].join("."),
        ["gcr", "io"].join("."),
        ["registry", "gitlab", "com"].join("."),
        ["registry", "k8s", "io"].join("."),
        ["mcr", "microsoft", "com"].join("."),
        ["public", "ecr", "aws"].join("."),
        ["azurecr", "io"].join("."),
        ["pkg", "dev"].join("."),
        ["amazonaws", "com"].join("."),
        ["hub", "docker", "com"].join("."),
        ["lscr", "io"].join("."),
        ["nvcr", "io"].join("."),
    ]
    .into()
}

#[test]
fn no_registry_host_appears_under_deploy_or_ci() {
    let hosts = registry_hosts();
    for file in deploy_and_ci_files() {
        let content = read(&file).to_lowercase();
        for host in &hosts {
            assert!(
                !content.contains(host.as_str()),
                "{file} names the registry {host}"
            );
        }
        if !is_yaml(&file) {
            continue;
        }
        // Docker's rule: an image's first path component is a registry host when it has a `.`
        // or a `:`, or is `localhost`.
        for doc in load(&file) {
            let mut images = Vec::new();
            values_of_key(&doc, "image", &mut images);
            values_of_key(&doc, "GRADER_IMAGE", &mut images);
            for image in images {
                let first = image.split('/').next().unwrap();
                assert!(
                    !(image.contains('/') && (first.contains('.') || first.contains(':')))
                        && first != "localhost",
                    "{file}: image {image} names a registry host; use a placeholder"
                );
            }
        }
    }
}

#[test]
fn kubernetes_grading_jobs_give_each_completion_index_its_own_shard_and_one_seed() {
    let shell = Shell::new();
    for file in GRADING_JOBS {
        let shards = k8s_grading_job(file, &shell);
        assert_eq!(shards.outs.len() as i64, shards.n);
        assert_eq!(
            shards.results_claim, "grader-results",
            "{file}: results claim"
        );
    }
}

#[test]
fn kubernetes_docker_job_reaches_a_dind_native_sidecar_through_a_shared_socket() {
    let file = "deploy/kubernetes/grade-class.yaml";
    let job = load_one(file);
    let shell = Shell::new();
    let calls = k8s_grader_calls(container(&job, "grader"), 0, file, &shell);
    assert_eq!(
        parse_batch(&calls[0], file).flag("--runtime"),
        Some("docker"),
        "{file}"
    );
    let pod = &job["spec"]["template"]["spec"];
    let dind = list(&pod["initContainers"])
        .iter()
        .find(|c| c["name"].as_str() == Some("dind"))
        .unwrap_or_else(|| panic!("{file}: no dind init container"));
    assert_eq!(
        dind["restartPolicy"].as_str(),
        Some("Always"),
        "{file}: dind must be a native sidecar (restartPolicy: Always), or the Job never completes"
    );
    assert_eq!(
        dind["securityContext"]["privileged"].as_bool(),
        Some(true),
        "{file}"
    );
    assert!(
        !dind["startupProbe"].is_badvalue(),
        "{file}: dind has no startupProbe"
    );
    let grader = container(&job, "grader");
    let env = k8s_env(grader, 0, file);
    let socket = env["DOCKER_HOST"]
        .strip_prefix("unix://")
        .unwrap_or_else(|| panic!("{file}: DOCKER_HOST is not a unix socket"));
    let dind_args: Vec<String> = list(&dind["args"]).iter().filter_map(text).collect();
    assert!(
        dind_args.contains(&format!("--host=unix://{socket}")),
        "{file}: dockerd does not listen on {socket}: {dind_args:?}"
    );
    let volume_at = |c: &Yaml| {
        list(&c["volumeMounts"])
            .iter()
            .find(|m| {
                socket.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap_or_default()))
            })
            .and_then(|m| m["name"].as_str().map(String::from))
    };
    let shared = volume_at(grader);
    assert!(
        shared.is_some() && shared == volume_at(dind),
        "{file}: the socket {socket} is not on a volume both grader and dind mount"
    );
    assert!(
        !dind_args.iter().any(|a| a.contains("tcp://")),
        "{file}: dockerd must not listen on TCP, where other pods could reach it"
    );
}

#[test]
fn kubernetes_local_runtime_runs_only_in_a_sandboxed_unprivileged_pod() {
    let shell = Shell::new();
    for file in GRADING_JOBS {
        let job = load_one(file);
        let calls = k8s_grader_calls(container(&job, "grader"), 0, file, &shell);
        if parse_batch(&calls[0], file).flag("--runtime") != Some("local") {
            continue;
        }
        let pod = &job["spec"]["template"]["spec"];
        let class = pod["runtimeClassName"].as_str().unwrap_or_default();
        assert!(
            ["gvisor", "kata", "runsc"].iter().any(|s| class.contains(s)),
            "{file}: --runtime local runs learners' code in the pod: it needs a gVisor or Kata runtimeClassName, found `{class}`"
        );
        for c in pod_containers(&job) {
            assert_ne!(
                c["securityContext"]["privileged"].as_bool(),
                Some(true),
                "{file}"
            );
        }
    }
    let sandboxed = load_one("deploy/kubernetes/grade-class-sandboxed.yaml");
    let calls = k8s_grader_calls(container(&sandboxed, "grader"), 0, "sandboxed", &shell);
    assert_eq!(
        parse_batch(&calls[0], "sandboxed").flag("--runtime"),
        Some("local")
    );
}

#[test]
fn kubernetes_merge_job_reads_every_folder_the_shards_write() {
    let file = "deploy/kubernetes/merge-job.yaml";
    let shell = Shell::new();
    let job = load_one(file);
    assert_eq!(
        job["spec"]["template"]["spec"]["restartPolicy"].as_str(),
        Some("Never"),
        "{file}: restartPolicy"
    );
    assert_resources(&job, file);
    let merge = container(&job, "merge");
    let calls = k8s_grader_calls(merge, 0, file, &shell);
    assert_eq!(calls.len(), 1, "{file}: one grader command");
    let batch = parse_batch(&calls[0], file);
    assert!(batch.merge, "{file}: runs `grader batch merge`");
    let out = batch.flag("--out").unwrap();
    for grading in GRADING_JOBS {
        let shards = k8s_grading_job(grading, &shell);
        for shard_out in &shards.outs {
            assert!(
                batch.positionals.iter().any(|p| glob_matches(p, shard_out)),
                "{file} does not read {shard_out}, written by {grading}: {:?}",
                batch.positionals
            );
        }
        for dir in &batch.positionals {
            let (claim, _) = k8s_volume_of(&job, merge, dir, file);
            assert_eq!(
                claim, shards.results_claim,
                "{file}: reads {dir} from another volume"
            );
        }
    }
    assert!(
        !batch.positionals.iter().any(|p| glob_matches(p, out)),
        "{file}: --out {out} would be read back as a shard by the next merge"
    );
    let (_, read_only) = k8s_volume_of(&job, merge, out, file);
    assert!(!read_only, "{file}: --out {out} is read-only");
}

#[test]
fn kubernetes_results_claim_is_read_write_many() {
    let file = "deploy/kubernetes/results-pvc.yaml";
    let docs = load(file);
    let results = docs
        .iter()
        .find(|d| d["metadata"]["name"].as_str() == Some("grader-results"))
        .unwrap_or_else(|| panic!("{file}: no grader-results claim"));
    assert_eq!(results["kind"].as_str(), Some("PersistentVolumeClaim"));
    let modes: Vec<_> = list(&results["spec"]["accessModes"])
        .iter()
        .filter_map(text)
        .collect();
    assert_eq!(
        modes,
        ["ReadWriteMany"],
        "{file}: shards on several nodes write at once"
    );
    let names: BTreeSet<_> = docs
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert!(
        names.contains("grader-submissions"),
        "{file}: no grader-submissions claim"
    );
}

#[test]
fn github_grade_workflow_writes_the_summary_and_keeps_its_artifacts() {
    let file = "ci/github-actions/grade.yml";
    let wf = load_one(file);
    assert!(!wf["on"]["push"].is_badvalue(), "{file}: runs on push");
    let shell = Shell::new();
    for input in ["exercises", "runtime", "min-score", "seed", "junit"] {
        assert!(
            !wf["on"]["workflow_call"]["inputs"][input].is_badvalue(),
            "{file}: input {input}"
        );
    }
    // Called with every input, and on push with none.
    let with_inputs: &[(&str, &str)] = &[
        ("exercises", SAMPLE_EXERCISES),
        ("runtime", "docker"),
        ("min-score", "80"),
        ("seed", SAMPLE_SEED),
        ("junit", "true"),
    ];
    for inputs in [with_inputs, &[]] {
        let mut gh = Gh::new(&wf, file, inputs);
        let run = run_gh_job(&wf, "grade", &mut gh, &shell, &[]);
        let checks: Vec<_> = run.calls.iter().map(|c| parse_check(c, file)).collect();
        let summary = checks
            .iter()
            .find(|c| format!("{:?}", c.format) == "Github")
            .unwrap_or_else(|| panic!("{file}: no --format github run"));
        let summary_file = run
            .cwd
            .as_ref()
            .unwrap()
            .path()
            .join(".github_step_summary");
        assert_eq!(
            summary.output.as_deref(),
            Some(summary_file.as_path()),
            "{file}: summary"
        );
        let seeds: BTreeSet<_> = checks.iter().map(|c| c.seed).collect();
        assert_eq!(
            seeds.len(),
            1,
            "{file}: the runs grade different seeds: {seeds:?}"
        );
        assert!(
            seeds.iter().all(Option::is_some),
            "{file}: a run without --seed"
        );
        for check in &checks {
            assert_eq!(
                check.target.path,
                Path::new("."),
                "{file}: grades the checkout"
            );
            assert_eq!(format!("{:?}", check.runtime), "Docker", "{file}: runtime");
        }
        if !inputs.is_empty() {
            let summary = &checks[0];
            assert_eq!(
                summary.seed.unwrap().to_string(),
                SAMPLE_SEED,
                "{file}: seed input"
            );
            assert_eq!(summary.min_score, Some(80.0), "{file}: min-score input");
            assert_eq!(
                summary.target.exercises,
                ["api-design", "idempotency"],
                "{file}"
            );
            let junit = checks
                .iter()
                .find(|c| format!("{:?}", c.format) == "Junit")
                .unwrap_or_else(|| panic!("{file}: no --format junit run"));
            let junit_out = junit.output.as_ref().unwrap().display().to_string();
            assert!(
                run.uploads.iter().any(|u| u.path == junit_out),
                "{file}: {junit_out} is not uploaded"
            );
        }
        let last_run = ".grader/last-run";
        assert!(
            run.uploads.iter().any(|u| u.path == last_run),
            "{file}: {last_run} is not uploaded"
        );
        assert!(
            checks.iter().any(|c| c.artifacts_dir.is_none()),
            "{file}: no run keeps its logs in {last_run}"
        );
        for upload in &run.uploads {
            assert!(
                upload.always,
                "{file}: upload {} needs if: always()",
                upload.name
            );
            let hidden = upload
                .path
                .split('/')
                .any(|part| part.starts_with('.') && part != ".");
            assert!(
                !hidden || upload.include_hidden,
                "{file}: {} is hidden: upload-artifact skips it without include-hidden-files",
                upload.path
            );
        }
    }
}

#[test]
fn github_classroom_matrix_covers_every_shard_and_merge_reads_every_artifact() {
    let file = "ci/github-actions/classroom.yml";
    let wf = load_one(file);
    let shell = Shell::new();
    let seed_input = &wf["on"]["workflow_dispatch"]["inputs"]["seed"];
    assert_eq!(
        seed_input["required"].as_bool(),
        Some(true),
        "{file}: the seed is required"
    );
    assert!(
        seed_input["default"].is_badvalue(),
        "{file}: the seed has no default"
    );
    let merge_job = &wf["jobs"]["merge"];
    assert!(
        needs_of(merge_job).contains(&"grade".to_string()),
        "{file}: merge must need the matrix job"
    );
    assert!(
        merge_job["if"]
            .as_str()
            .is_some_and(|c| c.contains("always()")),
        "{file}: merge must run after a failed shard too"
    );
    for n in [1u64, 3, 7] {
        let shards = n.to_string();
        let inputs = [
            ("roster", "submissions/roster.csv"),
            ("exercises", SAMPLE_EXERCISES),
            ("shards", shards.as_str()),
            ("seed", SAMPLE_SEED),
        ];
        let mut gh = Gh::new(&wf, file, &inputs);
        let plan = run_gh_job(&wf, "plan", &mut gh, &shell, &[]);
        for (k, v) in &plan.outputs {
            gh.values
                .insert(format!("needs.plan.outputs.{k}"), v.clone());
        }
        let matrix = gh.expand(&text_at(
            &wf["jobs"]["grade"]["strategy"]["matrix"]["shard"],
            "matrix",
        ));
        let indices: Vec<u64> = serde_json::from_str(&matrix)
            .unwrap_or_else(|e| panic!("{file}: matrix {matrix} is not a JSON list: {e}"));
        assert_eq!(indices, (0..n).collect::<Vec<_>>(), "{file}: shards={n}");
        assert!(needs_of(&wf["jobs"]["grade"]).contains(&"plan".to_string()));

        let mut artifacts = Vec::new();
        let mut seen = BTreeSet::new();
        for index in &indices {
            gh.values.insert("matrix.shard".into(), index.to_string());
            let run = run_gh_job(&wf, "grade", &mut gh, &shell, &[]);
            assert_eq!(run.calls.len(), 1, "{file}: one grader command per shard");
            let batch = parse_batch(&run.calls[0], file);
            assert_eq!(
                batch.positionals,
                ["submissions/roster.csv"],
                "{file}: roster input"
            );
            assert_eq!(
                batch.all("--exercise"),
                ["api-design", "idempotency"],
                "{file}"
            );
            assert_eq!(
                batch.flag("--seed"),
                Some(SAMPLE_SEED),
                "{file}: shard {index} seed"
            );
            let (i, total) = parse_shard(batch.flag("--shard").unwrap(), file);
            assert_eq!(total, n, "{file}: --shard's N");
            assert!(seen.insert(i), "{file}: shard {i} graded twice");
            let out = batch.flag("--out").unwrap_or("grader-batch");
            let upload = run
                .uploads
                .iter()
                .find(|u| u.path == out)
                .unwrap_or_else(|| panic!("{file}: the batch folder {out} is not uploaded"));
            assert!(
                upload.always,
                "{file}: a failed shard's folder must be uploaded too"
            );
            artifacts.push(upload.name.clone());
        }
        assert_eq!(seen, (0..n).collect(), "{file}: shards graded");
        let distinct: BTreeSet<_> = artifacts.iter().collect();
        assert_eq!(
            distinct.len(),
            artifacts.len(),
            "{file}: artifact names clash"
        );

        let merge = run_gh_job(&wf, "merge", &mut gh, &shell, &artifacts);
        for name in &artifacts {
            assert!(
                merge
                    .download_patterns
                    .iter()
                    .any(|p| glob_matches(p, name)),
                "{file}: merge does not download {name}"
            );
        }
        assert_eq!(merge.calls.len(), 1, "{file}: one merge command");
        let batch = parse_batch(&merge.calls[0], file);
        assert!(
            batch.merge,
            "{file}: the merge job runs `grader batch merge`"
        );
        let read: BTreeSet<_> = batch
            .positionals
            .iter()
            .map(|d| {
                Path::new(d)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let expected: BTreeSet<_> = artifacts.iter().cloned().collect();
        assert_eq!(read, expected, "{file}: merge reads these shard folders");
        let out = batch.flag("--out").unwrap();
        assert!(
            merge.uploads.iter().any(|u| u.path == out && u.always),
            "{file}: the class report {out} is not uploaded (with if: always())"
        );
        assert!(
            !merge.summary.is_empty(),
            "{file}: merge writes no job summary"
        );
    }
}

// ----- GitLab -----

struct GitLabRun {
    run: ShellRun,
    cwd: tempfile::TempDir,
}

/// Runs a GitLab job's script with the pipeline's and the job's variables, the given predefined
/// ones, and `overrides` (what a person fills in when running the pipeline).
fn run_gitlab_job(
    doc: &Yaml,
    job: &str,
    predefined: &[(&str, String)],
    overrides: &[(&str, &str)],
    shell: &Shell,
    dirs: &[String],
) -> GitLabRun {
    let mut env = BTreeMap::new();
    for vars in [&doc["variables"], &doc[job]["variables"]] {
        for (k, v) in hash_pairs(vars) {
            let value = text(v).or_else(|| text(&v["value"])).unwrap_or_default();
            env.insert(k, value);
        }
    }
    for (k, v) in predefined {
        env.insert(k.to_string(), v.clone());
    }
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    let cwd = tempfile::tempdir().unwrap();
    env.insert("CI_PROJECT_DIR".into(), cwd.path().display().to_string());
    for dir in dirs {
        std::fs::create_dir_all(cwd.path().join(dir)).unwrap();
    }
    let script: Vec<String> = list(&doc[job]["script"]).iter().filter_map(text).collect();
    assert!(!script.is_empty(), "job {job} has no script");
    let run = shell.run(&script.join("\n"), &env, cwd.path());
    GitLabRun { run, cwd }
}

fn gitlab_artifact_paths(job: &Yaml) -> Vec<String> {
    list(&job["artifacts"]["paths"])
        .iter()
        .filter_map(text)
        .collect()
}

fn covered_by_paths(paths: &[String], file: &str) -> bool {
    paths.iter().any(|p| {
        let p = p.trim_end_matches('/');
        file == p || file.starts_with(&format!("{p}/"))
    })
}

#[test]
fn gitlab_grade_pipeline_reports_junit_that_it_writes() {
    let file = "ci/gitlab/grade.gitlab-ci.yml";
    let doc = load_one(file);
    let shell = Shell::new();
    let job = &doc["grade"];
    let junit = text_at(
        &job["artifacts"]["reports"]["junit"],
        &format!("{file}: junit report"),
    );
    assert_eq!(
        job["artifacts"]["when"].as_str(),
        Some("always"),
        "{file}: failed runs too"
    );
    for overrides in [
        vec![],
        vec![
            ("GRADER_EXERCISES", SAMPLE_EXERCISES),
            ("GRADER_MIN_SCORE", "80"),
            ("GRADER_SEED", SAMPLE_SEED),
        ],
    ] {
        let run = run_gitlab_job(&doc, "grade", &[], &overrides, &shell, &[]);
        assert!(run.run.success, "{file}: {}", run.run.stderr);
        assert_eq!(run.run.calls.len(), 1, "{file}: one grading run");
        let check = parse_check(&run.run.calls[0], file);
        assert_eq!(
            format!("{:?}", check.format),
            "Junit",
            "{file}: --format junit"
        );
        assert_eq!(
            check.output.as_deref(),
            Some(Path::new(&junit)),
            "{file}: writes {junit}"
        );
        if !overrides.is_empty() {
            assert_eq!(
                check.seed.map(|s| s.to_string()).as_deref(),
                Some(SAMPLE_SEED)
            );
            assert_eq!(check.min_score, Some(80.0));
            assert_eq!(check.target.exercises, ["api-design", "idempotency"]);
        }
        let paths = gitlab_artifact_paths(job);
        assert!(
            covered_by_paths(&paths, ".grader/last-run"),
            "{file}: keeps .grader/last-run"
        );
        drop(run.cwd);
    }
}

#[test]
fn gitlab_classroom_turns_node_index_into_every_zero_based_shard_and_merges_them() {
    let file = "ci/gitlab/classroom.gitlab-ci.yml";
    let doc = load_one(file);
    let shell = Shell::new();
    let n = int_at(
        &doc["grade"]["parallel"],
        &format!("{file}: grade parallel"),
    );
    assert!(n >= 1, "{file}: parallel {n}");
    let seed = [("GRADER_SEED", SAMPLE_SEED)];
    let mut outs = Vec::new();
    let mut seen = BTreeSet::new();
    for node in 1..=n {
        let predefined = [
            ("CI_NODE_INDEX", node.to_string()),
            ("CI_NODE_TOTAL", n.to_string()),
        ];
        let run = run_gitlab_job(&doc, "grade", &predefined, &seed, &shell, &[]);
        assert!(run.run.success, "{file}: {}", run.run.stderr);
        assert_eq!(
            run.run.calls.len(),
            1,
            "{file}: one grader command per shard"
        );
        let batch = parse_batch(&run.run.calls[0], file);
        assert_eq!(
            batch.flag("--shard"),
            Some(format!("{}/{n}", node - 1).as_str()),
            "{file}: CI_NODE_INDEX {node} (1-based) must grade --shard {}/{n}",
            node - 1
        );
        seen.insert(node - 1);
        assert_eq!(batch.flag("--seed"), Some(SAMPLE_SEED), "{file}: seed");
        let out = batch.flag("--out").unwrap_or("grader-batch").to_string();
        assert!(
            covered_by_paths(&gitlab_artifact_paths(&doc["grade"]), &out),
            "{file}: --out {out} is not kept as an artifact"
        );
        outs.push(out);
    }
    assert_eq!(seen, (0..n).collect(), "{file}: shards graded");
    let distinct: BTreeSet<_> = outs.iter().collect();
    assert_eq!(
        distinct.len(),
        outs.len(),
        "{file}: shards write the same folder, so their artifacts overwrite each other: {outs:?}"
    );
    assert_eq!(
        doc["grade"]["artifacts"]["when"].as_str(),
        Some("always"),
        "{file}"
    );

    // Without a seed the shards would each pick their own: the script must refuse.
    let predefined = [
        ("CI_NODE_INDEX", "1".to_string()),
        ("CI_NODE_TOTAL", n.to_string()),
    ];
    let unseeded = run_gitlab_job(
        &doc,
        "grade",
        &predefined,
        &[("GRADER_SEED", "")],
        &shell,
        &[],
    );
    assert!(
        !unseeded.run.success && unseeded.run.calls.is_empty(),
        "{file}: grades with an empty GRADER_SEED"
    );

    let merge = &doc["merge"];
    let needs_grade = list(&merge["needs"]).iter().any(|need| {
        need.as_str() == Some("grade")
            || (need["job"].as_str() == Some("grade") && need["artifacts"].as_bool() != Some(false))
    });
    assert!(needs_grade, "{file}: merge must need grade's artifacts");
    let run = run_gitlab_job(&doc, "merge", &[], &[], &shell, &outs);
    assert!(run.run.success, "{file}: {}", run.run.stderr);
    assert_eq!(run.run.calls.len(), 1, "{file}: one merge command");
    let batch = parse_batch(&run.run.calls[0], file);
    assert!(batch.merge, "{file}: merge runs `grader batch merge`");
    let read: BTreeSet<_> = batch.positionals.iter().cloned().collect();
    let written: BTreeSet<_> = outs.iter().cloned().collect();
    assert_eq!(
        read, written,
        "{file}: merge reads exactly the shards' folders"
    );
    let out = batch.flag("--out").unwrap();
    assert!(
        covered_by_paths(&gitlab_artifact_paths(merge), out),
        "{file}: the class report {out} is not kept"
    );
}
