//! What the database probes share: a connection to the grader's PostgreSQL (as the probe role,
//! so the grader's statements never count as the service's), sampled variables, the service's
//! statements from `pg_stat_statements`, generic plans and how to judge and show them.
//!
//! Mechanics, and why:
//! - Statements come from `pg_stat_statements`, which records buffers (shared hit + read) per
//!   statement at executor end. Buffers are deterministic for a fixed data set and plan; times
//!   are not, so nothing here looks at a clock.
//! - The stats are reset before each measured phase. `pg_stat_statements` is not subject to the
//!   1 s flush interval of the cumulative statistics (`pg_stat_user_tables`), but an entry lands
//!   when the service's connection finishes its statement, which can trail the HTTP response by
//!   a moment: every read and reset waits [`SETTLE`] first.
//! - Plans are generic plans (`PREPARE` + `EXPLAIN EXECUTE` with `plan_cache_mode =
//!   force_generic_plan`): the statement text in `pg_stat_statements` has `$1` placeholders, not
//!   the values the service sent, and a generic plan does not depend on them. Nothing is run
//!   with `ANALYZE`, so no statement (write or read) is ever executed by the grader, and the
//!   learner's data is never changed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::Client;

use crate::dataset::PROBE_ROLE;
use crate::engine::assert::shorten;
use crate::engine::{CheckContext, Failure};
use crate::pg::db_error;

/// Time for the service's last statements to reach `pg_stat_statements`.
const SETTLE: Duration = Duration::from_millis(150);

/// Why a database check cannot run with `--runtime external`.
pub const NO_DATABASE: &str = "this check reads the grader's own PostgreSQL (pg_stat_statements, query plans, the index catalog) and needs the data set the grader loads; with --runtime external (or [postgres] disabled) the grader has no database of its own, so it cannot grade this. This is the grader's limitation, not your service's fault: run with the local runtime";

/// A connection as [`PROBE_ROLE`], read-only, plan cache forced to generic plans.
pub async fn connect(ctx: &CheckContext<'_>) -> Result<Client, Failure> {
    let Some(info) = ctx.service.postgres.as_ref() else {
        return Err(Failure::Error(NO_DATABASE.into()));
    };
    let client = crate::pg::connect(&info.url, PROBE_ROLE)
        .await
        .map_err(|e| {
            Failure::Error(format!(
                "{e} (the role is created when an exercise's [dataset] is loaded; does the exercise declare one?)"
            ))
        })?;
    client
        // Read-only: whatever a sample query or a re-planned statement says, the grader never
        // changes the learner's data (EXPLAIN without ANALYZE is allowed in read-only mode).
        .batch_execute(
            "SET plan_cache_mode = force_generic_plan; SET default_transaction_read_only = on",
        )
        .await
        .map_err(|e| Failure::Error(db_error(&e)))?;
    Ok(client)
}

/// Runs each sample query and puts its first value in the check's scope (numbers stay numbers).
pub async fn sample(
    client: &Client,
    sample: &[(String, String)],
    ctx: &mut CheckContext<'_>,
) -> Result<(), Failure> {
    for (name, sql) in sample {
        let rows = client
            .simple_query(sql)
            .await
            .map_err(|e| Failure::Error(format!("sample `{name}` ({sql}): {}", db_error(&e))))?;
        let value = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        let Some(text) = value else {
            return Err(Failure::Error(format!(
                "sample `{name}` found nothing in the data set ({sql})"
            )));
        };
        let v = text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::String(text));
        ctx.scope.insert(name.clone(), v);
    }
    Ok(())
}

/// Clears `pg_stat_statements` once the service's earlier statements have landed.
pub async fn reset(client: &Client) -> Result<(), Failure> {
    tokio::time::sleep(SETTLE).await;
    client
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .map_err(|e| Failure::Error(format!("pg_stat_statements_reset(): {}", db_error(&e))))
}

/// One statement the service ran since the last reset.
#[derive(Debug, Clone)]
pub struct Statement {
    pub query: String,
    pub calls: i64,
    pub hit: i64,
    pub read: i64,
}

impl Statement {
    pub fn buffers(&self) -> i64 {
        self.hit + self.read
    }

    /// `412 calls · 23.0 buffers/call (hit 23.0, read 0.0) · SELECT ... `
    pub fn line(&self) -> String {
        let per = |n: i64| n as f64 / self.calls.max(1) as f64;
        format!(
            "{} × {} — {:.1} buffers per call (hit {:.1}, read {:.1})",
            self.calls,
            normalise(&self.query),
            per(self.buffers()),
            per(self.hit),
            per(self.read)
        )
    }
}

/// One line, whitespace collapsed, at most 300 characters.
pub fn normalise(query: &str) -> String {
    shorten(&query.split_whitespace().collect::<Vec<_>>().join(" "), 300)
}

/// The service's data statements (SELECT, INSERT, UPDATE, DELETE, WITH) since the last reset,
/// costliest first. Transaction control and `SET` are not counted.
pub async fn statements(client: &Client) -> Result<Vec<Statement>, Failure> {
    tokio::time::sleep(SETTLE).await;
    let rows = client
        .query(
            "SELECT query, calls, shared_blks_hit, shared_blks_read
             FROM pg_stat_statements s
             WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND s.userid <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
               AND s.toplevel
               AND s.query ~* '^\\s*(select|insert|update|delete|with|values|table)\\M'
             ORDER BY shared_blks_hit + shared_blks_read DESC, calls DESC, query",
            &[],
        )
        .await
        .map_err(|e| Failure::Error(format!("reading pg_stat_statements: {}", db_error(&e))))?;
    Ok(rows
        .iter()
        .map(|r| Statement {
            query: r.get(0),
            calls: r.get(1),
            hit: r.get(2),
            read: r.get(3),
        })
        .collect())
}

/// The generic plan of a statement (`EXPLAIN (FORMAT JSON)`, never `ANALYZE`).
pub async fn generic_plan(client: &Client, query: &str) -> Result<Value, String> {
    client
        .batch_execute("DEALLOCATE ALL")
        .await
        .map_err(|e| db_error(&e))?;
    client
        .batch_execute(&format!("PREPARE grader_plan AS {query}"))
        .await
        .map_err(|e| db_error(&e))?;
    let n: i32 = client
        .query_one(
            "SELECT coalesce(cardinality(parameter_types), 0) FROM pg_prepared_statements WHERE name = 'grader_plan'",
            &[],
        )
        .await
        .map_err(|e| db_error(&e))?
        .get(0);
    let args = if n == 0 {
        String::new()
    } else {
        format!("({})", vec!["NULL"; n as usize].join(", "))
    };
    let rows = client
        .simple_query(&format!("EXPLAIN (FORMAT JSON) EXECUTE grader_plan{args}"))
        .await
        .map_err(|e| db_error(&e))?;
    let text: String = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    let doc: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    doc.get(0)
        .and_then(|d| d.get("Plan"))
        .cloned()
        .ok_or_else(|| "EXPLAIN gave no plan".to_string())
}

/// Row estimates of the tables and each index's table and first column, for judging plans.
#[derive(Debug, Default)]
pub struct Catalog {
    pub table_rows: BTreeMap<String, f64>,
    /// index -> (table, first key column or expression)
    pub indexes: BTreeMap<String, (String, String)>,
}

pub async fn catalog(client: &Client) -> Result<Catalog, Failure> {
    let err =
        |e: tokio_postgres::Error| Failure::Error(format!("reading the catalog: {}", db_error(&e)));
    let mut out = Catalog::default();
    for r in client
        .query(
            "SELECT c.relname::text, c.reltuples::float8 FROM pg_class c
             WHERE c.relkind IN ('r', 'p', 'm') AND c.relnamespace NOT IN
               (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema'))",
            &[],
        )
        .await
        .map_err(err)?
    {
        out.table_rows.insert(r.get(0), r.get(1));
    }
    for r in client
        .query(
            "SELECT i.relname::text, t.relname::text, pg_get_indexdef(x.indexrelid, 1, true)
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
             WHERE t.relnamespace NOT IN
               (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema', 'pg_toast'))",
            &[],
        )
        .await
        .map_err(err)?
    {
        out.indexes.insert(r.get(0), (r.get(1), r.get(2)));
    }
    Ok(out)
}

/// A plan drawn as a short tree, and what is wrong with it.
#[derive(Debug, Default)]
pub struct Judged {
    pub tree: Vec<String>,
    pub problems: Vec<String>,
    /// Kinds of index that would help, one per problem kind (never DDL).
    pub hints: Vec<String>,
}

const HINT_SEQ: &str = "an index whose leading columns are the ones the WHERE clause compares with =, so PostgreSQL reads only the matching rows";
const HINT_EXPR: &str = "the query compares a function of a column (lower(...)); an ordinary index on the column cannot serve it, an expression index on that same function can";
const HINT_SORT: &str = "an index that, after the equality columns, lists the ORDER BY columns in order, so rows come out already sorted and the Limit stops early";
const HINT_FILTER: &str = "the index finds candidates but other conditions are checked row by row afterwards (Filter): a composite index with the equality columns first, then the range or ORDER BY column";
const HINT_LEADING: &str = "the index is scanned from end to end because its first column is not constrained: order the columns equality first, then range";

fn push_hint(j: &mut Judged, h: &str) {
    if !j.hints.iter().any(|x| x == h) {
        j.hints.push(h.to_string());
    }
}

/// Walks a plan: draws it, and flags Seq Scans of large tables, Sorts under a Limit over a large
/// table, index scans of a large table that filter rows afterwards or do not constrain the
/// index's first column.
pub fn judge(plan: &Value, cat: &Catalog, large: f64) -> Judged {
    let mut j = Judged::default();
    walk(plan, cat, large, 0, false, &mut j);
    j
}

fn s<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node.get(key).and_then(Value::as_str)
}

fn table_of(node: &Value, cat: &Catalog) -> Option<String> {
    s(node, "Relation Name")
        .map(str::to_string)
        .or_else(|| s(node, "Index Name").and_then(|i| cat.indexes.get(i).map(|(t, _)| t.clone())))
}

fn scans_large(node: &Value, cat: &Catalog, large: f64) -> bool {
    let here = table_of(node, cat)
        .and_then(|t| cat.table_rows.get(&t).copied())
        .is_some_and(|n| n >= large);
    here || node
        .get("Plans")
        .and_then(Value::as_array)
        .is_some_and(|kids| kids.iter().any(|k| scans_large(k, cat, large)))
}

fn mentions(text: &str, word: &str) -> bool {
    // `customer_id` in `(customer_id = $1)`, not in `other_customer_id`.
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

fn walk(node: &Value, cat: &Catalog, large: f64, depth: usize, under_limit: bool, j: &mut Judged) {
    let kind = s(node, "Node Type").unwrap_or("?");
    let table = table_of(node, cat);
    let rows = table
        .as_ref()
        .and_then(|t| cat.table_rows.get(t).copied())
        .unwrap_or(0.0);
    let is_large = rows >= large;
    let mut line = String::from(kind);
    if let Some(dir) = s(node, "Scan Direction").filter(|d| *d == "Backward") {
        line.push_str(&format!(" {dir}"));
    }
    if let Some(i) = s(node, "Index Name") {
        line.push_str(&format!(" using {i}"));
    }
    if let Some(t) = s(node, "Relation Name") {
        line.push_str(&format!(" on {t}"));
    }
    for (key, label) in [
        ("Index Cond", "index cond"),
        ("Recheck Cond", "recheck"),
        ("Filter", "filter"),
    ] {
        if let Some(v) = s(node, key) {
            line.push_str(&format!("  {label}: {v}"));
        }
    }
    if let Some(keys) = node.get("Sort Key").and_then(Value::as_array) {
        let keys: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        line.push_str(&format!("  key: {}", keys.join(", ")));
    }
    if let Some(r) = node.get("Plan Rows").and_then(Value::as_f64) {
        line.push_str(&format!("  (~{r:.0} rows)"));
    }
    let prefix = if depth == 0 {
        String::new()
    } else {
        format!("{}-> ", "   ".repeat(depth - 1))
    };
    j.tree.push(format!("{prefix}{line}"));

    let table_name = table.clone().unwrap_or_default();
    let size = crate::dataset::thousands(rows as u64);
    match kind {
        "Seq Scan" if is_large => {
            j.problems.push(format!(
                "Seq Scan on {table_name} (~{size} rows): every row is read to find a few"
            ));
            let f = s(node, "Filter").unwrap_or("");
            if f.contains("lower(") || f.contains("upper(") || f.contains("date_trunc(") {
                push_hint(j, HINT_EXPR);
            } else {
                push_hint(j, HINT_SEQ);
            }
        }
        "Sort" | "Incremental Sort" if under_limit && scans_large(node, cat, large) => {
            j.problems.push(format!(
                "{kind} under a Limit: every matching row is fetched and sorted, then all but a page thrown away"
            ));
            push_hint(j, HINT_SORT);
        }
        "Index Scan" | "Index Only Scan" | "Bitmap Index Scan" | "Bitmap Heap Scan" if is_large => {
            if let (Some(cond), Some((_, first))) = (
                s(node, "Index Cond"),
                s(node, "Index Name").and_then(|i| cat.indexes.get(i)),
            ) {
                if !mentions(cond, first) {
                    j.problems.push(format!(
                        "{kind} on {table_name} (~{size} rows) does not constrain the index's first column ({first}): the whole index is read"
                    ));
                    push_hint(j, HINT_LEADING);
                }
            }
            if let Some(f) = s(node, "Filter") {
                j.problems.push(format!(
                    "{kind} on {table_name} (~{size} rows) filters rows after the index ({f}): rows are fetched only to be thrown away"
                ));
                push_hint(j, HINT_FILTER);
            }
        }
        _ => {}
    }
    let limit_below = under_limit || kind == "Limit";
    if let Some(kids) = node.get("Plans").and_then(Value::as_array) {
        for k in kids {
            walk(k, cat, large, depth + 1, limit_below, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cat() -> Catalog {
        let mut c = Catalog::default();
        c.table_rows.insert("orders".into(), 200_000.0);
        c.table_rows.insert("tiny".into(), 10.0);
        c.indexes.insert(
            "orders_wrong".into(),
            ("orders".into(), "created_at".into()),
        );
        c.indexes.insert(
            "orders_good".into(),
            ("orders".into(), "customer_id".into()),
        );
        c
    }

    #[test]
    fn flags_seq_scan_and_sort_under_limit() {
        let plan = json!({"Node Type": "Limit", "Plans": [{"Node Type": "Sort", "Sort Key": ["created_at DESC"],
            "Plans": [{"Node Type": "Seq Scan", "Relation Name": "orders", "Filter": "(customer_id = $1)"}]}]});
        let j = judge(&plan, &cat(), 10_000.0);
        assert_eq!(j.problems.len(), 2, "{:?}", j.problems);
        assert!(
            j.tree[2].starts_with("   -> Seq Scan on orders"),
            "{:?}",
            j.tree
        );
        let small = json!({"Node Type": "Seq Scan", "Relation Name": "tiny"});
        assert!(judge(&small, &cat(), 10_000.0).problems.is_empty());
    }

    #[test]
    fn flags_index_scans_that_filter_or_skip_the_first_column() {
        let wrong = json!({"Node Type": "Index Scan", "Index Name": "orders_wrong", "Relation Name": "orders",
            "Index Cond": "((customer_id = $1) AND (status = $2))"});
        assert_eq!(judge(&wrong, &cat(), 10_000.0).problems.len(), 1);
        let good = json!({"Node Type": "Index Scan", "Index Name": "orders_good", "Relation Name": "orders",
            "Index Cond": "((customer_id = $1) AND (status = $2))"});
        assert!(judge(&good, &cat(), 10_000.0).problems.is_empty());
        let filtered = json!({"Node Type": "Index Scan", "Index Name": "orders_good", "Relation Name": "orders",
            "Index Cond": "(customer_id = $1)", "Filter": "(status = $2)"});
        assert_eq!(judge(&filtered, &cat(), 10_000.0).problems.len(), 1);
        assert!(!mentions("(other_customer_id = 1)", "customer_id"));
    }
}
