//! White-box steps: SQL the grader runs on the service's own database, as PostgreSQL's superuser,
//! to compare what the service stored with what its API answered (`sql.query`), and to prove a
//! rule lives in the database and not only in the code (`sql.statement` with `sql.refused`: a
//! write in a transaction the grader always rolls back, which PostgreSQL must refuse).
//!
//! Parameters are rendered templates sent as text, never spliced into the SQL, so a value the
//! service chose (an id it returned) cannot change the statement.

use serde_json::Value;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::assert::{self, describe_json, Actual};
use super::{CheckContext, FailInfo, Failure};
use crate::pg::db_error;
use crate::spec::template;
use crate::spec::{SqlExpect, SqlSpec};

/// Why a white-box step cannot run without the grader's PostgreSQL.
pub const NO_SERVICE_DATABASE: &str = "this check reads what your service stored in the grader's own PostgreSQL (the database in DATABASE_URL); with --runtime external (or [postgres] disabled) the grader has no database of its own, so it cannot grade this. This is the grader's limitation, not your service's fault: run with the local or docker runtime";

/// How long one white-box statement may run, and wait for a row lock the service holds.
const STATEMENT_TIMEOUT: &str = "10s";
const LOCK_TIMEOUT: &str = "5s";

/// A connection to the service's database as the server's superuser (`postgres`): read-only
/// unless `writable` (then every write is inside a transaction the caller rolls back).
pub async fn connect_service_db(ctx: &CheckContext<'_>, writable: bool) -> Result<Client, Failure> {
    let Some(info) = ctx.service.postgres.as_ref() else {
        return Err(Failure::Skip(NO_SERVICE_DATABASE.into()));
    };
    let client = crate::pg::connect(&info.url, "postgres")
        .await
        .map_err(Failure::Error)?;
    let mut setup = format!(
        "SET statement_timeout = '{STATEMENT_TIMEOUT}'; SET lock_timeout = '{LOCK_TIMEOUT}';"
    );
    if !writable {
        setup.push_str(" SET default_transaction_read_only = on;");
    }
    client
        .batch_execute(&setup)
        .await
        .map_err(|e| Failure::Error(db_error(&e)))?;
    Ok(client)
}

pub async fn run(ctx: &mut CheckContext<'_>, step: &str, sql: &SqlSpec) -> Result<(), Failure> {
    let params: Vec<String> = sql
        .params
        .iter()
        .map(|p| template::render(p, &ctx.scope))
        .collect::<Result<_, _>>()
        .map_err(Failure::Error)?;
    let shown = Shown {
        step,
        statement: &sql.statement,
        params: &params,
    };
    match &sql.expect {
        SqlExpect::Row(columns) => {
            let client = connect_service_db(ctx, false).await?;
            let row = one_row(&client, &shown).await?;
            let mut mismatches = Vec::new();
            for (column, predicate) in columns {
                let actual = match row.get(column) {
                    Some(v) => Actual::Json(v.clone()),
                    None => Actual::Missing,
                };
                for (expected, got) in
                    assert::check(predicate, &actual, &ctx.scope).map_err(Failure::Error)?
                {
                    mismatches.push((column.as_str(), expected, got));
                }
            }
            if let Some((column, expected, got)) = mismatches.first() {
                return Err(shown.fail(
                    format!("{step}: in your database, expected {column} {expected}, got {got}"),
                    mismatches
                        .iter()
                        .map(|(c, e, _)| format!("{c}: {e}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    format!("the row: {}", describe_json(&Value::Object(row.clone()))),
                ));
            }
            for (variable, column) in &sql.captures {
                let Some(value) = row.get(column) else {
                    return Err(Failure::Error(format!(
                        "{step}: the grader's query has no column {column} to capture as {variable} (an exercise error); SQL: {}",
                        sql.statement
                    )));
                };
                ctx.scope.insert(variable.clone(), value.clone());
            }
            ctx.measured(format!(
                "{step}: your database holds {}",
                describe_json(&Value::Object(row))
            ));
            Ok(())
        }
        SqlExpect::Refused(sqlstate) => {
            let client = connect_service_db(ctx, true).await?;
            let outcome = refused_in_rolled_back_transaction(&client, &shown).await?;
            match outcome {
                Ok(0) => Err(shown.fail(
                    format!("{step}: the statement matched no row, so it proved nothing: the row the API just created is not in the table the README names, under the id it answered"),
                    format!("a row to change, and PostgreSQL refusing the change with SQLSTATE {sqlstate}…"),
                    "no row matched".into(),
                )),
                Ok(n) => Err(shown.fail(
                    format!("{step}: PostgreSQL accepted it ({n} row{} changed; the grader rolled it back): the rule lives only in your code, not in the database", if n == 1 { "" } else { "s" }),
                    format!("PostgreSQL refusing it with SQLSTATE {sqlstate}… (a constraint)"),
                    format!("accepted: {n} row{} changed", if n == 1 { "" } else { "s" }),
                )),
                Err((code, message)) if code.starts_with(sqlstate.as_str()) => {
                    ctx.measured(format!("{step}: PostgreSQL refused it with SQLSTATE {code}: {message}"));
                    Ok(())
                }
                Err((code, message)) if code.starts_with("42") => Err(shown.fail(
                    format!("{step}: the statement cannot run on your schema: {message} (SQLSTATE {code}); the README names this table and its columns"),
                    format!("PostgreSQL refusing it with SQLSTATE {sqlstate}…"),
                    format!("SQLSTATE {code}: {message}"),
                )),
                Err((code, message)) => Err(Failure::Error(format!(
                    "{step}: the grader's statement failed with SQLSTATE {code} ({message}), which is neither the refusal it tests for ({sqlstate}…) nor a missing table or column; SQL: {}",
                    sql.statement
                ))),
            }
        }
    }
}

/// What a failure shows: the step, the SQL and its parameters.
struct Shown<'a> {
    step: &'a str,
    statement: &'a str,
    params: &'a [String],
}

impl Shown<'_> {
    fn fail(&self, message: String, expected: String, actual: String) -> Failure {
        let mut evidence = vec![format!("SQL run by the grader: {}", self.statement)];
        if !self.params.is_empty() {
            let shown: Vec<String> = self
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| format!("${} = {}", i + 1, describe_json(&Value::String(p.clone()))))
                .collect();
            evidence.push(format!("parameters: {}", shown.join(", ")));
        }
        Failure::Fail(FailInfo {
            message,
            expected,
            actual,
            evidence,
            log_tail: Vec::new(),
        })
    }
}

fn text_params(params: &[String]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Runs a read-only query with text parameters on the service's database and returns its one
/// row as a JSON object: for probes that compare the service's rows with what it answered.
pub async fn query_row(
    client: &Client,
    step: &str,
    statement: &str,
    params: &[String],
) -> Result<serde_json::Map<String, Value>, Failure> {
    one_row(
        client,
        &Shown {
            step,
            statement,
            params,
        },
    )
    .await
}

/// Runs the query and returns its one row as a JSON object (column name → value).
async fn one_row(
    client: &Client,
    shown: &Shown<'_>,
) -> Result<serde_json::Map<String, Value>, Failure> {
    // to_jsonb turns any column type into JSON the predicates understand (numbers stay numbers).
    let wrapped = format!("SELECT to_jsonb(q)::text FROM ({}) AS q", shown.statement);
    let types = vec![Type::TEXT; shown.params.len()];
    let rows = match client.prepare_typed(&wrapped, &types).await {
        Ok(statement) => client.query(&statement, &text_params(shown.params)).await,
        Err(e) => Err(e),
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
            if code.starts_with("42") {
                return Err(shown.fail(
                    format!(
                        "{}: the query cannot run on your schema: {} (SQLSTATE {code}); the README names this table and its columns",
                        shown.step,
                        db_error(&e)
                    ),
                    "the table and columns the README names".into(),
                    db_error(&e),
                ));
            }
            return Err(Failure::Error(format!(
                "{}: the grader's query failed: {}; SQL: {}",
                shown.step,
                db_error(&e),
                shown.statement
            )));
        }
    };
    if rows.len() != 1 {
        return Err(shown.fail(
            format!(
                "{}: the query found {} rows in your database, expected exactly one",
                shown.step,
                rows.len()
            ),
            "one row".into(),
            format!("{} rows", rows.len()),
        ));
    }
    let text: String = rows[0].get(0);
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Failure::Error(format!(
            "{}: the grader could not read its own query's row as JSON: {text}",
            shown.step
        ))),
    }
}

/// Runs the write inside a transaction that is always rolled back: `Ok(Ok(rows changed))` when
/// PostgreSQL accepted it, `Ok(Err((sqlstate, message)))` when it refused it.
async fn refused_in_rolled_back_transaction(
    client: &Client,
    shown: &Shown<'_>,
) -> Result<Result<u64, (String, String)>, Failure> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| Failure::Error(db_error(&e)))?;
    let types = vec![Type::TEXT; shown.params.len()];
    let result = match client.prepare_typed(shown.statement, &types).await {
        Ok(statement) => client.execute(&statement, &text_params(shown.params)).await,
        Err(e) => Err(e),
    };
    // Whatever happened, nothing the grader wrote stays.
    client
        .batch_execute("ROLLBACK")
        .await
        .map_err(|e| Failure::Error(db_error(&e)))?;
    Ok(result.map_err(|e| {
        let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
        let message = match e.as_db_error() {
            // The constraint's name, unless the message already says it.
            Some(db) => match db.constraint() {
                Some(c) if !db.message().contains(c) => {
                    format!("{} (constraint {c})", db.message())
                }
                _ => db.message().to_string(),
            },
            None => e.to_string(),
        };
        (code, message)
    }))
}
