//! Crashes the grader causes on purpose: SIGKILL the service, start it again, cut it off the
//! broker, and make its database hang or drop its connections. A check that does any of these
//! leaves the run as it found it: a link is restored on every path out of the check (see [`Cut`]
//! and [`DatabaseFault`]), and a service that does not come back fails this check with its log,
//! after which the scheduler skips the rest (the service is dead).

use std::time::Duration;

use nix::sys::signal::Signal;

use super::{CheckContext, FailInfo, Failure, LOG_TAIL_LINES};
use crate::runtime::{FaultLink, ServiceState, StartError};

/// How long a SIGKILLed service may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The service cut off the broker until this is dropped.
pub struct Cut {
    link: FaultLink,
}

impl Cut {
    pub fn restore(self) {
        // Drop restores.
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.link.restore();
    }
}

/// Cuts the service's connections to the broker (dropped at once, new ones refused) until the
/// returned guard is dropped.
pub fn cut_broker(ctx: &CheckContext<'_>) -> Result<Cut, Failure> {
    let Some(info) = ctx.service.broker.as_ref() else {
        return Err(Failure::Error(
            "this check cuts the service off the run's RabbitMQ, but none was started: the exercise must declare `[broker]`".into(),
        ));
    };
    info.link.cut();
    Ok(Cut {
        link: info.link.clone(),
    })
}

/// How the grader makes the service's database fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseFailure {
    /// Every connection stays open and nothing answers: a frozen server, packets dropped.
    Hang,
    /// Every connection is reset and new ones are refused: a restart, a failover.
    Drop,
}

/// The service's database failing until this is dropped.
pub struct DatabaseFault {
    link: FaultLink,
}

impl Drop for DatabaseFault {
    fn drop(&mut self) {
        self.link.restore();
    }
}

/// Why a database fault cannot be made with `--runtime external`.
const NO_DATABASE_LINK: &str = "this check makes your database hang and drop connections through a link the grader runs between your service and PostgreSQL; with --runtime external the grader runs neither, so it does not run this check";

/// Makes the service's database fail as `how` says (for the service alone: the grader's own
/// connections go to the server directly) until the returned guard is dropped.
pub fn fail_database(
    ctx: &CheckContext<'_>,
    how: DatabaseFailure,
) -> Result<DatabaseFault, Failure> {
    if ctx.service.kind == "external" {
        return Err(Failure::Skip(NO_DATABASE_LINK.into()));
    }
    let Some(link) = ctx.service.postgres.as_ref().and_then(|p| p.link.clone()) else {
        return Err(Failure::Error(
            "this check makes the database fail, but the service was given no link to it: the run starts one when a check of its exercises says `database` in a timeline phase, and your grader.toml must keep [postgres]".into(),
        ));
    };
    match how {
        DatabaseFailure::Hang => link.stall(),
        DatabaseFailure::Drop => link.cut(),
    }
    Ok(DatabaseFault { link })
}

/// SIGKILLs the service and waits until it is gone. With `--runtime external` the grader cannot,
/// so the check is skipped, never passed.
pub async fn kill_service(ctx: &CheckContext<'_>) -> Result<(), Failure> {
    if ctx.service.kind == "external" {
        return Err(Failure::Skip(
            "this check kills and restarts your service; with --runtime external the grader does not run it".into(),
        ));
    }
    match ctx.service.signal_service(Signal::SIGKILL, KILL_WAIT).await {
        Ok(ServiceState::Exited { .. }) => Ok(()),
        Ok(ServiceState::Running) => Err(Failure::Error(format!(
            "the service was sent SIGKILL and was still running {} later",
            humantime::format_duration(KILL_WAIT)
        ))),
        Err(e) => Err(Failure::Error(format!("could not kill the service: {e}"))),
    }
}

/// Starts the service again after [`kill_service`] and waits for its health check. A service that
/// does not come back is the service's failure (it must start on the state it left).
pub async fn restart_service(ctx: &mut CheckContext<'_>) -> Result<Duration, Failure> {
    match ctx.service.restart_service().await {
        Ok(took) => {
            ctx.measured(format!(
                "your service was killed with SIGKILL and answered its health check {} after its restart",
                seconds(took)
            ));
            Ok(took)
        }
        Err(StartError::ServiceDidNotStart { message, log_tail }) => {
            Err(Failure::Fail(FailInfo {
                message: format!("after the grader killed your service with SIGKILL and started it again, {message}"),
                expected: "your service starts again on the database and broker it left and answers its health check".into(),
                actual: message,
                log_tail: tail(log_tail),
                ..Default::default()
            }))
        }
        Err(StartError::Interrupted) => Err(Failure::Error("interrupted".into())),
        Err(other) => Err(Failure::Error(format!(
            "could not start the service again: {other}"
        ))),
    }
}

/// After a check that cut the broker or killed the service failed part-way: when the service
/// is dead, start it again (once), so that later checks grade it instead of being skipped. Its
/// death is this check's failure already; a restart that fails leaves it dead, and the scheduler
/// skips the rest with that cause.
pub async fn revive_if_dead(ctx: &mut CheckContext<'_>) {
    if ctx.service.kind == "external" || ctx.service.state() == ServiceState::Running {
        return;
    }
    if let Ok(took) = ctx.service.restart_service().await {
        ctx.measured(format!(
            "your service had exited; the grader started it again ({}) so the next checks can run",
            seconds(took)
        ));
    }
}

fn tail(mut lines: Vec<String>) -> Vec<String> {
    let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines.drain(..skip);
    lines
}

// "1.3 s", or "40 ms" under a second: how the broker checks print the times they measure.
pub use crate::runtime::seconds;
