//! Passive declares, one per name: what is missing is named, all of it at once.

use super::Params;
use crate::engine::{broker, CheckContext, FailInfo, Failure};

pub async fn run(p: &Params, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let broker = broker::connect(ctx).await?;
    let mut missing = Vec::new();
    let mut found = Vec::new();
    let mut evidence = Vec::new();
    for name in &p.exchanges {
        if broker.exchange_exists(name).await? {
            found.push(format!("exchange {name}"));
            evidence.push(format!("exchange.declare {name} (passive): ok"));
        } else {
            missing.push(format!("exchange {name}"));
            evidence.push(format!("exchange.declare {name} (passive): 404 NOT_FOUND"));
        }
    }
    for name in &p.queues {
        match broker.queue_depth(name).await? {
            Some(ready) => {
                found.push(format!("queue {name}"));
                evidence.push(format!(
                    "queue.declare {name} (passive): ok, {ready} messages ready"
                ));
            }
            None => {
                missing.push(format!("queue {name}"));
                evidence.push(format!("queue.declare {name} (passive): 404 NOT_FOUND"));
            }
        }
    }
    broker.close().await;
    if !missing.is_empty() {
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "once your service answered its health check, the broker had no {}: declare {} at start-up",
                missing.join(", no "),
                if missing.len() == 1 { "it" } else { "them" }
            ),
            expected: format!("{} declared", [found.clone(), missing.clone()].concat().join(", ")),
            actual: if found.is_empty() {
                "none of them exists".into()
            } else {
                format!("only {} exist", found.join(", "))
            },
            evidence,
            ..Default::default()
        }));
    }
    ctx.measured(format!("found {} on the broker", found.join(", ")));
    Ok(())
}
