//! What makes a graded result reusable: the submission's content, the grader's version, the
//! exercises' files, the runtime and the seed. A re-run skips a submission whose key is unchanged.

use std::path::Path;

use sha2::{Digest, Sha256};

/// Folders never hashed: the grader's own output, and git's object store (a clone's history
/// says nothing about what is graded; the files checked out do).
const SKIPPED: [&str; 2] = [".grader", ".git"];

/// SHA-256 of every file under `root` (paths sorted, each with its kind, executable bit and
/// content; a symbolic link by its target, never followed).
pub fn content_hash(root: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut files = Vec::new();
    collect(root, Path::new(""), &mut files)?;
    files.sort();
    for rel in files {
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path)?;
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        if meta.file_type().is_symlink() {
            hasher.update(b"link\0");
            hasher.update(std::fs::read_link(&path)?.to_string_lossy().as_bytes());
        } else {
            use std::os::unix::fs::PermissionsExt;
            let executable = meta.permissions().mode() & 0o111 != 0;
            hasher.update(if executable { b"exec\0" } else { b"file\0" });
            hasher.update(meta.len().to_le_bytes());
            let mut file = std::fs::File::open(&path)?;
            std::io::copy(&mut file, &mut hasher)?;
        }
        hasher.update([0]);
    }
    Ok(hex(&hasher.finalize()))
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let name = entry.file_name();
        let rel_path = rel.join(&name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if rel.as_os_str().is_empty() && SKIPPED.iter().any(|s| name == *s) {
                continue;
            }
            collect(root, &rel_path, out)?;
        } else if kind.is_file() || kind.is_symlink() {
            out.push(rel_path);
        }
        // Sockets and FIFOs are not content.
    }
    Ok(())
}

/// The key of one submission's result.
pub fn result_key(content: &str, exercises_fingerprint: &str, runtime: &str, seed: u64) -> String {
    let mut hasher = Sha256::new();
    for part in [
        "grader-batch-key v1",
        env!("CARGO_PKG_VERSION"),
        exercises_fingerprint,
        runtime,
        &seed.to_string(),
        content,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex(&hasher.finalize())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Each submission's seed, from the batch's and the student's id (FNV-1a, stable across
/// platforms), so a re-grade of one student reproduces their run.
pub fn submission_seed(batch_seed: u64, student: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in student.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    // Small enough to type back after --seed, like a fresh run's.
    (batch_seed ^ h) % 1_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_content_names_and_modes_but_not_grader_output() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/main.py"), "print(1)\n").unwrap();
        let first = content_hash(root).unwrap();
        std::fs::create_dir_all(root.join(".grader/last-run")).unwrap();
        std::fs::write(root.join(".grader/last-run/report.json"), "{}").unwrap();
        assert_eq!(content_hash(root).unwrap(), first, ".grader is not content");
        std::fs::write(root.join("src/main.py"), "print(2)\n").unwrap();
        let edited = content_hash(root).unwrap();
        assert_ne!(edited, first);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("src/main.py"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_ne!(
            content_hash(root).unwrap(),
            edited,
            "the executable bit counts"
        );
        std::fs::rename(root.join("src/main.py"), root.join("src/app.py")).unwrap();
        assert_ne!(content_hash(root).unwrap(), edited, "a rename counts");
    }

    #[test]
    fn seeds_differ_per_student_and_replay() {
        assert_eq!(submission_seed(7, "ada"), submission_seed(7, "ada"));
        assert_ne!(submission_seed(7, "ada"), submission_seed(7, "bo"));
        assert_ne!(submission_seed(7, "ada"), submission_seed(8, "ada"));
    }

    #[test]
    fn the_key_changes_with_every_input() {
        let base = result_key("c", "x", "docker", 1);
        assert_ne!(base, result_key("d", "x", "docker", 1));
        assert_ne!(base, result_key("c", "y", "docker", 1));
        assert_ne!(base, result_key("c", "x", "local", 1));
        assert_ne!(base, result_key("c", "x", "docker", 2));
    }
}
