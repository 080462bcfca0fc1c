//! Every script against a real `redis-server`, started by each test on a unix
//! socket in a private directory (no TCP port at all) and killed by pid when
//! the test ends, pass or fail. Without `redis-server` installed each test
//! prints a line and passes. (The crate is a cdylib only, so these live inside
//! it rather than in `tests/`.)

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::batch::{KeyQueue, Push};
use super::handshake::{Appendonly, Handshake, HandshakeError, Progress, ServerInfo};
use super::keys::{CounterKeys, ZoneKeys, DEFAULT_PREFIX};
use super::reply::{ReplyError, MAX_COUNT};
use super::resp::{encode_command, Decoder, Value};
use super::scripts::*;
use super::url::RedisUrl;

const NOW: u64 = 1_700_000_000;
const EPOCH: &[u8] = b"e0e0";
const FENCE: u64 = 1000;

/// A redis-server of this test; killed and its directory removed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    extra: Vec<String>,
}

impl Server {
    fn start(extra: &[&str]) -> Option<Server> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ngx-ticket-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = Self::spawn(&dir, &extra)?;
        let socket = dir.join("redis.sock");
        let mut server = Server {
            child,
            dir,
            socket,
            extra,
        };
        server.wait_for_socket();
        Some(server)
    }

    /// `kill -9` and start again on the same directory (and AOF).
    fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        self.child = Self::spawn(&self.dir, &self.extra).expect("redis-server is installed");
        self.wait_for_socket();
    }

    fn spawn(dir: &std::path::Path, extra: &[String]) -> Option<Child> {
        let socket = dir.join("redis.sock");
        let spawned = Command::new("redis-server")
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => Some(child),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                eprintln!("redis-server is not installed: skipping this test");
                let _ = std::fs::remove_dir_all(dir);
                None
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        }
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&self.socket).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                panic!("redis-server exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not open its socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Child::kill signals this child's pid, and only it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A connection speaking through our codec.
struct Client {
    stream: UnixStream,
    decoder: Decoder,
    out: Vec<u8>,
}

impl Client {
    fn connect(server: &Server) -> Client {
        let stream = UnixStream::connect(&server.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client {
            stream,
            decoder: Decoder::new(),
            out: Vec::new(),
        }
    }

    /// Sends what was encoded into `self.out`.
    fn flush(&mut self) {
        self.stream.write_all(&self.out).unwrap();
        self.out.clear();
    }

    fn read_value(&mut self) -> Value {
        let mut buf = [0u8; 512];
        loop {
            if let Some(value) = self.decoder.next_value().unwrap() {
                return value;
            }
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "redis closed the connection");
            self.decoder.feed(&buf[..n]);
        }
    }

    fn call(&mut self, args: &[&[u8]]) -> Value {
        encode_command(&mut self.out, args);
        self.flush();
        self.read_value()
    }

    fn handshake(&mut self, url: &RedisUrl) -> Result<ServerInfo, HandshakeError> {
        let mut handshake = Handshake::new(url);
        handshake.encode(&mut self.out);
        self.flush();
        for _ in 0..handshake.steps().len() {
            let reply = self.read_value();
            if let Progress::Done(info) = handshake.on_reply(reply)? {
                return Ok(*info);
            }
        }
        panic!("handshake did not finish");
    }
}

/// A server, a ready connection, and what its handshake learned.
fn setup() -> Option<(Server, Client, ServerInfo)> {
    let server = Server::start(&[])?;
    let mut client = Client::connect(&server);
    let info = client
        .handshake(&RedisUrl::parse("redis://localhost").unwrap())
        .unwrap();
    Some((server, client, info))
}

/// A server with the README's persistence (AOF, `appendfsync always`), a
/// ready connection, what its handshake learned and the URL it used; the
/// zone fenced for the server's run, as a node's first connection does.
fn setup_durable() -> Option<(Server, Client, ServerInfo, RedisUrl)> {
    let server = Server::start(&["--appendonly", "yes", "--appendfsync", "always"])?;
    let url = RedisUrl::parse("redis://localhost").unwrap();
    let mut client = Client::connect(&server);
    let info = client.handshake(&url).unwrap();
    fence(&mut client, &info, &info.run_id, None);
    Some((server, client, info, url))
}

fn zone() -> ZoneKeys {
    ZoneKeys::new(DEFAULT_PREFIX, "seats").unwrap()
}

fn keyed(key: &str) -> CounterKeys {
    zone().counter(Some(key.as_bytes())).unwrap()
}

fn args(limit: &TakeLimit) -> TakeArgs<'static> {
    TakeArgs {
        limit: limit.limit,
        fence: FENCE,
        idle_ms: 0,
        now: NOW,
        epoch_candidate: EPOCH,
        known_epoch: None,
        known_generation: None,
        floor: 0,
        partial: false,
        reserve: 0,
    }
}

fn take_with(
    client: &mut Client,
    info: &ServerInfo,
    keys: &CounterKeys,
    args: &TakeArgs<'_>,
    counts: &[u64],
) -> Result<TakeReply, ReplyError> {
    encode_take(
        &mut client.out,
        &info.scripts.take,
        keys,
        args,
        counts.iter().copied(),
    )
    .unwrap();
    client.flush();
    TakeReply::parse(client.read_value(), counts)
}

/// Takes with default arguments and returns the outcomes.
fn take(
    client: &mut Client,
    info: &ServerInfo,
    keys: &CounterKeys,
    limit: &TakeLimit,
    counts: &[u64],
) -> Vec<TakeOutcome> {
    let reply = take_with(client, info, keys, &args(limit), counts).unwrap();
    reply.outcomes(limit, counts.iter().copied()).unwrap()
}

fn tickets(first: u64, count: u64) -> TakeOutcome {
    TakeOutcome::Tickets { first, count }
}

fn fence(
    client: &mut Client,
    info: &ServerInfo,
    run_id: &str,
    known_run: Option<&str>,
) -> FenceReply {
    fence_known(client, info, run_id, known_run, 0)
}

/// `fence` from a node that saw fence epoch `known_fence`.
fn fence_known(
    client: &mut Client,
    info: &ServerInfo,
    run_id: &str,
    known_run: Option<&str>,
    known_fence: u64,
) -> FenceReply {
    let args = FenceArgs {
        run_id: run_id.as_bytes(),
        known_run: known_run.map(str::as_bytes),
        epoch_candidate: EPOCH,
        known_fence,
    };
    encode_fence(
        &mut client.out,
        &info.scripts.fence,
        zone().zone_meta(),
        &args,
    )
    .unwrap();
    client.flush();
    FenceReply::parse(client.read_value()).unwrap()
}

fn admin_get(client: &mut Client, info: &ServerInfo, keys: &CounterKeys) -> AdminGetReply {
    encode_admin_get(&mut client.out, &info.scripts.admin_get, keys);
    client.flush();
    AdminGetReply::parse(client.read_value()).unwrap()
}

fn admin_set(
    client: &mut Client,
    info: &ServerInfo,
    keys: &CounterKeys,
    new_count: u64,
) -> AdminSetReply {
    let args = AdminSetArgs {
        new_count,
        idle_ms: 0,
        now: NOW,
        epoch_candidate: EPOCH,
    };
    encode_admin_set(&mut client.out, &info.scripts.admin_set, keys, &args).unwrap();
    client.flush();
    AdminSetReply::parse(client.read_value()).unwrap()
}

fn admin_del(client: &mut Client, info: &ServerInfo, keys: &CounterKeys) -> bool {
    encode_admin_del(&mut client.out, &info.scripts.admin_del, keys);
    client.flush();
    parse_admin_del(client.read_value()).unwrap()
}

fn get(client: &mut Client, key: &[u8]) -> Option<Vec<u8>> {
    match client.call(&[b"GET", key]) {
        Value::Bulk(bytes) => bytes,
        other => panic!("GET gave {other:?}"),
    }
}

fn integer(value: Value) -> i64 {
    match value {
        Value::Integer(n) => n,
        other => panic!("not an integer: {other:?}"),
    }
}

#[test]
fn handshake_against_a_real_server() {
    let Some((_server, _client, info)) = setup() else {
        return;
    };
    assert_eq!(info.run_id.len(), 40);
    assert_eq!(info.appendonly, Appendonly::No);
    assert!(info.version.is_some());
}

#[test]
fn handshake_with_passwords() {
    let Some(server) = Server::start(&["--requirepass", "s3cret"]) else {
        return;
    };
    let url = |text: &str| RedisUrl::parse(text).unwrap();
    let e = Client::connect(&server)
        .handshake(&url("redis://h"))
        .unwrap_err();
    assert_eq!(e, HandshakeError::NoAuth);
    let e = Client::connect(&server)
        .handshake(&url("redis://:wrong@h"))
        .unwrap_err();
    assert!(
        matches!(&e, HandshakeError::Auth(m) if m.starts_with("WRONGPASS")),
        "{e}"
    );
    assert!(!e.to_string().contains("wrong@"));
    let e = Client::connect(&server)
        .handshake(&url("redis://nobody:s3cret@h"))
        .unwrap_err();
    assert!(matches!(e, HandshakeError::Auth(_)), "{e}");
    let info = Client::connect(&server)
        .handshake(&url("redis://:s3cret@h/1"))
        .unwrap();
    assert_eq!(info.run_id.len(), 40);
    let e = Client::connect(&server)
        .handshake(&url("redis://:s3cret@h/99"))
        .unwrap_err();
    assert!(e.to_string().contains("refused database 99"), "{e}");
}

#[test]
fn sequence_from_start() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, None);
    let gala = keyed("gala");
    for n in 1..=5 {
        assert_eq!(
            take(&mut client, &info, &gala, &limit, &[1]),
            [tickets(n, 1)]
        );
    }
    assert_eq!(get(&mut client, &gala.counter).as_deref(), Some(&b"5"[..]));
    // Another key and the default counter count on their own.
    assert_eq!(
        take(&mut client, &info, &keyed("other"), &limit, &[1]),
        [tickets(1, 1)]
    );
    let default = zone().counter(None).unwrap();
    assert_eq!(
        take(&mut client, &info, &default, &limit, &[2]),
        [tickets(1, 2)]
    );
    assert_eq!(
        take(&mut client, &info, &default, &limit, &[1]),
        [tickets(3, 1)]
    );
    assert_eq!(
        get(&mut client, b"ticket:seats").as_deref(),
        Some(&b"3"[..])
    );
    // Generations: one per counter life, from the zone's counter.
    let first = take_with(&mut client, &info, &gala, &args(&limit), &[]).unwrap();
    assert_eq!(first.generation, 1);
    assert_eq!(first.epoch, EPOCH);
    assert_eq!(first.issued_before, 5);
    assert!(first.grants.is_empty());
    let third = take_with(&mut client, &info, &default, &args(&limit), &[]).unwrap();
    assert_eq!(third.generation, 3);
}

#[test]
fn start_other_than_one() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(100, Some(104));
    let keys = keyed("k");
    assert_eq!(
        take(&mut client, &info, &keys, &limit, &[1]),
        [tickets(100, 1)]
    );
    assert_eq!(
        take(&mut client, &info, &keys, &limit, &[3]),
        [tickets(101, 3)]
    );
    assert_eq!(
        take(&mut client, &info, &keys, &limit, &[1]),
        [tickets(104, 1)]
    );
    assert_eq!(
        take(&mut client, &info, &keys, &limit, &[1]),
        [TakeOutcome::SoldOut]
    );
    let limit = TakeLimit::new(0, Some(0));
    assert_eq!(
        take(&mut client, &info, &keyed("zero"), &limit, &[1]),
        [tickets(0, 1)]
    );
    assert_eq!(
        take(&mut client, &info, &keyed("zero"), &limit, &[1]),
        [TakeOutcome::SoldOut]
    );
}

#[test]
fn strict_batches_are_all_or_nothing() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, Some(10));
    let keys = keyed("k");
    assert_eq!(
        take(&mut client, &info, &keys, &limit, &[4, 4, 4, 1]),
        [
            tickets(1, 4),
            tickets(5, 4),
            TakeOutcome::SoldOut,
            tickets(9, 1)
        ]
    );
    assert_eq!(
        take(&mut client, &info, &keys, &limit, &[2, 1]),
        [TakeOutcome::SoldOut, tickets(10, 1)]
    );
    assert_eq!(
        take(&mut client, &info, &keys, &limit, &[1]),
        [TakeOutcome::SoldOut]
    );
    assert_eq!(get(&mut client, &keys.counter).as_deref(), Some(&b"10"[..]));
}

#[test]
fn partial_grants() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, Some(10));
    let keys = keyed("k");
    let lease = TakeArgs {
        partial: true,
        ..args(&limit)
    };
    let reply = take_with(&mut client, &info, &keys, &lease, &[6, 6, 1]).unwrap();
    assert_eq!(reply.grants, [6, 4, 0]);
    assert_eq!(
        reply.outcomes(&limit, [6, 6, 1]).unwrap(),
        [tickets(1, 6), tickets(7, 4), TakeOutcome::SoldOut]
    );
    assert_eq!(reply.issued_after(), Some(10));
}

#[test]
fn the_ceiling() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, None);
    let keys = keyed("k");
    client.call(&[b"SET", &keys.counter, b"9223372036854775806"]);
    assert_eq!(
        take(&mut client, &info, &keys, &limit, &[1]),
        [tickets(MAX_COUNT, 1)]
    );
    assert_eq!(
        take(&mut client, &info, &keys, &limit, &[1]),
        [TakeOutcome::Exhausted]
    );
    assert_eq!(
        get(&mut client, &keys.counter).as_deref(),
        Some(&b"9223372036854775807"[..])
    );

    // Large remainders go through the decimal helpers: 807 left.
    let big = keyed("big");
    client.call(&[b"SET", &big.counter, b"9223372036854775000"]);
    assert_eq!(
        take(&mut client, &info, &big, &limit, &[1000]),
        [TakeOutcome::Exhausted]
    );
    let lease = TakeArgs {
        partial: true,
        ..args(&limit)
    };
    let reply = take_with(&mut client, &info, &big, &lease, &[1000, 5]).unwrap();
    assert_eq!(reply.grants, [807, 0]);
    assert_eq!(reply.issued_before, 9_223_372_036_854_775_000);
    assert_eq!(
        reply.outcomes(&limit, [1000, 5]).unwrap(),
        [
            tickets(9_223_372_036_854_775_001, 807),
            TakeOutcome::Exhausted
        ]
    );
    // A fence near the ceiling stops at it.
    let near = keyed("near");
    client.call(&[b"SET", &near.counter, b"9223372036854775000"]);
    take(&mut client, &info, &near, &limit, &[1]);
    fence(&mut client, &info, "r1", None);
    fence(&mut client, &info, "r2", None);
    let reply = take_with(&mut client, &info, &near, &args(&limit), &[1]).unwrap();
    assert!(reply.fenced);
    assert_eq!(reply.issued_before, MAX_COUNT);
    assert_eq!(reply.grants, [0]);
}

#[test]
fn fence_skips_once_per_missed_restart() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, None);
    let keys = keyed("k");
    // First sight of the zone: nothing to fence.
    let first = fence(&mut client, &info, &info.run_id, None);
    assert_eq!(
        (first.epoch.as_slice(), first.fence_epoch, first.fenced),
        (EPOCH, 0, false)
    );
    assert!(!fence(&mut client, &info, &info.run_id, Some(&info.run_id)).fenced);
    take(&mut client, &info, &keys, &limit, &[3]);
    // Redis "restarted": the first node to see the new run fences, once.
    let after = fence(&mut client, &info, "run2", Some(&info.run_id));
    assert_eq!((after.fence_epoch, after.fenced), (1, true));
    let other_node = fence(&mut client, &info, "run2", Some(&info.run_id));
    assert_eq!((other_node.fence_epoch, other_node.fenced), (1, false));
    fence(&mut client, &info, "run3", None);
    // Two fence epochs passed: a skip for each (either run may have served
    // the counter from the same stale count), in one take.
    let reply = take_with(&mut client, &info, &keys, &args(&limit), &[1]).unwrap();
    assert!(reply.fenced && !reply.repaired);
    assert_eq!(reply.issued_before, 3 + 2 * FENCE);
    assert_eq!(
        reply.outcomes(&limit, [1]).unwrap(),
        [tickets(4 + 2 * FENCE, 1)]
    );
    let reply = take_with(&mut client, &info, &keys, &args(&limit), &[1]).unwrap();
    assert!(!reply.fenced);
    assert_eq!(reply.issued_before, 4 + 2 * FENCE);
    // A counter born after the fence is not fenced.
    let fresh = take_with(&mut client, &info, &keyed("fresh"), &args(&limit), &[1]).unwrap();
    assert!(!fresh.fenced);
    assert_eq!(fresh.issued_before, 0);
}

/// `reserve=`: batches below a counter's durable ceiling change the count in
/// memory only; a Redis killed and restarted from its AOF resumes past the
/// ceiling, never at a number handed out.
#[test]
fn reserve_resumes_past_the_durable_ceiling_after_a_crash() {
    let Some((mut server, mut client, info, url)) = setup_durable() else {
        return;
    };
    let limit = TakeLimit::new(1, None);
    let reserved = TakeArgs {
        reserve: 100,
        ..args(&limit)
    };
    let (keys, written) = (keyed("k"), keyed("every-batch"));
    let meta_r = |client: &mut Client, keys: &CounterKeys| {
        let value = client.call(&[b"HGET", &keys.counter_meta, b"r"]);
        value
            .as_bytes()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    };
    // The first batch writes the ceiling: its count plus the reserve.
    let first = take_with(&mut client, &info, &keys, &reserved, &[1]).unwrap();
    assert_eq!(first.outcomes(&limit, [1]).unwrap(), [tickets(1, 1)]);
    assert_eq!(meta_r(&mut client, &keys).as_deref(), Some("101"));
    for i in 0..10 {
        let reply = take_with(&mut client, &info, &keys, &reserved, &[5]).unwrap();
        assert_eq!(reply.issued_before, 1 + 5 * i);
    }
    assert_eq!(get(&mut client, &keys.counter).as_deref(), Some(&b"51"[..]));
    assert_eq!(meta_r(&mut client, &keys).as_deref(), Some("101"));
    // reserve=0: every batch is written.
    let every = TakeArgs {
        reserve: 0,
        ..args(&limit)
    };
    for _ in 0..3 {
        take_with(&mut client, &info, &written, &every, &[2]).unwrap();
    }
    assert_eq!(meta_r(&mut client, &written), None);

    let (mut client, restarted) = crash_restart_and_fence(&mut server, &url, &info);
    // The AOF kept the first batch's count and the ceiling, not the rest.
    assert_eq!(get(&mut client, &keys.counter).as_deref(), Some(&b"1"[..]));
    assert_eq!(
        get(&mut client, &written.counter).as_deref(),
        Some(&b"6"[..])
    );
    let reply = take_with(&mut client, &restarted, &keys, &reserved, &[1]).unwrap();
    assert!(reply.fenced);
    assert_eq!(
        reply.issued_before,
        101 + FENCE,
        "past the ceiling, then fenced"
    );
    assert_eq!(
        meta_r(&mut client, &keys).as_deref(),
        Some(&*(102 + FENCE + 100).to_string())
    );
    let reply = take_with(&mut client, &restarted, &written, &every, &[1]).unwrap();
    assert_eq!(reply.issued_before, 6 + FENCE);

    // A batch past the ceiling raises it first; a limit caps it.
    let capped = keyed("capped");
    let small = TakeLimit::new(1, Some(30));
    let near = TakeArgs {
        reserve: 100,
        ..args(&small)
    };
    take_with(&mut client, &restarted, &capped, &near, &[10]).unwrap();
    assert_eq!(meta_r(&mut client, &capped).as_deref(), Some("30"));
    // A counter retired by the admin API leaves no ceiling behind.
    let default = zone().counter(None).unwrap();
    take_with(&mut client, &restarted, &default, &reserved, &[1]).unwrap();
    assert_eq!(
        client
            .call(&[b"HGET", &default.zone_meta, b"r"])
            .as_bytes()
            .map(<[u8]>::to_vec),
        Some(b"101".to_vec())
    );
    admin_del(&mut client, &restarted, &default);
    assert!(client
        .call(&[b"HGET", &default.zone_meta, b"r"])
        .as_bytes()
        .is_none());
}

/// Kills the server (`-9`), restarts it from its AOF and fences the zone
/// for the new run, as a node that saw the run of `before` does; returns a
/// connection to it and what its handshake learned.
fn crash_restart_and_fence(
    server: &mut Server,
    url: &RedisUrl,
    before: &ServerInfo,
) -> (Client, ServerInfo) {
    server.crash_and_restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut client, restarted) = loop {
        let mut client = Client::connect(server);
        match client.handshake(url) {
            Ok(info) => break (client, info),
            // still reading its AOF
            Err(e) if format!("{e:?}").contains("LOADING") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_ne!(restarted.run_id, before.run_id);
    let fenced = fence(
        &mut client,
        &restarted,
        &restarted.run_id,
        Some(&before.run_id),
    );
    assert!(fenced.fenced);
    (client, restarted)
}

/// A node's usual batch (it knows the counter's life; nothing but the count
/// changes) takes take.lua's fast path; everything else must still get what
/// the full script does.
#[test]
fn fast_path_batches_change_only_the_count() {
    let Some((mut server, mut client, info, url)) = setup_durable() else {
        return;
    };
    let limit = TakeLimit::new(1, Some(1000));
    let keys = keyed("fast");
    let meta = |client: &mut Client, field: &[u8]| {
        let value = client.call(&[b"HGET", &keys.counter_meta, field]);
        value
            .as_bytes()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
    };
    let reserved = TakeArgs {
        reserve: 100,
        ..args(&limit)
    };
    // The raw reply, then the parsed one.
    let take_raw = |client: &mut Client, args: &TakeArgs<'_>, counts: &[u64]| {
        encode_take(
            &mut client.out,
            &info.scripts.take,
            &keys,
            args,
            counts.iter().copied(),
        )
        .unwrap();
        client.flush();
        let value = client.read_value();
        let listed = match &value {
            Value::Array(Some(items)) => items.len() - 5,
            other => panic!("{other:?}"),
        };
        (listed, TakeReply::parse(value, counts))
    };
    // A new counter: the full script writes its life and its ceiling.
    let first = take_with(&mut client, &info, &keys, &reserved, &[1]).unwrap();
    assert_eq!(meta(&mut client, b"r").as_deref(), Some("101"));
    let (epoch, generation) = (first.epoch.clone(), first.generation);
    let known = |floor: u64| TakeArgs {
        known_epoch: Some(&epoch),
        known_generation: Some(generation),
        floor,
        ..reserved
    };
    // Below the ceiling: every request gets what it asked, none listed.
    let mut issued = 1;
    for _ in 0..5 {
        let (listed, reply) = take_raw(&mut client, &known(issued), &[1, 3, 2]);
        let reply = reply.unwrap();
        assert_eq!(listed, 0);
        assert_eq!(
            (reply.issued_before, reply.generation),
            (issued, generation)
        );
        assert_eq!(
            reply.outcomes(&limit, [1, 3, 2]).unwrap(),
            [
                tickets(issued + 1, 1),
                tickets(issued + 2, 3),
                tickets(issued + 5, 2)
            ]
        );
        issued += 6;
    }
    assert_eq!(get(&mut client, &keys.counter).as_deref(), Some(&b"31"[..]));
    assert_eq!(meta(&mut client, b"r").as_deref(), Some("101"));
    // Past the ceiling: raised (and written) first.
    let (_, reply) = take_raw(&mut client, &known(issued), &[80]);
    assert_eq!(reply.unwrap().issued_before, 31);
    assert_eq!(meta(&mut client, b"r").as_deref(), Some("211"));
    issued = 111;
    // Another second: the metadata is touched.
    let later = TakeArgs {
        now: NOW + 1,
        ..known(issued)
    };
    take_raw(&mut client, &later, &[1]).1.unwrap();
    assert_eq!(meta(&mut client, b"u"), Some((NOW + 1).to_string()));
    issued += 1;
    // Near the limit: what each request got is listed.
    let near = TakeArgs {
        now: NOW + 1,
        ..known(issued)
    };
    client.call(&[b"SET", &keys.counter, b"990"]);
    let (listed, reply) = take_raw(&mut client, &near, &[1, 10, 2]);
    assert_eq!(listed, 3, "raised to the floor? {reply:?}");
    assert_eq!(reply.unwrap().grants, [1, 0, 2]);
    issued = 993;
    // An expiry left by hand on a counter without idle= is dropped.
    client.call(&[b"PEXPIRE", &keys.counter, b"100000"]);
    let now1 = |floor| TakeArgs {
        now: NOW + 1,
        ..known(floor)
    };
    take_raw(&mut client, &now1(issued), &[1]).1.unwrap();
    issued += 1;
    assert_eq!(integer(client.call(&[b"PTTL", &keys.counter])), -1);
    // Below the node's own last ticket: repaired, not served.
    client.call(&[b"SET", &keys.counter, b"500"]);
    let (_, reply) = take_raw(&mut client, &now1(issued), &[1]);
    let reply = reply.unwrap();
    assert!(reply.repaired);
    // past the ceiling (the limit, 1000, capped it), then the fence
    assert_eq!(reply.issued_before, 1000 + FENCE);
    // A stored count that is not one: the full script's error, nothing
    // written.
    let odd = keyed("odd");
    let odd_first = take_with(&mut client, &info, &odd, &reserved, &[1]).unwrap();
    let odd_known = TakeArgs {
        known_epoch: Some(&odd_first.epoch),
        known_generation: Some(odd_first.generation),
        floor: 1,
        ..reserved
    };
    for bad in ["01", "1.0", "x"] {
        client.call(&[b"SET", &odd.counter, bad.as_bytes()]);
        let e = take_with(&mut client, &info, &odd, &odd_known, &[1]).unwrap_err();
        assert!(
            matches!(&e, ReplyError::Script(m) if m.contains("the counter does not hold")),
            "{bad}: {e}"
        );
        assert_eq!(
            get(&mut client, &odd.counter),
            Some(bad.as_bytes().to_vec())
        );
    }
    // The default counter (its life in the zone's own hash): served until a
    // restart moves the fence epoch, then fenced once.
    let default = zone().counter(None).unwrap();
    let d = take_with(&mut client, &info, &default, &reserved, &[1]).unwrap();
    let d_known = TakeArgs {
        known_epoch: Some(&d.epoch),
        known_generation: Some(d.generation),
        floor: 1,
        ..reserved
    };
    for _ in 0..3 {
        let reply = take_with(&mut client, &info, &default, &d_known, &[2]).unwrap();
        assert!(!reply.fenced && !reply.repaired);
    }
    assert_eq!(
        get(&mut client, &default.counter).as_deref(),
        Some(&b"7"[..])
    );
    // What the AOF holds: the writes of the full script, not the fast path's.
    let (mut client, restarted) = crash_restart_and_fence(&mut server, &url, &info);
    assert_eq!(
        get(&mut client, &default.counter).as_deref(),
        Some(&b"1"[..])
    );
    let reply = take_with(&mut client, &restarted, &default, &d_known, &[1]).unwrap();
    assert!(reply.fenced);
    assert_eq!(reply.issued_before, 101 + FENCE);
}

#[test]
fn fence_by_known_run_after_the_metadata_was_lost() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    fence(&mut client, &info, "run1", None);
    client.call(&[b"DEL", zone().zone_meta()]);
    // This node saw run1; the zone now says nothing: the restart is fenced.
    let reply = fence(&mut client, &info, "run2", Some("run1"));
    assert_eq!((reply.fence_epoch, reply.fenced), (1, true));
    client.call(&[b"DEL", zone().zone_meta()]);
    // Metadata gone but the same run: nothing to fence (repair covers it).
    let reply = fence(&mut client, &info, "run2", Some("run2"));
    assert_eq!((reply.fence_epoch, reply.fenced), (0, false));
}

#[test]
fn fence_on_failback_to_a_stale_former_master() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, None);
    let keys = keyed("k");
    // On master M (this server): first sight, then tickets.
    fence(&mut client, &info, &info.run_id, None);
    take(&mut client, &info, &keys, &limit, &[3]);
    // The nodes failed over to R, fenced there (fence epoch 1) and served;
    // M, demoted and cut off, never saw it: its metadata still names M at
    // fence epoch 0. Back on M, a node that saw R's fence epoch fences.
    let back = fence_known(&mut client, &info, &info.run_id, Some("runR"), 1);
    assert_eq!((back.fence_epoch, back.fenced), (2, true));
    // Once: another node back from R finds the fence past what it saw.
    let other = fence_known(&mut client, &info, &info.run_id, Some("runR"), 1);
    assert_eq!((other.fence_epoch, other.fenced), (2, false));
    // A node that stayed on M fences nothing either.
    let stayed = fence_known(&mut client, &info, &info.run_id, Some(&info.run_id), 0);
    assert_eq!((stayed.fence_epoch, stayed.fenced), (2, false));
    // The counter skips R's run and the failback's: R served it from the
    // same count M still holds, fenced once there.
    let reply = take_with(&mut client, &info, &keys, &args(&limit), &[1]).unwrap();
    assert!(reply.fenced);
    assert_eq!(reply.issued_before, 3 + 2 * FENCE);
    // A bad known fence is refused before anything is written.
    let args = FenceArgs {
        run_id: b"runX",
        known_run: None,
        epoch_candidate: EPOCH,
        known_fence: MAX_COUNT,
    };
    encode_fence(
        &mut client.out,
        &info.scripts.fence,
        zone().zone_meta(),
        &args,
    )
    .unwrap();
    client.flush();
    assert!(FenceReply::parse(client.read_value()).is_err());
    let still = fence_known(&mut client, &info, &info.run_id, None, 0);
    assert_eq!((still.fence_epoch, still.fenced), (2, false));
}

#[test]
fn fence_applied_past_the_zone_fence_skips_once() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, None);
    let keys = keyed("k");
    fence(&mut client, &info, &info.run_id, None);
    take(&mut client, &info, &keys, &limit, &[3]);
    // The counter was fenced at epoch 5 of zone metadata lost since (the
    // zone hash deleted by hand): once, then settled at the zone's epoch.
    client.call(&[b"HSET", &keys.counter_meta, b"f", b"5"]);
    let reply = take_with(&mut client, &info, &keys, &args(&limit), &[1]).unwrap();
    assert!(reply.fenced);
    assert_eq!(reply.issued_before, 3 + FENCE);
    let reply = take_with(&mut client, &info, &keys, &args(&limit), &[1]).unwrap();
    assert!(!reply.fenced);
    assert_eq!(reply.issued_before, 4 + FENCE);
}

#[test]
fn repair_from_floor_within_a_life() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, None);
    let keys = keyed("k");
    let reply = take_with(&mut client, &info, &keys, &args(&limit), &[5]).unwrap();
    let floor = reply.issued_after().unwrap();
    // The counter went back (lost write, operator mistake).
    client.call(&[b"SET", &keys.counter, b"2"]);
    let known = TakeArgs {
        known_epoch: Some(&reply.epoch),
        known_generation: Some(reply.generation),
        floor,
        ..args(&limit)
    };
    let repaired = take_with(&mut client, &info, &keys, &known, &[1]).unwrap();
    assert!(repaired.repaired && !repaired.fenced);
    assert_eq!(repaired.issued_before, floor + FENCE);
    assert_eq!(repaired.generation, reply.generation);
    assert_eq!(
        repaired.outcomes(&limit, [1]).unwrap(),
        [tickets(floor + FENCE + 1, 1)]
    );
    // At or above the floor: no repair.
    let known = TakeArgs {
        floor: floor + FENCE + 1,
        ..known
    };
    let again = take_with(&mut client, &info, &keys, &known, &[1]).unwrap();
    assert!(!again.repaired);
    // The counter deleted alone (metadata kept): same life, repaired.
    client.call(&[b"DEL", &keys.counter]);
    let known = TakeArgs {
        floor: floor + FENCE + 2,
        ..known
    };
    let lost = take_with(&mut client, &info, &keys, &known, &[1]).unwrap();
    assert!(lost.repaired);
    assert_eq!(lost.issued_before, floor + FENCE + 2 + FENCE);
    // The floor near the ceiling: capped.
    let known = TakeArgs {
        floor: MAX_COUNT,
        ..known
    };
    let capped = take_with(&mut client, &info, &keys, &known, &[1]).unwrap();
    assert!(capped.repaired);
    assert_eq!(capped.issued_before, MAX_COUNT);
    assert_eq!(
        capped.outcomes(&limit, [1]).unwrap(),
        [TakeOutcome::Exhausted]
    );
}

#[test]
fn no_repair_after_admin_del() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, None);
    let keys = keyed("k");
    let reply = take_with(&mut client, &info, &keys, &args(&limit), &[5]).unwrap();
    assert!(admin_del(&mut client, &info, &keys));
    let known = TakeArgs {
        known_epoch: Some(&reply.epoch),
        known_generation: Some(reply.generation),
        floor: 5,
        ..args(&limit)
    };
    let reborn = take_with(&mut client, &info, &keys, &known, &[1]).unwrap();
    assert!(!reborn.repaired);
    assert_ne!(reborn.generation, reply.generation, "a new life");
    assert_eq!(reborn.epoch, reply.epoch);
    assert_eq!(reborn.outcomes(&limit, [1]).unwrap(), [tickets(1, 1)]);
}

#[test]
fn lost_epoch_repairs() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, None);
    let keys = keyed("k");
    let reply = take_with(&mut client, &info, &keys, &args(&limit), &[7]).unwrap();
    client.call(&[b"FLUSHALL"]);
    let known = TakeArgs {
        epoch_candidate: b"beef",
        known_epoch: Some(&reply.epoch),
        known_generation: Some(reply.generation),
        floor: 7,
        ..args(&limit)
    };
    let after = take_with(&mut client, &info, &keys, &known, &[1]).unwrap();
    assert_eq!(after.epoch, b"beef", "a new epoch");
    assert!(after.repaired);
    assert_eq!(after.issued_before, 7 + FENCE);
    assert_eq!(
        after.outcomes(&limit, [1]).unwrap(),
        [tickets(8 + FENCE, 1)]
    );
    // The epoch is set once: the next candidate does not replace it.
    let next = take_with(&mut client, &info, &keys, &args(&limit), &[]).unwrap();
    assert_eq!(next.epoch, b"beef");
}

#[test]
fn idle_counters_expire() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, None);
    let keys = keyed("k");
    let idle = TakeArgs {
        idle_ms: 60_000,
        ..args(&limit)
    };
    take_with(&mut client, &info, &keys, &idle, &[1]).unwrap();
    for key in [&keys.counter, &keys.counter_meta] {
        let ttl = integer(client.call(&[b"PTTL", key]));
        assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    }
    assert_eq!(integer(client.call(&[b"PTTL", &keys.zone_meta])), -1);
    // The default counter never expires the zone's hash.
    let default = zone().counter(None).unwrap();
    take_with(&mut client, &info, &default, &idle, &[1]).unwrap();
    assert_eq!(integer(client.call(&[b"PTTL", &keys.zone_meta])), -1);
    // Without idle_ms nothing expires.
    let plain = keyed("plain");
    take(&mut client, &info, &plain, &limit, &[1]);
    assert_eq!(integer(client.call(&[b"PTTL", &plain.counter])), -1);
    // `idle=` removed from the configuration: the expiry it set goes with
    // the next take, or the counter would retire while in use.
    take_with(&mut client, &info, &keys, &args(&limit), &[1]).unwrap();
    for key in [&keys.counter, &keys.counter_meta] {
        assert_eq!(integer(client.call(&[b"PTTL", key])), -1);
    }
}

#[test]
fn bad_stored_values_are_errors_and_write_nothing() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, None);
    for (n, bad) in ["abc", "007", "-1", "1.5", "", " 1", "9223372036854775808"]
        .iter()
        .enumerate()
    {
        let keys = keyed(&format!("bad{n}"));
        client.call(&[b"SET", &keys.counter, bad.as_bytes()]);
        let e = take_with(&mut client, &info, &keys, &args(&limit), &[1]).unwrap_err();
        assert!(
            matches!(&e, ReplyError::Script(m) if m.starts_with("ticket: the counter")),
            "{bad:?}: {e}"
        );
        assert_eq!(
            get(&mut client, &keys.counter).as_deref(),
            Some(bad.as_bytes())
        );
        assert_eq!(integer(client.call(&[b"EXISTS", &keys.counter_meta])), 0);
        encode_admin_get(&mut client.out, &info.scripts.admin_get, &keys);
        client.flush();
        assert!(AdminGetReply::parse(client.read_value()).is_err());
    }
    // A zone without metadata got none from the failed takes.
    assert_eq!(integer(client.call(&[b"EXISTS", zone().zone_meta()])), 0);
    // Bad metadata too.
    let keys = keyed("k");
    client.call(&[b"HSET", &keys.zone_meta, b"fence", b"x"]);
    let e = take_with(&mut client, &info, &keys, &args(&limit), &[1]).unwrap_err();
    assert!(
        matches!(&e, ReplyError::Script(m) if m.contains("zone fence")),
        "{e}"
    );
    // A counter of the wrong type: Redis's own error.
    client.call(&[b"DEL", &keys.zone_meta]);
    client.call(&[b"HSET", &keys.counter, b"a", b"b"]);
    let e = take_with(&mut client, &info, &keys, &args(&limit), &[1]).unwrap_err();
    assert!(
        matches!(&e, ReplyError::Server(m) if m.starts_with("WRONGTYPE")),
        "{e}"
    );
}

#[test]
fn admin_get_set_del() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, None);
    let keys = keyed("k");
    assert_eq!(
        admin_get(&mut client, &info, &keys),
        AdminGetReply {
            exists: false,
            issued: None,
            generation: None,
            last_used: None
        }
    );
    take(&mut client, &info, &keys, &limit, &[10]);
    let state = admin_get(&mut client, &info, &keys);
    assert_eq!(
        (state.exists, state.issued, state.last_used),
        (true, Some(10), Some(NOW))
    );
    let generation = state.generation.unwrap();
    assert_eq!(
        admin_set(&mut client, &info, &keys, 5),
        AdminSetReply::WouldReissue { issued: 10 }
    );
    assert_eq!(
        admin_set(&mut client, &info, &keys, 41),
        AdminSetReply::Set {
            issued_before: 10,
            generation
        }
    );
    assert_eq!(
        take(&mut client, &info, &keys, &limit, &[1]),
        [tickets(42, 1)]
    );
    assert_eq!(
        admin_set(&mut client, &info, &keys, 42),
        AdminSetReply::Set {
            issued_before: 42,
            generation
        }
    );
    // Setting a counter that never existed gives it a life.
    let fresh = keyed("fresh");
    let AdminSetReply::Set {
        issued_before: 0,
        generation: fresh_generation,
    } = admin_set(&mut client, &info, &fresh, admin_set_count(1, 100).unwrap())
    else {
        panic!("not set");
    };
    assert_ne!(fresh_generation, generation);
    assert_eq!(
        take(&mut client, &info, &fresh, &limit, &[1]),
        [tickets(100, 1)]
    );

    assert!(admin_del(&mut client, &info, &keys));
    assert!(!admin_del(&mut client, &info, &keys));
    assert!(!admin_get(&mut client, &info, &keys).exists);
    // The default counter's fields go, the zone's stay.
    let default = zone().counter(None).unwrap();
    take(&mut client, &info, &default, &limit, &[1]);
    assert!(admin_del(&mut client, &info, &default));
    let epoch = client.call(&[b"HGET", zone().zone_meta(), b"epoch"]);
    assert_eq!(epoch.as_bytes(), Some(EPOCH));
    assert!(!admin_get(&mut client, &info, &default).exists);
}

/// A refused move writes nothing: no counter metadata, no zone epoch, no
/// last use (an admin's mistake leaves Redis as it was).
#[test]
fn a_refused_admin_set_writes_nothing() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    // a counter an operator set by hand (migrating): no metadata yet
    let keys = keyed("k");
    let set = client.call(&[b"SET", &keys.counter, b"10"]);
    assert_eq!(set.as_bytes(), Some(&b"OK"[..]));
    assert_eq!(
        admin_set(&mut client, &info, &keys, 5),
        AdminSetReply::WouldReissue { issued: 10 }
    );
    let exists = |client: &mut Client, key: &[u8]| integer(client.call(&[b"EXISTS", key]));
    assert_eq!(exists(&mut client, &keys.counter_meta), 0);
    assert_eq!(exists(&mut client, zone().zone_meta()), 0);
    assert_eq!(get(&mut client, &keys.counter), Some(b"10".to_vec()));
    assert_eq!(integer(client.call(&[b"TTL", &keys.counter])), -1);
}

#[test]
fn noscript_after_a_flush() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    client.call(&[b"SCRIPT", b"FLUSH"]);
    let limit = TakeLimit::new(1, None);
    let e = take_with(&mut client, &info, &keyed("k"), &args(&limit), &[1]).unwrap_err();
    assert_eq!(e, ReplyError::NoScript);
}

/// The edge's flow: requests queue per key, go out in batches, pipelined,
/// and tickets come back in arrival order.
#[test]
fn batches_through_the_queue() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let limit = TakeLimit::new(1, Some(1000));
    let keys = keyed("k");
    let mut queue = KeyQueue::new();
    let mut handed: Vec<(u64, TakeOutcome)> = Vec::new();
    let mut id = 0;
    for round in 0..20u64 {
        for _ in 0..=round % 7 {
            id += 1;
            if queue.push(id, 1 + id % 3) == Push::SendNow {
                let batch = queue.start_batch().unwrap();
                let counts = batch.iter().map(|p| p.count);
                encode_take(
                    &mut client.out,
                    &info.scripts.take,
                    &keys,
                    &args(&limit),
                    counts,
                )
                .unwrap();
                client.flush();
            }
        }
        if round % 3 == 1 {
            queue.forget(id);
        }
        let asked: Vec<u64> = queue.in_flight().iter().map(|p| p.count).collect();
        let reply = TakeReply::parse(client.read_value(), &asked).unwrap();
        let outcomes = reply
            .outcomes(&limit, queue.in_flight().iter().map(|p| p.count))
            .unwrap();
        for (pending, outcome) in queue.in_flight().iter().zip(outcomes) {
            if pending.live {
                handed.push((pending.id, outcome));
            }
        }
        if queue.finish() {
            let batch = queue.start_batch().unwrap();
            let counts = batch.iter().map(|p| p.count);
            encode_take(
                &mut client.out,
                &info.scripts.take,
                &keys,
                &args(&limit),
                counts,
            )
            .unwrap();
            client.flush();
        } else {
            // Keep one take in flight for the next round.
            id += 1;
            assert_eq!(queue.push(id, 1), Push::SendNow);
            let counts = queue.start_batch().unwrap().iter().map(|p| p.count);
            encode_take(
                &mut client.out,
                &info.scripts.take,
                &keys,
                &args(&limit),
                counts,
            )
            .unwrap();
            client.flush();
        }
    }
    let mut next = 1;
    for (_, outcome) in &handed {
        let TakeOutcome::Tickets { first, count } = *outcome else {
            panic!("refused");
        };
        assert!(first >= next);
        next = first + count;
    }
    let ids: Vec<u64> = handed.iter().map(|(id, _)| *id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
}

/// The Lua decimal helpers against Rust's u128 arithmetic.
#[test]
fn decimal_helpers_in_lua() {
    let Some((_server, mut client, _info)) = setup() else {
        return;
    };
    let script = concat!(
        include_str!("helpers.lua"),
        "local a, b = ARGV[1], ARGV[2]\n",
        "if not is_count(a) then return {0} end\n",
        "local big, small = a, b\n",
        "if dec_cmp(a, b) < 0 then big, small = b, a end\n",
        "return {dec_cmp(a, b), dec_add(a, b), dec_sub(big, small), dec_add_capped(a, b),\n",
        "  is_count(a) and 1 or 0}\n",
    );
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut pairs: Vec<(u64, u64)> = vec![
        (0, 0),
        (0, 1),
        (9, 1),
        (999, 1),
        (1000, 1),
        (MAX_COUNT, 0),
        (MAX_COUNT, 1),
        (MAX_COUNT, MAX_COUNT),
        (MAX_COUNT - 1, 1),
        (10_000_000_000_000_000, 9_999_999_999_999_999),
    ];
    for _ in 0..300 {
        let digits = |r: u64| r % 10u64.pow((r % 19) as u32 + 1);
        pairs.push((digits(random()) & MAX_COUNT, digits(random()) & MAX_COUNT));
    }
    for (a, b) in pairs {
        let (a_text, b_text) = (a.to_string(), b.to_string());
        let reply = client.call(&[
            b"EVAL",
            script.as_bytes(),
            b"0",
            a_text.as_bytes(),
            b_text.as_bytes(),
        ]);
        let Value::Array(Some(items)) = reply else {
            panic!("{a} {b}: {reply:?}");
        };
        let text = |i: usize| String::from_utf8(items[i].as_bytes().unwrap().to_vec()).unwrap();
        let expected_cmp = match a.cmp(&b) {
            std::cmp::Ordering::Less => -1,
            std::cmp::Ordering::Equal => 0,
            std::cmp::Ordering::Greater => 1,
        };
        assert_eq!(items[0], Value::Integer(expected_cmp), "cmp {a} {b}");
        let sum = u128::from(a) + u128::from(b);
        assert_eq!(text(1), sum.to_string(), "add {a} {b}");
        assert_eq!(text(2), a.abs_diff(b).to_string(), "sub {a} {b}");
        assert_eq!(
            text(3),
            sum.min(u128::from(MAX_COUNT)).to_string(),
            "capped {a} {b}"
        );
        assert_eq!(items[4], Value::Integer(1), "is_count {a}");
    }
    let mut is_count = |text: &str| {
        let reply = client.call(&[b"EVAL", script.as_bytes(), b"0", text.as_bytes(), b"0"]);
        let Value::Array(Some(items)) = reply else {
            panic!("{text}: {reply:?}");
        };
        items.len() == 5
    };
    for bad in [
        "",
        "01",
        "-1",
        "+1",
        "1.0",
        "1e3",
        " 1",
        "9223372036854775808",
        "99999999999999999999",
        "abc",
    ] {
        assert!(!is_count(bad), "{bad:?}");
    }
}

/// The scripts refuse bad arguments themselves, before writing anything.
#[test]
fn scripts_check_their_arguments() {
    let Some((_server, mut client, info)) = setup() else {
        return;
    };
    let keys = keyed("k");
    let take_sha = info.scripts.take.as_bytes().to_vec();
    let good: [&[u8]; 11] = [
        b"100", b"0", b"0", b"1", b"ab", b"", b"", b"0", b"0", b"0", b"1",
    ];
    let cases: [(usize, &[u8], &str); 10] = [
        (0, b"x", "limit must be a count"),
        (1, b"-1", "fence must be a count"),
        (2, b"1000000000000000", "idle_ms is too large"),
        (4, b"xyz", "epoch candidate"),
        (6, b"01", "known_gen"),
        (7, b"9223372036854775808", "floor must be a count"),
        (8, b"2", "partial must be 0 or 1"),
        (9, b"-5", "reserve must be a count"),
        (10, b"0", "a request count must be 1 to 1000000000"),
        (10, b"1000000001", "a request count must be 1 to 1000000000"),
    ];
    for (at, bad, message) in cases {
        let mut argv = good;
        argv[at] = bad;
        let mut command: Vec<&[u8]> = vec![
            b"EVALSHA",
            &take_sha,
            b"3",
            &keys.counter,
            &keys.counter_meta,
            &keys.zone_meta,
        ];
        command.extend(argv);
        let reply = client.call(&command);
        let e = TakeReply::parse(reply, &[]).unwrap_err();
        assert!(
            matches!(&e, ReplyError::Script(m) if m.contains(message)),
            "{message}: {e}"
        );
    }
    let mut command: Vec<&[u8]> = vec![
        b"EVALSHA",
        &take_sha,
        b"3",
        &keys.counter,
        &keys.counter_meta,
        &keys.zone_meta,
    ];
    command.extend(&good[..10]);
    command.extend(std::iter::repeat_n(&b"1"[..], 1025));
    let e = TakeReply::parse(client.call(&command), &[]).unwrap_err();
    assert!(
        matches!(&e, ReplyError::Script(m) if m.contains("too many requests")),
        "{e}"
    );
    assert_eq!(integer(client.call(&[b"DBSIZE"])), 0, "nothing written");
}
