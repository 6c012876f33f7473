//! The JSON report: the versioned contract for CI and tools.
//!
//! The document is [`RunReport`] serialised as is; its shape is described in `docs/REPORT.md`
//! and by the JSON Schema in `docs/report.schema.json` ([`schema`]). Any breaking change to the
//! shape bumps [`crate::outcome::REPORT_VERSION`]; adding a field does not.

use crate::outcome::RunReport;

/// Renders the report as pretty-printed JSON, ending with a newline.
pub fn render(report: &RunReport) -> String {
    let json = serde_json::to_string_pretty(report).expect("a RunReport always serialises to JSON");
    // A CI runner reads `##[error]` in any line it prints, and a JSON report on stdout quotes
    // what services answered. `##[` only occurs inside strings, where `\u005b` is the same `[` to
    // every JSON reader: the data is unchanged and the line no longer holds the command. (`::` can
    // never start a line: every line of the pretty document starts with a blank, `{`, `}` or
    // `]`, and strings escape their newlines.)
    let mut json = escape_unsafe_chars(&json).replace("##[", "##\\u005b");
    json.push('\n');
    json
}

/// Writes, as `\uXXXX` escapes, the characters serde_json leaves raw that a terminal or a log
/// viewer would act on: C1 controls and DEL, bidirectional overrides, and noncharacters (U+FFFE).
/// They only occur inside strings, where an escape is the same character to every JSON reader.
fn escape_unsafe_chars(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        // C0 controls inside strings are escaped by serde_json already; raw ones are the
        // document's own newlines and indentation.
        let c1_or_del = c.is_control() && c as u32 >= 0x7f;
        if c1_or_del || super::is_bidi_control(c) || super::is_noncharacter(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The JSON Schema (draft 7) of the report, pretty-printed, ending with a newline. This is the
/// content of `docs/report.schema.json`.
pub fn schema() -> String {
    crate::spec::schema::pretty(&schemars::schema_for!(RunReport))
}

#[cfg(test)]
mod tests {

    use super::schema;

    /// The committed schema must be the one the code generates.
    #[test]
    fn committed_schema_is_up_to_date() {
        crate::spec::schema::assert_committed(
            "report.schema.json",
            &schema(),
            "the result model in grader/src/outcome.rs.\n\
             Regenerate it with:  UPDATE_SCHEMA=1 cargo test -p grader report::\n\
             and review the diff: a breaking change needs a REPORT_VERSION bump and a note in \
             docs/REPORT.md.",
        );
    }
}
