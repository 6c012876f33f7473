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

/// A connection to the grader's database as `user`, with its driver task spawned.
pub async fn connect(database_url: &str, user: &str) -> Result<tokio_postgres::Client, String> {
    let mut config: tokio_postgres::Config = database_url
        .parse()
        .map_err(|e| format!("the grader's database URL {database_url} is not valid: {e}"))?;
    config
        .user(user)
        .application_name("grader")
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
