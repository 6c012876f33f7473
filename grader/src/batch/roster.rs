//! A class's submissions: a folder of submission folders, or a CSV roster
//! (`student,path_or_git_url,ref`). Parsed before anything runs; a bad roster is a located error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::diagnostic::{display_path, Diagnostic, Diagnostics, SourceFile};

/// One student's submission, as the roster names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The student's id: a file name in the output folder, so letters, digits, `.`, `_`, `-`.
    pub student: String,
    pub source: SubmissionSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmissionSource {
    /// A folder on this machine, graded in place.
    Folder(PathBuf),
    /// A git repository (a URL or a local path) at a ref, cloned into a temporary folder.
    Git {
        url: String,
        git_ref: Option<String>,
    },
}

impl SubmissionSource {
    /// How the roster named it, for reports.
    pub fn describe(&self) -> String {
        match self {
            SubmissionSource::Folder(p) => display_path(p),
            SubmissionSource::Git { url, git_ref } => match git_ref {
                Some(r) => format!("{url}@{r}"),
                None => url.clone(),
            },
        }
    }
}

/// Every submission, sorted by student id (the order shards are cut from).
#[derive(Debug, Clone)]
pub struct Roster {
    pub submissions: Vec<Submission>,
    /// What was read: the folder or the CSV file.
    pub origin: PathBuf,
}

/// The header a CSV roster must start with.
pub const CSV_HEADER: [&str; 3] = ["student", "path_or_git_url", "ref"];

/// A student id is a folder name in the output: no path separators, no hidden names, nothing a
/// shell or a spreadsheet would mangle.
pub fn valid_student_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Roster {
    /// A folder of submission folders (each subfolder a student; hidden ones skipped), or a CSV
    /// roster file.
    pub fn load(path: &Path) -> Result<Roster, Diagnostics> {
        let usage = |message: String| {
            let file = SourceFile::new(display_path(path), "");
            Diagnostics::from(Diagnostic::new(&file, 0..0, message))
        };
        let meta = std::fs::metadata(path)
            .map_err(|e| usage(format!("cannot read the submissions: {e}")))?;
        if meta.is_dir() {
            let roster = Self::from_folder(path)
                .map_err(|e| usage(format!("cannot list the submissions: {e}")))?;
            // A folder's name is the student id, a folder name in the output and a word in
            // every report: the same rule as a CSV roster's ids.
            let bad: Vec<String> = roster
                .submissions
                .iter()
                .filter(|s| !valid_student_id(&s.student))
                .map(|s| format!("{:?}", s.student))
                .collect();
            if !bad.is_empty() {
                let file = SourceFile::new(display_path(path), "");
                return Err(Diagnostics::from(
                    Diagnostic::new(
                        &file,
                        0..0,
                        format!("folder names not usable as student ids: {}", bad.join(", ")),
                    )
                    .with_help(
                        "rename them with letters, digits, `.`, `_` and `-` (at most 100), or list \
                         the submissions in a CSV roster",
                    ),
                ));
            }
            Ok(roster)
        } else {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("cannot read the roster: {e}")))?;
            Self::from_csv(path, &text)
        }
    }

    fn from_folder(dir: &Path) -> std::io::Result<Roster> {
        let mut submissions = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // A folder only (a link could point anywhere on the machine), never a hidden one.
            if name.starts_with('.') || !entry.file_type()?.is_dir() {
                continue;
            }
            submissions.push(Submission {
                student: name,
                source: SubmissionSource::Folder(entry.path()),
            });
        }
        submissions.sort_by(|a, b| a.student.cmp(&b.student));
        Ok(Roster {
            submissions,
            origin: dir.to_path_buf(),
        })
    }

    /// Parses a CSV roster; relative paths are resolved against the roster's folder. Every bad
    /// row is reported with its line, not just the first.
    pub fn from_csv(path: &Path, text: &str) -> Result<Roster, Diagnostics> {
        let file = SourceFile::new(display_path(path), text.to_string());
        let base = path.parent().unwrap_or(Path::new("."));
        let mut problems = Diagnostics::default();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut submissions = Vec::new();
        let line_span = |offset: usize| {
            let end = text[offset..].find('\n').map_or(text.len(), |n| offset + n);
            offset..end
        };
        for (index, record) in reader.records().enumerate() {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    let offset = e.position().map_or(0, |p| p.byte() as usize);
                    problems.push(
                        Diagnostic::new(&file, line_span(offset), format!("unreadable row: {e}"))
                            .with_help("quote a field that holds a comma or a quote: \"a,b\""),
                    );
                    break;
                }
            };
            let offset = record.position().map_or(0, |p| p.byte() as usize);
            let span = line_span(offset);
            let fields: Vec<&str> = record.iter().collect();
            if index == 0 {
                if fields != CSV_HEADER {
                    problems.push(
                        Diagnostic::new(&file, span, "the first row must be the header").with_help(
                            format!("write `{}` as the first line", CSV_HEADER.join(",")),
                        ),
                    );
                }
                continue;
            }
            if fields.iter().all(|f| f.is_empty()) {
                continue;
            }
            if fields.len() < 2 || fields.len() > 3 {
                problems.push(
                    Diagnostic::new(
                        &file,
                        span,
                        format!("{} fields; a row has 2 or 3", fields.len()),
                    )
                    .with_help("student,path_or_git_url,ref (ref may be empty)"),
                );
                continue;
            }
            let (student, location) = (fields[0], fields[1]);
            let git_ref = fields
                .get(2)
                .filter(|r| !r.is_empty())
                .map(|r| r.to_string());
            if !valid_student_id(student) {
                problems.push(
                    Diagnostic::new(&file, span, format!("student id {student:?} is not usable as a folder name"))
                        .with_help("use letters, digits, `.`, `_` and `-` (not starting with `.`), at most 100"),
                );
                continue;
            }
            if let Some(first) = seen.insert(student.to_string(), index + 1) {
                problems.push(
                    Diagnostic::new(&file, span, format!("student {student} is listed twice"))
                        .with_help(format!(
                            "the first is on line {first}; keep one row per student"
                        )),
                );
                continue;
            }
            if location.is_empty() {
                problems.push(
                    Diagnostic::new(&file, span, format!("no submission for {student}"))
                        .with_help("the second field is a folder, or a git URL or repository path"),
                );
                continue;
            }
            let source = if is_git_url(location) || git_ref.is_some() {
                SubmissionSource::Git {
                    url: resolve_local(base, location),
                    git_ref,
                }
            } else {
                SubmissionSource::Folder(base.join(location))
            };
            submissions.push(Submission {
                student: student.to_string(),
                source,
            });
        }
        if text.trim().is_empty() {
            problems.push(
                Diagnostic::new(&file, 0..0, "the roster is empty").with_help(format!(
                    "write `{}`, then one row per student",
                    CSV_HEADER.join(",")
                )),
            );
        }
        submissions.sort_by(|a, b| a.student.cmp(&b.student));
        problems.into_result(Roster {
            submissions,
            origin: path.to_path_buf(),
        })
    }

    /// The submissions of shard `index` of `count`: positions `p` (in student order) with
    /// `p % count == index`. Shards are disjoint and together cover the roster.
    pub fn shard(&self, shard: Shard) -> Vec<Submission> {
        self.submissions
            .iter()
            .enumerate()
            .filter(|(p, _)| p % shard.count == shard.index)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

/// `--shard I/N`: slice I (from 0) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("--shard {s}: write I/N with 0 <= I < N, e.g. 0/4 (I counts from 0)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

fn is_git_url(location: &str) -> bool {
    location.contains("://")
        || location.starts_with("git@")
        || location.ends_with(".git")
        || location.starts_with("file:")
}

/// A relative repository path is relative to the roster, like a folder.
fn resolve_local(base: &Path, location: &str) -> String {
    if location.contains("://") || location.starts_with("git@") || location.starts_with("file:") {
        location.to_string()
    } else {
        display_path(&base.join(location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Roster, String> {
        Roster::from_csv(Path::new("/class/roster.csv"), text).map_err(|d| d.render(false))
    }

    #[test]
    fn csv_rows_become_sorted_submissions_relative_to_the_roster() {
        let roster = parse(
            "student,path_or_git_url,ref\nzoe,subs/zoe,\nada,repos/ada.git,main\n\"bo\",\"subs/b,o\",\n",
        )
        .unwrap();
        let students: Vec<&str> = roster
            .submissions
            .iter()
            .map(|s| s.student.as_str())
            .collect();
        assert_eq!(students, ["ada", "bo", "zoe"]);
        assert_eq!(
            roster.submissions[0].source,
            SubmissionSource::Git {
                url: "/class/repos/ada.git".into(),
                git_ref: Some("main".into())
            }
        );
        assert_eq!(
            roster.submissions[1].source,
            SubmissionSource::Folder("/class/subs/b,o".into())
        );
    }

    #[test]
    fn every_bad_row_is_located() {
        let err =
            parse("student,path_or_git_url,ref\nada,a,\n../evil,x,\nada,b,\nbo,,\ncy,a,b,c\n")
                .unwrap_err();
        for expected in [
            "roster.csv:3:1",
            "not usable as a folder name",
            "roster.csv:4:1",
            "listed twice",
            "the first is on line 2",
            "roster.csv:5:1",
            "no submission for bo",
            "roster.csv:6:1",
            "4 fields",
        ] {
            assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
        }
    }

    #[test]
    fn a_missing_header_or_an_empty_roster_says_what_to_write() {
        assert!(parse("ada,a,\n")
            .unwrap_err()
            .contains("write `student,path_or_git_url,ref` as the first line"));
        assert!(parse("").unwrap_err().contains("the roster is empty"));
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_roster() {
        let mut text = String::from("student,path_or_git_url,ref\n");
        for i in 0..13 {
            text.push_str(&format!("s{i:02},d{i},\n"));
        }
        let roster = parse(&text).unwrap();
        for count in 1..=5 {
            let mut all: Vec<String> = Vec::new();
            for index in 0..count {
                let shard = roster.shard(Shard { index, count });
                assert!(shard.len().abs_diff(13 / count) <= 1);
                all.extend(shard.into_iter().map(|s| s.student));
            }
            all.sort();
            let expected: Vec<String> = roster
                .submissions
                .iter()
                .map(|s| s.student.clone())
                .collect();
            assert_eq!(all, expected, "{count} shards");
        }
    }

    #[test]
    fn a_folder_of_submissions_skips_hidden_ones_and_refuses_unusable_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["bo", "ada", ".git"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        let roster = Roster::load(dir.path()).unwrap();
        let students: Vec<&str> = roster
            .submissions
            .iter()
            .map(|s| s.student.as_str())
            .collect();
        assert_eq!(students, ["ada", "bo"]);
        std::fs::create_dir(dir.path().join("cy \u{1b}[31m")).unwrap();
        let err = Roster::load(dir.path()).unwrap_err().render(false);
        assert!(
            err.contains("folder names not usable as student ids"),
            "{err}"
        );
    }

    #[test]
    fn shard_flags_count_from_zero() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { index: 1, count: 3 }));
        for bad in ["3/3", "1/0", "a/2", "2", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
