//! Child processes owned by the local runtime: spawning them so they cannot outlive the grader,
//! stopping them (and everything they forked) with bounded waits, and reading their logs.
//!
//! Everything here is synchronous on purpose: teardown must also work from `Drop`, where there
//! may be no tokio runtime. Async callers poll [`Proc::try_exit`] between `tokio::time::sleep`s.
//!
//! **What escapes a process group.** The learner's code (build, service) is untrusted: it can
//! move processes out of its group (`setpgid`), out of its session (`setsid`), and orphan them
//! (a double fork), so that neither the group signal nor a walk down from its pid reaches them.
//! Three things keep them within reach:
//!
//! - the grader is a *child subreaper* (`PR_SET_CHILD_SUBREAPER`, set with the first spawn): an
//!   orphan is re-parented to the grader, not to PID 1, so it stays a descendant of ours;
//! - the learner's code is started as the leader of a session of its own
//!   ([`Proc::spawn_untrusted`]). Every other process the grader starts stays in the grader's
//!   session, and no process can join a session other than by creating one, so a child of ours
//!   in another session that we did not start is something the learner's code left behind (an
//!   *orphan*, see [`Family::is_orphan`]), never a process some `Child` handle waits for: those
//!   are the only ones reaped here, by pid;
//! - an orphan is attributed to the run that left it by its session or group (a double fork keeps
//!   them unless it calls `setsid` too) or by the mark in its environment ([`MARK_VAR`], kept
//!   unless it execs with another environment). One left without any of these can belong to any
//!   run in progress: it is killed at the teardown of a run only when no other learner's process
//!   is running (always so for `grader check`), else at the last one's, and at the exit of the
//!   grader (`leave_nothing_behind`), so that concurrent runs (`grader batch`, `prove`) never
//!   kill each other's processes.
//!
//! A SIGKILLed grader runs no teardown at all: see `supervisor.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::OnceLock;
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub mod supervisor;

use self::supervisor::Note;
use crate::runtime::capped_log::{cap_line, MAX_LOG_LINE};

/// How often bounded waits look again.
const POLL: Duration = Duration::from_millis(20);
/// How long to wait for a process group to vanish after SIGKILL (it cannot refuse, but the kernel
/// needs a moment, and a process stuck in uninterruptible sleep must not hang us forever).
pub(crate) const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often orphans are looked for between teardowns: their zombies reaped, the live ones told
/// to the supervisor.
const ORPHAN_WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// The environment variable that marks the learner's processes, one random value per
/// [`Proc::spawn_untrusted`].
pub(crate) const MARK_VAR: &str = "GRADER_PROCESS_MARK";

/// A process we started, always in its own process group (pgid == its pid), so the group can be
/// signalled as a whole; for the learner's code, what it moves out of the group is found too (see
/// the module docs).
pub(crate) struct Proc {
    child: Child,
    pid: i32,
    /// Exit status once the leader has exited. It is read without reaping, and reaping happens
    /// only in [`Proc::stop`], so until then `pid` cannot be reused and signalling it is safe.
    exit: Option<ExitStatus>,
    /// First signal of a stop; SIGKILL follows after `grace`.
    polite: Signal,
    /// Send `polite` to the whole group (services, whose children should all see it) or only to
    /// the leader (PostgreSQL, whose postmaster must coordinate the shutdown of its children).
    polite_to_group: bool,
    grace: Duration,
    stopped: bool,
    /// For the learner's code: the value of [`MARK_VAR`] in its environment.
    mark: Option<String>,
}

impl Proc {
    /// Spawns `cmd` in a new process group with a parent-death signal (see [`spawn_owned`]).
    pub(crate) fn spawn(
        cmd: Command,
        polite: Signal,
        polite_to_group: bool,
        grace: Duration,
    ) -> io::Result<Proc> {
        Proc::spawn_marked(cmd, polite, polite_to_group, grace, None)
    }

    /// Spawns the learner's code (a build, the service) like [`Proc::spawn`], but as the leader
    /// of a session of its own and with a mark in its environment, so that whatever it moves out
    /// of its group can still be found and told apart from other runs' processes (see the module
    /// docs). `stop` kills that too.
    pub(crate) fn spawn_untrusted(
        mut cmd: Command,
        polite: Signal,
        grace: Duration,
    ) -> io::Result<Proc> {
        let mark = random_mark();
        cmd.env(MARK_VAR, &mark);
        Proc::spawn_marked(cmd, polite, true, grace, Some(mark))
    }

    fn spawn_marked(
        cmd: Command,
        polite: Signal,
        polite_to_group: bool,
        grace: Duration,
        mark: Option<String>,
    ) -> io::Result<Proc> {
        let child = spawn_owned(cmd, mark.clone())?;
        let pid = i32::try_from(child.id()).map_err(io::Error::other)?;
        supervisor::tell(&Note::Started {
            pid,
            mark: mark.as_deref(),
        });
        Ok(Proc {
            child,
            pid,
            exit: None,
            polite,
            polite_to_group,
            grace,
            stopped: false,
            mark,
        })
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Non-blocking: the leader's exit status, if it has exited.
    ///
    /// The leader is left a zombie until [`Proc::stop`] reaps it: until then its pid, and with it
    /// the ids of its process group and session, cannot be given to another process, so
    /// signalling the group and attributing orphans by session never reach a stranger.
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            let peek = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            self.exit = match waitid(Id::Pid(Pid::from_raw(self.pid)), peek) {
                Ok(WaitStatus::Exited(_, code)) => Some(ExitStatus::from_raw((code & 0xff) << 8)),
                Ok(WaitStatus::Signaled(_, signal, core)) => Some(ExitStatus::from_raw(
                    signal as i32 | if core { 0x80 } else { 0 },
                )),
                Ok(_) | Err(Errno::EINTR) => None,
                // The child was already reaped by someone else (e.g. a `waitpid(-1)` elsewhere in
                // the process); treat it as gone rather than spin.
                Err(_) => Some(ExitStatus::from_raw(0)),
            };
        }
        self.exit
    }

    /// Stops the process and its whole group: the polite signal, up to `grace` for everything to
    /// exit, then SIGKILL to the group; for the learner's code, then SIGKILL to what escaped the
    /// group (see [`Escapes::kill`]). Returns whether SIGKILL was needed for the group.
    /// Idempotent; blocks at most `grace + 2 * KILL_WAIT`.
    pub(crate) fn stop(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        self.stopped = true;
        let killed = self.stop_group();
        if let Some(escapes) = self.escapes() {
            escapes.kill();
        }
        self.release();
        killed
    }

    fn stop_group(&mut self) -> bool {
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

    /// For the learner's code: what it may have left outside its group, to kill at teardown.
    pub(crate) fn escapes(&self) -> Option<Escapes> {
        self.mark.as_ref().map(|_| Escapes { root: self.pid })
    }

    /// Reaps the leader and forgets it, once it has exited: from then on its pid may name
    /// another process. One still running (stuck in the kernel past every wait) stays
    /// registered, for the final sweep and the supervisor.
    fn release(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        lock_owned().remove(&self.pid);
        supervisor::tell(&Note::Released { pid: self.pid });
    }

    /// Sends `signal` to the whole group, unless it is already gone (then there is nobody to
    /// signal, and the pgid may name somebody else's group).
    pub(crate) fn signal(&mut self, signal: Signal) {
        self.signal_group(signal);
    }

    fn signal_group(&mut self, signal: Signal) {
        // Once the leader is reaped the pgid stays reserved only while members remain; checking
        // first keeps us from signalling a group that a recycled pid might have created.
        if self.try_exit().is_none() || group_has_live_members(self.pid) {
            let _ = killpg(Pid::from_raw(self.pid), signal);
        }
    }

    /// True when the leader has exited (and been reaped) and no live member of the group is left.
    pub(crate) fn group_gone(&mut self) -> bool {
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

/// The learner's process `root` (started by [`Proc::spawn_untrusted`]), as far as finding what
/// it left outside its group goes.
pub(crate) struct Escapes {
    root: i32,
}

impl Escapes {
    /// SIGKILLs, until none is left (at most [`KILL_WAIT`]), the processes the root left outside
    /// its group: descendants in groups or sessions of their own, and the orphans attributed to
    /// it (see [`escaped`]). Returns whether none is left.
    pub(crate) fn kill(&self) -> bool {
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            // Each round kills one generation: what they fork meanwhile is found by the next.
            let found = escaped(self.root);
            if found.is_empty() {
                return true;
            }
            found.iter().for_each(ProcessId::kill);
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
        if parse_stat(&stat).is_some_and(|s| s.pgrp == pgid && !s.is_zombie()) {
            return true;
        }
    }
    false
}

/// A process named by pid and kernel start time, so that a recycled pid is never taken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ProcessId {
    pub(crate) pid: i32,
    pub(crate) start_time: u64,
}

impl ProcessId {
    /// Whether it still runs (a zombie does not).
    pub(crate) fn alive(&self) -> bool {
        read_stat(self.pid).is_some_and(|s| s.start_time == self.start_time && !s.is_zombie())
    }

    /// SIGKILL, unless the pid now names another process.
    pub(crate) fn kill(&self) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// Every live process descending from `root` (children, their children, ...), wherever their
/// process group: a child that called `setsid` (Erlang's `erl_child_setup` and the ports it
/// starts) is out of its parent's group, so signalling the group does not reach it.
pub(crate) fn descendants(root: i32) -> Vec<ProcessId> {
    descendants_in(&process_table(), &[root])
}

/// The live processes of `table` descending from any of `roots` (not the roots themselves).
fn descendants_in(table: &[Stat], roots: &[i32]) -> Vec<ProcessId> {
    let mut children: BTreeMap<i32, Vec<&Stat>> = BTreeMap::new();
    for stat in table {
        children.entry(stat.ppid).or_default().push(stat);
    }
    let mut seen: BTreeSet<i32> = roots.iter().copied().collect();
    let mut found = Vec::new();
    let mut parents = roots.to_vec();
    while let Some(parent) = parents.pop() {
        for child in children.get(&parent).into_iter().flatten() {
            if seen.insert(child.pid) {
                parents.push(child.pid);
                if !child.is_zombie() {
                    found.push(child.id());
                }
            }
        }
    }
    found
}

/// The processes that the learner's process `root` (started by [`Proc::spawn_untrusted`], still
/// registered) left outside its process group and that still run: its descendants wherever their
/// group, and the orphans attributed to it with their descendants. Reaps the orphans' zombies
/// on the way.
pub(crate) fn escaped(root: i32) -> Vec<ProcessId> {
    // Held while the table is read and judged: no child of ours is born unregistered meanwhile.
    let owned = lock_owned();
    let table = process_table();
    let family = Family::of_this_process(&owned);
    family.reap_orphans(&table);
    family.escaped_from(&table, root, has_mark)
}

/// Who is who among this process's children, for telling orphans from the children we started.
struct Family<'a> {
    me: i32,
    my_session: i32,
    /// What [`spawn_owned`] started and has not released.
    owned: &'a Owned,
    supervisor: Option<i32>,
}

impl<'a> Family<'a> {
    fn of_this_process(owned: &'a Owned) -> Self {
        let me = Pid::this().as_raw();
        Family {
            me,
            my_session: nix::unistd::getsid(None).map_or(me, Pid::as_raw),
            owned,
            supervisor: supervisor::pid(),
        }
    }

    /// A child of ours that we did not start (so it was re-parented to us, the subreaper) and
    /// that is in a session other than ours. Only the learner's code runs outside our session
    /// (every other process we start stays in it), and nobody can join a session but by creating
    /// one: so this is what the learner's code left behind, or the helper of a server that died
    /// (`erl_child_setup`), and never a child some `Child` handle will wait for.
    fn is_orphan(&self, stat: &Stat) -> bool {
        stat.ppid == self.me
            && stat.session != self.my_session
            && !self.owned.contains_key(&stat.pid)
            && Some(stat.pid) != self.supervisor
    }

    /// Reaps the orphans that have exited, so their zombies do not pile up in a long `batch`.
    /// By pid, never `waitpid(-1)`, which would steal the exit status of our own children.
    fn reap_orphans(&self, table: &[Stat]) {
        for stat in table.iter().filter(|s| s.is_zombie() && self.is_orphan(s)) {
            let _ = waitid(
                Id::Pid(Pid::from_raw(stat.pid)),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
            );
        }
    }

    /// The live orphans and everything descending from them.
    fn orphans(&self, table: &[Stat]) -> Vec<ProcessId> {
        let tops: Vec<i32> = table
            .iter()
            .filter(|s| self.is_orphan(s))
            .map(|s| s.pid)
            .collect();
        live_with_descendants(table, &tops, &tops)
    }

    /// See [`escaped`]. An orphan belongs to the learner's process `root` when it is in `root`'s
    /// session or group (which a double fork keeps) or carries its mark (`marked(pid, mark)`).
    /// One that belongs to no learner's process still registered (a double fork, `setsid` and
    /// an exec with a cleared environment; or a leftover of one released) is claimed only when
    /// no other learner's process is registered: it may be theirs.
    fn escaped_from(
        &self,
        table: &[Stat],
        root: i32,
        marked: impl Fn(i32, &str) -> bool,
    ) -> Vec<ProcessId> {
        let learners: Vec<(i32, &str)> = self
            .owned
            .iter()
            .filter_map(|(&pid, mark)| Some((pid, mark.as_deref()?)))
            .collect();
        let belongs = |orphan: &Stat, (pid, mark): (i32, &str)| {
            orphan.session == pid || orphan.pgrp == pid || marked(orphan.pid, mark)
        };
        let claim_unattributed = learners.iter().all(|&(pid, _)| pid == root);
        let tops: Vec<i32> = table
            .iter()
            .filter(|s| self.is_orphan(s))
            .filter(
                |s| match learners.iter().find(|&&learner| belongs(s, learner)) {
                    Some(&(owner, _)) => owner == root,
                    None => claim_unattributed,
                },
            )
            .map(|s| s.pid)
            .collect();
        let below: Vec<i32> = tops.iter().copied().chain([root]).collect();
        live_with_descendants(table, &tops, &below)
    }
}

/// The live processes among `tops`, and every process descending from one of `below`.
fn live_with_descendants(table: &[Stat], tops: &[i32], below: &[i32]) -> Vec<ProcessId> {
    let mut found: Vec<ProcessId> = table
        .iter()
        .filter(|s| tops.contains(&s.pid) && !s.is_zombie())
        .map(Stat::id)
        .collect();
    found.extend(descendants_in(table, below));
    found
}

/// Waits up to `timeout` for every process in `processes` to exit; SIGKILLs those left, then
/// waits up to [`KILL_WAIT`] more. Returns whether all are gone.
pub(crate) fn wait_gone_or_kill(processes: &[ProcessId], timeout: Duration) -> bool {
    let all_gone = |deadline: Instant| loop {
        if processes.iter().all(|p| !p.alive()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    };
    if all_gone(Instant::now() + timeout) {
        return true;
    }
    processes.iter().for_each(ProcessId::kill);
    all_gone(Instant::now() + KILL_WAIT)
}

/// What `/proc/<pid>/stat` says of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) pid: i32,
    state: char,
    ppid: i32,
    pub(crate) pgrp: i32,
    pub(crate) session: i32,
    pub(crate) start_time: u64,
}

impl Stat {
    pub(crate) fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }

    pub(crate) fn id(&self) -> ProcessId {
        ProcessId {
            pid: self.pid,
            start_time: self.start_time,
        }
    }
}

fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may contain spaces and parentheses, so
/// the fields after it are counted from the last `)`: state is field 3, ppid 4, process group 5,
/// session 6, start time 22.
fn parse_stat(stat: &str) -> Option<Stat> {
    let pid = stat.split_whitespace().next()?.parse().ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Every process on the machine (those that exit while it is read are left out).
pub(crate) fn process_table() -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .collect()
}

/// Whether the environment of `pid` holds `MARK_VAR=<mark>`. A process can change what this
/// shows only by exec'ing with another environment (or overwriting its own memory); one we may
/// not read (another user's, or not dumpable) is not marked.
pub(crate) fn has_mark(pid: i32, mark: &str) -> bool {
    let wanted = format!("{MARK_VAR}={mark}");
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|environ| environ.split(|&b| b == 0).any(|v| v == wanted.as_bytes()))
}

fn random_mark() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
}

/// What [`spawn_owned`] started and has not released yet: pid → the mark of the learner's code
/// (see [`Proc::spawn_untrusted`]). Locked across each fork and each look for orphans, so that a
/// child being born is never taken for an orphan.
static OWNED: Mutex<Owned> = Mutex::new(BTreeMap::new());

type Owned = BTreeMap<i32, Option<String>>;

fn lock_owned() -> MutexGuard<'static, Owned> {
    // A panic elsewhere does not make the registry wrong.
    OWNED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Makes this process a child subreaper (see the module docs) and starts the thread that reaps
/// orphans' zombies and tells the supervisor about the live ones as they appear, so that a
/// SIGKILLed grader's orphans are known even when nothing else marks them.
fn become_subreaper() {
    // Without it (not Linux ≥ 3.4), orphans go to PID 1: teardown then finds only what their
    // session, group or mark names, and the supervisor does the rest.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let _ = std::thread::Builder::new()
        .name("grader-orphans".into())
        .spawn(|| {
            let mut told: BTreeSet<ProcessId> = BTreeSet::new();
            loop {
                std::thread::sleep(ORPHAN_WATCH_INTERVAL);
                let owned = lock_owned();
                let table = process_table();
                let family = Family::of_this_process(&owned);
                family.reap_orphans(&table);
                let live: BTreeSet<ProcessId> = family.orphans(&table).into_iter().collect();
                drop(owned);
                for orphan in live.difference(&told) {
                    supervisor::tell(&Note::Orphan(*orphan));
                }
                told = live;
            }
        });
}

/// At the grader's exit: SIGKILLs every process still descending from it but the supervisor,
/// until none is left (at most [`KILL_WAIT`]). Teardown has run by then, so this only finds what
/// no run could claim while others were in progress, or what a failed teardown left. Zombies of
/// orphans are reaped.
pub(crate) fn kill_every_descendant() {
    let me = Pid::this().as_raw();
    let supervisor = supervisor::pid();
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let owned = lock_owned();
        let table = process_table();
        Family::of_this_process(&owned).reap_orphans(&table);
        drop(owned);
        let found: Vec<ProcessId> = descendants_in(&table, &[me])
            .into_iter()
            .filter(|p| Some(p.pid) != supervisor)
            .collect();
        if found.is_empty() || Instant::now() >= deadline {
            return;
        }
        found.iter().for_each(ProcessId::kill);
        std::thread::sleep(POLL);
    }
}

struct SpawnRequest {
    cmd: Command,
    mark: Option<String>,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// Spawns `cmd` with `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with us even if we are SIGKILLed
/// and no `Drop` runs, in a process group of its own, or, for the learner's code (`untrusted`),
/// in a session of its own (see the module docs). The child is registered as ours until
/// [`Proc::stop`] releases it.
///
/// The parent-death signal fires when the *thread* that forked the child exits, not the process.
/// Tokio threads come and go (blocking-pool threads after 10 s idle, workers after
/// `block_in_place`), so all children are forked by one dedicated thread that lives as long as the
/// process. The caller blocks only for the fork/exec itself, as it would with a direct spawn.
///
/// The parent-death signal reaches only the child itself, not what it forked, and removes no
/// file: the supervisor covers both when the grader is SIGKILLed (see `supervisor.rs`).
fn spawn_owned(mut cmd: Command, mark: Option<String>) -> io::Result<Child> {
    let parent = Pid::this();
    let untrusted = mark.is_some();
    if !untrusted {
        cmd.process_group(0);
    }
    // SAFETY: the hook runs between fork and exec, so it must be async-signal-safe: it only makes
    // syscalls and builds an `io::Error` from an errno, which does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if untrusted {
                // Also a new process group, with the same id.
                nix::unistd::setsid().map_err(io::Error::from)?;
            }
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
        become_subreaper();
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("grader-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    let _ = req.reply.send(spawn_registered(&mut req.cmd, req.mark));
                }
            })
            .ok()
            .map(|_| tx)
    });
    let Some(spawner) = spawner else {
        // Could not create the thread (resource exhaustion): a weaker guarantee beats failing.
        return spawn_registered(&mut cmd, mark);
    };
    let (reply, answer) = mpsc::channel();
    spawner
        .send(SpawnRequest { cmd, mark, reply })
        .map_err(|_| io::Error::other("the process-spawning thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the process-spawning thread is gone"))?
}

/// Spawns and registers the child in one step under the registry's lock (see [`OWNED`]).
fn spawn_registered(cmd: &mut Command, mark: Option<String>) -> io::Result<Child> {
    let mut owned = lock_owned();
    let child = cmd.spawn()?;
    if let Ok(pid) = i32::try_from(child.id()) {
        owned.insert(pid, mark);
    }
    Ok(child)
}

/// A new temp dir named `<prefix>…`, registered with the supervisor (which removes it should the
/// grader be SIGKILLed) until [`remove_temp_dir`].
pub(crate) fn temp_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    supervisor::tell(&Note::TempDir(dir.path()));
    Ok(dir)
}

/// Removes a dir made by [`temp_dir`] (once its processes are gone, so nothing recreates files
/// in it) and deregisters it.
pub(crate) fn remove_temp_dir(dir: tempfile::TempDir) {
    let path = dir.path().to_path_buf();
    // `close` reports what `Drop` would swallow; one more try covers files that a dying child
    // created while the first removal ran.
    if dir.close().is_err() {
        let _ = std::fs::remove_dir_all(&path);
    }
    supervisor::tell(&Note::TempDirRemoved(&path));
}

/// A temp dir that lives as long as this value: registered with the supervisor (removed should the
/// grader be SIGKILLed) and removed and deregistered when dropped. For dirs held across awaits and
/// owners, such as `grader batch`'s copy of each submission.
pub struct SupervisedTempDir(Option<tempfile::TempDir>);

impl SupervisedTempDir {
    pub fn new(prefix: &str) -> io::Result<Self> {
        temp_dir(prefix).map(|dir| SupervisedTempDir(Some(dir)))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("present until dropped").path()
    }
}

impl Drop for SupervisedTempDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            remove_temp_dir(dir);
        }
    }
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
                // Longer lines are cut, so one runaway line cannot flood an error message.
                .map(|line| cap_line(line, MAX_LOG_LINE))
                .collect();
        }
        chunk *= 4;
    }
}

/// Removes the SysV shared memory segment a killed postmaster left behind. Its id is on line 7 of
/// `postmaster.pid` ("<key> <shmid>"); the file is ours, so the segment is too.
/// (Here rather than in `postgres`: the supervisor, a child of this module, removes it too.)
pub(crate) fn remove_sysv_segment(data_dir: &Path) {
    let Ok(pid_file) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let shmid = pid_file
        .lines()
        .nth(6)
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|id| id.parse::<nix::libc::c_int>().ok());
    if let Some(shmid) = shmid {
        // SAFETY: IPC_RMID takes no buffer; a stale id just makes the call fail.
        unsafe {
            nix::libc::shmctl(shmid, nix::libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_proc_stat_with_odd_names() {
        let stat = "1234 (we (ird) name) S 1 4321 4000 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 1000 100";
        let parsed = parse_stat(stat).expect("parses");
        assert_eq!(
            (
                parsed.pid,
                parsed.state,
                parsed.ppid,
                parsed.pgrp,
                parsed.session
            ),
            (1234, 'S', 1, 4321, 4000)
        );
        assert_eq!(parsed.start_time, 987654);
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
    fn tail_cuts_a_runaway_line_saying_how_much() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        std::fs::write(&path, format!("start\n{}\nend\n", "x".repeat(100_000))).expect("write");
        let tail = tail_lines(&path, 3);
        assert_eq!(tail[0], "start");
        assert_eq!(
            tail[1],
            format!(
                "{}… ({} more bytes)",
                "x".repeat(MAX_LOG_LINE),
                100_000 - MAX_LOG_LINE
            )
        );
        assert_eq!(tail[2], "end");
    }

    #[test]
    fn finds_descendants_outside_the_process_group() {
        // `setsid` puts the sleeper in a session (and group) of its own, as erl_child_setup is.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "setsid sleep 30 & wait"]);
        let mut proc = Proc::spawn(cmd, Signal::SIGKILL, true, Duration::ZERO).expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(5);
        // Until the child has become `sleep` it may not have left the group yet.
        let is_sleep = |p: &ProcessId| {
            std::fs::read_to_string(format!("/proc/{}/comm", p.pid))
                .is_ok_and(|c| c.trim() == "sleep")
        };
        let found = loop {
            let found = descendants(proc.pid());
            if found.iter().any(is_sleep) || Instant::now() >= deadline {
                break found;
            }
            std::thread::sleep(POLL);
        };
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].alive());
        proc.stop();
        // The group is gone, the sleeper in its own session is not: only the pid reaches it.
        assert!(
            found[0].alive(),
            "setsid did not take the sleeper out of the group"
        );
        assert!(wait_gone_or_kill(&found, Duration::ZERO));
        assert!(!found[0].alive());
    }

    fn stat(pid: i32, ppid: i32, session: i32, pgrp: i32) -> Stat {
        Stat {
            pid,
            state: 'S',
            ppid,
            pgrp,
            session,
            start_time: pid as u64 * 10,
        }
    }

    #[test]
    fn orphans_are_attributed_to_their_run_and_nothing_else_is() {
        // We are 100 in session 1. Run A's service is 200, run B's 300 (each leads its session);
        // PostgreSQL is 400 (ours, in our session); 500 is a child we did not start through
        // `spawn_owned` (git), in our session.
        let owned: Owned = BTreeMap::from([
            (200, Some("a".to_string())),
            (300, Some("b".to_string())),
            (400, None),
        ]);
        let family = Family {
            me: 100,
            my_session: 1,
            owned: &owned,
            supervisor: Some(600),
        };
        let mut zombie = stat(240, 100, 200, 240);
        zombie.state = 'Z';
        let mut table = vec![
            stat(100, 1, 1, 100),
            stat(200, 100, 200, 200),
            stat(201, 200, 200, 201), // A's child in a group of its own (setpgid)
            stat(210, 100, 200, 210), // A's double fork into a group of its own
            stat(211, 210, 200, 210), // what that forked
            stat(220, 100, 220, 220), // A's, in a session of its own, marked A
            stat(230, 100, 230, 230), // in a session of its own, environment cleared
            zombie,                   // A's orphan that exited
            stat(300, 100, 300, 300),
            stat(310, 100, 300, 310), // B's double fork
            stat(320, 100, 320, 320), // B's, in a session of its own, marked B
            stat(400, 100, 1, 400),
            stat(401, 400, 1, 400),
            stat(500, 100, 1, 100),
            stat(600, 100, 1, 600), // the supervisor
        ];
        let marks = |pid: i32, mark: &str| (pid, mark) == (220, "a") || (pid, mark) == (320, "b");
        let pids = |found: Vec<ProcessId>| found.iter().map(|p| p.pid).collect::<BTreeSet<_>>();
        assert_eq!(
            pids(family.escaped_from(&table, 200, marks)),
            BTreeSet::from([201, 210, 211, 220])
        );
        assert_eq!(
            pids(family.escaped_from(&table, 300, marks)),
            BTreeSet::from([310, 320])
        );
        assert_eq!(
            pids(family.orphans(&table)),
            BTreeSet::from([210, 211, 220, 230, 310, 320])
        );
        // Once B is released (reaped), only A runs: the unattributed orphan can only be A's, and
        // what B left is nobody's.
        let only_a: Owned = BTreeMap::from([(200, Some("a".to_string())), (400, None)]);
        let family = Family {
            owned: &only_a,
            ..family
        };
        table.retain(|s| s.pid != 300);
        assert_eq!(
            pids(family.escaped_from(&table, 200, marks)),
            BTreeSet::from([201, 210, 211, 220, 230, 310, 320])
        );
    }

    /// Tests that start the learner's kind of process run one at a time: whether an unmarked
    /// orphan is claimed depends on what else runs.
    static UNTRUSTED: Mutex<()> = Mutex::new(());

    /// Waits until, for each of `needles`, a live process whose command line ends with it exists.
    fn find_processes(needles: &[&str]) -> Vec<ProcessId> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let table = process_table();
            let found: Vec<Option<ProcessId>> = needles
                .iter()
                .map(|needle| {
                    table.iter().filter(|s| !s.is_zombie()).find_map(|s| {
                        let cmdline = std::fs::read(format!("/proc/{}/cmdline", s.pid)).ok()?;
                        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                        // Not the `sh -c` whose script names them all.
                        let last = cmdline.split_whitespace().last()?;
                        (last == *needle).then(|| s.id())
                    })
                })
                .collect();
            if found.iter().all(Option::is_some) {
                return found.into_iter().flatten().collect();
            }
            assert!(Instant::now() < deadline, "never started: {found:?}");
            std::thread::sleep(POLL);
        }
    }

    /// A service that leaves behind, for the `id`-th test: a child in a session of its own, a
    /// double fork in a session of its own, a double fork in a group of its own, and a double
    /// fork in a session of its own with a cleared environment.
    fn escaping_service(id: u32) -> (Proc, Vec<ProcessId>) {
        let script = format!(
            "setsid sleep {id}01 & (setsid sleep {id}02 &); \
             (perl -e 'setpgrp(0, 0); sleep {id}03' &); \
             (env -i /usr/bin/setsid /usr/bin/sleep {id}04 &); sleep {id}00"
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]);
        let proc =
            Proc::spawn_untrusted(cmd, Signal::SIGTERM, Duration::from_secs(1)).expect("spawn");
        let needles: Vec<String> = (1..=4).map(|n| format!("{id}0{n}")).collect();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let escaped = find_processes(&needles);
        (proc, escaped)
    }

    fn gone(process: &ProcessId) -> bool {
        // Neither running nor left a zombie of ours.
        read_stat(process.pid).is_none_or(|s| s.start_time != process.start_time)
    }

    #[test]
    fn what_a_service_moves_out_of_its_group_dies_at_its_teardown() {
        let _alone = UNTRUSTED.lock().unwrap_or_else(|p| p.into_inner());
        let (mut service, escaped) = escaping_service(71);
        assert!(escaped.iter().all(ProcessId::alive));
        service.stop();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !escaped.iter().all(gone) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert!(
            escaped.iter().all(gone),
            "left behind (or not reaped): {:?}",
            escaped.iter().filter(|p| !gone(p)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_teardown_leaves_the_processes_of_other_runs_alone() {
        let _alone = UNTRUSTED.lock().unwrap_or_else(|p| p.into_inner());
        let (mut first, first_escaped) = escaping_service(72);
        let (mut second, second_escaped) = escaping_service(73);
        first.stop();
        // The first run's marked processes are gone; its unmarked one (the last) could be either
        // run's while the second runs, so it waits for the second's teardown.
        assert!(first_escaped[..3].iter().all(|p| !p.alive()));
        assert!(first_escaped[3].alive());
        assert!(second_escaped.iter().all(ProcessId::alive));
        second.stop();
        assert!(first_escaped.iter().all(|p| !p.alive()));
        assert!(second_escaped.iter().all(|p| !p.alive()));
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
