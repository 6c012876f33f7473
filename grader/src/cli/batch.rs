//! `grader batch` and `grader batch merge`: flags, the progress bar, the class summary and the
//! exit code. The grading itself is `crate::batch`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{exercise_source, load_catalog, print_diagnostics, say, Interrupt, SourceArgs};
use crate::batch::class::ClassReport;
use crate::batch::result::{SubmissionResult, Verdict};
use crate::batch::roster::{Roster, Shard};
use crate::batch::{self, BatchEvents, BatchFile, BatchRequest};
use crate::run::{Cancel, RuntimeKind};
use crate::scoring::exit;
use crate::spec::random;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub command: Option<BatchCommand>,
    /// A folder of submission folders (one per student, named by student id), or a CSV roster
    /// with the header `student,path_or_git_url,ref`.
    #[arg(required = true, value_name = "SUBMISSIONS")]
    pub submissions: Option<PathBuf>,
    /// Exercise to grade every submission on (repeatable).
    #[arg(long = "exercise", short = 'e', value_name = "ID", required = true)]
    pub exercises: Vec<String>,
    /// Submissions graded at once (each has its own service, databases and mocks).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// docker isolates each submission in its own containers and network; local runs their code
    /// on this machine as you (only inside a sandbox).
    #[arg(long, value_enum, default_value_t = BatchRuntime::Docker)]
    pub runtime: BatchRuntime,
    /// Output folder: results per submission and the class report (a re-run resumes it).
    #[arg(long, value_name = "DIR", default_value = "grader-batch")]
    pub out: PathBuf,
    /// The batch's seed (each submission's is derived from it and the student id); default: the
    /// one in DIR/batch.json when resuming, else a fresh one.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Grade slice I (from 0) of N: the students at positions p (by id) with p % N == I.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// Stop one submission's run after this long and fail it (e.g. 20m, 90s).
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Subcommand, Debug)]
pub enum BatchCommand {
    /// Combine batch output folders (one per shard) into one class report.
    Merge {
        /// The shards' output folders.
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Folder for the merged results and class report.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchRuntime {
    /// Each submission's Dockerfile, in its own containers and network.
    Docker,
    /// Each submission's start command on this machine: no isolation.
    Local,
}

pub async fn run(args: BatchArgs) -> i32 {
    if let Some(BatchCommand::Merge { dirs, out, source }) = &args.command {
        return merge(dirs, out, source);
    }
    let Some(submissions) = &args.submissions else {
        return exit::USAGE;
    };
    let Ok(catalog) = load_catalog(&args.source) else {
        return exit::USAGE;
    };
    for id in &args.exercises {
        if catalog.exercise(id).is_none() {
            let names = catalog.exercises.iter().map(|e| e.id.as_str());
            say(&format!(
                "grader: unknown exercise \"{id}\"; known exercises: {}",
                names.collect::<Vec<_>>().join(", ")
            ));
            return exit::USAGE;
        }
    }
    if args.jobs == 0 {
        say("grader: --jobs is at least 1");
        return exit::USAGE;
    }
    let roster = match Roster::load(submissions) {
        Ok(r) => r,
        Err(d) => {
            print_diagnostics(&d);
            return exit::USAGE;
        }
    };
    let runtime = match args.runtime {
        BatchRuntime::Docker => RuntimeKind::Docker,
        BatchRuntime::Local => {
            say("grader: WARNING: --runtime local runs every submission's code on this machine, as \
                 you, with your files and your network. Untrusted code belongs in --runtime docker, \
                 or inside a sandbox (a gVisor or Kata pod, a throwaway VM).");
            RuntimeKind::Local
        }
    };
    let earlier = BatchFile::load(&args.out);
    let seed = match (args.seed, &earlier) {
        (Some(seed), _) => seed,
        (None, Some(b)) => {
            say(&format!(
                "grader: resuming {}: seed {} from its {}",
                args.out.display(),
                b.header.seed,
                batch::BATCH_FILE
            ));
            b.header.seed
        }
        (None, None) => random::fresh_seed(),
    };
    let request = BatchRequest {
        roster,
        exercises: args.exercises.clone(),
        jobs: args.jobs,
        runtime,
        out: args.out.clone(),
        seed,
        shard: args.shard,
        timeout: args.timeout,
        source: exercise_source(&args.source),
    };
    let graded = request.shard.map_or(request.roster.submissions.len(), |s| {
        request.roster.shard(s).len()
    });
    say(&format!(
        "grading {graded} submission(s) of {} on {} · {} at a time · seed {seed}{}",
        args.exercises.join(", "),
        batch::runtime_name(runtime),
        args.jobs,
        args.shard
            .map(|s| format!(" · shard {s}"))
            .unwrap_or_default()
    ));
    let events = BatchProgress::new(graded);
    let (canceller, cancel) = Cancel::new();
    let mut interrupt = Interrupt::new();
    let watcher = tokio::spawn(async move {
        interrupt.wait().await;
        canceller.cancel();
    });
    let outcome = batch::run(&request, &catalog, &events, cancel).await;
    watcher.abort();
    events.finish();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            say(&format!("grader: {e}"));
            return exit::USAGE;
        }
    };
    if outcome.kept > 0 {
        say(&format!(
            "{} submission(s) kept from an earlier run (same files, grader, exercises, runtime and seed)",
            outcome.kept
        ));
    }
    print_summary(&outcome.class, &args.out);
    if outcome.interrupted {
        say(&format!(
            "grader: interrupted; {} result(s) kept in {}. Run the same command again to grade the rest.",
            outcome.results.len(),
            args.out.display()
        ));
        return exit::INTERRUPTED;
    }
    if outcome.class.counts.error > 0 {
        say(&format!(
            "grader: {} submission(s) could not be graded (a grader or infrastructure error, twice); \
             run the same command again to retry them.",
            outcome.class.counts.error
        ));
        return exit::INFRASTRUCTURE;
    }
    exit::OK
}

fn merge(dirs: &[PathBuf], out: &std::path::Path, source: &SourceArgs) -> i32 {
    let Ok(catalog) = load_catalog(source) else {
        return exit::USAGE;
    };
    match batch::merge(dirs, out, &catalog) {
        Ok(class) => {
            print_summary(&class, out);
            exit::OK
        }
        Err(e) => {
            say(&format!("grader: {e}"));
            exit::USAGE
        }
    }
}

/// The class in a few lines on stdout: counts, the distributions, the most failed checks.
fn print_summary(class: &ClassReport, out: &std::path::Path) {
    let _ = write!(std::io::stdout(), "{}", summary(class, out));
}

fn summary(class: &ClassReport, out: &std::path::Path) -> String {
    let mut text = String::new();
    let c = &class.counts;
    text.push_str(&format!(
        "\n{} submission(s): {} pass, {} fail, {} unusable, {} error\n",
        c.submissions, c.pass, c.fail, c.unusable, c.error
    ));
    let width = class
        .submissions
        .iter()
        .map(|s| s.student.len())
        .max()
        .unwrap_or(0)
        .max(7);
    for row in &class.submissions {
        // An error has no score yet: a dash, not a 0 that reads as the student's.
        let score = if row.verdict.scored() {
            format!("{:>5.1}%", row.percent)
        } else {
            format!("{:>6}", "–")
        };
        text.push_str(&format!(
            "  {:<width$}  {:<8} {score}  {}\n",
            row.student,
            row.verdict.as_str(),
            row.message
                .as_deref()
                .map(|m| crate::report::sanitize(m.lines().next().unwrap_or("")))
                .unwrap_or_default()
        ));
    }
    if class.score.scored == 0 {
        text.push_str("\nno submission was scored\n");
    } else {
        text.push_str(&format!(
            "\nscore   median {:.1}%  mean {:.1}%  (min {:.1}%, max {:.1}%)\n",
            class.score.median, class.score.mean, class.score.min, class.score.max
        ));
        for skill in &class.skills {
            text.push_str(&format!(
                "  {:<24} median {:>5.1}%  mean {:>5.1}%\n",
                skill.id, skill.distribution.median, skill.distribution.mean
            ));
        }
    }
    let failed: Vec<_> = class
        .checks
        .iter()
        .filter(|c| c.failed > 0)
        .take(5)
        .collect();
    if !failed.is_empty() {
        text.push_str("most often failed\n");
        for check in failed {
            text.push_str(&format!(
                "  {:>3} of {}  {}\n",
                check.failed,
                check.failed + check.skipped + check.passed,
                check.id
            ));
        }
    }
    text.push_str(&format!(
        "class report: {}/class.html (also class.csv, class.json)\n",
        out.display()
    ));
    text
}

/// A bar on a terminal (done / running / failed); a line per submission otherwise.
struct BatchProgress {
    bar: Option<ProgressBar>,
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    done: usize,
    failed: usize,
    errors: usize,
    running: Vec<String>,
}

impl BatchProgress {
    fn new(total: usize) -> BatchProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} {elapsed:.dim}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        BatchProgress {
            bar,
            state: Mutex::new(Counts {
                total,
                ..Counts::default()
            }),
        }
    }

    fn redraw(&self, counts: &Counts) {
        if let Some(bar) = &self.bar {
            bar.set_length(counts.total as u64);
            bar.set_position(counts.done as u64);
            bar.set_message(format!(
                "· failed {} · errors {} · running {}",
                counts.failed,
                counts.errors,
                counts.running.join(", ")
            ));
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => say(text),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl BatchEvents for BatchProgress {
    fn planned(&self, total: usize) {
        let mut counts = self.state.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = total;
        self.redraw(&counts);
    }

    fn started(&self, student: &str) {
        let mut counts = self.state.lock().unwrap_or_else(|e| e.into_inner());
        counts.running.push(student.to_string());
        self.redraw(&counts);
    }

    fn retrying(&self, student: &str, why: &str) {
        self.line(&format!(
            "  {student}: grader error, trying once more ({})",
            crate::report::sanitize(why.lines().next().unwrap_or(""))
        ));
    }

    fn finished(&self, result: &SubmissionResult, kept: bool) {
        let mut counts = self.state.lock().unwrap_or_else(|e| e.into_inner());
        counts.running.retain(|s| s != &result.student);
        counts.done += 1;
        match result.verdict {
            Verdict::Fail | Verdict::Unusable => counts.failed += 1,
            Verdict::Error => counts.errors += 1,
            Verdict::Pass => {}
        }
        self.line(&format!(
            "[{}/{}] {}  {}  {:.1}%{}",
            counts.done,
            counts.total,
            result.student,
            result.verdict.as_str(),
            result.percent,
            if kept {
                " (kept)".to_string()
            } else {
                format!(" in {:.0}s", result.duration_ms as f64 / 1000.0)
            }
        ));
        self.redraw(&counts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_summary_in_the_terminal() {
        let class = crate::batch::fixtures::class_report();
        insta::assert_snapshot!(
            "batch-summary",
            summary(&class, std::path::Path::new("class-2026"))
        );
        let mut nothing_scored = class.clone();
        nothing_scored.submissions.retain(|s| s.student == "fay");
        nothing_scored.score = Default::default();
        nothing_scored.checks.clear();
        nothing_scored.counts = crate::batch::class::Counts {
            submissions: 1,
            error: 1,
            ..Default::default()
        };
        insta::assert_snapshot!(
            "batch-summary-nothing-scored",
            summary(&nothing_scored, std::path::Path::new("class-2026"))
        );
    }
}
