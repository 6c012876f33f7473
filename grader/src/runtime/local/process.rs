//! Child processes owned by the local runtime: spawning them so they cannot outlive the grader,
//! stopping them (and everything they forked) with bounded waits, and reading their logs.
//!
//! Everything here is synchronous on purpose: teardown must also work from `Drop`, where there
//! may be no tokio runtime. Async callers poll [`Proc::try_exit`] between `tokio::time::sleep`s.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How often bounded waits look again.
const POLL: Duration = Duration::from_millis(20);
/// How long to wait for a process group to vanish after SIGKILL (it cannot refuse, but the kernel
/// needs a moment, and a process stuck in uninterruptible sleep must not hang us forever).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A process we started, always in its own process group (pgid == its pid), so the group can be
/// signalled as a whole and nothing the process forks escapes teardown.
pub(crate) struct Proc {
    child: Child,
    pid: i32,
    /// Exit status once reaped. Reaping happens only here, so until then `pid` cannot be reused
    /// and signalling it is safe.
    exit: Option<ExitStatus>,
    /// First signal of a stop; SIGKILL follows after `grace`.
    polite: Signal,
    /// Send `polite` to the whole group (services, whose children should all see it) or only to
    /// the leader (PostgreSQL, whose postmaster must coordinate the shutdown of its children).
    polite_to_group: bool,
    grace: Duration,
    stopped: bool,
}

impl Proc {
    /// Spawns `cmd` in a new process group with a parent-death signal (see [`spawn_owned`]).
    pub(crate) fn spawn(
        cmd: Command,
        polite: Signal,
        polite_to_group: bool,
        grace: Duration,
    ) -> io::Result<Proc> {
        let child = spawn_owned(cmd)?;
        let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
        Ok(Proc {
            child,
            pid,
            exit: None,
            polite,
            polite_to_group,
            grace,
            stopped: false,
        })
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Non-blocking: the leader's exit status, if it has exited (reaps it).
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            // An error here means the child was already reaped by someone else (e.g. a
            // `waitpid(-1)` elsewhere in the process); treat it as gone rather than spin.
            match self.child.try_wait() {
                Ok(Some(status)) => self.exit = Some(status),
                Ok(None) => {}
                Err(_) => self.exit = Some(ExitStatus::from_raw(0)),
            }
        }
        self.exit
    }

    /// Stops the process and its whole group: the polite signal, up to `grace` for everything to
    /// exit, then SIGKILL to the group. Returns whether SIGKILL was needed. Idempotent; blocks at
    /// most `grace + KILL_WAIT`.
    pub(crate) fn stop(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        self.stopped = true;
        if self.group_gone() {
            return false;
        }
        if self.polite_to_group {
            self.signal_group(self.polite);
        } else if self.try_exit().is_none() {
            // Not reaped yet, so the pid is still ours.
            let _ = kill(Pid::from_raw(self.pid), self.polite);
        }
        if self.wait_group_gone(self.grace) {
            return false;
        }
        self.signal_group(Signal::SIGKILL);
        self.wait_group_gone(KILL_WAIT);
        true
    }

    fn signal_group(&mut self, signal: Signal) {
        // Once the leader is reaped the pgid stays reserved only while members remain; checking
        // first keeps us from signalling a group that a recycled pid might have created.
        if self.try_exit().is_none() || group_has_live_members(self.pid) {
            let _ = killpg(Pid::from_raw(self.pid), signal);
        }
    }

    /// True when the leader has exited (and been reaped) and no live member of the group is left.
    fn group_gone(&mut self) -> bool {
        self.try_exit().is_some() && !group_has_live_members(self.pid)
    }

    fn wait_group_gone(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.group_gone() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether any process other than a zombie still belongs to process group `pgid`.
///
/// `kill(-pgid, 0)` alone is not enough: it succeeds for zombies, and an orphaned zombie may never
/// be reaped when PID 1 is not a real init (containers), which would make every teardown wait out
/// its full grace period. So `/proc` is consulted for a member that is actually running.
pub(crate) fn group_has_live_members(pgid: i32) -> bool {
    if let Err(Errno::ESRCH) = killpg(Pid::from_raw(pgid), None) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true; // No /proc: trust kill(2).
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // Exited meanwhile.
        };
        if let Some((state, pgrp)) = parse_stat(&stat) {
            if pgrp == pgid && state != 'Z' && state != 'X' {
                return true;
            }
        }
    }
    false
}

/// State and process group from `/proc/<pid>/stat`. The command name (field 2) may contain spaces
/// and parentheses, so parsing starts after the last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// Spawns `cmd` in its own process group with `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with us
/// even if we are SIGKILLed and no `Drop` runs.
///
/// The parent-death signal fires when the *thread* that forked the child exits, not the process.
/// Tokio threads come and go (blocking-pool threads after 10 s idle, workers after
/// `block_in_place`), so all children are forked by one dedicated thread that lives as long as the
/// process. The caller blocks only for the fork/exec itself, as it would with a direct spawn.
pub(crate) fn spawn_owned(mut cmd: Command) -> io::Result<Child> {
    let parent = Pid::this();
    cmd.process_group(0);
    // SAFETY: the hook runs between fork and exec, so it must be async-signal-safe: it only makes
    // two syscalls and builds an `io::Error` from an errno, which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            // The grader may have died between fork and prctl; then nobody would ever kill us.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::from(Errno::ESRCH));
            }
            Ok(())
        });
    }
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("grader-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    let _ = req.reply.send(req.cmd.spawn());
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(spawner) = spawner else {
        // Could not create the thread (resource exhaustion): a weaker guarantee beats failing.
        return cmd.spawn();
    };
    let (reply, answer) = mpsc::channel();
    spawner
        .send(SpawnRequest { cmd, reply })
        .map_err(|_| io::Error::other("the process-spawning thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the process-spawning thread is gone"))?
}

/// A port on 127.0.0.1 that was free a moment ago. Another process can take it before our child
/// binds it; callers that can tell (PostgreSQL, Redis) retry with a new one.
///
/// It is drawn at random from below the kernel's ephemeral range, never from it: every outgoing
/// connection (the grader's own requests, one per request, and those of other runs on the
/// machine) takes a port from that range, and one could take the port between this check and the
/// child's bind ("Address already in use" from a correct service). Only a listener that picked
/// the same random port in that moment can still collide.
pub(crate) fn free_port() -> io::Result<u16> {
    use rand::Rng;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > LOWEST_SERVICE_PORT + 1000 {
        let mut rng = rand::thread_rng();
        for _ in 0..50 {
            let port = rng.gen_range(LOWEST_SERVICE_PORT..ephemeral_low);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Above the well-known and the usual development ports (8080, 5432, 6379 and friends).
const LOWEST_SERVICE_PORT: u16 = 20000;

/// Waits (asynchronously) up to `timeout` for the leader of `proc` to exit.
pub(crate) async fn wait_exit(proc: &mut Proc, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = proc.try_exit() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Finds an executable named `name` on `PATH`.
pub(crate) fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Appends a line of our own to a log that children also write, so that the artifact explains
/// what the grader did (paths, ports, pids) between their outputs.
pub(crate) fn note(log: &Path, message: &str) {
    use std::io::Write;
    // Best effort: a log we cannot write is not worth failing the run over.
    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(log) {
        let _ = writeln!(file, "grader: {message}");
    }
}

/// Opens `path` for appending and returns it twice (dup'd), for a child's stdout and stderr.
pub(crate) fn log_handles(path: &Path) -> io::Result<(File, File)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let clone = file.try_clone()?;
    Ok((file, clone))
}

/// "exited with code 3" / "was killed by signal 9".
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "exited".to_string(),
    }
}

/// The last `lines` lines of a log file (lossy UTF-8), reading only its end so that a huge log
/// costs no more than a small one. A missing file has no lines.
pub(crate) fn tail_lines(path: &Path, lines: usize) -> Vec<String> {
    tail_lines_from(path, 0, lines)
}

/// Like [`tail_lines`], ignoring the bytes before `offset` (output of an earlier attempt).
pub(crate) fn tail_lines_from(path: &Path, offset: u64, lines: usize) -> Vec<String> {
    /// Longer lines are cut, so one runaway line cannot flood an error message.
    const MAX_LINE: usize = 2000;
    /// At most this much of the end of the file is read.
    const MAX_READ: u64 = 1 << 20;
    if lines == 0 {
        return Vec::new();
    }
    let Ok(mut file) = crate::artifacts::open_regular(path) else {
        return Vec::new();
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return Vec::new();
    };
    if offset >= len {
        return Vec::new();
    }
    let mut chunk = 16 * 1024u64;
    loop {
        let start = len.saturating_sub(chunk).max(offset);
        let mut buf = Vec::new();
        if file.seek(SeekFrom::Start(start)).is_err()
            || file
                .by_ref()
                .take(len - start)
                .read_to_end(&mut buf)
                .is_err()
        {
            return Vec::new();
        }
        let text = String::from_utf8_lossy(&buf);
        let mut all: Vec<&str> = text.lines().collect();
        let from_offset = start == offset;
        if all.len() > lines || from_offset || chunk >= MAX_READ {
            // Unless we read from the offset, the first line is probably cut: drop it.
            if !from_offset && all.len() <= lines && !all.is_empty() {
                all.remove(0);
            }
            let skip = all.len().saturating_sub(lines);
            return all[skip..]
                .iter()
                .map(|line| {
                    if line.len() > MAX_LINE {
                        let mut cut = MAX_LINE;
                        while !line.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        format!("{}…", &line[..cut])
                    } else {
                        line.to_string()
                    }
                })
                .collect();
        }
        chunk *= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_proc_stat_with_odd_names() {
        let stat = "1234 (we (ird) name) S 1 4321 4321 0 -1 4194560 0 0";
        assert_eq!(parse_stat(stat), Some(('S', 4321)));
    }

    #[test]
    fn tail_reads_last_lines_and_respects_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let mut f = File::create(&path).expect("create");
        for i in 0..100_000 {
            writeln!(f, "line {i}").expect("write");
        }
        drop(f);
        assert_eq!(tail_lines(&path, 2), vec!["line 99998", "line 99999"]);
        assert_eq!(tail_lines(&path, 0), Vec::<String>::new());
        assert!(tail_lines(&dir.path().join("missing"), 3).is_empty());
        let len = std::fs::metadata(&path).expect("meta").len();
        assert!(tail_lines_from(&path, len, 5).is_empty());
        let short = dir.path().join("short");
        std::fs::write(&short, "a\nb\n").expect("write");
        assert_eq!(tail_lines(&short, 10), vec!["a", "b"]);
    }

    #[test]
    fn describes_exits() {
        assert_eq!(
            describe_exit(ExitStatus::from_raw(3 << 8)),
            "exited with code 3"
        );
        assert_eq!(
            describe_exit(ExitStatus::from_raw(9)),
            "was killed by signal 9"
        );
    }
}
