//! Reading typed fields out of replies, and what a reply can go wrong with.

use core::fmt;

use super::resp::Value;

/// Largest ticket count: Redis integers are signed 64-bit.
pub const MAX_COUNT: u64 = i64::MAX as u64;
/// Longest server error message kept for logs.
const MAX_ERROR_TEXT: usize = 256;

/// A reply that is not what the command promised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// `-NOSCRIPT`: the script cache was flushed (restart, `SCRIPT FLUSH`).
    /// The script did not run: load the scripts again, then retry.
    NoScript,
    /// A `ticket: …` error from one of our scripts (bad stored value, bad
    /// argument); the edge answers 503 and logs it.
    Script(String),
    /// Any other error reply (`READONLY`, `OOM`, `WRONGTYPE`, …).
    Server(String),
    /// Not the shape the command replies with: a bug or a different script.
    Malformed(&'static str),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::NoScript => f.write_str("script not loaded (NOSCRIPT)"),
            ReplyError::Script(message) | ReplyError::Server(message) => f.write_str(message),
            ReplyError::Malformed(what) => write!(f, "unexpected reply: {what}"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Classifies an error reply.
pub fn error_reply(message: &[u8]) -> ReplyError {
    if message.starts_with(b"NOSCRIPT") {
        ReplyError::NoScript
    } else if message.starts_with(b"ticket:") {
        ReplyError::Script(error_text(message))
    } else {
        ReplyError::Server(error_text(message))
    }
}

/// A server's error message made safe for a log line: printable ASCII only,
/// bounded in length.
pub fn error_text(message: &[u8]) -> String {
    let mut text: String = message
        .iter()
        .take(MAX_ERROR_TEXT)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    if message.len() > MAX_ERROR_TEXT {
        text.push_str("...");
    }
    text
}

/// The elements of an array reply with at least `min_len` of them; an error
/// reply becomes its [`ReplyError`].
pub fn array(value: Value, min_len: usize) -> Result<Vec<Value>, ReplyError> {
    match value {
        Value::Array(Some(items)) if items.len() >= min_len => Ok(items),
        Value::Array(_) => Err(ReplyError::Malformed("array too short")),
        Value::Error(message) => Err(error_reply(&message)),
        _ => Err(ReplyError::Malformed("not an array")),
    }
}

/// A canonical decimal count (no sign, no leading zero, at most 2^63-1).
pub fn parse_count(text: &[u8]) -> Option<u64> {
    let canonical = match text {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        _ => text.iter().all(u8::is_ascii_digit),
    };
    if !canonical || text.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in text {
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (n <= MAX_COUNT).then_some(n)
}

/// A count sent as an integer or as a decimal bulk string.
pub fn count(value: Option<&Value>, what: &'static str) -> Result<u64, ReplyError> {
    match value {
        Some(Value::Integer(n)) => u64::try_from(*n).map_err(|_| ReplyError::Malformed(what)),
        Some(Value::Bulk(Some(text))) => parse_count(text).ok_or(ReplyError::Malformed(what)),
        _ => Err(ReplyError::Malformed(what)),
    }
}

/// Like [`count`], with the empty string meaning "none".
pub fn optional_count(
    value: Option<&Value>,
    what: &'static str,
) -> Result<Option<u64>, ReplyError> {
    match value {
        Some(Value::Bulk(Some(text))) if text.is_empty() => Ok(None),
        other => count(other, what).map(Some),
    }
}

/// A 0/1 integer.
pub fn flag(value: Option<&Value>, what: &'static str) -> Result<bool, ReplyError> {
    match value {
        Some(Value::Integer(0)) => Ok(false),
        Some(Value::Integer(1)) => Ok(true),
        _ => Err(ReplyError::Malformed(what)),
    }
}

/// A non-empty bulk string of at most `max_len` bytes.
pub fn bytes(
    value: Option<&Value>,
    max_len: usize,
    what: &'static str,
) -> Result<Vec<u8>, ReplyError> {
    match value {
        Some(Value::Bulk(Some(text))) if !text.is_empty() && text.len() <= max_len => {
            Ok(text.clone())
        }
        _ => Err(ReplyError::Malformed(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::Bulk(Some(text.as_bytes().to_vec()))
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count(b"0"), Some(0));
        assert_eq!(parse_count(b"42"), Some(42));
        assert_eq!(parse_count(b"9223372036854775807"), Some(MAX_COUNT));
        for bad in [
            "",
            "00",
            "01",
            "-1",
            "+1",
            "1.0",
            "1e3",
            " 1",
            "9223372036854775808",
            "18446744073709551616",
            "99999999999999999999",
        ] {
            assert_eq!(parse_count(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(count(Some(&Value::Integer(7)), "x"), Ok(7));
        assert_eq!(count(Some(&bulk("7")), "x"), Ok(7));
        assert_eq!(
            count(Some(&Value::Integer(-1)), "x"),
            Err(ReplyError::Malformed("x"))
        );
        assert_eq!(
            count(Some(&Value::Simple(b"7".to_vec())), "x"),
            Err(ReplyError::Malformed("x"))
        );
        assert_eq!(count(None, "x"), Err(ReplyError::Malformed("x")));
        assert_eq!(optional_count(Some(&bulk("")), "x"), Ok(None));
        assert_eq!(optional_count(Some(&bulk("3")), "x"), Ok(Some(3)));
    }

    #[test]
    fn flags_and_bytes() {
        assert_eq!(flag(Some(&Value::Integer(1)), "f"), Ok(true));
        assert_eq!(flag(Some(&Value::Integer(0)), "f"), Ok(false));
        assert!(flag(Some(&Value::Integer(2)), "f").is_err());
        assert_eq!(bytes(Some(&bulk("ab")), 2, "b"), Ok(b"ab".to_vec()));
        assert!(bytes(Some(&bulk("abc")), 2, "b").is_err());
        assert!(bytes(Some(&bulk("")), 2, "b").is_err());
    }

    #[test]
    fn errors() {
        assert_eq!(
            error_reply(b"NOSCRIPT No matching script."),
            ReplyError::NoScript
        );
        assert_eq!(
            error_reply(b"ticket: the counter does not hold a count"),
            ReplyError::Script("ticket: the counter does not hold a count".into())
        );
        assert_eq!(
            error_reply(b"READONLY You can't write against a read only replica."),
            ReplyError::Server("READONLY You can't write against a read only replica.".into())
        );
        assert_eq!(error_text(b"a\x00\xffb"), "a??b");
        assert_eq!(error_text(&[b'x'; 300]).len(), MAX_ERROR_TEXT + 3);
        assert_eq!(
            array(Value::Error(b"ERR x".to_vec()), 1),
            Err(ReplyError::Server("ERR x".into()))
        );
        assert!(array(Value::Array(Some(vec![])), 1).is_err());
        assert!(array(Value::Array(None), 0).is_err());
        assert!(array(Value::Integer(1), 0).is_err());
    }
}
