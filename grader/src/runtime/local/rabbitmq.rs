//! A throwaway RabbitMQ broker: Debian's `rabbitmq-server` as our child, with its own `epmd`,
//! everything (database, logs, cookie) in a temp dir, checked with a real AMQP login.
//!
//! - **Our own epmd first**, on a free port, as an owned child: otherwise the Erlang VM starts
//!   `epmd -daemon`, which detaches and outlives the run.
//! - **beam is our direct child**: `RABBITMQ_ALLOW_INPUT` makes the start script `exec` the VM
//!   instead of forking it behind a signal-handling shell (`-noinput` then keeps the Erlang shell
//!   off stdin), and `erl` execs `erlexec`, which execs `beam.smp`. So the parent-death signal set
//!   at spawn reaches beam itself when the grader is SIGKILLed; `erl_child_setup` and
//!   `inet_gethost`, which start their own sessions, exit when beam's pipes close.
//! - **Classic config** (`rabbitmq.config`, Erlang terms): the new-style `.conf` goes through
//!   cuttlefish, which costs about 1.5 s more at every start. Nothing from `/etc/rabbitmq` is
//!   read (env file, `conf.d`, advanced config, plugins all point into the temp dir), and
//!   inherited `RABBITMQ_*`/`ERL_*` variables are dropped.
//! - **Stopped with SIGKILL**: nothing in the broker is kept, and an orderly stop takes seconds.
//!   Teardown kills beam's process group, then whatever descends from beam in other groups, then
//!   epmd, then removes the temp dir.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rand::Rng;
use tempfile::TempDir;

use super::process::{self, Proc, ProcessId};
use crate::runtime::{amqp_url, StartError, BROKER_USER};

const WHAT: &str = "RabbitMQ";
/// The start script Debian's package installs (`/usr/sbin/rabbitmq-server` is a wrapper that
/// switches to the `rabbitmq` user and daemon paths).
const SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const INSTALL_HINT: &str =
    "run scripts/setup or `apt-get install rabbitmq-server`, or use --runtime docker";
/// Start-up takes about 8 s on two slow cores (loading code is CPU-bound); a minute means
/// something is wrong.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// One login attempt; the listener answers at once when it is up.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(5);
const EPMD_TIMEOUT: Duration = Duration::from_secs(10);
/// What is left of beam's descendants after beam's death gets this long to exit on its own.
const DESCENDANTS_GRACE: Duration = Duration::from_secs(2);
const PORT_ATTEMPTS: usize = 3;
/// A boot that never lets a login in gets one fresh node: on CI's two loaded cores a boot printed
/// its banner and then nothing for a minute, while the other runs' brokers came up as usual.
const STUCK_BOOT_RETRIES: usize = 1;
const LOG_TAIL: usize = 30;

/// What the grader and the link need to reach the broker.
#[derive(Debug, Clone)]
pub(crate) struct BrokerAddress {
    pub(crate) port: u16,
    pub(crate) password: String,
}

impl BrokerAddress {
    /// The URL the grader itself connects with (directly, not through the link).
    pub(crate) fn url(&self) -> String {
        amqp_url(&self.password, "127.0.0.1", self.port)
    }
}

/// A running broker. Dropping it stops everything it started and removes its directory.
pub(crate) struct RabbitMq {
    server: Option<Proc>,
    epmd: Option<Proc>,
    dir: Option<TempDir>,
}

impl RabbitMq {
    /// The VM (beam), leader of its process group.
    pub(crate) fn pid(&self) -> Option<i32> {
        self.server.as_ref().map(Proc::pid)
    }

    pub(crate) fn epmd_pid(&self) -> Option<i32> {
        self.epmd.as_ref().map(Proc::pid)
    }

    /// Pids of what beam started outside its group (`erl_child_setup`, `inet_gethost`), now.
    pub(crate) fn helper_pids(&self) -> Vec<i32> {
        self.pid()
            .map(process::descendants)
            .unwrap_or_default()
            .iter()
            .map(|p| p.pid)
            .collect()
    }

    pub(crate) fn temp_dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().to_path_buf())
    }

    /// Kills the broker and everything it started, then epmd, then removes the directory.
    /// Idempotent, synchronous, bounded.
    pub(crate) fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            stop_server(&mut server);
        }
        if let Some(mut epmd) = self.epmd.take() {
            epmd.stop();
        }
        if let Some(dir) = self.dir.take() {
            process::remove_temp_dir(dir);
        }
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Beam's group, then its descendants in groups of their own, which exit by themselves once
/// beam's pipes close and are killed if they do not.
fn stop_server(server: &mut Proc) {
    let helpers: Vec<ProcessId> = if server.try_exit().is_none() {
        process::descendants(server.pid())
    } else {
        Vec::new()
    };
    server.stop();
    process::wait_gone_or_kill(&helpers, DESCENDANTS_GRACE);
}

/// Starts epmd and the broker; the broker's output goes to `<artifacts>/rabbitmq.log`.
pub(crate) async fn start(artifacts: &Path) -> Result<(RabbitMq, BrokerAddress), StartError> {
    let script = PathBuf::from(SERVER_SCRIPT);
    if !process::is_executable(&script) {
        return Err(StartError::MissingBinary {
            what: format!("RabbitMQ ({SERVER_SCRIPT})"),
            install_hint: INSTALL_HINT.to_string(),
        });
    }
    let epmd_binary = process::which("epmd").ok_or_else(|| StartError::MissingBinary {
        what: "Erlang's epmd (needed by RabbitMQ)".to_string(),
        install_hint: INSTALL_HINT.to_string(),
    })?;
    let dir = process::temp_dir("grader-rabbitmq-")
        .map_err(|e| infra(format!("could not create a temp dir: {e}"), vec![]))?;
    let mut broker = RabbitMq {
        server: None,
        epmd: None,
        dir: Some(dir),
    };
    let root = broker.temp_dir().unwrap_or_default();
    let log = artifacts.join("rabbitmq.log");
    File::create(&log)
        .and_then(|mut f| writeln!(f, "grader: {SERVER_SCRIPT} in {}", root.display()))
        .map_err(|e| infra(format!("could not write {}: {e}", log.display()), vec![]))?;

    let epmd_port = start_epmd(&mut broker, &epmd_binary, &root, &log).await?;
    let password = random_token(24);
    let mut stuck_boots = 0;
    for attempt in 1..=PORT_ATTEMPTS + STUCK_BOOT_RETRIES {
        let (port, dist_port) = two_free_ports()
            .map_err(|e| infra(format!("could not find free ports: {e}"), vec![]))?;
        // A fresh directory per attempt: a failed boot leaves a half-made database behind.
        let base = root.join(format!("attempt-{attempt}"));
        let files = write_files(&base, port, &password)
            .map_err(|e| infra(format!("could not write {}: {e}", base.display()), vec![]))?;
        let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let (stdout, stderr) = process::log_handles(&log)
            .map_err(|e| infra(format!("could not open {}: {e}", log.display()), vec![]))?;
        let node = format!("grader-{}@localhost", random_token(10).to_lowercase());
        let mut cmd = Command::new(&script);
        for (name, _) in std::env::vars_os() {
            let name_str = name.to_string_lossy();
            if name_str.starts_with("RABBITMQ_") || name_str.starts_with("ERL_") {
                cmd.env_remove(&name);
            }
        }
        cmd.env("HOME", &base)
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_CRASH_DUMP", base.join("erl_crash.dump"))
            .env("RABBITMQ_CONF_ENV_FILE", &files.env_file)
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", base.join("log"))
            .env("RABBITMQ_LOGS", "-")
            .env("RABBITMQ_CONFIG_FILE", &files.config)
            // Neither exists: nothing of the machine's /etc/rabbitmq gets in.
            .env("RABBITMQ_CONFIG_FILES", base.join("conf.d"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                base.join("advanced.config"),
            )
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", &files.plugins)
            .env("RABBITMQ_ALLOW_INPUT", "1")
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-noinput")
            .current_dir(&base)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let server = Proc::spawn(cmd, Signal::SIGKILL, true, Duration::ZERO)
            .map_err(|e| infra(format!("could not run {SERVER_SCRIPT}: {e}"), vec![]))?;
        process::note(
            &log,
            &format!(
                "started {node} (pid {}) on 127.0.0.1:{port}, epmd on {epmd_port}, distribution \
                 on {dist_port}",
                server.pid()
            ),
        );
        let address = BrokerAddress {
            port,
            password: password.clone(),
        };
        let server = broker.server.insert(server);
        match wait_ready(server, &address, &log, offset).await {
            Ready::Yes => {
                process::note(&log, "AMQP login as grader succeeded: ready");
                return Ok((broker, address));
            }
            Ready::PortTaken if attempt < PORT_ATTEMPTS + stuck_boots => {
                if let Some(mut failed) = broker.server.take() {
                    stop_server(&mut failed);
                }
                process::note(&log, "a port was taken, trying others");
            }
            Ready::PortTaken => {
                return Err(infra(
                    format!(
                        "rabbitmq-server could not listen: a port was taken in each of \
                         {PORT_ATTEMPTS} attempts (see {})",
                        log.display()
                    ),
                    process::tail_lines_from(&log, offset, LOG_TAIL),
                ));
            }
            Ready::Exited(status) => {
                let how = process::describe_exit(status);
                return Err(infra(
                    format!(
                        "rabbitmq-server {how} during start-up (see {})",
                        log.display()
                    ),
                    process::tail_lines_from(&log, offset, LOG_TAIL),
                ));
            }
            Ready::TimedOut(last) if stuck_boots < STUCK_BOOT_RETRIES => {
                stuck_boots += 1;
                if let Some(mut stuck) = broker.server.take() {
                    stop_server(&mut stuck);
                }
                process::note(
                    &log,
                    &format!(
                        "no AMQP login within {} (last attempt: {last}); starting a fresh node",
                        humantime::format_duration(READY_TIMEOUT)
                    ),
                );
            }
            Ready::TimedOut(last) => {
                return Err(infra(
                    format!(
                        "no AMQP login succeeded within {} (last attempt: {last})",
                        humantime::format_duration(READY_TIMEOUT)
                    ),
                    process::tail_lines_from(&log, offset, LOG_TAIL),
                ));
            }
        }
    }
    Err(infra(
        format!("every port tried was taken ({PORT_ATTEMPTS} attempts)"),
        process::tail_lines(&log, LOG_TAIL),
    ))
}

/// Starts epmd on a free port (retried when another process took it first) and waits until it
/// accepts connections. Returns its port.
async fn start_epmd(
    broker: &mut RabbitMq,
    binary: &Path,
    root: &Path,
    log: &Path,
) -> Result<u16, StartError> {
    for _ in 0..PORT_ATTEMPTS {
        let port = process::free_port()
            .map_err(|e| infra(format!("could not find a free port: {e}"), vec![]))?;
        let (stdout, stderr) = process::log_handles(log)
            .map_err(|e| infra(format!("could not open {}: {e}", log.display()), vec![]))?;
        let mut cmd = Command::new(binary);
        cmd.args(["-address", "127.0.0.1", "-port", &port.to_string()])
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let epmd = Proc::spawn(cmd, Signal::SIGKILL, true, Duration::ZERO)
            .map_err(|e| infra(format!("could not run epmd: {e}"), vec![]))?;
        process::note(
            log,
            &format!("started epmd (pid {}) on 127.0.0.1:{port}", epmd.pid()),
        );
        let epmd = broker.epmd.insert(epmd);
        let deadline = Instant::now() + EPMD_TIMEOUT;
        loop {
            if epmd.try_exit().is_some() {
                // Most likely the port was taken between our check and its bind.
                broker.epmd = None;
                break;
            }
            let connected = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(("127.0.0.1", port)),
            )
            .await;
            // The port answers and our epmd still runs: a taken port would have made it exit.
            if matches!(connected, Ok(Ok(_))) && epmd.try_exit().is_none() {
                return Ok(port);
            }
            if Instant::now() >= deadline {
                return Err(infra(
                    format!(
                        "epmd did not listen on 127.0.0.1:{port} within {}",
                        humantime::format_duration(EPMD_TIMEOUT)
                    ),
                    process::tail_lines(log, LOG_TAIL),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Err(infra(
        format!("epmd could not start ({PORT_ATTEMPTS} attempts)"),
        process::tail_lines(log, LOG_TAIL),
    ))
}

/// The AMQP port and the Erlang distribution port: free a moment ago, and not the same one.
fn two_free_ports() -> std::io::Result<(u16, u16)> {
    let port = process::free_port()?;
    for _ in 0..10 {
        let other = process::free_port()?;
        if other != port {
            return Ok((port, other));
        }
    }
    Err(std::io::Error::other("the same port came back ten times"))
}

struct Files {
    config: PathBuf,
    env_file: PathBuf,
    plugins: PathBuf,
}

fn write_files(base: &Path, port: u16, password: &str) -> std::io::Result<Files> {
    std::fs::create_dir_all(base)?;
    let files = Files {
        config: base.join("rabbitmq.config"),
        env_file: base.join("rabbitmq-env.conf"),
        plugins: base.join("enabled_plugins"),
    };
    std::fs::write(&files.config, classic_config(Some(port), password))?;
    // Empty: the machine's /etc/rabbitmq/rabbitmq-env.conf must not change our settings.
    std::fs::write(&files.env_file, "")?;
    std::fs::write(&files.plugins, "[].\n")?;
    Ok(files)
}

/// The broker's configuration as Erlang terms, shared with the docker runtime: the listener
/// (loopback only when `port` is given, else every interface on 5672, for a container), the
/// run's user and password, and no loopback-only users (the user is not `guest`, and in a
/// container the grader's connections come from outside).
pub(crate) fn classic_config(port: Option<u16>, password: &str) -> String {
    let listener = match port {
        Some(port) => format!("{{\"127.0.0.1\", {port}}}"),
        None => "5672".to_string(),
    };
    let distribution = if port.is_some() {
        // Erlang distribution on loopback too (RABBITMQ_DIST_PORT picks the port).
        ",\n {kernel, [{inet_dist_use_interface, {127,0,0,1}}]}"
    } else {
        ""
    };
    format!(
        "[{{rabbit, [{{tcp_listeners, [{listener}]}}, {{loopback_users, []}}, \
         {{default_user, <<\"{BROKER_USER}\">>}}, {{default_pass, <<\"{password}\">>}}]}}\
         {distribution}].\n"
    )
}

/// Letters and digits only: safe in a URL and in an Erlang binary without escaping.
pub(crate) fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

enum Ready {
    Yes,
    /// The server exited and its log says a port was in use.
    PortTaken,
    Exited(std::process::ExitStatus),
    TimedOut(String),
}

async fn wait_ready(server: &mut Proc, address: &BrokerAddress, log: &Path, offset: u64) -> Ready {
    let deadline = Instant::now() + READY_TIMEOUT;
    let url = address.url();
    loop {
        if let Some(status) = server.try_exit() {
            let tail = process::tail_lines_from(log, offset, 200);
            let taken = tail
                .iter()
                .any(|l| l.contains("eaddrinuse") || l.contains("Address already in use"));
            return if taken {
                Ready::PortTaken
            } else {
                Ready::Exited(status)
            };
        }
        let last = match login(&url, LOGIN_TIMEOUT).await {
            Ok(()) => return Ready::Yes,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Ready::TimedOut(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One AMQP login (connection open and close) with `url`, bounded by `timeout`.
pub(crate) async fn login(url: &str, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .map_err(|e| e.to_string())?;
        let _ = connection
            .close(200, "grader: readiness check".into())
            .await;
        Ok(())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
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
    fn config_is_erlang_terms_with_the_run_user() {
        let local = classic_config(Some(41234), "Xk2p9");
        assert!(
            local.contains("{tcp_listeners, [{\"127.0.0.1\", 41234}]}"),
            "{local}"
        );
        assert!(local.contains("{default_pass, <<\"Xk2p9\">>}"), "{local}");
        assert!(local.contains("inet_dist_use_interface"), "{local}");
        assert!(local.trim_end().ends_with("]."), "{local}");
        let container = classic_config(None, "p");
        assert!(container.contains("{tcp_listeners, [5672]}"), "{container}");
        assert!(
            !container.contains("inet_dist_use_interface"),
            "{container}"
        );
    }

    #[test]
    fn tokens_are_alphanumeric() {
        let token = random_token(24);
        assert_eq!(token.len(), 24);
        assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(token, random_token(24));
    }
}
