//! The supervisor: a small process that cleans up after a grader that died without tearing down
//! (SIGKILL, the OOM killer, an abort).
//!
//! The parent-death signal each child gets (`process::spawn_owned`) is not enough on its own: it
//! reaches only the processes the grader started itself. What those forked (the service's
//! workers, PostgreSQL's backends), what the learner's code moved out of its group or session,
//! and the orphans that had been re-parented to the grader get no signal; they are re-parented
//! to PID 1, where nothing knows they belonged to a run. And the temp dirs (PostgreSQL's cluster,
//! Redis's and RabbitMQ's files) are removed by `Drop`, which a SIGKILL skips.
//!
//! So the `grader` binary (which calls [`enable`]) starts its own executable again as
//! `grader __supervise` the first time there is something to clean up, with a pipe on its stdin.
//! The grader writes on it what it must not leave behind, as it happens ([`Note`]): each process
//! it starts, with the mark of the learner's ones, each orphan its watch sees, each temp dir; and
//! what it cleaned up itself. When the pipe reaches end-of-file (the grader has exited, however)
//! the supervisor SIGKILLs what is still registered, where it now is: the process groups, the
//! learner's sessions and every process that carries one of their marks, the orphans by pid and
//! start time; then it removes the temp dirs (and a killed PostgreSQL's shared memory segment)
//! and exits. Every wait is bounded, so it outlives the grader by its cleanup only. On a normal
//! end everything was deregistered before, and [`finish`] waits for it to exit.
//!
//! It runs in a process group of its own, so a Ctrl-C at the terminal reaches only the grader,
//! which tears down and exits; the supervisor then finds nothing left to do.
//!
//! Limits: the learner's code runs as the grader's user, so it can kill the supervisor (or the
//! grader); notes are dropped rather than block the grader when the supervisor does not read
//! them; and a process that left its session, cleared its environment and was not yet seen by
//! the orphan watch (every 0.5 s) when the grader was SIGKILLed is not found. Library users
//! (no [`enable`]) get no supervisor.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{self as process, ProcessId, KILL_WAIT};

/// The argument that makes the `grader` binary a supervisor (not a subcommand users see).
pub const ARG: &str = "__supervise";
/// At a normal end the supervisor has nothing left to do; this bounds the wait for it anyway
/// (its own cleanup is bounded by [`KILL_WAIT`] and the removal of the dirs).
const FINISH_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// A pipe write of at most `PIPE_BUF` bytes is atomic: a note is never cut in two.
const MAX_NOTE: usize = 4096;

/// What the grader tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note<'a> {
    /// A process the grader started, leader of its group; `mark` for the learner's code, which
    /// also leads its session (see `Proc::spawn_untrusted`).
    Started {
        pid: i32,
        mark: Option<&'a str>,
    },
    /// Stopped and reaped: its pid may name another process from now on.
    Released {
        pid: i32,
    },
    /// An orphan re-parented to the grader, or a descendant of one.
    Orphan(ProcessId),
    TempDir(&'a Path),
    TempDirRemoved(&'a Path),
}

impl Note<'_> {
    fn encode(&self) -> String {
        match self {
            Note::Started { pid, mark } => format!("started {pid} {}", mark.unwrap_or("-")),
            Note::Released { pid } => format!("released {pid}"),
            Note::Orphan(id) => format!("orphan {} {}", id.pid, id.start_time),
            Note::TempDir(path) => format!("dir {}", hex(path)),
            Note::TempDirRemoved(path) => format!("removed {}", hex(path)),
        }
    }
}

/// Paths as hex, so that a newline or a space in TMPDIR cannot break a note.
fn hex(path: &Path) -> String {
    path.as_os_str()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(text: &str) -> Option<PathBuf> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// The supervisor's pid once started (0 before), for the sweeps to leave it alone.
static PID: AtomicI32 = AtomicI32::new(0);

struct Link {
    child: Child,
    /// Non-blocking: a supervisor that stops reading must not hang the grader.
    notes: ChildStdin,
}

/// `None` before the first note; `Some(None)` once a start failed or the link broke.
static LINK: Mutex<Option<Option<Link>>> = Mutex::new(None);

fn lock_link() -> std::sync::MutexGuard<'static, Option<Option<Link>>> {
    LINK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Lets this process start a supervisor: only the `grader` binary may, since the supervisor is
/// its own executable run with [`ARG`].
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
}

pub(crate) fn pid() -> Option<i32> {
    Some(PID.load(Ordering::SeqCst)).filter(|&pid| pid > 0)
}

/// Tells the supervisor `note`, starting it first if this is the first. Best effort: without a
/// supervisor the grader still tears down everything itself, unless it is SIGKILLed.
pub(crate) fn tell(note: &Note<'_>) {
    if !ENABLED.load(Ordering::SeqCst) {
        return;
    }
    let mut line = note.encode();
    line.push('\n');
    if line.len() > MAX_NOTE {
        return;
    }
    let mut link = lock_link();
    let link = link.get_or_insert_with(start);
    let Some(live) = link else { return };
    match live.notes.write(line.as_bytes()) {
        Ok(_) => {}
        // Full pipe: the supervisor is not reading (stopped?); this note is lost, not the run.
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        // It is gone (killed by someone); there is no one to tell any more.
        Err(_) => *link = None,
    }
}

fn start() -> Option<Link> {
    // /proc/self/exe, not the path: it still runs when the binary was replaced since (a rebuild
    // during `grader watch`).
    let mut child = Command::new("/proc/self/exe")
        .arg(ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    let notes = child.stdin.take()?;
    let flags = nix::fcntl::fcntl(notes.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).ok()?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(notes.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
    PID.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
    Some(Link { child, notes })
}

/// At the grader's normal exit: closes the pipe and waits (bounded) for the supervisor to
/// clean up what is still registered, if anything, and exit, so nothing of ours outlives us.
pub(crate) fn finish() {
    let Some(Some(Link { mut child, notes })) = lock_link().take() else {
        return;
    };
    drop(notes);
    let deadline = Instant::now() + FINISH_WAIT;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
}

/// What the supervisor was told is still to clean up.
#[derive(Debug, Default, PartialEq, Eq)]
struct Registry {
    /// Group leaders (pid → the mark of the learner's ones, which also lead their session).
    processes: BTreeMap<i32, Option<String>>,
    orphans: BTreeSet<ProcessId>,
    dirs: BTreeSet<PathBuf>,
}

impl Registry {
    fn apply(&mut self, line: &str) {
        let mut words = line.split(' ');
        let (Some(kind), Some(first)) = (words.next(), words.next()) else {
            return;
        };
        let second = words.next();
        match (kind, first.parse::<i32>().ok(), second) {
            ("started", Some(pid), Some(mark)) => {
                let mark = (mark != "-").then(|| mark.to_string());
                self.processes.insert(pid, mark);
            }
            ("released", Some(pid), None) => {
                self.processes.remove(&pid);
                self.orphans.retain(|o| o.pid != pid);
            }
            ("orphan", Some(pid), Some(start)) => {
                if let Ok(start_time) = start.parse() {
                    self.orphans.insert(ProcessId { pid, start_time });
                }
            }
            ("dir", _, None) => {
                self.dirs.extend(unhex(first));
            }
            ("removed", _, None) => {
                if let Some(path) = unhex(first) {
                    self.dirs.remove(&path);
                }
            }
            _ => {}
        }
    }

    /// The live processes (not `me`) that belong to what is registered.
    fn victims(&self, table: &[process::Stat], me: i32) -> Vec<ProcessId> {
        let marks: Vec<&str> = self
            .processes
            .values()
            .flatten()
            .map(String::as_str)
            .collect();
        let sessions: BTreeSet<i32> = self
            .processes
            .iter()
            .filter(|(_, mark)| mark.is_some())
            .map(|(&pid, _)| pid)
            .collect();
        table
            .iter()
            .filter(|s| s.pid != me && !s.is_zombie())
            .filter(|s| {
                self.processes.contains_key(&s.pgrp)
                    || sessions.contains(&s.session)
                    || self.orphans.contains(&s.id())
                    || marks.iter().any(|mark| process::has_mark(s.pid, mark))
            })
            .map(process::Stat::id)
            .collect()
    }

    /// SIGKILLs what is registered until none is left (at most [`KILL_WAIT`]), then removes the
    /// dirs.
    fn clean_up(&self) {
        let me = nix::unistd::Pid::this().as_raw();
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            let victims = self.victims(&process::process_table(), me);
            if victims.is_empty() || Instant::now() >= deadline {
                break;
            }
            victims.iter().for_each(ProcessId::kill);
            std::thread::sleep(POLL);
        }
        for dir in &self.dirs {
            // A SIGKILLed postmaster leaves its SysV segment; its pid file names it.
            process::remove_sysv_segment(&dir.join("data"));
            if std::fs::remove_dir_all(dir).is_err() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// The supervisor itself (`grader __supervise`): reads notes until end-of-file, then cleans up.
pub fn main() -> i32 {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // In a group of its own already; this keeps a terminal's signals from cutting the cleanup
    // short should it be in the foreground anyway. SIGKILL still works.
    for terminal in [Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe {
            let _ = signal(terminal, SigHandler::SigIgn);
        }
    }
    let mut registry = Registry::default();
    for line in std::io::stdin().lock().split(b'\n') {
        match line {
            Ok(line) => registry.apply(&String::from_utf8_lossy(&line)),
            Err(_) => break,
        }
    }
    registry.clean_up();
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_through_the_registry() {
        let dir = Path::new("/tmp/odd dir\nwith a newline/grader-pg-x");
        let mut registry = Registry::default();
        for note in [
            Note::Started {
                pid: 10,
                mark: Some("abc"),
            },
            Note::Started {
                pid: 11,
                mark: None,
            },
            Note::Orphan(ProcessId {
                pid: 12,
                start_time: 99,
            }),
            Note::TempDir(dir),
            Note::TempDir(Path::new("/tmp/grader-redis-y")),
        ] {
            registry.apply(&note.encode());
        }
        assert_eq!(registry.processes.get(&10), Some(&Some("abc".to_string())));
        assert_eq!(registry.processes.get(&11), Some(&None));
        assert!(registry.dirs.contains(dir));
        registry.apply(&Note::Released { pid: 10 }.encode());
        registry.apply(&Note::TempDirRemoved(dir).encode());
        registry.apply("garbage");
        registry.apply("started x -");
        assert!(!registry.processes.contains_key(&10));
        assert_eq!(
            registry.dirs,
            BTreeSet::from([PathBuf::from("/tmp/grader-redis-y")])
        );
        assert_eq!(registry.orphans.len(), 1);
    }
}
