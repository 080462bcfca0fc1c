//! Response bodies for tickets, rendered into a small stack buffer: the hot
//! path allocates nothing beyond the request pool copy the handler makes.

use core::fmt::{self, Write};

use crate::core::config::Format;

/// Big enough for the longest body: a JSON batch with three 20-digit numbers.
pub const BODY_MAX: usize = 96;

/// A fixed-size body buffer.
pub struct Body {
    bytes: [u8; BODY_MAX],
    len: usize,
}

impl Body {
    fn new() -> Self {
        Body {
            bytes: [0; BODY_MAX],
            len: 0,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Write for Body {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > BODY_MAX {
            return Err(fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// What the client asked for: one ticket, or a batch via `?count=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handout {
    One(u64),
    Range { first: u64, count: u64 },
}

pub fn content_type(format: Format) -> &'static str {
    match format {
        Format::Text => "text/plain",
        Format::Json => "application/json",
    }
}

/// Renders the body: `42\n`, or `6 8\n` for a batch (first and last);
/// `width` zero-pads text numbers. JSON is `{"ticket":42}` or
/// `{"first":6,"last":8,"count":3}`, exactly, with no newline.
pub fn render(handout: Handout, format: Format, width: usize) -> Body {
    let mut body = Body::new();
    // BODY_MAX covers the longest output, so writing cannot fail.
    let _ = match (handout, format) {
        (Handout::One(ticket), Format::Text) => writeln!(body, "{ticket:0width$}"),
        (Handout::One(ticket), Format::Json) => write!(body, "{{\"ticket\":{ticket}}}"),
        (Handout::Range { first, count }, Format::Text) => {
            writeln!(body, "{first:0width$} {:0width$}", first + (count - 1))
        }
        (Handout::Range { first, count }, Format::Json) => write!(
            body,
            "{{\"first\":{first},\"last\":{},\"count\":{count}}}",
            first + (count - 1)
        ),
    };
    body
}

/// Parses the `count` query argument of a batch request: 1..=`batch`.
pub fn parse_count(text: &[u8], batch: u64) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let count = core::str::from_utf8(text).ok()?.parse::<u64>().ok()?;
    (1..=batch).contains(&count).then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(handout: Handout, format: Format, width: usize) -> String {
        String::from_utf8(render(handout, format, width).as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn text_bodies() {
        assert_eq!(text(Handout::One(1), Format::Text, 0), "1\n");
        assert_eq!(text(Handout::One(42), Format::Text, 10), "0000000042\n");
        assert_eq!(text(Handout::One(12345), Format::Text, 3), "12345\n");
        assert_eq!(
            text(Handout::One(u64::MAX), Format::Text, 20),
            "18446744073709551615\n"
        );
        assert_eq!(
            text(Handout::Range { first: 6, count: 3 }, Format::Text, 0),
            "6 8\n"
        );
        assert_eq!(
            text(Handout::Range { first: 6, count: 3 }, Format::Text, 4),
            "0006 0008\n"
        );
    }

    #[test]
    fn json_bodies() {
        assert_eq!(text(Handout::One(42), Format::Json, 10), "{\"ticket\":42}");
        assert_eq!(
            text(Handout::Range { first: 6, count: 3 }, Format::Json, 0),
            "{\"first\":6,\"last\":8,\"count\":3}"
        );
        let longest = text(
            Handout::Range {
                first: u64::MAX - 999_999,
                count: 1_000_000,
            },
            Format::Json,
            0,
        );
        assert!(longest.ends_with("\"count\":1000000}"), "{longest}");
        assert_eq!(content_type(Format::Json), "application/json");
        assert_eq!(content_type(Format::Text), "text/plain");
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count(b"1", 5), Some(1));
        assert_eq!(parse_count(b"5", 5), Some(5));
        for bad in [
            &b""[..],
            b"0",
            b"6",
            b"-1",
            b"2x",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_count(bad, 5), None, "{bad:?}");
        }
    }
}
