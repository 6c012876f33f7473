//! Sort order between two items' sort keys: numbers by value, RFC 3339 timestamps as instants
//! (`…:05Z`, `…:05.1Z` and `…:05.100000+00:00` are compared by the time they name, not as text,
//! so a service free to choose its precision and offset is judged fairly), other strings as text.

use crate::spec::calendar::days_from_civil;
use std::cmp::Ordering;

use serde_json::Value;

/// How `a` compares with `b`, when they can be compared at all.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => match (instant(x), instant(y)) {
            (Some(p), Some(q)) => Some(p.cmp(&q)),
            _ => Some(x.cmp(y)),
        },
        _ => None,
    }
}

/// Whether `key` may not follow `prev` in a list sorted ascending (or descending).
pub fn out_of_order(prev: &Value, key: &Value, descending: bool) -> bool {
    match compare(prev, key) {
        Some(Ordering::Greater) => !descending,
        Some(Ordering::Less) => descending,
        _ => false,
    }
}

/// An RFC 3339 date-time as (seconds since 1970 in UTC, nanoseconds), or `None` if it is not one.
pub fn instant(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| -> Option<i64> {
        let s = b.get(from..from + n)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| s.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let year = digits(0, 4)?;
    let month = digits(5, 2)?;
    let day = digits(8, 2)?;
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: u32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let minutes = digits(i + 1, 2)? * 60 + digits(i + 4, 2)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some((seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_compare_as_instants_whatever_their_precision_and_offset() {
        assert_eq!(instant("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(instant("2000-03-01T00:00:00Z"), Some((951_868_800, 0)));
        assert_eq!(
            instant("2026-11-28T15:04:05.1Z").unwrap().1,
            100_000_000,
            "a tenth of a second"
        );
        assert_eq!(
            instant("2026-11-28T16:04:05+01:00"),
            instant("2026-11-28T15:04:05Z")
        );
        // As text, "05Z" sorts after "05.5Z"; as times it is earlier.
        let (a, b) = (
            json!("2026-11-28T15:04:05Z"),
            json!("2026-11-28T15:04:05.5Z"),
        );
        assert_eq!(compare(&a, &b), Some(Ordering::Less));
        assert!(out_of_order(&b, &a, false));
        assert!(!out_of_order(&b, &a, true));
        assert!(!out_of_order(&a, &a.clone(), true));
        for bad in [
            "2026-11-28",
            "2026-13-01T00:00:00Z",
            "2026-11-28T15:04:05",
            "x",
        ] {
            assert_eq!(instant(bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_and_other_strings_compare_as_before() {
        assert!(out_of_order(&json!(5), &json!(3), false));
        assert!(!out_of_order(&json!(3), &json!(3), false));
        assert!(out_of_order(&json!(3), &json!(5), true));
        assert!(out_of_order(&json!("b"), &json!("a"), false));
        assert!(!out_of_order(&json!(1), &json!("a"), false));
    }
}
