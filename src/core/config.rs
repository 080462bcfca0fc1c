//! Directive arguments, parsed and checked without nginx.
//!
//! Every function here takes the directive's words as plain strings and returns
//! either typed values or a [`ConfError`] worded the way nginx words its own
//! errors (short, lower-case, bad value quoted, directive named). The FFI side
//! logs the message with `ngx_conf_log_error`, which appends "in FILE:LINE".

use core::fmt;

use crate::core::redis::url::{redact_raw, RedisUrl};

/// Smallest zone we accept: 8 pages, as nginx's own zone-based modules require.
pub const MIN_ZONE_SIZE: usize = 8 * 4096;
/// The zone `ticket_counter` uses when no `zone=` is given.
pub const DEFAULT_ZONE_NAME: &str = "ticket_default";
/// Size of the default zone when the configuration does not declare it.
pub const DEFAULT_ZONE_SIZE: usize = 1024 * 1024;
/// Tickets reserved ahead in the state file when `reserve=` is not given.
pub const DEFAULT_RESERVE: u64 = 10_000;
/// Largest `batch=`: one request may take at most this many tickets.
pub const MAX_BATCH: u64 = 1_000_000;
/// Largest `width=`: a u64 has at most 20 decimal digits.
pub const MAX_WIDTH: usize = 20;
/// Largest `reserve=`: after a crash a counter skips at most this many.
pub const MAX_RESERVE: u64 = 1_000_000_000;
/// Shortest `idle=`, in seconds.
pub const MIN_IDLE: u64 = 1;

/// A configuration error, ready to be logged at `emerg` level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError(pub String);

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quotes the word without a password it may carry (see [`redact_raw`]).
fn invalid_value(directive: &str, value: &str) -> ConfError {
    ConfError(format!(
        "invalid value \"{}\" in \"{directive}\" directive",
        redact_raw(value)
    ))
}

/// Parses a size the way `ngx_parse_size` does: digits with an optional
/// `k`/`K`, `m`/`M` or `g`/`G` suffix.
pub fn parse_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 1024),
        b'm' | b'M' => (&text[..text.len() - 1], 1024 * 1024),
        b'g' | b'G' => (&text[..text.len() - 1], 1024 * 1024 * 1024),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

fn parse_u64(directive: &str, param: &str, value: &str) -> Result<u64, ConfError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_value(directive, param));
    }
    value.parse().map_err(|_| invalid_value(directive, param))
}

/// Splits `name=value` words, rejecting unknown and repeated names.
fn named_params<'a>(
    directive: &str,
    words: &[&'a str],
    known: &[&str],
) -> Result<Vec<(&'a str, &'a str, &'a str)>, ConfError> {
    let mut seen: Vec<(&str, &str, &str)> = Vec::with_capacity(words.len());
    // A misspelled `redis=` (or a URL missing its `redis=`) may carry a
    // password: the error quotes the word without it.
    let invalid = |word: &str| {
        ConfError(format!(
            "invalid parameter \"{}\" in \"{directive}\" directive",
            redact_raw(word)
        ))
    };
    for &word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(invalid(word));
        };
        if !known.contains(&name) {
            return Err(invalid(word));
        }
        if seen.iter().any(|(n, _, _)| *n == name) {
            return Err(ConfError(format!(
                "duplicate parameter \"{name}=\" in \"{directive}\" directive"
            )));
        }
        seen.push((name, value, word));
    }
    Ok(seen)
}

/// Parses a time the way `ngx_parse_time` does, into milliseconds: digits
/// with an optional unit (`ms`, `s`, `m`, `h`, `d`, `w`, `M`, `y`; seconds
/// without one), several parts allowed (`1h30m`).
pub fn parse_msec(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return None;
    }
    let (mut total_ms, mut i): (u64, usize) = (0, 0);
    while i < bytes.len() {
        let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let value: u64 = text.get(i..i + digits)?.parse().ok()?;
        i += digits;
        let rest = &bytes[i..];
        let (unit_ms, len): (u64, usize) = match rest {
            [b'm', b's', ..] => (1, 2),
            [b's', ..] => (1000, 1),
            [b'm', ..] => (60_000, 1),
            [b'h', ..] => (3_600_000, 1),
            [b'd', ..] => (86_400_000, 1),
            [b'w', ..] => (604_800_000, 1),
            [b'M', ..] => (2_592_000_000, 1),
            [b'y', ..] => (31_536_000_000, 1),
            [] => (1000, 0),
            _ => return None,
        };
        i += len;
        total_ms = total_ms.checked_add(value.checked_mul(unit_ms)?)?;
    }
    Some(total_ms)
}

/// `redis=URL [redis_timeout=TIME] [redis_prefix=STRING] [redis_replicas=N]
/// [lease=N] [fence=N]` of a `ticket_zone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisArgs {
    pub url: RedisUrl,
    /// Connect and reply timeout.
    pub timeout_ms: u64,
    pub prefix: Vec<u8>,
    /// `WAIT` for this many replicas after each batch.
    pub replicas: u32,
    /// Lease mode: numbers taken this many at a time into the zone.
    pub lease: Option<u64>,
    /// How far counters skip ahead after Redis restarted or failed over.
    pub fence: u64,
    /// How far past its count a counter's durable ceiling goes (`reserve=`).
    pub reserve: u64,
}

/// Default of `redis_timeout=`.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 1000;
/// Default of `fence=`.
pub const DEFAULT_FENCE: u64 = 10_000;
/// Largest `lease=` and `fence=`.
pub const MAX_LEASE: u64 = 1_000_000_000;
/// Largest `redis_replicas=`.
pub const MAX_REPLICAS: u32 = 64;
/// Redis integers are signed 64-bit: the largest ticket of a Redis zone.
pub const REDIS_MAX_TICKET: u64 = i64::MAX as u64;

/// `ticket_zone NAME:SIZE [state=PATH] [reserve=N] [idle=TIME] [redis=URL …];`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneArgs<'a> {
    pub name: &'a str,
    pub size: usize,
    pub state: Option<&'a str>,
    pub reserve: u64,
    /// Milliseconds a key may stay unused before it is retired.
    pub idle: Option<u64>,
    pub redis: Option<RedisArgs>,
}

const ZONE_PARAMS: &[&str] = &[
    "state",
    "reserve",
    "idle",
    "redis",
    "redis_timeout",
    "redis_prefix",
    "redis_replicas",
    "lease",
    "fence",
];

const REDIS_ONLY: &[&str] = &[
    "redis_timeout",
    "redis_prefix",
    "redis_replicas",
    "lease",
    "fence",
];

fn between(directive: &str, word: &str, value: &str, min: u64, max: u64) -> Result<u64, ConfError> {
    let n = parse_u64(directive, word, value)?;
    if n < min || n > max {
        return Err(ConfError(format!(
            "invalid value \"{word}\" in \"{directive}\" directive, \
             it must be between {min} and {max}"
        )));
    }
    Ok(n)
}

pub fn parse_zone_args<'a>(words: &[&'a str]) -> Result<ZoneArgs<'a>, ConfError> {
    const DIRECTIVE: &str = "ticket_zone";
    let Some((&spec, params)) = words.split_first() else {
        return Err(ConfError(format!(
            "invalid number of arguments in \"{DIRECTIVE}\" directive"
        )));
    };
    let (name, size_text) = match spec.split_once(':') {
        Some((name, size)) if !name.is_empty() => (name, size),
        _ => {
            return Err(ConfError(format!(
                "invalid zone \"{spec}\" in \"{DIRECTIVE}\" directive, NAME:SIZE expected"
            )))
        }
    };
    let size = parse_size(size_text).ok_or_else(|| {
        ConfError(format!(
            "invalid zone size \"{size_text}\" in \"{DIRECTIVE}\" directive"
        ))
    })?;
    if size < MIN_ZONE_SIZE {
        return Err(ConfError(format!(
            "zone \"{name}\" is too small in \"{DIRECTIVE}\" directive: \"{size_text}\", \
             the minimum is 32k"
        )));
    }

    let mut args = ZoneArgs {
        name,
        size,
        state: None,
        reserve: DEFAULT_RESERVE,
        idle: None,
        redis: None,
    };
    let mut redis_url = None;
    let mut reserve = None;
    // Filled in as the parameters come; `url` is replaced by `redis=`'s.
    let mut redis = RedisArgs {
        url: RedisUrl {
            user: None,
            password: None,
            host: String::new(),
            port: 0,
            db: 0,
        },
        timeout_ms: DEFAULT_REDIS_TIMEOUT_MS,
        prefix: crate::core::redis::keys::DEFAULT_PREFIX.to_vec(),
        replicas: 0,
        lease: None,
        fence: DEFAULT_FENCE,
        reserve: DEFAULT_RESERVE,
    };
    for (param, value, word) in named_params(DIRECTIVE, params, ZONE_PARAMS)? {
        match param {
            "redis" => {
                redis_url = Some(RedisUrl::parse(value).map_err(|err| ConfError(err.0))?);
            }
            "redis_timeout" => match parse_msec(value) {
                Some(ms) if (1..=3_600_000).contains(&ms) => redis.timeout_ms = ms,
                _ => {
                    return Err(ConfError(format!(
                        "invalid value \"{word}\" in \"{DIRECTIVE}\" directive, \
                         it must be a time between 1ms and 1h"
                    )))
                }
            },
            "redis_prefix" => {
                if value.len() > 64 || value.bytes().any(|b| b.is_ascii_control()) {
                    return Err(invalid_value(DIRECTIVE, word));
                }
                redis.prefix = value.as_bytes().to_vec();
            }
            "redis_replicas" => {
                redis.replicas =
                    between(DIRECTIVE, word, value, 0, u64::from(MAX_REPLICAS))? as u32;
            }
            "lease" => redis.lease = Some(between(DIRECTIVE, word, value, 1, MAX_LEASE)?),
            "fence" => redis.fence = between(DIRECTIVE, word, value, 0, MAX_LEASE)?,
            "state" if value.is_empty() => return Err(invalid_value(DIRECTIVE, word)),
            "state" => args.state = Some(value),
            "idle" => match parse_msec(value) {
                Some(ms) if ms >= MIN_IDLE * 1000 => args.idle = Some(ms),
                _ => {
                    return Err(ConfError(format!(
                        "invalid value \"{word}\" in \"{DIRECTIVE}\" directive, \
                         it must be a time of at least 1s"
                    )))
                }
            },
            _ => reserve = Some((word, value)),
        }
    }
    if let Some((word, value)) = reserve {
        if args.state.is_none() && redis_url.is_none() {
            return Err(ConfError(format!(
                "\"reserve=\" needs \"state=\" or \"redis=\" in \"{DIRECTIVE}\" directive"
            )));
        }
        // A Redis zone may write every batch (0); a state file needs room.
        let least = if redis_url.is_some() { 0 } else { 1 };
        args.reserve = between(DIRECTIVE, word, value, least, MAX_RESERVE)?;
    }
    match redis_url {
        Some(url) => {
            if args.state.is_some() {
                return Err(ConfError(format!(
                    "\"state=\" and \"redis=\" cannot be combined in \"{DIRECTIVE}\" directive: \
                     Redis keeps the counters"
                )));
            }
            if !crate::core::redis::keys::valid_zone_name(name) {
                return Err(ConfError(format!(
                    "invalid zone name \"{name}\" for \"redis=\" in \"{DIRECTIVE}\" directive, \
                     only letters, digits, \"_\", \".\" and \"-\""
                )));
            }
            if redis.replicas > 0 {
                // `WAIT` covers what a connection itself wrote: a batch kept
                // in memory below a ceiling that another connection wrote
                // would be answered before any replica had that ceiling.
                if let Some((word, _)) = reserve.filter(|_| args.reserve > 0) {
                    return Err(ConfError(format!(
                        "\"{word}\" cannot be combined with \"redis_replicas=\" in \"{DIRECTIVE}\" \
                         directive: such a zone writes every batch and waits for its replicas"
                    )));
                }
                args.reserve = 0;
            }
            redis.url = url;
            redis.reserve = args.reserve;
            args.redis = Some(redis);
        }
        None => {
            if let Some(word) = params.iter().find(|w| {
                REDIS_ONLY
                    .iter()
                    .any(|p| w.split_once('=').is_some_and(|(n, _)| n == *p))
            }) {
                let name = word.split_once('=').map_or(*word, |(n, _)| n);
                return Err(ConfError(format!(
                    "\"{name}=\" needs \"redis=\" in \"{DIRECTIVE}\" directive"
                )));
            }
        }
    }
    Ok(args)
}

/// How a ticket is written in the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// `ticket_counter [zone=NAME] [key=VALUE] [start=N] [max=N] [batch=N]
/// [format=text|json] [width=N];` and, with fewer parameters, `ticket_variable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterArgs<'a> {
    pub zone: Option<&'a str>,
    /// A complex value: may contain variables.
    pub key: Option<&'a str>,
    pub start: u64,
    pub max: Option<u64>,
    pub batch: Option<u64>,
    pub format: Format,
    pub width: usize,
    /// `create=off`: only keys that exist are served.
    pub create: bool,
}

impl Default for CounterArgs<'_> {
    fn default() -> Self {
        CounterArgs {
            zone: None,
            key: None,
            start: 1,
            max: None,
            batch: None,
            format: Format::Text,
            width: 0,
            create: true,
        }
    }
}

const COUNTER_PARAMS: &[&str] = &[
    "zone", "key", "start", "max", "batch", "format", "width", "create",
];
const VARIABLE_PARAMS: &[&str] = &["zone", "key", "start", "max"];

pub fn parse_counter_args<'a>(words: &[&'a str]) -> Result<CounterArgs<'a>, ConfError> {
    parse_counter_params("ticket_counter", words, COUNTER_PARAMS)
}

fn parse_counter_params<'a>(
    directive: &str,
    words: &[&'a str],
    known: &[&str],
) -> Result<CounterArgs<'a>, ConfError> {
    let mut args = CounterArgs::default();
    for (param, value, word) in named_params(directive, words, known)? {
        match param {
            "zone" | "key" if value.is_empty() => return Err(invalid_value(directive, word)),
            "zone" => args.zone = Some(value),
            "key" => args.key = Some(value),
            "start" => {
                args.start = parse_u64(directive, word, value)?;
                // the shared counter stores start + 1, so u64::MAX is out of reach
                if args.start == u64::MAX {
                    return Err(invalid_value(directive, word));
                }
            }
            "max" => args.max = Some(parse_u64(directive, word, value)?),
            "batch" => {
                let batch = parse_u64(directive, word, value)?;
                if batch == 0 || batch > MAX_BATCH {
                    return Err(ConfError(format!(
                        "invalid value \"{word}\" in \"{directive}\" directive, \
                         it must be between 1 and {MAX_BATCH}"
                    )));
                }
                args.batch = Some(batch);
            }
            "format" => {
                args.format = match value {
                    "text" => Format::Text,
                    "json" => Format::Json,
                    _ => return Err(invalid_value(directive, word)),
                }
            }
            "create" => {
                args.create = match value {
                    "on" => true,
                    "off" => false,
                    _ => return Err(invalid_value(directive, word)),
                }
            }
            _ => {
                let width = parse_u64(directive, word, value)?;
                if width == 0 || width > MAX_WIDTH as u64 {
                    return Err(ConfError(format!(
                        "invalid value \"{word}\" in \"{directive}\" directive, \
                         it must be between 1 and {MAX_WIDTH}"
                    )));
                }
                args.width = width as usize;
            }
        }
    }
    if !args.create && args.key.is_none() {
        return Err(ConfError(format!(
            "\"create=off\" needs \"key=\" in \"{directive}\" directive"
        )));
    }
    if let Some(max) = args.max {
        if max < args.start {
            return Err(ConfError(format!(
                "\"max={max}\" is less than \"start={}\" in \"{directive}\" directive",
                args.start
            )));
        }
    }
    Ok(args)
}

/// `ticket_variable $NAME zone=NAME [key=VALUE] [start=N] [max=N];`
pub fn parse_variable_args<'a>(words: &[&'a str]) -> Result<(&'a str, CounterArgs<'a>), ConfError> {
    const DIRECTIVE: &str = "ticket_variable";
    let Some((&variable, params)) = words.split_first() else {
        return Err(ConfError(format!(
            "invalid number of arguments in \"{DIRECTIVE}\" directive"
        )));
    };
    let name = match variable.strip_prefix('$') {
        Some(name)
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            name
        }
        _ => {
            return Err(ConfError(format!(
                "invalid variable name \"{variable}\" in \"{DIRECTIVE}\" directive"
            )))
        }
    };
    let args = parse_counter_params(DIRECTIVE, params, VARIABLE_PARAMS)?;
    if args.zone.is_none() {
        return Err(ConfError(format!(
            "\"{DIRECTIVE}\" must have \"zone=\" parameter"
        )));
    }
    Ok((name, args))
}

/// How `ticket_status` writes its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFormat {
    #[default]
    Json,
    Prometheus,
}

/// `ticket_status [zone=NAME] [format=json|prometheus];`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusArgs<'a> {
    pub zone: Option<&'a str>,
    pub format: StatusFormat,
}

pub fn parse_status_args<'a>(words: &[&'a str]) -> Result<StatusArgs<'a>, ConfError> {
    const DIRECTIVE: &str = "ticket_status";
    let mut args = StatusArgs::default();
    for (param, value, word) in named_params(DIRECTIVE, words, &["zone", "format"])? {
        match (param, value) {
            ("zone", "") => return Err(invalid_value(DIRECTIVE, word)),
            ("zone", zone) => args.zone = Some(zone),
            (_, "json") => args.format = StatusFormat::Json,
            (_, "prometheus") => args.format = StatusFormat::Prometheus,
            _ => return Err(invalid_value(DIRECTIVE, word)),
        }
    }
    Ok(args)
}

/// `ticket_admin [zone=NAME];`
pub fn parse_admin_args<'a>(words: &[&'a str]) -> Result<Option<&'a str>, ConfError> {
    const DIRECTIVE: &str = "ticket_admin";
    let mut zone = None;
    for (_, value, word) in named_params(DIRECTIVE, words, &["zone"])? {
        if value.is_empty() {
            return Err(invalid_value(DIRECTIVE, word));
        }
        zone = Some(value);
    }
    Ok(zone)
}

/// `ticket_log_level info | notice | warn | error;`: nginx's log levels,
/// as `limit_req_log_level` takes them.
pub fn parse_log_level(words: &[&str]) -> Result<usize, ConfError> {
    const DIRECTIVE: &str = "ticket_log_level";
    match words {
        ["info"] => Ok(7),
        ["notice"] => Ok(6),
        ["warn"] => Ok(5),
        ["error"] => Ok(4),
        [word] => Err(invalid_value(DIRECTIVE, word)),
        _ => Err(ConfError(format!(
            "invalid number of arguments in \"{DIRECTIVE}\" directive"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_ngx_parse_size() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("32k"), Some(32 * 1024));
        assert_eq!(parse_size("10M"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("1g"), Some(1024 * 1024 * 1024));
        for bad in ["", "k", "1x", "-1", "1.5m", "m1", "1kk"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn zone_name_and_size() {
        let args = parse_zone_args(&["tickets:1m"]).unwrap();
        assert_eq!(args.name, "tickets");
        assert_eq!(args.size, 1024 * 1024);
        assert_eq!(args.state, None);
        assert_eq!(args.reserve, DEFAULT_RESERVE);
    }

    #[test]
    fn zone_errors_name_the_directive_and_quote_the_value() {
        let err = parse_zone_args(&["tickets:1x"]).unwrap_err().0;
        assert_eq!(err, "invalid zone size \"1x\" in \"ticket_zone\" directive");
        let err = parse_zone_args(&["tickets:8k"]).unwrap_err().0;
        assert!(err.contains("\"ticket_zone\""), "{err}");
        assert!(err.contains("\"8k\""), "{err}");
        assert!(err.contains("too small"), "{err}");
        let err = parse_zone_args(&["tickets"]).unwrap_err().0;
        assert!(
            err.starts_with("invalid zone \"tickets\" in \"ticket_zone\""),
            "{err}"
        );
        let err = parse_zone_args(&[":1m"]).unwrap_err().0;
        assert!(err.starts_with("invalid zone \":1m\""), "{err}");
        let err = parse_zone_args(&["t:1m", "colour=red"]).unwrap_err().0;
        assert_eq!(
            err,
            "invalid parameter \"colour=red\" in \"ticket_zone\" directive"
        );
        // A misspelled redis= or a bare URL: the error never shows a password.
        for (word, shown) in [
            (
                "Redis=redis://:hunter2@127.0.0.1:6379",
                "Redis=redis://:***@127.0.0.1:6379",
            ),
            (
                "redis_url=redis://alice:hunter2@h/1",
                "redis_url=redis://alice:***@h/1",
            ),
            ("redis://u:hunter2@h", "redis://u:***@h"),
        ] {
            let err = parse_zone_args(&["t:1m", word]).unwrap_err().0;
            assert!(!err.contains("hunter2"), "{err}");
            assert_eq!(
                err,
                format!("invalid parameter \"{shown}\" in \"ticket_zone\" directive")
            );
        }
    }

    #[test]
    fn zone_state_and_reserve() {
        let args = parse_zone_args(&["t:1m", "state=/var/lib/t.state", "reserve=500"]).unwrap();
        assert_eq!(args.state, Some("/var/lib/t.state"));
        assert_eq!(args.reserve, 500);
        assert!(parse_zone_args(&["t:1m", "state="]).is_err());
        assert!(parse_zone_args(&["t:1m", "state=a", "reserve=0"]).is_err());
        assert!(parse_zone_args(&["t:1m", "state=a", "reserve=x"]).is_err());
        assert_eq!(
            parse_zone_args(&["t:1m", "reserve=10"]).unwrap_err().0,
            "\"reserve=\" needs \"state=\" or \"redis=\" in \"ticket_zone\" directive"
        );
        // A Redis zone's durable ceiling: 0 writes every batch.
        let redis = |reserve: &'static str| parse_zone_args(&["t:1m", "redis=redis://h", reserve]);
        assert_eq!(redis("reserve=0").unwrap().reserve, 0);
        assert_eq!(redis("reserve=250").unwrap().reserve, 250);
        assert_eq!(
            parse_zone_args(&["t:1m", "redis=redis://h"])
                .unwrap()
                .reserve,
            DEFAULT_RESERVE
        );
        // redis_replicas= writes every batch
        let replicas = |extra: &'static str| {
            parse_zone_args(&["t:1m", "redis=redis://h", "redis_replicas=1", extra])
        };
        assert_eq!(replicas("fence=5").unwrap().reserve, 0);
        assert_eq!(replicas("reserve=0").unwrap().reserve, 0);
        assert_eq!(
            replicas("reserve=10").unwrap_err().0,
            "\"reserve=10\" cannot be combined with \"redis_replicas=\" in \"ticket_zone\" \
             directive: such a zone writes every batch and waits for its replicas"
        );
        assert_eq!(
            redis("reserve=1000000001").unwrap_err().0,
            "invalid value \"reserve=1000000001\" in \"ticket_zone\" directive, \
             it must be between 0 and 1000000000"
        );
        assert!(parse_zone_args(&["t:1m", "state=a", "reserve=1000000000"]).is_ok());
        let err = parse_zone_args(&["t:1m", "state=a", "reserve=9223372036854775808"])
            .unwrap_err()
            .0;
        assert_eq!(
            err,
            "invalid value \"reserve=9223372036854775808\" in \"ticket_zone\" directive, \
             it must be between 1 and 1000000000"
        );
        let err = parse_zone_args(&["t:1m", "state=a", "state=b"])
            .unwrap_err()
            .0;
        assert_eq!(
            err,
            "duplicate parameter \"state=\" in \"ticket_zone\" directive"
        );
    }

    #[test]
    fn zone_redis() {
        let args = parse_zone_args(&[
            "t:1m",
            "redis=redis://:secret@127.0.0.1:6380/2",
            "redis_timeout=200ms",
            "redis_prefix=app:",
            "redis_replicas=1",
            "lease=500",
            "fence=20000",
        ])
        .unwrap();
        let redis = args.redis.unwrap();
        assert_eq!(redis.url.port, 6380);
        assert_eq!(redis.timeout_ms, 200);
        assert_eq!(redis.prefix, b"app:");
        assert_eq!(
            (redis.replicas, redis.lease, redis.fence),
            (1, Some(500), 20_000)
        );
        let defaults = parse_zone_args(&["t:1m", "redis=redis://h"])
            .unwrap()
            .redis
            .unwrap();
        assert_eq!(defaults.prefix, b"ticket:");
        assert_eq!(
            (defaults.timeout_ms, defaults.fence, defaults.lease),
            (1000, 10_000, None)
        );
        let err = parse_zone_args(&["t:1m", "redis=redis://u:hunter2@h:0"])
            .unwrap_err()
            .0;
        assert!(err.contains("\"ticket_zone\""), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        for (words, message) in [
            (
                &["t:1m", "lease=5"][..],
                "\"lease=\" needs \"redis=\" in \"ticket_zone\" directive",
            ),
            (
                &["t:1m", "redis=redis://h", "state=/x"][..],
                "cannot be combined",
            ),
            (
                &["t.x!:1m", "redis=redis://h"][..],
                "invalid zone name \"t.x!\"",
            ),
            (&["t:1m", "redis=redis://h", "lease=0"][..], "between 1 and"),
            (
                &["t:1m", "redis=redis://h", "redis_timeout=0"][..],
                "between 1ms and 1h",
            ),
            (
                &["t:1m", "redis=redis://h", "redis_replicas=65"][..],
                "between 0 and 64",
            ),
        ] {
            let err = parse_zone_args(words).unwrap_err().0;
            assert!(err.contains(message), "{words:?}: {err}");
        }
    }

    #[test]
    fn zone_idle() {
        assert_eq!(
            parse_zone_args(&["t:1m", "idle=1h"]).unwrap().idle,
            Some(3_600_000)
        );
        assert_eq!(
            parse_zone_args(&["t:1m", "idle=90"]).unwrap().idle,
            Some(90_000)
        );
        assert_eq!(parse_zone_args(&["t:1m"]).unwrap().idle, None);
        for bad in [
            "idle=0",
            "idle=500ms",
            "idle=",
            "idle=1x",
            "idle=s",
            "idle=0s",
        ] {
            let err = parse_zone_args(&["t:1m", bad]).unwrap_err().0;
            assert!(err.contains("at least 1s"), "{bad}: {err}");
        }
    }

    #[test]
    fn times_follow_ngx_parse_time() {
        assert_eq!(parse_msec("30"), Some(30_000));
        assert_eq!(parse_msec("30s"), Some(30_000));
        assert_eq!(parse_msec("5m"), Some(300_000));
        assert_eq!(parse_msec("1h30m"), Some(5_400_000));
        assert_eq!(parse_msec("1d"), Some(86_400_000));
        assert_eq!(parse_msec("1500ms"), Some(1500));
        assert_eq!(parse_msec("1w"), Some(604_800_000));
        for bad in ["", "m", "1x", "-1", "1.5h", "99999999999999999999y"] {
            assert_eq!(parse_msec(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn admin_and_log_level() {
        assert_eq!(parse_admin_args(&[]).unwrap(), None);
        assert_eq!(parse_admin_args(&["zone=z"]).unwrap(), Some("z"));
        assert!(parse_admin_args(&["zone="]).is_err());
        assert!(parse_admin_args(&["key=k"]).is_err());
        assert_eq!(parse_log_level(&["notice"]).unwrap(), 6);
        assert_eq!(
            parse_log_level(&["loud"]).unwrap_err().0,
            "invalid value \"loud\" in \"ticket_log_level\" directive"
        );
        assert!(parse_log_level(&[]).is_err());
    }

    #[test]
    fn counter_defaults() {
        let args = parse_counter_args(&[]).unwrap();
        assert_eq!(args, CounterArgs::default());
        assert_eq!(args.start, 1);
    }

    #[test]
    fn counter_all_parameters() {
        let args = parse_counter_args(&[
            "zone=z",
            "key=$arg_event",
            "start=5",
            "max=20",
            "batch=3",
            "format=json",
            "width=10",
        ])
        .unwrap();
        assert_eq!(
            args,
            CounterArgs {
                zone: Some("z"),
                key: Some("$arg_event"),
                start: 5,
                max: Some(20),
                batch: Some(3),
                format: Format::Json,
                width: 10,
                create: true,
            }
        );
        assert!(
            !parse_counter_args(&["key=$x", "create=off"])
                .unwrap()
                .create
        );
        assert_eq!(
            parse_counter_args(&["create=off"]).unwrap_err().0,
            "\"create=off\" needs \"key=\" in \"ticket_counter\" directive"
        );
        assert!(parse_counter_args(&["key=$x", "create=no"]).is_err());
    }

    #[test]
    fn counter_errors() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["zone="],
                "invalid value \"zone=\" in \"ticket_counter\" directive",
            ),
            (
                &["key="],
                "invalid value \"key=\" in \"ticket_counter\" directive",
            ),
            (
                &["start=-1"],
                "invalid value \"start=-1\" in \"ticket_counter\" directive",
            ),
            (
                &["max=ten"],
                "invalid value \"max=ten\" in \"ticket_counter\" directive",
            ),
            (
                &["format=xml"],
                "invalid value \"format=xml\" in \"ticket_counter\" directive",
            ),
            (
                &["zonez"],
                "invalid parameter \"zonez\" in \"ticket_counter\" directive",
            ),
            (
                &["size=1"],
                "invalid parameter \"size=1\" in \"ticket_counter\" directive",
            ),
            (
                &["start=5", "max=4"],
                "\"max=4\" is less than \"start=5\" in \"ticket_counter\" directive",
            ),
        ];
        for (words, message) in cases {
            assert_eq!(
                parse_counter_args(words).unwrap_err().0,
                *message,
                "{words:?}"
            );
        }
        assert!(parse_counter_args(&["batch=0"]).is_err());
        assert!(parse_counter_args(&["width=0"]).is_err());
        assert!(parse_counter_args(&["width=21"]).is_err());
        assert!(parse_counter_args(&["start=18446744073709551615"]).is_err());
        assert!(parse_counter_args(&["start=18446744073709551616"]).is_err());
        assert!(parse_counter_args(&["start=1", "max=1"]).is_ok());
    }

    #[test]
    fn variable_needs_a_name_and_a_zone() {
        let (name, args) = parse_variable_args(&["$ticket", "zone=z", "max=3"]).unwrap();
        assert_eq!(name, "ticket");
        assert_eq!(args.max, Some(3));
        assert!(parse_variable_args(&["ticket", "zone=z"]).is_err());
        assert!(parse_variable_args(&["$", "zone=z"]).is_err());
        assert_eq!(
            parse_variable_args(&["$t"]).unwrap_err().0,
            "\"ticket_variable\" must have \"zone=\" parameter"
        );
        assert!(parse_variable_args(&["$t", "zone=z", "format=json"]).is_err());
    }

    #[test]
    fn status_parameters() {
        assert_eq!(parse_status_args(&[]).unwrap(), StatusArgs::default());
        let args = parse_status_args(&["zone=z", "format=prometheus"]).unwrap();
        assert_eq!(args.zone, Some("z"));
        assert_eq!(args.format, StatusFormat::Prometheus);
        assert!(parse_status_args(&["format=yaml"]).is_err());
    }
}
