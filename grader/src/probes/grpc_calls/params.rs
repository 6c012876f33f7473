//! `grpc_calls` parameters.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use crate::probes::db_params::{parse_answers, parse_sample, Answer};
use crate::probes::request::{de, duration, query, upstream, UpstreamParams};
use crate::spec::{predicate, template, JsonQuery, Predicate};
use crate::upstream::Fault;

#[derive(Debug, Clone)]
pub struct GrpcCalls {
    /// The service whose reflection describes the methods (`shop.v1.Shop`).
    pub service: String,
    /// Variables taken from the data set by read-only SQL, before the first call.
    pub sample: Vec<(String, String)>,
    pub calls: Vec<Call>,
    /// Responses compared with answers the grader computes from its data (`request` = call).
    pub answers: Vec<Answer>,
    /// Read-only SQL whose answers must be the same after the calls as before.
    pub same_after: Vec<String>,
    /// A mock upstream's behaviour during the calls (a fault, a delay), and the calls it must
    /// have received by the end.
    pub upstream: Option<UpstreamParams>,
    /// Every status message must be free of internals (a stack trace, SQL, an exception's
    /// class): judged where a check says so, so that a leak fails the check about leaks and not
    /// every check that happened to provoke one.
    pub messages_free_of_internals: bool,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub name: String,
    /// `package.Service/Method`.
    pub method: String,
    /// The request message as JSON (templates allowed).
    pub json: Value,
    /// ASCII metadata, lower-case keys (templates allowed in values).
    pub metadata: Vec<(String, String)>,
    /// Sent as `grpc-timeout`.
    pub deadline: Option<Duration>,
    /// The codes the README allows for this call (`OK` unless said; `"ANY"`: every code).
    pub codes: Vec<tonic::Code>,
    /// Predicates on the response message (an `OK` reply's JSON, proto field names).
    pub expect_json: Vec<(JsonQuery, Predicate)>,
    /// The `field_violations` an `INVALID_ARGUMENT` must carry in a `google.rpc.BadRequest`,
    /// by field name, exactly these (in any order).
    pub bad_request: Option<Vec<String>>,
    /// Values taken from an `OK` response for later calls' templates.
    pub captures: Vec<(String, JsonQuery)>,
    /// The status must come within this long (a dependency's timeout the README states).
    pub within: Option<Duration>,
    /// The fault `upstream`'s route has from this call on (each kind of failure the README
    /// names, one call each: a status, a connection reset, ...).
    pub upstream_fault: Option<Fault>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GrpcCallsParams")]
pub struct Raw {
    service: String,
    #[serde(default)]
    sample: BTreeMap<String, String>,
    #[schemars(with = "Vec<RawCall>")]
    calls: Vec<toml::Value>,
    #[serde(default)]
    #[schemars(with = "Vec<crate::probes::db_params::RawAnswer>")]
    answers: Vec<toml::Value>,
    #[serde(default)]
    same_after: Vec<String>,
    #[schemars(with = "Option<crate::probes::request::RawUpstream>")]
    upstream: Option<toml::Value>,
    #[serde(default)]
    messages_free_of_internals: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GrpcCall")]
pub struct RawCall {
    name: String,
    method: String,
    #[schemars(with = "serde_json::Value")]
    json: toml::Value,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    deadline: Option<String>,
    /// One code name (`NOT_FOUND`), several, or `"ANY"`; `OK` when absent.
    #[schemars(with = "Option<serde_json::Value>")]
    code: Option<toml::Value>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    expect_json: BTreeMap<String, toml::Value>,
    bad_request: Option<Vec<String>>,
    #[serde(default)]
    capture: BTreeMap<String, String>,
    within: Option<String>,
    /// `"500"`, `"reset"`, `"drop"` or `"timeout"`: the fault of the check's `upstream` route from
    /// this call on.
    upstream_fault: Option<String>,
}

pub fn parse(params: toml::Value) -> Result<GrpcCalls, String> {
    let raw: Raw = de("params of `grpc_calls`", params)?;
    let sample = parse_sample(raw.sample)?;
    if raw.calls.is_empty() {
        return Err("`calls` lists at least one call".into());
    }
    let calls = raw
        .calls
        .into_iter()
        .enumerate()
        .map(|(i, v)| call(i, v))
        .collect::<Result<Vec<_>, _>>()?;
    let count = calls.len();
    let answers = parse_answers(
        raw.answers,
        "request",
        |n| (1..=count).contains(&n),
        &sample,
    )?;
    for sql in &raw.same_after {
        let head = sql.trim_start().to_ascii_lowercase();
        if !(head.starts_with("select") || head.starts_with("with")) {
            return Err(format!("`same_after` holds read-only SELECTs; got {sql:?}"));
        }
    }
    if let Some(i) = calls.iter().position(|c| c.upstream_fault.is_some()) {
        if raw.upstream.is_none() {
            return Err(format!(
                "calls[{i}]: `upstream_fault` changes the route of `upstream`; add `upstream = {{ name = \"...\", route = \"GET /...\" }}`"
            ));
        }
    }
    Ok(GrpcCalls {
        service: raw.service,
        sample,
        calls,
        answers,
        same_after: raw.same_after,
        upstream: raw.upstream.map(upstream).transpose()?,
        messages_free_of_internals: raw.messages_free_of_internals,
    })
}

fn call(index: usize, v: toml::Value) -> Result<Call, String> {
    let what = format!("calls[{index}]");
    let r: RawCall = de(&what, v)?;
    if !r.method.contains('/') {
        return Err(format!(
            "{what}: `method` is package.Service/Method (shop.v1.Shop/GetOrder), got {:?}",
            r.method
        ));
    }
    let codes = match &r.code {
        None => vec![tonic::Code::Ok],
        // Where the README leaves the code open, the call is judged on the rest (its message).
        Some(toml::Value::String(s)) if s == "ANY" => (0..=16).map(tonic::Code::from).collect(),
        Some(toml::Value::String(s)) => vec![code(&what, s)?],
        Some(toml::Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|v| match v {
                toml::Value::String(s) => code(&what, s),
                _ => Err(format!("{what}: `code` holds code names")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(format!(
                "{what}: `code` is a code name (\"NOT_FOUND\") or a list of them"
            ))
        }
    };
    if r.bad_request.is_some() && codes != [tonic::Code::InvalidArgument] {
        return Err(format!(
            "{what}: `bad_request` goes with code = \"INVALID_ARGUMENT\" (AIP-193 details)"
        ));
    }
    let mut expect_json = Vec::new();
    for (path, pred) in r.expect_json {
        expect_json.push((query(&path)?, predicate::parse(&pred)?));
    }
    let mut captures = Vec::new();
    for (name, path) in r.capture {
        captures.push((name, query(&path)?));
    }
    for key in r.metadata.keys() {
        if key.is_empty() || key != &key.to_ascii_lowercase() || key.starts_with("grpc-") {
            return Err(format!(
                "{what}: metadata key {key:?} must be lower-case and not grpc-* (use `deadline` for grpc-timeout)"
            ));
        }
    }
    Ok(Call {
        name: r.name,
        method: r.method,
        json: predicate::to_json(&r.json)?,
        metadata: r.metadata.into_iter().collect(),
        deadline: r
            .deadline
            .map(|d| duration(&format!("{what}.deadline"), &d))
            .transpose()?,
        codes,
        expect_json,
        bad_request: r.bad_request,
        captures,
        within: r
            .within
            .map(|d| duration(&format!("{what}.within"), &d))
            .transpose()?,
        upstream_fault: r
            .upstream_fault
            .as_deref()
            .map(Fault::parse)
            .transpose()
            .map_err(|e| format!("{what}.upstream_fault: {e}"))?,
    })
}

/// A code by its canonical name (`NOT_FOUND`).
pub fn code(what: &str, name: &str) -> Result<tonic::Code, String> {
    (0..=16)
        .map(tonic::Code::from)
        .find(|c| crate::grpc::code_name(*c) == name)
        .ok_or_else(|| format!("{what}: {name:?} is not a gRPC status code name (NOT_FOUND, INVALID_ARGUMENT, ...)"))
}

impl GrpcCalls {
    /// Every template the probe renders, sampled and captured variables replaced, for the static
    /// check of variables.
    pub fn template_strings(&self) -> Vec<String> {
        let placeholder = |v: String| format!("{{{{{v}}}}}");
        let mut out = Vec::new();
        for c in &self.calls {
            if let Ok(vars) = template::variables_in_json(&c.json) {
                out.extend(vars.into_iter().map(placeholder));
            }
            out.extend(c.metadata.iter().map(|(_, v)| v.clone()));
            for (_, p) in &c.expect_json {
                out.extend(predicate::template_strings(p).into_iter().map(String::from));
            }
        }
        let known: Vec<String> = self
            .sample
            .iter()
            .map(|(n, _)| n.clone())
            .chain(self.captured_names())
            .collect();
        out.into_iter()
            .map(|mut s| {
                for name in &known {
                    s = s.replace(&format!("{{{{{name}}}}}"), "known");
                }
                s
            })
            .collect()
    }

    pub fn captured_names(&self) -> Vec<String> {
        self.calls
            .iter()
            .flat_map(|c| c.captures.iter().map(|(n, _)| n.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<GrpcCalls, String> {
        parse(toml::from_str(text).unwrap())
    }

    #[test]
    fn codes_are_names_lists_or_any_and_details_go_with_invalid_argument() {
        let p = parse_text(
            "service = \"s.S\"\n\
             [[calls]]\nname = \"a\"\nmethod = \"s.S/M\"\njson = {}\n\
             [[calls]]\nname = \"b\"\nmethod = \"s.S/M\"\njson = {}\ncode = [\"NOT_FOUND\", \"OK\"]\n\
             [[calls]]\nname = \"c\"\nmethod = \"s.S/M\"\njson = {}\ncode = \"ANY\"\n\
             [[calls]]\nname = \"d\"\nmethod = \"s.S/M\"\njson = {}\ncode = \"INVALID_ARGUMENT\"\nbad_request = [\"id\"]\n",
        )
        .unwrap();
        assert_eq!(p.calls[0].codes, [tonic::Code::Ok]);
        assert_eq!(p.calls[1].codes, [tonic::Code::NotFound, tonic::Code::Ok]);
        assert_eq!(p.calls[2].codes.len(), 17);
        assert_eq!(
            p.calls[3].bad_request.as_deref(),
            Some(&["id".to_string()][..])
        );

        let wrong = |call: &str| {
            parse_text(&format!(
                "service = \"s.S\"\n[[calls]]\nname = \"a\"\njson = {{}}\n{call}"
            ))
            .unwrap_err()
        };
        assert!(
            wrong("method = \"s.S/M\"\ncode = \"MISSING\"").contains("not a gRPC status code name")
        );
        assert!(wrong("method = \"s.S/M\"\nbad_request = [\"id\"]").contains("goes with code"));
        assert!(wrong("method = \"GetOrder\"").contains("package.Service/Method"));
        assert!(
            wrong("method = \"s.S/M\"\nmetadata = { grpc-timeout = \"1S\" }").contains("deadline")
        );
        assert!(wrong("method = \"s.S/M\"\nupstream_fault = \"reset\"")
            .contains("`upstream_fault` changes the route of `upstream`"));
    }

    #[test]
    fn a_call_may_change_the_upstream_fault_from_its_turn_on() {
        let text = |fault: &str| {
            format!(
                "service = \"s.S\"\nupstream = {{ name = \"loyalty\", route = \"GET /t\", fault = \"500\" }}\n\
                 [[calls]]\nname = \"a\"\nmethod = \"s.S/M\"\njson = {{}}\n\
                 [[calls]]\nname = \"b\"\nmethod = \"s.S/M\"\njson = {{}}\nupstream_fault = \"{fault}\"\n"
            )
        };
        let p = parse_text(&text("reset")).unwrap();
        assert_eq!(p.calls[0].upstream_fault, None);
        assert_eq!(p.calls[1].upstream_fault, Some(Fault::Reset));
        let err = parse_text(&text("broken")).unwrap_err();
        assert!(
            err.starts_with("calls[1].upstream_fault: fault \"broken\""),
            "{err}"
        );
    }
}
