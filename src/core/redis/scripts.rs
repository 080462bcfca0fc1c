//! The Lua scripts that keep the counters in Redis, their arguments and their
//! replies.
//!
//! Scripts are loaded with `SCRIPT LOAD` when a connection opens (Redis
//! returns the SHA-1, so none is computed here) and run with `EVALSHA`. Every
//! script starts with `helpers.lua`: counts may reach 2^63-1, which Lua's
//! doubles cannot hold, so the scripts keep them as decimal strings (with a
//! fast path below 10^15).
//!
//! A count is the number of tickets issued; ticket = start + index. The value
//! stored at a counter's key is its count, a plain integer an operator may SET.

use core::fmt;

use super::keys::CounterKeys;
use super::reply::{self, ReplyError, MAX_COUNT};
use super::resp::{Command, Value};

/// Most tickets one request may take (the scripts refuse more), so that a
/// batch's total stays exact in Lua.
pub const MAX_REQUEST_COUNT: u64 = 1_000_000_000;
/// Most requests in one `take` (the scripts refuse more).
pub const MAX_TAKE_REQUESTS: usize = 1024;
/// Largest `idle_ms`: the scripts take at most 15 digits.
pub const MAX_IDLE_MS: u64 = 999_999_999_999_999;
/// Longest epoch (random hex chosen by the first node to write a zone).
pub const MAX_EPOCH_LEN: usize = 64;
/// Longest Redis `run_id` accepted (Redis uses 40 hex digits).
pub const MAX_RUN_ID_LEN: usize = 64;

macro_rules! script_source {
    ($file:literal) => {
        concat!(include_str!("helpers.lua"), include_str!($file))
    };
}

/// One of the scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Script {
    Take,
    Fence,
    AdminGet,
    AdminSet,
    AdminDel,
}

impl Script {
    /// Every script, in the order the handshake loads them.
    pub const ALL: [Script; 5] = [
        Script::Take,
        Script::Fence,
        Script::AdminGet,
        Script::AdminSet,
        Script::AdminDel,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Script::Take => "take",
            Script::Fence => "fence",
            Script::AdminGet => "admin_get",
            Script::AdminSet => "admin_set",
            Script::AdminDel => "admin_del",
        }
    }

    /// The Lua text, helpers included.
    pub fn source(self) -> &'static str {
        match self {
            // its fast path first, before the helpers are defined
            Script::Take => concat!(
                include_str!("take_fast.lua"),
                include_str!("helpers.lua"),
                include_str!("take.lua")
            ),
            Script::Fence => script_source!("fence.lua"),
            Script::AdminGet => script_source!("admin_get.lua"),
            Script::AdminSet => script_source!("admin_set.lua"),
            Script::AdminDel => script_source!("admin_del.lua"),
        }
    }

    /// Appends `SCRIPT LOAD <source>`; the reply is the script's SHA-1.
    pub fn encode_load(self, out: &mut Vec<u8>) {
        let mut command = Command::new(out);
        command
            .arg(b"SCRIPT")
            .arg(b"LOAD")
            .arg(self.source().as_bytes());
        command.finish();
    }
}

/// A loaded script's SHA-1, as Redis returned it (40 lower-case hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScriptSha([u8; 40]);

impl ScriptSha {
    /// Reads the reply to `SCRIPT LOAD`.
    pub fn from_reply(value: &Value) -> Result<ScriptSha, ReplyError> {
        match value {
            Value::Bulk(Some(text)) => {
                let sha: [u8; 40] = text
                    .as_slice()
                    .try_into()
                    .map_err(|_| ReplyError::Malformed("script SHA-1 is not 40 bytes"))?;
                if sha
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
                {
                    Ok(ScriptSha(sha))
                } else {
                    Err(ReplyError::Malformed("script SHA-1 is not hex"))
                }
            }
            Value::Error(message) => Err(reply::error_reply(message)),
            _ => Err(ReplyError::Malformed("script SHA-1 is not a bulk string")),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ScriptSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// The SHA-1 of every script on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptShas {
    pub take: ScriptSha,
    pub fence: ScriptSha,
    pub admin_get: ScriptSha,
    pub admin_set: ScriptSha,
    pub admin_del: ScriptSha,
}

impl ScriptShas {
    pub fn get(&self, script: Script) -> &ScriptSha {
        match script {
            Script::Take => &self.take,
            Script::Fence => &self.fence,
            Script::AdminGet => &self.admin_get,
            Script::AdminSet => &self.admin_set,
            Script::AdminDel => &self.admin_del,
        }
    }
}

/// An argument the scripts would refuse; a bug at the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgError {
    /// A count above 2^63-1.
    CountTooLarge(&'static str),
    IdleTooLarge,
    /// Not 1 to 64 hex digits.
    BadEpochCandidate,
    BadRunId,
    /// A request for 0 or more than [`MAX_REQUEST_COUNT`] tickets.
    BadRequestCount,
    TooManyRequests,
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::CountTooLarge(what) => write!(f, "{what} is above 2^63-1"),
            ArgError::IdleTooLarge => write!(f, "idle time above {MAX_IDLE_MS} ms"),
            ArgError::BadEpochCandidate => f.write_str("epoch candidate is not 1 to 64 hex digits"),
            ArgError::BadRunId => f.write_str("run_id is not 1 to 64 bytes"),
            ArgError::BadRequestCount => {
                write!(f, "a request must take 1 to {MAX_REQUEST_COUNT} tickets")
            }
            ArgError::TooManyRequests => write!(f, "more than {MAX_TAKE_REQUESTS} requests"),
        }
    }
}

impl std::error::Error for ArgError {}

/// Hex text of 16 random bytes, for `epoch_candidate`.
pub fn epoch_candidate(random: &[u8; 16]) -> [u8; 32] {
    let mut hex = [b'0'; 32];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(random) {
        for (slot, nibble) in pair.iter_mut().zip([byte >> 4, byte & 0xf]) {
            *slot = if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + nibble - 10
            };
        }
    }
    hex
}

fn check_count(n: u64, what: &'static str) -> Result<u64, ArgError> {
    if n > MAX_COUNT {
        Err(ArgError::CountTooLarge(what))
    } else {
        Ok(n)
    }
}

fn check_epoch(candidate: &[u8]) -> Result<&[u8], ArgError> {
    let hex = candidate.iter().all(u8::is_ascii_hexdigit);
    if candidate.is_empty() || candidate.len() > MAX_EPOCH_LEN || !hex {
        return Err(ArgError::BadEpochCandidate);
    }
    Ok(candidate)
}

fn check_idle(idle_ms: u64) -> Result<u64, ArgError> {
    if idle_ms > MAX_IDLE_MS {
        Err(ArgError::IdleTooLarge)
    } else {
        Ok(idle_ms)
    }
}

/// Starts `EVALSHA sha numkeys keys...`.
fn evalsha<'a>(out: &'a mut Vec<u8>, sha: &ScriptSha, keys: &[&[u8]]) -> Command<'a> {
    let mut command = Command::new(out);
    command
        .arg(b"EVALSHA")
        .arg(sha.as_bytes())
        .arg_u64(keys.len() as u64);
    for key in keys {
        command.arg(key);
    }
    command
}

// ---------------------------------------------------------------- take

/// How many tickets a counter may issue, from its `start=` and `max=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeLimit {
    pub start: u64,
    /// Largest count: min(max, 2^63-1) - start + 1, capped at 2^63-1.
    pub limit: u64,
    /// Whether `max=` set the limit (refusals are "sold out"), rather than
    /// the 2^63-1 ceiling (refusals are "exhausted").
    pub by_max: bool,
}

impl TakeLimit {
    pub fn new(start: u64, max: Option<u64>) -> TakeLimit {
        let (top, mut by_max) = match max {
            Some(max) if max <= MAX_COUNT => (max, true),
            _ => (MAX_COUNT, false),
        };
        let limit = match top.checked_sub(start) {
            None => 0,
            Some(span) => match span.checked_add(1) {
                Some(limit) if limit <= MAX_COUNT => limit,
                _ => {
                    by_max = false;
                    MAX_COUNT
                }
            },
        };
        TakeLimit {
            start,
            limit,
            by_max,
        }
    }
}

/// Arguments of `take` other than the keys and the request counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeArgs<'a> {
    /// [`TakeLimit::limit`].
    pub limit: u64,
    /// How far a counter skips ahead after Redis may have lost writes.
    pub fence: u64,
    /// Expiry of an idle keyed counter; 0 = never (always 0 for the default).
    pub idle_ms: u64,
    /// Unix time in seconds, stored as the counter's last use.
    pub now: u64,
    pub epoch_candidate: &'a [u8],
    /// The zone epoch this node last saw.
    pub known_epoch: Option<&'a [u8]>,
    /// The counter generation this node last saw.
    pub known_generation: Option<u64>,
    /// The highest count this node handed out for this counter; 0 = none.
    pub floor: u64,
    /// Lease mode: grant part of a request rather than nothing.
    pub partial: bool,
    /// How far past its count a counter's durable ceiling goes: batches below
    /// it change the count in memory only; 0 = every batch is written.
    pub reserve: u64,
}

/// Appends the `EVALSHA` of `take` for requests of `counts` tickets, in
/// arrival order. On error nothing is appended.
pub fn encode_take<I>(
    out: &mut Vec<u8>,
    sha: &ScriptSha,
    keys: &CounterKeys,
    args: &TakeArgs<'_>,
    counts: I,
) -> Result<(), ArgError>
where
    I: IntoIterator<Item = u64>,
{
    check_count(args.limit, "limit")?;
    check_count(args.fence, "fence")?;
    check_count(args.now, "now")?;
    check_count(args.floor, "floor")?;
    check_count(args.reserve, "reserve")?;
    check_idle(args.idle_ms)?;
    let candidate = check_epoch(args.epoch_candidate)?;
    let mut command = evalsha(
        out,
        sha,
        &[&keys.counter, &keys.counter_meta, &keys.zone_meta],
    );
    command
        .arg_u64(args.limit)
        .arg_u64(args.fence)
        .arg_u64(args.idle_ms)
        .arg_u64(args.now)
        .arg(candidate)
        .arg(args.known_epoch.unwrap_or(b""));
    match args.known_generation {
        Some(generation) => command.arg_u64(check_count(generation, "known generation")?),
        None => command.arg(b""),
    };
    command
        .arg_u64(args.floor)
        .arg(if args.partial { b"1" } else { b"0" })
        .arg_u64(args.reserve);
    let mut requests = 0usize;
    for count in counts {
        if count == 0 || count > MAX_REQUEST_COUNT {
            return Err(ArgError::BadRequestCount);
        }
        requests += 1;
        if requests > MAX_TAKE_REQUESTS {
            return Err(ArgError::TooManyRequests);
        }
        command.arg_u64(count);
    }
    command.finish();
    Ok(())
}

/// What `take` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeReply {
    /// The zone's epoch; a change since the last reply means its metadata was
    /// lost.
    pub epoch: Vec<u8>,
    /// The counter's generation; a change means it was retired (deleted or
    /// expired) and began a new life.
    pub generation: u64,
    /// The count before this batch's grants (after any repair or fence).
    pub issued_before: u64,
    /// The counter was raised to this node's floor.
    pub repaired: bool,
    /// The counter skipped ahead after a Redis restart.
    pub fenced: bool,
    /// Tickets granted to each request, in the order they were sent (the
    /// script lists them only when a request got less than it asked).
    pub grants: Vec<u64>,
}

/// One request's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeOutcome {
    /// Tickets `first ..= first + count - 1`. In lease mode `count` may be
    /// less than requested.
    Tickets { first: u64, count: u64 },
    /// Refused by `max=` (410).
    SoldOut,
    /// Refused by the 2^63-1 ceiling.
    Exhausted,
}

impl TakeReply {
    /// The reply to a `take` of requests for `asked` tickets each (in the
    /// order sent): without grants listed, every request got what it asked.
    pub fn parse(value: Value, asked: &[u64]) -> Result<TakeReply, ReplyError> {
        let items = reply::array(value, 5)?;
        let grants = match items.get(5..) {
            Some(listed) if !listed.is_empty() => listed
                .iter()
                .map(|grant| reply::count(Some(grant), "grant"))
                .collect::<Result<Vec<u64>, ReplyError>>()?,
            _ => asked.to_vec(),
        };
        Ok(TakeReply {
            epoch: reply::bytes(items.first(), MAX_EPOCH_LEN, "epoch")?,
            generation: reply::count(items.get(1), "generation")?,
            issued_before: reply::count(items.get(2), "count")?,
            repaired: reply::flag(items.get(3), "repaired")?,
            fenced: reply::flag(items.get(4), "fenced")?,
            grants,
        })
    }

    /// The count after this batch: the node's new floor for the counter.
    pub fn issued_after(&self) -> Option<u64> {
        self.grants
            .iter()
            .try_fold(self.issued_before, |issued, grant| {
                issued.checked_add(*grant)
            })
            .filter(|issued| *issued <= MAX_COUNT)
    }

    /// Each request's tickets, given the counts sent (in the same order).
    /// Fails if the grants do not fit the requests or the limit.
    pub fn outcomes<I>(&self, limit: &TakeLimit, counts: I) -> Result<Vec<TakeOutcome>, ReplyError>
    where
        I: IntoIterator<Item = u64>,
    {
        let refused = if limit.by_max {
            TakeOutcome::SoldOut
        } else {
            TakeOutcome::Exhausted
        };
        let mismatch = || ReplyError::Malformed("grants do not match the requests");
        let mut outcomes = Vec::with_capacity(self.grants.len());
        let mut issued = self.issued_before;
        let mut counts = counts.into_iter();
        for &grant in &self.grants {
            let wanted = counts.next().ok_or_else(mismatch)?;
            if grant > wanted {
                return Err(mismatch());
            }
            if grant == 0 {
                outcomes.push(refused);
                continue;
            }
            let after = issued
                .checked_add(grant)
                .filter(|after| *after <= limit.limit)
                .ok_or(ReplyError::Malformed("grants pass the limit"))?;
            let first = limit
                .start
                .checked_add(issued)
                .ok_or(ReplyError::Malformed("ticket overflows"))?;
            outcomes.push(TakeOutcome::Tickets {
                first,
                count: grant,
            });
            issued = after;
        }
        if counts.next().is_some() {
            return Err(mismatch());
        }
        Ok(outcomes)
    }
}

// ---------------------------------------------------------------- fence

/// Arguments of `fence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceArgs<'a> {
    /// The `run_id` of the Redis this connection talks to.
    pub run_id: &'a [u8],
    /// The `run_id` this node last saw for the zone.
    pub known_run: Option<&'a [u8]>,
    pub epoch_candidate: &'a [u8],
    /// The highest fence epoch this node saw for the zone (0: none).
    pub known_fence: u64,
}

/// Appends the `EVALSHA` of `fence` for the zone whose metadata hash is
/// `zone_meta`.
pub fn encode_fence(
    out: &mut Vec<u8>,
    sha: &ScriptSha,
    zone_meta: &[u8],
    args: &FenceArgs<'_>,
) -> Result<(), ArgError> {
    let candidate = check_epoch(args.epoch_candidate)?;
    if args.run_id.is_empty() || args.run_id.len() > MAX_RUN_ID_LEN {
        return Err(ArgError::BadRunId);
    }
    check_count(args.known_fence, "known fence")?;
    let mut command = evalsha(out, sha, &[zone_meta]);
    command
        .arg(args.run_id)
        .arg(args.known_run.unwrap_or(b""))
        .arg(candidate)
        .arg_u64(args.known_fence);
    command.finish();
    Ok(())
}

/// What `fence` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceReply {
    pub epoch: Vec<u8>,
    /// The zone's fence epoch: how many restarts it has been fenced against.
    pub fence_epoch: u64,
    /// This call raised the fence epoch.
    pub fenced: bool,
}

impl FenceReply {
    pub fn parse(value: Value) -> Result<FenceReply, ReplyError> {
        let items = reply::array(value, 3)?;
        Ok(FenceReply {
            epoch: reply::bytes(items.first(), MAX_EPOCH_LEN, "epoch")?,
            fence_epoch: reply::count(items.get(1), "fence epoch")?,
            fenced: reply::flag(items.get(2), "fenced")?,
        })
    }
}

// ---------------------------------------------------------------- admin

/// Appends the `EVALSHA` of `admin_get`.
pub fn encode_admin_get(out: &mut Vec<u8>, sha: &ScriptSha, keys: &CounterKeys) {
    evalsha(out, sha, &[&keys.counter, &keys.counter_meta]).finish();
}

/// A counter's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminGetReply {
    /// The counter or its metadata exists.
    pub exists: bool,
    /// Its count, if the counter key exists.
    pub issued: Option<u64>,
    pub generation: Option<u64>,
    /// Unix time of its last take or set.
    pub last_used: Option<u64>,
}

impl AdminGetReply {
    pub fn parse(value: Value) -> Result<AdminGetReply, ReplyError> {
        let items = reply::array(value, 4)?;
        Ok(AdminGetReply {
            exists: reply::flag(items.first(), "exists")?,
            issued: reply::optional_count(items.get(1), "count")?,
            generation: reply::optional_count(items.get(2), "generation")?,
            last_used: reply::optional_count(items.get(3), "last use")?,
        })
    }
}

/// Arguments of `admin_set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminSetArgs<'a> {
    /// The count to store: next ticket - start (see [`admin_set_count`]).
    pub new_count: u64,
    pub idle_ms: u64,
    pub now: u64,
    pub epoch_candidate: &'a [u8],
}

/// The count that makes `next_ticket` the next ticket handed out, or `None`
/// if it is below `start` or beyond the ceiling.
pub fn admin_set_count(start: u64, next_ticket: u64) -> Option<u64> {
    next_ticket
        .checked_sub(start)
        .filter(|count| *count <= MAX_COUNT)
}

/// Appends the `EVALSHA` of `admin_set`.
pub fn encode_admin_set(
    out: &mut Vec<u8>,
    sha: &ScriptSha,
    keys: &CounterKeys,
    args: &AdminSetArgs<'_>,
) -> Result<(), ArgError> {
    check_count(args.new_count, "new count")?;
    check_count(args.now, "now")?;
    check_idle(args.idle_ms)?;
    let candidate = check_epoch(args.epoch_candidate)?;
    let mut command = evalsha(
        out,
        sha,
        &[&keys.counter, &keys.counter_meta, &keys.zone_meta],
    );
    command
        .arg_u64(args.new_count)
        .arg_u64(args.idle_ms)
        .arg_u64(args.now)
        .arg(candidate);
    command.finish();
    Ok(())
}

/// What `admin_set` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminSetReply {
    /// Refused: the counter already issued more (409).
    WouldReissue {
        issued: u64,
    },
    Set {
        issued_before: u64,
        generation: u64,
    },
}

impl AdminSetReply {
    pub fn parse(value: Value) -> Result<AdminSetReply, ReplyError> {
        let items = reply::array(value, 2)?;
        if !reply::flag(items.first(), "set")? {
            return Ok(AdminSetReply::WouldReissue {
                issued: reply::count(items.get(1), "count")?,
            });
        }
        Ok(AdminSetReply::Set {
            issued_before: reply::count(items.get(1), "count")?,
            generation: reply::count(items.get(2), "generation")?,
        })
    }
}

/// Appends the `EVALSHA` of `admin_del`.
pub fn encode_admin_del(out: &mut Vec<u8>, sha: &ScriptSha, keys: &CounterKeys) {
    evalsha(
        out,
        sha,
        &[&keys.counter, &keys.counter_meta, &keys.zone_meta],
    )
    .finish();
}

/// Appends the `WAIT` that follows a batch when `redis_replicas=` is set.
/// Redis answers it within half the link's reply timeout (at least 1 ms:
/// `WAIT n 0` would block for ever), so its answer, however few replicas
/// acknowledged, comes before the link gives up waiting for a reply.
pub fn encode_wait(out: &mut Vec<u8>, replicas: u64, reply_timeout_ms: u64) {
    let mut command = Command::new(out);
    command
        .arg(b"WAIT")
        .arg_u64(replicas)
        .arg_u64((reply_timeout_ms / 2).max(1));
    command.finish();
}

/// Whether `admin_del` found the counter.
pub fn parse_admin_del(value: Value) -> Result<bool, ReplyError> {
    match value {
        Value::Error(message) => Err(reply::error_reply(&message)),
        other => reply::flag(Some(&other), "existed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::redis::keys::{ZoneKeys, DEFAULT_PREFIX};
    use crate::core::redis::resp::Decoder;

    const SHA: &[u8; 40] = b"0123456789abcdef0123456789abcdef01234567";

    fn sha() -> ScriptSha {
        ScriptSha::from_reply(&Value::Bulk(Some(SHA.to_vec()))).unwrap()
    }

    fn keys() -> CounterKeys {
        ZoneKeys::new(DEFAULT_PREFIX, "z")
            .unwrap()
            .counter(Some(b"k"))
            .unwrap()
    }

    /// The command's arguments, decoded back.
    fn args_of(bytes: &[u8]) -> Vec<String> {
        let mut decoder = Decoder::new();
        decoder.feed(bytes);
        let Some(Value::Array(Some(items))) = decoder.next_value().unwrap() else {
            panic!("not a command");
        };
        assert_eq!(decoder.buffered(), 0);
        items
            .iter()
            .map(|item| String::from_utf8(item.as_bytes().unwrap().to_vec()).unwrap())
            .collect()
    }

    fn bulk(text: &str) -> Value {
        Value::Bulk(Some(text.as_bytes().to_vec()))
    }

    fn int(n: i64) -> Value {
        Value::Integer(n)
    }

    fn take_args() -> TakeArgs<'static> {
        TakeArgs {
            limit: 100,
            fence: 1000,
            idle_ms: 0,
            now: 1_700_000_000,
            epoch_candidate: b"00ff",
            known_epoch: None,
            known_generation: None,
            floor: 0,
            partial: false,
            reserve: 0,
        }
    }

    #[test]
    fn sources_include_the_helpers() {
        for script in Script::ALL {
            let helpers = script.source().find("-- Shared helpers");
            if script == Script::Take {
                // its fast path first: it uses none of them
                assert!(script.source().starts_with("-- take's fast path"));
                assert!(helpers.is_some_and(|at| at > 0));
            } else {
                assert_eq!(helpers, Some(0));
            }
            assert!(script.source().contains(&format!("-- {}:", script.name())));
            let mut out = Vec::new();
            script.encode_load(&mut out);
            let args = args_of(&out);
            assert_eq!(args[..2], ["SCRIPT", "LOAD"]);
            assert_eq!(args[2], script.source());
        }
    }

    #[test]
    fn shas() {
        assert_eq!(sha().as_bytes(), SHA);
        assert!(ScriptSha::from_reply(&bulk("0123")).is_err());
        assert!(ScriptSha::from_reply(&bulk(&"A".repeat(40))).is_err());
        assert!(ScriptSha::from_reply(&int(1)).is_err());
        assert_eq!(
            ScriptSha::from_reply(&Value::Error(b"NOPERM x".to_vec())),
            Err(ReplyError::Server("NOPERM x".into()))
        );
    }

    #[test]
    fn epoch_candidates() {
        let mut random = [0u8; 16];
        random[0] = 0xab;
        random[15] = 0x09;
        assert_eq!(
            &epoch_candidate(&random),
            b"ab000000000000000000000000000009"
        );
    }

    #[test]
    fn take_arguments() {
        let mut out = Vec::new();
        encode_take(&mut out, &sha(), &keys(), &take_args(), [1, 5]).unwrap();
        assert_eq!(
            args_of(&out),
            [
                "EVALSHA",
                std::str::from_utf8(SHA).unwrap(),
                "3",
                "ticket:z:k",
                "ticket:z;k",
                "ticket:z;",
                "100",
                "1000",
                "0",
                "1700000000",
                "00ff",
                "",
                "",
                "0",
                "0",
                "0",
                "1",
                "5",
            ]
        );
        let mut out = Vec::new();
        let args = TakeArgs {
            known_epoch: Some(b"beef"),
            known_generation: Some(7),
            floor: MAX_COUNT,
            partial: true,
            idle_ms: 60_000,
            reserve: 10_000,
            ..take_args()
        };
        encode_take(&mut out, &sha(), &keys(), &args, []).unwrap();
        assert_eq!(
            args_of(&out)[6..],
            [
                "100",
                "1000",
                "60000",
                "1700000000",
                "00ff",
                "beef",
                "7",
                "9223372036854775807",
                "1",
                "10000"
            ]
        );
    }

    #[test]
    fn take_argument_errors_leave_nothing() {
        let mut out = b"before".to_vec();
        let bad = |args: TakeArgs<'static>, counts: Vec<u64>| {
            let mut out = b"before".to_vec();
            let result = encode_take(&mut out, &sha(), &keys(), &args, counts);
            assert_eq!(out, b"before");
            result
        };
        assert_eq!(bad(take_args(), vec![1, 0]), Err(ArgError::BadRequestCount));
        assert_eq!(
            bad(take_args(), vec![MAX_REQUEST_COUNT + 1]),
            Err(ArgError::BadRequestCount)
        );
        assert_eq!(
            bad(take_args(), vec![1; MAX_TAKE_REQUESTS + 1]),
            Err(ArgError::TooManyRequests)
        );
        assert_eq!(
            bad(
                TakeArgs {
                    limit: MAX_COUNT + 1,
                    ..take_args()
                },
                vec![1]
            ),
            Err(ArgError::CountTooLarge("limit"))
        );
        assert_eq!(
            bad(
                TakeArgs {
                    known_generation: Some(u64::MAX),
                    ..take_args()
                },
                vec![1]
            ),
            Err(ArgError::CountTooLarge("known generation"))
        );
        assert_eq!(
            bad(
                TakeArgs {
                    idle_ms: MAX_IDLE_MS + 1,
                    ..take_args()
                },
                vec![1]
            ),
            Err(ArgError::IdleTooLarge)
        );
        for candidate in [&b""[..], b"xyz", &[b'a'; 65]] {
            assert_eq!(
                bad(
                    TakeArgs {
                        epoch_candidate: candidate,
                        ..take_args()
                    },
                    vec![1]
                ),
                Err(ArgError::BadEpochCandidate)
            );
        }
        encode_take(
            &mut out,
            &sha(),
            &keys(),
            &take_args(),
            vec![MAX_REQUEST_COUNT; MAX_TAKE_REQUESTS],
        )
        .unwrap();
        assert!(out.starts_with(format!("before*{}\r\n", 16 + MAX_TAKE_REQUESTS).as_bytes()));
    }

    #[test]
    fn limits() {
        let limit = |start, max| {
            let l = TakeLimit::new(start, max);
            (l.limit, l.by_max)
        };
        assert_eq!(limit(1, None), (MAX_COUNT, false));
        assert_eq!(limit(1, Some(500)), (500, true));
        assert_eq!(limit(10, Some(19)), (10, true));
        assert_eq!(limit(10, Some(10)), (1, true));
        assert_eq!(limit(11, Some(10)), (0, true));
        assert_eq!(limit(0, None), (MAX_COUNT, false));
        assert_eq!(limit(0, Some(MAX_COUNT)), (MAX_COUNT, false));
        assert_eq!(limit(1, Some(MAX_COUNT)), (MAX_COUNT, true));
        assert_eq!(limit(1, Some(u64::MAX)), (MAX_COUNT, false));
        assert_eq!(limit(u64::MAX, None), (0, false));
    }

    fn take_reply(grants: &[i64]) -> Value {
        let mut items = vec![bulk("00ff"), bulk("3"), bulk("10"), int(0), int(1)];
        items.extend(grants.iter().map(|&g| int(g)));
        Value::Array(Some(items))
    }

    #[test]
    fn take_replies() {
        let reply = TakeReply::parse(take_reply(&[2, 0, 1]), &[2, 3, 1]).unwrap();
        assert_eq!(
            reply,
            TakeReply {
                epoch: b"00ff".to_vec(),
                generation: 3,
                issued_before: 10,
                repaired: false,
                fenced: true,
                grants: vec![2, 0, 1],
            }
        );
        assert_eq!(reply.issued_after(), Some(13));
        // start=5: tickets 15, 16, then 17 for the third request.
        let outcomes = reply
            .outcomes(&TakeLimit::new(5, Some(100)), [2, 3, 1])
            .unwrap();
        assert_eq!(
            outcomes,
            [
                TakeOutcome::Tickets {
                    first: 15,
                    count: 2
                },
                TakeOutcome::SoldOut,
                TakeOutcome::Tickets {
                    first: 17,
                    count: 1
                },
            ]
        );
        let outcomes = reply.outcomes(&TakeLimit::new(5, None), [2, 3, 1]).unwrap();
        assert_eq!(outcomes[1], TakeOutcome::Exhausted);
        // No grants listed: every request got what it asked.
        let reply = TakeReply::parse(take_reply(&[]), &[2, 1]).unwrap();
        assert_eq!(reply.grants, [2, 1]);
        assert_eq!(reply.issued_after(), Some(13));
        assert_eq!(
            reply.outcomes(&TakeLimit::new(1, None), [2, 1]).unwrap(),
            [
                TakeOutcome::Tickets {
                    first: 11,
                    count: 2
                },
                TakeOutcome::Tickets {
                    first: 13,
                    count: 1
                },
            ]
        );
        // ... which must still fit the limit
        assert!(reply
            .outcomes(&TakeLimit::new(1, Some(12)), [2, 1])
            .is_err());
        assert!(TakeReply::parse(take_reply(&[]), &[])
            .unwrap()
            .grants
            .is_empty());
        // Partial grant.
        let reply = TakeReply::parse(take_reply(&[1]), &[5]).unwrap();
        assert_eq!(
            reply.outcomes(&TakeLimit::new(1, Some(11)), [5]).unwrap(),
            [TakeOutcome::Tickets {
                first: 11,
                count: 1
            }]
        );
    }

    #[test]
    fn take_reply_errors() {
        let reply = TakeReply::parse(take_reply(&[2, 1]), &[2, 1]).unwrap();
        let limit = TakeLimit::new(1, None);
        assert!(
            reply.outcomes(&limit, [2]).is_err(),
            "fewer requests than grants"
        );
        assert!(
            reply.outcomes(&limit, [2, 1, 1]).is_err(),
            "more requests than grants"
        );
        assert!(
            reply.outcomes(&limit, [1, 1]).is_err(),
            "grant above the request"
        );
        assert!(
            reply
                .outcomes(&TakeLimit::new(1, Some(12)), [2, 1])
                .is_err(),
            "past the limit"
        );
        assert!(reply.outcomes(&TakeLimit::new(1, Some(13)), [2, 1]).is_ok());
        assert!(reply
            .outcomes(&TakeLimit::new(u64::MAX - 5, None), [2, 1])
            .is_err());

        assert!(TakeReply::parse(take_reply(&[-1]), &[1]).is_err());
        assert!(TakeReply::parse(Value::Array(Some(vec![bulk("e"), bulk("1")])), &[]).is_err());
        let mut items = vec![bulk("e"), bulk("1"), bulk("01"), int(0), int(0)];
        assert!(TakeReply::parse(Value::Array(Some(items.clone())), &[]).is_err());
        items[2] = bulk("9223372036854775808");
        assert!(TakeReply::parse(Value::Array(Some(items.clone())), &[]).is_err());
        items[2] = bulk("9223372036854775807");
        items[3] = int(2);
        assert!(TakeReply::parse(Value::Array(Some(items.clone())), &[]).is_err());
        items[3] = int(1);
        let at_ceiling = TakeReply::parse(Value::Array(Some(items)), &[]).unwrap();
        assert_eq!(at_ceiling.issued_before, MAX_COUNT);
        assert_eq!(
            TakeReply::parse(
                Value::Error(b"ticket: the counter does not hold a count".to_vec()),
                &[1]
            ),
            Err(ReplyError::Script(
                "ticket: the counter does not hold a count".into()
            ))
        );
        assert_eq!(
            TakeReply::parse(Value::Error(b"NOSCRIPT No matching script".to_vec()), &[1]),
            Err(ReplyError::NoScript)
        );
    }

    #[test]
    fn fence_arguments_and_reply() {
        let mut out = Vec::new();
        let args = FenceArgs {
            run_id: b"r1",
            known_run: None,
            epoch_candidate: b"abc",
            known_fence: 7,
        };
        encode_fence(&mut out, &sha(), b"ticket:z;", &args).unwrap();
        assert_eq!(args_of(&out)[2..], ["1", "ticket:z;", "r1", "", "abc", "7"]);
        let mut out = Vec::new();
        let bad = FenceArgs {
            run_id: b"",
            ..args
        };
        assert_eq!(
            encode_fence(&mut out, &sha(), b"m", &bad),
            Err(ArgError::BadRunId)
        );
        assert!(out.is_empty());
        let reply =
            FenceReply::parse(Value::Array(Some(vec![bulk("abc"), bulk("2"), int(1)]))).unwrap();
        assert_eq!(
            reply,
            FenceReply {
                epoch: b"abc".to_vec(),
                fence_epoch: 2,
                fenced: true
            }
        );
    }

    #[test]
    fn admin_commands() {
        let mut out = Vec::new();
        encode_admin_get(&mut out, &sha(), &keys());
        assert_eq!(args_of(&out)[2..], ["2", "ticket:z:k", "ticket:z;k"]);
        let reply = AdminGetReply::parse(Value::Array(Some(vec![
            int(1),
            bulk("5"),
            bulk("2"),
            bulk(""),
        ])))
        .unwrap();
        assert_eq!(
            reply,
            AdminGetReply {
                exists: true,
                issued: Some(5),
                generation: Some(2),
                last_used: None
            }
        );

        let mut out = Vec::new();
        let args = AdminSetArgs {
            new_count: 41,
            idle_ms: 5,
            now: 9,
            epoch_candidate: b"e",
        };
        encode_admin_set(&mut out, &sha(), &keys(), &args).unwrap();
        assert_eq!(
            args_of(&out)[2..],
            [
                "3",
                "ticket:z:k",
                "ticket:z;k",
                "ticket:z;",
                "41",
                "5",
                "9",
                "e"
            ]
        );
        assert_eq!(
            AdminSetReply::parse(Value::Array(Some(vec![int(0), bulk("50")]))),
            Ok(AdminSetReply::WouldReissue { issued: 50 })
        );
        assert_eq!(
            AdminSetReply::parse(Value::Array(Some(vec![int(1), bulk("40"), bulk("2")]))),
            Ok(AdminSetReply::Set {
                issued_before: 40,
                generation: 2
            })
        );
        assert!(AdminSetReply::parse(Value::Array(Some(vec![int(1), bulk("40")]))).is_err());
        assert_eq!(admin_set_count(1, 42), Some(41));
        assert_eq!(admin_set_count(5, 4), None);
        assert_eq!(admin_set_count(0, u64::MAX), None);

        let mut out = Vec::new();
        encode_admin_del(&mut out, &sha(), &keys());
        assert_eq!(
            args_of(&out)[2..],
            ["3", "ticket:z:k", "ticket:z;k", "ticket:z;"]
        );
        assert_eq!(parse_admin_del(int(1)), Ok(true));
        assert_eq!(parse_admin_del(int(0)), Ok(false));
        assert!(parse_admin_del(bulk("1")).is_err());
    }

    #[test]
    fn wait_is_answered_within_half_the_reply_timeout() {
        let mut out = Vec::new();
        encode_wait(&mut out, 2, 1000);
        assert_eq!(args_of(&out), ["WAIT", "2", "500"]);
        out.clear();
        // never WAIT n 0, which blocks for ever
        encode_wait(&mut out, 1, 1);
        assert_eq!(args_of(&out), ["WAIT", "1", "1"]);
    }
}
