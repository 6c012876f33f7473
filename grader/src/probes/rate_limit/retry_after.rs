//! `Retry-After` on a 429 (RFC 6585 §4; RFC 9110 §10.2.3): `delay-seconds` (`1*DIGIT`) or an
//! HTTP-date, turned into how long the client must wait from the moment the refusal arrived.
//!
//! - `0` is refused, although the grammar allows it: a 429 that says "retry now" contradicts
//!   itself. The attempts are sent back to back, so the window cannot have ended already; a
//!   limiter that sends 0 rounded the time left down (a client that obeys is refused again).
//!   Round up instead.
//! - A date is converted against the response's own `Date` when it has one (both come from the
//!   service's clock, so a skew between the machines does not count), else against the grader's
//!   clock. All three HTTP-date forms are accepted, as a recipient must (RFC 9110 §5.6.7).

use std::time::{Duration, SystemTime};

/// A `Retry-After` the grader can wait out.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    /// How long after the refusal arrived the client may try again.
    pub delay: Duration,
    /// The header in words, for messages: `10 seconds`, `an HTTP-date 10 s after its Date`.
    pub stated: String,
}

/// Judges the header's value (`None`: absent) with the response's `Date` and the grader's clock
/// when the refusal arrived; `Err` says what is wrong, naming what was sent.
pub fn judge(
    value: Option<&str>,
    date: Option<&str>,
    now: SystemTime,
    max_seconds: u64,
) -> Result<Wait, String> {
    let Some(raw) = value else {
        return Err(
            "it has no Retry-After header, so a client cannot know when to try again".into(),
        );
    };
    let v = raw.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // A number too large for u64 is certainly above the bound.
        let seconds = v.parse::<u64>().unwrap_or(u64::MAX);
        if seconds == 0 {
            return Err("its Retry-After is 0 (\"try again now\"), but the limit is still in force: round the time left up, so a client that waits as told is served".into());
        }
        if seconds > max_seconds {
            return Err(format!(
                "its Retry-After is {v} seconds, more than the {max_seconds} s the limit lasts"
            ));
        }
        return Ok(Wait {
            delay: Duration::from_secs(seconds),
            stated: format!("{seconds} second{}", if seconds == 1 { "" } else { "s" }),
        });
    }
    let Ok(at) = httpdate::parse_http_date(v) else {
        return Err(format!(
            "its Retry-After {raw:?} is neither a number of seconds (e.g. `10`) nor an HTTP-date (e.g. `Sun, 06 Nov 1994 08:49:37 GMT`)"
        ));
    };
    let service_now = date.and_then(|d| httpdate::parse_http_date(d.trim()).ok());
    let (base, against) = match service_now {
        Some(d) => (d, "its Date"),
        None => (now, "the grader's clock (the response has no valid Date)"),
    };
    let Ok(delay) = at.duration_since(base) else {
        return Err(format!(
            "its Retry-After {v:?} is not later than {against}{}: it says the client may already try again",
            date.map(|d| format!(" ({d})")).unwrap_or_default()
        ));
    };
    if delay.is_zero() {
        return Err(format!(
            "its Retry-After {v:?} is the same second as {against}: it says the client may already try again"
        ));
    }
    // A date has whole seconds; a limit of 10 s may well be stated as a date 11 s ahead of a
    // clock that is between two seconds.
    if delay > Duration::from_secs(max_seconds + 1) {
        return Err(format!(
            "its Retry-After {v:?} is {} s after {against}, more than the {max_seconds} s the limit lasts",
            delay.as_secs()
        ));
    }
    Ok(Wait {
        delay,
        stated: format!(
            "an HTTP-date {:.1} s after {}",
            delay.as_secs_f64(),
            if service_now.is_some() {
                "its Date"
            } else {
                "the grader's clock"
            }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        httpdate::parse_http_date(text).unwrap()
    }

    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

    #[test]
    fn delay_seconds_within_the_bound_are_waited_out() {
        let w = judge(Some("10"), None, SystemTime::now(), 10).unwrap();
        assert_eq!(w.delay, Duration::from_secs(10));
        assert_eq!(w.stated, "10 seconds");
        assert_eq!(
            judge(Some(" 1 "), None, SystemTime::now(), 10)
                .unwrap()
                .stated,
            "1 second"
        );
    }

    #[test]
    fn zero_absent_too_long_and_garbage_fail_naming_the_value() {
        let now = SystemTime::now();
        assert!(judge(None, None, now, 10)
            .unwrap_err()
            .contains("no Retry-After"));
        assert!(judge(Some("0"), None, now, 10)
            .unwrap_err()
            .contains("is 0"));
        assert!(judge(Some("11"), None, now, 10)
            .unwrap_err()
            .contains("11 seconds, more than the 10 s"));
        assert!(judge(Some("99999999999999999999999"), None, now, 10)
            .unwrap_err()
            .contains("more than"));
        for bad in ["1.5", "-3", "10s", "soon", ""] {
            let e = judge(Some(bad), None, now, 10).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn dates_count_from_the_responses_date_else_the_graders_clock() {
        let w = judge(
            Some("Sun, 06 Nov 1994 08:49:47 GMT"),
            Some(DATE),
            SystemTime::now(), // far later: the Date wins
            10,
        )
        .unwrap();
        assert_eq!(w.delay, Duration::from_secs(10));
        assert!(w.stated.contains("after its Date"), "{}", w.stated);
        // The obsolete forms a recipient must accept (RFC 850, asctime).
        let w = judge(
            Some("Sunday, 06-Nov-94 08:49:40 GMT"),
            Some(DATE),
            SystemTime::now(),
            10,
        )
        .unwrap();
        assert_eq!(w.delay, Duration::from_secs(3));
        let w = judge(Some("Sun Nov  6 08:49:42 1994"), None, at(DATE), 10).unwrap();
        assert_eq!(w.delay, Duration::from_secs(5));
        assert!(w.stated.contains("grader's clock"));
    }

    #[test]
    fn dates_in_the_past_or_too_far_fail() {
        let e = judge(Some(DATE), Some(DATE), SystemTime::now(), 10).unwrap_err();
        assert!(e.contains("same second"), "{e}");
        let e = judge(
            Some("Sun, 06 Nov 1994 08:49:30 GMT"),
            Some(DATE),
            SystemTime::now(),
            10,
        )
        .unwrap_err();
        assert!(e.contains("not later than its Date"), "{e}");
        let e = judge(
            Some("Sun, 06 Nov 1994 09:49:37 GMT"),
            Some(DATE),
            SystemTime::now(),
            10,
        )
        .unwrap_err();
        assert!(e.contains("3600 s after its Date"), "{e}");
        // One second of slack for a date's whole seconds.
        assert!(judge(
            Some("Sun, 06 Nov 1994 08:49:48 GMT"),
            Some(DATE),
            SystemTime::now(),
            10
        )
        .is_ok());
    }
}
