//! A throwaway Redis: `redis-server` without persistence, as our child, checked with a raw PING
//! (the protocol is simple enough that a client crate would only add weight).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::process::{self, Proc};
use crate::runtime::{RedisInfo, StartError};

const WHAT: &str = "Redis";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(5);
const PORT_ATTEMPTS: usize = 3;
const LOG_TAIL: usize = 30;

/// A running Redis. Dropping it stops the server and removes its directory.
pub(crate) struct Redis {
    server: Option<Proc>,
    dir: Option<TempDir>,
    pub(crate) info: Option<RedisInfo>,
}

impl Redis {
    pub(crate) fn pid(&self) -> Option<i32> {
        self.server.as_ref().map(Proc::pid)
    }

    pub(crate) fn temp_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().to_path_buf())
    }

    /// SIGTERM, SIGKILL after [`STOP_GRACE`], then removal of its directory. Idempotent.
    pub(crate) fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop();
        }
        if let Some(dir) = self.dir.take() {
            process::remove_temp_dir(dir);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts `redis-server`; its output goes to `<artifacts>/redis.log`.
pub(crate) async fn start(artifacts: &Path) -> Result<Redis, StartError> {
    let binary = process::which("redis-server").ok_or_else(|| StartError::MissingBinary {
        what: "Redis (redis-server)".to_string(),
        install_hint: "install it (e.g. `apt-get install redis-server`) or use --runtime docker"
            .to_string(),
    })?;
    let dir = process::temp_dir("grader-redis-")
        .map_err(|e| infra(format!("could not create a temp dir: {e}"), vec![]))?;
    let mut redis = Redis {
        server: None,
        dir: Some(dir),
        info: None,
    };
    let root = redis.temp_dir().unwrap_or_default();
    let log = artifacts.join("redis.log");
    File::create(&log)
        .and_then(|mut f| {
            writeln!(
                f,
                "grader: redis-server {} in {}",
                binary.display(),
                root.display()
            )
        })
        .map_err(|e| infra(format!("could not write {}: {e}", log.display()), vec![]))?;

    for attempt in 1..=PORT_ATTEMPTS {
        let port = process::free_port()
            .map_err(|e| infra(format!("could not find a free port: {e}"), vec![]))?;
        let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let (stdout, stderr) = process::log_handles(&log)
            .map_err(|e| infra(format!("could not open {}: {e}", log.display()), vec![]))?;
        let mut cmd = Command::new(&binary);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&root)
            // Empty logfile means stdout, which is our log file.
            .args(["--logfile", ""])
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let server = Proc::spawn(cmd, Signal::SIGTERM, true, STOP_GRACE)
            .map_err(|e| infra(format!("could not run redis-server: {e}"), vec![]))?;
        process::note(
            &log,
            &format!(
                "started redis-server (pid {}) on 127.0.0.1:{port}",
                server.pid()
            ),
        );
        let server = redis.server.insert(server);
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last: String;
        loop {
            if let Some(status) = server.try_exit() {
                redis.server = None;
                let tail = process::tail_lines_from(&log, offset, LOG_TAIL);
                if attempt < PORT_ATTEMPTS
                    && tail.iter().any(|l| l.contains("Address already in use"))
                {
                    process::note(&log, &format!("port {port} was taken, trying another"));
                    break;
                }
                return Err(infra(
                    format!(
                        "redis-server {} during start-up (see {})",
                        process::describe_exit(status),
                        log.display()
                    ),
                    process::tail_lines(&log, LOG_TAIL),
                ));
            }
            match tokio::time::timeout(Duration::from_secs(2), probe(port)).await {
                // Another Redis may have taken the port after we picked it (ours then exits);
                // only our own pid counts. A server without a process_id field is trusted.
                Ok(Ok(pid)) if pid.is_none_or(|pid| pid == server.pid()) => {
                    redis.info = Some(RedisInfo {
                        url: format!("redis://127.0.0.1:{port}"),
                        port,
                    });
                    return Ok(redis);
                }
                Ok(Ok(_)) => last = format!("port {port} is served by another Redis"),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "PING timed out".to_string(),
            }
            if Instant::now() >= deadline {
                return Err(infra(
                    format!(
                        "redis-server did not answer PING within {} (last error: {last})",
                        humantime::format_duration(READY_TIMEOUT)
                    ),
                    process::tail_lines(&log, LOG_TAIL),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Err(infra(
        format!("every port tried was taken ({PORT_ATTEMPTS} attempts)"),
        process::tail_lines(&log, LOG_TAIL),
    ))
}

/// PING, expecting `+PONG`; then `INFO server` for the answering server's pid.
async fn probe(port: u16) -> std::io::Result<Option<i32>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"PING\r\nINFO server\r\n").await?;
    // Replies are small; the cap keeps a stranger on the port from feeding us forever.
    let mut reader = BufReader::new(stream.take(1 << 20));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if !line.starts_with("+PONG") {
        return Err(std::io::Error::other(format!(
            "unexpected answer to PING: {:?}",
            line.trim_end()
        )));
    }
    line.clear();
    reader.read_line(&mut line).await?;
    let Some(len) = line
        .strip_prefix('$')
        .and_then(|n| n.trim_end().parse::<usize>().ok())
    else {
        return Ok(None);
    };
    let mut body = vec![0; len.min(1 << 16)];
    reader.read_exact(&mut body).await?;
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok()))
}

fn infra(message: String, log_tail: Vec<String>) -> StartError {
    StartError::Infrastructure {
        what: WHAT.to_string(),
        message,
        log_tail,
    }
}

/// `FLUSHALL`, expecting `+OK`: a warm Redis emptied between runs (`grader watch`), so every run
/// starts from nothing cached, as a cold one does.
pub(crate) async fn flush_all(port: u16) -> Result<(), String> {
    let work = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"FLUSHALL\r\n").await?;
        let mut reader = BufReader::new(stream.take(1 << 16));
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        if line.starts_with("+OK") {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "unexpected answer to FLUSHALL: {:?}",
                line.trim_end()
            )))
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), work).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("FLUSHALL got no answer within 5s".to_string()),
    }
}
