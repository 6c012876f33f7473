//! A throwaway PostgreSQL cluster: `initdb` into a temp dir, the `postgres` server binary run
//! directly as our child (not `pg_ctl`, which daemonizes and would leak if we died), database
//! `app` with `pg_stat_statements`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, User};
use tempfile::TempDir;

use super::process::{self, Proc};
use crate::runtime::capped_log::{CappedLog, DEPENDENCY_LOG_CAP};
use crate::runtime::{PostgresInfo, StartError};

const WHAT: &str = "PostgreSQL";
const INSTALL_HINT: &str = "install it (e.g. `apt-get install postgresql`) or use --runtime docker";
/// initdb of an empty cluster takes a second or two; a minute means something is wrong.
const INITDB_TIMEOUT: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Fast shutdown of a tiny cluster takes well under a second; this is the worst case before
/// SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Port collisions (another process binding our freshly picked port first) get this many tries.
const PORT_ATTEMPTS: usize = 3;
/// Lines of `postgres.log` carried in errors.
const LOG_TAIL: usize = 30;
pub(crate) const DATABASE: &str = "app";

/// The server log goes to files in the data directory (`log/`), as text and as CSV: the database
/// probes read the executed plans `auto_explain` writes there through SQL (`pg_read_binary_file`,
/// the same for a container), and the CSV keeps each record's user and query id. Until the
/// logging collector starts (start-up errors such as a taken port) the server writes to
/// `postgres.log` as before; the text log of the rest is appended to it when the server stops.
/// One file for the whole run: no rotation, so a probe's window never spans two files.
pub(crate) const LOG_SETTINGS: &[&str] = &[
    "logging_collector=on",
    "log_destination=stderr,csvlog",
    "log_directory=log",
    "log_rotation_age=0",
    "log_rotation_size=0",
];

/// Settings both runtimes give the server beyond logging. A deadlock is detected after
/// `deadlock_timeout` (1 s by default); with a service that deadlocks under a burst of concurrent
/// writes, PostgreSQL would resolve one cycle a second and the service would still be stuck long
/// after the check, so the next checks would time out through no fault of their own. At 100 ms
/// the deadlocks surface as errors (40P01) within the burst, where the check that caused them
/// judges them.
pub(crate) const SERVER_SETTINGS: &[&str] = &["deadlock_timeout=100ms"];

/// A running cluster. Dropping it stops the server and removes its files.
pub(crate) struct Postgres {
    server: Option<Proc>,
    dir: Option<TempDir>,
    data_dir: PathBuf,
    /// `postgres.log` in the artifacts, where the collector's text log is appended at the end.
    log: PathBuf,
    pub(crate) info: Option<PostgresInfo>,
    /// The password of the grader's logins (`postgres`, the probe role), and the service's.
    pub(crate) passwords: Passwords,
}

/// A cluster's passwords, random per cluster (see [`crate::pg::new_password`]).
#[derive(Clone)]
pub(crate) struct Passwords {
    pub(crate) admin: String,
    pub(crate) service: String,
}

impl Postgres {
    pub(crate) fn pid(&self) -> Option<i32> {
        self.server.as_ref().map(Proc::pid)
    }

    pub(crate) fn temp_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().to_path_buf())
    }

    /// Fast shutdown (SIGINT to the postmaster), SIGKILL to its process group after
    /// [`STOP_GRACE`], then removal of the cluster's files. Idempotent, synchronous.
    pub(crate) fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            if server.stop() {
                // A killed postmaster leaves its SysV interlock segment behind, and those pile up
                // on a CI machine until the kernel limit is hit.
                process::remove_sysv_segment(&self.data_dir);
            }
            keep_collector_log(&self.data_dir.join("log"), &self.log);
        }
        if let Some(dir) = self.dir.take() {
            process::remove_temp_dir(dir);
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates and starts a cluster; logs go to `<artifacts>/postgres.log`.
pub(crate) async fn start(artifacts: &Path) -> Result<Postgres, StartError> {
    let bindir = find_bindir().await?;
    let run_as = postgres_user()?;
    let dir = process::temp_dir("grader-pg-")
        .map_err(|e| infra(format!("could not create a temp dir: {e}"), vec![]))?;
    let log = artifacts.join("postgres.log");
    let mut pg = Postgres {
        server: None,
        data_dir: dir.path().join("data"),
        dir: Some(dir),
        log: log.clone(),
        info: None,
        passwords: Passwords {
            admin: crate::pg::new_password(),
            service: crate::pg::new_password(),
        },
    };
    let root = pg.temp_dir().unwrap_or_default();
    if let Some((uid, gid)) = run_as {
        nix::unistd::chown(&root, Some(uid), Some(gid)).map_err(|e| {
            infra(
                format!(
                    "could not hand {} to the postgres user: {e}",
                    root.display()
                ),
                vec![],
            )
        })?;
    }

    File::create(&log)
        .and_then(|mut f| {
            writeln!(
                f,
                "grader: initdb of {} with {}",
                pg.data_dir.display(),
                bindir.display()
            )
        })
        .map_err(|e| infra(format!("could not write {}: {e}", log.display()), vec![]))?;

    initdb(
        &bindir,
        &root,
        &pg.data_dir,
        run_as,
        &log,
        &pg.passwords.admin,
    )
    .await?;

    // Unix sockets have a ~107-byte path limit; a long TMPDIR would make the server fail, and the
    // socket is a convenience (everything connects over TCP), so drop it then.
    let socket_dir = if root.as_os_str().len() <= 90 {
        root.display().to_string()
    } else {
        String::new()
    };

    for attempt in 1..=PORT_ATTEMPTS {
        let port = process::free_port()
            .map_err(|e| infra(format!("could not find a free port: {e}"), vec![]))?;
        let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let (stdout, stderr) = process::log_handles(&log)
            .map_err(|e| infra(format!("could not open {}: {e}", log.display()), vec![]))?;
        let mut cmd = Command::new(bindir.join("postgres"));
        cmd.arg("-D")
            .arg(&pg.data_dir)
            .args(["-p", &port.to_string(), "-k", &socket_dir])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "shared_preload_libraries=pg_stat_statements"])
            .args(LOG_SETTINGS.iter().flat_map(|s| ["-c", s]))
            .args(SERVER_SETTINGS.iter().flat_map(|s| ["-c", s]))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            // Dynamic shared memory as files in the data dir instead of /dev/shm, so even a
            // SIGKILLed server leaves nothing behind once the temp dir is removed.
            .args(["-c", "dynamic_shared_memory_type=mmap"])
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        let server = Proc::spawn(cmd, Signal::SIGINT, false, STOP_GRACE)
            .map_err(|e| infra(format!("could not run postgres: {e}"), vec![]))?;
        process::note(
            &log,
            &format!(
                "started postgres (pid {}) on 127.0.0.1:{port}",
                server.pid()
            ),
        );
        let server = pg.server.insert(server);

        let passwords = pg.passwords.clone();
        match wait_ready(server, port, &passwords.admin, &pg.data_dir).await {
            Ready::Yes => {
                setup_database(port, &passwords).await?;
                pg.info = Some(PostgresInfo {
                    url: crate::pg::url("postgres", &passwords.admin, "127.0.0.1", port, DATABASE),
                    service_url: crate::pg::url(
                        crate::pg::SERVICE_ROLE,
                        &passwords.service,
                        "127.0.0.1",
                        port,
                        DATABASE,
                    ),
                    port,
                    database: DATABASE.to_string(),
                    link: None,
                });
                return Ok(pg);
            }
            Ready::Exited(how) => {
                pg.server = None; // Reaped already; dropping just checks its group is empty.
                let tail = process::tail_lines_from(&log, offset, LOG_TAIL);
                if attempt < PORT_ATTEMPTS
                    && tail.iter().any(|l| l.contains("Address already in use"))
                {
                    process::note(&log, &format!("port {port} was taken, trying another"));
                    continue;
                }
                return Err(infra(
                    format!("the server {how} during start-up (see {})", log.display()),
                    process::tail_lines(&log, LOG_TAIL),
                ));
            }
            Ready::TimedOut(last) => {
                return Err(infra(
                    format!(
                        "the server did not accept connections within {} (last error: {last})",
                        humantime::format_duration(READY_TIMEOUT)
                    ),
                    process::tail_lines(&log, LOG_TAIL),
                ));
            }
        }
    }
    Err(infra(
        format!("every port tried was taken ({PORT_ATTEMPTS} attempts)"),
        process::tail_lines(&log, LOG_TAIL),
    ))
}

/// Directory holding `initdb` and `postgres`: PATH, then `pg_config --bindir`, then the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps the server binaries off PATH).
async fn find_bindir() -> Result<PathBuf, StartError> {
    let has_both = |dir: &Path| {
        process::is_executable(&dir.join("initdb")) && process::is_executable(&dir.join("postgres"))
    };
    if let (Some(initdb), Some(_)) = (process::which("initdb"), process::which("postgres")) {
        // `/usr/local/bin/initdb` may be a symlink into the real bindir; initdb resolves it to
        // find `postgres` the same way.
        if let Some(dir) = initdb.parent().filter(|d| has_both(d)) {
            return Ok(dir.to_path_buf());
        }
    }
    if let Some(pg_config) = process::which("pg_config") {
        let output = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(pg_config)
                .arg("--bindir")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await;
        if let Ok(Ok(output)) = output {
            let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            if output.status.success() && has_both(&dir) {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, dir)| dir)
        .ok_or_else(|| StartError::MissingBinary {
            what: "PostgreSQL (initdb and postgres)".to_string(),
            install_hint: INSTALL_HINT.to_string(),
        })
}

/// PostgreSQL refuses to run as root, so as root we run it as the `postgres` system user.
fn postgres_user() -> Result<Option<(Uid, Gid)>, StartError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some((user.uid, user.gid))),
        _ => Err(infra(
            "the grader runs as root, PostgreSQL refuses to, and there is no `postgres` user to \
             run it as (create one with `useradd --system postgres`, or use --runtime docker)"
                .to_string(),
            vec![],
        )),
    }
}

async fn initdb(
    bindir: &Path,
    cwd: &Path,
    data_dir: &Path,
    run_as: Option<(Uid, Gid)>,
    log: &Path,
    admin_password: &str,
) -> Result<(), StartError> {
    let (stdout, stderr) = process::log_handles(log)
        .map_err(|e| infra(format!("could not open {}: {e}", log.display()), vec![]))?;
    // The superuser's password, for initdb to read (as the postgres user) and then removed.
    let pwfile = cwd.join("pwfile");
    write_private(&pwfile, admin_password, run_as)
        .map_err(|e| infra(format!("could not write {}: {e}", pwfile.display()), vec![]))?;
    let mut cmd = Command::new(bindir.join("initdb"));
    cmd.arg("-D")
        .arg(data_dir)
        // No login is trusted, over TCP or the socket: the service runs on the same machine
        // and must not log in as the grader (see `crate::pg::SERVICE_ROLE`).
        .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .args(["--locale=C", "--no-sync"])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    let mut proc = Proc::spawn(cmd, Signal::SIGTERM, true, Duration::from_secs(2))
        .map_err(|e| infra(format!("could not run initdb: {e}"), vec![]))?;
    let exit = process::wait_exit(&mut proc, INITDB_TIMEOUT).await;
    let _ = std::fs::remove_file(&pwfile);
    match exit {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(infra(
            format!("initdb {}", process::describe_exit(status)),
            process::tail_lines(log, LOG_TAIL),
        )),
        None => {
            proc.stop();
            Err(infra(
                format!(
                    "initdb did not finish within {}",
                    humantime::format_duration(INITDB_TIMEOUT)
                ),
                process::tail_lines(log, LOG_TAIL),
            ))
        }
    }
}

enum Ready {
    Yes,
    /// How the server exited, e.g. "exited with code 1".
    Exited(String),
    /// The last connection error.
    TimedOut(String),
}

/// Connects every 100 ms until the server answers. The server must be ours: right after we
/// picked the port another server may have taken it (ours then exits with "Address already in
/// use"), so a server whose `data_directory` is not ours does not count.
async fn wait_ready(server: &mut Proc, port: u16, password: &str, data_dir: &Path) -> Ready {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last: String;
    loop {
        if let Some(status) = server.try_exit() {
            return Ready::Exited(process::describe_exit(status));
        }
        match connect(port, password, "postgres").await {
            Ok(client) => match client.query_one("SHOW data_directory", &[]).await {
                Ok(row) => {
                    let theirs = PathBuf::from(row.get::<_, String>(0));
                    if same_path(&theirs, data_dir) {
                        return Ready::Yes;
                    }
                    last = format!("port {port} is served by another PostgreSQL");
                }
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Ready::TimedOut(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// A connection as `postgres` over TCP, with its driver task spawned. Bounded in time: a server
/// that accepts the TCP connection but never answers must not stall us.
pub(crate) async fn connect(
    port: u16,
    password: &str,
    dbname: &str,
) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password(password)
        .options(crate::pg::SEARCH_PATH_OPTION)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(2));
    match tokio::time::timeout(
        Duration::from_secs(3),
        config.connect(tokio_postgres::NoTls),
    )
    .await
    {
        Ok(Ok((client, connection))) => {
            // The task ends when `client` is dropped.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connection attempt timed out".to_string()),
    }
}

/// `CREATE DATABASE <name>` and, in it, `pg_stat_statements` (the engine reads query
/// statistics) and the service's role: what a run's database starts as. Also the warm template's
/// start (`warm`).
pub(crate) async fn create_database(
    port: u16,
    passwords: &Passwords,
    name: &str,
) -> Result<(), String> {
    let admin = connect(port, &passwords.admin, "postgres").await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| format!("CREATE DATABASE {name}: {}", crate::pg::db_error(&e)))?;
    drop(admin);
    let database = connect(port, &passwords.admin, name).await?;
    database
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .map_err(|e| {
            format!(
                "CREATE EXTENSION pg_stat_statements: {}",
                crate::pg::db_error(&e)
            )
        })?;
    crate::pg::admit_service(&database, name, &passwords.service).await
}

/// Database `app` for a cold run, within [`SETUP_TIMEOUT`].
async fn setup_database(port: u16, passwords: &Passwords) -> Result<(), StartError> {
    let work = create_database(port, passwords, DATABASE);
    match tokio::time::timeout(SETUP_TIMEOUT, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(infra(message, vec![])),
        Err(_) => Err(infra(
            format!(
                "setting up database `{DATABASE}` took longer than {}",
                humantime::format_duration(SETUP_TIMEOUT)
            ),
            vec![],
        )),
    }
}

/// Writes `text` to a new file only its owner may read, handed to `owner` when given.
fn write_private(path: &Path, text: &str, owner: Option<(Uid, Gid)>) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Appends the logging collector's text log files (in name order: their names are their start
/// times) to `postgres.log`, so the artifact holds the server log, up to [`DEPENDENCY_LOG_CAP`].
/// Best effort: the files go with the temp dir anyway.
fn keep_collector_log(dir: &Path, log: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    let Ok(mut out) = CappedLog::append_to(log, DEPENDENCY_LOG_CAP) else {
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    for f in files {
        let Ok(mut r) = File::open(&f) else { continue };
        while let Ok(n @ 1..) = r.read(&mut buf) {
            if out.write(&buf[..n]).is_err() || out.is_cut() {
                return;
            }
        }
    }
}

fn infra(message: String, log_tail: Vec<String>) -> StartError {
    StartError::Infrastructure {
        what: WHAT.to_string(),
        message,
        log_tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collectors_text_log_is_appended_to_the_artifact_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("log");
        std::fs::create_dir(&logs).unwrap();
        std::fs::write(logs.join("postgresql-2026-01-01_000002.log"), "second\n").unwrap();
        std::fs::write(logs.join("postgresql-2026-01-01_000001.log"), "first\n").unwrap();
        std::fs::write(
            logs.join("postgresql-2026-01-01_000001.csv"),
            "csv,not,kept\n",
        )
        .unwrap();
        let artifact = dir.path().join("postgres.log");
        std::fs::write(&artifact, "start-up\n").unwrap();
        keep_collector_log(&logs, &artifact);
        assert_eq!(
            std::fs::read_to_string(&artifact).unwrap(),
            "start-up\nfirst\nsecond\n"
        );
        // No collector directory (a server that never started): nothing happens.
        keep_collector_log(&dir.path().join("missing"), &artifact);
        assert!(LOG_SETTINGS.contains(&"log_destination=stderr,csvlog"));
    }
}
