//! Runs `grpc_calls`: the sample, the calls in order (each judged as it comes back), the answers,
//! then the SQL that must not have changed.

use serde_json::Value;

use super::params::{Call, GrpcCalls};
use crate::engine::assert::{self, Actual};
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::grpc::call::{self, CallSpec, Details, Reply};
use crate::grpc::code_name;
use crate::probes::db::{self, answers};
use crate::probes::no_internals_leak::reveals;
use crate::probes::rpc::{self, Sent};
use crate::probes::upstream_calls::run::{apply_behaviour, check_calls, set_fault};
use crate::spec::template;

pub async fn run(p: &GrpcCalls, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let client = if p.sample.is_empty() && p.same_after.is_empty() {
        None
    } else {
        Some(db::connect(ctx).await?)
    };
    if let Some(client) = &client {
        db::sample(client, &p.sample, ctx).await?;
    }
    let before = match &client {
        Some(client) => answers_of(client, &p.same_after).await?,
        None => Vec::new(),
    };
    let upstream = p
        .upstream
        .as_ref()
        .map(|u| apply_behaviour(ctx, u))
        .transpose()?;
    let channel = rpc::connect(ctx).await?;
    // Asked once, when a call needs it: the health service's calls do not.
    let mut reflected = None;
    for (i, c) in p.calls.iter().enumerate() {
        let method = if c.method.starts_with(&format!("{}/", rpc::HEALTH_SERVICE)) {
            rpc::health_method(&c.method)?
        } else {
            if reflected.is_none() {
                reflected = Some(rpc::reflect(&channel, &p.service).await?);
            }
            rpc::method(reflected.as_ref().expect("reflected above"), &c.method)?
        };
        if let (Some(fault), Some(u), Some(upstream)) = (c.upstream_fault, &p.upstream, &upstream) {
            set_fault(upstream, &u.route, fault)?;
        }
        let request = template::render_json(&c.json, &ctx.scope).map_err(Failure::Error)?;
        let mut metadata = Vec::new();
        for (k, v) in &c.metadata {
            metadata.push((
                k.clone(),
                template::render(v, &ctx.scope).map_err(Failure::Error)?,
            ));
        }
        let spec = CallSpec {
            method: &method,
            request: &request,
            metadata: &metadata,
            deadline: c.deadline,
        };
        let wait = c.deadline.map_or(rpc::CALL_WAIT, |d| d + rpc::CALL_WAIT);
        let result = call::unary(&channel, &spec, wait).await;
        let sent = Sent {
            step: &c.name,
            method: &c.method,
            request: &request,
            metadata: &metadata,
            deadline: c.deadline,
        };
        rpc::record(ctx, &sent, &result);
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => return Err(rpc::call_failure(ctx, &c.name, &c.method, e).await),
        };
        judge(c, &reply, &ctx.scope, p.messages_free_of_internals)?;
        let doc = reply.response.clone().unwrap_or(Value::Null);
        for a in p.answers.iter().filter(|a| a.at == i + 1) {
            if let Some(w) = answers::compare(a, &doc, &ctx.scope).map_err(Failure::Error)? {
                return Err(Failure::Fail(FailInfo {
                    message: format!("{} ({}): {}", c.name, c.method, w.message),
                    expected: w.expected,
                    actual: w.actual,
                    ..Default::default()
                }));
            }
        }
        for (name, q) in &c.captures {
            match q.path.query(&doc).at_most_one().ok().flatten() {
                Some(v) => {
                    ctx.scope.insert(name.clone(), v.clone());
                }
                None => {
                    return Err(Failure::Fail(FailInfo {
                        message: format!(
                            "{}: the response has no {}, which the next calls need",
                            c.name, q.text
                        ),
                        expected: format!("a value at {}", q.text),
                        actual: "absent".into(),
                        ..Default::default()
                    }))
                }
            }
        }
    }
    if let (Some(u), Some(upstream)) = (&p.upstream, &upstream) {
        check_calls(ctx, u, upstream)?;
    }
    if let Some(client) = &client {
        let after = answers_of(client, &p.same_after).await?;
        let changed: Vec<String> = p
            .same_after
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(_, (b, a))| b != a)
            .map(|(sql, (b, a))| format!("{sql}: {b} before the calls, {a} after"))
            .collect();
        if !changed.is_empty() {
            return Err(Failure::Fail(FailInfo {
                message: format!(
                    "the tables changed while the service refused these calls: {}",
                    changed[0]
                ),
                expected: "a call the service refuses changes nothing in the tables".into(),
                actual: changed.join("\n"),
                ..Default::default()
            }));
        }
        for (sql, value) in p.same_after.iter().zip(&after) {
            ctx.measured(format!("{sql}: {value} before and after the calls"));
        }
    }
    Ok(())
}

/// The first value of each query, as text.
async fn answers_of(
    client: &tokio_postgres::Client,
    queries: &[String],
) -> Result<Vec<String>, Failure> {
    let mut out = Vec::new();
    for sql in queries {
        let rows = client
            .simple_query(sql)
            .await
            .map_err(|e| Failure::Error(format!("{sql}: {}", crate::pg::db_error(&e))))?;
        out.push(
            rows.iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        Some(r.get(0).unwrap_or("NULL").to_string())
                    }
                    _ => None,
                })
                .unwrap_or_else(|| "no row".into()),
        );
    }
    Ok(out)
}

fn codes_text(c: &Call) -> String {
    c.codes
        .iter()
        .map(|code| code_name(*code))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// What a status message shows beyond the HTTP probes' signatures: the README's "never an SQL
/// statement ... or an exception's class name" (a gRPC library's default message for an
/// unhandled exception names both the exception and its type).
fn reveals_in_status(message: &str) -> Option<(&'static str, String)> {
    static SIGNATURES: std::sync::LazyLock<Vec<(&'static str, regex::Regex)>> =
        std::sync::LazyLock::new(|| {
            [
                (
                    "an SQL statement",
                    r"(?i)\bselect\s.+\sfrom\s|\binsert\s+into\s|\bupdate\s+\S+\s+set\s|\bdelete\s+from\s",
                ),
                (
                    "an exception",
                    r"Exception calling application|\bNoneType\b|\b[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception)\b",
                ),
            ]
            .into_iter()
            .map(|(what, re)| (what, regex::Regex::new(re).expect("static regex")))
            .collect()
        });
    SIGNATURES.iter().find_map(|(what, re)| {
        re.find(message).map(|m| {
            (
                *what,
                crate::engine::assert::shorten(&message[m.start()..], 160),
            )
        })
    })
}

/// Judges one reply: its code, its message, its details, its JSON.
fn judge(
    c: &Call,
    reply: &Reply,
    scope: &template::Scope,
    messages_free_of_internals: bool,
) -> Result<(), Failure> {
    let head = format!("{} ({})", c.name, c.method);
    let fail = |message: String, expected: String, actual: String| {
        Err(Failure::Fail(FailInfo {
            message,
            expected,
            actual,
            ..Default::default()
        }))
    };
    if let Some(within) = c.within {
        if reply.elapsed > within {
            return fail(
                format!(
                    "{head}: answered {} after {}, later than {}",
                    reply.status_line(),
                    crate::runtime::seconds(reply.elapsed),
                    crate::runtime::seconds(within)
                ),
                format!("a status within {}", crate::runtime::seconds(within)),
                format!(
                    "{} after {}",
                    reply.status_line(),
                    crate::runtime::seconds(reply.elapsed)
                ),
            );
        }
    }
    if !c.codes.contains(&reply.code) {
        let why = match reply.code {
            tonic::Code::Unknown | tonic::Code::Internal => {
                " (UNKNOWN and INTERNAL say the server failed, not that the call was wrong)"
            }
            _ => "",
        };
        return fail(
            format!(
                "{head}: expected {}, got {}{why}",
                codes_text(c),
                reply.status_line()
            ),
            codes_text(c),
            reply.status_line(),
        );
    }
    let leak = || reveals(&reply.message).or_else(|| reveals_in_status(&reply.message));
    if let Some((what, around)) = messages_free_of_internals.then(leak).flatten() {
        return fail(
            format!("{head}: the status message shows {what}"),
            "a message for the caller: what was wrong, in words".into(),
            around,
        );
    }
    if let Some(fields) = &c.bad_request {
        judge_bad_request(&head, fields, reply)?;
    }
    if reply.code == tonic::Code::Ok && !c.expect_json.is_empty() {
        let doc = reply.response.clone().unwrap_or(Value::Null);
        let mut wrong = Vec::new();
        for (q, pred) in &c.expect_json {
            let actual = match q.path.query(&doc).at_most_one() {
                Ok(Some(v)) => Actual::Json(v.clone()),
                Ok(None) => Actual::Missing,
                Err(_) => {
                    return Err(Failure::Error(format!(
                        "{head}: {} matched several values",
                        q.text
                    )))
                }
            };
            for (expected, actual) in assert::check(pred, &actual, scope).map_err(Failure::Error)? {
                wrong.push((q.text.clone(), expected, actual));
            }
        }
        if let Some((subject, expected, actual)) = wrong.first() {
            return fail(
                format!("{head}: expected {subject} {expected}, got {actual}"),
                wrong
                    .iter()
                    .map(|(s, e, _)| format!("{s}: {e}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                wrong
                    .iter()
                    .map(|(s, _, a)| format!("{s}: {a}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        }
    }
    Ok(())
}

/// AIP-193: a `google.rpc.Status` in `grpc-status-details-bin` with the same code and message,
/// holding a `google.rpc.BadRequest` with one violation per wrong field, each described.
fn judge_bad_request(head: &str, fields: &[String], reply: &Reply) -> Result<(), Failure> {
    let expected = format!(
        "grpc-status-details-bin: a google.rpc.Status (code 3, the same message) whose details hold a google.rpc.BadRequest with a field violation for {}",
        fields.join(" and ")
    );
    let fail = |why: String| {
        Err(Failure::Fail(FailInfo {
            message: format!("{head}: {why}"),
            expected: expected.clone(),
            actual: match &reply.details {
                Details::Absent => "no grpc-status-details-bin trailer".to_string(),
                details => rpc::details_json(details).to_string(),
            },
            ..Default::default()
        }))
    };
    let (code, message, violations) = match &reply.details {
        Details::Absent => {
            return fail("INVALID_ARGUMENT came without details (no grpc-status-details-bin trailer), so the caller cannot tell which field to fix".into())
        }
        Details::Undecodable(why) => return fail(why.clone()),
        Details::Status {
            code,
            message,
            field_violations,
            ..
        } => (code, message, field_violations),
    };
    if *code != tonic::Code::InvalidArgument as i32 || *message != reply.message {
        return fail(format!(
            "the details' google.rpc.Status says code {code} {message:?}, but the call's status is {}",
            reply.status_line()
        ));
    }
    let Some(violations) = violations else {
        return fail("the details hold no google.rpc.BadRequest".into());
    };
    let mut named: Vec<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
    named.sort_unstable();
    named.dedup();
    let mut wanted: Vec<&str> = fields.iter().map(String::as_str).collect();
    wanted.sort_unstable();
    if named != wanted {
        return fail(format!(
            "the BadRequest names the fields [{}], expected [{}] (field names as in the .proto)",
            named.join(", "),
            wanted.join(", ")
        ));
    }
    if let Some((field, _)) = violations.iter().find(|(_, d)| d.trim().is_empty()) {
        return fail(format!(
            "the violation of {field} has no description of what is wrong"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::reveals_in_status;

    #[test]
    fn status_messages_with_sql_or_exceptions_are_caught_and_honest_ones_spared() {
        for leak in [
            "no order found by query: SELECT id, customer_id FROM rpc_orders WHERE id = 9",
            "Exception calling application: 'NoneType' object is not subscriptable",
            "IntegrityError: duplicate key",
            "could not insert into rpc_customers: UniqueViolation",
        ] {
            assert!(reveals_in_status(leak).is_some(), "{leak}");
        }
        for honest in [
            "no order 42",
            "total_cents must be from 1 to 1,000,000",
            "a customer has that email already",
            "select an id above 0",
            "Error: email is not valid",
        ] {
            assert_eq!(reveals_in_status(honest), None, "{honest}");
        }
    }
}
