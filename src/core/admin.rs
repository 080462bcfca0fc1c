//! `ticket_admin`: what its requests ask, checked, and what it answers,
//! rendered. The counter of a request is named by `?key=K`, byte for byte the
//! key a `ticket_counter`'s `key=` produces (for `key=$arg_x`, the escaped
//! query value); no `key` names the zone's default counter.

use core::fmt::Write;

use crate::core::counter::{CounterView, MAX_COUNT};
use crate::core::status::{display_key, json_opt, json_string};
use crate::core::table::KEY_MAX;

/// What an admin request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `GET`: the counter as it is.
    Show,
    /// `POST ?next=N`: the next ticket will be N (only forward).
    MoveTo { next: u64, start: Option<u64> },
    /// `DELETE`: retire the counter.
    Retire,
}

/// A request that cannot be served, with its status and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    pub status: usize,
    pub message: &'static str,
}

pub const NO_SUCH_COUNTER: Problem = Problem {
    status: 404,
    message: "no such counter",
};
pub const WOULD_REISSUE: Problem = Problem {
    status: 409,
    message: "would reissue",
};
pub const NOT_SAVED: Problem = Problem {
    status: 500,
    message: "ticket state not saved",
};
pub const TRY_AGAIN: Problem = Problem {
    status: 503,
    message: "try again",
};
pub const UNAVAILABLE: Problem = Problem {
    status: 503,
    message: "ticket authority unavailable",
};
pub const ZONE_FULL: Problem = Problem {
    status: 503,
    message: "ticket zone full",
};
pub const FAILED: Problem = Problem {
    status: 500,
    message: "internal error",
};

fn bad(message: &'static str) -> Problem {
    Problem {
        status: 400,
        message,
    }
}

/// The methods `ticket_admin` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Delete,
}

fn number(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(text).ok()?.parse().ok()
}

/// Checks a request: its method and query arguments (`key`, `next`,
/// `start`, raw as they came). Returns the key (`None`: the default
/// counter) and the action.
pub fn parse<'a>(
    method: Method,
    key: Option<&'a [u8]>,
    next: Option<&[u8]>,
    start: Option<&[u8]>,
) -> Result<(Option<&'a [u8]>, Action), Problem> {
    if let Some(key) = key {
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        if key.len() > KEY_MAX {
            return Err(bad("key too long"));
        }
    }
    let action = match method {
        Method::Get | Method::Head => {
            if next.is_some() || start.is_some() {
                return Err(bad("next= and start= only go with POST"));
            }
            Action::Show
        }
        Method::Post => {
            let next = next.ok_or(bad("POST needs next=N"))?;
            let next = number(next).ok_or(bad("bad next"))?;
            let start = match start {
                Some(text) => Some(
                    number(text)
                        .filter(|&s| s < u64::MAX)
                        .ok_or(bad("bad start"))?,
                ),
                None => None,
            };
            Action::MoveTo { next, start }
        }
        Method::Delete => {
            if next.is_some() || start.is_some() {
                return Err(bad("next= and start= only go with POST"));
            }
            if key.is_none() {
                return Err(bad("the default counter cannot be deleted"));
            }
            Action::Retire
        }
    };
    Ok((key, action))
}

/// The most tickets one life of a counter hands out in this nginx (local and
/// durable zones): the count it reaches when used up.
pub const LOCAL_CEILING: u64 = MAX_COUNT;
/// The same in Redis (its integers are signed 64-bit).
pub const REDIS_CEILING: u64 = crate::core::redis::reply::MAX_COUNT;

/// The count a move to next ticket `next` sets, given the counter's first
/// ticket, `max=` and the count its life ends at (`LOCAL_CEILING` or
/// `REDIS_CEILING`): an error if `next` is outside them. `max + 1` and the
/// ceiling itself are fine: the counter is then sold out.
pub fn target_count(next: u64, start: u64, max: Option<u64>, ceiling: u64) -> Result<u64, Problem> {
    if next < start {
        return Err(bad("next is below the counter's start"));
    }
    if max.is_some_and(|max| next > max.saturating_add(1)) {
        return Err(bad("next is above the counter's max"));
    }
    let target = next - start;
    // Refused here, before a durable zone would write a mark its state
    // file cannot hold, or Redis a count it cannot.
    if target > ceiling {
        return Err(bad("next is past the end of the number range"));
    }
    Ok(target)
}

/// Checks a move of a counter kept in this nginx (local or durable zone)
/// before anything is made or written: `counter` is the counter as it is,
/// `None` if K does not exist (it would be made with first ticket `start`,
/// default 1). Returns the count to move to.
pub fn check_move(
    next: u64,
    start: Option<u64>,
    counter: Option<&CounterView>,
) -> Result<u64, Problem> {
    let first = counter.and_then(|c| c.start).or(start).unwrap_or(1);
    let max = counter.and_then(|c| c.max);
    let target = target_count(next, first, max, LOCAL_CEILING)?;
    if counter.is_some_and(|c| target < c.issued) {
        return Err(WOULD_REISSUE);
    }
    Ok(target)
}

/// Whether the counter has no ticket left to hand out (its takes answer 410
/// `sold out`): `max=` reached, the end of the u64 range, or its count at
/// `ceiling`.
pub fn used_up(view: &CounterView, ceiling: u64) -> bool {
    let Some(first) = view.start else {
        return false;
    };
    let in_range = (u64::MAX - first).saturating_add(1);
    let by_max = match view.max {
        Some(max) if max < first => 0,
        Some(max) => (max - first).saturating_add(1),
        None => u64::MAX,
    };
    view.issued >= ceiling.min(in_range).min(by_max)
}

/// `{"key":…,"start":…,"issued":…,"last":…,"next":…,"max":…,"used":…}`,
/// plus `"sold_out":true` for a counter that has no ticket left (see
/// [`used_up`], with the zone's `ceiling`; its `next` is then one past its
/// last possible ticket, as `max + 1` is) and `"retired":true` for a counter
/// just retired.
pub fn render(key: Option<&[u8]>, view: &CounterView, retired: bool, ceiling: u64) -> String {
    let mut out = String::from("{\"key\":");
    match key {
        Some(key) => json_string(&mut out, &display_key(key)),
        None => out.push_str("null"),
    }
    out.push_str(",\"start\":");
    json_opt(&mut out, view.start);
    let _ = write!(out, ",\"issued\":{}", view.issued);
    out.push_str(",\"last\":");
    json_opt(&mut out, view.last());
    out.push_str(",\"next\":");
    json_opt(&mut out, view.next());
    out.push_str(",\"max\":");
    json_opt(&mut out, view.max);
    out.push_str(",\"used\":");
    json_opt(&mut out, (view.used > 0).then_some(view.used / 1000));
    if retired {
        out.push_str(",\"retired\":true");
    } else if used_up(view, ceiling) {
        out.push_str(",\"sold_out\":true");
    }
    out.push_str("}\n");
    out
}

/// `{"error":"…"}`
pub fn render_problem(problem: &Problem) -> String {
    let mut out = String::from("{\"error\":");
    json_string(&mut out, problem.message);
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            parse(Method::Get, Some(b"gala"), None, None),
            Ok((Some(&b"gala"[..]), Action::Show))
        );
        assert_eq!(
            parse(Method::Get, None, None, None),
            Ok((None, Action::Show))
        );
        assert_eq!(
            parse(Method::Post, Some(b"k"), Some(b"41000"), None),
            Ok((
                Some(&b"k"[..]),
                Action::MoveTo {
                    next: 41000,
                    start: None
                }
            ))
        );
        assert_eq!(
            parse(Method::Post, None, Some(b"7"), Some(b"5")),
            Ok((
                None,
                Action::MoveTo {
                    next: 7,
                    start: Some(5)
                }
            ))
        );
        assert_eq!(
            parse(Method::Delete, Some(b"k"), None, None),
            Ok((Some(&b"k"[..]), Action::Retire))
        );
    }

    /// method, key, next, start, and the 400 message.
    type BadCase<'a> = (
        Method,
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        &'a str,
    );

    #[test]
    fn bad_requests_are_400_with_a_reason() {
        let cases: &[BadCase] = &[
            (Method::Get, Some(b""), None, None, "empty key"),
            (Method::Get, Some(&[b'x'; 65]), None, None, "key too long"),
            (Method::Post, Some(b"k"), None, None, "POST needs next=N"),
            (Method::Post, Some(b"k"), Some(b"-1"), None, "bad next"),
            (Method::Post, Some(b"k"), Some(b"1x"), None, "bad next"),
            (
                Method::Post,
                Some(b"k"),
                Some(b"99999999999999999999"),
                None,
                "bad next",
            ),
            (
                Method::Post,
                Some(b"k"),
                Some(b"5"),
                Some(b"x"),
                "bad start",
            ),
            (
                Method::Delete,
                None,
                None,
                None,
                "the default counter cannot be deleted",
            ),
            (
                Method::Get,
                Some(b"k"),
                Some(b"5"),
                None,
                "next= and start= only go with POST",
            ),
        ];
        for (method, key, next, start, message) in cases {
            let err = parse(*method, *key, *next, *start).unwrap_err();
            assert_eq!(
                (err.status, err.message),
                (400, *message),
                "{method:?} {key:?}"
            );
        }
    }

    #[test]
    fn targets_end_with_the_count_range() {
        // next 2^56 takes the count to MAX_COUNT: the counter is used up
        let local = |next, start, max| target_count(next, start, max, LOCAL_CEILING);
        assert_eq!(local(1 << 56, 1, None), Ok(MAX_COUNT));
        let past = local((1 << 56) + 1, 1, None).unwrap_err();
        assert_eq!(past.status, 400);
        assert_eq!(past.message, "next is past the end of the number range");
        assert_eq!(local(u64::MAX, 1, None).unwrap_err().status, 400);
        assert_eq!(local(u64::MAX, u64::MAX - 5, None), Ok(5));
        // the other limits come first
        assert_eq!(
            local(12, 1, Some(10)).unwrap_err().message,
            "next is above the counter's max"
        );
        // Redis ends at 2^63-1: past it is 400 too, not a script error
        let redis = |next, start| target_count(next, start, None, REDIS_CEILING);
        assert_eq!(redis(1 << 63, 1), Ok(REDIS_CEILING));
        assert_eq!(
            redis((1 << 63) + 1, 1).unwrap_err().message,
            "next is past the end of the number range"
        );
        assert_eq!(redis(u64::MAX, 1).unwrap_err().status, 400);
    }

    #[test]
    fn targets_stay_between_start_and_max() {
        let t = |next, start, max| target_count(next, start, max, LOCAL_CEILING);
        assert_eq!(t(42_000, 1, None), Ok(41_999));
        assert_eq!(t(1, 1, None), Ok(0));
        assert_eq!(t(0, 1, None).unwrap_err().status, 400);
        assert_eq!(t(11, 1, Some(10)), Ok(10));
        assert_eq!(t(12, 1, Some(10)).unwrap_err().status, 400);
    }

    #[test]
    fn moves_are_checked_before_a_counter_is_made() {
        // a key that does not exist: its first ticket would be start=
        assert_eq!(check_move(41_000, None, None), Ok(40_999));
        assert_eq!(check_move(41_000, Some(100), None), Ok(40_900));
        let below = check_move(99, Some(100), None).unwrap_err();
        assert_eq!(
            (below.status, below.message),
            (400, "next is below the counter's start")
        );
        assert_eq!(
            check_move((1 << 56) + 1, None, None).unwrap_err().message,
            "next is past the end of the number range"
        );
        // an existing counter: its own start and max; start= is ignored
        let counter = CounterView {
            start: Some(10),
            issued: 5,
            max: Some(20),
            ..CounterView::default()
        };
        assert_eq!(check_move(15, Some(1), Some(&counter)), Ok(5));
        assert_eq!(check_move(21, None, Some(&counter)), Ok(11));
        assert_eq!(check_move(14, None, Some(&counter)), Err(WOULD_REISSUE));
        assert_eq!(
            check_move(9, Some(1), Some(&counter)).unwrap_err().message,
            "next is below the counter's start"
        );
        assert_eq!(
            check_move(22, None, Some(&counter)).unwrap_err().message,
            "next is above the counter's max"
        );
        // a counter whose first ticket is not fixed yet takes start=
        let unfixed = CounterView::default();
        assert_eq!(check_move(7, Some(5), Some(&unfixed)), Ok(2));
    }

    #[test]
    fn used_up_is_what_a_take_would_say() {
        let view = |start, issued, max| CounterView {
            start: Some(start),
            issued,
            max,
            ..CounterView::default()
        };
        assert!(!used_up(&CounterView::default(), LOCAL_CEILING));
        assert!(!used_up(&view(1, 41_999, None), LOCAL_CEILING));
        // max= reached: next is max + 1
        assert!(used_up(&view(10, 11, Some(20)), LOCAL_CEILING));
        assert!(!used_up(&view(10, 10, Some(20)), LOCAL_CEILING));
        assert!(used_up(&view(10, 0, Some(5)), LOCAL_CEILING));
        // the end of one life's count: next 2^56 on a local zone
        assert!(used_up(&view(1, MAX_COUNT, None), LOCAL_CEILING));
        assert!(!used_up(&view(1, MAX_COUNT - 1, None), LOCAL_CEILING));
        // in Redis that count is far from the end
        assert!(!used_up(&view(1, MAX_COUNT, None), REDIS_CEILING));
        assert!(used_up(&view(1, REDIS_CEILING, None), REDIS_CEILING));
        // the end of the u64 range
        assert!(used_up(&view(u64::MAX - 5, 6, None), LOCAL_CEILING));
        assert!(!used_up(&view(u64::MAX - 5, 5, None), LOCAL_CEILING));
        assert!(used_up(&view(u64::MAX, 1, Some(u64::MAX)), REDIS_CEILING));
    }

    #[test]
    fn answers() {
        let view = CounterView {
            start: Some(1),
            issued: 41_999,
            max: None,
            used: 1_764_000_000_123,
            ..CounterView::default()
        };
        assert_eq!(
            render(Some(b"gal%61"), &view, false, LOCAL_CEILING),
            "{\"key\":\"gal%61\",\"start\":1,\"issued\":41999,\"last\":41999,\
             \"next\":42000,\"max\":null,\"used\":1764000000}\n"
        );
        let fresh = CounterView::default();
        assert_eq!(
            render(None, &fresh, true, LOCAL_CEILING),
            "{\"key\":null,\"start\":null,\"issued\":0,\"last\":null,\"next\":null,\
             \"max\":null,\"used\":null,\"retired\":true}\n"
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&render(Some(b"a\"\\\xff"), &view, false, LOCAL_CEILING)).unwrap();
        assert_eq!(parsed["key"], "a\"\\\\\\xff");
        // used up: next is one past the last possible ticket, and says so
        let sold = CounterView {
            start: Some(1),
            issued: MAX_COUNT,
            ..view
        };
        assert_eq!(
            render(Some(b"k"), &sold, false, LOCAL_CEILING),
            "{\"key\":\"k\",\"start\":1,\"issued\":72057594037927935,\
             \"last\":72057594037927935,\"next\":72057594037927936,\"max\":null,\
             \"used\":1764000000,\"sold_out\":true}\n"
        );
        let by_max = CounterView {
            start: Some(10),
            issued: 11,
            max: Some(20),
            ..view
        };
        assert!(render(Some(b"k"), &by_max, false, LOCAL_CEILING)
            .ends_with(",\"next\":21,\"max\":20,\"used\":1764000000,\"sold_out\":true}\n"));
        // a retired counter is gone, not sold out
        assert!(render(Some(b"k"), &sold, true, LOCAL_CEILING).ends_with(",\"retired\":true}\n"));
        assert_eq!(
            render_problem(&WOULD_REISSUE),
            "{\"error\":\"would reissue\"}\n"
        );
    }
}
