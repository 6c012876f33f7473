//! Parsing and validation of `skills.toml` and `<exercise>/exercise.toml`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json_path::JsonPath;
use toml::Spanned;

use super::coverage::{self, IdRef};
use super::{Catalog, Check, CheckBody, Exercise, ExerciseSource, Skill, Task};
use crate::diagnostic::{did_you_mean, from_toml_error, Diagnostic, Diagnostics, SourceFile};
use crate::probes;
use crate::spec;
use crate::spec::predicate::{self, template_strings};
use crate::spec::{
    template, BodySpec, CaptureSpec, Expect, JsonQuery, RequestSpec, SqlExpect, SqlSpec,
    StatusSpec, Step, StepAction, VarGen,
};

const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSkills {
    skill: Vec<RawSkill>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSkill {
    id: Spanned<String>,
    title: String,
    tier: Spanned<String>,
    article: String,
}

/// An exercise of the grader: its metadata, random data and the checks that grade each task of
/// its README (see exercises/AUTHORING.md).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "exercise.toml")]
pub(crate) struct RawExercise {
    /// The exercise's id: kebab-case, the same as its folder. Stable: reports and CI history
    /// name it.
    #[schemars(with = "String")]
    id: Spanned<String>,
    /// Shown in `grader exercises` and reports.
    title: String,
    /// One sentence: what the learner builds.
    summary: String,
    /// Skill areas (ids from `exercises/skills.toml`) this exercise grades; a check scores the
    /// first unless it names its own `skill`.
    #[schemars(with = "Vec<String>")]
    skills: Spanned<Vec<Spanned<String>>>,
    /// From 1 (easiest) to 10.
    #[schemars(with = "i64", range(min = 1, max = 10))]
    difficulty: Spanned<i64>,
    /// Ids of exercises to do first.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    prerequisites: Vec<Spanned<String>>,
    /// Random values generated once per run, named in templates as `{{name}}`: e.g.
    /// `sku = { gen = "sku" }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, spec::schema::VarGenSchema>")]
    vars: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    /// The checks, in the order they run; each has steps or a probe.
    #[serde(default)]
    check: Vec<RawCheck>,
    /// Mock upstreams the grader runs for the service (`[upstreams.NAME]`), by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, crate::upstream::spec::RawUpstream>")]
    upstreams: BTreeMap<Spanned<String>, toml::Value>,
    /// `[dataset]`: a schema file and a generator the grader loads before the service starts.
    #[schemars(with = "Option<crate::dataset::RawDataset>")]
    dataset: Option<toml::Value>,
    /// `[broker]`: the run starts a RabbitMQ for the service (see `BrokerSpec`).
    broker: Option<RawBroker>,
    /// What the service speaks: `http` (the default; ready once `health_path` answers 2xx) or
    /// `grpc` (h2c; ready once `grpc.health.v1.Health/Check` answers `SERVING`).
    #[serde(default)]
    protocol: super::Protocol,
    /// README requirement ids no check covers yet (see `exercise::coverage`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    untested: Vec<Spanned<String>>,
}

/// `[broker]`: the run starts a RabbitMQ broker for the service.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Broker")]
struct RawBroker {
    /// The variable the service finds the broker's URL in (`AMQP_URL` when absent).
    #[schemars(with = "Option<String>")]
    env: Option<Spanned<String>>,
}

/// A check: steps (`[[check.step]]`) or a probe (`probe` with `params`), graded pass or fail.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Check")]
pub(crate) struct RawCheck {
    /// Kebab-case, unique in the exercise; reports name the check `exercise/id`.
    #[schemars(with = "String")]
    id: Spanned<String>,
    /// What the check verifies, in a few words (shown to learners).
    title: String,
    /// The README task it grades: the number of a `### N. Title` heading.
    #[schemars(with = "Option<u32>")]
    task: Option<Spanned<u32>>,
    /// The skill it scores, one of the exercise's `skills` (default: the first).
    #[schemars(with = "Option<String>")]
    skill: Option<Spanned<String>>,
    /// From 1 to 100 (default 1).
    #[schemars(with = "Option<u32>", range(min = 1, max = 100))]
    points: Option<Spanned<u32>>,
    /// Why the behaviour matters, shown when the check fails.
    #[schemars(with = "String")]
    why: Spanned<String>,
    /// What to look at first, shown when the check fails.
    #[schemars(with = "String")]
    hint: Spanned<String>,
    /// Staged hints, nudge first and mechanism last; `grader lint` checks them.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    hints: Vec<Spanned<String>>,
    /// References (RFCs, docs) shown with a failure.
    #[serde(default)]
    spec: Vec<String>,
    /// Ids of earlier checks of this exercise that must pass first.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    requires: Vec<Spanned<String>>,
    /// Requirement ids of the README (`[pag-5.2]`) this check can fail.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    covers: Vec<Spanned<String>>,
    /// How long the check may take, e.g. "30s" (the default).
    #[schemars(with = "Option<String>")]
    timeout: Option<Spanned<String>>,
    /// The requests (or SQL statements) the check sends, in order, with what each must show.
    #[serde(default)]
    step: Vec<RawStep>,
    /// A built-in probe instead of steps; its parameters go in `params`.
    #[schemars(with = "Option<String>")]
    probe: Option<Spanned<String>>,
    /// The probe's parameters (the schema depends on `probe`).
    /// Not Spanned: toml 0.8 cannot span a table written with dotted keys (`params.x = 1`).
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    params: Option<toml::Value>,
    /// A mock upstream's behaviour and expected calls for a check with steps.
    #[schemars(with = "Option<probes::request::RawUpstream>")]
    upstream: Option<toml::Value>,
}

/// One request (or SQL statement) of a check, with what its answer must show.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Step")]
struct RawStep {
    /// Shown in messages (default: the request line).
    name: Option<String>,
    /// Send the step this many times in a row (each judged), e.g. to fill a list past its cap.
    #[schemars(with = "Option<u32>")]
    repeat: Option<Spanned<u32>>,
    /// The HTTP request to send.
    request: Option<RawRequest>,
    /// What the response must show.
    #[serde(default)]
    expect: RawExpect,
    /// Values taken from the response for later steps' templates, e.g.
    /// `capture.id = { json = "$.id" }` or `{ header = "Location" }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, spec::schema::CaptureSchema>")]
    capture: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    /// A white-box step on the service's database instead of a request. Not Spanned (dotted
    /// keys, `sql.query = ...`): located by its SQL text.
    sql: Option<RawSql>,
    /// From this step on, the route of `[check.upstream]` has this fault: `"500"`, `"reset"`,
    /// `"drop"` or `"timeout"`.
    #[schemars(with = "Option<String>")]
    upstream_fault: Option<Spanned<String>>,
}

/// SQL on the service's database: a `query` with expected columns, or a `statement` that must
/// be refused.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SqlStep")]
struct RawSql {
    /// A SELECT whose first row is judged by `expect`.
    query: Option<String>,
    /// A write that must be `refused`.
    statement: Option<String>,
    /// Values of `$1`, `$2`... (templates).
    #[serde(default)]
    params: Vec<String>,
    /// Column name → predicate on its value in the first row.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    expect: BTreeMap<String, toml::Value>,
    /// The SQLSTATE class (`23`) or code (`23514`) the statement must fail with.
    refused: Option<String>,
    /// Variable name → column of the row a `query` found, for later steps: a count before a
    /// request, compared after it (`pg_stat_statements` calls: nothing ran for a refused query).
    #[serde(default)]
    capture: BTreeMap<String, String>,
}

/// An HTTP request (path, headers and body are templates).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "StepRequest")]
struct RawRequest {
    /// GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS.
    #[schemars(with = "String")]
    method: Spanned<String>,
    /// Starts with `/` (or is a captured URL like `{{location}}`).
    #[schemars(with = "String")]
    path: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    headers: BTreeMap<String, Spanned<String>>,
    /// A JSON body (templates allowed in strings); or `body` for raw text.
    #[schemars(with = "Option<serde_json::Value>")]
    json: Option<Spanned<toml::Value>>,
    /// A raw body.
    #[schemars(with = "Option<String>")]
    body: Option<Spanned<String>>,
}

/// What a response must show.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Expect")]
struct RawExpect {
    /// A status (`201`), a class (`"4xx"`) or a list of them.
    #[schemars(with = "Option<spec::schema::StatusSchema>")]
    status: Option<Spanned<toml::Value>>,
    /// Header name → predicate on its value.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    headers: BTreeMap<String, Spanned<toml::Value>>,
    /// JSONPath (`$.id`) → predicate on the value it selects.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    json: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    /// A predicate on the raw body.
    #[schemars(with = "Option<serde_json::Value>")]
    body: Option<Spanned<toml::Value>>,
    /// The response must have no body.
    #[schemars(with = "Option<bool>")]
    no_body: Option<Spanned<bool>>,
}

/// Loads and validates the whole catalogue. All problems in all files are reported together.
pub fn load_catalog(source: &ExerciseSource) -> Result<Catalog, Diagnostics> {
    let mut diags = Diagnostics::default();
    let skills = load_skills(source, &mut diags);
    let dirs = source.exercise_dirs().map_err(|e| {
        Diagnostics::from(Diagnostic::new(
            &SourceFile::new(source.describe(), ""),
            0..0,
            format!("cannot list exercises: {e}"),
        ))
    })?;
    let mut exercises = Vec::new();
    for dir in &dirs {
        if let Some(ex) = load_exercise(source, dir, &skills, &mut diags) {
            exercises.push(ex);
        }
    }
    // Prerequisites can only be checked once every exercise is known.
    let ids: BTreeSet<String> = exercises.iter().map(|e| e.id.clone()).collect();
    for ex in &exercises {
        for p in &ex.prerequisites {
            if !ids.contains(p) {
                let span = find_span(&ex.file, &format!("\"{p}\""));
                diags.push(
                    Diagnostic::new(&ex.file, span, format!("unknown prerequisite \"{p}\""))
                        .with_help(format!(
                            "known exercises: {}",
                            ids.iter().cloned().collect::<Vec<_>>().join(", ")
                        )),
                );
            }
        }
    }
    diags.into_result(Catalog { skills, exercises })
}

fn read(source: &ExerciseSource, rel: &str, diags: &mut Diagnostics) -> Option<SourceFile> {
    let name = source.display_name(rel);
    match source.read(rel) {
        Ok(Some(text)) => Some(SourceFile::new(name, text)),
        Ok(None) => {
            diags.push(Diagnostic::new(
                &SourceFile::new(name, ""),
                0..0,
                format!("{rel} is missing"),
            ));
            None
        }
        Err(e) => {
            diags.push(Diagnostic::new(
                &SourceFile::new(name, ""),
                0..0,
                format!("cannot read {rel}: {e}"),
            ));
            None
        }
    }
}

fn load_skills(source: &ExerciseSource, diags: &mut Diagnostics) -> Vec<Skill> {
    let Some(file) = read(source, "skills.toml", diags) else {
        return Vec::new();
    };
    let raw: RawSkills = match toml::from_str(&file.text) {
        Ok(r) => r,
        Err(e) => {
            diags.push(from_toml_error(&file, &e));
            return Vec::new();
        }
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in raw.skill {
        if !is_kebab(s.id.get_ref()) {
            diags.push(kebab_error(&file, &s.id, "skill id"));
        }
        if !seen.insert(s.id.get_ref().clone()) {
            diags.push(Diagnostic::new(
                &file,
                s.id.span(),
                format!("duplicate skill id \"{}\"", s.id.get_ref()),
            ));
        }
        if !["core", "next"].contains(&s.tier.get_ref().as_str()) {
            diags.push(
                Diagnostic::new(
                    &file,
                    s.tier.span(),
                    format!("unknown tier \"{}\"", s.tier.get_ref()),
                )
                .with_help("use \"core\" (graded first) or \"next\""),
            );
        }
        out.push(Skill {
            id: s.id.into_inner(),
            title: s.title,
            tier: s.tier.into_inner(),
            article: s.article,
        });
    }
    out
}

fn load_exercise(
    source: &ExerciseSource,
    dir: &str,
    skills: &[Skill],
    diags: &mut Diagnostics,
) -> Option<Exercise> {
    let file = read(source, &format!("{dir}/exercise.toml"), diags)?;
    let readme = read(source, &format!("{dir}/README.md"), diags);
    let raw: RawExercise = match toml::from_str(&file.text) {
        Ok(r) => r,
        Err(e) => {
            diags.push(from_toml_error(&file, &e));
            return None;
        }
    };
    let before = diags.0.len();

    if raw.id.get_ref() != dir {
        diags.push(
            Diagnostic::new(
                &file,
                raw.id.span(),
                format!(
                    "exercise id \"{}\" differs from its folder \"{dir}\"",
                    raw.id.get_ref()
                ),
            )
            .with_help(format!(
                "set id = \"{dir}\" (ids are stable: they appear in reports and CI history)"
            )),
        );
    }
    let skill_ids: Vec<&str> = skills.iter().map(|s| s.id.as_str()).collect();
    if raw.skills.get_ref().is_empty() {
        diags.push(
            Diagnostic::new(&file, raw.skills.span(), "`skills` is empty")
                .with_help("name the skill areas this exercise grades"),
        );
    }
    for s in raw.skills.get_ref() {
        if !skill_ids.contains(&s.get_ref().as_str()) {
            diags.push(unknown_name(&file, s, "skill", &skill_ids, "skills.toml"));
        }
    }
    let ex_skills: Vec<String> = raw
        .skills
        .get_ref()
        .iter()
        .map(|s| s.get_ref().clone())
        .collect();
    if !(1..=10).contains(raw.difficulty.get_ref()) {
        diags.push(Diagnostic::new(
            &file,
            raw.difficulty.span(),
            "`difficulty` must be from 1 (easiest) to 10",
        ));
    }

    let tasks = readme
        .as_ref()
        .map(|r| parse_tasks(&r.text))
        .unwrap_or_default();
    if let Some(r) = &readme {
        if tasks.is_empty() {
            diags.push(
                Diagnostic::new(r, 0..0, "the task statement has no numbered tasks")
                    .with_help("write each task as a heading like `### 2. Create a product`; checks link to them with `task = 2`"),
            );
        }
    }

    let mut upstreams = Vec::new();
    for (name, value) in &raw.upstreams {
        match crate::upstream::spec::parse(name.get_ref(), value) {
            Ok(u) => upstreams.push(u),
            Err(msg) => diags.push(
                Diagnostic::new(&file, name.span(), msg)
                    .with_help("mock upstreams are described in exercises/AUTHORING.md"),
            ),
        }
    }
    let issuers: Vec<String> = upstreams
        .iter()
        .filter(|u| matches!(u.kind, crate::upstream::UpstreamKind::OidcIssuer { .. }))
        .map(|u| u.name.clone())
        .collect();
    // A token's templates name the other variables, which are generated before it is minted.
    let plain_vars: BTreeSet<String> = raw
        .vars
        .iter()
        .filter(|(_, v)| v.get_ref().get("gen").and_then(|g| g.as_str()) != Some("jwt"))
        .map(|(n, _)| n.get_ref().clone())
        .collect();
    let mut vars = Vec::new();
    for (name, value) in raw.vars {
        if !is_identifier(name.get_ref()) {
            diags.push(
                Diagnostic::new(
                    &file,
                    name.span(),
                    format!("\"{}\" is not a variable name", name.get_ref()),
                )
                .with_help("use letters, digits and _"),
            );
            continue;
        }
        match parse_var(value.get_ref(), &issuers) {
            Ok(g) => {
                if let Some(jwt) = g.jwt() {
                    let names = jwt.template_strings().unwrap_or_default();
                    let plain = &plain_vars;
                    report_unknown(&file, value.span(), &names, plain, diags);
                }
                vars.push((name.into_inner(), g))
            }
            Err(msg) => {
                let jwt = value.get_ref().get("gen").and_then(|g| g.as_str()) == Some("jwt");
                let help = if jwt { JWT_HELP } else { VAR_HELP };
                diags.push(Diagnostic::new(&file, value.span(), msg).with_help(help))
            }
        }
    }
    let var_names: BTreeSet<String> = vars.iter().map(|(n, _)| n.clone()).collect();

    let broker = raw.broker.as_ref().map(|b| {
        let env = b.env.as_ref().map_or_else(
            || super::DEFAULT_BROKER_ENV.to_string(),
            |e| e.get_ref().clone(),
        );
        let valid = !env.is_empty()
            && env
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && !env.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            let span = b.env.as_ref().map_or(0..0, |e| e.span());
            diags.push(
                Diagnostic::new(
                    &file,
                    span,
                    format!("`{env}` is not an environment variable name"),
                )
                .with_help("use capitals, digits and underscores, e.g. env = \"AMQP_URL\""),
            );
        }
        super::BrokerSpec { env }
    });

    let dataset = match &raw.dataset {
        None => None,
        Some(v) => match crate::dataset::parse(v, |name| {
            source.read(&format!("{dir}/{name}")).ok().flatten()
        }) {
            Ok(d) => Some(d),
            Err(msg) => {
                let span = find_span(&file, "[dataset]");
                diags.push(
                    Diagnostic::new(&file, span, msg)
                        .with_help("data sets are described in exercises/AUTHORING.md"),
                );
                None
            }
        },
    };

    let mut checks = Vec::new();
    let mut check_ids: Vec<String> = Vec::new();
    for c in raw.check {
        // toml 0.8 cannot wrap a struct read from dotted keys in Spanned, so a check is located
        // by its id.
        let span = c.id.span();
        if let Some(check) = parse_check(
            &file, c, span, &ex_skills, &tasks, &var_names, &check_ids, diags,
        ) {
            check_ids.push(check.id.clone());
            checks.push(check);
        }
    }
    // Files of the exercise's folder a probe reads (a `.proto`), read and checked now.
    for check in &mut checks {
        if let CheckBody::Probe(call) = &mut check.body {
            let loaded = call
                .load_exercise_files(|name| source.read(&format!("{dir}/{name}")).ok().flatten());
            if let Err(msg) = loaded {
                let span = find_span(&file, &format!("id = \"{}\"", check.id));
                diags
                    .push(Diagnostic::new(&file, span, msg).with_help(
                        "the file sits in the exercise's folder, next to exercise.toml",
                    ));
            }
        }
    }
    if broker.is_none() {
        for check in &checks {
            if let CheckBody::Probe(call) = &check.body {
                if call.uses_broker() {
                    let span = find_span(&file, &format!("id = \"{}\"", check.id));
                    diags.push(
                        Diagnostic::new(
                            &file,
                            span,
                            format!(
                                "check \"{}\" uses the `{}` probe, which needs the run's RabbitMQ",
                                check.id,
                                call.name()
                            ),
                        )
                        .with_help("add a `[broker]` table (env = \"AMQP_URL\") to the exercise"),
                    );
                }
            }
        }
    }

    let jwt_vars: BTreeSet<String> = vars
        .iter()
        .filter(|(_, g)| g.jwt().is_some())
        .map(|(n, _)| n.clone())
        .collect();
    for c in &mut checks {
        c.tokens = check_variables(&c.body)
            .into_iter()
            .filter(|n| jwt_vars.contains(n))
            .collect();
    }
    for c in &checks {
        let used = match &c.body {
            CheckBody::Probe(call) => call.upstream(),
            CheckBody::Steps(_) => c.upstream.as_ref(),
        };
        {
            let problem = used.and_then(|u| probes::request::check_upstream_ref(u, &upstreams));
            if let Some(msg) = problem {
                let span = find_span(&file, &format!("\"{}\"", c.id));
                diags.push(Diagnostic::new(&file, span, msg));
            }
        }
    }
    if checks.is_empty() && diags.0.len() == before {
        diags.push(
            Diagnostic::new(&file, 0..0, "the exercise has no checks")
                .with_help("add a [[check]] table"),
        );
    }

    (diags.0.len() == before).then(|| Exercise {
        id: raw.id.into_inner(),
        title: raw.title,
        summary: raw.summary,
        skills: ex_skills,
        difficulty: *raw.difficulty.get_ref() as u8,
        prerequisites: raw
            .prerequisites
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
        tasks,
        vars,
        checks,
        upstreams,
        dataset,
        broker,
        protocol: raw.protocol,
        requirements: readme
            .as_ref()
            .map(|r| coverage::requirements(&r.text))
            .unwrap_or_default(),
        readme,
        untested: raw
            .untested
            .into_iter()
            .map(|s| IdRef {
                span: s.span(),
                id: s.into_inner(),
            })
            .collect(),
        file,
    })
}

#[allow(clippy::too_many_arguments)]
fn parse_check(
    file: &SourceFile,
    c: RawCheck,
    span: Range<usize>,
    ex_skills: &[String],
    tasks: &[Task],
    vars: &BTreeSet<String>,
    earlier: &[String],
    diags: &mut Diagnostics,
) -> Option<Check> {
    let before = diags.0.len();
    let id = c.id.get_ref().clone();
    if !is_kebab(&id) {
        diags.push(kebab_error(file, &c.id, "check id"));
    }
    if earlier.contains(&id) {
        diags.push(
            Diagnostic::new(file, c.id.span(), format!("duplicate check id \"{id}\""))
                .with_help("check ids must be unique within an exercise"),
        );
    }
    let skill = match &c.skill {
        Some(s) if !ex_skills.contains(s.get_ref()) => {
            let names: Vec<&str> = ex_skills.iter().map(String::as_str).collect();
            diags.push(unknown_name(
                file,
                s,
                "skill",
                &names,
                "this exercise's `skills`",
            ));
            String::new()
        }
        Some(s) => s.get_ref().clone(),
        None => ex_skills.first().cloned().unwrap_or_default(),
    };
    if let Some(t) = &c.task {
        if !tasks.iter().any(|task| task.number == *t.get_ref()) {
            let known: Vec<String> = tasks.iter().map(|t| t.number.to_string()).collect();
            diags.push(
                Diagnostic::new(
                    file,
                    t.span(),
                    format!("task {} is not in the exercise README", t.get_ref()),
                )
                .with_help(format!(
                    "the README's numbered tasks are: {}",
                    known.join(", ")
                )),
            );
        }
    }
    let points = match &c.points {
        Some(p) if !(1..=100).contains(p.get_ref()) => {
            diags.push(Diagnostic::new(
                file,
                p.span(),
                "`points` must be from 1 to 100",
            ));
            1
        }
        Some(p) => *p.get_ref(),
        None => 1,
    };
    for (text, what) in [(&c.why, "why"), (&c.hint, "hint")] {
        if text.get_ref().trim().is_empty() {
            diags.push(
                Diagnostic::new(file, text.span(), format!("`{what}` is empty")).with_help(
                    "learners read this when the check fails: say it in one or two sentences",
                ),
            );
        }
    }
    for r in &c.requires {
        if !earlier.contains(r.get_ref()) {
            diags.push(
                Diagnostic::new(
                    file,
                    r.span(),
                    format!(
                        "`requires` names \"{}\", which is not an earlier check of this exercise",
                        r.get_ref()
                    ),
                )
                .with_help("a check can only require checks defined above it"),
            );
        }
    }
    let timeout = match &c.timeout {
        Some(t) => match humantime::parse_duration(t.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            _ => {
                diags.push(
                    Diagnostic::new(
                        file,
                        t.span(),
                        format!("`timeout` is not a duration: \"{}\"", t.get_ref()),
                    )
                    .with_help("write e.g. \"30s\""),
                );
                DEFAULT_CHECK_TIMEOUT
            }
        },
        None => DEFAULT_CHECK_TIMEOUT,
    };

    let mut step_faults = Vec::new();
    let body = match (c.step.is_empty(), &c.probe) {
        (false, Some(p)) => {
            diags.push(
                Diagnostic::new(
                    file,
                    p.span(),
                    "a check has either steps or a probe, not both",
                )
                .with_help("split it into two checks"),
            );
            None
        }
        (true, None) => {
            diags.push(
                Diagnostic::new(
                    file,
                    c.id.span(),
                    format!("check \"{id}\" has neither steps nor a probe"),
                )
                .with_help("add [[check.step]] tables, or probe = \"name\" with params"),
            );
            None
        }
        (true, Some(p)) => match probes::parse(p.get_ref(), c.params.as_ref()) {
            Ok(call) => {
                let mut scope = vars.clone();
                scope.extend(call.captured_names());
                check_templates(
                    file,
                    span.clone(),
                    call.template_strings().iter().map(String::as_str),
                    &scope,
                    diags,
                );
                Some(CheckBody::Probe(call))
            }
            Err(msg) => {
                diags.push(
                    Diagnostic::new(file, p.span(), msg)
                        .with_help("probes and their params are listed in exercises/AUTHORING.md"),
                );
                None
            }
        },
        (false, None) => {
            if c.params.is_some() {
                diags.push(Diagnostic::new(
                    file,
                    span.clone(),
                    "`params` only goes with `probe`",
                ));
            }
            let mut scope: BTreeSet<String> = vars.clone();
            let mut steps = Vec::new();
            for (i, mut raw) in c.step.into_iter().enumerate() {
                if let Some(fault) = raw.upstream_fault.take() {
                    step_faults.push((i, fault));
                }
                if let Some(step) = parse_step(file, raw, i, &mut scope, diags) {
                    steps.push(step);
                }
            }
            Some(CheckBody::Steps(steps))
        }
    };

    let upstream_faults = step_upstream_faults(file, step_faults, c.upstream.is_some(), diags);
    let upstream = match (c.upstream, &body) {
        (None, _) => None,
        (Some(_), Some(CheckBody::Probe(_))) => {
            diags.push(
                Diagnostic::new(
                    file,
                    span.clone(),
                    "`upstream` on a check goes with steps; a probe takes `params.upstream`",
                )
                .with_help("move it to [check.params.upstream]"),
            );
            None
        }
        (Some(v), _) => match probes::request::upstream(v) {
            Ok(u) => {
                let strings = probes::request::template_strings(&[], Some(&u));
                let mut scope = vars.clone();
                if let Some(CheckBody::Steps(steps)) = &body {
                    scope.extend(steps.iter().flat_map(Step::captured_names));
                }
                check_templates(
                    file,
                    span.clone(),
                    strings.iter().map(String::as_str),
                    &scope,
                    diags,
                );
                Some(u)
            }
            Err(msg) => {
                diags.push(
                    Diagnostic::new(
                        file,
                        span.clone(),
                        msg.replace("params.upstream", "check.upstream"),
                    )
                    .with_help(
                        "the table is described under Mock upstreams in exercises/AUTHORING.md",
                    ),
                );
                None
            }
        },
    };

    if diags.0.len() > before {
        return None;
    }
    Some(Check {
        id,
        title: c.title,
        task: c.task.map(Spanned::into_inner),
        skill,
        points,
        why: c.why.into_inner(),
        hint: c.hint.into_inner(),
        hints: c
            .hints
            .into_iter()
            .map(|s| super::HintStage {
                span: s.span(),
                text: s.into_inner(),
            })
            .collect(),
        spec: c.spec,
        requires: c.requires.into_iter().map(Spanned::into_inner).collect(),
        covers: c
            .covers
            .into_iter()
            .map(|s| IdRef {
                span: s.span(),
                id: s.into_inner(),
            })
            .collect(),
        span,
        timeout,
        body: body?,
        upstream,
        upstream_faults,
        tokens: Vec::new(),
    })
}

/// Every variable a check's templates name (requests, expectations, probe parameters).
fn check_variables(body: &CheckBody) -> BTreeSet<String> {
    let mut strings: Vec<String> = Vec::new();
    let mut json: Vec<&serde_json::Value> = Vec::new();
    match body {
        CheckBody::Probe(call) => strings = call.template_strings(),
        CheckBody::Steps(steps) => {
            for step in steps {
                let (r, e) = match &step.action {
                    StepAction::Http { request, expect } => (request, expect),
                    StepAction::Sql(sql) => {
                        strings.extend(sql.params.iter().cloned());
                        if let SqlExpect::Row(columns) = &sql.expect {
                            for (_, p) in columns {
                                strings.extend(template_strings(p).into_iter().map(str::to_string));
                            }
                        }
                        continue;
                    }
                };
                strings.push(r.path.clone());
                strings.extend(r.headers.iter().map(|(_, v)| v.clone()));
                match &r.body {
                    Some(BodySpec::Json(v)) => json.push(v),
                    Some(BodySpec::Raw(text)) => strings.push(text.clone()),
                    None => {}
                }
                let predicates = e
                    .headers
                    .iter()
                    .map(|(_, p)| p)
                    .chain(e.json.iter().map(|(_, p)| p))
                    .chain(&e.body);
                for p in predicates {
                    strings.extend(template_strings(p).into_iter().map(str::to_string));
                }
            }
        }
    }
    let mut names: BTreeSet<String> = strings
        .iter()
        .flat_map(|s| template::variables(s).unwrap_or_default())
        .collect();
    for v in json {
        names.extend(template::variables_in_json(v).unwrap_or_default());
    }
    names
}

/// The steps' `upstream_fault`s, each located when it is not a fault or the check has no
/// `[check.upstream]` route for it to change.
fn step_upstream_faults(
    file: &SourceFile,
    raw: Vec<(usize, Spanned<String>)>,
    has_upstream: bool,
    diags: &mut Diagnostics,
) -> Vec<(usize, crate::upstream::Fault)> {
    let mut faults = Vec::new();
    for (index, text) in raw {
        if !has_upstream {
            diags.push(
                Diagnostic::new(
                    file,
                    text.span(),
                    "`upstream_fault` changes the route of [check.upstream], which this check does not have",
                )
                .with_help("add [check.upstream] with the upstream's name and route (and the fault the first steps see)"),
            );
            continue;
        }
        match crate::upstream::Fault::parse(text.get_ref()) {
            Ok(fault) => faults.push((index, fault)),
            Err(msg) => diags.push(
                Diagnostic::new(file, text.span(), msg)
                    .with_help("a status such as \"500\", or \"reset\", \"drop\" or \"timeout\""),
            ),
        }
    }
    faults
}

fn parse_step(
    file: &SourceFile,
    s: RawStep,
    index: usize,
    scope: &mut BTreeSet<String>,
    diags: &mut Diagnostics,
) -> Option<Step> {
    let before = diags.0.len();
    let r = match (s.request, s.sql) {
        (Some(r), None) => r,
        (None, Some(sql)) => {
            if let Some((name, _)) = s.capture.first_key_value() {
                diags.push(
                    Diagnostic::new(
                        file,
                        name.span(),
                        "an sql step captures with sql.capture (a variable = a column), not capture",
                    )
                    .with_help("e.g. sql.capture.calls_before = \"calls\""),
                );
                return None;
            }
            return parse_sql_step(file, s.name, sql, index, scope, diags);
        }
        (Some(r), Some(_)) => {
            diags.push(
                Diagnostic::new(
                    file,
                    r.method.span(),
                    "a step has `request` or `sql`, not both",
                )
                .with_help("split it into two steps"),
            );
            return None;
        }
        (None, None) => {
            diags.push(
                Diagnostic::new(
                    file,
                    0..0,
                    format!("step {} has neither `request` nor `sql`", index + 1),
                )
                .with_help("add request.method and request.path, or an sql table"),
            );
            return None;
        }
    };

    let method = r.method.get_ref().clone();
    if !METHODS.contains(&method.as_str()) && !method.chars().all(|c| c.is_ascii_uppercase()) {
        diags.push(
            Diagnostic::new(
                file,
                r.method.span(),
                format!("\"{method}\" is not an HTTP method"),
            )
            .with_help(format!(
                "use one of {} (or another upper-case token)",
                METHODS.join(", ")
            )),
        );
    }
    let path = r.path.get_ref().clone();
    if !(path.starts_with('/') || path.starts_with("{{")) {
        diags.push(Diagnostic::new(
            file,
            r.path.span(),
            "`path` must start with `/` (or be a captured URL like \"{{location}}\")",
        ));
    }
    check_templates(file, r.path.span(), [path.as_str()], scope, diags);
    let mut headers = Vec::new();
    for (name, value) in r.headers {
        check_templates(file, value.span(), [value.get_ref().as_str()], scope, diags);
        headers.push((name, value.into_inner()));
    }
    let body = match (r.json, r.body) {
        (Some(_), Some(b)) => {
            diags.push(Diagnostic::new(
                file,
                b.span(),
                "a request has `json` or `body`, not both",
            ));
            None
        }
        (Some(j), None) => match predicate::to_json(j.get_ref()) {
            Ok(v) => {
                match template::variables_in_json(&v) {
                    Ok(names) => report_unknown(file, j.span(), &names, scope, diags),
                    Err(msg) => diags.push(Diagnostic::new(file, j.span(), msg)),
                }
                Some(BodySpec::Json(v))
            }
            Err(msg) => {
                diags.push(Diagnostic::new(file, j.span(), msg));
                None
            }
        },
        (None, Some(b)) => {
            check_templates(file, b.span(), [b.get_ref().as_str()], scope, diags);
            Some(BodySpec::Raw(b.into_inner()))
        }
        (None, None) => None,
    };

    let repeat = match s.repeat {
        None => 1,
        Some(n) if (1..=MAX_STEP_REPEAT).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => {
            diags.push(
                Diagnostic::new(
                    file,
                    n.span(),
                    format!("`repeat` must be from 1 to {MAX_STEP_REPEAT}"),
                )
                .with_help("e.g. repeat = 101 to create one item more than a documented cap"),
            );
            1
        }
    };
    let expect = parse_expect(file, s.expect, scope, diags);
    let mut captures = Vec::new();
    for (name, cap) in s.capture {
        if !is_identifier(name.get_ref()) {
            diags.push(Diagnostic::new(
                file,
                name.span(),
                format!("\"{}\" is not a variable name", name.get_ref()),
            ));
            continue;
        }
        let table = cap.get_ref().as_table();
        let field = |k: &str| table.and_then(|t| t.get(k)).and_then(|v| v.as_str());
        let spec = match (table.map(|t| t.len()), field("header"), field("json")) {
            (Some(1), Some(h), None) => Some(CaptureSpec::Header(h.to_string())),
            (Some(1), None, Some(j)) => {
                json_query(file, cap.span(), j, diags).map(CaptureSpec::Json)
            }
            _ => {
                diags.push(
                    Diagnostic::new(
                        file,
                        cap.span(),
                        "a capture takes exactly one of `header` or `json`",
                    )
                    .with_help("e.g. id = { json = \"$.id\" }"),
                );
                None
            }
        };
        if let Some(spec) = spec {
            scope.insert(name.get_ref().clone());
            captures.push((name.into_inner(), spec));
        }
    }
    if diags.0.len() > before {
        return None;
    }
    Some(Step {
        name: s.name.unwrap_or_else(|| format!("step {}", index + 1)),
        action: StepAction::Http {
            request: RequestSpec {
                method,
                path,
                headers,
                body,
            },
            expect,
        },
        captures,
        repeat,
    })
}

/// `sql = { query = "...", params = [...], expect.column = ... }` or `sql = { statement = "...",
/// params = [...], refused = "23" }`.
fn parse_sql_step(
    file: &SourceFile,
    name: Option<String>,
    raw: RawSql,
    index: usize,
    scope: &mut BTreeSet<String>,
    diags: &mut Diagnostics,
) -> Option<Step> {
    let text = raw
        .query
        .as_deref()
        .or(raw.statement.as_deref())
        .unwrap_or("sql");
    let span = find_span(file, text.lines().next().unwrap_or(text));
    let before = diags.0.len();
    let mut error = |msg: String, help: &str| {
        diags.push(Diagnostic::new(file, span.clone(), msg).with_help(help.to_string()));
    };
    let (statement, expect) = match (raw.query, raw.statement) {
        (Some(query), None) => {
            if raw.refused.is_some() {
                error(
                    "`refused` goes with `statement` (a write the database must refuse), not with `query`".into(),
                    "write sql.statement = \"UPDATE ...\" with sql.refused = \"23\"",
                );
            }
            if raw.expect.is_empty() && raw.capture.is_empty() {
                error(
                    "an sql query needs `expect` or `capture`: a query that is neither judged nor kept measures nothing"
                        .into(),
                    "e.g. sql.expect.balance_cents = \"{{amount}}\"",
                );
            }
            let mut columns = Vec::new();
            for (column, value) in &raw.expect {
                match predicate::parse(value) {
                    Ok(p) => columns.push((column.clone(), p)),
                    Err(msg) => error(
                        format!("sql.expect.{column}: {msg}"),
                        "see Predicates in exercises/AUTHORING.md",
                    ),
                }
            }
            (query, SqlExpect::Row(columns))
        }
        (None, Some(statement)) => {
            if !raw.expect.is_empty() || !raw.capture.is_empty() {
                error(
                    "`expect` and `capture` go with `query`; a `statement` is judged by `refused`"
                        .into(),
                    "write sql.refused = \"23\" (the SQLSTATE class PostgreSQL must refuse it with)",
                );
            }
            let refused = raw.refused.unwrap_or_default();
            let valid = (refused.len() == 2 || refused.len() == 5)
                && refused
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase());
            if !valid {
                error(
                    format!("sql.refused must be an SQLSTATE class or code (\"23\", \"23514\"), not \"{refused}\""),
                    "a statement is run in a transaction the grader rolls back, and must be refused with this SQLSTATE",
                );
            }
            (statement, SqlExpect::Refused(refused))
        }
        _ => {
            error(
                "an sql step has exactly one of `query` (read and judge a row) or `statement` (a write that must be refused)".into(),
                "see White-box steps in exercises/AUTHORING.md",
            );
            return None;
        }
    };
    for variable in raw.capture.keys() {
        if !is_identifier(variable) {
            error(
                format!("\"{variable}\" is not a variable name"),
                "e.g. sql.capture.calls_before = \"calls\"",
            );
        }
    }
    let highest = SQL_PARAM
        .captures_iter(&statement)
        .filter_map(|c| c[1].parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    if highest != raw.params.len() {
        error(
            format!(
                "the SQL names {highest} parameter(s) ($1 to ${highest}) but `params` has {}",
                raw.params.len()
            ),
            "pass every value as a parameter (they are sent as text: cast in the SQL, e.g. id::text = $1), never inside the SQL",
        );
    }
    if statement.contains("{{") {
        error(
            "templates cannot go inside SQL: a value the service chose could change the statement"
                .into(),
            "write $1 in the SQL and the template in `params`",
        );
    }
    check_templates(
        file,
        span.clone(),
        raw.params.iter().map(String::as_str),
        scope,
        diags,
    );
    if let SqlExpect::Row(columns) = &expect {
        for (_, p) in columns {
            check_templates(file, span.clone(), template_strings(p), scope, diags);
        }
    }
    if diags.0.len() > before {
        return None;
    }
    scope.extend(raw.capture.keys().cloned());
    Some(Step {
        name: name.unwrap_or_else(|| format!("step {}", index + 1)),
        action: StepAction::Sql(SqlSpec {
            statement,
            params: raw.params,
            captures: raw.capture.into_iter().collect(),
            expect,
        }),
        captures: Vec::new(),
        repeat: 1,
    })
}

/// `$1`, `$2`, ... in SQL text.
static SQL_PARAM: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"\$(\d+)").expect("valid regex"));

/// Enough to go one past any documented list cap; more would make a check slow, not stronger.
const MAX_STEP_REPEAT: u32 = 1000;

fn parse_expect(
    file: &SourceFile,
    e: RawExpect,
    scope: &BTreeSet<String>,
    diags: &mut Diagnostics,
) -> Expect {
    let mut out = Expect::default();
    if let Some(no_body) = &e.no_body {
        out.no_body = *no_body.get_ref();
        if out.no_body && (!e.json.is_empty() || e.body.is_some()) {
            diags.push(
                Diagnostic::new(file, no_body.span(), "`no_body = true` cannot go with `json` or `body` expectations")
                    .with_help("a response without a body has no JSON to judge: check the body in another step"),
            );
        }
    }
    if let Some(s) = e.status {
        match StatusSpec::parse(s.get_ref()) {
            Ok(spec) => out.status = Some(spec),
            Err(msg) => diags.push(
                Diagnostic::new(file, s.span(), msg).with_help("write 201, [200, 201] or \"4xx\""),
            ),
        }
    }
    for (name, value) in e.headers {
        if let Some(p) = predicate_at(file, &value, scope, diags) {
            out.headers.push((name.to_ascii_lowercase(), p));
        }
    }
    for (path, value) in e.json {
        let q = json_query(file, path.span(), path.get_ref(), diags);
        let p = predicate_at(file, &value, scope, diags);
        if let (Some(q), Some(p)) = (q, p) {
            out.json.push((q, p));
        }
    }
    if let Some(b) = e.body {
        out.body = predicate_at(file, &b, scope, diags);
    }
    out
}

fn predicate_at(
    file: &SourceFile,
    value: &Spanned<toml::Value>,
    scope: &BTreeSet<String>,
    diags: &mut Diagnostics,
) -> Option<predicate::Predicate> {
    match predicate::parse(value.get_ref()) {
        Ok(p) => {
            check_templates(file, value.span(), template_strings(&p), scope, diags);
            Some(p)
        }
        Err(msg) => {
            diags.push(Diagnostic::new(file, value.span(), msg));
            None
        }
    }
}

fn json_query(
    file: &SourceFile,
    span: Range<usize>,
    text: &str,
    diags: &mut Diagnostics,
) -> Option<JsonQuery> {
    match JsonPath::parse(text) {
        Ok(path) => Some(JsonQuery {
            text: text.to_string(),
            path,
        }),
        Err(e) => {
            diags.push(
                Diagnostic::new(
                    file,
                    span,
                    format!("\"{text}\" is not a valid JSONPath: {e}"),
                )
                .with_help(
                    "JSONPath (RFC 9535) starts with `$`, e.g. \"$.id\" or \"$.errors[0].pointer\"",
                ),
            );
            None
        }
    }
}

fn check_templates<'a>(
    file: &SourceFile,
    span: Range<usize>,
    strings: impl IntoIterator<Item = &'a str>,
    scope: &BTreeSet<String>,
    diags: &mut Diagnostics,
) {
    for s in strings {
        match template::variables(s) {
            Ok(names) => report_unknown(file, span.clone(), &names, scope, diags),
            Err(msg) => diags.push(Diagnostic::new(file, span.clone(), msg)),
        }
    }
}

fn report_unknown(
    file: &SourceFile,
    span: Range<usize>,
    names: &[String],
    scope: &BTreeSet<String>,
    diags: &mut Diagnostics,
) {
    for n in names {
        if !scope.contains(n) {
            let help = match did_you_mean(n, scope.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{{{{{s}}}}}`?"),
                None => "define it under [vars], or capture it in an earlier step of this check"
                    .to_string(),
            };
            diags.push(
                Diagnostic::new(
                    file,
                    span.clone(),
                    format!("variable `{n}` is not defined here"),
                )
                .with_help(help),
            );
        }
    }
}

const VAR_HELP: &str = "write e.g. { gen = \"sku\" }, { gen = \"words\", count = 3 }, { gen = \"int\", min = 1, max = 100 }, { gen = \"uuid\" }, { gen = \"email\" }, { gen = \"slug\" }, { gen = \"pick\", values = [\"a\", \"b\"] }, { gen = \"repeat\", text = \"é\", count = 200 } or { gen = \"jwt\", sub = \"{{user}}\" }";

const JWT_HELP: &str = "write e.g. { gen = \"jwt\", sub = \"{{user}}\", roles = [\"admin\"], expires_in = \"5m\" }; tokens are described in exercises/AUTHORING.md (\"Tokens from the mock OpenID issuer\")";

fn parse_var(v: &toml::Value, issuers: &[String]) -> Result<VarGen, String> {
    let t = v
        .as_table()
        .ok_or("a variable is a table like { gen = \"sku\" }")?;
    let gen = t
        .get("gen")
        .and_then(|g| g.as_str())
        .ok_or("a variable needs `gen`")?;
    if gen == "jwt" {
        return crate::spec::token::parse(t, issuers).map(|s| VarGen::Jwt(Box::new(s)));
    }
    let allowed: &[&str] = match gen {
        "words" => &["gen", "count"],
        "int" => &["gen", "min", "max"],
        "pick" => &["gen", "values"],
        "repeat" => &["gen", "text", "count"],
        _ => &["gen"],
    };
    if let Some(extra) = t.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("`{extra}` does not apply to gen = \"{gen}\""));
    }
    let int = |k: &str| t.get(k).and_then(|v| v.as_integer());
    Ok(match gen {
        "sku" => VarGen::Sku,
        "uuid" => VarGen::Uuid,
        "email" => VarGen::Email,
        "slug" => VarGen::Slug,
        "words" => {
            let count = int("count").unwrap_or(2);
            if !(1..=20).contains(&count) {
                return Err("`count` must be from 1 to 20".into());
            }
            VarGen::Words {
                count: count as usize,
            }
        }
        "int" => {
            let (Some(min), Some(max)) = (int("min"), int("max")) else {
                return Err("gen = \"int\" needs integer `min` and `max`".into());
            };
            if min > max {
                return Err(format!("`min` ({min}) is greater than `max` ({max})"));
            }
            VarGen::Int { min, max }
        }
        "pick" => {
            let values: Vec<String> = t
                .get("values")
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if values.is_empty() {
                return Err("gen = \"pick\" needs a non-empty `values` array of strings".into());
            }
            VarGen::Pick(values)
        }
        "repeat" => {
            let text = t.get("text").and_then(|v| v.as_str()).unwrap_or_default();
            let count = int("count").unwrap_or(0);
            if text.is_empty() || !(1..=1_000_000).contains(&count) {
                return Err(
                    "gen = \"repeat\" needs a non-empty `text` and a `count` from 1 to 1000000"
                        .into(),
                );
            }
            VarGen::Repeat {
                text: text.to_string(),
                count: count as usize,
            }
        }
        other => return Err(format!("unknown generator \"{other}\"")),
    })
}

fn parse_tasks(readme: &str) -> Vec<Task> {
    let heading = Regex::new(r"^#{2,4}\s+(\d+)\.\s+(.+?)\s*$").expect("static regex");
    readme
        .lines()
        .filter_map(|l| heading.captures(l))
        .filter_map(|c| {
            Some(Task {
                number: c[1].parse().ok()?,
                title: c[2].to_string(),
            })
        })
        .collect()
}

/// The id rule of skills, checks and (by `grader new-exercise`) exercises: lower-case letters,
/// digits and inner dashes.
pub fn is_kebab(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn kebab_error(file: &SourceFile, s: &Spanned<String>, what: &str) -> Diagnostic {
    Diagnostic::new(
        file,
        s.span(),
        format!("{what} \"{}\" is not kebab-case", s.get_ref()),
    )
    .with_help("use lower-case letters, digits and dashes, e.g. \"create-returns-201\"")
}

fn unknown_name(
    file: &SourceFile,
    s: &Spanned<String>,
    what: &str,
    known: &[&str],
    source: &str,
) -> Diagnostic {
    let help = match did_you_mean(s.get_ref(), known.iter().copied()) {
        Some(k) => format!("did you mean \"{k}\"?"),
        None => format!("known in {source}: {}", known.join(", ")),
    };
    Diagnostic::new(
        file,
        s.span(),
        format!("unknown {what} \"{}\"", s.get_ref()),
    )
    .with_help(help)
}

fn find_span(file: &SourceFile, needle: &str) -> Range<usize> {
    file.text
        .find(needle)
        .map(|i| i..i + needle.len())
        .unwrap_or(0..0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn tasks_come_from_numbered_headings() {
        let tasks = parse_tasks("# T\n### 1. Health\ntext\n### 12. HEAD\n## Notes\n");
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[1].number, 12);
        assert_eq!(tasks[1].title, "HEAD");
    }

    #[test]
    fn status_specs() {
        let s = StatusSpec::parse(&toml::Value::Integer(201)).unwrap();
        assert!(s.accepts(201) && !s.accepts(200));
        let s = StatusSpec::parse(&toml::Value::Array(vec![
            toml::Value::Integer(400),
            toml::Value::String("4xx".into()),
        ]))
        .unwrap();
        assert!(s.accepts(422));
        assert_eq!(s.describe(), "400 or 4xx");
        assert!(StatusSpec::parse(&toml::Value::Integer(99)).is_err());
    }

    /// A folder with the real skills.toml and one exercise `sec` written as `toml`.
    pub(crate) fn catalog_with(toml: &str) -> Result<Catalog, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let skills = concat!(env!("CARGO_MANIFEST_DIR"), "/../exercises/skills.toml");
        std::fs::copy(skills, dir.path().join("skills.toml")).unwrap();
        std::fs::create_dir(dir.path().join("sec")).unwrap();
        std::fs::write(dir.path().join("sec/README.md"), "# Sec\n### 1. Admin\n").unwrap();
        std::fs::write(dir.path().join("sec/exercise.toml"), toml).unwrap();
        load_catalog(&ExerciseSource::Dir(dir.path().to_path_buf()))
    }

    pub(crate) const SEC_HEAD: &str =
        "id = \"sec\"\ntitle = \"t\"\nsummary = \"s\"\nskills = [\"security\"]\ndifficulty = 3\n";
    pub(crate) const SEC_CHECK: &str = "[[check]]\nid = \"admin\"\ntitle = \"t\"\ntask = 1\nwhy = \"w\"\nhint = \"h\"\n[[check.step]]\nrequest.method = \"GET\"\nrequest.path = \"/admin/stats\"\nrequest.headers.Authorization = \"Bearer {{admin}}\"\nexpect.status = 200\n";
    const ISSUER: &str = "[upstreams.issuer]\nkind = \"oidc-issuer\"\nenv = \"AUTH_ISSUER_URL\"\naudience = \"notes-api\"\nservice_env = { AUTH_AUDIENCE = \"notes-api\" }\n";

    #[test]
    fn a_step_may_change_the_upstream_fault_and_mistakes_are_located() {
        let upstream = "[upstreams.loyalty]\nenv = \"LOYALTY_URL\"\n[[upstreams.loyalty.route]]\nmethod = \"GET\"\npath = \"/tiers/{customer}\"\nresponse.status = 200\n";
        let check = |upstream_table: &str, fault: &str| {
            format!(
                "{SEC_HEAD}{upstream}[[check]]\nid = \"tiers\"\ntitle = \"t\"\ntask = 1\nwhy = \"w\"\nhint = \"h\"\n{upstream_table}\
                 [[check.step]]\nrequest.method = \"GET\"\nrequest.path = \"/a\"\nexpect.status = 200\n\
                 [[check.step]]\nupstream_fault = \"{fault}\"\nrequest.method = \"GET\"\nrequest.path = \"/b\"\nexpect.status = 200\n"
            )
        };
        let with_route = "[check.upstream]\nname = \"loyalty\"\nroute = \"GET /tiers/{customer}\"\nfault = \"500\"\n";
        let catalog = catalog_with(&check(with_route, "reset"))
            .unwrap_or_else(|d| panic!("{}", d.render(false)));
        let ex = catalog.exercise("sec").unwrap();
        assert_eq!(
            ex.checks[0].upstream_faults,
            [(1, crate::upstream::Fault::Reset)]
        );

        let located = |text: String| -> Vec<(String, String)> {
            catalog_with(&text)
                .unwrap_err()
                .0
                .iter()
                .map(|d| (d.location(), d.message.clone()))
                .collect()
        };
        // Line 27: the second step's upstream_fault (23 without the 4 lines of [check.upstream]).
        let bad = located(check(with_route, "broken"));
        assert!(
            bad.iter().any(|(loc, m)| loc.contains("exercise.toml:27:")
                && m.contains("fault \"broken\" is not a status code")),
            "{bad:?}"
        );
        let orphan = located(check("", "reset"));
        assert!(
            orphan
                .iter()
                .any(|(loc, m)| loc.contains("exercise.toml:23:")
                    && m.contains("which this check does not have")),
            "{orphan:?}"
        );
    }

    #[test]
    fn jwt_vars_need_an_issuer_and_are_minted_only_where_used() {
        let good = format!(
            "{SEC_HEAD}[vars]\nuser = {{ gen = \"slug\" }}\nadmin = {{ gen = \"jwt\", sub = \"{{{{user}}}}\", roles = [\"admin\"], rotate = true }}\nplain = {{ gen = \"jwt\", sub = \"{{{{user}}}}\" }}\n{ISSUER}{SEC_CHECK}"
        );
        let catalog = catalog_with(&good).unwrap_or_else(|d| panic!("{}", d.render(false)));
        let ex = catalog.exercise("sec").unwrap();
        assert_eq!(ex.checks[0].tokens, ["admin"]);
        let admin = ex
            .vars
            .iter()
            .find(|(n, _)| n == "admin")
            .unwrap()
            .1
            .jwt()
            .unwrap();
        assert_eq!((admin.issuer.as_str(), admin.rotate), ("issuer", true));

        // Every mistake, located at its variable.
        let bad = format!(
            "{SEC_HEAD}[vars]\nuser = {{ gen = \"slug\" }}\nadmin = {{ gen = \"jwt\", subject = \"x\" }}\nlate = {{ gen = \"jwt\", expires_in = \"soon\" }}\nhs = {{ gen = \"jwt\", alg = \"HS256\" }}\nodd = {{ gen = \"jwt\", attack = \"forged\" }}\nwho = {{ gen = \"jwt\", sub = \"{{{{nobody}}}}\" }}\n{ISSUER}{SEC_CHECK}"
        );
        let diags = catalog_with(&bad).unwrap_err();
        let found: Vec<(String, String)> = diags
            .0
            .iter()
            .map(|d| (d.location(), d.message.clone()))
            .collect();
        let at = |line: usize, needle: &str| {
            assert!(
                found
                    .iter()
                    .any(|(loc, m)| loc.contains(&format!("exercise.toml:{line}:"))
                        && m.contains(needle)),
                "no error at line {line} with {needle:?}: {found:?}"
            )
        };
        at(8, "`subject` does not apply to gen = \"jwt\"");
        at(9, "`expires_in`");
        at(10, "alg \"HS256\"");
        at(11, "attack \"forged\" is unknown");
        at(12, "variable `nobody` is not defined");

        // No oidc-issuer upstream: a jwt variable cannot be signed.
        let orphan =
            format!("{SEC_HEAD}[vars]\nadmin = {{ gen = \"jwt\", sub = \"a\" }}\n{SEC_CHECK}");
        let diags = catalog_with(&orphan).unwrap_err();
        assert!(
            diags.0[0].location().contains("exercise.toml:7:"),
            "{}",
            diags.render(false)
        );
        assert!(diags.0[0].message.contains("needs an oidc-issuer upstream"));
    }

    /// A `grpc_contract` check's `.proto` is read and compiled when the exercise loads: a file
    /// that is missing, or defines no such service, is an error at the check.
    #[test]
    fn a_grpc_contracts_proto_is_read_and_checked_at_load() {
        let check = |service: &str| {
            format!(
                "{SEC_HEAD}protocol = \"grpc\"\n[[check]]\nid = \"contract\"\ntitle = \"t\"\ntask = 1\nwhy = \"w\"\nhint = \"h\"\nprobe = \"grpc_contract\"\nparams = {{ proto = \"shop.proto\", service = \"{service}\" }}\n"
            )
        };
        let missing = catalog_with(&check("shop.v1.Shop")).unwrap_err();
        assert!(
            missing.0[0].location().contains("exercise.toml:8:")
                && missing.0[0]
                    .message
                    .contains("cannot read shop.proto in the exercise's folder"),
            "{}",
            missing.render(false)
        );

        let with_proto = |service: &str| {
            let dir = tempfile::tempdir().unwrap();
            let skills = concat!(env!("CARGO_MANIFEST_DIR"), "/../exercises/skills.toml");
            std::fs::copy(skills, dir.path().join("skills.toml")).unwrap();
            std::fs::create_dir(dir.path().join("sec")).unwrap();
            std::fs::write(dir.path().join("sec/README.md"), "# Sec\n### 1. Admin\n").unwrap();
            std::fs::write(dir.path().join("sec/exercise.toml"), check(service)).unwrap();
            let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../exercises/grpc/shop.proto");
            std::fs::copy(proto, dir.path().join("sec/shop.proto")).unwrap();
            load_catalog(&ExerciseSource::Dir(dir.path().to_path_buf()))
        };
        let catalog = with_proto("shop.v1.Shop").unwrap_or_else(|d| panic!("{}", d.render(false)));
        let ex = catalog.exercise("sec").unwrap();
        assert_eq!(ex.protocol, super::super::Protocol::Grpc);
        match &ex.checks[0].body {
            CheckBody::Probe(crate::probes::ProbeCall::GrpcContract(p)) => {
                assert!(p.contract.is_some())
            }
            other => panic!("{other:?}"),
        }
        let wrong = with_proto("shop.v1.Nope").unwrap_err();
        assert!(
            wrong.0[0]
                .message
                .contains("shop.proto defines no service shop.v1.Nope"),
            "{}",
            wrong.render(false)
        );
    }

    const SQL_CHECK: &str = "[[check]]\nid = \"db\"\ntitle = \"t\"\ntask = 1\nwhy = \"w\"\nhint = \"h\"\n[[check.step]]\nrequest.method = \"POST\"\nrequest.path = \"/accounts\"\ncapture.id = { json = \"$.id\" }\n";

    fn sql_errors(step: &str) -> Vec<String> {
        let text = format!("{SEC_HEAD}[vars]\nn = {{ gen = \"int\", min = 1, max = 2 }}\n{SQL_CHECK}[[check.step]]\n{step}");
        match catalog_with(&text) {
            Ok(_) => Vec::new(),
            Err(d) => {
                d.0.iter()
                    .map(|d| format!("{}: {}", d.location(), d.message))
                    .collect()
            }
        }
    }

    #[test]
    fn sql_steps_take_values_only_as_parameters() {
        let good = "sql.query = \"SELECT balance_cents FROM accounts WHERE id::text = $1\"\nsql.params = [\"{{id}}\"]\nsql.expect.balance_cents = \"{{n}}\"\n";
        assert!(sql_errors(good).is_empty(), "{:?}", sql_errors(good));
        let refused = "sql.statement = \"UPDATE accounts SET balance_cents = -1 WHERE id::text = $1\"\nsql.params = [\"{{id}}\"]\nsql.refused = \"23514\"\n";
        assert!(sql_errors(refused).is_empty(), "{:?}", sql_errors(refused));

        let one = |step: &str, needle: &str| {
            let errors = sql_errors(step);
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains(needle) && e.contains("exercise.toml:")),
                "no error with {needle:?}: {errors:?}"
            );
        };
        one(
            "sql.query = \"SELECT 1 AS x FROM accounts WHERE id = '{{id}}'\"\nsql.expect.x = 1\n",
            "templates cannot go inside SQL",
        );
        one("sql.query = \"SELECT 1 AS x WHERE $1 = $2\"\nsql.params = [\"{{id}}\"]\nsql.expect.x = 1\n", "names 2 parameter(s)");
        one("sql.query = \"SELECT 1 AS x\"\n", "needs `expect`");
        one(
            "sql.statement = \"DELETE FROM accounts\"\nsql.refused = \"maybe\"\n",
            "SQLSTATE class or code",
        );
        one(
            "sql.query = \"SELECT 1 AS x\"\nsql.statement = \"DELETE FROM accounts\"\n",
            "exactly one of `query`",
        );
        one("sql.query = \"SELECT 1 AS x WHERE $1 = ''\"\nsql.params = [\"{{nobody}}\"]\nsql.expect.x = 1\n", "`nobody` is not defined");
        one("request.method = \"GET\"\nrequest.path = \"/x\"\nsql.query = \"SELECT 1 AS x\"\nsql.expect.x = 1\n", "`request` or `sql`, not both");
    }

    #[test]
    fn sql_captures_reach_later_steps_and_nothing_else_captures_sql() {
        // A count captured before a request is compared after it.
        let captured = "sql.query = \"SELECT count(*) AS calls FROM accounts\"\nsql.capture.before = \"calls\"\n\n[[check.step]]\nsql.query = \"SELECT count(*) AS calls FROM accounts\"\nsql.expect.calls = \"{{before}}\"\n";
        assert!(
            sql_errors(captured).is_empty(),
            "{:?}",
            sql_errors(captured)
        );
        let errors = sql_errors("sql.query = \"SELECT 1 AS x\"\ncapture.x = { json = \"$.x\" }\n");
        assert!(
            errors.iter().any(|e| e.contains("sql.capture")),
            "{errors:?}"
        );
        let errors = sql_errors("sql.statement = \"DELETE FROM accounts\"\nsql.refused = \"23\"\nsql.capture.x = \"x\"\n");
        assert!(
            errors.iter().any(|e| e.contains("go with `query`")),
            "{errors:?}"
        );
        let errors =
            sql_errors("sql.query = \"SELECT 1 AS x\"\nsql.capture.\"not a name\" = \"x\"\n");
        assert!(
            errors.iter().any(|e| e.contains("is not a variable name")),
            "{errors:?}"
        );
    }

    #[test]
    fn repeat_vars_take_text_and_a_bounded_count() {
        let var = |text: &str| parse_var(&toml::from_str::<toml::Value>(text).unwrap(), &[]);
        match var("gen = \"repeat\"\ntext = \"é\"\ncount = 200").unwrap() {
            VarGen::Repeat { text, count } => assert_eq!((text.as_str(), count), ("é", 200)),
            other => panic!("{other:?}"),
        }
        assert!(var("gen = \"repeat\"\ntext = \"\"\ncount = 2")
            .unwrap_err()
            .contains("non-empty `text`"));
        assert!(var("gen = \"repeat\"\ntext = \"a\"\ncount = 0").is_err());
        assert!(var("gen = \"repeat\"\ntext = \"a\"\ncount = 1000001").is_err());
        assert!(
            var("gen = \"repeat\"\ntext = \"a\"\ncount = 2\nvalues = []")
                .unwrap_err()
                .contains("does not apply")
        );
    }
}
