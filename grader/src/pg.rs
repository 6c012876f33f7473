//! PostgreSQL client helpers shared by the runtime (readiness), the data sets (bulk load) and the
//! database probes: a bounded connection to the grader's own database, and readable errors.

use std::time::Duration;

/// The message of a database error, with its detail.
pub fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({d})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

/// The grader's sessions search `public` only, after the catalog (which PostgreSQL searches first
/// when the path does not name it); see [`connect`].
pub const SEARCH_PATH_OPTION: &str = "-c search_path=public";

/// A connection to the grader's database as `user`, with its driver task spawned.
pub async fn connect(database_url: &str, user: &str) -> Result<tokio_postgres::Client, String> {
    let mut config: tokio_postgres::Config = database_url
        .parse()
        .map_err(|e| format!("the grader's database URL is not valid: {e}"))?;
    config
        .user(user)
        .application_name("grader")
        // Without `$user`: the service may create a schema named after the grader's role, and
        // tables or views in it would shadow the ones the grader means.
        .options(SEARCH_PATH_OPTION)
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connecting to the grader's PostgreSQL as {user}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The role the service logs in as (its `DATABASE_URL`). No superuser: it has its database's
/// `public` schema to create in (and trusted extensions such as `citext`), the data sets' tables,
/// and nothing of the grader's. A superuser service could log in as the grader's probe role
/// (whose statements the database checks leave out), drop `pg_stat_statements`, turn the plan
/// logging off for itself, or end the grader's sessions.
pub const SERVICE_ROLE: &str = "app";

/// The grader's own logins (`postgres` and the probe role) share this run's password; the
/// service gets another. `pg_hba` trusts nobody, so knowing a role's name is not enough.
pub fn new_password() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    // The OS's generator, never the run's seeded one: the seed is printed in every report.
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, 32)
}

/// Lets [`SERVICE_ROLE`] into `database` with `password`: the role (created once per cluster, its
/// password set each time), the right to connect, create schemas and temporary tables, and to
/// create in `public`. `admin` is a superuser connection to `database`. Database-level grants are
/// not copied with a template, so a copied database is admitted again.
pub async fn admit_service(
    admin: &tokio_postgres::Client,
    database: &str,
    password: &str,
) -> Result<(), String> {
    if !password.chars().all(|c| c.is_ascii_alphanumeric())
        || !database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "refusing to admit the service to {database}: unexpected characters"
        ));
    }
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {SERVICE_ROLE}; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             ALTER ROLE {SERVICE_ROLE} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '{password}';
             GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {database} TO {SERVICE_ROLE};
             GRANT USAGE, CREATE ON SCHEMA public TO {SERVICE_ROLE};"
        ))
        .await
        .map_err(|e| format!("letting the service's role `{SERVICE_ROLE}` into {database}: {}", db_error(&e)))
}

/// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`; the password is alphanumeric, so it needs no
/// escaping.
pub fn url(user: &str, password: &str, host: &str, port: u16, database: &str) -> String {
    format!("postgres://{user}:{password}@{host}:{port}/{database}")
}
