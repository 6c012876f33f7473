//! `metrics`: scrape, send the known traffic, scrape again, and compare what the service counted
//! with what the grader sent (OBS-3 to OBS-5). Two namings are accepted, as the README allows:
//! Prometheus's (`http_requests_total{method,route,status}` and
//! `http_request_duration_seconds{method,route}`) and OpenTelemetry's
//! (`http_server_request_duration_seconds{http_request_method,http_route,http_response_status_code}`,
//! whose `_count` is the request counter).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::exposition::{self, Sample, Scrape};
use super::params::{Judge, Metrics};
use crate::engine::step::build_request;
use crate::engine::{fail, CheckContext, Failure};
use crate::probes::traffic::{self, route_matches, Sent, Tagging};
use crate::probes::upstream_calls::run::send_in_order;
use crate::spec::RequestSpec;

/// Names and labels of one naming scheme.
#[derive(Debug, PartialEq)]
struct Naming {
    /// Shown in messages.
    title: &'static str,
    /// The request counter's sample name; `None`: the histogram's `_count` counts requests.
    counter: Option<&'static str>,
    histogram: &'static str,
    method: &'static str,
    route: &'static str,
    status: &'static str,
}

const PROMETHEUS: Naming = Naming {
    title: "Prometheus",
    counter: Some("http_requests_total"),
    histogram: "http_request_duration_seconds",
    method: "method",
    route: "route",
    status: "status",
};

const OPENTELEMETRY: Naming = Naming {
    title: "OpenTelemetry",
    counter: None,
    histogram: "http_server_request_duration_seconds",
    method: "http_request_method",
    route: "http_route",
    status: "http_response_status_code",
};

/// Slack on the grader's clock per request when the histogram's sum is compared with it: the
/// service's measurement lies inside the grader's, but clocks tick coarsely.
const SUM_SLACK_PER_REQUEST: Duration = Duration::from_millis(2);
/// How long counts may lag the responses, and how often they are read again meanwhile.
const SETTLE: Duration = Duration::from_secs(2);
const RESCRAPE: Duration = Duration::from_millis(200);
/// Evidence lines listed.
const MAX_EVIDENCE: usize = 12;
/// An id shorter than this could appear in a label by chance.
const MIN_ID_CHARS: usize = 4;

pub async fn run(p: &Metrics, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    send_in_order(ctx, &p.setup).await?;
    let before = scrape(ctx, &p.path, "scrape before the traffic").await?;
    let sent = traffic::send(ctx, &p.traffic, Tagging::None).await?;
    // A correct service may count a request just after its response has gone (a middleware on
    // the response's "finish" event): the scrape is repeated until the verdict is a pass or
    // SETTLE has passed, and the last one is judged and shown.
    let settle_until = Instant::now() + SETTLE;
    loop {
        let shown_from = ctx.exchanges.len();
        let after = scrape(ctx, &p.path, "scrape after the traffic").await?;
        let naming = naming_of(&after)?;
        let verdict = match p.judge {
            Judge::Exposition => judge_exposition(ctx, &after, naming),
            Judge::Counter => judge_counter(ctx, &before, &after, naming, &sent),
            Judge::Histogram => judge_histogram(ctx, &before, &after, naming, &sent),
            Judge::Cardinality => judge_cardinality(ctx, &before, &after, naming, &sent, p),
        };
        if verdict.is_ok() || p.judge == Judge::Exposition || Instant::now() >= settle_until {
            return verdict;
        }
        tokio::time::sleep(RESCRAPE).await;
        ctx.exchanges.truncate(shown_from);
    }
}

/// `GET path`: a 200 in the text format, parsed.
async fn scrape(ctx: &mut CheckContext<'_>, path: &str, name: &str) -> Result<Scrape, Failure> {
    let spec = RequestSpec {
        method: "GET".into(),
        path: path.into(),
        headers: Vec::new(),
        body: None,
    };
    let req = build_request(ctx, &spec)?;
    let resp = ctx.send(name, req).await?;
    if resp.status != 200 {
        return Err(fail(
            format!("{name}: GET {path} answered {}", resp.status),
            "200 with the Prometheus text format",
            format!("status {}", resp.status),
            Vec::new(),
        ));
    }
    let content_type = resp.header("content-type").unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "text/plain" && media != "application/openmetrics-text" {
        return Err(fail(
            format!(
                "{name}: GET {path} answered Content-Type {}",
                if content_type.is_empty() {
                    "(none)".to_string()
                } else {
                    format!("\"{content_type}\"")
                }
            ),
            "Content-Type: text/plain; version=0.0.4 (or application/openmetrics-text)",
            format!("Content-Type: {content_type}"),
            Vec::new(),
        ));
    }
    let text = String::from_utf8_lossy(&resp.body);
    exposition::parse(&text).map_err(|e| {
        fail(
            format!(
                "{name}: GET {path} is not the Prometheus text format: line {}: {}",
                e.line, e.message
            ),
            "every line a sample (name{label=\"value\"} number), a # HELP or # TYPE line, a comment or empty",
            format!("line {}: {}", e.line, e.text),
            Vec::new(),
        )
    })
}

fn naming_of(scrape: &Scrape) -> Result<&'static Naming, Failure> {
    let has = |prefix: &str| scrape.samples.iter().any(|s| s.name.starts_with(prefix));
    if has("http_requests_total") || has("http_request_duration_seconds_") {
        return Ok(&PROMETHEUS);
    }
    if has("http_server_request_duration_seconds_") {
        return Ok(&OPENTELEMETRY);
    }
    let names: BTreeSet<&str> = scrape.samples.iter().map(|s| s.name.as_str()).collect();
    Err(fail(
        "your metrics have no request metrics under either naming the README allows".into(),
        "http_requests_total and http_request_duration_seconds, or http_server_request_duration_seconds",
        if names.is_empty() {
            "no samples at all".into()
        } else {
            format!(
                "samples named {}",
                names.into_iter().take(MAX_EVIDENCE).collect::<Vec<_>>().join(", ")
            )
        },
        Vec::new(),
    ))
}

/// (method, route label, status label) → value, summed over any other labels.
type Counts = BTreeMap<(String, String, String), f64>;

/// The request counts a scrape shows: the counter, or with OpenTelemetry naming the histogram's
/// `_count`.
fn request_counts(scrape: &Scrape, naming: &Naming) -> Counts {
    let name = match naming.counter {
        Some(counter) => counter.to_string(),
        None => format!("{}_count", naming.histogram),
    };
    counts_of(scrape, &name, naming)
}

fn counts_of(scrape: &Scrape, name: &str, naming: &Naming) -> Counts {
    let mut out = Counts::new();
    for s in scrape.samples.iter().filter(|s| s.name == name) {
        let key = (
            s.label(naming.method).unwrap_or("").to_string(),
            s.label(naming.route).unwrap_or("").to_string(),
            s.label(naming.status).unwrap_or("").to_string(),
        );
        *out.entry(key).or_default() += s.value;
    }
    out
}

fn delta(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

fn describe(naming: &Naming, name: &str, key: &(String, String, String)) -> String {
    let mut labels = vec![
        format!("{}=\"{}\"", naming.method, key.0),
        format!("{}=\"{}\"", naming.route, key.1),
    ];
    if !key.2.is_empty() {
        labels.push(format!("{}=\"{}\"", naming.status, key.2));
    }
    format!("{name}{{{}}}", labels.join(","))
}

/// How many requests were sent per (method, route template, status).
fn sent_by_status(sent: &[Sent]) -> BTreeMap<(String, String, u16), u32> {
    let mut out = BTreeMap::new();
    for s in sent {
        *out.entry((s.method.clone(), s.route.clone(), s.status))
            .or_default() += 1;
    }
    out
}

fn judge_exposition(
    ctx: &mut CheckContext<'_>,
    after: &Scrape,
    naming: &Naming,
) -> Result<(), Failure> {
    let mut problems = Vec::new();
    let families: Vec<(String, &str)> = match naming.counter {
        Some(counter) => vec![
            (counter.to_string(), "counter"),
            (naming.histogram.to_string(), "histogram"),
        ],
        None => vec![(naming.histogram.to_string(), "histogram")],
    };
    for (family, kind) in &families {
        // OpenMetrics declares a counter by its name without `_total`.
        let declared = after
            .types
            .get(family)
            .or_else(|| after.types.get(family.trim_end_matches("_total")));
        if declared.map(String::as_str) != Some(kind) {
            problems.push(format!(
                "no `# TYPE {family} {kind}` line{}: without it Prometheus reads the samples as untyped numbers",
                declared.map_or(String::new(), |d| format!(" (it is declared {d})"))
            ));
        }
    }
    let histogram_count = format!("{}_count", naming.histogram);
    let mut required = vec![(histogram_count.clone(), vec![naming.method, naming.route])];
    if let Some(counter) = naming.counter {
        required.push((
            counter.to_string(),
            vec![naming.method, naming.route, naming.status],
        ));
    } else {
        required[0].1.push(naming.status);
    }
    for (name, labels) in &required {
        let samples: Vec<&Sample> = after.samples.iter().filter(|s| &s.name == name).collect();
        match samples
            .iter()
            .find(|s| labels.iter().any(|l| s.label(l).is_none()))
        {
            _ if samples.is_empty() => problems.push(format!("no {name} samples")),
            Some(s) => problems.push(format!(
                "line {}: {} lacks the label{} {}",
                s.line,
                s.series(),
                if labels.len() == 1 { "" } else { "s" },
                labels
                    .iter()
                    .filter(|l| s.label(l).is_none())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => {}
        }
    }
    if let Some(first) = problems.first() {
        return Err(fail(
            format!("your metrics ({}): {first}", naming.title),
            "the request counter and latency histogram the README names, typed, with their labels",
            first.clone(),
            problems.clone(),
        ));
    }
    ctx.measured(format!(
        "{} samples parsed, {} naming",
        after.samples.len(),
        naming.title
    ));
    Ok(())
}

fn judge_counter(
    ctx: &mut CheckContext<'_>,
    before: &Scrape,
    after: &Scrape,
    naming: &Naming,
    sent: &[Sent],
) -> Result<(), Failure> {
    let grown = delta(
        &request_counts(before, naming),
        &request_counts(after, naming),
    );
    let counter_name = naming
        .counter
        .map(String::from)
        .unwrap_or_else(|| format!("{}_count", naming.histogram));
    let mut mismatches = Vec::new();
    let mut matched = Vec::new();
    for ((method, route, status), n) in sent_by_status(sent) {
        let status_text = status.to_string();
        let got: f64 = grown
            .iter()
            .filter(|((m, r, s), _)| {
                m.eq_ignore_ascii_case(&method) && route_matches(r, &route) && *s == status_text
            })
            .map(|(_, v)| v)
            .sum();
        let line =
            format!("{method} {route} answered {status} {n} times; the counter grew by {got}");
        if (got - f64::from(n)).abs() > 1e-9 {
            mismatches.push(line);
        } else {
            matched.push(line);
        }
    }
    if let Some(first) = mismatches.first() {
        let mut evidence = mismatches.clone();
        evidence.extend(matched.iter().map(|m| format!("as expected: {m}")));
        // Method, status and growth first: the order then does not depend on an id in a label.
        let mut moved: Vec<(&(String, String, String), &f64)> =
            grown.iter().filter(|(_, v)| **v != 0.0).collect();
        moved.sort_by(|(a, x), (b, y)| {
            (&a.0, &a.2)
                .cmp(&(&b.0, &b.2))
                .then(y.total_cmp(x))
                .then(a.1.cmp(&b.1))
        });
        let moved: Vec<String> = moved
            .into_iter()
            .take(MAX_EVIDENCE)
            .map(|(k, v)| format!("grew: {} +{v}", describe(naming, &counter_name, k)))
            .collect();
        if moved.is_empty() {
            evidence.push(format!("no {counter_name} series grew at all"));
        }
        evidence.extend(moved);
        return Err(fail(
            format!("your request counter does not match the traffic: {first}"),
            "each method, route template and status series grows by exactly the requests sent",
            first.clone(),
            evidence,
        ));
    }
    ctx.measured(format!(
        "{} requests in {} series, each counted exactly ({})",
        sent.len(),
        matched.len(),
        naming.title
    ));
    Ok(())
}

/// One histogram series: its buckets (le, cumulative count), `_count` and `_sum`.
#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
    /// The first line of the series, for messages.
    line: usize,
    method: String,
    route: String,
}

fn histograms(scrape: &Scrape, naming: &Naming) -> BTreeMap<String, Histogram> {
    let mut out: BTreeMap<String, Histogram> = BTreeMap::new();
    for s in &scrape.samples {
        let Some(suffix) = s.name.strip_prefix(naming.histogram) else {
            continue;
        };
        // `_created` (OpenMetrics) and other neighbours are not part of the histogram.
        if !matches!(suffix, "_bucket" | "_count" | "_sum") {
            continue;
        }
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        labels.sort();
        let key = format!("{labels:?}");
        let h = out.entry(key).or_insert_with(|| Histogram {
            line: s.line,
            method: s.label(naming.method).unwrap_or("").into(),
            route: s.label(naming.route).unwrap_or("").into(),
            ..Default::default()
        });
        match suffix {
            "_bucket" => {
                let le = s
                    .label("le")
                    .and_then(|v| match v.to_ascii_lowercase().as_str() {
                        "+inf" | "inf" => Some(f64::INFINITY),
                        v => v.parse().ok(),
                    })
                    .unwrap_or(f64::NAN);
                h.buckets.push((le, s.value));
            }
            "_count" => h.count = Some(s.value),
            "_sum" => h.sum = Some(s.value),
            _ => {}
        }
    }
    out
}

/// What is wrong with one series' shape, if anything.
fn shape_problem(name: &str, h: &Histogram) -> Option<String> {
    if h.buckets.iter().any(|(le, _)| le.is_nan()) {
        return Some(format!(
            "{name} (line {}): a _bucket without a numeric le label",
            h.line
        ));
    }
    let mut buckets = h.buckets.clone();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let Some(&(last_le, inf)) = buckets.last() else {
        return Some(format!("{name} (line {}): no _bucket samples", h.line));
    };
    if last_le != f64::INFINITY {
        return Some(format!("{name} (line {}): no le=\"+Inf\" bucket", h.line));
    }
    if let Some(w) = buckets.windows(2).find(|w| w[1].1 < w[0].1) {
        return Some(format!(
            "{name} (line {}): buckets are cumulative, but le=\"{}\" holds {} and le=\"{}\" only {}",
            h.line, w[0].0, w[0].1, w[1].0, w[1].1
        ));
    }
    let Some(count) = h.count else {
        return Some(format!("{name} (line {}): no _count sample", h.line));
    };
    if h.sum.is_none() {
        return Some(format!("{name} (line {}): no _sum sample", h.line));
    }
    if (inf - count).abs() > 1e-9 {
        return Some(format!(
            "{name} (line {}): the le=\"+Inf\" bucket holds {inf} but _count is {count}; they must be equal",
            h.line
        ));
    }
    None
}

fn judge_histogram(
    ctx: &mut CheckContext<'_>,
    before: &Scrape,
    after: &Scrape,
    naming: &Naming,
    sent: &[Sent],
) -> Result<(), Failure> {
    let name = naming.histogram;
    let after_h = histograms(after, naming);
    if after_h.is_empty() {
        return Err(fail(
            format!("your metrics have no {name} histogram"),
            "a latency histogram with _bucket, _sum and _count samples",
            "no such samples".into(),
            Vec::new(),
        ));
    }
    if let Some(problem) = after_h.values().find_map(|h| shape_problem(name, h)) {
        return Err(fail(
            format!("your latency histogram is not well formed: {problem}"),
            "cumulative buckets up to le=\"+Inf\", which equals _count, and a _sum",
            problem,
            Vec::new(),
        ));
    }
    let before_h = histograms(before, naming);
    let mut per_route: BTreeMap<(String, String), (u32, Duration)> = BTreeMap::new();
    for s in sent {
        let e = per_route
            .entry((s.method.clone(), s.route.clone()))
            .or_default();
        e.0 += 1;
        e.1 += s.elapsed;
    }
    let mut lines = Vec::new();
    for ((method, route), (n, elapsed)) in &per_route {
        let (mut count, mut sum) = (0.0, 0.0);
        for (key, h) in &after_h {
            if !(h.method.eq_ignore_ascii_case(method) && route_matches(&h.route, route)) {
                continue;
            }
            let old = before_h.get(key);
            count += h.count.unwrap_or(0.0) - old.and_then(|o| o.count).unwrap_or(0.0);
            sum += h.sum.unwrap_or(0.0) - old.and_then(|o| o.sum).unwrap_or(0.0);
        }
        if (count - f64::from(*n)).abs() > 1e-9 {
            return Err(fail(
                format!(
                    "{method} {route} was requested {n} times, but your histogram's _count for it grew by {count}"
                ),
                "_count grows by one per request",
                format!("{name}_count grew by {count}"),
                Vec::new(),
            ));
        }
        let bound = elapsed.as_secs_f64() + SUM_SLACK_PER_REQUEST.as_secs_f64() * f64::from(*n);
        if !(sum > 0.0 && sum <= bound) {
            let why = if sum > bound {
                format!(
                    "{:.1} times what the grader's own clock measured from sending each request to reading its answer: a unit other than seconds (milliseconds?)",
                    sum / elapsed.as_secs_f64().max(1e-9)
                )
            } else {
                "nothing was measured".into()
            };
            return Err(fail(
                format!(
                    "{method} {route}: your histogram's _sum grew by {sum:.6} for {n} requests, {why}"
                ),
                "durations in seconds: the sum at most the grader's own measurement",
                format!(
                    "_sum grew by {sum:.6}; the grader measured {:.6} s for these {n} requests in all",
                    elapsed.as_secs_f64()
                ),
                Vec::new(),
            ));
        }
        lines.push(format!(
            "{method} {route}: {n} observations, {sum:.6} s of {:.6} s the grader measured",
            elapsed.as_secs_f64()
        ));
    }
    ctx.measured(lines.join("; "));
    Ok(())
}

fn judge_cardinality(
    ctx: &mut CheckContext<'_>,
    before: &Scrape,
    after: &Scrape,
    naming: &Naming,
    sent: &[Sent],
    p: &Metrics,
) -> Result<(), Failure> {
    let ids: BTreeSet<&str> = sent
        .iter()
        .flat_map(|s| s.ids.iter())
        .map(String::as_str)
        .filter(|id| id.chars().count() >= MIN_ID_CHARS)
        .collect();
    // Listed by their series with the ids masked, so the same service shows the same examples
    // whatever ids the run drew (the scrape itself is usually sorted by the raw label).
    let mut holding_ids: Vec<(String, String)> = after
        .samples
        .iter()
        .filter_map(|s| {
            let (label, value) = s
                .labels
                .iter()
                .find(|(_, v)| ids.iter().any(|id| v.contains(id)))?;
            let masked = ids
                .iter()
                .fold(s.series(), |text, id| text.replace(id, "{id}"));
            Some((
                masked,
                format!("line {}: {label}=\"{value}\" in {}", s.line, s.series()),
            ))
        })
        .collect();
    holding_ids.sort();
    let holding_ids: Vec<String> = holding_ids.into_iter().map(|(_, shown)| shown).collect();
    if let Some(first) = holding_ids.first() {
        return Err(fail(
            format!(
                "{} samples carry an id the grader sent in a label ({first}): every id makes a new time series",
                holding_ids.len()
            ),
            "route labels are templates such as /shipments/{id}",
            first.clone(),
            holding_ids.into_iter().take(MAX_EVIDENCE).collect(),
        ));
    }
    let old: BTreeSet<String> = before.samples.iter().map(Sample::series).collect();
    let new: Vec<String> = after
        .samples
        .iter()
        .map(Sample::series)
        .filter(|s| !old.contains(s))
        .collect();
    if new.len() > p.max_new_series {
        return Err(fail(
            format!(
                "{} requests made {} new time series: a label takes a new value per request",
                sent.len(),
                new.len()
            ),
            format!("at most {} new series", p.max_new_series),
            format!("{} new series", new.len()),
            new.into_iter().take(MAX_EVIDENCE).collect(),
        ));
    }
    let total = |c: &Counts| c.values().sum::<f64>();
    let counted = total(&delta(
        &request_counts(before, naming),
        &request_counts(after, naming),
    ));
    let histogram_name = format!("{}_count", naming.histogram);
    let observed = total(&delta(
        &counts_of(before, &histogram_name, naming),
        &counts_of(after, &histogram_name, naming),
    ));
    if counted.max(observed) < sent.len() as f64 {
        return Err(fail(
            format!(
                "your metrics counted {} of the {} requests the grader sent: with nothing counted, there is no cardinality to judge",
                counted.max(observed),
                sent.len()
            ),
            "every request counted under its route template",
            format!("the request counter grew by {counted}, the histogram's _count by {observed}"),
            Vec::new(),
        ));
    }
    ctx.measured(format!(
        "{} requests with {} distinct ids made {} new series, no label holds an id",
        sent.len(),
        ids.len(),
        new.len()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(text: &str) -> Scrape {
        exposition::parse(text).unwrap()
    }

    #[test]
    fn both_namings_are_recognised_and_counted() {
        let p = scrape("http_requests_total{method=\"GET\",route=\"/q\",status=\"200\",instance=\"a\"} 2\nhttp_requests_total{method=\"GET\",route=\"/q\",status=\"200\",instance=\"b\"} 3\n");
        let naming = naming_of(&p).unwrap();
        assert_eq!(naming, &PROMETHEUS);
        let counts = request_counts(&p, naming);
        assert_eq!(counts[&("GET".into(), "/q".into(), "200".into())], 5.0);
        let o = scrape("http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/q\",http_response_status_code=\"404\"} 4\n");
        let naming = naming_of(&o).unwrap();
        assert_eq!(naming, &OPENTELEMETRY);
        assert_eq!(
            request_counts(&o, naming)[&("GET".into(), "/q".into(), "404".into())],
            4.0
        );
        assert!(naming_of(&scrape("up 1\n")).is_err());
    }

    #[test]
    fn histogram_shapes_are_judged() {
        let h = |text: &str| {
            let s = scrape(text);
            let all = histograms(&s, &PROMETHEUS);
            all.values().find_map(|h| shape_problem("h", h))
        };
        let good = "http_request_duration_seconds_bucket{le=\"0.1\",route=\"/q\"} 1\nhttp_request_duration_seconds_bucket{le=\"+Inf\",route=\"/q\"} 2\nhttp_request_duration_seconds_count{route=\"/q\"} 2\nhttp_request_duration_seconds_sum{route=\"/q\"} 0.3\n";
        assert_eq!(h(good), None);
        assert!(h(&good.replace(
            "} 2\nhttp_request_duration_seconds_count",
            "} 3\nhttp_request_duration_seconds_count"
        ))
        .unwrap()
        .contains("must be equal"));
        assert!(
            h(&good.replace("le=\"0.1\",route=\"/q\"} 1", "le=\"0.1\",route=\"/q\"} 5"))
                .unwrap()
                .contains("cumulative")
        );
        assert!(h(&good.replace("le=\"+Inf\"", "le=\"1\""))
            .unwrap()
            .contains("+Inf"));
        assert!(
            h(&good.replace("http_request_duration_seconds_sum{route=\"/q\"} 0.3\n", ""))
                .unwrap()
                .contains("_sum")
        );
    }
}
