//! `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, parsed without nginx.
//!
//! Errors quote the URL the way nginx quotes a bad value, with the password
//! replaced by `***`: configuration errors end up in logs and on terminals.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Port used when the URL names none.
pub const DEFAULT_PORT: u16 = 6379;
/// Largest database index: Redis parses `SELECT` into a C `int`.
pub const MAX_DB: u32 = i32::MAX as u32;
/// What replaces the password wherever a URL is shown.
pub const REDACTED: &str = "***";

const SCHEME: &str = "redis://";
/// The directive that takes the URL, named in every error.
const DIRECTIVE: &str = "ticket_zone";
/// Longest hostname DNS allows.
const MAX_HOST_LEN: usize = 253;

/// A parsed Redis URL. Two zones with equal URLs (credentials included) share
/// one connection per worker.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedisUrl {
    /// ACL user; `None` authenticates as `default` (`AUTH password`).
    pub user: Option<String>,
    pub password: Option<String>,
    /// Hostname (lower-cased), IPv4 address, or IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    pub db: u32,
}

/// A URL that was rejected; the message is ready for `ngx_conf_log_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

impl RedisUrl {
    /// Parses a `redis://` URL; see the module documentation for the grammar.
    pub fn parse(text: &str) -> Result<RedisUrl, UrlError> {
        parse_url(text).map_err(|reason| {
            UrlError(format!(
                "invalid redis URL \"{}\" in \"{DIRECTIVE}\" directive: {reason}",
                redact_raw(text)
            ))
        })
    }

    /// The URL with the password replaced by `***`, for logs and the status page.
    pub fn redacted(&self) -> String {
        let mut out = String::with_capacity(SCHEME.len() + self.host.len() + 32);
        out.push_str(SCHEME);
        match (&self.user, &self.password) {
            (Some(user), Some(_)) => {
                push_percent_encoded(&mut out, user);
                out.push(':');
                out.push_str(REDACTED);
                out.push('@');
            }
            (None, Some(_)) => {
                out.push(':');
                out.push_str(REDACTED);
                out.push('@');
            }
            // The parser never produces a user without a password.
            (_, None) => {}
        }
        out.push_str(&self.endpoint());
        out.push('/');
        out.push_str(&self.db.to_string());
        out
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The host as an address when it is one, so the edge can skip resolving.
    pub fn ip_addr(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// Never shows the password, even in `{:?}`.
impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .finish()
    }
}

/// Same as [`RedisUrl::redacted`].
impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn parse_url(text: &str) -> Result<RedisUrl, String> {
    let rest = match text.strip_prefix(SCHEME) {
        Some(rest) => rest,
        None => return Err(scheme_error(text)),
    };
    if rest.starts_with('/') {
        return Err("unix sockets are not supported yet".to_string());
    }

    // The last '@' ends the credentials: a host or a DB never contains one,
    // while a password may (unencoded) contain '@', '/' or ':'.
    let (credentials, location) = match rest.rfind('@') {
        Some(at) => (rest.get(..at), rest.get(at + 1..).unwrap_or("")),
        None => (None, rest),
    };
    let (user, password) = match credentials {
        None => (None, None),
        Some(credentials) => parse_credentials(credentials)?,
    };

    let (authority, db) = match location.split_once('/') {
        Some((authority, db_text)) => (authority, parse_db(db_text)?),
        None => (location, 0),
    };
    let (host, port) = parse_authority(authority)?;
    Ok(RedisUrl {
        user,
        password,
        host,
        port,
        db,
    })
}

fn scheme_error(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("unix:") || lower.starts_with("redis+unix:") {
        "unix sockets are not supported yet".to_string()
    } else if lower.starts_with("rediss:") {
        "TLS (rediss://) is not supported".to_string()
    } else {
        format!("the URL must start with \"{SCHEME}\"")
    }
}

type Credentials = (Option<String>, Option<String>);

fn parse_credentials(text: &str) -> Result<Credentials, String> {
    let Some((user, password)) = text.split_once(':') else {
        return Err("credentials must be \"[USER]:PASSWORD@\"".to_string());
    };
    let password = percent_decode(password).ok_or("invalid percent-encoding in the password")?;
    if password.is_empty() {
        return Err("empty password".to_string());
    }
    let user = if user.is_empty() {
        None
    } else {
        Some(percent_decode(user).ok_or("invalid percent-encoding in the user")?)
    };
    Ok((user, Some(password)))
}

fn parse_db(text: &str) -> Result<u32, String> {
    // "redis://host/" selects database 0, as other clients accept.
    if text.is_empty() {
        return Ok(0);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the database must be a number from 0 to {MAX_DB}, not \"{text}\""
        ));
    }
    match text.parse::<u32>() {
        Ok(db) if db <= MAX_DB => Ok(db),
        _ => Err(format!(
            "the database must be a number from 0 to {MAX_DB}, not \"{text}\""
        )),
    }
}

fn parse_authority(text: &str) -> Result<(String, u16), String> {
    let (host, port_text) = if let Some(bracketed) = text.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err("missing \"]\" after the IPv6 address".to_string());
        };
        let address: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("invalid IPv6 address \"{inside}\""))?;
        let port_text = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port_text) => Some(port_text),
                None => return Err(format!("unexpected \"{after}\" after the host")),
            },
        };
        (address.to_string(), port_text)
    } else {
        let (host, port_text) = match text.split_once(':') {
            Some((host, port_text)) => (host, Some(port_text)),
            None => (text, None),
        };
        (parse_host_name(host)?, port_text)
    };
    let port = match port_text {
        None => DEFAULT_PORT,
        Some(port_text) => parse_port(port_text)?,
    };
    Ok((host, port))
}

fn parse_host_name(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("no host".to_string());
    }
    let valid_chars = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid_chars || host.len() > MAX_HOST_LEN {
        return Err(format!("invalid host \"{host}\""));
    }
    // Digits and dots only is meant as an IPv4 address: "10.0.0.256" is a typo.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') && host.parse::<Ipv4Addr>().is_err() {
        return Err(format!("invalid IPv4 address \"{host}\""));
    }
    Ok(host.to_ascii_lowercase())
}

fn parse_port(text: &str) -> Result<u16, String> {
    let bad = || format!("the port must be a number from 1 to 65535, not \"{text}\"");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(bad()),
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let high = hex_value(*bytes.get(i + 1)?)?;
            let low = hex_value(*bytes.get(i + 2)?)?;
            out.push((high << 4) | low);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Encodes what would not parse back: the user is shown in `redacted()`.
fn push_percent_encoded(out: &mut String, text: &str) {
    let hex = |nibble: u8| {
        char::from_digit(u32::from(nibble), 16).map_or('0', |c| c.to_ascii_uppercase())
    };
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex(b >> 4));
            out.push(hex(b & 0xf));
        }
    }
}

/// The raw text with whatever could be a password replaced by `***`: everything
/// after the first ':' of the credentials, or all of them when there is no ':'.
/// For any configuration text an error quotes (a misspelled `redis=` too).
pub fn redact_raw(text: &str) -> String {
    let start = text.find("://").map_or(0, |i| i + 3);
    let (Some(head), Some(after_head)) = (text.get(..start), text.get(start..)) else {
        return text.to_string();
    };
    let Some(at) = after_head.rfind('@') else {
        return text.to_string();
    };
    let credentials = after_head.get(..at).unwrap_or("");
    let location = after_head.get(at..).unwrap_or("");
    match credentials.split_once(':') {
        Some((user, _)) => format!("{head}{user}:{REDACTED}{location}"),
        None => format!("{head}{REDACTED}{location}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn url(text: &str) -> RedisUrl {
        match RedisUrl::parse(text) {
            Ok(url) => url,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    fn error(text: &str) -> String {
        match RedisUrl::parse(text) {
            Ok(url) => panic!("{text} parsed as {url:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn defaults() {
        let u = url("redis://localhost");
        assert_eq!(u.user, None);
        assert_eq!(u.password, None);
        assert_eq!(u.host, "localhost");
        assert_eq!(u.port, 6379);
        assert_eq!(u.db, 0);
        assert_eq!(u.endpoint(), "localhost:6379");
        assert_eq!(u.redacted(), "redis://localhost:6379/0");
    }

    #[test]
    fn every_part() {
        let u = url("redis://alice:s3cret@redis.example:6380/2");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        assert_eq!(u.host, "redis.example");
        assert_eq!(u.port, 6380);
        assert_eq!(u.db, 2);
        assert_eq!(u.redacted(), "redis://alice:***@redis.example:6380/2");
        assert_eq!(u.to_string(), u.redacted());
        assert_eq!(u.endpoint(), "redis.example:6380");
    }

    #[test]
    fn password_without_user() {
        let u = url("redis://:pass@10.0.0.1");
        assert_eq!(u.user, None);
        assert_eq!(u.password.as_deref(), Some("pass"));
        assert_eq!(u.redacted(), "redis://:***@10.0.0.1:6379/0");
    }

    #[test]
    fn percent_decoding() {
        let u = url("redis://us%3Aer:p%40ss%2Fw%3ad@host");
        assert_eq!(u.user.as_deref(), Some("us:er"));
        assert_eq!(u.password.as_deref(), Some("p@ss/w:d"));
        assert_eq!(u.redacted(), "redis://us%3Aer:***@host:6379/0");
        assert!(error("redis://:p%4@host").contains("percent-encoding in the password"));
        assert!(error("redis://:p%zz@host").contains("percent-encoding"));
        assert!(error("redis://u%g0:p@host").contains("percent-encoding in the user"));
        // Invalid UTF-8 after decoding.
        assert!(error("redis://:%ff@host").contains("percent-encoding"));
    }

    #[test]
    fn unencoded_specials_in_the_password() {
        let u = url("redis://:a@b/c:d@host:1/3");
        assert_eq!(u.password.as_deref(), Some("a@b/c:d"));
        assert_eq!(u.host, "host");
        assert_eq!(u.port, 1);
        assert_eq!(u.db, 3);
    }

    #[test]
    fn addresses() {
        assert_eq!(url("redis://127.0.0.1:7000").host, "127.0.0.1");
        let u = url("redis://[::1]:7000/1");
        assert_eq!(u.host, "::1");
        assert_eq!(u.endpoint(), "[::1]:7000");
        assert_eq!(u.redacted(), "redis://[::1]:7000/1");
        assert_eq!(u.ip_addr(), Some("::1".parse().unwrap()));
        // Canonical form, so equal addresses share a connection.
        assert_eq!(url("redis://[0:0::0001]").host, "::1");
        assert_eq!(url("redis://[::1]").port, 6379);
        assert_eq!(url("redis://Redis.Example").host, "redis.example");
        assert_eq!(url("redis://redis.example").ip_addr(), None);
        assert_eq!(url("redis://my_redis-1.local").host, "my_redis-1.local");
    }

    #[test]
    fn database() {
        assert_eq!(url("redis://h/").db, 0);
        assert_eq!(url("redis://h/15").db, 15);
        assert_eq!(url("redis://h/2147483647").db, MAX_DB);
        assert!(error("redis://h/2147483648").contains("database"));
        assert!(error("redis://h/99999999999").contains("database"));
        assert!(error("redis://h/x").contains("database"));
        assert!(error("redis://h/-1").contains("database"));
        assert!(error("redis://h/1/2").contains("database"));
        assert!(error("redis://h/1?timeout=1").contains("database"));
    }

    #[test]
    fn ports() {
        assert_eq!(url("redis://h:65535").port, 65535);
        for bad in [
            "redis://h:0",
            "redis://h:65536",
            "redis://h:",
            "redis://h:x",
            "redis://h:-1",
        ] {
            assert!(error(bad).contains("port must be"), "{bad}");
        }
        assert!(error("redis://[::1]:0").contains("port"));
        assert!(error("redis://h:1:2").contains("port"));
    }

    #[test]
    fn bad_hosts() {
        assert!(error("redis://").contains("no host"));
        assert!(error("redis://:6379").contains("no host"));
        assert!(error("redis://:pw@:6379").contains("no host"));
        assert!(error("redis://:pw@/0").contains("no host"));
        assert!(error("redis://h st").contains("invalid host"));
        assert!(error("redis://10.0.0.256").contains("invalid IPv4 address"));
        assert!(error("redis://1.2.3").contains("invalid IPv4"));
        assert!(error("redis://[::1").contains("missing \"]\""));
        assert!(error("redis://[nope]").contains("invalid IPv6"));
        assert!(error("redis://[::1]x").contains("unexpected \"x\""));
        assert!(error(&format!("redis://{}", "a".repeat(254))).contains("invalid host"));
    }

    #[test]
    fn schemes() {
        assert!(error("http://h").contains("must start with \"redis://\""));
        assert!(error("h:6379").contains("must start with"));
        assert!(error("").contains("must start with"));
        assert!(error("rediss://h").contains("TLS"));
        assert!(error("unix:///tmp/redis.sock").contains("unix sockets are not supported yet"));
        assert!(error("redis+unix:///tmp/r.sock").contains("unix sockets"));
        assert!(error("redis:///tmp/redis.sock").contains("unix sockets"));
    }

    #[test]
    fn credentials_need_a_colon() {
        let e = error("redis://secret@host");
        assert!(e.contains("credentials"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        assert!(error("redis://user:@host").contains("empty password"));
    }

    #[test]
    fn errors_are_nginx_style_and_hide_the_password() {
        assert_eq!(
            error("redis://bob:hunter2@h:0"),
            "invalid redis URL \"redis://bob:***@h:0\" in \"ticket_zone\" directive: \
             the port must be a number from 1 to 65535, not \"0\""
        );
        for text in [
            "redis://:hunter2@h:99999",
            "redis://u:hunter2@h/x",
            "redis://:hun@ter2@h:0",
            "redis://hunter2@h",
            "redis:/:hunter2@h",
            "rediss://u:hunter2@h",
            "redis://u:hunter2%zz@h",
        ] {
            let e = error(text);
            assert!(!e.contains("hunter2") && !e.contains("ter2"), "{e}");
            assert!(e.contains("***"), "{e}");
            assert!(e.contains("in \"ticket_zone\" directive"), "{e}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", url("redis://u:hunter2@h"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn equality_decides_sharing() {
        let mut set = HashSet::new();
        set.insert(url("redis://h"));
        assert!(set.contains(&url("redis://H:6379/0")));
        assert!(!set.contains(&url("redis://h/1")));
        assert!(!set.contains(&url("redis://:p@h")));
        assert!(!set.contains(&url("redis://h:6380")));
        assert_ne!(url("redis://:a@h"), url("redis://:b@h"));
        assert_ne!(url("redis://u:a@h"), url("redis://:a@h"));
    }
}
