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

/// The count a move to next ticket `next` sets, given the counter's first
/// ticket and `max=`: an error if `next` is outside them.
pub fn target_count(next: u64, start: u64, max: Option<u64>) -> Result<u64, Problem> {
    if next < start {
        return Err(bad("next is below the counter's start"));
    }
    // `max + 1` is fine: the counter is then sold out.
    if max.is_some_and(|max| next > max.saturating_add(1)) {
        return Err(bad("next is above the counter's max"));
    }
    Ok(next - start)
}

/// [`target_count`] for a counter kept in this nginx (local or durable
/// zone), whose one life counts at most [`MAX_COUNT`] tickets: a move past
/// that is refused here, before a durable zone would write a mark its
/// state file cannot hold.
pub fn local_target_count(next: u64, start: u64, max: Option<u64>) -> Result<u64, Problem> {
    let target = target_count(next, start, max)?;
    if target > MAX_COUNT {
        return Err(bad("next is past the end of the number range"));
    }
    Ok(target)
}

/// `{"key":…,"start":…,"issued":…,"last":…,"next":…,"max":…,"used":…}`,
/// plus `"retired":true` for a counter just retired.
pub fn render(key: Option<&[u8]>, view: &CounterView, retired: bool) -> String {
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
    fn local_targets_end_with_the_count_range() {
        // next 2^56 takes the count to MAX_COUNT: the counter is used up
        assert_eq!(local_target_count(1 << 56, 1, None), Ok(MAX_COUNT));
        let past = local_target_count((1 << 56) + 1, 1, None).unwrap_err();
        assert_eq!(past.status, 400);
        assert_eq!(past.message, "next is past the end of the number range");
        assert_eq!(
            local_target_count(u64::MAX, 1, None).unwrap_err().status,
            400
        );
        assert_eq!(local_target_count(u64::MAX, u64::MAX - 5, None), Ok(5));
        // the other limits come first
        assert_eq!(
            local_target_count(12, 1, Some(10)).unwrap_err().message,
            "next is above the counter's max"
        );
        assert_eq!(target_count(u64::MAX, 1, None), Ok(u64::MAX - 1));
    }

    #[test]
    fn targets_stay_between_start_and_max() {
        assert_eq!(target_count(42_000, 1, None), Ok(41_999));
        assert_eq!(target_count(1, 1, None), Ok(0));
        assert_eq!(target_count(0, 1, None).unwrap_err().status, 400);
        assert_eq!(target_count(11, 1, Some(10)), Ok(10));
        assert_eq!(target_count(12, 1, Some(10)).unwrap_err().status, 400);
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
            render(Some(b"gal%61"), &view, false),
            "{\"key\":\"gal%61\",\"start\":1,\"issued\":41999,\"last\":41999,\
             \"next\":42000,\"max\":null,\"used\":1764000000}\n"
        );
        let fresh = CounterView::default();
        assert_eq!(
            render(None, &fresh, true),
            "{\"key\":null,\"start\":null,\"issued\":0,\"last\":null,\"next\":null,\
             \"max\":null,\"used\":null,\"retired\":true}\n"
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&render(Some(b"a\"\\\xff"), &view, false)).unwrap();
        assert_eq!(parsed["key"], "a\"\\\\\\xff");
        assert_eq!(
            render_problem(&WOULD_REISSUE),
            "{\"error\":\"would reissue\"}\n"
        );
    }
}
