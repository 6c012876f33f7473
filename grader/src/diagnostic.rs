//! Source-located errors for the files people write by hand: `grader.toml` and `exercise.toml`.
//!
//! Every error names `file:line:col`, shows the offending line with a caret, and says how to fix
//! it, the way rustc and Hurl do. Parsing code produces [`Diagnostic`]s; only the CLI renders them.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor};

/// A file read from disk (or embedded in the binary), kept so errors can quote it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as shown to the user, e.g. `exercises/api-design/exercise.toml`.
    pub name: String,
    pub text: Arc<str>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        SourceFile {
            name: name.into(),
            text: text.into(),
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }
}

/// One problem in one file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: SourceFile,
    /// Byte range of the offending text; an empty range points at a position.
    pub span: Range<usize>,
    pub message: String,
    /// How to fix it, when the grader can tell.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &SourceFile, span: Range<usize>, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.clone(),
            span,
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// `file:line:col`
    pub fn location(&self) -> String {
        let (line, col) = self.file.line_col(self.span.start);
        format!("{}:{}:{}", self.file.name, line, col)
    }

    /// Renders `file:line:col: error: ...` followed by the quoted source and the help.
    pub fn render(&self, color: bool) -> String {
        let mut out = format!("{}: error: {}\n", self.location(), self.message);
        let file = SimpleFile::new(self.file.name.clone(), self.file.text.as_ref());
        let end = self.span.end.max(self.span.start).min(self.file.text.len());
        let start = self.span.start.min(end);
        let mut diag = CsDiagnostic::error().with_labels(vec![Label::primary((), start..end)]);
        if let Some(help) = &self.help {
            diag = diag.with_notes(vec![format!("help: {help}")]);
        }
        let config = term::Config {
            display_style: term::DisplayStyle::Rich,
            ..Default::default()
        };
        let mut buffer = if color {
            termcolor::Buffer::ansi()
        } else {
            termcolor::Buffer::no_color()
        };
        if term::emit(&mut buffer, &config, &file, &diag).is_ok() {
            let rendered = String::from_utf8_lossy(buffer.as_slice()).into_owned();
            // codespan starts with an empty "error" header line; our own header replaces it.
            let body = rendered
                .split_once('\n')
                .map(|(_, rest)| rest)
                .unwrap_or("");
            out.push_str(body.trim_end());
            out.push('\n');
        } else if let Some(help) = &self.help {
            out.push_str(&format!("  help: {help}\n"));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

/// Several diagnostics, reported together so an author fixes them in one pass.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&d.render(color));
            out.push('\n');
        }
        let n = self.0.len();
        out.push_str(&format!(
            "{n} error{} found\n",
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Diagnostics {}

/// Turns a `toml` deserialisation error into a located diagnostic, adding a "did you mean" for
/// misspelt keys (toml lists the expected keys; we pick the closest).
pub fn from_toml_error(file: &SourceFile, err: &toml::de::Error) -> Diagnostic {
    let span = err.span().unwrap_or(0..0);
    let message = err.message().trim().to_string();
    let mut diag = Diagnostic::new(file, span, message.clone());
    if let Some(help) = unknown_field_help(&message) {
        diag = diag.with_help(help);
    } else if message.contains("missing field") {
        diag = diag.with_help("add the missing key; see the format documentation for its meaning");
    }
    diag
}

fn unknown_field_help(message: &str) -> Option<String> {
    // toml/serde phrase it as: unknown field `comand`, expected one of `a`, `b`
    //                       or: unknown field `x`, expected `a` or `b`
    let rest = message.strip_prefix("unknown field `")?;
    let (unknown, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty())
        .collect();
    if candidates.is_empty() {
        return Some(format!("remove `{unknown}`: this table takes no keys"));
    }
    let best = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(unknown, c), *c))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((score, name)) if score > 0.8 => Some(format!("did you mean `{name}`?")),
        _ => Some(format!(
            "the keys allowed here are: {}",
            candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The closest of `candidates` to `word`, if any is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A path relative to the current directory when it is below it, for shorter messages; `.` for
/// the current directory itself (an empty word would not survive a copied command line).
pub fn display_path(path: &std::path::Path) -> String {
    if let Ok(cwd) = std::env::current_dir() {
        if let Ok(rel) = path.strip_prefix(&cwd) {
            let rel = rel.display().to_string();
            return if rel.is_empty() { ".".into() } else { rel };
        }
    }
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let f = SourceFile::new("x.toml", "a = 1\nbb = 2\n");
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(6), (2, 1));
        assert_eq!(f.line_col(9), (2, 4));
    }

    #[test]
    fn unknown_field_suggests_the_closest_key() {
        let help = unknown_field_help(
            "unknown field `comand`, expected one of `build`, `command`, `workdir`",
        );
        assert_eq!(help.as_deref(), Some("did you mean `command`?"));
        let help = unknown_field_help("unknown field `zzz`, expected `build` or `command`");
        assert_eq!(
            help.as_deref(),
            Some("the keys allowed here are: `build`, `command`")
        );
    }
}
