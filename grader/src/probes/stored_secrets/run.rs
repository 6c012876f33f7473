//! `stored_secrets`: sends the requests, then reads every row of every ordinary table of the
//! service's database (outside the catalogs and the grader's own schema) as JSON
//! (`to_jsonb(row)`, so each column is seen on its own and `bytea` as hex), at most
//! `max_rows_per_table` rows per table, and judges what is stored:
//!
//! 1. no secret anywhere in plain text (or its bytes), nor as its unsalted MD5, SHA-1 or SHA-256
//!    in hex or base64;
//! 2. each account's row (the row holding its identifier, or a row that refers to that row by an
//!    id) holds a password hash string with at least OWASP's cost (see [`super::hashes`]);
//! 3. two accounts with the same secret have different hash strings (a salt per account).
//!
//! An account the grader cannot find, or one without any hash, fails: nothing measured never
//! passes. Messages show at most a short prefix of a stored value.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;
use tokio_postgres::Client;

use super::hashes::{self, classify, Policy, Verdict};
use super::params::StoredSecrets;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::pg::db_error;
use crate::probes::db;
use crate::probes::upstream_calls::run::send_in_order;
use crate::spec::template;

/// Schemas never read: the catalogs and the grader's own (`grader.dataset_checksums`).
const SKIPPED_SCHEMAS: &[&str] = &["pg_catalog", "information_schema", "grader"];
/// Places listed as evidence, at most.
const MAX_EVIDENCE: usize = 10;

/// A column whose name says it holds a credential.
static CREDENTIAL_COLUMN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)pass|hash|secret|pwd|digest|credential|crypt").expect("static regex")
});

/// One table as read.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// `public.accounts`
    pub name: String,
    pub rows: Vec<Row>,
    /// The table had more rows than were read.
    pub capped: bool,
}

/// One row: every scalar in it, by column (`profile.email` inside a JSON column).
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    pub values: Vec<(String, String)>,
}

impl Row {
    /// A row from its `to_jsonb(row)` text.
    pub fn from_json(text: &str) -> Row {
        let mut row = Row::default();
        if let Ok(Value::Object(columns)) = serde_json::from_str::<Value>(text) {
            for (column, v) in columns {
                walk(&column, &v, &mut row.values);
            }
        }
        row
    }

    fn columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (c, _) in &self.values {
            let top = c.split(['.', '[']).next().unwrap_or(c);
            if !out.contains(&top) {
                out.push(top);
            }
        }
        out
    }
}

fn walk(path: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((path.to_string(), s.clone())),
        Value::Number(n) => out.push((path.to_string(), n.to_string())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(&format!("{path}[{i}]"), item, out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                walk(&format!("{path}.{k}"), item, out);
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

pub async fn run(p: &StoredSecrets, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    send_in_order(ctx, &p.requests).await?;
    let mut accounts = Vec::new();
    for a in &p.accounts {
        let render = |t: &str| template::render(t, &ctx.scope).map_err(Failure::Error);
        accounts.push((render(&a.identifier)?, render(&a.secret)?));
    }
    let client = db::connect_owner(ctx).await?;
    let tables = read_tables(&client, p.max_rows_per_table).await?;
    let rows: usize = tables.iter().map(|t| t.rows.len()).sum();
    let capped: Vec<&str> = tables
        .iter()
        .filter(|t| t.capped)
        .map(|t| t.name.as_str())
        .collect();
    let read = format!(
        "read {rows} row{} of {} table{} ({}){}",
        if rows == 1 { "" } else { "s" },
        tables.len(),
        if tables.len() == 1 { "" } else { "s" },
        tables
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if capped.is_empty() {
            String::new()
        } else {
            format!(
                "; only the first {} rows of {}",
                p.max_rows_per_table,
                capped.join(", ")
            )
        }
    );
    match judge_tables(&tables, &accounts, &p.policy) {
        Ok(found) => {
            ctx.measured(read);
            ctx.measurements.extend(found);
            Ok(())
        }
        Err(mut info) => {
            info.evidence.push(read);
            Err(Failure::Fail(info))
        }
    }
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Every ordinary table outside the skipped schemas, `max_rows` rows each at most.
async fn read_tables(client: &Client, max_rows: u64) -> Result<Vec<Table>, Failure> {
    let listed = client
        .query(
            "SELECT n.nspname::text, c.relname::text
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'r' AND NOT (n.nspname = ANY($1))
                AND n.nspname NOT LIKE 'pg\\_%'
              ORDER BY 1, 2",
            &[&SKIPPED_SCHEMAS],
        )
        .await
        .map_err(|e| Failure::Error(format!("listing the service's tables: {}", db_error(&e))))?;
    let mut tables = Vec::new();
    for t in listed {
        let (schema, name): (String, String) = (t.get(0), t.get(1));
        // ONLY: an inheritance child or a partition is a table of its own in the list.
        let sql = format!(
            "SELECT to_jsonb(t)::text FROM ONLY {}.{} t LIMIT {}",
            ident(&schema),
            ident(&name),
            max_rows + 1
        );
        let rows = client
            .query(&sql, &[])
            .await
            .map_err(|e| Failure::Error(format!("reading {schema}.{name}: {}", db_error(&e))))?;
        let capped = rows.len() as u64 > max_rows;
        tables.push(Table {
            name: format!("{schema}.{name}"),
            rows: rows
                .iter()
                .take(max_rows as usize)
                .map(|r| Row::from_json(&r.get::<_, String>(0)))
                .collect(),
            capped,
        });
    }
    Ok(tables)
}

/// An account's password hash as found.
struct Found<'a> {
    place: String,
    hash: &'a str,
    what: String,
}

/// Judges the rows: `Ok` with a line per account (`alice: argon2id m=19456 t=2 p=1 in
/// public.accounts.password_hash`), or the failure.
pub(crate) fn judge_tables(
    tables: &[Table],
    accounts: &[(String, String)],
    policy: &Policy,
) -> Result<Vec<String>, FailInfo> {
    // 1. The secrets, in any form as good as plain text, anywhere.
    let mut leaks = Vec::new();
    let mut by_secret: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, secret) in accounts {
        by_secret.entry(secret).or_default().push(id);
    }
    for (secret, ids) in &by_secret {
        let needles = hashes::needles(secret);
        for t in tables {
            for (i, row) in t.rows.iter().enumerate() {
                for (column, value) in &row.values {
                    if let Some(n) = hashes::find(value, &needles) {
                        leaks.push(format!(
                            "{}.{column} (row {} read): the password of {} {}",
                            t.name,
                            i + 1,
                            ids.join(" and "),
                            n.what
                        ));
                    }
                }
            }
        }
    }
    if let Some(first) = leaks.first() {
        let more = match leaks.len() {
            1 => String::new(),
            n => format!(" (and {} more places)", n - 1),
        };
        return Err(FailInfo {
            message: format!("a password is stored in a readable form: {first}{more}"),
            expected: "passwords stored only as salted password hashes (argon2id, scrypt or bcrypt): nowhere in plain text, nor as an unsalted MD5, SHA-1 or SHA-256".into(),
            actual: first.clone(),
            evidence: leaks.into_iter().take(MAX_EVIDENCE).collect(),
            ..Default::default()
        });
    }

    // 2. Each account's hash.
    let mut problems = Vec::new();
    let mut found: Vec<(&str, &str, Found)> = Vec::new();
    for (id, secret) in accounts {
        match account_hash(tables, id, policy) {
            Ok(f) => found.push((id, secret, f)),
            Err(why) => problems.push(format!("account {id}: {why}")),
        }
    }
    // 3. A salt per account: the same password, different strings.
    for (i, (id_a, secret_a, a)) in found.iter().enumerate() {
        for (id_b, secret_b, b) in &found[i + 1..] {
            if secret_a == secret_b && a.hash == b.hash {
                problems.push(format!(
                    "accounts {id_a} and {id_b} have the same password and the same stored hash ({}, {} and {}): the hash is not salted per account",
                    hashes::prefix(a.hash),
                    a.place,
                    b.place
                ));
            }
        }
    }
    if let Some(first) = problems.first() {
        let more = match problems.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return Err(FailInfo {
            message: format!("{first}{more}"),
            expected: "each account's row holds a salted password hash string: argon2id (`$argon2id$v=19$m=19456,t=2,p=1$…`), scrypt (`$scrypt$ln=17,r=8,p=1$…`) or bcrypt (`$2b$12$…`), with at least OWASP's cost, different for two accounts with the same password".into(),
            actual: first.clone(),
            evidence: if problems.len() > 1 {
                problems.into_iter().take(MAX_EVIDENCE).collect()
            } else {
                Vec::new()
            },
            ..Default::default()
        });
    }
    Ok(found
        .into_iter()
        .map(|(id, _, f)| format!("{id}: {} in {}", f.what, f.place))
        .collect())
}

/// The accepted hash of one account, or why there is none.
fn account_hash<'a>(tables: &'a [Table], id: &str, policy: &Policy) -> Result<Found<'a>, String> {
    let holds_id = |row: &Row| {
        row.values
            .iter()
            .any(|(_, v)| v.trim().eq_ignore_ascii_case(id))
    };
    let own: Vec<(&Table, &Row)> = tables
        .iter()
        .flat_map(|t| t.rows.iter().map(move |r| (t, r)))
        .filter(|(_, r)| holds_id(r))
        .collect();
    if own.is_empty() {
        return Err(format!(
            "no row of the {} table{} read holds this identifier, so its password could not be judged",
            tables.len(),
            if tables.len() == 1 { "" } else { "s" }
        ));
    }
    let mut candidates = candidates_of(&own, policy);
    if candidates.is_empty() {
        // The hash may live in a row of its own that refers to the account's row by an id.
        let keys: Vec<&str> = own
            .iter()
            .flat_map(|(_, r)| r.values.iter())
            .filter(|(c, v)| is_id_column(c) && !v.is_empty() && !v.eq_ignore_ascii_case(id))
            .map(|(_, v)| v.as_str())
            .collect();
        let linked: Vec<(&Table, &Row)> = tables
            .iter()
            .flat_map(|t| t.rows.iter().map(move |r| (t, r)))
            .filter(|(_, r)| !holds_id(r))
            .filter(|(_, r)| {
                r.values
                    .iter()
                    .any(|(c, v)| is_id_column(c) && keys.contains(&v.as_str()))
            })
            .collect();
        candidates = candidates_of(&linked, policy);
    }
    if let Some(pos) = candidates
        .iter()
        .position(|c| matches!(c.verdict, Verdict::Accepted(_)))
    {
        let c = candidates.swap_remove(pos);
        let Verdict::Accepted(what) = c.verdict else {
            unreachable!("found as accepted")
        };
        return Ok(Found {
            place: c.place,
            hash: c.value,
            what,
        });
    }
    match candidates.into_iter().next() {
        Some(c) => {
            let Verdict::Rejected(why) = c.verdict else {
                unreachable!("only rejected ones are left")
            };
            Err(format!("{} holds {why}", c.place))
        }
        None => {
            let (t, r) = own[0];
            Err(format!(
                "its row in {} (columns {}) holds no password hash, and no row that refers to it by an id does either",
                t.name,
                r.columns().join(", ")
            ))
        }
    }
}

fn is_id_column(column: &str) -> bool {
    let c = column.to_ascii_lowercase();
    c == "id" || c.ends_with("_id") || c.ends_with("uuid")
}

struct Candidate<'a> {
    place: String,
    value: &'a str,
    verdict: Verdict,
}

/// Values of the rows that are, or are meant to be, password hashes: a string that looks like
/// one, or any value in a column named like a credential; `$...$` strings first.
fn candidates_of<'a>(rows: &[(&'a Table, &'a Row)], policy: &Policy) -> Vec<Candidate<'a>> {
    let mut out: Vec<Candidate<'a>> = Vec::new();
    for (t, r) in rows {
        for (column, value) in &r.values {
            let verdict = match classify(value, policy) {
                Some(v) => v,
                None if CREDENTIAL_COLUMN.is_match(column) && !value.trim().is_empty() => {
                    Verdict::Rejected(hashes::describe(value, policy))
                }
                None => continue,
            };
            out.push(Candidate {
                place: format!("{}.{column}", t.name),
                value,
                verdict,
            });
        }
    }
    // Strings in the `$...$` forms say most about what the service meant to store.
    out.sort_by_key(|c| !c.value.starts_with('$'));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARGON_A: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdEFBQUFBQUFB$aGFzaEFBQUFBQUFBQUFBQUFBQUFBQQ";
    const ARGON_B: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdEJCQkJCQkJC$aGFzaEJCQkJCQkJCQkJCQkJCQkJCQg";

    fn table(name: &str, rows: &[Value]) -> Table {
        Table {
            name: name.into(),
            rows: rows
                .iter()
                .map(|r| Row::from_json(&r.to_string()))
                .collect(),
            capped: false,
        }
    }

    fn accounts() -> Vec<(String, String)> {
        vec![
            ("alice".into(), "correct horse battery".into()),
            ("bob".into(), "correct horse battery".into()),
        ]
    }

    fn users(hash_a: &str, hash_b: &str) -> Table {
        table(
            "public.accounts",
            &[
                serde_json::json!({"id": 1, "username": "alice", "password_hash": hash_a}),
                serde_json::json!({"id": 2, "username": "bob", "password_hash": hash_b}),
            ],
        )
    }

    fn failure(tables: &[Table]) -> FailInfo {
        judge_tables(tables, &accounts(), &Policy::default()).unwrap_err()
    }

    #[test]
    fn salted_strong_hashes_pass_and_say_what_they_are() {
        let found =
            judge_tables(&[users(ARGON_A, ARGON_B)], &accounts(), &Policy::default()).unwrap();
        assert_eq!(
            found,
            [
                "alice: argon2id m=19456 t=2 p=1 in public.accounts.password_hash",
                "bob: argon2id m=19456 t=2 p=1 in public.accounts.password_hash"
            ]
        );
    }

    #[test]
    fn a_hash_in_a_row_of_its_own_is_found_by_the_account_id() {
        let tables = [
            table(
                "public.accounts",
                &[
                    serde_json::json!({"id": "8f0c-1", "username": "alice"}),
                    serde_json::json!({"id": "8f0c-2", "username": "bob"}),
                ],
            ),
            table(
                "public.credentials",
                &[
                    serde_json::json!({"account_id": "8f0c-1", "hash": ARGON_A}),
                    serde_json::json!({"account_id": "8f0c-2", "hash": ARGON_B}),
                ],
            ),
        ];
        let found = judge_tables(&tables, &accounts(), &Policy::default()).unwrap();
        assert_eq!(
            found[1],
            "bob: argon2id m=19456 t=2 p=1 in public.credentials.hash"
        );
    }

    #[test]
    fn plain_text_and_unsalted_digests_anywhere_fail_without_showing_them() {
        let audit = table(
            "public.audit",
            &[
                serde_json::json!({"body": {"username": "alice", "password": "correct horse battery"}}),
            ],
        );
        let f = failure(&[users(ARGON_A, ARGON_B), audit]);
        assert_eq!(
            f.message,
            "a password is stored in a readable form: public.audit.body.password (row 1 read): the password of alice and bob in plain text"
        );
        assert!(!format!("{f:?}").contains("horse"));

        let sha = "4f3f9a4e9a2c1d3b4e9f1c6d8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a";
        let digest = hashes::needles("correct horse battery")
            .into_iter()
            .find(|n| n.what == "as its unsalted SHA-256 (hex)")
            .unwrap()
            .text;
        let f = failure(&[users(&digest, sha)]);
        assert!(
            f.message.ends_with("public.accounts.password_hash (row 1 read): the password of alice and bob as its unsalted SHA-256 (hex)"),
            "{}",
            f.message
        );
        assert!(!format!("{f:?}").contains(&digest));
    }

    #[test]
    fn weak_missing_and_unsalted_hashes_are_named() {
        let weak = "$argon2id$v=19$m=4096,t=1,p=1$c2FsdA$aGFzaA";
        let f = failure(&[users(weak, ARGON_B)]);
        assert!(
            f.message.starts_with("account alice: public.accounts.password_hash holds `$argon2id$v=…`, argon2id with m=4096 KiB, t=1, p=1: below OWASP's minimum"),
            "{}",
            f.message
        );

        let salted_sha = "9c56cc51b374c3ba189210d5b6d4bf57790d351c96c47c02190ecf1e430635ab";
        let f = failure(&[users(salted_sha, ARGON_B)]);
        assert!(
            f.message
                .contains("a 64-hex-digit string, which looks like a SHA-256 digest"),
            "{}",
            f.message
        );
        assert!(!f.message.contains(salted_sha));

        let f = failure(&[users(ARGON_A, ARGON_A)]);
        assert!(
            f.message.starts_with("accounts alice and bob have the same password and the same stored hash (`$argon2id$v=…`"),
            "{}",
            f.message
        );

        let no_hash = table(
            "public.accounts",
            &[
                serde_json::json!({"id": 1, "username": "alice", "created_at": "2026-01-01"}),
                serde_json::json!({"id": 2, "username": "bob", "password_hash": ARGON_B}),
            ],
        );
        let f = failure(&[no_hash]);
        assert_eq!(
            f.message,
            "account alice: its row in public.accounts (columns created_at, id, username) holds no password hash, and no row that refers to it by an id does either"
        );
    }

    #[test]
    fn nothing_found_never_passes() {
        let f = failure(&[table(
            "public.notes",
            &[serde_json::json!({"id": 1, "title": "x"})],
        )]);
        assert!(
            f.message
                .starts_with("account alice: no row of the 1 table read holds this identifier"),
            "{}",
            f.message
        );
        assert!(f.message.ends_with("(and 1 more)"));
        let f = failure(&[]);
        assert!(f.message.contains("no row of the 0 tables read"));
    }
}
