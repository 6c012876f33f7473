//! What a stored secret looks like: the forms as good as plain text (the secret itself, its
//! bytes as `bytea` hex, its unsalted MD5, SHA-1 and SHA-256 in hex and base64), and whether a
//! stored string is a password hash with enough cost.
//!
//! Minimum costs are the OWASP Password Storage Cheat Sheet's ("Argon2id", "scrypt", "bcrypt"):
//! each row of its tables is a configuration of equal strength, so a hash passes when it reaches
//! every figure of some row. Defaults (changeable in the params):
//! - argon2id: m = 47104 KiB with t = 1, or m = 19456 KiB with t = 2 (p ≥ 1);
//! - scrypt: N = 2^17 with r = 8, p = 1; 2^16 with p = 2; 2^15 with p = 3; 2^14 with p = 5;
//!   2^13 with p = 10 (r ≥ 8 in all);
//! - bcrypt: cost ≥ 10.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use md5::Digest as _;

/// An argon2 configuration from OWASP's table: memory in KiB and iterations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Argon2Min {
    pub memory_kib: u64,
    pub iterations: u64,
}

/// An scrypt configuration from OWASP's table: N = 2^ln, block size r, parallelism p.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScryptMin {
    pub ln: u32,
    pub r: u64,
    pub p: u64,
}

/// The costs a password hash must reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub argon2: Vec<Argon2Min>,
    pub scrypt: Vec<ScryptMin>,
    pub bcrypt_min_cost: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            argon2: vec![
                Argon2Min {
                    memory_kib: 47104,
                    iterations: 1,
                },
                Argon2Min {
                    memory_kib: 19456,
                    iterations: 2,
                },
            ],
            scrypt: [(17, 1), (16, 2), (15, 3), (14, 5), (13, 10)]
                .into_iter()
                .map(|(ln, p)| ScryptMin { ln, r: 8, p })
                .collect(),
            bcrypt_min_cost: 10,
        }
    }
}

impl Policy {
    fn argon2_words(&self) -> String {
        self.argon2
            .iter()
            .map(|a| format!("m ≥ {} KiB with t ≥ {}", a.memory_kib, a.iterations))
            .collect::<Vec<_>>()
            .join(", or ")
    }

    fn scrypt_words(&self) -> String {
        self.scrypt
            .iter()
            .map(|s| format!("N ≥ 2^{} with r ≥ {}, p ≥ {}", s.ln, s.r, s.p))
            .collect::<Vec<_>>()
            .join("; or ")
    }
}

/// What a stored string is, as a password hash.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A salted password hash with enough cost: `argon2id m=19456 t=2 p=1`.
    Accepted(String),
    /// Not good enough, and why (names what was found, never more than a short prefix).
    Rejected(String),
}

/// The first characters of a stored value, enough to recognise it and never a whole hash.
pub fn prefix(s: &str) -> String {
    let shown: String = s.chars().take(12).collect();
    if shown.len() < s.len() {
        format!("`{shown}…`")
    } else {
        format!("`{shown}`")
    }
}

/// Judges a string that may be a password hash. `None`: it does not look like one at all.
pub fn classify(s: &str, policy: &Policy) -> Option<Verdict> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('$') {
        let scheme = rest.split('$').next().unwrap_or("");
        return Some(match scheme {
            "argon2id" | "argon2i" => argon2(s, scheme, policy),
            "argon2d" => Verdict::Rejected(format!(
                "{}, an argon2d hash: argon2d is open to side-channel attacks, use argon2id",
                prefix(s)
            )),
            "2a" | "2b" | "2y" => bcrypt(s, policy),
            "scrypt" => scrypt(s, policy),
            _ => Verdict::Rejected(format!("{}, {}", prefix(s), modular_crypt_words(scheme))),
        });
    }
    let bare = s.strip_prefix("\\x").unwrap_or(s);
    if let Some(d) = digest_name(bare.len() / 2) {
        if !bare.is_empty()
            && bare.len().is_multiple_of(2)
            && bare.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Some(Verdict::Rejected(format!(
                "{}, a {}-hex-digit string, which looks like {d}: a fast digest, salted or not, is not a password hash",
                prefix(s),
                bare.len()
            )));
        }
    }
    if let Some(bytes) = base64_len(s) {
        if let Some(d) = digest_name(bytes) {
            return Some(Verdict::Rejected(format!(
                "{}, a base64 string of {bytes} bytes, which looks like {d}: a fast digest, salted or not, is not a password hash",
                prefix(s)
            )));
        }
    }
    None
}

/// Describes any stored value for a message, when nothing better is known.
pub fn describe(s: &str, policy: &Policy) -> String {
    match classify(s, policy) {
        Some(Verdict::Rejected(why)) => why,
        Some(Verdict::Accepted(what)) => format!("{}, {what}", prefix(s)),
        None => format!(
            "{}, {} characters that are not a password hash string (argon2id, scrypt or bcrypt, e.g. `$argon2id$v=19$m=19456,t=2,p=1$…`)",
            prefix(s),
            s.chars().count()
        ),
    }
}

fn digest_name(bytes: usize) -> Option<&'static str> {
    match bytes {
        16 => Some("an MD5 digest"),
        20 => Some("a SHA-1 digest"),
        32 => Some("a SHA-256 digest"),
        64 => Some("a SHA-512 digest"),
        _ => None,
    }
}

/// The decoded length of a base64 (or base64url) string, when it is one.
fn base64_len(s: &str) -> Option<usize> {
    if s.len() < 16 {
        return None;
    }
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
        .map(|b| b.len())
}

fn modular_crypt_words(scheme: &str) -> String {
    let what = match scheme {
        "1" => "an MD5-crypt hash ($1$)",
        "5" => "a SHA-256-crypt hash ($5$)",
        "6" => "a SHA-512-crypt hash ($6$)",
        "y" | "7" | "gy" => "a yescrypt or scrypt-crypt hash in its own format",
        s if s.starts_with("pbkdf2") => "a PBKDF2 hash",
        _ => "a modular-crypt string",
    };
    format!("{what}: store argon2id, scrypt (PHC `$scrypt$ln=…`) or bcrypt")
}

/// `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>` (the `v=` segment is optional).
fn argon2(s: &str, scheme: &str, policy: &Policy) -> Verdict {
    let parts: Vec<&str> = s.split('$').skip(2).collect();
    let parts: Vec<&str> = match parts.first() {
        Some(v) if v.starts_with("v=") => parts[1..].to_vec(),
        _ => parts,
    };
    let malformed = || {
        Verdict::Rejected(format!(
            "{}, which starts like {scheme} but is not a PHC string `${scheme}$v=19$m=…,t=…,p=…$<salt>$<hash>`",
            prefix(s)
        ))
    };
    let [params, salt, hash] = parts.as_slice() else {
        return malformed();
    };
    if salt.is_empty() || hash.is_empty() {
        return malformed();
    }
    let (Some(m), Some(t), Some(p)) = (
        phc_param(params, "m"),
        phc_param(params, "t"),
        phc_param(params, "p"),
    ) else {
        return malformed();
    };
    let what = format!("{scheme} m={m} t={t} p={p}");
    if policy
        .argon2
        .iter()
        .any(|min| m >= min.memory_kib && t >= min.iterations && p >= 1)
    {
        Verdict::Accepted(what)
    } else {
        Verdict::Rejected(format!(
            "{}, {scheme} with m={m} KiB, t={t}, p={p}: below OWASP's minimum ({})",
            prefix(s),
            policy.argon2_words()
        ))
    }
}

/// `$2b$12$` + 22 characters of salt + 31 of hash.
fn bcrypt(s: &str, policy: &Policy) -> Verdict {
    let parts: Vec<&str> = s.split('$').collect();
    let ok_shape = parts.len() == 4
        && parts[2].len() == 2
        && parts[3].len() == 53
        && parts[3]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    let cost = parts.get(2).and_then(|c| c.parse::<u32>().ok());
    match (ok_shape, cost) {
        (true, Some(cost)) if cost >= policy.bcrypt_min_cost => {
            Verdict::Accepted(format!("bcrypt ${}$ cost {cost}", parts[1]))
        }
        (true, Some(cost)) => Verdict::Rejected(format!(
            "{}, bcrypt with cost {cost}: below OWASP's minimum of {}",
            prefix(s),
            policy.bcrypt_min_cost
        )),
        _ => Verdict::Rejected(format!(
            "{}, which starts like bcrypt but is not a bcrypt string (`$2b$<cost>$` and 53 characters of salt and hash)",
            prefix(s)
        )),
    }
}

/// `$scrypt$ln=17,r=8,p=1$<salt>$<hash>`.
fn scrypt(s: &str, policy: &Policy) -> Verdict {
    let parts: Vec<&str> = s.split('$').skip(2).collect();
    let parsed = match parts.as_slice() {
        [params, salt, hash] if !salt.is_empty() && !hash.is_empty() => (
            phc_param(params, "ln"),
            phc_param(params, "r"),
            phc_param(params, "p"),
        ),
        _ => (None, None, None),
    };
    let (Some(ln), Some(r), Some(p)) = parsed else {
        return Verdict::Rejected(format!(
            "{}, which starts like scrypt but is not a PHC string `$scrypt$ln=…,r=…,p=…$<salt>$<hash>`",
            prefix(s)
        ));
    };
    if policy
        .scrypt
        .iter()
        .any(|min| ln >= u64::from(min.ln) && r >= min.r && p >= min.p)
    {
        Verdict::Accepted(format!("scrypt ln={ln} r={r} p={p}"))
    } else {
        Verdict::Rejected(format!(
            "{}, scrypt with N=2^{ln}, r={r}, p={p}: below OWASP's minimum ({})",
            prefix(s),
            policy.scrypt_words()
        ))
    }
}

/// `name=value` in a PHC parameter list (`m=19456,t=2,p=1`).
fn phc_param(params: &str, name: &str) -> Option<u64> {
    params.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.parse().ok()).flatten()
    })
}

/// A form of a secret that is as good as storing it in plain text.
#[derive(Debug, Clone, PartialEq)]
pub struct Needle {
    /// `in plain text`, `as its unsalted SHA-256 (hex)`.
    pub what: &'static str,
    pub text: String,
    /// Hex is compared without regard to case.
    pub any_case: bool,
}

/// The forms of `secret` a stored value must not contain.
pub fn needles(secret: &str) -> Vec<Needle> {
    let bytes = secret.as_bytes();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let md5 = md5::Md5::digest(bytes).to_vec();
    let sha1 = <sha1::Sha1 as sha1::Digest>::digest(bytes).to_vec();
    let sha256 = <sha2::Sha256 as sha2::Digest>::digest(bytes).to_vec();
    let mut out = vec![
        Needle {
            what: "in plain text",
            text: secret.to_string(),
            any_case: false,
        },
        Needle {
            what: "in plain text (as bytes)",
            text: hex(bytes),
            any_case: true,
        },
    ];
    for (name, digest) in [("MD5", md5), ("SHA-1", sha1), ("SHA-256", sha256)] {
        let (hex_what, b64_what) = match name {
            "MD5" => ("as its unsalted MD5 (hex)", "as its unsalted MD5 (base64)"),
            "SHA-1" => (
                "as its unsalted SHA-1 (hex)",
                "as its unsalted SHA-1 (base64)",
            ),
            _ => (
                "as its unsalted SHA-256 (hex)",
                "as its unsalted SHA-256 (base64)",
            ),
        };
        out.push(Needle {
            what: hex_what,
            text: hex(&digest),
            any_case: true,
        });
        // Unpadded forms are prefixes of the padded ones, so they find both.
        for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
            let text = engine.encode(&digest);
            if !out.iter().any(|n| n.text == text) {
                out.push(Needle {
                    what: b64_what,
                    text,
                    any_case: false,
                });
            }
        }
    }
    out
}

/// The first needle found in `value`.
pub fn find<'a>(value: &str, needles: &'a [Needle]) -> Option<&'a Needle> {
    let lower = value.to_ascii_lowercase();
    needles.iter().find(|n| {
        if n.any_case {
            lower.contains(&n.text)
        } else {
            value.contains(&n.text)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(s: &str) -> Verdict {
        classify(s, &Policy::default()).expect(s)
    }

    fn rejected(s: &str) -> String {
        match verdict(s) {
            Verdict::Rejected(why) => why,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn owasp_strength_hashes_pass() {
        let salt_hash = "c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        for ok in [
            format!("$argon2id$v=19$m=19456,t=2,p=1${salt_hash}"),
            format!("$argon2id$v=19$m=47104,t=1,p=1${salt_hash}"),
            format!("$argon2i$m=65536,t=3,p=4${salt_hash}"),
            format!("$scrypt$ln=17,r=8,p=1${salt_hash}"),
            format!("$scrypt$ln=15,r=8,p=3${salt_hash}"),
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".to_string(),
            "$2y$10$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".to_string(),
        ] {
            assert!(matches!(verdict(&ok), Verdict::Accepted(_)), "{ok}");
        }
        assert_eq!(
            verdict(&format!("$argon2id$v=19$m=19456,t=2,p=1${salt_hash}")),
            Verdict::Accepted("argon2id m=19456 t=2 p=1".into())
        );
    }

    #[test]
    fn weak_costs_are_named_with_the_minimum() {
        let why = rejected("$argon2id$v=19$m=4096,t=3,p=1$c2FsdA$aGFzaA");
        assert!(
            why.starts_with("`$argon2id$v=…`, argon2id with m=4096 KiB, t=3, p=1: below OWASP's minimum (m ≥ 47104 KiB with t ≥ 1, or m ≥ 19456 KiB with t ≥ 2)"),
            "{why}"
        );
        assert!(rejected("$argon2id$v=19$m=19456,t=1,p=1$c2FsdA$aGFzaA").contains("t=1"));
        assert!(
            rejected("$2b$08$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW")
                .contains("bcrypt with cost 8: below OWASP's minimum of 10")
        );
        assert!(rejected("$scrypt$ln=15,r=8,p=1$c2FsdA$aGFzaA").contains("N=2^15, r=8, p=1"));
        assert!(rejected("$scrypt$ln=17,r=4,p=1$c2FsdA$aGFzaA").contains("below OWASP"));
    }

    #[test]
    fn other_forms_are_named_never_shown_whole() {
        let sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";
        let why = rejected(sha256);
        assert_eq!(
            why,
            "`5e884898da28…`, a 64-hex-digit string, which looks like a SHA-256 digest: a fast digest, salted or not, is not a password hash"
        );
        assert!(!why.contains(sha256));
        assert!(rejected("\\x5f4dcc3b5aa765d61d8327deb882cf99").contains("an MD5 digest"));
        assert!(rejected("XohImNooBHFR0OVvjcYpJ3NgPQ1qq73WKhHvch0VQtg=")
            .contains("base64 string of 32 bytes"));
        assert!(rejected("$argon2d$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA").contains("argon2d"));
        assert!(rejected("$6$rounds=5000$salt$hash").contains("SHA-512-crypt"));
        assert!(rejected("$pbkdf2-sha256$29000$c2FsdA$aGFzaA").contains("PBKDF2"));
        assert!(rejected("$argon2id$m=19456,t=2,p=1").contains("not a PHC string"));
        assert!(rejected("$2b$12$short").contains("not a bcrypt string"));
        assert_eq!(classify("alice", &Policy::default()), None);
        assert_eq!(classify("2024-01-01T00:00:00Z", &Policy::default()), None);
        assert!(describe("hunter2hunter2", &Policy::default())
            .starts_with("`hunter2hunte…`, 14 characters that are not a password hash"));
    }

    #[test]
    fn unsalted_digests_and_bytes_of_the_secret_are_found() {
        let n = needles("password");
        let found = |v: &str| find(v, &n).map(|n| n.what);
        assert_eq!(found("password"), Some("in plain text"));
        assert_eq!(
            found("\\x70617373776f7264"),
            Some("in plain text (as bytes)")
        );
        assert_eq!(
            found("5F4DCC3B5AA765D61D8327DEB882CF99"),
            Some("as its unsalted MD5 (hex)")
        );
        assert_eq!(
            found("5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8"),
            Some("as its unsalted SHA-1 (hex)")
        );
        assert_eq!(
            found("sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"),
            Some("as its unsalted SHA-256 (hex)")
        );
        assert_eq!(
            found("XohImNooBHFR0OVvjcYpJ3NgPQ1qq73WKhHvch0VQtg="),
            Some("as its unsalted SHA-256 (base64)")
        );
        assert_eq!(
            found("$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG"),
            None
        );
    }
}
