//! `contract_diff`: both revisions read and validated (a client generator reads them both), their
//! versions and the base's operations checked, then the breaking changes, all of them reported.

use super::params::{ContractDiff, Revision};
use crate::engine::{fail, CheckContext, Failure};
use crate::probes::openapi::{self, diff};

pub async fn run(p: &ContractDiff, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let base = read(ctx, &p.base).await?;
    let missing: Vec<String> = p
        .operations
        .iter()
        .filter(|key| base.operation_by_key(key).is_none())
        .map(|key| key.replace("{}", "{…}"))
        .collect();
    if !missing.is_empty() {
        return Err(fail(
            format!(
                "{} (revision {}) does not document {}: the first revision described every operation",
                p.base.path,
                p.base.version,
                missing.join(", ")
            ),
            format!("{} documented in revision {}", p.operations.len(), p.base.version),
            format!(
                "documented: {}",
                base.operations.iter().map(|o| o.shown()).collect::<Vec<_>>().join(", ")
            ),
            Vec::new(),
        ));
    }
    let revision = read(ctx, &p.revision).await?;
    // Whether the revision marks them is the `contract` probe's to judge (one fact, one check);
    // here, that the base predates the deprecation.
    for key in &p.deprecated_in_revision {
        if base.operation_by_key(key).is_some_and(|op| op.deprecated) {
            let shown = key.replace("{}", "{…}");
            return Err(fail(
                format!(
                    "{} (revision {}) marks {shown} deprecated, and it was deprecated only in revision {}: the first revision is not as it was published",
                    p.base.path, p.base.version, p.revision.version
                ),
                format!(
                    "revision {} as first published, without \"deprecated\": true on {shown}",
                    p.base.version
                ),
                "\"deprecated\": true".into(),
                Vec::new(),
            ));
        }
    }
    // Both documents were judged; their long bodies would bury the verdict.
    ctx.exchanges.clear();
    let changes = diff::breaking_changes(&base.value, &revision.value);
    if let Some(first) = changes.first() {
        let lines: Vec<String> = changes
            .iter()
            .map(|c| format!("[{}] {}: {}", c.rule, c.operation, c.detail))
            .collect();
        return Err(fail(
            format!(
                "revision {} breaks clients of {}: {} breaking change{}, the first [{}] {}: {}",
                p.revision.version,
                p.base.version,
                changes.len(),
                if changes.len() == 1 { "" } else { "s" },
                first.rule,
                first.operation,
                first.detail
            ),
            format!(
                "no breaking change from {} to {} (oasdiff's error-level rules)",
                p.base.path, p.revision.path
            ),
            format!("{} breaking change(s)", changes.len()),
            lines,
        ));
    }
    ctx.measured(format!(
        "{} ({}) against {} ({}): {} operations compared under {} of oasdiff's breaking-change rules, none broken",
        p.revision.path,
        p.revision.version,
        p.base.path,
        p.base.version,
        base.operations.len(),
        diff::RULES.len()
    ));
    Ok(())
}

async fn read(ctx: &mut CheckContext<'_>, r: &Revision) -> Result<openapi::Document, Failure> {
    let doc = openapi::fetch(ctx, &r.path).await?;
    doc.require_version(&r.version)?;
    Ok(doc)
}
