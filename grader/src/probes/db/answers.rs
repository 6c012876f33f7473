//! Answers checked against the grader's own data: the grader loaded every row, so a sample query
//! computes what a response must hold (the right orders in the right order, the report's count
//! and sum, the customer a case-insensitive email names), and this compares, element by element
//! and field by field.
//!
//! Values compare by meaning, not by spelling, where the README leaves the spelling open:
//! - a timestamp (the expected value is RFC 3339) must be an RFC 3339 string for the same instant
//!   (`2025-06-01T00:00:00Z`, `2025-06-01T02:00:00.000+02:00`); anything else fails, which grades
//!   "timestamps are RFC 3339";
//! - an integer may come as a JSON number or as a string of the same integer (the README gives no
//!   JSON types, and some drivers turn `bigint` and `sum()` into strings);
//! - everything else must be equal JSON.

use serde_json::Value;

use crate::engine::assert::describe_json;
use crate::probes::db_params::Answer;
use crate::spec::template::{self, Scope};

/// One difference between a response and the grader's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Wrong {
    pub message: String,
    pub expected: String,
    pub actual: String,
}

/// Compares the elements `answer.items` selects in `doc` with the sampled array. `Err` is the
/// exercise's fault (the sample is not an array).
pub fn compare(answer: &Answer, doc: &Value, scope: &Scope) -> Result<Option<Wrong>, String> {
    let what = template::render(&answer.what, scope)?;
    let expected = match scope.get(&answer.equals) {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Null) => Vec::new(),
        other => {
            return Err(format!(
            "sample `{}` must give a JSON array (json_agg(...)) to compare answers with, got {}",
            answer.equals,
            other.map_or("nothing".into(), describe_json)
        ))
        }
    };
    let actual: Vec<&Value> = answer.items.path.query(doc).all();
    let id = |v: &Value| {
        answer
            .fields
            .first()
            .and_then(|f| field(v, f))
            .map_or("?".into(), describe_json)
    };
    for (i, (want, got)) in expected.iter().zip(&actual).enumerate() {
        for f in &answer.fields {
            let w = field(want, f);
            let g = field(got, f);
            if let Some(reason) = differs(w, g) {
                return Ok(Some(Wrong {
                    message: format!(
                        "item {} at {}: {f} is {}, expected {}{reason} ({what})",
                        i + 1,
                        answer.items.text,
                        g.map_or("absent".into(), describe_json),
                        w.map_or("absent".into(), describe_json),
                    ),
                    expected: format!(
                        "{} item(s), in this order, as the grader's data set has them ({what}); item {}: {}",
                        expected.len(),
                        i + 1,
                        describe_json(want)
                    ),
                    actual: format!("item {}: {}", i + 1, describe_json(got)),
                }));
            }
        }
    }
    if expected.len() != actual.len() {
        let (which, value) = if actual.len() > expected.len() {
            ("extra", id(actual[expected.len()]))
        } else {
            ("missing", id(&expected[actual.len()]))
        };
        return Ok(Some(Wrong {
            message: format!(
                "{} item(s) at {}, expected {} ({what}); the first {which} one has {} {value}",
                actual.len(),
                answer.items.text,
                expected.len(),
                answer.fields.first().map_or("id", String::as_str),
            ),
            expected: format!("{} item(s) ({what})", expected.len()),
            actual: format!("{} item(s)", actual.len()),
        }));
    }
    Ok(None)
}

/// `customer.email` of an element.
fn field<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// `None` when `got` means `want`; otherwise why not (empty when the values say it).
fn differs(want: Option<&Value>, got: Option<&Value>) -> Option<String> {
    let (want, got) = match (want, got) {
        (None, None) => return None,
        (Some(w), Some(g)) => (w, g),
        _ => return Some(String::new()),
    };
    if let Some(w) = want.as_str().and_then(rfc3339) {
        return match got.as_str().map(|g| (g, rfc3339(g))) {
            Some((_, Some(g))) if g == w => None,
            Some((_, Some(_))) => Some(" (a different instant)".into()),
            _ => Some(" (not an RFC 3339 timestamp such as 2025-06-01T00:00:00Z)".into()),
        };
    }
    if let Some(w) = want.as_i64() {
        let g = got
            .as_i64()
            .or_else(|| got.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .or_else(|| got.as_str().and_then(|s| s.trim().parse().ok()));
        return (g != Some(w)).then(String::new);
    }
    if let (Some(w), Some(g)) = (want.as_f64(), got.as_f64()) {
        return ((w - g).abs() > 1e-9 * w.abs().max(1.0)).then(String::new);
    }
    (want != got).then(String::new)
}

/// Nanoseconds since the epoch of an RFC 3339 timestamp (`T` and an offset required, fractional
/// seconds allowed).
pub fn rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i128 = 0;
    if b.get(i) == Some(&b'.') {
        let digits = s[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let frac = &s[i + 1..i + 1 + digits];
        let padded: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = padded.parse().ok()?;
        i += 1 + digits;
    }
    let offset_secs: i64 = match &s[i..] {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil.
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Some(secs as i128 * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(items: &str, fields: &[&str]) -> Answer {
        Answer {
            at: 1,
            items: crate::probes::request::query(items).unwrap(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            equals: "expected".into(),
            what: "orders of {{c}}".into(),
        }
    }

    fn scope(expected: Value) -> Scope {
        let mut s = Scope::new();
        s.insert("expected".into(), expected);
        s.insert("c".into(), json!(7));
        s
    }

    #[test]
    fn timestamps_compare_as_instants() {
        let z = rfc3339("2025-06-01T00:00:00Z").unwrap();
        assert_eq!(rfc3339("2025-06-01T02:00:00.000000+02:00"), Some(z));
        assert_eq!(rfc3339("2025-05-31t19:30:00-04:30"), Some(z));
        assert_eq!(rfc3339("1970-01-01T00:00:00.5Z"), Some(500_000_000));
        assert_eq!(rfc3339("2025-06-01 00:00:00Z"), None);
        assert_eq!(rfc3339("2025-06-01T00:00:00"), None);
        assert_eq!(rfc3339("2025-06-01T00:00:00+0000"), None);
        let a = answer("$.items[*]", &["id", "created_at"]);
        let s = scope(json!([{"id": 1, "created_at": "2025-06-01T00:00:00+00:00"}]));
        let ok = json!({"items": [{"id": "1", "created_at": "2025-06-01T00:00:00.000Z"}]});
        assert_eq!(compare(&a, &ok, &s).unwrap(), None);
        let local = json!({"items": [{"id": 1, "created_at": "2025-06-01 00:00:00"}]});
        let w = compare(&a, &local, &s).unwrap().unwrap();
        assert!(
            w.message.contains("not an RFC 3339 timestamp"),
            "{}",
            w.message
        );
    }

    #[test]
    fn order_and_length_matter() {
        let a = answer("$.items[*]", &["id", "customer.email"]);
        let s = scope(json!([
            {"id": 3, "customer": {"email": "A@x.io"}},
            {"id": 2, "customer": {"email": "B@x.io"}}
        ]));
        let swapped = json!({"items": [
            {"id": 2, "customer": {"email": "B@x.io"}},
            {"id": 3, "customer": {"email": "A@x.io"}}
        ]});
        let w = compare(&a, &swapped, &s).unwrap().unwrap();
        assert_eq!(
            w.message,
            "item 1 at $.items[*]: id is 2, expected 3 (orders of 7)"
        );
        let short = json!({"items": [{"id": 3, "customer": {"email": "A@x.io"}}]});
        let w = compare(&a, &short, &s).unwrap().unwrap();
        assert_eq!(
            w.message,
            "1 item(s) at $.items[*], expected 2 (orders of 7); the first missing one has id 2"
        );
        let wrong_case = json!({"items": [
            {"id": 3, "customer": {"email": "a@x.io"}},
            {"id": 2, "customer": {"email": "B@x.io"}}
        ]});
        let w = compare(&a, &wrong_case, &s).unwrap().unwrap();
        assert!(
            w.message.contains("customer.email is \"a@x.io\""),
            "{}",
            w.message
        );
    }

    #[test]
    fn a_document_compares_as_one_item_and_empty_lists_compare() {
        let a = answer("$", &["orders", "revenue_cents"]);
        let s = scope(json!([{"orders": 12, "revenue_cents": 34567}]));
        assert_eq!(
            compare(&a, &json!({"orders": 12, "revenue_cents": "34567"}), &s).unwrap(),
            None
        );
        assert!(
            compare(&a, &json!({"orders": 13, "revenue_cents": 34567}), &s)
                .unwrap()
                .is_some()
        );
        let none = answer("$.items[*]", &["id"]);
        assert_eq!(
            compare(&none, &json!({"items": []}), &scope(Value::Null)).unwrap(),
            None
        );
        assert!(
            compare(&none, &json!({"items": [{"id": 1}]}), &scope(json!([])))
                .unwrap()
                .is_some()
        );
        assert!(compare(&none, &json!({}), &scope(json!(5))).is_err());
    }
}
