//! RESP2: commands out, replies in.
//!
//! Commands are arrays of bulk strings appended to the connection's output
//! buffer. Replies are decoded incrementally: bytes go in as they arrive, in
//! any split, and complete values come out in order. Everything a server sends
//! is bounded; anything malformed or too large is a [`ProtocolError`], after
//! which the connection must be closed (the stream can no longer be trusted
//! to pair replies with commands).

use core::fmt;

/// Largest bulk string accepted. Ticket replies are tiny; INFO is a few KiB.
pub const MAX_BULK_LEN: usize = 1024 * 1024;
/// Largest array accepted (a take reply has 5 + one element per request).
pub const MAX_ARRAY_LEN: usize = 1024;
/// Deepest nesting of arrays accepted; a top-level array is depth 1.
pub const MAX_DEPTH: usize = 4;
/// Largest complete reply, headers included.
pub const MAX_REPLY_LEN: usize = 2 * 1024 * 1024;
/// Longest simple string or error line.
pub const MAX_LINE_LEN: usize = 64 * 1024;
/// Longest integer or length line: "-9223372036854775808" has 20 characters.
const MAX_NUMBER_LEN: usize = 20;

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    /// `None` is the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None` is the null array (`*-1`).
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The bytes of a simple or non-null bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(bytes) | Value::Bulk(Some(bytes)) => Some(bytes),
            _ => None,
        }
    }

    /// The message of an error reply.
    pub fn as_error(&self) -> Option<&[u8]> {
        match self {
            Value::Error(message) => Some(message),
            _ => None,
        }
    }
}

/// Why a reply stream was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// A type byte RESP2 does not define (RESP3 types included).
    UnknownType(u8),
    /// A line not ended by CRLF, or a bare CR or LF inside it.
    BadLineEnd,
    LineTooLong,
    BadInteger,
    /// A bulk or array length below -1.
    BadLength,
    BulkTooLong,
    ArrayTooLong,
    TooDeep,
    ReplyTooLarge,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::UnknownType(byte) => {
                write!(f, "unknown RESP type byte 0x{byte:02x}")
            }
            ProtocolError::BadLineEnd => f.write_str("line not ended by CRLF"),
            ProtocolError::LineTooLong => write!(f, "line longer than {MAX_LINE_LEN} bytes"),
            ProtocolError::BadInteger => f.write_str("invalid integer"),
            ProtocolError::BadLength => f.write_str("invalid length"),
            ProtocolError::BulkTooLong => {
                write!(f, "bulk string longer than {MAX_BULK_LEN} bytes")
            }
            ProtocolError::ArrayTooLong => {
                write!(f, "array longer than {MAX_ARRAY_LEN} elements")
            }
            ProtocolError::TooDeep => write!(f, "arrays nested deeper than {MAX_DEPTH}"),
            ProtocolError::ReplyTooLarge => write!(f, "reply larger than {MAX_REPLY_LEN} bytes"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Appends one command to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut command = Command::new(out);
    for arg in args {
        command.arg(arg);
    }
    command.finish();
}

/// Writes a command argument by argument, straight into the output buffer,
/// so numbers need no temporary strings. The array header is inserted by
/// [`Command::finish`]; a command dropped unfinished (e.g. by `?` on a
/// validation error) is removed from the buffer again.
pub struct Command<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    args: usize,
    finished: bool,
}

impl<'a> Command<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        let start = out.len();
        Command {
            out,
            start,
            args: 0,
            finished: false,
        }
    }

    /// Appends a bulk-string argument.
    pub fn arg(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.push(b'$');
        self.out
            .extend_from_slice(Decimal::new(bytes.len() as u64).as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(bytes);
        self.out.extend_from_slice(b"\r\n");
        self.args = self.args.saturating_add(1);
        self
    }

    /// Appends a number as a decimal bulk string.
    pub fn arg_u64(&mut self, n: u64) -> &mut Self {
        self.arg(Decimal::new(n).as_bytes())
    }

    /// Inserts the array header; the command is complete.
    pub fn finish(mut self) {
        let mut header = [0u8; 2 + MAX_NUMBER_LEN + 2];
        let count = Decimal::new(self.args as u64);
        let count = count.as_bytes();
        let mut len = 0;
        for (slot, byte) in header
            .iter_mut()
            .zip(b"*".iter().chain(count).chain(b"\r\n"))
        {
            *slot = *byte;
            len += 1;
        }
        let start = self.start.min(self.out.len());
        self.out
            .splice(start..start, header.iter().take(len).copied());
        self.finished = true;
    }
}

impl Drop for Command<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.out.truncate(self.start);
        }
    }
}

/// A `u64` in decimal, formatted on the stack.
#[derive(Clone, Copy)]
pub struct Decimal {
    digits: [u8; MAX_NUMBER_LEN],
    start: usize,
}

impl Decimal {
    pub fn new(mut n: u64) -> Self {
        let mut digits = [b'0'; MAX_NUMBER_LEN];
        let mut used = 0;
        for slot in digits.iter_mut().rev() {
            // n % 10 < 10, so the cast and the add cannot overflow.
            *slot = b'0' + (n % 10) as u8;
            used += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Decimal {
            digits,
            start: MAX_NUMBER_LEN - used,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.digits.get(self.start..).unwrap_or(b"0")
    }
}

/// Incremental reply decoder. Feed it bytes, then call
/// [`Decoder::next_value`] until it returns `Ok(None)`.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the first byte not yet decoded.
    pos: usize,
    /// Once the stream is broken it stays broken.
    failed: Option<ProtocolError>,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Appends bytes read from the connection. The buffer's allocation is
    /// reused: decoded bytes are dropped here, not in `next_value`.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos >= self.buf.len() {
            self.buf.clear();
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
        }
        self.pos = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete reply, `Ok(None)` when more bytes are needed, or the
    /// error that broke the stream (returned again on every later call).
    pub fn next_value(&mut self) -> Result<Option<Value>, ProtocolError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let input = self.buf.get(self.pos..).unwrap_or(&[]);
        // A dry run first: an incomplete reply costs no allocation.
        let mut cursor = Cursor { input, pos: 0 };
        match parse::<false>(&mut cursor, 1) {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(error) => {
                self.failed = Some(error);
                return Err(error);
            }
        }
        let mut cursor = Cursor { input, pos: 0 };
        match parse::<true>(&mut cursor, 1) {
            Ok(Some(value)) => {
                self.pos = self.pos.saturating_add(cursor.pos);
                Ok(Some(value))
            }
            // The dry run accepted these bytes, so this cannot happen.
            Ok(None) => Ok(None),
            Err(error) => {
                self.failed = Some(error);
                Err(error)
            }
        }
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.input.get(self.pos)?;
        self.pos += 1;
        Some(byte)
    }

    /// The next line without its CRLF, or `None` if it has not fully arrived.
    fn line(&mut self, max_len: usize) -> Result<Option<&'a [u8]>, ProtocolError> {
        let rest = self.input.get(self.pos..).unwrap_or(&[]);
        let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
            return if rest.len() > max_len {
                Err(ProtocolError::LineTooLong)
            } else {
                Ok(None)
            };
        };
        if end > max_len {
            return Err(ProtocolError::LineTooLong);
        }
        match (rest.get(end), rest.get(end + 1)) {
            (Some(b'\r'), Some(b'\n')) => {
                self.pos += end + 2;
                Ok(rest.get(..end))
            }
            (Some(b'\r'), None) => Ok(None),
            _ => Err(ProtocolError::BadLineEnd),
        }
    }

    fn number(&mut self) -> Result<Option<i64>, ProtocolError> {
        match self.line(MAX_NUMBER_LEN)? {
            None => Ok(None),
            Some(line) => parse_i64(line).map(Some).ok_or(ProtocolError::BadInteger),
        }
    }

    /// A length line: `None` inside is RESP's null (-1).
    fn length(
        &mut self,
        max: usize,
        too_long: ProtocolError,
    ) -> Result<Option<Option<usize>>, ProtocolError> {
        let Some(n) = self.number()? else {
            return Ok(None);
        };
        if n == -1 {
            return Ok(Some(None));
        }
        let n = usize::try_from(n).map_err(|_| ProtocolError::BadLength)?;
        if n > max {
            return Err(too_long);
        }
        Ok(Some(Some(n)))
    }
}

/// Parses one value at the cursor. With `BUILD` false it only checks that a
/// complete, valid value is there and returns a placeholder.
fn parse<const BUILD: bool>(
    cursor: &mut Cursor<'_>,
    depth: usize,
) -> Result<Option<Value>, ProtocolError> {
    let Some(kind) = cursor.byte() else {
        return Ok(None);
    };
    let value = match kind {
        b'+' | b'-' => {
            let Some(line) = cursor.line(MAX_LINE_LEN)? else {
                return Ok(None);
            };
            match (BUILD, kind) {
                (false, _) => Value::Bulk(None),
                (true, b'+') => Value::Simple(line.to_vec()),
                (true, _) => Value::Error(line.to_vec()),
            }
        }
        b':' => match cursor.number()? {
            None => return Ok(None),
            Some(n) => Value::Integer(n),
        },
        b'$' => {
            let len = match cursor.length(MAX_BULK_LEN, ProtocolError::BulkTooLong)? {
                None => return Ok(None),
                Some(None) => return Ok(Some(Value::Bulk(None))),
                Some(Some(len)) => len,
            };
            // Refuse a reply that cannot fit before waiting for its bytes.
            let end = cursor
                .pos
                .checked_add(len)
                .ok_or(ProtocolError::ReplyTooLarge)?;
            if end.saturating_add(2) > MAX_REPLY_LEN {
                return Err(ProtocolError::ReplyTooLarge);
            }
            let Some(bytes) = cursor.input.get(cursor.pos..end) else {
                return Ok(None);
            };
            match (cursor.input.get(end), cursor.input.get(end + 1)) {
                (Some(b'\r'), Some(b'\n')) => {}
                (None, _) | (Some(b'\r'), None) => return Ok(None),
                _ => return Err(ProtocolError::BadLineEnd),
            }
            cursor.pos = end + 2;
            Value::Bulk(Some(if BUILD { bytes.to_vec() } else { Vec::new() }))
        }
        b'*' => {
            if depth > MAX_DEPTH {
                return Err(ProtocolError::TooDeep);
            }
            let len = match cursor.length(MAX_ARRAY_LEN, ProtocolError::ArrayTooLong)? {
                None => return Ok(None),
                Some(None) => return Ok(Some(Value::Array(None))),
                Some(Some(len)) => len,
            };
            let mut items = Vec::with_capacity(if BUILD { len } else { 0 });
            for _ in 0..len {
                let Some(item) = parse::<BUILD>(cursor, depth + 1)? else {
                    return Ok(None);
                };
                if BUILD {
                    items.push(item);
                }
            }
            Value::Array(Some(items))
        }
        other => return Err(ProtocolError::UnknownType(other)),
    };
    if cursor.pos > MAX_REPLY_LEN {
        return Err(ProtocolError::ReplyTooLarge);
    }
    Ok(Some(value))
}

/// A RESP integer: optional '-', then digits; no '+', no spaces, no overflow.
fn parse_i64(line: &[u8]) -> Option<i64> {
    let (negative, digits) = match line.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, line),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(b - b'0');
        // Accumulating towards the sign reaches i64::MIN too.
        n = n.checked_mul(10)?;
        n = if negative {
            n.checked_sub(digit)?
        } else {
            n.checked_add(digit)?
        };
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic, no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn bulk(bytes: &[u8]) -> Value {
        Value::Bulk(Some(bytes.to_vec()))
    }

    /// Replies of every kind, with the bytes a server sends for them.
    fn samples() -> Vec<(&'static [u8], Value)> {
        vec![
            (b"+OK\r\n", Value::Simple(b"OK".to_vec())),
            (b"+\r\n", Value::Simple(Vec::new())),
            (
                b"-ERR unknown command\r\n",
                Value::Error(b"ERR unknown command".to_vec()),
            ),
            (b":0\r\n", Value::Integer(0)),
            (b":-1\r\n", Value::Integer(-1)),
            (b":9223372036854775807\r\n", Value::Integer(i64::MAX)),
            (b":-9223372036854775808\r\n", Value::Integer(i64::MIN)),
            (b"$5\r\nhello\r\n", bulk(b"hello")),
            (b"$0\r\n\r\n", bulk(b"")),
            (b"$4\r\na\r\nb\r\n", bulk(b"a\r\nb")),
            (b"$-1\r\n", Value::Bulk(None)),
            (b"*-1\r\n", Value::Array(None)),
            (b"*0\r\n", Value::Array(Some(vec![]))),
            (
                b"*3\r\n$1\r\n1\r\n:2\r\n*2\r\n+x\r\n$-1\r\n",
                Value::Array(Some(vec![
                    bulk(b"1"),
                    Value::Integer(2),
                    Value::Array(Some(vec![Value::Simple(b"x".to_vec()), Value::Bulk(None)])),
                ])),
            ),
        ]
    }

    fn decode_all(decoder: &mut Decoder) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(value) = decoder.next_value().unwrap() {
            out.push(value);
        }
        out
    }

    #[test]
    fn encodes_commands() {
        let mut out = b"prefix".to_vec();
        encode_command(&mut out, &[b"SET", b"k", b""]);
        assert_eq!(out, b"prefix*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
        let mut out = Vec::new();
        let mut command = Command::new(&mut out);
        command.arg(b"INCRBY").arg(b"k").arg_u64(u64::MAX);
        command.finish();
        assert_eq!(
            out,
            b"*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$20\r\n18446744073709551615\r\n"
        );
        let mut out = Vec::new();
        encode_command(&mut out, &[]);
        assert_eq!(out, b"*0\r\n");
    }

    #[test]
    fn unfinished_command_is_rolled_back() {
        let mut out = b"kept".to_vec();
        {
            let mut command = Command::new(&mut out);
            command.arg(b"half");
        }
        assert_eq!(out, b"kept");
    }

    #[test]
    fn commands_decode_as_arrays_of_bulks() {
        let args: Vec<Vec<u8>> = (0..300).map(|i| vec![b'x'; i]).collect();
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
        let mut out = Vec::new();
        encode_command(&mut out, &refs);
        let mut decoder = Decoder::new();
        decoder.feed(&out);
        let expected = Value::Array(Some(args.iter().map(|a| bulk(a)).collect()));
        assert_eq!(decoder.next_value(), Ok(Some(expected)));
    }

    #[test]
    fn decimals() {
        for n in [0, 1, 9, 10, 99, 100, 12345, u64::MAX] {
            assert_eq!(Decimal::new(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn each_sample_alone() {
        for (bytes, value) in samples() {
            let mut decoder = Decoder::new();
            decoder.feed(bytes);
            assert_eq!(
                decoder.next_value(),
                Ok(Some(value)),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
            assert_eq!(decoder.next_value(), Ok(None));
            assert_eq!(decoder.buffered(), 0);
        }
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for (bytes, value) in samples() {
            for cut in 0..bytes.len() {
                let mut decoder = Decoder::new();
                decoder.feed(&bytes[..cut]);
                assert_eq!(
                    decoder.next_value(),
                    Ok(None),
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(bytes)
                );
                decoder.feed(&bytes[cut..]);
                assert_eq!(decoder.next_value(), Ok(Some(value.clone())));
                assert_eq!(decoder.next_value(), Ok(None));
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let stream: Vec<u8> = samples().iter().flat_map(|(b, _)| b.to_vec()).collect();
        let expected: Vec<Value> = samples().into_iter().map(|(_, v)| v).collect();
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        for byte in &stream {
            decoder.feed(std::slice::from_ref(byte));
            got.extend(decode_all(&mut decoder));
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn random_splits_of_a_pipelined_stream() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let samples = samples();
        for round in 0..500 {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for _ in 0..1 + rng.below(40) {
                let (bytes, value) = &samples[rng.below(samples.len())];
                stream.extend_from_slice(bytes);
                expected.push(value.clone());
            }
            let mut decoder = Decoder::new();
            let mut got = Vec::new();
            let mut at = 0;
            while at < stream.len() {
                let take = 1 + rng.below(if round % 2 == 0 { 8 } else { 64 });
                let end = (at + take).min(stream.len());
                decoder.feed(&stream[at..end]);
                at = end;
                // Sometimes read several chunks before decoding.
                if rng.below(3) != 0 {
                    got.extend(decode_all(&mut decoder));
                }
            }
            got.extend(decode_all(&mut decoder));
            assert_eq!(got, expected, "round {round}");
            assert_eq!(decoder.buffered(), 0);
        }
    }

    fn error_of(bytes: &[u8]) -> ProtocolError {
        let mut decoder = Decoder::new();
        decoder.feed(bytes);
        match decoder.next_value() {
            Err(e) => {
                // The stream stays broken.
                assert_eq!(decoder.next_value(), Err(e));
                decoder.feed(b"+OK\r\n");
                assert_eq!(decoder.next_value(), Err(e));
                e
            }
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn malformed_input() {
        use ProtocolError::*;
        assert_eq!(error_of(b"!x\r\n"), UnknownType(b'!'));
        assert_eq!(error_of(b"%1\r\n"), UnknownType(b'%'));
        assert_eq!(error_of(b"_\r\n"), UnknownType(b'_'));
        assert_eq!(error_of(b"OK\r\n"), UnknownType(b'O'));
        assert_eq!(error_of(b"+O\rK\r\n"), BadLineEnd);
        assert_eq!(error_of(b"+OK\n"), BadLineEnd);
        assert_eq!(error_of(b":\r\n"), BadInteger);
        assert_eq!(error_of(b":+1\r\n"), BadInteger);
        assert_eq!(error_of(b":1 \r\n"), BadInteger);
        assert_eq!(error_of(b":-\r\n"), BadInteger);
        assert_eq!(error_of(b":9223372036854775808\r\n"), BadInteger);
        assert_eq!(error_of(b":-9223372036854775809\r\n"), BadInteger);
        assert_eq!(error_of(b":123456789012345678901"), LineTooLong);
        assert_eq!(error_of(b"$x\r\n"), BadInteger);
        assert_eq!(error_of(b"$-2\r\n"), BadLength);
        assert_eq!(error_of(b"*-2\r\n"), BadLength);
        assert_eq!(error_of(b"$3\r\nabcd\r\n"), BadLineEnd);
        assert_eq!(error_of(b"$3\r\nabc\n\r"), BadLineEnd);
        assert_eq!(error_of(b"*2\r\n:1\r\n?\r\n"), UnknownType(b'?'));
        // An error inside an array after a valid prefix.
        assert_eq!(error_of(b"*1\r\n$2\r\nab\rX"), BadLineEnd);
    }

    #[test]
    fn limits() {
        use ProtocolError::*;
        // A bulk at the limit is fine, one byte more is not, and is refused
        // from its header alone.
        let mut at_limit = format!("${MAX_BULK_LEN}\r\n").into_bytes();
        at_limit.extend(std::iter::repeat_n(b'a', MAX_BULK_LEN));
        at_limit.extend_from_slice(b"\r\n");
        let mut decoder = Decoder::new();
        decoder.feed(&at_limit);
        assert!(
            matches!(decoder.next_value(), Ok(Some(Value::Bulk(Some(b)))) if b.len() == MAX_BULK_LEN)
        );
        assert_eq!(
            error_of(format!("${}\r\n", MAX_BULK_LEN + 1).as_bytes()),
            BulkTooLong
        );
        assert_eq!(error_of(b"$99999999999999999999\r\n"), BadInteger);

        let mut decoder = Decoder::new();
        decoder.feed(format!("*{MAX_ARRAY_LEN}\r\n").as_bytes());
        for _ in 0..MAX_ARRAY_LEN {
            decoder.feed(b":1\r\n");
        }
        assert!(
            matches!(decoder.next_value(), Ok(Some(Value::Array(Some(items)))) if items.len() == MAX_ARRAY_LEN)
        );
        assert_eq!(
            error_of(format!("*{}\r\n", MAX_ARRAY_LEN + 1).as_bytes()),
            ArrayTooLong
        );

        let nested = |depth: usize| {
            let mut bytes = b"*1\r\n".repeat(depth);
            bytes.extend_from_slice(b":1\r\n");
            bytes
        };
        let mut decoder = Decoder::new();
        decoder.feed(&nested(MAX_DEPTH));
        assert!(matches!(decoder.next_value(), Ok(Some(_))));
        assert_eq!(error_of(&nested(MAX_DEPTH + 1)), TooDeep);

        // Two large bulks in one array: over the reply limit, refused as soon
        // as the second header arrives.
        let mut big = format!("*2\r\n${MAX_BULK_LEN}\r\n").into_bytes();
        big.extend(std::iter::repeat_n(b'a', MAX_BULK_LEN));
        big.extend_from_slice(format!("\r\n${MAX_BULK_LEN}\r\n").as_bytes());
        assert_eq!(error_of(&big), ReplyTooLarge);

        // A line that never ends.
        let mut endless = b"+".to_vec();
        endless.extend(std::iter::repeat_n(b'a', MAX_LINE_LEN + 1));
        assert_eq!(error_of(&endless), LineTooLong);
        let mut decoder = Decoder::new();
        decoder.feed(&endless[..MAX_LINE_LEN]);
        assert_eq!(decoder.next_value(), Ok(None));
    }

    #[test]
    fn buffer_is_reused() {
        let mut decoder = Decoder::new();
        for _ in 0..10_000 {
            decoder.feed(b":1\r\n:2");
            assert_eq!(decoder.next_value(), Ok(Some(Value::Integer(1))));
            assert_eq!(decoder.next_value(), Ok(None));
            decoder.feed(b"\r\n");
            assert_eq!(decoder.next_value(), Ok(Some(Value::Integer(2))));
        }
        assert!(decoder.buf.capacity() < 64);
    }
}
