//! The Prometheus text exposition format (0.0.4, and the OpenMetrics 1.0 text it grew into), read
//! line by line as Prometheus reads a scrape: every line is a sample, a `# HELP` or `# TYPE` line,
//! another comment, or empty; anything else is an error naming its line.
//!
//! Why not a parser crate: the two maintained-looking ones each get a valid scrape wrong in a way
//! that would fail a correct learner. `prometheus-parse` matches label sets with `\{[^}]+\}`, so a
//! route label such as `route="/shipments/{id}"` (exactly what the exercise asks for) is cut at
//! its first `}`, and it drops lines it cannot read without a word. `prom_text_format_parser`
//! refuses a family with a `# TYPE` and no samples yet (Python's `prometheus_client` writes one for
//! every labelled metric before its first observation) and OpenMetrics counters (`# TYPE x
//! counter` with samples `x_total`). `openmetrics-parser` is LGPL-3.0. The grammar is small and
//! fully specified, so it is written here, with the spec's escapes and float forms, and tested
//! below against the scrapes the common clients write.

use std::collections::{BTreeMap, HashSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Label pairs in the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// 1-based line number in the scrape.
    pub line: usize,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `name{a="1",b="2"}`, as written in the format (values escaped).
    pub fn series(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// `# TYPE` lines: family name → type as written (`counter`, `histogram`, ...).
    pub types: BTreeMap<String, String>,
}

/// Why a scrape is not the format: the line and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub line: usize,
    pub text: String,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {} ({:?})", self.line, self.message, self.text)
    }
}

const TYPES: &[&str] = &[
    "counter",
    "gauge",
    "histogram",
    "summary",
    "untyped",
    // OpenMetrics 1.0.
    "unknown",
    "info",
    "stateset",
    "gaugehistogram",
];

/// Characters of an offending line shown in an error.
const SHOWN_CHARS: usize = 120;

pub fn parse(text: &str) -> Result<Scrape, ParseError> {
    let mut scrape = Scrape::default();
    let mut seen_series: HashSet<String> = HashSet::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index + 1;
        let error = |message: String| ParseError {
            line,
            text: raw.chars().take(SHOWN_CHARS).collect(),
            message,
        };
        if raw.trim_matches([' ', '\t']).is_empty() {
            if raw.contains('\r') {
                return Err(error(
                    "a carriage return: lines end with \\n alone, never \\r\\n".into(),
                ));
            }
            continue;
        }
        if let Some(comment) = raw.strip_prefix('#') {
            comment_line(comment, &mut scrape).map_err(error)?;
            continue;
        }
        let sample = sample_line(raw, line).map_err(error)?;
        let mut labels = sample.labels.clone();
        labels.sort();
        let key = format!("{}{labels:?}", sample.name);
        if !seen_series.insert(key) {
            return Err(error(format!(
                "the series {} appears twice: each series once per scrape",
                sample.series()
            )));
        }
        scrape.samples.push(sample);
    }
    Ok(scrape)
}

/// `# HELP name text`, `# TYPE name type`, or any other comment (ignored, as Prometheus does).
fn comment_line(comment: &str, scrape: &mut Scrape) -> Result<(), String> {
    let mut words = comment
        .trim_start_matches([' ', '\t'])
        .splitn(3, [' ', '\t']);
    let keyword = words.next().unwrap_or("");
    if keyword != "HELP" && keyword != "TYPE" {
        return Ok(());
    }
    let name = words.next().unwrap_or("");
    if !is_metric_name(name) {
        return Err(format!(
            "# {keyword} names {name:?}, which is not a metric name"
        ));
    }
    if keyword == "HELP" {
        return Ok(());
    }
    let kind = words.next().unwrap_or("").trim_end_matches([' ', '\t']);
    if !TYPES.contains(&kind) {
        return Err(format!(
            "# TYPE {name} {kind:?}: the type is one of counter, gauge, histogram, summary or untyped"
        ));
    }
    if scrape.types.insert(name.into(), kind.into()).is_some() {
        return Err(format!("a second # TYPE line for {name}: one per metric"));
    }
    Ok(())
}

/// `name{label="value",...} value [timestamp]`.
fn sample_line(raw: &str, line: usize) -> Result<Sample, String> {
    let mut rest = raw.trim_start_matches([' ', '\t']);
    let name_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    let name = &rest[..name_end];
    if !is_metric_name(name) {
        return Err(format!(
            "a sample must start with a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), not {:?}",
            rest.chars().take(20).collect::<String>()
        ));
    }
    rest = &rest[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = label_set(after, &mut labels)?;
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let Some(value) = fields.next() else {
        return Err(format!("the sample {name} has no value"));
    };
    if !rest.starts_with([' ', '\t']) {
        return Err(format!(
            "a space must separate {name} and its labels from the value"
        ));
    }
    let value = float(value).ok_or_else(|| {
        let hint = if value.ends_with('\r') {
            " (a \\r at the end: lines end with \\n alone)"
        } else {
            ""
        };
        format!("{value:?} is not a number (a float, NaN, +Inf or -Inf){hint}")
    })?;
    if let Some(timestamp) = fields.next() {
        if timestamp.parse::<i64>().is_err() && timestamp.parse::<f64>().is_err() {
            return Err(format!("{timestamp:?} after the value is not a timestamp"));
        }
    }
    if let Some(extra) = fields.next() {
        return Err(format!("{extra:?} after the value and timestamp"));
    }
    Ok(Sample {
        name: name.into(),
        labels,
        value,
        line,
    })
}

/// Reads `label="value",...}` (after the `{`) into `labels`; returns what follows the `}`.
fn label_set<'a>(mut rest: &'a str, labels: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!(
                "a label name ([a-zA-Z_][a-zA-Z0-9_]*) was expected at {:?}",
                rest.chars().take(20).collect::<String>()
            ));
        }
        rest = rest[name_end..].trim_start_matches([' ', '\t']);
        let Some(after) = rest.strip_prefix('=') else {
            return Err(format!("the label {name} has no = after it"));
        };
        rest = after.trim_start_matches([' ', '\t']);
        let Some(after) = rest.strip_prefix('"') else {
            return Err(format!(
                "the value of the label {name} must be in double quotes, not {:?}",
                rest.chars().take(20).collect::<String>()
            ));
        };
        let (value, after) = quoted(after)
            .ok_or_else(|| format!("the value of the label {name} has no closing quote"))?;
        if labels.iter().any(|(k, _)| k == name) {
            return Err(format!("the label {name} appears twice in one sample"));
        }
        labels.push((name.into(), value?));
        rest = after.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!(
                "labels are separated by commas and closed with }}, not {:?}",
                rest.chars().take(20).collect::<String>()
            ));
        }
    }
}

/// The text of a quoted label value up to its closing quote (escapes resolved: `\\`, `\"`,
/// `\n`), and what follows it; `None` when it never closes. An unknown escape is an error.
fn quoted(text: &str) -> Option<(Result<String, String>, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((Ok(value), &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                '\\' => value.push('\\'),
                '"' => value.push('"'),
                'n' => value.push('\n'),
                other => {
                    return Some((
                        Err(format!(
                            "\\{other} in a label value: the only escapes are \\\\, \\\" and \\n"
                        )),
                        "",
                    ))
                }
            },
            c => value.push(c),
        }
    }
    None
}

/// A value as Go's `ParseFloat` reads it in Prometheus: decimal or exponent forms, `NaN`,
/// `+Inf`, `-Inf` (any case).
fn float(text: &str) -> Option<f64> {
    match text.to_ascii_lowercase().as_str() {
        "nan" => return Some(f64::NAN),
        "+inf" | "inf" => return Some(f64::INFINITY),
        "-inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !plain {
        return None;
    }
    text.parse().ok()
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTHON_CLIENT: &str = "# HELP http_requests_total Requests\n# TYPE http_requests_total counter\nhttp_requests_total{method=\"GET\",route=\"/shipments/{id}\",status=\"404\"} 4.0\n# HELP http_requests_created Requests\n# TYPE http_requests_created gauge\nhttp_requests_created{method=\"GET\",route=\"/shipments/{id}\",status=\"404\"} 1.7e+09\n# HELP http_request_duration_seconds Latency\n# TYPE http_request_duration_seconds histogram\nhttp_request_duration_seconds_bucket{le=\"0.005\",method=\"GET\",route=\"/quotes\"} 1.0\nhttp_request_duration_seconds_bucket{le=\"+Inf\",method=\"GET\",route=\"/quotes\"} 2.0\nhttp_request_duration_seconds_count{method=\"GET\",route=\"/quotes\"} 2.0\nhttp_request_duration_seconds_sum{method=\"GET\",route=\"/quotes\"} 0.0123\n# HELP empty_family No samples yet\n# TYPE empty_family counter\n";

    #[test]
    fn a_python_client_scrape_parses_with_braces_in_label_values() {
        let scrape = parse(PYTHON_CLIENT).unwrap();
        assert_eq!(scrape.samples.len(), 6);
        let first = &scrape.samples[0];
        assert_eq!(first.label("route"), Some("/shipments/{id}"));
        assert_eq!(first.value, 4.0);
        assert_eq!(first.line, 3);
        assert_eq!(scrape.types["empty_family"], "counter");
        let inf = &scrape.samples[3];
        assert_eq!(inf.label("le"), Some("+Inf"));
    }

    #[test]
    fn openmetrics_counters_timestamps_escapes_and_eof_parse() {
        let text = "# TYPE http_requests counter\n# UNIT x seconds\nhttp_requests_total{path=\"a\\\"b\\\\c\\nd\", m = \"x\",} 1e3 1700000000000\nup NaN\nneg -Inf\n# EOF\n";
        let scrape = parse(text).unwrap();
        assert_eq!(scrape.samples[0].label("path"), Some("a\"b\\c\nd"));
        assert_eq!(scrape.samples[0].label("m"), Some("x"));
        assert_eq!(scrape.samples[0].value, 1000.0);
        assert!(scrape.samples[1].value.is_nan());
        assert_eq!(scrape.samples[2].value, f64::NEG_INFINITY);
        assert_eq!(
            scrape.samples[0].series(),
            "http_requests_total{path=\"a\\\"b\\\\c\\nd\",m=\"x\"}"
        );
    }

    #[test]
    fn every_broken_line_is_named_with_its_number() {
        let err = |text: &str| parse(text).unwrap_err();
        let e = err("ok 1\nhttp_requests_total{method=GET} 1\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("must be in double quotes"), "{e}");
        assert!(err("x{a=\"1\"} one\n").message.contains("is not a number"));
        assert!(err("x 1\r\n").message.contains("\\r at the end"));
        assert!(err("x{a=\"1\" 2\n").message.contains("separated by commas"));
        assert!(err("x{a=\"1} 2\n").message.contains("no closing quote"));
        assert!(err("x{a=\"\\t\"} 2\n").message.contains("the only escapes"));
        assert!(err("x{a=\"1\",a=\"2\"} 2\n")
            .message
            .contains("appears twice"));
        assert!(err("x 1\nx 2\n").message.contains("appears twice"));
        assert!(err("{\"json\": 1}\n").message.contains("metric name"));
        assert!(err("x\n").message.contains("no value"));
        assert!(err("x 1 2 3\n").message.contains("after the value"));
        assert!(err("# TYPE x countr\n")
            .message
            .contains("the type is one of"));
        assert!(err("# TYPE x counter\n# TYPE x counter\n")
            .message
            .contains("second # TYPE"));
        assert!(err("x{}1\n").message.contains("a space must separate"));
        assert!(err("x 0x1F\n").message.contains("is not a number"));
    }

    #[test]
    fn nothing_panics_on_awkward_text() {
        for text in [
            "",
            "\n\n",
            "#",
            "# HELP",
            "# TYPE",
            "x{",
            "x{a",
            "x{a=",
            "x{a=\"",
            "x{a=\"\\",
            "é 1",
            "x{é=\"1\"} 1",
            "x 1 é",
            "\u{0}",
            "x{a=\"1\"}",
        ] {
            let _ = parse(text);
        }
    }
}
