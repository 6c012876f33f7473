//! Dependencies kept running from one run to the next (`grader watch`): one PostgreSQL cluster
//! and one Redis, started once. Each run still starts from the state a cold run starts from:
//!
//! - database `app` is dropped and created again from `app_template`, a copy of what a cold run
//!   loads (the `pg_stat_statements` extension and the exercises' data sets). The template is
//!   loaded once per seed and set of exercises, so a re-run pays neither the server's start-up
//!   nor the data load, only a file copy;
//! - Redis is emptied (`FLUSHALL`).
//!
//! Cluster-wide state does carry over: settings the service gave its own role (`ALTER ROLE app
//! SET`; it can create no role and change no other), and `pg_stat_statements` (which the probes
//! reset before they measure). The server log is the cluster's, in
//! `.grader/watch/postgres.log`, not the run's artifacts.
//!
//! A RabbitMQ broker is not among them: a warm run starts its own, as a cold one does (its
//! queues, exchanges and messages are the run's; its start overlaps the database copy and the
//! build).

use std::path::Path;
use std::time::{Duration, Instant};

use super::postgres::{self, Passwords, Postgres, DATABASE};
use super::redis::{self, Redis};
use super::DebugPids;
use crate::pg::db_error;
use crate::runtime::{BeforeService, PostgresInfo, RedisInfo, StartError};

/// The database every run's data is copied from.
const TEMPLATE: &str = "app_template";
/// Dropping and copying a database of the exercises' size takes well under a second.
const CLONE_TIMEOUT: Duration = Duration::from_secs(60);

/// PostgreSQL and Redis shared by successive runs. Dropping it stops both and removes their
/// files, like a cold run's teardown.
pub struct WarmDependencies {
    postgres: Option<Postgres>,
    redis: Option<Redis>,
    /// What `app_template` holds: the data-set key it was loaded for, once loaded.
    template: tokio::sync::Mutex<Option<String>>,
}

/// What one run takes from the warm dependencies.
pub struct WarmRun<'a> {
    pub dependencies: &'a WarmDependencies,
    /// Identifies the data the run's exercises load (their seed and ids): the template is loaded
    /// again when it changes.
    pub dataset_key: String,
}

/// What a run got: its database (with how long the copy and any data load took) and Redis.
pub(crate) struct WarmDatabase {
    pub(crate) info: PostgresInfo,
    pub(crate) copied_in: Duration,
    pub(crate) loaded_in: Duration,
}

impl WarmDependencies {
    /// Starts what is asked for; logs go to `log_dir` (kept across runs).
    pub async fn start(log_dir: &Path, postgres: bool, redis: bool) -> Result<Self, StartError> {
        std::fs::create_dir_all(log_dir).map_err(|e| StartError::Infrastructure {
            what: "the warm dependencies' log folder".to_string(),
            message: format!("could not create {}: {e}", log_dir.display()),
            log_tail: vec![],
        })?;
        let mut warm = WarmDependencies {
            postgres: None,
            redis: None,
            template: tokio::sync::Mutex::new(None),
        };
        if postgres {
            warm.postgres = Some(postgres::start(log_dir).await?);
        }
        if redis {
            warm.redis = Some(redis::start(log_dir).await?);
        }
        Ok(warm)
    }

    pub fn has_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    pub fn has_redis(&self) -> bool {
        self.redis.is_some()
    }

    /// Database `app`, new, as a copy of the template (loaded first when `dataset_key` differs
    /// from what it holds).
    pub(crate) async fn fresh_database(
        &self,
        load: Option<&BeforeService>,
        dataset_key: &str,
    ) -> Result<WarmDatabase, StartError> {
        let (info, passwords) = self
            .postgres
            .as_ref()
            .and_then(|p| Some((p.info.clone()?, p.passwords.clone())))
            .ok_or_else(|| infra("the warm PostgreSQL is not running".to_string()))?;
        let mut template = self.template.lock().await;
        let mut loaded_in = Duration::ZERO;
        if template.as_deref() != Some(dataset_key) {
            let started = Instant::now();
            *template = None;
            bounded(load_template(&info, &passwords, load)).await?;
            *template = Some(dataset_key.to_string());
            loaded_in = started.elapsed();
        }
        let started = Instant::now();
        bounded(copy_template(info.port, &passwords)).await?;
        Ok(WarmDatabase {
            info,
            copied_in: started.elapsed(),
            loaded_in,
        })
    }

    /// Redis, emptied.
    pub(crate) async fn empty_redis(&self) -> Result<RedisInfo, StartError> {
        let info = self
            .redis
            .as_ref()
            .and_then(|r| r.info.clone())
            .ok_or_else(|| StartError::Infrastructure {
                what: "Redis".to_string(),
                message: "the warm Redis is not running".to_string(),
                log_tail: vec![],
            })?;
        redis::flush_all(info.port)
            .await
            .map_err(|message| StartError::Infrastructure {
                what: "Redis".to_string(),
                message,
                log_tail: vec![],
            })?;
        Ok(info)
    }

    /// Stops both servers and removes their files; returns how long it took.
    pub async fn shutdown(self) -> Duration {
        super::drop_off_async_threads(self).await
    }

    /// Pids and temp dirs, for tests that check nothing is left behind.
    #[doc(hidden)]
    pub fn debug_pids(&self) -> DebugPids {
        DebugPids {
            service_pgid: None,
            postgres_pid: self.postgres.as_ref().and_then(Postgres::pid),
            redis_pid: self.redis.as_ref().and_then(Redis::pid),
            temp_dirs: self
                .postgres
                .as_ref()
                .and_then(Postgres::temp_dir)
                .into_iter()
                .chain(self.redis.as_ref().and_then(Redis::temp_dir))
                .collect(),
            ..DebugPids::default()
        }
    }
}

impl Drop for WarmDependencies {
    fn drop(&mut self) {
        if let Some(mut redis) = self.redis.take() {
            redis.stop();
        }
        if let Some(mut postgres) = self.postgres.take() {
            postgres.stop();
        }
    }
}

async fn bounded(
    work: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), StartError> {
    match tokio::time::timeout(CLONE_TIMEOUT, work).await {
        Ok(r) => r.map_err(infra),
        Err(_) => Err(infra(format!(
            "preparing the run's database took longer than {}",
            humantime::format_duration(CLONE_TIMEOUT)
        ))),
    }
}

/// `app_template` afresh: the extension a cold run's database has, then the data sets.
async fn load_template(
    info: &PostgresInfo,
    passwords: &Passwords,
    load: Option<&BeforeService>,
) -> Result<(), String> {
    let admin = postgres::connect(info.port, &passwords.admin, "postgres").await?;
    execute_each(
        &admin,
        &[format!("DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")],
    )
    .await?;
    drop(admin);
    postgres::create_database(info.port, passwords, TEMPLATE).await?;
    if let Some(hook) = load {
        let url = info
            .url
            .rsplit_once('/')
            .map(|(server, _)| format!("{server}/{TEMPLATE}"))
            .ok_or_else(|| format!("unexpected database URL {}", info.url))?;
        (hook.0)(url).await?;
    }
    Ok(())
}

/// Drops `app` (with whatever connections the last service left) and copies the template into
/// it, with the template's database-level settings and the service's grants, which a copy does
/// not carry.
async fn copy_template(port: u16, passwords: &Passwords) -> Result<(), String> {
    let admin = postgres::connect(port, &passwords.admin, "postgres").await?;
    let version: i32 = admin
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| db_error(&e))?
        .get(0);
    // A file copy is far quicker than the WAL-logged default (PostgreSQL 15+) for a data set of
    // tens of megabytes, and the cluster is a throwaway one without a replica.
    let strategy = if version >= 150000 {
        " STRATEGY FILE_COPY"
    } else {
        ""
    };
    execute_each(
        &admin,
        &[
            format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
            format!("CREATE DATABASE {DATABASE} TEMPLATE {TEMPLATE}{strategy}"),
        ],
    )
    .await?;
    let settings = admin
        .query(
            "SELECT unnest(s.setconfig) FROM pg_db_role_setting s \
             JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE d.datname = $1 AND s.setrole = 0",
            &[&TEMPLATE],
        )
        .await
        .map_err(|e| format!("reading {TEMPLATE}'s settings: {}", db_error(&e)))?;
    let copy_settings: Vec<String> = settings
        .iter()
        .filter_map(|row| {
            let setting: String = row.get(0);
            let (name, value) = setting.split_once('=')?;
            Some(format!(
                "ALTER DATABASE {DATABASE} SET {} = {}",
                quote_identifier(name),
                quote_literal(value)
            ))
        })
        .collect();
    execute_each(&admin, &copy_settings).await?;
    drop(admin);
    let database = postgres::connect(port, &passwords.admin, DATABASE).await?;
    crate::pg::admit_service(&database, DATABASE, &passwords.service).await
}

/// Runs each statement in a call of its own: several in one simple query share a transaction,
/// which CREATE and DROP DATABASE refuse. An error names the statement.
async fn execute_each(
    client: &tokio_postgres::Client,
    statements: &[String],
) -> Result<(), String> {
    for sql in statements {
        client
            .batch_execute(sql)
            .await
            .map_err(|e| format!("{sql}: {}", db_error(&e)))?;
    }
    Ok(())
}

/// A setting name as an identifier; dotted names (`auto_explain.log_format`) quote each part.
fn quote_identifier(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn infra(message: String) -> StartError {
    StartError::Infrastructure {
        what: "PostgreSQL".to_string(),
        message,
        log_tail: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_quoted_as_sql() {
        assert_eq!(
            quote_identifier("auto_explain.log_format"),
            "\"auto_explain\".\"log_format\""
        );
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
