//! What the `paginate` probe does to a cursor: checks that it is URL-safe, and makes tampered
//! copies of it (truncated, forged) that a service must refuse.
//!
//! Forging: a cursor that is only encoded (base64url or hex of JSON, the common unsigned
//! design) can be decoded, changed and re-encoded by any client. The probe tries the usual
//! encodings on the whole cursor and on each `.`-separated segment (JWT-like `payload.signature`
//! forms); where one decodes to a JSON object or array (possibly followed by other bytes, such as
//! a raw checksum), it changes one value (the first number, else the last string) and re-encodes
//! it the same way, keeping everything else byte for byte. A signed cursor then fails its
//! signature check; an unsigned one is accepted, which is the bug. A cursor the probe cannot
//! decode (encrypted, or a random token kept on the server) is not forged: nothing to judge.

use serde_json::Value;

/// RFC 3986 unreserved characters: the only ones a cursor may hold to travel in a URL unchanged.
pub fn is_url_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// The first character of `cursor` that is not URL-safe, if any.
pub fn first_unsafe(cursor: &str) -> Option<char> {
    cursor.chars().find(|c| !is_url_safe(*c))
}

/// A tampered copy of a cursor and how it was made, for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Tampered {
    pub cursor: String,
    pub how: String,
}

/// The tampered forms of `cursor`: one character off the end, cut in half, and forged (when the
/// probe can decode it).
pub fn tampered(cursor: &str) -> Vec<Tampered> {
    let chars: Vec<char> = cursor.chars().collect();
    let mut out = Vec::new();
    if chars.len() >= 2 {
        out.push(Tampered {
            cursor: chars[..chars.len() - 1].iter().collect(),
            how: "the cursor without its last character (truncated)".into(),
        });
    }
    if chars.len() >= 4 {
        out.push(Tampered {
            cursor: chars[..chars.len() / 2].iter().collect(),
            how: "the first half of the cursor (truncated)".into(),
        });
    }
    if let Some(f) = forge(cursor) {
        out.push(f);
    }
    out
}

/// How a piece of a cursor was encoded, so a changed payload can be encoded the same way.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    /// The text itself (`{"k":1}…`).
    Raw,
    Hex {
        upper: bool,
    },
    Base64 {
        url: bool,
        padded: bool,
    },
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Raw => "as it was (plain JSON)",
            Encoding::Hex { .. } => "as hex",
            Encoding::Base64 { url: true, .. } => "as base64url",
            Encoding::Base64 { url: false, .. } => "as base64",
        }
    }

    fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Encoding::Raw => Some(text.as_bytes().to_vec()),
            Encoding::Hex { .. } => unhex(text),
            Encoding::Base64 { url, .. } => base64_decode(text, url),
        }
    }

    fn encode(self, bytes: &[u8]) -> Option<String> {
        match self {
            Encoding::Raw => String::from_utf8(bytes.to_vec()).ok(),
            Encoding::Hex { upper } => Some(
                bytes
                    .iter()
                    .map(|b| {
                        if upper {
                            format!("{b:02X}")
                        } else {
                            format!("{b:02x}")
                        }
                    })
                    .collect(),
            ),
            Encoding::Base64 { url, padded } => Some(base64_encode(bytes, url, padded)),
        }
    }

    /// The encodings `text` could be in, most specific first.
    fn candidates(text: &str) -> Vec<Encoding> {
        let mut out = vec![Encoding::Raw];
        if !text.is_empty()
            && text.len().is_multiple_of(2)
            && text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            out.push(Encoding::Hex {
                upper: text.bytes().any(|b| b.is_ascii_uppercase()),
            });
        }
        let padded = text.ends_with('=');
        let url = text.contains('-') || text.contains('_');
        let standard = text.contains('+') || text.contains('/');
        if !standard {
            out.push(Encoding::Base64 { url: true, padded });
        }
        if !url {
            out.push(Encoding::Base64 { url: false, padded });
        }
        out
    }
}

/// The cursor with one value inside it changed, re-encoded as it was; `None` when no part of it
/// decodes to JSON the probe can change.
pub fn forge(cursor: &str) -> Option<Tampered> {
    // The whole cursor first, then each `.`-separated segment (payload.signature).
    let segments: Vec<&str> = cursor.split('.').collect();
    let mut tries: Vec<(Option<usize>, &str)> = vec![(None, cursor)];
    if segments.len() > 1 {
        tries.extend(segments.iter().enumerate().map(|(i, s)| (Some(i), *s)));
    }
    for (segment, text) in tries {
        for encoding in Encoding::candidates(text) {
            let Some(bytes) = encoding.decode(text) else {
                continue;
            };
            let Some((changed, what)) = change_json_prefix(&bytes) else {
                continue;
            };
            let Some(encoded) = encoding.encode(&changed) else {
                continue;
            };
            let (forged, place) = match segment {
                None => (encoded, String::new()),
                Some(i) => {
                    let mut parts: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
                    parts[i] = encoded;
                    (
                        parts.join("."),
                        format!(" in segment {} of the cursor", i + 1),
                    )
                }
            };
            if forged == cursor {
                continue;
            }
            return Some(Tampered {
                cursor: forged,
                how: format!(
                    "a forged cursor: the JSON{place} with {what}, encoded {} again",
                    encoding.name()
                ),
            });
        }
    }
    None
}

/// When `bytes` start with a JSON object or array, that document with one value changed (the
/// rest of the bytes kept), and what was changed.
fn change_json_prefix(bytes: &[u8]) -> Option<(Vec<u8>, String)> {
    if !matches!(bytes.first(), Some(b'{') | Some(b'[')) {
        return None;
    }
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    let mut doc = stream.next()?.ok()?;
    let end = stream.byte_offset();
    let what = change_number(&mut doc, "$").or_else(|| change_last_string(&mut doc, "$"))?;
    let mut out = serde_json::to_vec(&doc).ok()?;
    out.extend_from_slice(&bytes[end..]);
    Some((out, what))
}

/// Adds one to the first number (depth first); returns what it did.
fn change_number(v: &mut Value, at: &str) -> Option<String> {
    match v {
        Value::Number(n) => {
            let (before, after) = if let Some(i) = n.as_i64() {
                (
                    i.to_string(),
                    Value::from(i.checked_add(1).unwrap_or(i - 1)),
                )
            } else if let Some(u) = n.as_u64() {
                (u.to_string(), Value::from(u - 1))
            } else {
                let f = n.as_f64()?;
                (f.to_string(), Value::from(f + 1.0))
            };
            let text = format!("{at} changed from {before} to {after}");
            *v = after;
            Some(text)
        }
        Value::Object(map) => map
            .iter_mut()
            .find_map(|(k, v)| change_number(v, &format!("{at}.{k}"))),
        Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .find_map(|(i, v)| change_number(v, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// Changes the last character of the last non-empty string (within its own alphabet).
fn change_last_string(v: &mut Value, at: &str) -> Option<String> {
    match v {
        Value::String(s) => {
            let last = s.chars().last()?;
            let next = match last {
                '0'..='8' | 'a'..='e' | 'A'..='E' => char::from(last as u8 + 1),
                '9' => 'a',
                'f' => '0',
                'F' => '0',
                'g'..='y' | 'G'..='Y' => char::from(last as u8 + 1),
                'z' => 'a',
                'Z' => 'A',
                _ => return None,
            };
            let before = s.clone();
            s.pop();
            s.push(next);
            Some(format!("{at} changed from \"{before}\" to \"{s}\""))
        }
        Value::Object(map) => map
            .iter_mut()
            .rev()
            .find_map(|(k, v)| change_last_string(v, &format!("{at}.{k}"))),
        Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .rev()
            .find_map(|(i, v)| change_last_string(v, &format!("{at}[{i}]"))),
        _ => None,
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64_encode(bytes: &[u8], url: bool, padded: bool) -> String {
    let alphabet = if url { URL_SAFE } else { STANDARD };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
        if padded {
            for _ in chunk.len()..3 {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base64 (standard or URL alphabet), with or without padding; `None` if it is not.
fn base64_decode(text: &str, url: bool) -> Option<Vec<u8>> {
    let alphabet = if url { URL_SAFE } else { STANDARD };
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 || body.len() % 4 == 1 || body.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in body.bytes() {
        let value = alphabet.iter().position(|a| *a == b)? as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_safe_is_rfc_3986_unreserved() {
        assert_eq!(first_unsafe("aZ09-._~"), None);
        assert_eq!(first_unsafe("eyJrIjoxfQ=="), Some('='));
        assert_eq!(first_unsafe("a+b"), Some('+'));
        assert_eq!(first_unsafe("{\"k\":1}"), Some('{'));
    }

    #[test]
    fn base64_round_trips_in_both_alphabets() {
        for text in [
            "",
            "f",
            "fo",
            "foo",
            "foob",
            "fooba",
            "foobar",
            "\u{fb}\u{ff}",
        ] {
            for url in [true, false] {
                for padded in [true, false] {
                    let e = base64_encode(text.as_bytes(), url, padded);
                    if !text.is_empty() {
                        assert_eq!(base64_decode(&e, url).unwrap(), text.as_bytes(), "{e}");
                    }
                }
            }
        }
        assert_eq!(base64_encode(b"foob", false, true), "Zm9vYg==");
        assert_eq!(base64_encode(b"\xfb\xff", true, false), "-_8");
        assert_eq!(base64_decode("a", true), None);
        assert_eq!(base64_decode("a*b=", true), None);
    }

    #[test]
    fn forges_an_unsigned_base64url_cursor() {
        let cursor = base64_encode(br#"{"id":"7f3a","price":120}"#, true, false);
        let f = forge(&cursor).unwrap();
        let decoded = base64_decode(&f.cursor, true).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&decoded).unwrap(),
            serde_json::json!({"id": "7f3a", "price": 121})
        );
        assert!(
            f.how.contains("$.price changed from 120 to 121"),
            "{}",
            f.how
        );
        assert!(f.how.contains("base64url"), "{}", f.how);
    }

    #[test]
    fn forges_hex_json_followed_by_a_checksum_keeping_the_checksum() {
        let payload = br#"{"i":"00000000-0000-0000-0000-000000000000","k":120}"#;
        let cursor = format!(
            "{}0123456789abcdef",
            payload
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let f = forge(&cursor).unwrap();
        assert!(f.cursor.ends_with("0123456789abcdef"));
        assert_ne!(f.cursor, cursor);
        let bytes = unhex(&f.cursor).unwrap();
        let doc: Value = serde_json::Deserializer::from_slice(&bytes)
            .into_iter()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(doc["k"], 121);
        assert!(f.how.contains("hex"));
    }

    #[test]
    fn forges_the_payload_segment_of_a_signed_token_and_plain_json() {
        let payload = base64_encode(br#"{"after":"abc"}"#, true, false);
        let cursor = format!("{payload}.c2lnbmF0dXJl");
        let f = forge(&cursor).unwrap();
        assert!(f.cursor.ends_with(".c2lnbmF0dXJl"));
        assert!(f.how.contains("segment 1"), "{}", f.how);
        assert!(f.how.contains("\"abc\" to \"abd\""), "{}", f.how);

        let raw = forge(r#"{"k":5}deadbeef"#).unwrap();
        assert_eq!(raw.cursor, r#"{"k":6}deadbeef"#);
    }

    #[test]
    fn an_opaque_token_is_not_forged_but_still_truncated() {
        assert_eq!(forge("q8ZtR2pLx0"), None);
        let t = tampered("q8ZtR2pLx0");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].cursor, "q8ZtR2pLx");
        assert_eq!(t[1].cursor, "q8ZtR");
    }
}
