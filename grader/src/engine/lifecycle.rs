//! Crashes the grader causes on purpose: SIGKILL the service, start it again, and cut it off the
//! broker. A check that does any of these leaves the run as it found it: the link is restored on
//! every path out of the check (see [`Cut`]), and a service that does not come back fails this
//! check with its log, after which the scheduler skips the rest (the service is dead).

use std::time::Duration;

use nix::sys::signal::Signal;

use super::{CheckContext, FailInfo, Failure, LOG_TAIL_LINES};
use crate::runtime::{BrokerLink, ServiceState, StartError};

/// How long a SIGKILLed service may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The service cut off the broker until this is dropped.
pub struct Cut {
    link: BrokerLink,
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
