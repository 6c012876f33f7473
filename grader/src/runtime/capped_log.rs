//! `service.log` and `build.log`, capped: an untrusted service or build could otherwise fill the
//! disk with its output. Past [`SERVICE_LOG_CAP`] (or [`BUILD_LOG_CAP`]) bytes one marker line is
//! written and the rest is dropped, while the output is still read, so a child that keeps writing
//! never blocks on a full pipe. The server log PostgreSQL writes while the service runs is copied
//! into `postgres.log` under [`DEPENDENCY_LOG_CAP`].
//!
//! [`CappedLog`] is the file and its budget, shared by every writer of one run's log (the docker
//! runtime's log stream; the local runtime's [`PipeDrain`]s, one per start of the service).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// At most this many bytes of the service's output are kept in `service.log` per run. Far above
/// what an honest service logs in a run (a line or two per request), and what the `service_log`
/// probe reads of it (its last 32 MiB).
pub const SERVICE_LOG_CAP: u64 = 64 * 1024 * 1024;

/// At most this many bytes of the build command's output are kept in `build.log`: a compiler's
/// whole output for a large project is a few MiB.
pub const BUILD_LOG_CAP: u64 = 16 * 1024 * 1024;

/// At most this many bytes of a dependency's server log are kept in the artifacts (PostgreSQL's
/// grows with every statement the service makes it log an error or a plan for).
pub const DEPENDENCY_LOG_CAP: u64 = 64 * 1024 * 1024;

/// The line written where a log was cut.
pub fn cap_marker(cap: u64) -> String {
    format!("grader: this log was capped at {cap} bytes; the rest of the output was dropped")
}

/// Bytes of a capped build log's end kept past the cap (see [`CappedLog::keeping_tail`]): a
/// build's error is at its end.
pub const BUILD_LOG_TAIL: usize = 1024 * 1024;

/// An append-only log that keeps its first `cap` bytes (counting what the file held when it was
/// opened), then one marker line, and drops the rest; or, [`CappedLog::keeping_tail`], keeps the
/// last bytes too, written after the marker when the log is finished.
#[derive(Debug)]
pub struct CappedLog {
    file: File,
    cap: u64,
    written: u64,
    /// Whether the last byte written ended a line (so the marker starts on a line of its own).
    at_line_start: bool,
    cut: bool,
    /// The last bytes past the cap, when the end is kept.
    tail: Option<Tail>,
}

#[derive(Debug)]
struct Tail {
    keep: usize,
    bytes: std::collections::VecDeque<u8>,
    /// Bytes past the cap that fell out of `bytes`.
    dropped: u64,
}

impl CappedLog {
    /// Opens `path` for appending (creating it), counting what it already holds.
    pub fn append_to(path: &Path, cap: u64) -> io::Result<CappedLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata()?.len();
        Ok(CappedLog {
            file,
            cap,
            written,
            at_line_start: true,
            cut: written >= cap,
            tail: None,
        })
    }

    /// Keeps the last `keep` bytes past the cap too (from a line start), written after a marker
    /// saying how much was dropped when the log is finished ([`CappedLog::finish`], or drop).
    pub fn keeping_tail(mut self, keep: usize) -> Self {
        self.tail = Some(Tail {
            keep,
            bytes: std::collections::VecDeque::new(),
            dropped: 0,
        });
        self
    }

    /// The same, shared by several writers.
    pub fn shared(path: &Path, cap: u64) -> io::Result<Arc<Mutex<CappedLog>>> {
        Ok(Arc::new(Mutex::new(CappedLog::append_to(path, cap)?)))
    }

    /// Appends what fits under the cap; the first time something does not fit, the marker.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.cut {
            self.keep_in_tail(bytes);
            return Ok(());
        }
        let room = self.cap.saturating_sub(self.written);
        let kept = &bytes[..bytes.len().min(room as usize)];
        self.file.write_all(kept)?;
        self.written += kept.len() as u64;
        if let Some(last) = kept.last() {
            self.at_line_start = *last == b'\n';
        }
        if kept.len() < bytes.len() {
            self.cut = true;
            if self.tail.is_some() {
                self.keep_in_tail(&bytes[kept.len()..]);
            } else {
                let newline = if self.at_line_start { "" } else { "\n" };
                writeln!(self.file, "{newline}{}", cap_marker(self.cap))?;
            }
        }
        Ok(())
    }

    fn keep_in_tail(&mut self, bytes: &[u8]) {
        let Some(tail) = self.tail.as_mut() else {
            return;
        };
        tail.bytes.extend(bytes);
        let over = tail.bytes.len().saturating_sub(tail.keep);
        tail.bytes.drain(..over);
        tail.dropped += over as u64;
    }

    /// Writes the kept end after its marker (once; a log that keeps no end has nothing to add).
    pub fn finish(&mut self) -> io::Result<()> {
        let Some(mut tail) = self.tail.take() else {
            return Ok(());
        };
        if !self.cut {
            return Ok(());
        }
        // From the first whole line of what was kept.
        if tail.dropped > 0 {
            let partial = tail
                .bytes
                .iter()
                .position(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            tail.bytes.drain(..partial);
            tail.dropped += partial as u64;
        }
        let newline = if self.at_line_start { "" } else { "\n" };
        writeln!(
            self.file,
            "{newline}{}; {} bytes dropped here, the last {} follow",
            cap_marker(self.cap),
            tail.dropped,
            tail.bytes.len()
        )?;
        let (a, b) = tail.bytes.as_slices();
        self.file.write_all(a)?;
        self.file.write_all(b)
    }

    /// Whether output was dropped.
    pub fn is_cut(&self) -> bool {
        self.cut
    }
}

impl Drop for CappedLog {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Longest line of a log shown or copied whole; longer ones are cut (see [`cap_line`]).
pub const MAX_LOG_LINE: usize = 2000;

/// `line` cut to its first `max` bytes (at a character boundary), saying how much was cut:
/// `abc… (12345 more bytes)`. One runaway line must not flood a message or a report.
pub fn cap_line(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_string();
    }
    let mut cut = max;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} more bytes)", &line[..cut], line.len() - cut)
}

/// Reads one line (without its newline) into `line`, keeping its first `max` bytes and
/// skipping the rest, so a stream with no newline costs `max` bytes, not its length. Returns the
/// bytes skipped, or `None` at the end of the stream.
pub async fn read_capped_line<R>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<usize>>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    line.clear();
    let mut skipped = 0;
    let mut read_any = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(read_any.then_some(skipped));
        }
        read_any = true;
        let (part, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let room = max - line.len().min(max);
        let kept = part.len().min(room);
        line.extend_from_slice(&part[..kept]);
        skipped += part.len() - kept;
        let ended = done > part.len();
        reader.consume(done);
        if ended {
            return Ok(Some(skipped));
        }
    }
}

pub fn lock(log: &Mutex<CappedLog>) -> MutexGuard<'_, CappedLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// A pipe a child writes its stdout and stderr into, drained into a [`CappedLog`] by a thread of
/// its own until every writer has closed it. [`PipeDrain::settle`] moves what is in the pipe now
/// into the log, so a reader of the log sees everything written before it looked.
pub struct PipeDrain {
    inner: Arc<Drain>,
}

struct Drain {
    /// Non-blocking, so that whoever holds `turn` can empty it without waiting for more.
    reader: io::PipeReader,
    log: Arc<Mutex<CappedLog>>,
    /// Held while emptying the pipe into the log; true once the pipe has ended.
    turn: Mutex<bool>,
}

impl PipeDrain {
    /// A pipe for a child's output (the writer, twice: for stdout and stderr, so their lines
    /// interleave as the child wrote them) and the thread that drains it into `log`.
    pub fn start(
        log: Arc<Mutex<CappedLog>>,
    ) -> io::Result<(PipeDrain, io::PipeWriter, io::PipeWriter)> {
        let (reader, writer) = io::pipe()?;
        let writer_too = writer.try_clone()?;
        let flags = nix::fcntl::fcntl(reader.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(reader.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        let inner = Arc::new(Drain {
            reader,
            log,
            turn: Mutex::new(false),
        });
        let drain = inner.clone();
        std::thread::Builder::new()
            .name("service-log".into())
            .spawn(move || drain.run())?;
        Ok((PipeDrain { inner }, writer, writer_too))
    }

    /// Moves what the pipe holds now into the log.
    pub fn settle(&self) {
        self.inner.pump();
    }

    /// Whether every writer has closed the pipe and all of it was read.
    pub fn ended(&self) -> bool {
        *self.inner.turn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drain {
    fn run(&self) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        loop {
            // Waits without holding `turn`, so `settle` is never kept waiting by an idle pipe.
            let mut fds = [PollFd::new(self.reader.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(1000u16));
            if self.pump() {
                return;
            }
        }
    }

    /// Reads the pipe until it is empty, into the log. Returns whether it has ended.
    fn pump(&self) -> bool {
        let mut ended = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        if *ended {
            return true;
        }
        let mut buf = [0u8; 64 * 1024];
        loop {
            match (&self.reader).read(&mut buf) {
                Ok(0) => {
                    *ended = true;
                    return true;
                }
                // A log that cannot be written is dropped, and the pipe still drained.
                Ok(n) => drop(lock(&self.log).write(&buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    *ended = true;
                    return true;
                }
            }
        }
    }
}

/// Waits up to `timeout` for the drain to end (after the service exited: its last lines).
pub fn wait_ended(drain: &PipeDrain, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    drain.settle();
    while !drain.ended() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        drain.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_then_one_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.log");
        let mut log = CappedLog::append_to(&path, 1000).unwrap();
        let line = [b'a'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        for _ in 0..10_000 {
            log.write(&line).unwrap();
        }
        assert!(log.is_cut());
        let text = std::fs::read_to_string(&path).unwrap();
        let marker = cap_marker(1000);
        assert_eq!(text.len(), 1000 + marker.len() + 1);
        assert!(text.ends_with(&format!("\n{marker}\n")));
        assert_eq!(text.matches("grader:").count(), 1);
    }

    /// A build log keeps its start and its end (where the error is), the marker between them
    /// saying how much was dropped.
    #[test]
    fn a_log_keeping_its_tail_ends_with_the_last_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("build.log");
        let mut log = CappedLog::append_to(&path, 1000).unwrap().keeping_tail(250);
        for i in 0..1000 {
            log.write(format!("line {i:04} of the build\n").as_bytes())
                .unwrap();
        }
        log.write(b"error: the last line\n").unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let (head, rest) = text.split_once("grader: this log was capped").unwrap();
        assert_eq!(
            head.len(),
            1000 + 1,
            "the cap, then a newline ending the cut line"
        );
        assert!(head.starts_with("line 0000 of the build\n"));
        let (marker, end) = rest.split_once('\n').unwrap();
        assert!(end.len() <= 250 && end.len() > 200, "{end:?}");
        assert!(end.starts_with("line 09"), "from a line start: {end:?}");
        assert!(end.ends_with("line 0999 of the build\nerror: the last line\n"));
        let total = 1000 * 23 + 21;
        let dropped = total - 1000 - end.len();
        assert!(
            marker.ends_with(&format!(
                "; {dropped} bytes dropped here, the last {} follow",
                end.len()
            )),
            "{marker}"
        );
    }

    #[test]
    fn a_cut_inside_a_line_puts_the_marker_on_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.log");
        std::fs::write(&path, "earlier\n").unwrap();
        let mut log = CappedLog::append_to(&path, 20).unwrap();
        log.write(b"0123456789abcdefghij").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("earlier\n0123456789ab\n{}\n", cap_marker(20)));
    }

    /// A child writing 200 MB is drained to the end (it is not blocked on a full pipe) while the
    /// log keeps its cap.
    #[test]
    fn a_child_writing_past_the_cap_is_drained_and_the_log_stays_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.log");
        let cap = 1024 * 1024;
        let log = CappedLog::shared(&path, cap).unwrap();
        let (drain, out, err) = PipeDrain::start(log.clone()).unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("head -c 200000000 /dev/zero | tr '\\0' 'x'; echo done >&2")
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        // A drain that stopped reading at the cap would leave the child blocked on a full pipe.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the child was still writing after 120 s: its output is not drained");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success());
        wait_ended(&drain, Duration::from_secs(10));
        assert!(drain.ended());
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, cap + cap_marker(cap).len() as u64 + 2);
        assert!(lock(&log).is_cut());
    }

    #[test]
    fn long_lines_are_cut_saying_how_much() {
        assert_eq!(cap_line("short", 10), "short");
        let long = "é".repeat(5_000_000);
        let cut = cap_line(&long, MAX_LOG_LINE);
        assert!(cut.len() < MAX_LOG_LINE + 40, "{}", cut.len());
        assert!(cut.ends_with(&format!("… ({} more bytes)", 10_000_000 - MAX_LOG_LINE)));
    }

    /// 10 MB without a newline is read keeping `max` bytes; the next line is read whole.
    #[tokio::test]
    async fn a_line_without_newline_is_read_in_bounded_memory() {
        let mut data = vec![b'x'; 10_000_000];
        data.extend_from_slice(b"\nnext\ntail");
        let mut reader = tokio::io::BufReader::new(&data[..]);
        let mut line = Vec::new();
        let skipped = read_capped_line(&mut reader, &mut line, 4096)
            .await
            .unwrap();
        assert_eq!((line.len(), skipped), (4096, Some(10_000_000 - 4096)));
        assert!(line.capacity() < 64 * 1024, "{}", line.capacity());
        assert_eq!(
            read_capped_line(&mut reader, &mut line, 4096)
                .await
                .unwrap(),
            Some(0)
        );
        assert_eq!(line, b"next");
        assert_eq!(
            read_capped_line(&mut reader, &mut line, 4096)
                .await
                .unwrap(),
            Some(0)
        );
        assert_eq!(line, b"tail");
        assert_eq!(
            read_capped_line(&mut reader, &mut line, 4096)
                .await
                .unwrap(),
            None
        );
    }

    /// What the child wrote before `settle` is in the file after it, with no wait.
    #[test]
    fn settle_moves_what_was_written_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.log");
        let log = CappedLog::shared(&path, SERVICE_LOG_CAP).unwrap();
        let (drain, mut out, _err) = PipeDrain::start(log).unwrap();
        for i in 0..100 {
            writeln!(out, "line {i}").unwrap();
            drain.settle();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.ends_with(&format!("line {i}\n")), "{text}");
        }
    }
}
