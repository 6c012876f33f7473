//! `service_log`: sends the requests, lets the output settle, then reads what the service wrote to
//! stdout and stderr in this run (the runtime's `service.log`) and fails on any line holding a
//! secret. A JWS is also looked for by its signature alone and its payload alone: either is
//! enough to replay or read the token. Lines are shown with every secret masked.
//!
//! With `--runtime external` the grader does not capture the service's output, so the check is
//! skipped with the reason (never a pass).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use super::params::ServiceLog;
use crate::engine::{CheckContext, FailInfo, Failure};
use crate::probes::upstream_calls::run::send_in_order;
use crate::spec::template;

/// The most bytes read from the end of the output.
pub(crate) const MAX_READ: u64 = 32 << 20;
/// A secret shorter than this could appear in a log by chance.
const MIN_SECRET_CHARS: usize = 8;
/// A JWS part shorter than this is not looked for on its own.
const MIN_PART_CHARS: usize = 16;
/// Characters of a secret left visible in a masked line.
const SHOWN_CHARS: usize = 6;
/// Offending lines listed as evidence.
const MAX_EVIDENCE: usize = 10;

pub const NOT_CAPTURED: &str = "the grader does not capture the output of a service it did not start (--runtime external), so it cannot check what your service logs; run with the local or docker runtime to grade this";

pub async fn run(p: &ServiceLog, ctx: &mut CheckContext<'_>) -> Result<(), Failure> {
    let Some(path) = ctx.service.service_log_path().map(Path::to_path_buf) else {
        return Err(Failure::Skip(NOT_CAPTURED.into()));
    };
    send_in_order(ctx, &p.requests).await?;
    let mut needles = Vec::new();
    for t in &p.secrets {
        let value = template::render(t, &ctx.scope).map_err(Failure::Error)?;
        if value.chars().count() < MIN_SECRET_CHARS {
            return Err(Failure::Error(format!(
                "the secret {t} is only {} characters long, too short to search a log for without finding it by chance; give it at least {MIN_SECRET_CHARS}",
                value.chars().count()
            )));
        }
        needles.extend(needles_for(&label(t), &value));
    }
    tokio::time::sleep(p.settle).await;
    let (text, skipped) = tokio::task::spawn_blocking(move || read_tail(&path, MAX_READ))
        .await
        .map_err(|e| Failure::Error(format!("reading the service's output: {e}")))?
        .map_err(Failure::Error)?;
    let hits = scan(&text, &needles);
    let scanned = format!(
        "{} bytes ({} lines) of the service's output{}",
        text.len(),
        text.lines().count(),
        if skipped > 0 {
            format!(
                ", its last {} MiB (the {skipped} bytes before were not read)",
                MAX_READ >> 20
            )
        } else {
            String::new()
        }
    );
    let Some(first) = hits.first() else {
        ctx.measured(format!(
            "scanned {scanned} for {} secret{}: none found",
            p.secrets.len(),
            if p.secrets.len() == 1 { "" } else { "s" }
        ));
        return Ok(());
    };
    let more = match hits.len() {
        1 => String::new(),
        n => format!(" (and {} more lines)", n - 1),
    };
    Err(Failure::Fail(FailInfo {
        message: format!(
            "the service's output contains {} (line {}){more}",
            first.what, first.line
        ),
        expected: "no token, password or Authorization header in the service's output (log that a request was authenticated, and as whom, never with what)".into(),
        actual: format!("line {}: {}", first.line, first.shown),
        evidence: hits
            .iter()
            .take(MAX_EVIDENCE)
            .map(|h| format!("line {} ({}): {}", h.line, h.what, h.shown))
            .chain(std::iter::once(format!("scanned {scanned}")))
            .collect(),
        ..Default::default()
    }))
}

/// `{{alice_token}}` for a template that is one variable, else the template as written.
fn label(template: &str) -> String {
    format!("`{}`", template.trim())
}

/// One form of a secret to look for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Needle {
    /// For messages: "`{{token}}`", "the signature part of `{{token}}`".
    pub what: String,
    pub text: String,
}

/// The secret, and for a JWS (`header.payload.signature`, base64url, the header a JSON object)
/// its signature and its payload on their own.
pub(crate) fn needles_for(label: &str, value: &str) -> Vec<Needle> {
    let mut out = vec![Needle {
        what: label.to_string(),
        text: value.to_string(),
    }];
    if let Some((_, payload, signature)) = jws_parts(value) {
        for (part, text) in [("signature", signature), ("payload", payload)] {
            if text.len() >= MIN_PART_CHARS {
                out.push(Needle {
                    what: format!("the {part} part of {label}"),
                    text: text.to_string(),
                });
            }
        }
    }
    out
}

fn jws_parts(s: &str) -> Option<(&str, &str, &str)> {
    let mut parts = s.split('.');
    let (h, p, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let b64url = |t: &str| {
        t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if h.is_empty() || p.is_empty() || !b64url(h) || !b64url(p) || !b64url(sig) {
        return None;
    }
    let header = URL_SAFE_NO_PAD.decode(h).ok()?;
    matches!(
        serde_json::from_slice::<Value>(&header),
        Ok(Value::Object(_))
    )
    .then_some((h, p, sig))
}

/// A line of the output holding a secret.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hit {
    /// 1-based.
    pub line: usize,
    /// The first needle found in it.
    pub what: String,
    /// The line with every secret masked, cut to a readable length.
    pub shown: String,
}

pub(crate) fn scan(text: &str, needles: &[Needle]) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(n) = needles.iter().find(|n| line.contains(&n.text)) {
            hits.push(Hit {
                line: i + 1,
                what: n.what.clone(),
                shown: mask(line, needles),
            });
        }
    }
    hits
}

/// The line with each secret (the longest first, so a whole token goes before its parts)
/// replaced by its first characters and `…`, cut to 300 characters around the first one.
pub(crate) fn mask(line: &str, needles: &[Needle]) -> String {
    let mut sorted: Vec<&Needle> = needles.iter().collect();
    sorted.sort_by_key(|n| std::cmp::Reverse(n.text.len()));
    let mut out = line.to_string();
    for n in sorted {
        let shown: String = n.text.chars().take(SHOWN_CHARS).collect();
        out = out.replace(&n.text, &format!("{shown}…"));
    }
    let chars: Vec<char> = out.chars().collect();
    const MAX: usize = 300;
    if chars.len() <= MAX {
        return out;
    }
    let at = chars.iter().position(|&c| c == '…').unwrap_or(0);
    let from = at.saturating_sub(MAX / 3).min(chars.len() - MAX);
    let cut: String = chars[from..from + MAX].iter().collect();
    format!(
        "{}{cut}{}",
        if from > 0 { "…" } else { "" },
        if from + MAX < chars.len() { "…" } else { "" }
    )
}

/// The last `max` bytes of the file (lossy UTF-8) and how many bytes came before them.
pub(crate) fn read_tail(path: &Path, max: u64) -> Result<(String, u64), String> {
    let what =
        |e: std::io::Error| format!("reading the service's output ({}): {e}", path.display());
    let mut file = crate::artifacts::open_regular(path).map_err(what)?;
    let len = file.metadata().map_err(what)?.len();
    let start = len.saturating_sub(max);
    file.seek(SeekFrom::Start(start)).map_err(what)?;
    let mut buf = Vec::new();
    file.take(max).read_to_end(&mut buf).map_err(what)?;
    Ok((String::from_utf8_lossy(&buf).into_owned(), start))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"alg":"RS256","kid":"k1"}` . `{"sub":"alice","aud":"notes-api"}` . a signature
    const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhbGljZSIsImF1ZCI6Im5vdGVzLWFwaSJ9.c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMTIzNDU2Nzg5MA";

    fn needles() -> Vec<Needle> {
        let mut n = needles_for("`{{alice_token}}`", TOKEN);
        n.extend(needles_for("`{{password}}`", "amber-otter-42-secret"));
        n
    }

    #[test]
    fn a_jws_is_also_looked_for_by_its_signature_and_payload() {
        let n = needles_for("`{{t}}`", TOKEN);
        let whats: Vec<&str> = n.iter().map(|n| n.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "`{{t}}`",
                "the signature part of `{{t}}`",
                "the payload part of `{{t}}`"
            ]
        );
        // Not a JWS: a dotted version, a password with dots.
        assert_eq!(needles_for("x", "1.2.3-release-candidate").len(), 1);
        assert_eq!(
            needles_for("x", "abc.defghijklmnopqrstu.vwxyzabcdefghijkl").len(),
            1
        );
    }

    #[test]
    fn lines_with_secrets_are_found_and_shown_masked() {
        let sig = TOKEN.rsplit('.').next().unwrap();
        let log = format!(
            "listening on :8080\n\
             GET /notes authorization=Bearer {TOKEN} 200\n\
             verify failed for sig {sig}\n\
             login alice ok\n\
             POST /accounts {{\"username\":\"alice\",\"password\":\"amber-otter-42-secret\"}}\n"
        );
        let hits = scan(&log, &needles());
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0].line, 2);
        assert_eq!(hits[0].what, "`{{alice_token}}`");
        assert_eq!(hits[0].shown, "GET /notes authorization=Bearer eyJhbG… 200");
        assert_eq!(hits[1].what, "the signature part of `{{alice_token}}`");
        assert_eq!(hits[1].shown, "verify failed for sig c2lnbm…");
        assert_eq!(
            hits[2].shown,
            "POST /accounts {\"username\":\"alice\",\"password\":\"amber-…\"}"
        );
        for h in &hits {
            assert!(!h.shown.contains(sig) && !h.shown.contains("otter-42"));
        }
        assert!(scan("all quiet\n", &needles()).is_empty());
    }

    #[test]
    fn long_lines_are_cut_around_the_secret() {
        let line = format!("{}{TOKEN}{}", "a".repeat(1000), "b".repeat(1000));
        let shown = mask(&line, &needles());
        assert!(shown.chars().count() <= 302, "{}", shown.len());
        assert!(shown.contains("eyJhbG…"));
        assert!(shown.starts_with('…') && shown.ends_with('…'));
    }

    #[test]
    fn the_tail_of_a_long_log_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("service.log");
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_tail(&path, 4).unwrap(), ("6789".to_string(), 6));
        assert_eq!(
            read_tail(&path, 100).unwrap(),
            ("0123456789".to_string(), 0)
        );
        assert!(read_tail(&dir.path().join("nope"), 4)
            .unwrap_err()
            .contains("nope"));
    }
}
