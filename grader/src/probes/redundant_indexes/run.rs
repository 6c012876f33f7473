//! `redundant_indexes`: reads the index catalog (`pg_index`) of the named tables and flags an
//! index that duplicates another (same method, key columns and predicate) or whose key columns
//! are a leading prefix of another's: every INSERT and UPDATE pays for it, and no query needs it.
//! Primary keys, unique indexes (they enforce a constraint), partial indexes and indexes with
//! INCLUDE columns are never flagged.

use super::params::RedundantIndexes;
use crate::engine::http::OutgoingRequest;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::pg::db_error;
use crate::probes::db;

#[derive(Debug)]
struct Index {
    table: String,
    name: String,
    def: String,
    method: String,
    keys: Vec<String>,
    predicate: String,
    unique: bool,
    include: bool,
}

pub async fn run(p: &RedundantIndexes, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let client = db::connect(ctx).await?;
    // The service's migrations ran before it answered; the report shows this request.
    let url = ctx.url(&p.health_path)?;
    let resp = ctx
        .send(
            "the service is up (its migrations ran)",
            OutgoingRequest {
                method: "GET".into(),
                url,
                headers: Vec::new(),
                body: None,
            },
        )
        .await?;
    if !(200..300).contains(&resp.status) {
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "GET {} answered {}, expected 2xx",
                p.health_path, resp.status
            ),
            expected: "2xx".into(),
            actual: resp.status.to_string(),
            ..Default::default()
        }));
    }
    let rows = client
        .query(
            "SELECT t.relname::text, i.relname::text, pg_get_indexdef(x.indexrelid), am.amname::text,
                    array(SELECT pg_get_indexdef(x.indexrelid, k, true) || CASE WHEN x.indoption[k - 1] & 1 = 1 THEN ' DESC' ELSE '' END
                          FROM generate_series(1, x.indnkeyatts) k ORDER BY k),
                    coalesce(pg_get_expr(x.indpred, x.indrelid), ''),
                    x.indisunique OR x.indisprimary, x.indnatts > x.indnkeyatts
             FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_class t ON t.oid = x.indrelid
             JOIN pg_am am ON am.oid = i.relam
             WHERE t.relname = ANY($1) AND pg_table_is_visible(t.oid)
             ORDER BY t.relname, i.relname",
            &[&p.tables],
        )
        .await
        .map_err(|e| Failure::Error(format!("reading pg_index: {}", db_error(&e))))?;
    let indexes: Vec<Index> = rows
        .iter()
        .map(|r| Index {
            table: r.get(0),
            name: r.get(1),
            def: r.get(2),
            method: r.get(3),
            keys: r.get(4),
            predicate: r.get(5),
            unique: r.get(6),
            include: r.get(7),
        })
        .collect();
    let mut found = Vec::new();
    for a in &indexes {
        if a.unique || a.include || !a.predicate.is_empty() {
            continue;
        }
        for b in &indexes {
            if a.name == b.name || a.table != b.table || a.method != b.method {
                continue;
            }
            // Directions only matter together: a one-column index serves both.
            let same_prefix = b.keys.len() >= a.keys.len()
                && a.keys.iter().zip(&b.keys).all(|(x, y)| {
                    x == y
                        || (a.keys.len() == 1
                            && x.trim_end_matches(" DESC") == y.trim_end_matches(" DESC"))
                });
            if !same_prefix || !b.predicate.is_empty() {
                continue;
            }
            if b.keys.len() == a.keys.len() {
                // A duplicate: flag only one of the pair (the later name), unless the other is unique.
                if b.unique || a.name > b.name {
                    found.push(format!(
                        "{} duplicates {}: {}  vs  {}",
                        a.name, b.name, a.def, b.def
                    ));
                    break;
                }
            } else {
                found.push(format!(
                    "{} is a leading prefix of {}: {}  vs  {}",
                    a.name, b.name, a.def, b.def
                ));
                break;
            }
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let mut evidence: Vec<String> = indexes
        .iter()
        .map(|i| format!("index on {}: {}", i.table, i.def))
        .collect();
    evidence.push("would help: an index whose columns start another index's columns (or repeat them) serves no query the longer one cannot; drop it in a migration".into());
    Err(Failure::Fail(FailInfo {
        message: format!("{} redundant index(es): {}", found.len(), found[0]),
        expected: format!(
            "no duplicate or prefix-redundant indexes on {}",
            p.tables.join(", ")
        ),
        actual: found.join("\n"),
        evidence,
        ..Default::default()
    }))
}
