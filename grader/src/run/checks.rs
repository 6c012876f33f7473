//! Running the selected checks against a started service: steps or a probe per check, with a
//! timeout, a panic guard, `requires`, and the service's death or hang turned into skips with the
//! cause. Exercises are graded concurrently where they cannot disturb each other (see
//! [`schedule`]); progress and results still come out in exercise order.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Instant;

use futures_util::FutureExt;

use super::RunEvents;
use crate::engine::http::HttpClient;
use crate::engine::tokens::{self as engine_tokens, CheckTokens};
use crate::engine::{exit_words, is_hang, step, CheckContext, FailInfo, Failure, LOG_TAIL_LINES};
use crate::exercise::{Check, CheckBody, Exercise};
use crate::outcome::{CheckResult, Exchange, FailureDetail, Status};
use crate::runtime::{RunningService, ServiceState};
use crate::spec::random;
use crate::upstream::Upstreams;

/// After this many checks in a row that timed out, the service is taken as hanging and the
/// remaining checks are skipped with that cause (each would cost its full timeout).
pub const MAX_CONSECUTIVE_TIMEOUTS: usize = 3;

/// Which checks to run, and with what data.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub seed: u64,
    /// Check ids to run (`exercise/check`, `check` or a whole `exercise`); empty means all.
    pub only: Vec<String>,
    /// Checks (`exercise/check`) to run before the rest of their exercise (see [`run_order`]).
    pub first: Vec<String>,
}

impl Selection {
    pub fn selects(&self, exercise: &str, check: &str) -> bool {
        selects(&self.only, exercise, check)
    }
}

/// Whether `--only` filters select a check (no filter selects everything).
pub fn selects(only: &[String], exercise: &str, check: &str) -> bool {
    only.is_empty()
        || only
            .iter()
            .any(|o| o == check || *o == format!("{exercise}/{check}") || o == exercise)
}

/// How the exercises of a run are graded: `alone` ones one after another with nothing else
/// running, then the `lanes` side by side (each lane's exercises one after another).
#[derive(Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Indexes of exercises whose probes read cluster-wide database statistics
    /// (`pg_stat_statements`, buffer counts): requests of any other exercise would land in the
    /// same counters, and the service has one database for everything, so they run alone (and so
    /// do those whose SQL steps capture a value to compare later, such as a statement count). So do
    /// exercises whose probes kill and restart the service or cut it off the broker, and those
    /// that scrape the service's own metrics.
    pub alone: Vec<usize>,
    /// Indexes of the other exercises, grouped so that exercises sharing a mock upstream (whose
    /// behaviour a check changes and resets) share a lane.
    pub lanes: Vec<Vec<usize>>,
}

/// Decides what may run concurrently. Each exercise has its own routes, data (a category, keys,
/// users of its own) and mock upstreams, so exercises only disturb each other through shared
/// counters: database statistics and a mock upstream both declare.
pub fn schedule(exercises: &[&Exercise], selection: &Selection) -> Schedule {
    let mut alone = Vec::new();
    let mut lanes: Vec<(Vec<usize>, BTreeSet<String>)> = Vec::new();
    for (index, exercise) in exercises.iter().enumerate() {
        let selected: Vec<&Check> = exercise
            .checks
            .iter()
            .filter(|c| selection.selects(&exercise.id, &c.id))
            .collect();
        if selected.is_empty() {
            continue;
        }
        // Statistics would count other exercises' statements (and a scrape their requests); a
        // restart would kill their requests and a cut broker would fail theirs.
        let must_be_alone = selected.iter().any(|c| match &c.body {
            CheckBody::Probe(p) => {
                p.reads_database_statistics()
                    || p.reads_service_metrics()
                    || p.times_upstream_calls()
                    || p.restarts_service()
            }
            // A count captured before a request and compared after it (pg_stat_statements: no
            // statement ran for a refused query) is exact only with nothing else running.
            CheckBody::Steps(steps) => steps.iter().any(crate::spec::Step::keeps_sql_values),
        });
        if must_be_alone {
            alone.push(index);
            continue;
        }
        let upstreams: BTreeSet<String> =
            exercise.upstreams.iter().map(|u| u.name.clone()).collect();
        match lanes
            .iter_mut()
            .find(|(_, names)| !names.is_disjoint(&upstreams))
        {
            Some((members, names)) => {
                members.push(index);
                names.extend(upstreams);
            }
            None => lanes.push((vec![index], upstreams)),
        }
    }
    Schedule {
        alone,
        lanes: lanes.into_iter().map(|(members, _)| members).collect(),
    }
}

/// What lanes share while they run.
struct Shared<'a> {
    service: &'a RunningService,
    http: HttpClient,
    selection: &'a Selection,
    upstreams: &'a Upstreams,
    events: &'a dyn RunEvents,
    /// Set once the service has died or hangs, so later checks are skipped with the cause.
    gone: Mutex<Option<String>>,
    consecutive_timeouts: Mutex<usize>,
    order: Mutex<InOrder>,
    /// Every result as soon as its check ends, in any order: what a run stopped at its
    /// `--timeout` keeps.
    finished: &'a Mutex<Vec<CheckResult>>,
    /// Taken shared by every check and exclusively by a check that sends bursts (see
    /// [`crate::probes::ProbeCall::sends_bursts`]), so lanes run side by side except while a
    /// burst is on. Tokio's lock is fair: a waiting burst holds back the checks that come after
    /// it, so a busy lane cannot starve it.
    turns: tokio::sync::RwLock<()>,
}

/// A check's permission to run: shared, or the service to itself.
enum Turn<'a> {
    Shared {
        _guard: tokio::sync::RwLockReadGuard<'a, ()>,
    },
    Alone {
        _guard: tokio::sync::RwLockWriteGuard<'a, ()>,
    },
}

/// Passes results to the events in exercise order although exercises finish in any order: the
/// first unfinished exercise streams, later ones wait in a buffer.
struct InOrder {
    buffered: Vec<Vec<CheckResult>>,
    finished: Vec<bool>,
    /// Exercises before this one have been passed on completely.
    next: usize,
}

impl Shared<'_> {
    fn started(&self, exercise: usize, id: &str, title: &str) {
        if self.lock_order().next == exercise {
            self.events.check_started(id, title);
        }
    }

    fn finished(&self, exercise: usize, result: CheckResult) {
        let mut order = self.lock_order();
        if order.next == exercise {
            self.events.check_finished(&result);
        } else {
            order.buffered[exercise].push(result);
        }
    }

    fn exercise_done(&self, exercise: usize) {
        let mut order = self.lock_order();
        order.finished[exercise] = true;
        while order.next < order.finished.len() && order.finished[order.next] {
            order.next += 1;
            let next = order.next;
            if next < order.buffered.len() {
                for r in std::mem::take(&mut order.buffered[next]) {
                    self.events.check_finished(&r);
                }
            }
        }
    }

    async fn turn(&self, check: &Check) -> Turn<'_> {
        match &check.body {
            CheckBody::Probe(call) if call.sends_bursts() => Turn::Alone {
                _guard: self.turns.write().await,
            },
            _ => Turn::Shared {
                _guard: self.turns.read().await,
            },
        }
    }

    fn lock_order(&self) -> std::sync::MutexGuard<'_, InOrder> {
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the selected checks of the exercises and returns their results in exercise and file
/// order.
pub async fn run(
    exercises: &[&Exercise],
    service: &RunningService,
    selection: &Selection,
    upstreams: &Upstreams,
    events: &dyn RunEvents,
    finished: &Mutex<Vec<CheckResult>>,
) -> Result<Vec<CheckResult>, String> {
    let plan = schedule(exercises, selection);
    let shared = Shared {
        service,
        http: HttpClient::new()?,
        selection,
        upstreams,
        events,
        gone: Mutex::new(None),
        consecutive_timeouts: Mutex::new(0),
        order: Mutex::new(InOrder {
            buffered: vec![Vec::new(); exercises.len()],
            finished: vec![false; exercises.len()],
            next: 0,
        }),
        finished,
        turns: tokio::sync::RwLock::new(()),
    };
    // Exercises with nothing selected count as done, so they never hold the output back.
    for (index, exercise) in exercises.iter().enumerate() {
        if !exercise
            .checks
            .iter()
            .any(|c| selection.selects(&exercise.id, &c.id))
        {
            shared.exercise_done(index);
        }
    }
    let mut by_exercise: Vec<Vec<CheckResult>> = vec![Vec::new(); exercises.len()];
    for &index in &plan.alone {
        by_exercise[index] = grade_exercise(&shared, index, exercises[index]).await;
    }
    let lanes = plan.lanes.iter().map(|lane| {
        let shared = &shared;
        async move {
            let mut out = Vec::new();
            for &index in lane {
                out.push((index, grade_exercise(shared, index, exercises[index]).await));
            }
            out
        }
    });
    for lane in futures_util::future::join_all(lanes).await {
        for (index, results) in lane {
            by_exercise[index] = results;
        }
    }
    Ok(by_exercise.into_iter().flatten().collect())
}

async fn grade_exercise(
    shared: &Shared<'_>,
    index: usize,
    exercise: &Exercise,
) -> Vec<CheckResult> {
    let mut results: Vec<CheckResult> = Vec::new();
    let upstream_names: Vec<String> = exercise.upstreams.iter().map(|u| u.name.clone()).collect();
    let order = run_order(exercise, shared.selection);
    for &position in &order {
        let check = &exercise.checks[position];
        let id = format!("{}/{}", exercise.id, check.id);
        shared.started(index, &id, &check.title);
        // Held until the check has finished; its time counts from here, not from the wait.
        let turn = shared.turn(check).await;
        let started = Instant::now();
        let gone = shared
            .gone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let outcome = if let Some(cause) = gone {
            Outcome::Skip(format!("not run: your service {cause}"))
        } else if let Some(missing) = unmet_requirement(check, &exercise.id, &results) {
            Outcome::Skip(format!("not run: requires {missing}, which did not pass"))
        } else {
            // Latency and faults a probe set for an earlier check never leak into this one, and
            // calls counted without a key are this check's.
            shared.upstreams.begin_check(&upstream_names);
            run_one(exercise, check, shared).await
        };
        drop(turn);
        note_service_health(shared, &outcome, &id);
        let result = to_result(
            exercise,
            check,
            &id,
            outcome,
            started.elapsed().as_millis() as u64,
        );
        shared.finished(index, result.clone());
        shared
            .finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(result.clone());
        results.push(result);
    }
    shared.exercise_done(index);
    // The report lists checks in file order, whatever order they ran in.
    let mut in_file_order: Vec<(usize, CheckResult)> = order.into_iter().zip(results).collect();
    in_file_order.sort_by_key(|(position, _)| *position);
    in_file_order.into_iter().map(|(_, r)| r).collect()
}

/// Positions of the exercise's selected checks in the order to run them: the checks named in
/// `selection.first` and those they require (transitively), then the rest; each group in file
/// order, so a required check still runs before the check that requires it.
pub fn run_order(exercise: &Exercise, selection: &Selection) -> Vec<usize> {
    let selected: Vec<usize> = (0..exercise.checks.len())
        .filter(|&i| selection.selects(&exercise.id, &exercise.checks[i].id))
        .collect();
    let position = |id: &str| exercise.checks.iter().position(|c| c.id == id);
    let mut early = BTreeSet::new();
    let mut pending: Vec<usize> = selected
        .iter()
        .copied()
        .filter(|&i| {
            let full = format!("{}/{}", exercise.id, exercise.checks[i].id);
            selection.first.contains(&full)
        })
        .collect();
    while let Some(i) = pending.pop() {
        if early.insert(i) {
            pending.extend(
                exercise.checks[i]
                    .requires
                    .iter()
                    .filter_map(|r| position(r))
                    .filter(|j| selected.contains(j)),
            );
        }
    }
    let (mut order, rest): (Vec<usize>, Vec<usize>) =
        selected.into_iter().partition(|i| early.contains(i));
    order.extend(rest);
    order
}

/// Records a death or a hang, so that the checks after it are skipped with the cause.
fn note_service_health(shared: &Shared<'_>, outcome: &Outcome, id: &str) {
    let mut gone = shared.gone.lock().unwrap_or_else(|e| e.into_inner());
    if gone.is_some() {
        return;
    }
    if let ServiceState::Exited { code, signal } = shared.service.state() {
        *gone = Some(format!("{} during {id}", exit_words(code, signal)));
        return;
    }
    let mut timeouts = shared
        .consecutive_timeouts
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match outcome {
        Outcome::TimedOut(..) => *timeouts += 1,
        Outcome::Skip(_) => {}
        _ => *timeouts = 0,
    }
    if *timeouts >= MAX_CONSECUTIVE_TIMEOUTS {
        *gone = Some(format!(
            "did not answer within the time limit in {MAX_CONSECUTIVE_TIMEOUTS} checks in a row (the last was {id}), so it is taken as hanging"
        ));
    }
}

enum Outcome {
    /// Passed, with what the check measured along the way.
    Pass(Vec<String>),
    Failed(Failure, Vec<Exchange>),
    /// Failed because the check's time ran out (counts towards "the service hangs").
    TimedOut(Failure, Vec<Exchange>),
    Skip(String),
}

fn unmet_requirement(check: &Check, exercise: &str, results: &[CheckResult]) -> Option<String> {
    check.requires.iter().find_map(|r| {
        let full = format!("{exercise}/{r}");
        let passed = results
            .iter()
            .any(|res| res.id == full && res.status == Status::Pass);
        (!passed).then_some(full)
    })
}

async fn run_one(exercise: &Exercise, check: &Check, shared: &Shared<'_>) -> Outcome {
    let mut rng = random::check_rng(shared.selection.seed, &exercise.id, &check.id);
    let mut scope = random::generate(&exercise.vars, &mut rng);
    // Tokens last, from the values above, when the check runs (their `exp` counts from now).
    let tokens = CheckTokens {
        vars: &exercise.vars,
        used: &check.tokens,
    };
    if !tokens.is_empty() {
        let minted = match engine_tokens::prepare(tokens, shared.upstreams).await {
            Ok(()) => engine_tokens::mint(tokens, &mut scope, shared.upstreams),
            Err(e) => Err(e),
        };
        if let Err(e) = minted {
            return Outcome::Failed(Failure::Error(e), Vec::new());
        }
    }
    let service = shared.service;
    let mut ctx = CheckContext {
        http: &shared.http,
        service,
        scope,
        rng,
        exchanges: Vec::new(),
        vars: &exercise.vars,
        tokens,
        upstreams: shared.upstreams,
        measurements: Vec::new(),
    };
    let work = async {
        match &check.body {
            CheckBody::Steps(steps) => match &check.upstream {
                None => step::run_steps(&mut ctx, steps).await,
                Some(u) => {
                    use crate::probes::upstream_calls::run::{
                        apply_behaviour, check_calls, set_fault,
                    };
                    let upstream = apply_behaviour(&ctx, u)?;
                    // The steps run in runs that each begin where a step changes the fault.
                    let mut from = 0;
                    for &(at, fault) in &check.upstream_faults {
                        step::run_steps(&mut ctx, &steps[from..at]).await?;
                        set_fault(&upstream, &u.route, fault)?;
                        from = at;
                    }
                    step::run_steps(&mut ctx, &steps[from..]).await?;
                    check_calls(&ctx, u, &upstream)
                }
            },
            CheckBody::Probe(call) => crate::probes::run(call, &mut ctx).await,
        }
    };
    // A panic in a probe is a grader bug: report it as an error on this check and carry on.
    let guarded = AssertUnwindSafe(tokio::time::timeout(check.timeout, work)).catch_unwind();
    let failure = match guarded.await {
        Ok(Ok(Ok(()))) => return Outcome::Pass(ctx.measurements),
        Ok(Ok(Err(failure))) => failure,
        Ok(Err(_elapsed)) => {
            let failure = Failure::Fail(FailInfo {
                message: format!(
                    "the check did not finish within {}s",
                    check.timeout.as_secs()
                ),
                expected: format!("the check to finish within {}s", check.timeout.as_secs()),
                actual: "the service kept the grader waiting (slow or hanging responses)".into(),
                log_tail: service.log_tail(LOG_TAIL_LINES),
                ..Default::default()
            });
            return Outcome::TimedOut(failure, ctx.exchanges);
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Failure::Error(format!("the grader crashed while running this check ({what}); this is a grader bug, please report it"))
        }
    };
    // A request that timed out on its own (the client's bound) is a hang as well.
    if let Failure::Fail(info) = &failure {
        if is_hang(&info.actual) {
            return Outcome::TimedOut(failure, ctx.exchanges);
        }
    }
    Outcome::Failed(failure, ctx.exchanges)
}

fn to_result(
    exercise: &Exercise,
    check: &Check,
    id: &str,
    outcome: Outcome,
    duration_ms: u64,
) -> CheckResult {
    let mut result = CheckResult {
        id: id.to_string(),
        exercise: exercise.id.clone(),
        title: check.title.clone(),
        skill: check.skill.clone(),
        task: check.task,
        points: check.points,
        earned: 0,
        status: Status::Pass,
        duration_ms,
        message: None,
        measurements: Vec::new(),
        detail: None,
    };
    // The README requirements the check grades come first among the references, so a learner
    // can find the sentence they broke: "README [api-2.1]".
    let spec: Vec<String> = check
        .covers
        .iter()
        .map(|c| format!("README [{}]", c.id))
        .chain(check.spec.iter().cloned())
        .collect();
    let teaching =
        |expected: String, actual: String, evidence, exchanges, service_log_tail| FailureDetail {
            expected,
            actual,
            why: check.why.clone(),
            hint: check.hint.clone(),
            spec: spec.clone(),
            evidence,
            exchanges,
            service_log_tail,
        };
    match outcome {
        Outcome::Pass(measurements) => {
            result.earned = check.points;
            result.measurements = measurements;
        }
        // A probe that cannot judge where the service runs skips with its reason (never a pass).
        Outcome::Skip(reason)
        | Outcome::Failed(Failure::Skip(reason), _)
        | Outcome::TimedOut(Failure::Skip(reason), _) => {
            result.status = Status::Skip;
            result.message = Some(reason);
        }
        Outcome::Failed(Failure::Fail(info), exchanges)
        | Outcome::TimedOut(Failure::Fail(info), exchanges) => {
            result.status = Status::Fail;
            result.message = Some(info.message);
            result.detail = Some(teaching(
                info.expected,
                info.actual,
                info.evidence,
                exchanges,
                info.log_tail,
            ));
        }
        Outcome::Failed(Failure::Error(reason), exchanges)
        | Outcome::TimedOut(Failure::Error(reason), exchanges) => {
            result.status = Status::Error;
            result.message = Some(format!("grader error: {reason}"));
            result.detail = Some(FailureDetail {
                expected: "the grader to run this check".into(),
                actual: reason,
                why: "This is not your service's fault: the grader could not run the check.".into(),
                hint: "Run again; if it repeats, report it with the seed and this output.".into(),
                spec: Vec::new(),
                evidence: Vec::new(),
                exchanges,
                service_log_tail: Vec::new(),
            });
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exercise::{load_catalog, ExerciseSource};

    #[test]
    fn statistics_metrics_timelines_and_restarts_run_alone_and_the_rest_side_by_side() {
        let catalog = load_catalog(&ExerciseSource::Embedded).unwrap();
        let exercises: Vec<&Exercise> = catalog.exercises.iter().collect();
        let ids: Vec<&str> = exercises.iter().map(|e| e.id.as_str()).collect();
        let plan = schedule(&exercises, &Selection::default());
        let alone: Vec<&str> = plan.alone.iter().map(|&i| ids[i]).collect();
        assert_eq!(
            alone,
            [
                "database-indexing",
                "event-driven",
                "graphql",
                "grpc",
                "integration-resilience",
                "observability"
            ]
        );
        let in_lanes: usize = plan.lanes.iter().map(Vec::len).sum();
        assert_eq!(in_lanes, ids.len() - 6);

        // A check whose SQL step keeps a count to compare after a request runs alone even
        // without a statistics probe; one with plain steps does not.
        let selected = |only: &str| Selection {
            seed: 1,
            only: vec![only.into()],
            ..Selection::default()
        };
        let counting = schedule(&exercises, &selected("graphql/depth-limit"));
        assert_eq!(counting.alone.len(), 1);
        let plain = schedule(&exercises, &selected("graphql/media-types"));
        assert!(plain.alone.is_empty());

        // Without the checks that kill the service or cut its broker, event-driven joins a lane.
        let no_crash = Selection {
            seed: 1,
            only: vec![
                "event-driven/created-event-once".into(),
                "event-driven/payments-applied-once".into(),
            ],
            ..Selection::default()
        };
        assert!(plan.lanes.len() > 1, "independent exercises share no lane");
        let without_crashes = schedule(&exercises, &no_crash);
        assert!(without_crashes.alone.is_empty());
        assert_eq!(without_crashes.lanes.len(), 1);

        // Selecting only steps-based checks of the indexing exercise lets it join a lane.
        let only_api = Selection {
            seed: 1,
            only: vec!["api-design".into()],
            ..Selection::default()
        };
        let plan = schedule(&exercises, &only_api);
        assert!(plan.alone.is_empty());
        assert_eq!(plan.lanes.len(), 1);
    }

    /// Two exercises in two lanes: `steady` sends one slow request after another; `burst` sends
    /// a few first, then ten together. A burst request that arrives while a `steady` one is in
    /// flight, or the reverse, is an overlap.
    #[tokio::test]
    async fn a_burst_runs_with_no_other_check_in_flight() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        use std::sync::Arc;

        use crate::engine::test_service::{serve, Reply};

        let step = |path: &str| {
            format!("[[check.step]]\nrequest.method = \"GET\"\nrequest.path = \"{path}\"\nexpect.status = 200\n")
        };
        let check = |id: &str, body: &str| {
            format!("[[check]]\nid = \"{id}\"\ntitle = \"t\"\ntask = 1\nwhy = \"w\"\nhint = \"h\"\n{body}")
        };
        let steady: String = (0..8)
            .map(|i| check(&format!("steady-{i}"), &step("/steady").repeat(3)))
            .collect();
        let burst = format!(
            "{}{}",
            check("warm-up", &step("/warm").repeat(3)),
            check(
                "together",
                "probe = \"concurrent\"\n[check.params]\ncount = 10\nsame_resource = false\nrequest = { method = \"POST\", path = \"/burst\", status = 200 }\n"
            )
        );
        let dir = tempfile::tempdir().unwrap();
        let skills = concat!(env!("CARGO_MANIFEST_DIR"), "/../exercises/skills.toml");
        std::fs::copy(skills, dir.path().join("skills.toml")).unwrap();
        for (id, checks) in [("burst", burst), ("steady", steady)] {
            let folder = dir.path().join(id);
            std::fs::create_dir(&folder).unwrap();
            std::fs::write(folder.join("README.md"), "# T\n### 1. Task\n").unwrap();
            let head = format!("id = \"{id}\"\ntitle = \"t\"\nsummary = \"s\"\nskills = [\"api-design\"]\ndifficulty = 1\n");
            std::fs::write(folder.join("exercise.toml"), format!("{head}{checks}")).unwrap();
        }
        let catalog = load_catalog(&ExerciseSource::Dir(dir.path().to_path_buf()))
            .unwrap_or_else(|d| panic!("{}", d.render(false)));
        let exercises: Vec<&Exercise> = catalog.exercises.iter().collect();
        let plan = schedule(&exercises, &Selection::default());
        assert_eq!(plan.lanes.len(), 2, "the two exercises run side by side");

        #[derive(Default)]
        struct Seen {
            bursts_in_flight: AtomicUsize,
            others_in_flight: AtomicUsize,
            bursts: AtomicUsize,
            others: AtomicUsize,
            overlaps: AtomicUsize,
        }
        let seen = Arc::new(Seen::default());
        let at_service = seen.clone();
        let base = serve(move |method, _path, _| {
            let seen = at_service.clone();
            async move {
                let (mine, theirs, count, pause) = if method == "POST" {
                    (
                        &seen.bursts_in_flight,
                        &seen.others_in_flight,
                        &seen.bursts,
                        100,
                    )
                } else {
                    (
                        &seen.others_in_flight,
                        &seen.bursts_in_flight,
                        &seen.others,
                        30,
                    )
                };
                count.fetch_add(1, SeqCst);
                mine.fetch_add(1, SeqCst);
                if theirs.load(SeqCst) > 0 {
                    seen.overlaps.fetch_add(1, SeqCst);
                }
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                if theirs.load(SeqCst) > 0 {
                    seen.overlaps.fetch_add(1, SeqCst);
                }
                mine.fetch_sub(1, SeqCst);
                Reply::json(200, serde_json::json!({}))
            }
        })
        .await;
        let service = RunningService::external(base, "/healthz");
        let finished = Mutex::new(Vec::new());
        let results = run(
            &exercises,
            &service,
            &Selection::default(),
            &Upstreams::default(),
            &crate::run::Quiet,
            &finished,
        )
        .await
        .unwrap();
        assert!(
            results.iter().all(|r| r.status == Status::Pass),
            "{results:#?}"
        );
        // Three rounds of ten, and every steady request, all served.
        assert_eq!(seen.bursts.load(SeqCst), 30);
        assert_eq!(seen.others.load(SeqCst), 8 * 3 + 3);
        assert_eq!(
            seen.overlaps.load(SeqCst),
            0,
            "a burst overlapped other traffic"
        );
    }

    #[test]
    fn last_failures_run_first_after_what_they_require() {
        let catalog = load_catalog(&ExerciseSource::Embedded).unwrap();
        // The fifth check requires the third: when the fifth failed last time, both move to the
        // front, the required one first.
        let mut exercise = catalog.exercise("api-design").unwrap().clone();
        let required = exercise.checks[2].id.clone();
        exercise.checks[4].requires = vec![required.clone()];
        let exercise = &exercise;
        let dependent = &exercise.checks[4];
        let position = |id: &str| exercise.checks.iter().position(|c| c.id == id).unwrap();
        let last = exercise.checks.last().unwrap();
        let selection = Selection {
            first: vec![
                format!("{}/{}", exercise.id, last.id),
                format!("{}/{}", exercise.id, dependent.id),
            ],
            ..Selection::default()
        };
        let order = run_order(exercise, &selection);
        assert_eq!(order.len(), exercise.checks.len(), "every check runs once");
        let at = |i: usize| order.iter().position(|&o| o == i).unwrap();
        assert!(at(position(&required)) < at(position(&dependent.id)));
        let early = 3;
        assert!(at(position(&last.id)) < early, "{order:?}");
        assert!(at(position(&dependent.id)) < early, "{order:?}");
        // Without failures, file order.
        let plain = run_order(exercise, &Selection::default());
        assert_eq!(plain, (0..exercise.checks.len()).collect::<Vec<_>>());
    }

    #[test]
    fn only_filters_match_a_check_its_exercise_or_its_full_id() {
        let only = vec!["pagination".to_string(), "api-design/head-no-body".into()];
        assert!(selects(&only, "pagination", "anything"));
        assert!(selects(&only, "api-design", "head-no-body"));
        assert!(!selects(&only, "api-design", "create-returns-201"));
        assert!(selects(&[], "x", "y"));
    }
}
