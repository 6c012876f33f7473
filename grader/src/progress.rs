//! Live progress on stderr while the database and service start and the checks run: a spinner
//! on a terminal, plain lines otherwise (CI logs), nothing when asked to be quiet.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::outcome::{CheckResult, Status};
use crate::run::RunEvents;
use crate::runtime::{Phase, ProgressSink};

pub struct Progress {
    enabled: bool,
    spinner: Option<ProgressBar>,
    current: Mutex<String>,
    done: AtomicUsize,
}

impl Progress {
    /// `enabled = false` prints nothing (machine-readable output on a pipe).
    pub fn new(enabled: bool) -> Progress {
        let on_terminal = enabled && console_is_terminal();
        let spinner = on_terminal.then(|| {
            let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            pb.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.enable_steady_tick(Duration::from_millis(100));
            pb
        });
        Progress {
            enabled,
            spinner,
            current: Mutex::new(String::new()),
            done: AtomicUsize::new(0),
        }
    }

    /// A line that stays (above the spinner on a terminal).
    pub fn line(&self, text: &str) {
        if !self.enabled {
            return;
        }
        match &self.spinner {
            Some(pb) => pb.println(text),
            // A closed stderr (a pipe whose reader left) must not panic the run mid-cleanup.
            None => {
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }

    fn status(&self, text: String) {
        if let Some(pb) = &self.spinner {
            pb.set_message(text);
        }
    }

    pub fn finish_checks(&self) {
        if let Some(pb) = &self.spinner {
            pb.set_message("stopping the service");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(pb) = &self.spinner {
            pb.finish_and_clear();
        }
    }
}

fn console_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Postgres => "PostgreSQL",
        Phase::Redis => "Redis",
        Phase::Broker => "RabbitMQ",
        Phase::DataSetup => "data",
        Phase::Build => "build",
        Phase::ServiceStart => "service",
        Phase::Teardown => "teardown",
    }
}

impl ProgressSink for Progress {
    fn phase_started(&self, _phase: Phase, what: &str) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = what.to_string();
        self.status(what.to_string());
    }

    fn phase_finished(&self, phase: Phase, elapsed: Duration) {
        if phase == Phase::Teardown {
            return;
        }
        self.line(&format!(
            "  {:<11} ready in {:.1}s",
            phase_name(phase),
            elapsed.as_secs_f64()
        ));
    }
}

impl RunEvents for Progress {
    fn line(&self, text: &str) {
        Progress::line(self, text);
    }

    fn checks_finished(&self) {
        self.finish_checks();
    }

    fn check_started(&self, id: &str, title: &str) {
        let n = self.done.load(Ordering::Relaxed) + 1;
        self.status(format!("check {n}: {id} — {title}"));
    }

    fn check_finished(&self, result: &CheckResult) {
        self.done.fetch_add(1, Ordering::Relaxed);
        // On a terminal, show each verdict as it lands; the full report follows at the end.
        if self.spinner.is_some() {
            let mark = match result.status {
                Status::Pass => "✓",
                Status::Fail => "✗",
                Status::Error => "!",
                Status::Skip => "-",
            };
            self.line(&format!("  {mark} {}", result.id));
        }
    }
}
