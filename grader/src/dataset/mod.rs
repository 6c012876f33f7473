//! Data sets the grader loads into its own PostgreSQL before the service starts.
//!
//! An exercise that grades database work (indexing) declares `[dataset]` in its `exercise.toml`:
//! a schema file in the exercise folder and a named, built-in generator with parameters. The
//! grader runs the schema, bulk-loads seeded random rows with `COPY ... FROM STDIN`, runs
//! `VACUUM ANALYZE`, creates [`PROBE_ROLE`], the role its database probes connect as (so the
//! statements the grader runs never mix with the service's), and turns on `auto_explain` for the
//! database (so the service's executed plans reach the server log the probes read).
//!
//! Why the grader ships the schema instead of the service's migrations creating it: the data must
//! exist before the service starts (its migrations then add indexes to a full table, as in
//! production), and the checks' queries are known to the exercise, so the tables they read must
//! be known too. The service's migrations may repeat the same `CREATE TABLE IF NOT EXISTS`.
//!
//! Everything is derived from the run's seed: `--seed N` loads exactly the same rows.

mod orders;

use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;

pub use crate::pg::{connect, db_error, SERVICE_ROLE};

/// The role the database probes connect as; its statements are left out of the service's.
pub const PROBE_ROLE: &str = "grader_probe";

/// Names of the built-in generators, for messages.
pub const GENERATORS: &[&str] = &["orders"];

/// A parsed `[dataset]` table.
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    /// The schema file's name in the exercise folder (for messages).
    pub schema_file: String,
    /// Its SQL, run before the rows are copied in.
    pub schema_sql: String,
    pub generator: Generator,
}

/// A built-in generator with its parameters.
#[derive(Debug, Clone)]
pub enum Generator {
    Orders(orders::OrdersParams),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Dataset")]
pub struct RawDataset {
    schema: String,
    generator: String,
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    params: Option<toml::Value>,
}

/// Parses `[dataset]`; `read` gives the text of a file in the exercise folder. Errors are plain
/// messages; the caller locates them.
pub fn parse(
    value: &toml::Value,
    read: impl Fn(&str) -> Option<String>,
) -> Result<DatasetSpec, String> {
    let raw: RawDataset = value
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| format!("[dataset]: {}", e.message()))?;
    if raw.schema.contains("..") || raw.schema.starts_with('/') {
        return Err(format!(
            "[dataset] schema \"{}\" must be a file in the exercise folder",
            raw.schema
        ));
    }
    let schema_sql = read(&raw.schema).ok_or_else(|| {
        format!(
            "[dataset] schema \"{}\" is not in the exercise folder",
            raw.schema
        )
    })?;
    let params = raw.params.unwrap_or(toml::Value::Table(Default::default()));
    let generator = match raw.generator.as_str() {
        "orders" => Generator::Orders(orders::OrdersParams::parse(params)?),
        other => {
            return Err(format!(
                "unknown dataset generator `{other}`; known: {}",
                GENERATORS.join(", ")
            ))
        }
    };
    Ok(DatasetSpec {
        schema_file: raw.schema,
        schema_sql,
        generator,
    })
}

/// What a load did, for the progress line and the report's timings.
#[derive(Debug, Clone, Default)]
pub struct LoadStats {
    /// (table, rows) in load order.
    pub tables: Vec<(String, u64)>,
    pub copy: Duration,
    pub analyze: Duration,
    pub total: Duration,
}

impl LoadStats {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }

    /// `250,000 rows (customers 50,000, orders 200,000): copy 0.8s (310,000 rows/s), analyze 0.3s`
    pub fn summary(&self) -> String {
        let per_sec = self.rows() as f64 / self.copy.as_secs_f64().max(0.001);
        let tables: Vec<String> = self
            .tables
            .iter()
            .map(|(t, n)| format!("{t} {}", thousands(*n)))
            .collect();
        format!(
            "{} rows ({}): copy {:.2}s ({} rows/s), vacuum analyze {:.2}s",
            thousands(self.rows()),
            tables.join(", "),
            self.copy.as_secs_f64(),
            thousands(per_sec as u64),
            self.analyze.as_secs_f64()
        )
    }
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Runs the schemas, copies the rows in, analyses, and creates the probe role.
pub async fn load(
    datasets: &[(String, DatasetSpec)],
    seed: u64,
    database_url: &str,
) -> Result<LoadStats, String> {
    let started = Instant::now();
    let client = connect(database_url, "postgres").await?;
    // The probe role logs in with the grader's own password (the server trusts no login).
    let password = database_url
        .parse::<tokio_postgres::Config>()
        .ok()
        .and_then(|c| {
            c.get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        })
        .filter(|p| p.chars().all(|c| c.is_ascii_alphanumeric()))
        .ok_or_else(|| {
            "the grader's database URL has no password for its probe role".to_string()
        })?;
    client
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {PROBE_ROLE}; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             ALTER ROLE {PROBE_ROLE} WITH SUPERUSER LOGIN PASSWORD '{password}'"
        ))
        .await
        .map_err(|e| format!("creating role {PROBE_ROLE}: {e}"))?;
    let mut stats = LoadStats::default();
    let mut analyze = Vec::new();
    for (exercise, spec) in datasets {
        // The tables are the service's, as if its migrations had made them: its role owns them,
        // so it can index them (only an owner may) without being a superuser. Generated rows are
        // consistent by construction, so the per-row foreign-key triggers are skipped; that
        // setting is a superuser's, so it comes before the role changes.
        client
            .batch_execute(&format!(
                "SET session_replication_role = replica; SET ROLE {SERVICE_ROLE}"
            ))
            .await
            .map_err(|e| format!("SET ROLE {SERVICE_ROLE}: {}", db_error(&e)))?;
        client
            .batch_execute(&spec.schema_sql)
            .await
            .map_err(|e| format!("{exercise}/{}: {}", spec.schema_file, db_error(&e)))?;
        let copy_started = Instant::now();
        let mut rng = crate::spec::random::check_rng(seed, exercise, "@dataset");
        let tables = match &spec.generator {
            Generator::Orders(p) => orders::load(&client, p, &mut rng).await,
        }
        .map_err(|e| format!("{exercise}: loading the data set: {e}"))?;
        client
            .batch_execute("RESET ROLE; SET session_replication_role = DEFAULT")
            .await
            .map_err(|e| db_error(&e))?;
        stats.copy += copy_started.elapsed();
        analyze.extend(tables.iter().map(|(t, _)| t.clone()));
        stats.tables.extend(tables);
    }
    let analyze_started = Instant::now();
    client
        .batch_execute(&format!("VACUUM (ANALYZE) {}", analyze.join(", ")))
        .await
        .map_err(|e| format!("VACUUM ANALYZE: {}", db_error(&e)))?;
    stats.analyze = analyze_started.elapsed();
    record_checksums(&client, &analyze).await?;
    log_executed_plans(&client).await?;
    stats.total = started.elapsed();
    Ok(stats)
}

/// Where the grader keeps what it loaded, so a check can tell later whether the service changed it.
pub const CHECKSUMS: &str = "grader.dataset_checksums";

/// Settings that fix the text form of every value, so a row's text (and its hash) does not depend
/// on the session.
pub const CHECKSUM_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3";

/// The row count and an order-independent checksum of a table (the sum of its rows' text hashes).
pub fn checksum_sql(table: &str) -> String {
    format!(
        "SELECT count(*)::bigint, coalesce(sum(hashtext(t::text)::bigint), 0)::bigint FROM {table} t"
    )
}

/// Records the row count and checksum of each loaded table in [`CHECKSUMS`].
async fn record_checksums(
    client: &tokio_postgres::Client,
    tables: &[String],
) -> Result<(), String> {
    let e =
        |e: tokio_postgres::Error| format!("recording the data set's checksums: {}", db_error(&e));
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS grader;
             CREATE TABLE IF NOT EXISTS {CHECKSUMS} (table_name text PRIMARY KEY, row_count bigint NOT NULL, checksum bigint NOT NULL);
             {CHECKSUM_SETTINGS};"
        ))
        .await
        .map_err(e)?;
    for t in tables {
        let row = client.query_one(&checksum_sql(t), &[]).await.map_err(e)?;
        let (rows, sum): (i64, i64) = (row.get(0), row.get(1));
        client
            .execute(
                &format!(
                    "INSERT INTO {CHECKSUMS} VALUES ($1, $2, $3)
                     ON CONFLICT (table_name) DO UPDATE SET row_count = $2, checksum = $3"
                ),
                &[t, &rows, &sum],
            )
            .await
            .map_err(e)?;
    }
    client.batch_execute("RESET ALL").await.map_err(e)
}

/// The settings that make every top-level statement of the service leave its executed plan in
/// the server log, where the database probes read it (`probes::db`): `auto_explain` loaded into
/// each new session of the database, with `log_analyze` and `log_buffers` (the pages each node
/// touched), without timing (never used, and it costs), as JSON; and no parallel plans, so a plan
/// replays with the same numbers. Set on the database, before the service starts, so each of its
/// connections has them; the probe role turns the logging off for itself.
const AUTO_EXPLAIN: &[(&str, &str)] = &[
    ("session_preload_libraries", "auto_explain"),
    ("auto_explain.log_min_duration", "0"),
    ("auto_explain.log_analyze", "on"),
    ("auto_explain.log_buffers", "on"),
    ("auto_explain.log_timing", "off"),
    ("auto_explain.log_triggers", "off"),
    ("auto_explain.log_nested_statements", "off"),
    ("auto_explain.log_format", "json"),
    ("auto_explain.log_level", "log"),
    // How a parallel plan splits its rows between processes changes from run to run, and with
    // it the rows each node shows; without it plans and their numbers replay exactly. (The pages
    // a query reads are the same either way.)
    ("max_parallel_workers_per_gather", "0"),
];

/// Turns on [`AUTO_EXPLAIN`] for the database, if PostgreSQL has the module (a session that
/// cannot load a `session_preload_libraries` entry is refused, so it is loaded here first). Without
/// it the database probes report an error naming the cause.
async fn log_executed_plans(client: &tokio_postgres::Client) -> Result<(), String> {
    if client.batch_execute("LOAD 'auto_explain'").await.is_err() {
        return Ok(());
    }
    let mut sql = String::from("DO $$ BEGIN\n");
    for (name, value) in AUTO_EXPLAIN {
        sql.push_str(&format!(
            "EXECUTE format('ALTER DATABASE %I SET {name} = %L', current_database(), '{value}');\n"
        ));
    }
    sql.push_str(&format!(
        "ALTER ROLE {PROBE_ROLE} SET auto_explain.log_min_duration = -1;\nEND $$"
    ));
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| format!("enabling auto_explain: {}", db_error(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_prefix_is_part_of_an_identifier() {
        let parse = |prefix: &str| {
            let v: toml::Value = toml::from_str(&format!("table_prefix = \"{prefix}\"")).unwrap();
            orders::OrdersParams::parse(v)
        };
        assert_eq!(parse("shop_").unwrap().table_prefix, "shop_");
        assert!(parse("shop; DROP TABLE x; --").is_err());
        assert!(parse("Shop_").is_err());
        assert!(parse("1_").is_err());
    }

    #[test]
    fn checksums_and_plan_logging_are_set_for_the_database() {
        assert_eq!(
            checksum_sql("orders"),
            "SELECT count(*)::bigint, coalesce(sum(hashtext(t::text)::bigint), 0)::bigint FROM orders t"
        );
        let names: Vec<&str> = AUTO_EXPLAIN.iter().map(|(n, _)| *n).collect();
        for needed in [
            "session_preload_libraries",
            "auto_explain.log_analyze",
            "auto_explain.log_buffers",
            "auto_explain.log_format",
            "max_parallel_workers_per_gather",
        ] {
            assert!(names.contains(&needed), "{needed}");
        }
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(200000), "200,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn parse_rejects_unknown_generators_and_missing_schema() {
        let v: toml::Value = toml::from_str("schema = \"s.sql\"\ngenerator = \"nope\"").unwrap();
        let err = parse(&v, |_| Some(String::new())).unwrap_err();
        assert!(err.contains("unknown dataset generator `nope`"), "{err}");
        let v: toml::Value = toml::from_str("schema = \"s.sql\"\ngenerator = \"orders\"").unwrap();
        let err = parse(&v, |_| None).unwrap_err();
        assert!(err.contains("not in the exercise folder"), "{err}");
        let ok = parse(&v, |_| Some("CREATE TABLE t ()".into())).unwrap();
        assert_eq!(ok.schema_file, "s.sql");
    }
}
