//! What the database probes share: a connection to the grader's PostgreSQL (as the probe role),
//! the service's statements told apart by their role (`app`, the only role the service can log
//! in as: `crate::pg::SERVICE_ROLE`), sampled variables, the plans the
//! service's statements really ran with, how to judge and show them, and the answers a service
//! must give for the grader's own data.
//!
//! Mechanics, and why:
//! - **Executed plans, from the grader's own `auto_explain`.** When a data set is loaded the
//!   grader turns `auto_explain` on for the database (`session_preload_libraries`, with
//!   `log_min_duration = 0`, `log_analyze`, `log_buffers`, no timing, JSON), so every top-level
//!   statement the service runs leaves its executed plan in the server's CSV log (the runtimes
//!   start PostgreSQL with `logging_collector` and `log_destination = 'stderr,csvlog'`). A probe
//!   reads that log through SQL (`pg_read_binary_file`), which works the same for the local
//!   runtime and for a container. We judge what ran, with the service's own parameters and the
//!   pages each node touched: a per-status partial index is judged on the custom plan that used
//!   it, and a Sort that really ran under a Limit is seen even when a generic plan would not sort.
//!   The alternative, `EXPLAIN` with recorded parameters under a custom plan, would need the
//!   parameters (which only the log has, too), would plan again instead of showing the plan that
//!   ran (a driver that caches prepared statements switches to generic plans after five
//!   executions), and with `ANALYZE` would make the grader execute the learner's statements.
//!   `auto_explain` needs neither: the grader never executes a statement of the service.
//! - **A window per request.** Before a request the probe waits until none of the service's
//!   backends is active, notes the log's size and writes a marker (`RAISE LOG`); after the
//!   response it waits again, writes an end marker, and keeps the service's plans between the two.
//!   A backend turns idle only after its statement ended, and `auto_explain` writes at executor
//!   end, so every plan of the request lands before the end marker: no sleeps, no lost plans.
//! - **Buffers** are the shared blocks (hit + read, 8 kB pages) the executed plan's nodes touched:
//!   deterministic for a fixed data set and plan, unlike time. A connection's first statement of
//!   a kind also reads about 9 catalog pages inside its nodes (an index's metapage, the sort's
//!   operators) that later runs find cached. The budgets allow for them instead of warming up:
//!   a service's pool may hand the measured request a connection that never ran the statement,
//!   whatever ran before.
//! - **Statements** are grouped by `pg_stat_statements`' normalised text (joined by query id,
//!   comments stripped), so one statement sent with `int2` and with `int4` parameters (two query
//!   ids) is one statement with its calls added up.

pub mod answers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_postgres::Client;

use crate::dataset::{PROBE_ROLE, SERVICE_ROLE};
use crate::engine::assert::shorten;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::pg::db_error;

/// How long the probes wait for the service's backends to finish a statement, and for the log to
/// show the end marker, before giving up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
const LOG_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the log per call.
const LOG_CHUNK: i64 = 4 << 20;

/// Why a database check cannot run with `--runtime external`.
pub const NO_DATABASE: &str = "this check reads the grader's own PostgreSQL (the plans your statements ran with, the index catalog) and needs the data set the grader loads; with --runtime external (or [postgres] disabled) the grader has no database of its own, so it cannot grade this. This is the grader's limitation, not your service's fault: run with the local runtime";

/// A connection as [`PROBE_ROLE`], read-only.
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
        // Read-only: whatever a sample query says, the grader never changes the learner's data.
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .map_err(|e| Failure::Error(db_error(&e)))?;
    Ok(client)
}

/// Why a check that reads the service's own tables cannot run without the grader's PostgreSQL.
pub use crate::engine::sql::NO_SERVICE_DATABASE;

/// A read-only connection to the service's database as the server's superuser (`postgres`), for
/// probes that read the service's own rows. Unlike [`connect`] it needs no data set: the probe
/// role exists only when one was loaded, and these probes count no statistics.
pub async fn connect_owner(ctx: &CheckContext<'_>) -> Result<Client, Failure> {
    let Some(info) = ctx.service.postgres.as_ref() else {
        return Err(Failure::Error(NO_SERVICE_DATABASE.into()));
    };
    let client = crate::pg::connect(&info.url, "postgres")
        .await
        .map_err(Failure::Error)?;
    client
        .batch_execute("SET default_transaction_read_only = on; SET statement_timeout = '15s'")
        .await
        .map_err(|e| Failure::Error(db_error(&e)))?;
    Ok(client)
}

/// The value of a sample: a JSON array or object stays JSON, an integer a number, anything else
/// a string.
pub fn sample_value(text: String) -> Value {
    let t = text.trim_start();
    if t.starts_with('[') || t.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            return v;
        }
    }
    text.parse::<i64>()
        .map(Value::from)
        .unwrap_or(Value::String(text))
}

/// Runs each sample query and puts its first value in the check's scope (numbers stay numbers,
/// JSON arrays and objects stay JSON).
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
        ctx.scope.insert(name.clone(), sample_value(text));
    }
    Ok(())
}

/// Clears `pg_stat_statements` (read back only to tell "the service ran nothing" from "the
/// grader's log missed it").
pub async fn reset(client: &Client) -> Result<(), Failure> {
    wait_idle(client).await?;
    client
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await
        .map_err(|e| Failure::Error(format!("pg_stat_statements_reset(): {}", db_error(&e))))
}

/// Waits until no backend of the service (a client of this database as the service's role) is
/// running a statement. A backend turns idle only after its statement ended, and
/// `auto_explain` and `pg_stat_statements` record a statement when it ends.
pub async fn wait_idle(client: &Client) -> Result<(), Failure> {
    let started = Instant::now();
    loop {
        let busy: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND backend_type = 'client backend' AND usename = $1
                   AND state = 'active'",
                &[&SERVICE_ROLE],
            )
            .await
            .map_err(|e| Failure::Error(format!("reading pg_stat_activity: {}", db_error(&e))))?
            .get(0);
        if busy == 0 || started.elapsed() > IDLE_TIMEOUT {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ------------------------------------------------------------------------------------------
// SQL text: comments, classification, display.

/// The SQL without its comments (`-- ...` and nested `/* ... */`), string literals, quoted
/// identifiers and dollar-quoted strings kept as written.
pub fn strip_comments(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut last = 0;
    let flush = |out: &mut String, from: usize, to: usize| out.push_str(&sql[from..to]);
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                flush(&mut out, last, i);
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                out.push(' ');
                last = i;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                flush(&mut out, last, i);
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
                last = i;
            }
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() {
                    if b[i] == q {
                        if b.get(i + 1) == Some(&q) {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
            }
            b'$' => {
                // $tag$ ... $tag$ (a parameter like $1 is not a tag: tags do not start with a digit).
                let tag_end = sql[i + 1..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map(|n| i + 1 + n);
                match tag_end {
                    Some(e)
                        if b.get(e) == Some(&b'$')
                            && !b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) =>
                    {
                        let tag = &sql[i..=e];
                        match sql[e + 1..].find(tag) {
                            Some(n) => i = e + 1 + n + tag.len(),
                            None => i = b.len(),
                        }
                    }
                    _ => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    flush(&mut out, last, b.len().max(last));
    out
}

/// Whether a statement reads or writes data (SELECT, INSERT, UPDATE, DELETE, WITH, VALUES,
/// TABLE, MERGE), whatever comments come first; `BEGIN`, `COMMIT`, `SET` are not.
pub fn is_data_statement(sql: &str) -> bool {
    let text = strip_comments(sql);
    let head = text.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
    let word: String = head
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(
        word.as_str(),
        "select" | "insert" | "update" | "delete" | "with" | "values" | "table" | "merge"
    )
}

/// One line, comments dropped, whitespace collapsed, at most 300 characters.
pub fn normalise(query: &str) -> String {
    shorten(
        &strip_comments(query)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        300,
    )
}

// ------------------------------------------------------------------------------------------
// The server log: markers, CSV records, executed plans.

/// The grader's CSV server log, where `auto_explain` writes the service's executed plans.
#[derive(Debug, Clone)]
pub struct Log {
    file: String,
}

/// The start of a window: the log's size and the marker written there.
#[derive(Debug, Clone)]
pub struct Mark {
    offset: i64,
    token: String,
}

/// One statement the service executed, as `auto_explain` logged it.
#[derive(Debug, Clone)]
pub struct Execution {
    pub query_id: Option<i64>,
    /// The text the service sent (with its comments).
    pub text: String,
    /// The executed plan (`Plan` of EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)).
    pub plan: Value,
    pub hit: i64,
    pub read: i64,
}

impl Execution {
    pub fn buffers(&self) -> i64 {
        self.hit + self.read
    }
}

fn err(what: &str) -> impl Fn(tokio_postgres::Error) -> Failure + '_ {
    move |e| Failure::Error(format!("{what}: {}", db_error(&e)))
}

impl Log {
    /// The log of the grader's PostgreSQL, if it logs executed plans for this database.
    pub async fn open(client: &Client) -> Result<Log, Failure> {
        let row = client
            .query_one(
                "SELECT pg_current_logfile('csvlog'),
                        EXISTS (SELECT FROM pg_db_role_setting s, unnest(s.setconfig) c
                                WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
                                  AND s.setrole = 0 AND c LIKE 'session_preload_libraries=%auto_explain%')",
                &[],
            )
            .await
            .map_err(err("finding the grader's PostgreSQL log"))?;
        let file: Option<String> = row.get(0);
        let explain: bool = row.get(1);
        match (file, explain) {
            (Some(file), true) => Ok(Log { file }),
            (None, _) => Err(Failure::Error(
                "the grader's PostgreSQL writes no CSV log (it must run with logging_collector = on and log_destination including csvlog), so the plans your statements ran with cannot be read; this is the grader's problem, not your service's".into(),
            )),
            (_, false) => Err(Failure::Error(
                "auto_explain is not enabled for the database (the grader enables it when it loads an exercise's [dataset]), so the plans your statements ran with cannot be read; this is the grader's problem, not your service's".into(),
            )),
        }
    }

    async fn size(&self, client: &Client) -> Result<i64, Failure> {
        Ok(client
            .query_one("SELECT (pg_stat_file($1)).size", &[&self.file])
            .await
            .map_err(err("reading the size of the grader's PostgreSQL log"))?
            .get(0))
    }

    async fn write_marker(client: &Client, token: &str) -> Result<(), Failure> {
        client
            .batch_execute(&format!(
                "DO $grader$ BEGIN RAISE LOG '{token}'; END $grader$"
            ))
            .await
            .map_err(err("writing a marker to the grader's PostgreSQL log"))
    }

    /// Starts a window: the service's earlier statements have ended, and what it runs from now on
    /// comes after the marker.
    pub async fn mark(&self, client: &Client) -> Result<Mark, Failure> {
        wait_idle(client).await?;
        let offset = self.size(client).await?;
        let token = format!("grader-window {:016x}", rand::random::<u64>());
        Self::write_marker(client, &format!("{token} begins")).await?;
        Ok(Mark { offset, token })
    }

    /// The service's executed statements since `mark`, in the order they ended.
    pub async fn since(&self, client: &Client, mark: &Mark) -> Result<Vec<Execution>, Failure> {
        wait_idle(client).await?;
        let begin = format!("{} begins", mark.token);
        let end = format!("{} ends", mark.token);
        Self::write_marker(client, &end).await?;
        let started = Instant::now();
        let mut text = Vec::new();
        let mut offset = mark.offset;
        loop {
            let size = self.size(client).await?;
            while offset < size {
                let len = (size - offset).min(LOG_CHUNK);
                let chunk: Vec<u8> = client
                    .query_one(
                        "SELECT pg_read_binary_file($1, $2, $3)",
                        &[&self.file, &offset, &len],
                    )
                    .await
                    .map_err(err("reading the grader's PostgreSQL log"))?
                    .get(0);
                if chunk.is_empty() {
                    break;
                }
                offset += chunk.len() as i64;
                text.extend_from_slice(&chunk);
            }
            let s = String::from_utf8_lossy(&text);
            if let Some(found) = window(&s, &begin, &end) {
                return Ok(found);
            }
            if started.elapsed() > LOG_TIMEOUT {
                return Err(Failure::Error(format!(
                    "the grader's marker did not reach its PostgreSQL log ({}) within {}s",
                    self.file,
                    LOG_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The service's executions logged between the `begin` and `end` marker records of `text` (read
/// from a point that may cut a record), or `None` while the end marker is not there yet.
fn window(text: &str, begin: &str, end: &str) -> Option<Vec<Execution>> {
    // The marker's record is one line (the message, the DO statement, its context): start at it.
    let at = text.find(begin)?;
    let start = text[..at].rfind('\n').map_or(0, |n| n + 1);
    let mut out = Vec::new();
    let mut rest = &text[start..];
    let mut started = false;
    while !rest.is_empty() {
        let (fields, used) = csv_record(rest)?;
        rest = &rest[used..];
        let field = |i: usize| fields.get(i).map(String::as_str).unwrap_or("");
        let message = field(13);
        if message == end {
            return Some(out);
        }
        if message == begin {
            started = true;
            continue;
        }
        // The service's role only: neither the probe role nor the grader's superuser sessions
        // (white-box reads, other exercises' steps) are the service's statements.
        if !started || field(1) != SERVICE_ROLE {
            continue;
        }
        if let Some(e) = execution(message, field(25)) {
            out.push(e);
        }
    }
    None
}

/// `duration: 0.069 ms  plan:\n{"Query Text": ..., "Plan": {...}}`
fn execution(message: &str, query_id: &str) -> Option<Execution> {
    if !message.starts_with("duration:") {
        return None;
    }
    let json = &message[message.find("plan:")? + 5..];
    let doc: Value = serde_json::from_str(json.trim()).ok()?;
    let plan = doc.get("Plan")?.clone();
    let n = |k: &str| plan.get(k).and_then(Value::as_i64).unwrap_or(0);
    Some(Execution {
        query_id: query_id.parse().ok().filter(|q| *q != 0),
        text: doc
            .get("Query Text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        hit: n("Shared Hit Blocks"),
        read: n("Shared Read Blocks"),
        plan,
    })
}

/// One CSV record (RFC 4180 quoting, as PostgreSQL's csvlog writes it) and the bytes it used, or
/// `None` when the text ends inside it.
fn csv_record(text: &str) -> Option<(Vec<String>, usize)> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek().map(|(_, n)| *n) == Some('"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => fields.push(std::mem::take(&mut field)),
            '\n' => {
                fields.push(field);
                return Some((fields, i + 1));
            }
            '\r' => {}
            _ => field.push(c),
        }
    }
    None
}

// ------------------------------------------------------------------------------------------
// Statements: executions grouped by their normalised text.

/// One statement of the service: its executions in a window, grouped by normalised text.
#[derive(Debug, Clone)]
pub struct Statement {
    pub query: String,
    pub calls: i64,
    pub hit: i64,
    pub read: i64,
    /// The first executed plan of each distinct shape.
    pub plans: Vec<Value>,
}

impl Statement {
    pub fn buffers(&self) -> i64 {
        self.hit + self.read
    }

    /// `3 × SELECT ... — 23.0 buffers per call`. (How many of them were read into shared
    /// buffers rather than found there depends on what ran before, not on the query: the total
    /// is what is judged and shown.)
    pub fn line(&self) -> String {
        format!(
            "{} × {} — {:.1} buffers per call",
            self.calls,
            normalise(&self.query),
            self.buffers() as f64 / self.calls.max(1) as f64,
        )
    }
}

/// `pg_stat_statements`' normalised text of each query id (constants as `$n`).
pub async fn normalised_texts(
    client: &Client,
    executions: &[&Execution],
) -> Result<BTreeMap<i64, String>, Failure> {
    let ids: Vec<i64> = executions.iter().filter_map(|e| e.query_id).collect();
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows = client
        .query(
            "SELECT DISTINCT ON (queryid) queryid, query FROM pg_stat_statements
             WHERE queryid = ANY($1) ORDER BY queryid, calls DESC",
            &[&ids],
        )
        .await
        .map_err(err("reading pg_stat_statements"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Executions grouped by normalised text (so `int2` and `int4` parameters, two query ids, are one
/// statement), costliest first.
pub fn group(executions: &[&Execution], texts: &BTreeMap<i64, String>) -> Vec<Statement> {
    let mut by: BTreeMap<String, Statement> = BTreeMap::new();
    for e in executions {
        let text = e
            .query_id
            .and_then(|q| texts.get(&q))
            .cloned()
            .unwrap_or_else(|| e.text.clone());
        let key = normalise(&text);
        let s = by.entry(key).or_insert_with(|| Statement {
            query: text,
            calls: 0,
            hit: 0,
            read: 0,
            plans: Vec::new(),
        });
        s.calls += 1;
        s.hit += e.hit;
        s.read += e.read;
        let shape = shape(&e.plan);
        if !s.plans.iter().any(|p| shape == self::shape(p)) {
            s.plans.push(e.plan.clone());
        }
    }
    let mut out: Vec<Statement> = by.into_values().collect();
    out.sort_by(|a, b| {
        b.buffers()
            .cmp(&a.buffers())
            .then(b.calls.cmp(&a.calls))
            .then(a.query.cmp(&b.query))
    });
    out
}

/// A plan's node types and indexes, for telling plans apart.
fn shape(plan: &Value) -> String {
    let mut out = String::new();
    fn go(n: &Value, out: &mut String) {
        out.push_str(s(n, "Node Type").unwrap_or("?"));
        if let Some(i) = s(n, "Index Name") {
            out.push_str(i);
        }
        out.push('(');
        for k in n
            .get("Plans")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            go(k, out);
        }
        out.push(')');
    }
    go(plan, &mut out);
    out
}

/// The service's statements in pg_stat_statements since the last reset (the guard against a
/// log that missed them).
pub async fn statement_calls(client: &Client) -> Result<i64, Failure> {
    let rows = client
        .query(
            "SELECT query, calls FROM pg_stat_statements s
             WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND s.userid = (SELECT oid FROM pg_roles WHERE rolname = $1)
               AND s.toplevel",
            &[&SERVICE_ROLE],
        )
        .await
        .map_err(err("reading pg_stat_statements"))?;
    Ok(rows
        .iter()
        .filter(|r| is_data_statement(r.get(0)))
        .map(|r| r.get::<_, i64>(1))
        .sum())
}

/// What to say when a window holds no execution: the service did not use the database (a fail),
/// or it did and the grader's log missed it (an error).
pub async fn nothing_measured(client: &Client, what: &str) -> Failure {
    match statement_calls(client).await {
        Ok(n) if n > 0 => Failure::Error(format!(
            "{what}: pg_stat_statements counted {n} statement call(s) of your service, but the grader's auto_explain log holds none of their plans; this is the grader's problem, not your service's"
        )),
        Err(e) => e,
        Ok(_) => Failure::Fail(FailInfo {
            message: format!("{what}: no statement reached PostgreSQL"),
            expected: "the endpoint to read its data from the database (DATABASE_URL), where the grader can see the plans and the pages read".into(),
            actual: "no SELECT, INSERT, UPDATE or DELETE of your service ran while it answered (an answer from memory cannot be measured)".into(),
            ..Default::default()
        }),
    }
}

/// Fails when a table's rows are not the ones the grader loaded: their count and checksum are
/// compared with those recorded after the load (`dataset::CHECKSUMS`).
pub async fn unchanged(client: &Client, tables: &[String]) -> Result<(), Failure> {
    use crate::dataset::{checksum_sql, CHECKSUMS, CHECKSUM_SETTINGS};
    client
        .batch_execute(CHECKSUM_SETTINGS)
        .await
        .map_err(err("preparing the checksum"))?;
    let mut changed = Vec::new();
    let mut evidence = Vec::new();
    for t in tables {
        let loaded = client
            .query_opt(
                &format!("SELECT row_count, checksum FROM {CHECKSUMS} WHERE table_name = $1"),
                &[t],
            )
            .await
            .map_err(err("reading the data set's checksums"))?;
        let Some(loaded) = loaded else {
            return Err(Failure::Error(format!(
                "the grader recorded no checksum of table {t} when it loaded the data set (is it one of the data set's tables?)"
            )));
        };
        let (rows0, sum0): (i64, i64) = (loaded.get(0), loaded.get(1));
        let now = client
            .query_one(&checksum_sql(t), &[])
            .await
            .map_err(err(&format!("reading table {t}")))?;
        let (rows, sum): (i64, i64) = (now.get(0), now.get(1));
        // (pg_stat_user_tables would name the writes, but its counters land up to seconds
        // late: the checksum is the evidence.)
        evidence.push(format!(
            "table {t}: {rows} rows now, {rows0} loaded; checksum of the rows {}",
            if sum == sum0 { "unchanged" } else { "differs" },
        ));
        if rows != rows0 || sum != sum0 {
            changed.push(if rows != rows0 {
                format!("{t} has {rows} rows, the grader loaded {rows0}")
            } else {
                format!("{t} has the rows the grader loaded, but their values changed")
            });
        }
    }
    let _ = client
        .batch_execute(
            "RESET TimeZone; RESET DateStyle; RESET IntervalStyle; RESET extra_float_digits",
        )
        .await;
    if changed.is_empty() {
        return Ok(());
    }
    Err(Failure::Fail(FailInfo {
        message: format!("the data set changed: {}", changed.join("; ")),
        expected: format!(
            "{} exactly as the grader loaded them (your migrations add indexes; they never rewrite, add or delete rows)",
            tables.join(", ")
        ),
        actual: changed.join("\n"),
        evidence,
        ..Default::default()
    }))
}

// ------------------------------------------------------------------------------------------
// The catalog and the plan judge.

/// Row estimates of the tables, their columns, and each index's table and key columns.
#[derive(Debug, Default)]
pub struct Catalog {
    pub table_rows: BTreeMap<String, f64>,
    pub columns: BTreeMap<String, Vec<String>>,
    pub indexes: BTreeMap<String, IndexInfo>,
}

#[derive(Debug, Clone, Default)]
pub struct IndexInfo {
    pub table: String,
    /// Each key column: `Some(name)` for a plain column, `None` for an expression.
    pub keys: Vec<Option<String>>,
    /// `pg_get_indexdef`, for messages.
    pub def: String,
}

pub async fn catalog(client: &Client) -> Result<Catalog, Failure> {
    let e = err("reading the catalog");
    let mut out = Catalog::default();
    let user_tables = "NOT IN (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema', 'pg_toast'))";
    for r in client
        .query(
            &format!(
                "SELECT c.relname::text, c.reltuples::float8,
                        array(SELECT a.attname::text FROM pg_attribute a
                              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
                 FROM pg_class c WHERE c.relkind IN ('r', 'p', 'm') AND c.relnamespace {user_tables}"
            ),
            &[],
        )
        .await
        .map_err(&e)?
    {
        out.table_rows.insert(r.get(0), r.get(1));
        out.columns.insert(r.get(0), r.get(2));
    }
    for r in client
        .query(
            &format!(
                "SELECT i.relname::text, t.relname::text, pg_get_indexdef(x.indexrelid),
                        array(SELECT coalesce((SELECT a.attname::text FROM pg_attribute a
                                               WHERE a.attrelid = x.indrelid AND a.attnum = x.indkey[k]), '')
                              FROM generate_series(0, x.indnkeyatts - 1) k ORDER BY k)
                 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
                 WHERE t.relnamespace {user_tables}"
            ),
            &[],
        )
        .await
        .map_err(&e)?
    {
        let keys: Vec<String> = r.get(3);
        out.indexes.insert(
            r.get(0),
            IndexInfo {
                table: r.get(1),
                def: r.get(2),
                keys: keys
                    .into_iter()
                    .map(|k| (!k.is_empty()).then_some(k))
                    .collect(),
            },
        );
    }
    Ok(out)
}

/// A plan drawn as a short tree, and what is wrong with it.
#[derive(Debug, Default)]
pub struct Judged {
    pub tree: Vec<String>,
    pub problems: Vec<String>,
    /// What would help, one per cause (never DDL).
    pub hints: Vec<String>,
}

const HINT_SEQ: &str = "an index whose leading columns are the ones the WHERE clause compares with =, so PostgreSQL reads only the matching rows";
const HINT_SORT: &str = "an index that, after the equality columns, lists the ORDER BY columns in order, so rows come out already sorted and the Limit stops early";
const HINT_FILTER: &str = "the index finds candidates but other conditions are checked row by row afterwards (Filter): a composite index with the equality columns first, then the range or ORDER BY column";
const HINT_LEADING: &str = "the index is scanned from end to end because its first column is not constrained: order the columns equality first, then range";
const HINT_LOSSY: &str = "the bitmap is lossy (a BRIN index, or too little work_mem): PostgreSQL reads whole blocks and rechecks every row in them; a B-tree on the range column reads only the rows in the range";

fn push_hint(j: &mut Judged, h: String) {
    if !j.hints.contains(&h) {
        j.hints.push(h);
    }
}

/// Why a condition cannot use an index on its column, when the condition shows it: ILIKE, a
/// cast of the column, or a function of the column. `columns` are the table's.
pub fn cause(cond: &str, columns: &[String]) -> Option<String> {
    for col in columns {
        if !mentions(cond, col) {
            continue;
        }
        if cond.contains(&format!("{col} ~~* ")) || cond.contains(&format!("({col})::text ~~* ")) {
            return Some(format!(
                "the query compares {col} with ILIKE (~~*), which no B-tree index serves: compare lower({col}) = lower($1) and index that expression (or store the column as citext and index it)"
            ));
        }
        if cond.contains(&format!("{col} ~~ ")) {
            return Some(format!(
                "the query compares {col} with LIKE (~~); a pattern is not an equality: compare with = (on lower({col}) for a case-insensitive match) and index what you compare"
            ));
        }
        if let Some(cast) = cast_of(cond, col) {
            return Some(format!(
                "the query casts the column ({cast}), so an index on {col} cannot serve it: compare the column as it is stored and cast the parameter instead"
            ));
        }
        if let Some(f) = function_of(cond, col) {
            return Some(format!(
                "the query compares a function of the column ({f}): an index on {col} cannot serve it; an index on that same expression can"
            ));
        }
    }
    None
}

/// `(customer_id)::text` in `((customer_id)::text = $1)`.
fn cast_of(cond: &str, col: &str) -> Option<String> {
    let pat = format!("({col})::");
    let at = cond.find(&pat)?;
    let ty: String = cond[at + pat.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ' ')
        .collect();
    let ty = ty.split(" = ").next().unwrap_or("").trim().to_string();
    Some(format!("{pat}{ty}"))
}

/// `lower(email)` in `(lower(email) = lower($1))`: a function call whose arguments name the column.
fn function_of(cond: &str, col: &str) -> Option<String> {
    let b = cond.as_bytes();
    for (open, _) in cond.match_indices('(') {
        let name_start = cond[..open]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |n| n + 1);
        let name = &cond[name_start..open];
        if name.is_empty() || name.eq_ignore_ascii_case("ROW") || name.eq_ignore_ascii_case("ANY") {
            continue;
        }
        let mut depth = 0usize;
        let mut close = None;
        for (i, &c) in b.iter().enumerate().skip(open) {
            match c {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let close = close?;
        let args = &cond[open + 1..close];
        if mentions(args, col) {
            return Some(cond[name_start..=close].to_string());
        }
    }
    None
}

/// Walks an executed plan: draws it, and flags Seq Scans of large tables, Sorts under a Limit over
/// a large table, index scans of a large table that threw rows away after the index or left the
/// index's first column unconstrained.
pub fn judge(plan: &Value, cat: &Catalog, large: f64) -> Judged {
    let mut j = Judged::default();
    walk(plan, cat, large, 0, None, &mut j);
    // The cause first: a scan that reads too much explains the sort above it, not the reverse.
    j.problems.sort_by_key(|p| p.contains("Sort under a Limit"));
    j
}

fn s<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node.get(key).and_then(Value::as_str)
}

fn n(node: &Value, key: &str) -> f64 {
    node.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn table_of(node: &Value, cat: &Catalog) -> Option<String> {
    s(node, "Relation Name")
        .map(str::to_string)
        .or_else(|| s(node, "Index Name").and_then(|i| cat.indexes.get(i).map(|x| x.table.clone())))
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

/// `customer_id` in `(customer_id = $1)`, not in `other_customer_id`.
fn mentions(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The top-level conjuncts of a condition: `((a = $1) AND (b = $2))` → `a = $1`, `b = $2`.
pub fn conjuncts(cond: &str) -> Vec<String> {
    let inner = strip_parens(cond.trim());
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut last = 0;
    let b = inner.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            b' ' if !quoted && depth == 0 && inner[i..].starts_with(" AND ") => {
                out.push(strip_parens(inner[last..i].trim()).to_string());
                i += 5;
                last = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(strip_parens(inner[last..].trim()).to_string());
    out
}

/// `(x)` → `x`, when the parentheses enclose the whole text.
fn strip_parens(t: &str) -> &str {
    let mut t = t;
    while t.starts_with('(') && t.ends_with(')') {
        let mut depth = 0i32;
        let mut encloses = true;
        for (i, c) in t.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 && i != t.len() - 1 {
                        encloses = false;
                        break;
                    }
                }
                _ => {}
            }
        }
        if !encloses {
            break;
        }
        t = &t[1..t.len() - 1];
    }
    t
}

/// What the index side of an index condition is: PostgreSQL always writes the indexed column or
/// expression on the left (`customer_id = $1`, `ROW(created_at, id) < ROW(...)`,
/// `lower(email) = lower($1)`, `(email)::citext = ($1)::citext`). `Some(column)` for a plain
/// column (the first of a row comparison), `None` for an expression.
fn index_side(conjunct: &str) -> Option<String> {
    let c = conjunct.trim();
    let c = c
        .strip_prefix("ROW(")
        .map(|rest| rest.split([',', ')']).next().unwrap_or(""))
        .unwrap_or(c);
    let left = c.split_whitespace().next().unwrap_or("");
    let left = strip_parens(left);
    // `orders.customer_id` (VERBOSE) or `"Customer"`: the last identifier.
    let name = left.rsplit('.').next().unwrap_or(left).trim_matches('"');
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| name.to_string())
}

/// Whether an index condition constrains the index's first key column. Each conjunct of an index
/// condition is on some key column (the planner puts nothing else there): a plain column is named
/// on the conjunct's left; a conjunct whose left side is an expression is on an expression key.
/// So the first key is constrained when a conjunct names it (a column), or when it is an
/// expression and some conjunct is on an expression. Columns are compared as names from the
/// catalog, never expressions as text (`(email)::citext` in a plan and `(email::citext)` in the
/// index definition are the same key).
pub fn constrains_first_key(cond: &str, index: &IndexInfo) -> bool {
    let Some(first) = index.keys.first() else {
        return true;
    };
    let sides: Vec<Option<String>> = conjuncts(cond).iter().map(|c| index_side(c)).collect();
    match first {
        Some(col) => sides.iter().any(|s| s.as_deref() == Some(col.as_str())),
        None => sides.iter().any(|s| {
            s.as_ref()
                .is_none_or(|name| !index.keys.contains(&Some(name.clone())))
        }),
    }
}

/// `under_limit`: below a Limit, with the rows it let through when the plan was executed.
fn walk(
    node: &Value,
    cat: &Catalog,
    large: f64,
    depth: usize,
    under_limit: Option<Option<f64>>,
    j: &mut Judged,
) {
    let kind = s(node, "Node Type").unwrap_or("?");
    let table = table_of(node, cat);
    let rows = table
        .as_ref()
        .and_then(|t| cat.table_rows.get(t).copied())
        .unwrap_or(0.0);
    let is_large = rows >= large;
    let columns: &[String] = table
        .as_ref()
        .and_then(|t| cat.columns.get(t))
        .map_or(&[], Vec::as_slice);
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
    let actual = node.get("Actual Rows").is_some();
    let loops = n(node, "Actual Loops");
    let removed = n(node, "Rows Removed by Filter");
    let rechecked = n(node, "Rows Removed by Index Recheck");
    let lossy = n(node, "Lossy Heap Blocks");
    if actual {
        let mut facts = vec![if loops > 1.0 {
            format!("{:.0} rows × {loops:.0} loops", n(node, "Actual Rows"))
        } else {
            format!("{:.0} rows", n(node, "Actual Rows"))
        }];
        if removed > 0.0 {
            facts.push(format!("{removed:.0} removed by filter"));
        }
        if rechecked > 0.0 {
            facts.push(format!("{rechecked:.0} removed by recheck"));
        }
        if lossy > 0.0 {
            facts.push(format!("{lossy:.0} lossy blocks"));
        }
        facts.push(format!(
            "{:.0} buffers",
            n(node, "Shared Hit Blocks") + n(node, "Shared Read Blocks")
        ));
        line.push_str(&format!("  ({})", facts.join(", ")));
    } else if let Some(r) = node.get("Plan Rows").and_then(Value::as_f64) {
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
    let cause_hint = |cond: Option<&str>| cond.and_then(|c| cause(c, columns));
    match kind {
        "Seq Scan" if is_large => {
            j.problems.push(format!(
                "Seq Scan on {table_name} (~{size} rows): every row is read to find a few"
            ));
            let h = cause_hint(s(node, "Filter")).unwrap_or_else(|| HINT_SEQ.to_string());
            push_hint(j, h);
        }
        "Sort" | "Incremental Sort" if under_limit.is_some() && scans_large(node, cat, large) => {
            // An executed sort is a problem when it sorted more rows than the Limit let through:
            // the rest were fetched and sorted only to be thrown away. (PostgreSQL rightly sorts
            // the 20 rows of a small customer instead of walking an index backwards; a plan that
            // was not executed is judged by its shape.)
            let sorted: f64 = node
                .get("Plans")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|k| n(k, "Actual Rows") * n(k, "Actual Loops").max(1.0))
                .sum();
            // An Incremental Sort reads presorted groups and stops with the Limit; it sorts a
            // group past the page at most, so only a large excess counts.
            let allowed = |kept: f64| match kind {
                "Incremental Sort" => 2.0 * kept,
                _ => kept,
            };
            match under_limit.flatten() {
                Some(kept) if actual => {
                    if sorted > allowed(kept) {
                        j.problems.push(format!(
                            "{kind} under a Limit: {sorted:.0} matching rows were fetched and sorted to return {kept:.0}"
                        ));
                        push_hint(j, HINT_SORT.to_string());
                    }
                }
                _ => {
                    j.problems.push(format!(
                        "{kind} under a Limit: every matching row is fetched and sorted, then all but a page thrown away"
                    ));
                    push_hint(j, HINT_SORT.to_string());
                }
            }
        }
        "Index Scan" | "Index Only Scan" | "Bitmap Index Scan" | "Bitmap Heap Scan" if is_large => {
            if let (Some(cond), Some(index)) = (
                s(node, "Index Cond"),
                s(node, "Index Name").and_then(|i| cat.indexes.get(i)),
            ) {
                if !constrains_first_key(cond, index) {
                    let first = match index.keys.first() {
                        Some(Some(c)) => c.clone(),
                        _ => "an expression".into(),
                    };
                    j.problems.push(format!(
                        "{kind} on {table_name} (~{size} rows) does not constrain the index's first column ({first}): the whole index is read"
                    ));
                    push_hint(j, HINT_LEADING.to_string());
                }
            }
            if let Some(f) = s(node, "Filter") {
                // An executed plan says how many rows the filter threw away; a plan that was
                // not executed (no actual rows) is judged by its shape.
                if removed > 0.0 || !actual {
                    j.problems.push(format!(
                        "{kind} on {table_name} (~{size} rows) filters rows after the index ({f}{}): rows are fetched only to be thrown away",
                        if actual { format!(", {removed:.0} rows thrown away") } else { String::new() }
                    ));
                    let h = cause_hint(Some(f)).unwrap_or_else(|| HINT_FILTER.to_string());
                    push_hint(j, h);
                }
            }
            if kind == "Bitmap Heap Scan" && (lossy > 0.0 || rechecked > n(node, "Actual Rows")) {
                push_hint(j, HINT_LOSSY.to_string());
            }
        }
        _ => {}
    }
    // Below a Limit: the rows it let through (when executed).
    let limit_below = match kind {
        "Limit" => Some(actual.then(|| n(node, "Actual Rows") * loops.max(1.0))),
        _ => under_limit,
    };
    if let Some(kids) = node.get("Plans").and_then(Value::as_array) {
        for k in kids {
            walk(k, cat, large, depth + 1, limit_below, j);
        }
    }
}

/// Draws and judges the executed plans of the statements.
pub fn judge_statements(stmts: &[Statement], cat: &Catalog, large: f64) -> (Vec<String>, Judged) {
    let mut lines = Vec::new();
    let mut all = Judged::default();
    for st in stmts {
        for plan in &st.plans {
            let j = judge(plan, cat, large);
            lines.push(format!("executed plan of: {}", normalise(&st.query)));
            lines.extend(j.tree.iter().map(|l| format!("  {l}")));
            all.problems.extend(
                j.problems
                    .iter()
                    .map(|x| format!("{x} — in: {}", normalise(&st.query))),
            );
            for h in j.hints {
                push_hint(&mut all, h);
            }
        }
    }
    (lines, all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cat() -> Catalog {
        let mut c = Catalog::default();
        c.table_rows.insert("orders".into(), 200_000.0);
        c.table_rows.insert("customers".into(), 50_000.0);
        c.table_rows.insert("tiny".into(), 10.0);
        c.columns.insert(
            "orders".into(),
            ["id", "customer_id", "status", "created_at", "total_cents"]
                .map(String::from)
                .to_vec(),
        );
        c.columns.insert(
            "customers".into(),
            ["id", "email", "name", "created_at"]
                .map(String::from)
                .to_vec(),
        );
        let idx = |table: &str, keys: &[Option<&str>]| IndexInfo {
            table: table.into(),
            keys: keys.iter().map(|k| k.map(String::from)).collect(),
            def: String::new(),
        };
        c.indexes.insert(
            "orders_wrong".into(),
            idx(
                "orders",
                &[
                    Some("created_at"),
                    Some("customer_id"),
                    Some("status"),
                    Some("id"),
                ],
            ),
        );
        c.indexes.insert(
            "orders_good".into(),
            idx(
                "orders",
                &[
                    Some("customer_id"),
                    Some("status"),
                    Some("created_at"),
                    Some("id"),
                ],
            ),
        );
        c.indexes
            .insert("customers_citext".into(), idx("customers", &[None]));
        c.indexes.insert(
            "orders_expr_then_col".into(),
            idx("orders", &[None, Some("customer_id")]),
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
    fn an_executed_sort_is_judged_by_the_rows_it_threw_away() {
        let sort = |input: i64| {
            json!({"Node Type": "Limit", "Actual Rows": 20, "Actual Loops": 1, "Plans": [
                {"Node Type": "Sort", "Actual Rows": 20, "Actual Loops": 1, "Plans": [
                    {"Node Type": "Bitmap Heap Scan", "Relation Name": "orders", "Actual Rows": input, "Actual Loops": 1}]}]})
        };
        assert!(judge(&sort(20), &cat(), 10_000.0).problems.is_empty());
        let j = judge(&sort(300), &cat(), 10_000.0);
        assert_eq!(
            j.problems,
            vec!["Sort under a Limit: 300 matching rows were fetched and sorted to return 20"]
        );
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

    #[test]
    fn an_executed_filter_that_threw_nothing_away_passes() {
        let kept = json!({"Node Type": "Index Scan", "Index Name": "orders_good", "Relation Name": "orders",
            "Index Cond": "(customer_id = 7)", "Filter": "(total_cents > 0)",
            "Actual Rows": 20, "Actual Loops": 1, "Rows Removed by Filter": 0});
        assert!(judge(&kept, &cat(), 10_000.0).problems.is_empty());
        let thrown = json!({"Node Type": "Index Scan", "Index Name": "orders_good", "Relation Name": "orders",
            "Index Cond": "(customer_id = 7)", "Filter": "(status = 'delivered'::text)",
            "Actual Rows": 20, "Actual Loops": 1, "Rows Removed by Filter": 57,
            "Shared Hit Blocks": 30, "Shared Read Blocks": 2});
        let j = judge(&thrown, &cat(), 10_000.0);
        assert_eq!(j.problems.len(), 1);
        assert!(
            j.problems[0].contains("57 rows thrown away"),
            "{:?}",
            j.problems
        );
        assert!(
            j.tree[0].ends_with("(20 rows, 57 removed by filter, 32 buffers)"),
            "{:?}",
            j.tree
        );
    }

    #[test]
    fn an_expression_index_is_matched_by_kind_not_by_text() {
        // CREATE INDEX ON customers ((email::citext)): the plan writes (email)::citext.
        let citext = json!({"Node Type": "Index Scan", "Index Name": "customers_citext", "Relation Name": "customers",
            "Index Cond": "((email)::citext = ($1)::citext)"});
        assert!(judge(&citext, &cat(), 10_000.0).problems.is_empty());
        let lower = json!({"Node Type": "Bitmap Index Scan", "Index Name": "customers_citext",
            "Index Cond": "(lower(email) = lower('X'::text))"});
        assert!(judge(&lower, &cat(), 10_000.0).problems.is_empty());
        // An expression first, then a column: constraining only the column skips the first key.
        let idx = &cat().indexes["orders_expr_then_col"];
        assert!(!constrains_first_key("(customer_id = $1)", idx));
        assert!(constrains_first_key(
            "((date_trunc('day'::text, created_at) = $2) AND (customer_id = $1))",
            idx
        ));
        // Row comparisons and VERBOSE names.
        let good = &cat().indexes["orders_good"];
        assert!(constrains_first_key(
            "((orders.customer_id = $1) AND (ROW(orders.created_at, orders.id) < ROW($3, $4)))",
            good
        ));
        let wrong = &cat().indexes["orders_wrong"];
        assert!(constrains_first_key(
            "(ROW(created_at, id) < ROW($3, $4))",
            wrong
        ));
    }

    #[test]
    fn hints_name_the_cause() {
        let cols = cat().columns["customers"].clone();
        let ilike = cause("(email ~~* $1)", &cols).unwrap();
        assert!(ilike.contains("ILIKE"), "{ilike}");
        let lower = cause("(lower(email) = lower($1))", &cols).unwrap();
        assert!(
            lower.contains("function of the column (lower(email))"),
            "{lower}"
        );
        let ocols = cat().columns["orders"].clone();
        let cast = cause("((customer_id)::text = $1)", &ocols).unwrap();
        assert!(
            cast.contains("casts the column ((customer_id)::text)"),
            "{cast}"
        );
        assert_eq!(cause("(customer_id = $1)", &ocols), None);
        let seq = json!({"Node Type": "Seq Scan", "Relation Name": "customers", "Filter": "(email ~~* 'A@B.C'::text)"});
        let j = judge(&seq, &cat(), 10_000.0);
        assert!(j.hints[0].contains("ILIKE"), "{:?}", j.hints);
    }

    #[test]
    fn comments_are_stripped_before_statements_are_classified() {
        assert!(is_data_statement("/* app=refsvc route=/orders */ SELECT 1"));
        assert!(is_data_statement("-- header\n-- more\n  select 1"));
        assert!(is_data_statement(
            "/* a /* nested */ comment */ WITH x AS (SELECT 1) TABLE x"
        ));
        assert!(is_data_statement("(SELECT 1)"));
        assert!(!is_data_statement("/* x */ BEGIN"));
        assert!(!is_data_statement("SET search_path = public"));
        assert_eq!(
            normalise("/* app=x */ SELECT '/* not a comment */', $1 -- trailing\n FROM t"),
            "SELECT '/* not a comment */', $1 FROM t"
        );
        assert_eq!(
            strip_comments("SELECT $q$ -- kept $q$, $1"),
            "SELECT $q$ -- kept $q$, $1"
        );
    }

    #[test]
    fn conjuncts_split_at_top_level_and() {
        assert_eq!(
            conjuncts("((customer_id = $1) AND (status = 'a AND b'::text))"),
            vec!["customer_id = $1", "status = 'a AND b'::text"]
        );
        assert_eq!(conjuncts("(customer_id = $1)"), vec!["customer_id = $1"]);
    }

    #[test]
    fn the_window_keeps_the_services_plans_between_the_markers() {
        let plan = |q: &str, hit: i64| {
            let doc = json!({"Query Text": q, "Plan": {"Node Type": "Result", "Shared Hit Blocks": hit, "Shared Read Blocks": 1}});
            format!(
                "duration: 0.050 ms  plan:\n{}",
                serde_json::to_string_pretty(&doc).unwrap()
            )
        };
        let rec = |user: &str, msg: &str, qid: &str| {
            format!(
                "2026-01-01 00:00:00.000 UTC,\"{user}\",\"app\",1,\"127.0.0.1:1\",x.1,1,\"SELECT\",2026-01-01 00:00:00 UTC,3/1,0,LOG,00000,\"{}\",,,,,,,,,\"svc\",\"client backend\",,{qid}\n",
                msg.replace('"', "\"\"")
            )
        };
        let text = [
            "d, \"a cut record\"\n".to_string(),
            rec("app", &plan("SELECT 0", 5), "7"),
            rec("grader_probe", "tok begins", "0"),
            rec("app", &plan("/* c */ SELECT 1", 3), "11"),
            rec("grader_probe", &plan("SELECT grader", 9), "12"),
            rec("postgres", &plan("SELECT superuser", 9), "15"),
            rec("app", &plan("SELECT 2", 4), "-13"),
            rec("grader_probe", "tok ends", "0"),
            rec("app", &plan("SELECT 3", 4), "14"),
        ]
        .concat();
        let got = window(&text, "tok begins", "tok ends").unwrap();
        let texts: Vec<&str> = got.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, vec!["/* c */ SELECT 1", "SELECT 2"]);
        assert_eq!(
            (got[0].query_id, got[0].buffers(), got[1].query_id),
            (Some(11), 4, Some(-13))
        );
        // Not complete until the end marker is there.
        let cut = text.find("tok ends").unwrap();
        assert!(window(&text[..cut], "tok begins", "tok ends").is_none());
    }

    #[test]
    fn executions_group_by_normalised_text() {
        let e = |qid: i64, hit: i64| Execution {
            query_id: Some(qid),
            text: "SELECT email FROM customers WHERE id = $1".into(),
            plan: json!({"Node Type": "Index Scan", "Index Name": "customers_pkey"}),
            hit,
            read: 0,
        };
        let (a, b, c) = (e(1, 3), e(2, 3), e(1, 3));
        let mut texts = BTreeMap::new();
        texts.insert(1, "SELECT email FROM customers WHERE id = $1".to_string());
        texts.insert(2, "SELECT email FROM customers  WHERE id = $1".to_string());
        let g = group(&[&a, &b, &c], &texts);
        assert_eq!(g.len(), 1, "{g:?}");
        assert_eq!((g[0].calls, g[0].buffers(), g[0].plans.len()), (3, 9, 1));
    }

    #[test]
    fn samples_keep_json_numbers_and_text() {
        assert_eq!(sample_value("42".into()), json!(42));
        assert_eq!(sample_value("[1, 2]".into()), json!([1, 2]));
        assert_eq!(sample_value("Amber@x.io".into()), json!("Amber@x.io"));
        assert_eq!(sample_value("[not json".into()), json!("[not json"));
    }
}
