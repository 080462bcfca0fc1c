//! What a fresh connection sends before any ticket, and how each reply is
//! checked.
//!
//! The commands go out pipelined in one write ([`Handshake::encode`]); the
//! replies come back in the same order and are handed to
//! [`Handshake::on_reply`] one by one. The first fatal reply ends the
//! handshake (the edge logs the error and closes the connection); when the
//! last reply is in, the edge has the server's run id and the scripts' SHA-1s
//! and runs `fence` for each zone on the connection.

use core::fmt;

use super::reply::error_text;
use super::resp::{Command, Value};
use super::scripts::{Script, ScriptSha, ScriptShas};
use super::url::RedisUrl;

/// One command of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `AUTH [user] password`, when the URL has a password.
    Auth,
    /// `SELECT db`, when the URL names a database other than 0.
    Select,
    /// `INFO server`: `run_id` and `redis_version`.
    InfoServer,
    /// `INFO replication`: `role` must be `master`.
    InfoReplication,
    /// `CONFIG GET appendonly`: only informs a warning; may be refused.
    ConfigAppendonly,
    LoadScript(Script),
}

/// Whether Redis writes an append-only file (without one, a restart loses
/// the writes since the last snapshot, and the fence has more to cover).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appendonly {
    Yes,
    No,
    /// `CONFIG GET` was refused (e.g. `NOPERM`) or answered oddly; the text
    /// says why, for the edge's warning.
    Unknown(String),
}

/// What the handshake learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The run id of this Redis process: it changes on every restart.
    pub run_id: String,
    pub version: Option<String>,
    pub appendonly: Appendonly,
    pub scripts: ScriptShas,
}

/// What to do after a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// More replies are due.
    Continue,
    /// The connection is ready (boxed: the SHA-1s make it large).
    Done(Box<ServerInfo>),
}

/// Why a connection cannot be used; fatal (the edge closes it and retries
/// later). Messages never contain the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// `AUTH` was refused (`WRONGPASS`, `ERR`, …).
    Auth(String),
    /// The server wants a password the URL does not have.
    NoAuth,
    Select {
        db: u32,
        message: String,
    },
    NotMaster {
        role: String,
    },
    /// A command failed (`NOPERM`, `ERR unknown command`, …).
    Refused {
        command: &'static str,
        message: String,
    },
    /// A reply of the wrong shape.
    Malformed {
        command: &'static str,
        what: &'static str,
    },
    /// A reply after the handshake was over.
    Unexpected,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Auth(message) => write!(f, "redis authentication failed: {message}"),
            HandshakeError::NoAuth => {
                f.write_str("redis requires authentication, and the URL has no password")
            }
            HandshakeError::Select { db, message } => {
                write!(f, "redis refused database {db}: {message}")
            }
            HandshakeError::NotMaster { role } => {
                write!(
                    f,
                    "redis is not a master (role:{role}); ticket zones need the master"
                )
            }
            HandshakeError::Refused { command, message } => {
                write!(f, "redis refused \"{command}\": {message}")
            }
            HandshakeError::Malformed { command, what } => {
                write!(f, "unexpected reply to \"{command}\": {what}")
            }
            HandshakeError::Unexpected => f.write_str("unexpected reply after the handshake"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The handshake of one connection.
pub struct Handshake {
    user: Option<String>,
    password: Option<String>,
    db: u32,
    steps: Vec<Step>,
    /// Index in `steps` of the next reply due.
    next: usize,
    run_id: Option<String>,
    version: Option<String>,
    appendonly: Appendonly,
    shas: [Option<ScriptSha>; Script::ALL.len()],
}

/// Never shows the password.
impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("steps", &self.steps)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    pub fn new(url: &RedisUrl) -> Handshake {
        let mut steps = Vec::with_capacity(5 + Script::ALL.len());
        if url.password.is_some() {
            steps.push(Step::Auth);
        }
        if url.db != 0 {
            steps.push(Step::Select);
        }
        steps.extend([
            Step::InfoServer,
            Step::InfoReplication,
            Step::ConfigAppendonly,
        ]);
        steps.extend(Script::ALL.map(Step::LoadScript));
        Handshake {
            user: url.user.clone(),
            password: url.password.clone(),
            db: url.db,
            steps,
            next: 0,
            run_id: None,
            version: None,
            appendonly: Appendonly::Unknown("not asked".to_string()),
            shas: [None; Script::ALL.len()],
        }
    }

    /// The commands, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Appends every command, to be sent in one write.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for step in &self.steps {
            let mut command = Command::new(out);
            match step {
                Step::Auth => {
                    command.arg(b"AUTH");
                    if let Some(user) = &self.user {
                        command.arg(user.as_bytes());
                    }
                    command.arg(self.password.as_deref().unwrap_or("").as_bytes());
                }
                Step::Select => {
                    command.arg(b"SELECT").arg_u64(u64::from(self.db));
                }
                Step::InfoServer => {
                    command.arg(b"INFO").arg(b"server");
                }
                Step::InfoReplication => {
                    command.arg(b"INFO").arg(b"replication");
                }
                Step::ConfigAppendonly => {
                    command.arg(b"CONFIG").arg(b"GET").arg(b"appendonly");
                }
                Step::LoadScript(script) => {
                    command
                        .arg(b"SCRIPT")
                        .arg(b"LOAD")
                        .arg(script.source().as_bytes());
                }
            }
            command.finish();
        }
    }

    /// Checks the next reply.
    pub fn on_reply(&mut self, value: Value) -> Result<Progress, HandshakeError> {
        let step = *self
            .steps
            .get(self.next)
            .ok_or(HandshakeError::Unexpected)?;
        self.next += 1;
        match step {
            Step::Auth => self.check_auth(&value)?,
            Step::Select => self.check_select(&value)?,
            Step::InfoServer => {
                let info = info_text(&value, "INFO server")?;
                let run_id = parse_run_id(info).ok_or(HandshakeError::Malformed {
                    command: "INFO server",
                    what: "no run_id",
                })?;
                self.run_id = Some(run_id);
                self.version = info_field(info, "redis_version")
                    .map(|version| String::from_utf8_lossy(version).into_owned());
            }
            Step::InfoReplication => {
                let info = info_text(&value, "INFO replication")?;
                match info_field(info, "role") {
                    Some(b"master") => {}
                    Some(role) => {
                        return Err(HandshakeError::NotMaster {
                            role: error_text(role),
                        })
                    }
                    None => {
                        return Err(HandshakeError::Malformed {
                            command: "INFO replication",
                            what: "no role",
                        })
                    }
                }
            }
            Step::ConfigAppendonly => self.appendonly = parse_appendonly(&value)?,
            Step::LoadScript(script) => {
                let command = "SCRIPT LOAD";
                let sha = ScriptSha::from_reply(&value).map_err(|_| match &value {
                    Value::Error(message) => refused(command, message),
                    _ => HandshakeError::Malformed {
                        command,
                        what: "not a SHA-1",
                    },
                })?;
                let index = Script::ALL.iter().position(|s| *s == script);
                if let Some(slot) = index.and_then(|i| self.shas.get_mut(i)) {
                    *slot = Some(sha);
                }
            }
        }
        if self.next < self.steps.len() {
            return Ok(Progress::Continue);
        }
        self.finish()
    }

    fn check_auth(&self, value: &Value) -> Result<(), HandshakeError> {
        match value {
            Value::Simple(ok) if ok == b"OK" => Ok(()),
            Value::Error(message) => {
                let mut text = error_text(message);
                // Redis does not echo the password, but make sure of it.
                if let Some(password) = self.password.as_deref().filter(|p| !p.is_empty()) {
                    text = text.replace(password, "***");
                }
                Err(HandshakeError::Auth(text))
            }
            _ => Err(HandshakeError::Malformed {
                command: "AUTH",
                what: "not +OK",
            }),
        }
    }

    fn check_select(&self, value: &Value) -> Result<(), HandshakeError> {
        match value {
            Value::Simple(ok) if ok == b"OK" => Ok(()),
            Value::Error(message) if is_noauth(message) => Err(HandshakeError::NoAuth),
            Value::Error(message) => Err(HandshakeError::Select {
                db: self.db,
                message: error_text(message),
            }),
            _ => Err(HandshakeError::Malformed {
                command: "SELECT",
                what: "not +OK",
            }),
        }
    }

    fn finish(&mut self) -> Result<Progress, HandshakeError> {
        let [Some(take), Some(fence), Some(admin_get), Some(admin_set), Some(admin_del)] =
            self.shas
        else {
            return Err(HandshakeError::Unexpected);
        };
        let run_id = self.run_id.take().ok_or(HandshakeError::Unexpected)?;
        Ok(Progress::Done(Box::new(ServerInfo {
            run_id,
            version: self.version.take(),
            appendonly: core::mem::replace(&mut self.appendonly, Appendonly::No),
            scripts: ScriptShas {
                take,
                fence,
                admin_get,
                admin_set,
                admin_del,
            },
        })))
    }
}

fn is_noauth(message: &[u8]) -> bool {
    message.starts_with(b"NOAUTH")
}

fn refused(command: &'static str, message: &[u8]) -> HandshakeError {
    if is_noauth(message) {
        HandshakeError::NoAuth
    } else {
        HandshakeError::Refused {
            command,
            message: error_text(message),
        }
    }
}

fn info_text<'a>(value: &'a Value, command: &'static str) -> Result<&'a [u8], HandshakeError> {
    match value {
        Value::Bulk(Some(text)) => Ok(text),
        Value::Error(message) => Err(refused(command, message)),
        _ => Err(HandshakeError::Malformed {
            command,
            what: "not a bulk string",
        }),
    }
}

/// The value of `name:value` in an INFO text.
pub fn info_field<'a>(info: &'a [u8], name: &str) -> Option<&'a [u8]> {
    info.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let value = line.strip_prefix(name.as_bytes())?.strip_prefix(b":")?;
        Some(value)
    })
}

/// `run_id` from `INFO server`: 40 hex digits.
pub fn parse_run_id(info: &[u8]) -> Option<String> {
    let run_id = info_field(info, "run_id")?;
    if run_id.len() != 40 || !run_id.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    String::from_utf8(run_id.to_vec()).ok()
}

/// `role` from `INFO replication` (`master`, or `slave` on a replica).
pub fn parse_role(info: &[u8]) -> Option<&[u8]> {
    info_field(info, "role")
}

/// The reply to `CONFIG GET appendonly`; an error reply is not fatal.
fn parse_appendonly(value: &Value) -> Result<Appendonly, HandshakeError> {
    let command = "CONFIG GET";
    Ok(match value {
        Value::Array(Some(items)) => match items.as_slice() {
            [name, setting] if name.as_bytes() == Some(b"appendonly") => match setting.as_bytes() {
                Some(b"yes") => Appendonly::Yes,
                Some(b"no") => Appendonly::No,
                _ => Appendonly::Unknown("unexpected appendonly value".to_string()),
            },
            _ => Appendonly::Unknown("no appendonly setting".to_string()),
        },
        Value::Error(message) if is_noauth(message) => return Err(HandshakeError::NoAuth),
        Value::Error(message) => Appendonly::Unknown(error_text(message)),
        _ => {
            return Err(HandshakeError::Malformed {
                command,
                what: "not an array",
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::redis::resp::Decoder;

    const INFO_SERVER: &[u8] = b"# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\
        run_id:8d0f6d8b3e2f0a1c9b7e6d5c4b3a29180f7e6d5c\r\ntcp_port:0\r\n";
    const INFO_MASTER: &[u8] = b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n";
    const INFO_REPLICA: &[u8] = b"# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\n";

    fn url(text: &str) -> RedisUrl {
        RedisUrl::parse(text).unwrap()
    }

    fn bulk(bytes: &[u8]) -> Value {
        Value::Bulk(Some(bytes.to_vec()))
    }

    fn ok() -> Value {
        Value::Simple(b"OK".to_vec())
    }

    fn err(text: &str) -> Value {
        Value::Error(text.as_bytes().to_vec())
    }

    fn sha(n: u8) -> Value {
        bulk(&[b'a' + n; 40])
    }

    fn commands(handshake: &Handshake) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        handshake.encode(&mut out);
        let mut decoder = Decoder::new();
        decoder.feed(&out);
        let mut commands = Vec::new();
        while let Some(Value::Array(Some(items))) = decoder.next_value().unwrap() {
            commands.push(
                items
                    .iter()
                    .map(|i| String::from_utf8(i.as_bytes().unwrap().to_vec()).unwrap())
                    .collect(),
            );
        }
        assert_eq!(decoder.buffered(), 0);
        commands
    }

    /// Replies for everything after AUTH and SELECT.
    fn good_replies() -> Vec<Value> {
        let mut replies = vec![
            bulk(INFO_SERVER),
            bulk(INFO_MASTER),
            Value::Array(Some(vec![bulk(b"appendonly"), bulk(b"yes")])),
        ];
        replies.extend((0..5).map(sha));
        replies
    }

    fn run(handshake: &mut Handshake, replies: Vec<Value>) -> Result<Progress, HandshakeError> {
        let mut last = Ok(Progress::Continue);
        for reply in replies {
            last = handshake.on_reply(reply);
            if !matches!(last, Ok(Progress::Continue)) {
                break;
            }
        }
        last
    }

    #[test]
    fn plain_connection() {
        let mut handshake = Handshake::new(&url("redis://h"));
        let sent = commands(&handshake);
        assert_eq!(sent[0], ["INFO", "server"]);
        assert_eq!(sent[1], ["INFO", "replication"]);
        assert_eq!(sent[2], ["CONFIG", "GET", "appendonly"]);
        assert_eq!(sent[3][..2], ["SCRIPT", "LOAD"]);
        assert_eq!(sent[3][2], Script::Take.source());
        assert_eq!(sent.len(), 3 + 5);
        let Ok(Progress::Done(info)) = run(&mut handshake, good_replies()) else {
            panic!("not done");
        };
        assert_eq!(info.run_id, "8d0f6d8b3e2f0a1c9b7e6d5c4b3a29180f7e6d5c");
        assert_eq!(info.version.as_deref(), Some("7.0.15"));
        assert_eq!(info.appendonly, Appendonly::Yes);
        assert_eq!(info.scripts.take.as_bytes(), &[b'a'; 40]);
        assert_eq!(info.scripts.admin_del.as_bytes(), &[b'e'; 40]);
        assert_eq!(handshake.on_reply(ok()), Err(HandshakeError::Unexpected));
    }

    #[test]
    fn auth_and_select() {
        let mut handshake = Handshake::new(&url("redis://alice:s3cret@h/3"));
        let sent = commands(&handshake);
        assert_eq!(sent[0], ["AUTH", "alice", "s3cret"]);
        assert_eq!(sent[1], ["SELECT", "3"]);
        assert_eq!(handshake.steps()[..2], [Step::Auth, Step::Select]);
        let mut replies = vec![ok(), ok()];
        replies.extend(good_replies());
        assert!(matches!(
            run(&mut handshake, replies),
            Ok(Progress::Done(_))
        ));
        let handshake = Handshake::new(&url("redis://:pw@h"));
        assert_eq!(commands(&handshake)[0], ["AUTH", "pw"]);
        assert!(!format!("{handshake:?}").contains("pw"));
    }

    #[test]
    fn auth_failures_are_fatal_and_hide_the_password() {
        let mut handshake = Handshake::new(&url("redis://u:hunter2@h"));
        let e = handshake
            .on_reply(err(
                "WRONGPASS invalid username-password pair or user is disabled.",
            ))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "redis authentication failed: WRONGPASS invalid username-password pair or user is disabled."
        );
        let mut handshake = Handshake::new(&url("redis://u:hunter2@h"));
        let e = handshake
            .on_reply(err("ERR bad password hunter2"))
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let mut handshake = Handshake::new(&url("redis://h"));
        assert_eq!(
            handshake.on_reply(err("NOAUTH Authentication required.")),
            Err(HandshakeError::NoAuth)
        );
    }

    #[test]
    fn select_failure() {
        let mut handshake = Handshake::new(&url("redis://h/99"));
        let e = handshake
            .on_reply(err("ERR DB index is out of range"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "redis refused database 99: ERR DB index is out of range"
        );
    }

    #[test]
    fn replica_is_refused() {
        let mut handshake = Handshake::new(&url("redis://h"));
        let mut replies = good_replies();
        replies[1] = bulk(INFO_REPLICA);
        let e = run(&mut handshake, replies).unwrap_err();
        assert_eq!(
            e,
            HandshakeError::NotMaster {
                role: "slave".into()
            }
        );
        assert!(e.to_string().contains("not a master"));
    }

    #[test]
    fn config_get_may_be_refused() {
        for (reply, expected) in [
            (
                err("NOPERM this user has no permissions to run the 'config|get' command"),
                None,
            ),
            (Value::Array(Some(vec![])), None),
            (
                Value::Array(Some(vec![bulk(b"appendonly"), bulk(b"no")])),
                Some(Appendonly::No),
            ),
        ] {
            let mut handshake = Handshake::new(&url("redis://h"));
            let mut replies = good_replies();
            replies[2] = reply;
            let Ok(Progress::Done(info)) = run(&mut handshake, replies) else {
                panic!("not done");
            };
            match expected {
                Some(appendonly) => assert_eq!(info.appendonly, appendonly),
                None => assert!(matches!(info.appendonly, Appendonly::Unknown(_))),
            }
        }
    }

    #[test]
    fn other_failures() {
        let cases: [(usize, Value, &str); 5] = [
            (
                0,
                err("NOPERM no INFO for you"),
                "redis refused \"INFO server\": NOPERM no INFO for you",
            ),
            (
                0,
                bulk(b"# Server\r\nredis_version:7\r\n"),
                "unexpected reply to \"INFO server\": no run_id",
            ),
            (
                1,
                bulk(b"# Replication\r\n"),
                "unexpected reply to \"INFO replication\": no role",
            ),
            (
                3,
                err("ERR Error compiling script"),
                "redis refused \"SCRIPT LOAD\": ERR Error compiling script",
            ),
            (
                4,
                bulk(b"nope"),
                "unexpected reply to \"SCRIPT LOAD\": not a SHA-1",
            ),
        ];
        for (at, reply, message) in cases {
            let mut handshake = Handshake::new(&url("redis://h"));
            let mut replies = good_replies();
            replies[at] = reply;
            assert_eq!(
                run(&mut handshake, replies).unwrap_err().to_string(),
                message
            );
        }
    }

    #[test]
    fn info_parsers() {
        assert_eq!(
            parse_run_id(INFO_SERVER).as_deref(),
            Some("8d0f6d8b3e2f0a1c9b7e6d5c4b3a29180f7e6d5c")
        );
        assert_eq!(parse_run_id(b"run_id:abc\r\n"), None);
        assert_eq!(
            parse_run_id(b"run_id:zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\r\n"),
            None
        );
        assert_eq!(parse_run_id(b""), None);
        assert_eq!(parse_role(INFO_MASTER), Some(&b"master"[..]));
        assert_eq!(parse_role(INFO_REPLICA), Some(&b"slave"[..]));
        // A field name that is a prefix of another does not match it.
        assert_eq!(
            info_field(b"roles:x\nrole:master", "role"),
            Some(&b"master"[..])
        );
        assert_eq!(info_field(b"role:master", "role"), Some(&b"master"[..]));
        assert_eq!(info_field(b"xrole:master", "role"), None);
    }
}
