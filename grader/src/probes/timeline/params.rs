//! `timeline` parameters: the upstream route whose calls are judged, and the phases.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::engine::lifecycle::DatabaseFailure;
use crate::probes::request::{copies, de, duration, query, request, ProbeRequest};
use crate::spec::JsonQuery;
use crate::upstream::{Behaviour, Fault};

/// The variable a burst's request is rendered with: 1 for the first request of `count`, 2 for
/// the second, ... (so each can carry its own key, and its calls be told apart).
pub const BURST_INDEX: &str = "burst_index";

#[derive(Debug, Clone)]
pub struct Timeline {
    /// `[upstreams.NAME]`.
    pub upstream: String,
    /// `POST /rates`: the route whose calls are counted.
    pub route: String,
    /// JSONPath into a call's JSON body that tells which request it serves (`$.postcode`):
    /// calls are grouped by it to measure one request's attempts.
    pub call_key: Option<JsonQuery>,
    /// What a call is, for messages ("rate request").
    pub noun: String,
    /// Template: only calls whose `call_key` value starts with it are this check's (the check's
    /// own random postcode); calls a service still makes for an earlier check are not counted.
    pub calls_for: Option<String>,
    pub phases: Vec<Phase>,
    /// `$.id`: what `same_as` would compare (the shared response judge needs one).
    pub identity: JsonQuery,
}

#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    /// Pause before the phase, on the grader's clock (a breaker's cool-down plus a margin).
    pub wait: Duration,
    /// The route's behaviour from the start of this phase on (`None`: as the previous phase).
    pub behaviour: Option<Behaviour>,
    /// What happens to the service's database from the start of this phase on (`None`: as the
    /// previous phase). Whatever the last phase left, the database is restored when the check
    /// ends.
    pub database: Option<DatabaseStep>,
    /// `count` copies of one request (each rendered with its `burst_index`), sent one after
    /// another or, with `together`, released at once.
    pub requests: Vec<ProbeRequest>,
    pub together: bool,
    /// Requests sent alongside a `together` burst (each after its `at`), judged as their own
    /// expectations say: the health check that must stay fast while the burst waits.
    pub also: Vec<ProbeRequest>,
    /// Calls to the route that arrived during the phase (until the next phase starts).
    pub calls: Option<u32>,
    pub max_calls: Option<u32>,
    /// For each request's calls (grouped by `call_key`), the gap before its 2nd call, its 3rd
    /// call...: each within its bounds.
    pub gaps: Vec<(Duration, Duration)>,
    /// The requests' first gaps must spread over at least this much (their waits are random).
    pub min_gap_spread: Option<Duration>,
    /// The most calls in flight at once during the phase, exactly.
    pub peak_in_flight: Option<u32>,
    /// Each response of the burst arrives at most this long after its request was sent.
    pub within: Option<Duration>,
    /// Every response of the burst that is not a 2xx arrives in under this share of the route's
    /// delay (a refusal does not queue).
    pub refusals_under_delay: Option<f64>,
    /// At most this many responses of the burst are 2xx.
    pub max_successes: Option<u32>,
    /// `false`: the responses are not judged (a phase that only brings the service back to a
    /// known state, such as a closed breaker).
    pub judged: bool,
    /// Send the request again (every [`SETTLE_EVERY`]) until it answers as expected, for at most
    /// this long: a state an earlier check left (an open breaker) passes first.
    pub settle: Option<Duration>,
}

/// A phase's `database`: make it fail (`hang`, `drop`) or bring it back (`restore`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseStep {
    Fail(DatabaseFailure),
    Restore,
}

impl DatabaseStep {
    const NAMES: &'static str = "\"hang\" (connections stay open, nothing answers), \"drop\" (connections reset, new ones refused) or \"restore\"";

    fn parse(text: &str) -> Result<DatabaseStep, String> {
        match text {
            "hang" => Ok(DatabaseStep::Fail(DatabaseFailure::Hang)),
            "drop" => Ok(DatabaseStep::Fail(DatabaseFailure::Drop)),
            "restore" => Ok(DatabaseStep::Restore),
            other => Err(format!(
                "`database = \"{other}\"`: expected {}",
                Self::NAMES
            )),
        }
    }
}

/// How often a settling phase asks again.
pub const SETTLE_EVERY: Duration = Duration::from_millis(250);

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TimelineParams")]
pub struct Raw {
    upstream: String,
    route: String,
    call_key: Option<String>,
    noun: Option<String>,
    calls_for: Option<String>,
    #[schemars(with = "Vec<RawPhase>")]
    phase: Vec<toml::Value>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TimelinePhase")]
pub struct RawPhase {
    name: String,
    wait: Option<String>,
    behaviour: Option<RawBehaviour>,
    /// `hang`, `drop` or `restore`: the service's database from this phase on.
    database: Option<String>,
    #[schemars(with = "crate::probes::request::RawRequest")]
    request: toml::Value,
    count: Option<u32>,
    #[serde(default)]
    together: bool,
    #[serde(default)]
    #[schemars(with = "Vec<crate::probes::request::RawRequest>")]
    also: Vec<toml::Value>,
    calls: Option<u32>,
    max_calls: Option<u32>,
    #[serde(default)]
    gaps: Vec<[String; 2]>,
    min_gap_spread: Option<String>,
    peak_in_flight: Option<u32>,
    within: Option<String>,
    refusals_under_delay: Option<f64>,
    max_successes: Option<u32>,
    #[serde(default = "yes")]
    judged: bool,
    settle: Option<String>,
}

/// The route's behaviour for a phase: healthy unless `fault` says otherwise.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TimelineBehaviour")]
pub struct RawBehaviour {
    delay: Option<String>,
    fault: Option<String>,
    fault_times: Option<u32>,
    retry_after: Option<u32>,
}

fn yes() -> bool {
    true
}

const MAX_BURST: u32 = 200;

pub fn parse(params: toml::Value) -> Result<Timeline, String> {
    let raw: Raw = de("params of `timeline`", params)?;
    if raw.phase.is_empty() {
        return Err("`timeline` needs at least one [[check.params.phase]]".into());
    }
    let phases = raw
        .phase
        .into_iter()
        .enumerate()
        .map(|(i, v)| phase(i, v))
        .collect::<Result<Vec<_>, _>>()?;
    let needs_key = phases
        .iter()
        .any(|p| !p.gaps.is_empty() || p.min_gap_spread.is_some())
        || raw.calls_for.is_some();
    if needs_key && raw.call_key.is_none() {
        return Err("`gaps`, `min_gap_spread` and `calls_for` tell requests' calls apart: give `call_key`, the JSONPath in a call's body that names the request (\"$.postcode\")".into());
    }
    Ok(Timeline {
        upstream: raw.upstream,
        route: raw.route,
        call_key: raw.call_key.as_deref().map(query).transpose()?,
        noun: raw.noun.unwrap_or_else(|| "call".into()),
        calls_for: raw.calls_for,
        phases,
        identity: query("$.id")?,
    })
}

fn phase(index: usize, v: toml::Value) -> Result<Phase, String> {
    let at = |what: &str| format!("phase {}: {what}", index + 1);
    let r: RawPhase = de(&format!("phase {}", index + 1), v)?;
    let count = r.count.unwrap_or(1);
    if !(1..=MAX_BURST).contains(&count) {
        return Err(at(&format!("`count` must be from 1 to {MAX_BURST}")));
    }
    let one = request("timeline", 0, r.request).map_err(|e| at(&e))?;
    let requests = copies(&one, count);
    let also = r
        .also
        .into_iter()
        .enumerate()
        .map(|(i, v)| request("timeline", i, v))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(&e))?;
    if !r.together && (!also.is_empty() || r.min_gap_spread.is_some() || r.max_successes.is_some())
    {
        return Err(at(
            "`also`, `min_gap_spread` and `max_successes` judge a burst: add `together = true`",
        ));
    }
    let settle = r
        .settle
        .as_deref()
        .map(|d| duration("settle", d))
        .transpose()
        .map_err(|e| at(&e))?;
    let judges_calls = r.calls.is_some()
        || r.max_calls.is_some()
        || !r.gaps.is_empty()
        || r.peak_in_flight.is_some();
    if settle.is_some() && (r.together || count > 1 || judges_calls || !r.judged) {
        return Err(at("`settle` asks one request again until it answers as expected: it goes without `count`, `together`, `judged = false` or judging calls (their number depends on how often it asked)"));
    }
    if r.calls.is_some() && r.max_calls.is_some() {
        return Err(at(
            "takes `calls` (exactly) or `max_calls` (at most), not both",
        ));
    }
    let gaps = r
        .gaps
        .iter()
        .map(|[low, high]| {
            let (low, high) = (duration("gap", low)?, duration("gap", high)?);
            if low > high {
                return Err(format!("gap bounds {low:?} to {high:?} are reversed"));
            }
            Ok((low, high))
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| at(&e))?;
    if let Some(share) = r.refusals_under_delay {
        if !(share > 0.0 && share <= 1.0) {
            return Err(at(
                "`refusals_under_delay` is a share of the delay, above 0 and at most 1",
            ));
        }
    }
    let behaviour = r
        .behaviour
        .map(|b| -> Result<Behaviour, String> {
            let fault = b.fault.as_deref().map(Fault::parse).transpose()?;
            if b.retry_after.is_some() && !matches!(fault, Some(Fault::Status(_))) {
                return Err("`retry_after` goes with a status fault (fault = \"503\")".into());
            }
            Ok(Behaviour {
                delay: b
                    .delay
                    .as_deref()
                    .map(|d| duration("delay", d))
                    .transpose()?
                    .unwrap_or_default(),
                fault,
                fault_times: b.fault_times,
                retry_after: b.retry_after,
            })
        })
        .transpose()
        .map_err(|e| at(&e))?;
    Ok(Phase {
        name: r.name,
        wait: r
            .wait
            .as_deref()
            .map(|w| duration("wait", w))
            .transpose()
            .map_err(|e| at(&e))?
            .unwrap_or_default(),
        behaviour,
        database: r
            .database
            .as_deref()
            .map(DatabaseStep::parse)
            .transpose()
            .map_err(|e| at(&e))?,
        requests,
        together: r.together,
        also,
        calls: r.calls,
        max_calls: r.max_calls,
        gaps,
        min_gap_spread: r
            .min_gap_spread
            .as_deref()
            .map(|d| duration("min_gap_spread", d))
            .transpose()
            .map_err(|e| at(&e))?,
        peak_in_flight: r.peak_in_flight,
        within: r
            .within
            .as_deref()
            .map(|d| duration("within", d))
            .transpose()
            .map_err(|e| at(&e))?,
        refusals_under_delay: r.refusals_under_delay,
        max_successes: r.max_successes,
        judged: r.judged,
        settle,
    })
}

impl Timeline {
    /// Template strings, for the static variable check (`burst_index` is the probe's own).
    pub fn template_strings(&self) -> Vec<String> {
        let all: Vec<ProbeRequest> = self
            .phases
            .iter()
            .flat_map(|p| p.requests.iter().take(1).chain(&p.also).cloned())
            .collect();
        let mut out = crate::probes::request::template_strings_except(&all, &[BURST_INDEX]);
        out.extend(self.calls_for.clone());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Timeline, String> {
        parse(toml::from_str(text).unwrap())
    }

    const HEAD: &str = "upstream = \"carrier\"\nroute = \"POST /rates\"\n";

    #[test]
    fn a_phase_parses_its_behaviour_burst_and_bounds() {
        let t = parse_text(&format!(
            r#"{HEAD}call_key = "$.postcode"
            [[phase]]
            name = "two failures then an answer"
            behaviour = {{ fault = "503", fault_times = 2, retry_after = 1 }}
            request = {{ method = "GET", path = "/estimates?postcode={{{{postcode}}}}{{{{burst_index}}}}" }}
            count = 3
            together = true
            calls = 9
            gaps = [["100ms", "450ms"]]
            min_gap_spread = "25ms"
            "#
        ))
        .unwrap();
        let p = &t.phases[0];
        assert_eq!(p.requests.len(), 3);
        assert_eq!(p.requests[2].name, "request #3");
        let b = p.behaviour.as_ref().unwrap();
        assert_eq!(
            (b.fault, b.fault_times, b.retry_after),
            (Some(Fault::Status(503)), Some(2), Some(1))
        );
        assert_eq!(
            p.gaps,
            [(Duration::from_millis(100), Duration::from_millis(450))]
        );
        // The probe renders `burst_index` itself; the rest is checked against the exercise.
        assert_eq!(t.template_strings(), ["{{postcode}}"]);
    }

    #[test]
    fn mistakes_are_named() {
        let burst_only = parse_text(&format!(
            "{HEAD}[[phase]]\nname = \"x\"\nrequest = {{ method = \"GET\", path = \"/x\" }}\nmax_successes = 1\n"
        ));
        assert!(burst_only.unwrap_err().contains("add `together = true`"));
        let no_key = parse_text(&format!(
            "{HEAD}[[phase]]\nname = \"x\"\nrequest = {{ method = \"GET\", path = \"/x\" }}\ngaps = [[\"1ms\", \"2ms\"]]\n"
        ));
        assert!(no_key.unwrap_err().contains("give `call_key`"));
        let retry_after = parse_text(&format!(
            "{HEAD}[[phase]]\nname = \"x\"\nbehaviour = {{ fault = \"timeout\", retry_after = 1 }}\nrequest = {{ method = \"GET\", path = \"/x\" }}\n"
        ));
        assert!(retry_after
            .unwrap_err()
            .contains("phase 1: `retry_after` goes with a status fault"));
        let database = parse_text(&format!(
            "{HEAD}[[phase]]\nname = \"x\"\ndatabase = \"freeze\"\nrequest = {{ method = \"GET\", path = \"/x\" }}\n"
        ));
        assert!(database
            .unwrap_err()
            .contains("phase 1: `database = \"freeze\"`: expected \"hang\""));
    }

    #[test]
    fn a_phase_may_make_the_database_fail_and_restore_it() {
        let p = parse_text(&format!(
            "{HEAD}[[phase]]\nname = \"a\"\ndatabase = \"hang\"\nrequest = {{ method = \"GET\", path = \"/x\" }}\n[[phase]]\nname = \"b\"\ndatabase = \"drop\"\nrequest = {{ method = \"GET\", path = \"/x\" }}\n[[phase]]\nname = \"c\"\ndatabase = \"restore\"\nrequest = {{ method = \"GET\", path = \"/x\" }}\n[[phase]]\nname = \"d\"\nrequest = {{ method = \"GET\", path = \"/x\" }}\n"
        ))
        .unwrap();
        let steps: Vec<Option<DatabaseStep>> = p.phases.iter().map(|p| p.database).collect();
        assert_eq!(
            steps,
            [
                Some(DatabaseStep::Fail(DatabaseFailure::Hang)),
                Some(DatabaseStep::Fail(DatabaseFailure::Drop)),
                Some(DatabaseStep::Restore),
                None
            ]
        );
    }
}
