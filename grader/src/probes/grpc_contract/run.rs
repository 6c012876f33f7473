//! Runs `grpc_contract`.

use super::params::GrpcContract;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::grpc::contract::differences;
use crate::probes::rpc;

pub async fn run(p: &GrpcContract, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let Some(contract) = &p.contract else {
        return Err(Failure::Error(format!(
            "the exercise's {} was not loaded",
            p.proto
        )));
    };
    let expected = contract
        .get_service_by_name(&p.service)
        .ok_or_else(|| Failure::Error(format!("{} has no service {}", p.proto, p.service)))?;
    let channel = rpc::connect(ctx).await?;
    let reflected = rpc::reflect(&channel, &p.service).await?;
    ctx.measured(format!(
        "reflection {} lists {}",
        match reflected.version {
            crate::grpc::reflection::ReflectionVersion::V1 => "v1",
            crate::grpc::reflection::ReflectionVersion::V1Alpha => "v1alpha (v1 is not served)",
        },
        reflected.services.join(", ")
    ));
    let evidence = vec![
        format!(
            "{} ListServices: {}",
            reflected.version.service(),
            reflected.services.join(", ")
        ),
        format!(
            "{} FileContainingSymbol({}): {}",
            reflected.version.service(),
            p.service,
            reflected
                .pool
                .files()
                .map(|f| f.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    let missing: Vec<&String> = p
        .listed
        .iter()
        .filter(|s| !reflected.services.contains(s))
        .collect();
    if !missing.is_empty() {
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "server reflection's list of services does not name {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            expected: format!("a list naming {}", p.listed.join(", ")),
            actual: reflected.services.join(", "),
            evidence: evidence.clone(),
            ..Default::default()
        }));
    }
    let found = differences(&expected, &reflected.pool);
    if !found.is_empty() {
        return Err(Failure::Fail(FailInfo {
            message: format!(
                "what reflection describes is not the contract of {}: {}{}",
                p.proto,
                found[0],
                match found.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                }
            ),
            expected: format!(
                "{} with every method, message and field of {} (name, number, type, streaming)",
                p.service, p.proto
            ),
            actual: found.join("\n"),
            evidence,
            ..Default::default()
        }));
    }
    ctx.measured(format!(
        "{} methods and their messages match {}",
        expected.methods().len(),
        p.proto
    ));
    Ok(())
}
