//! The status page: zones and counters as JSON or in the Prometheus text
//! exposition format, rendered in bounded slices so that a zone with
//! hundreds of thousands of keys never holds up the worker's other
//! connections: the edge sends a slice, lets the event loop run, and asks
//! for the next one. Reading counters takes no ticket.
//!
//! Keys are bytes. On the page they are written one-to-one: valid UTF-8 as
//! is, a backslash as `\\`, every ASCII control character and every byte
//! of invalid UTF-8 as `\xNN`; then JSON or Prometheus escaping applies on
//! top. Two different keys never look the same (they would be one
//! Prometheus series, and the scrape would fail).

use core::fmt::Write;

use crate::core::counter::CounterView;

/// How `ticket_status` writes its page.
pub use crate::core::config::StatusFormat;

/// One zone as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ZoneInfo {
    pub name: String,
    /// Bytes of shared memory.
    pub size: usize,
    /// Keys the zone can hold, and keys it holds.
    pub capacity: u64,
    pub keys: u64,
    /// Keys retired after being idle.
    pub expired: u64,
    /// A Redis zone's authority and how talking to it went.
    pub redis: Option<RedisInfo>,
}

/// A Redis zone on the status page (never its password).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisInfo {
    pub authority: String,
    /// "strict" or "lease".
    pub mode: &'static str,
    /// Workers whose connection is up, of the workers that have one.
    pub connected: u64,
    pub workers: u64,
    pub batches: u64,
    pub tickets: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub fences: u64,
    pub repairs: u64,
}

/// One counter: `key` is `None` for the zone's default counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: Option<Vec<u8>>,
    pub view: CounterView,
    /// Lease mode: numbers this nginx holds and has not handed out.
    pub lease: Option<u64>,
}

/// Where the page's data comes from.
pub trait Source {
    fn zone_count(&self) -> usize;
    fn zone(&self, index: usize) -> ZoneInfo;
    /// Appends up to `limit` rows of zone `index` from position `from` (0 is
    /// the default counter) to `out`; returns the position after them, or
    /// `None` when the zone has no more.
    fn rows(&self, index: usize, from: usize, limit: usize, out: &mut Vec<Row>) -> Option<usize>;
}

/// A key written one-to-one (see the module comment), before any escaping
/// of the output format.
pub fn display_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_ascii_control() {
                // a raw CR or NUL breaks line-based readers of the pages
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                out.push(c);
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// `text` as a JSON string (also for the admin API's bodies).
pub(crate) fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A number, or `null`.
pub(crate) fn json_opt(out: &mut String, value: Option<u64>) {
    match value {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

/// One counter; fields in alphabetical order, as every object of the page.
fn json_row(out: &mut String, row: &Row) {
    let v = &row.view;
    let _ = write!(out, "{{\"issued\":{},\"key\":", v.issued);
    match &row.key {
        Some(key) => json_string(out, &display_key(key)),
        None => out.push_str("null"),
    }
    out.push_str(",\"last\":");
    json_opt(out, v.last());
    if let Some(lease) = row.lease {
        let _ = write!(out, ",\"lease\":{lease}");
    }
    out.push_str(",\"max\":");
    json_opt(out, v.max);
    out.push_str(",\"start\":");
    json_opt(out, v.start);
    out.push_str(",\"used\":");
    json_opt(out, (v.used > 0).then_some(v.used / 1000));
    out.push('}');
}

fn json_redis(out: &mut String, r: &RedisInfo) {
    out.push_str(",\"redis\":{\"authority\":");
    json_string(out, &r.authority);
    let _ = write!(
        out,
        ",\"batches\":{},\"connected\":{},\"errors\":{},\"fences\":{},\"mode\":\"{}\",\
         \"repairs\":{},\"tickets\":{},\"tickets_per_batch\":{},\"timeouts\":{},\"workers\":{}}}",
        r.batches,
        r.connected,
        r.errors,
        r.fences,
        r.mode,
        r.repairs,
        r.tickets,
        r.tickets.checked_div(r.batches).unwrap_or(0),
        r.timeouts,
        r.workers
    );
}

/// Escapes a label value as the exposition format requires.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A Prometheus family over counters.
struct CounterFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Row) -> Option<u64>,
}

const COUNTER_FAMILIES: [CounterFamily; 4] = [
    CounterFamily {
        name: "ticket_issued_total",
        kind: "counter",
        help: "Tickets issued by the counter.",
        value: |r| Some(r.view.issued),
    },
    CounterFamily {
        name: "ticket_last",
        kind: "gauge",
        help: "The last ticket issued by the counter.",
        value: |r| r.view.last(),
    },
    CounterFamily {
        name: "ticket_max",
        kind: "gauge",
        help: "The supply limit (max=) of the counter.",
        value: |r| r.view.max,
    },
    CounterFamily {
        name: "ticket_lease_left",
        kind: "gauge",
        help: "Numbers this nginx holds from Redis and has not handed out.",
        value: |r| r.lease,
    },
];

/// A Prometheus family over zones.
struct ZoneFamily {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&ZoneInfo) -> Option<u64>,
}

const ZONE_FAMILIES: [ZoneFamily; 11] = [
    ZoneFamily {
        name: "ticket_zone_capacity_keys",
        kind: "gauge",
        help: "Keys the zone can hold.",
        value: |z| Some(z.capacity),
    },
    ZoneFamily {
        name: "ticket_zone_keys",
        kind: "gauge",
        help: "Keys the zone holds.",
        value: |z| Some(z.keys),
    },
    ZoneFamily {
        name: "ticket_zone_expired_keys_total",
        kind: "counter",
        help: "Keys retired after being idle.",
        value: |z| Some(z.expired),
    },
    ZoneFamily {
        name: "ticket_zone_size_bytes",
        kind: "gauge",
        help: "Shared memory size of the zone.",
        value: |z| Some(z.size as u64),
    },
    ZoneFamily {
        name: "ticket_redis_connected_workers",
        kind: "gauge",
        help: "Workers whose connection to the zone's Redis is up.",
        value: |z| z.redis.as_ref().map(|r| r.connected),
    },
    ZoneFamily {
        name: "ticket_redis_batches_total",
        kind: "counter",
        help: "Commands sent to Redis for tickets (batches and leases).",
        value: |z| z.redis.as_ref().map(|r| r.batches),
    },
    ZoneFamily {
        name: "ticket_redis_tickets_total",
        kind: "counter",
        help: "Tickets asked of Redis.",
        value: |z| z.redis.as_ref().map(|r| r.tickets),
    },
    ZoneFamily {
        name: "ticket_redis_errors_total",
        kind: "counter",
        help: "Connections to Redis lost or refused.",
        value: |z| z.redis.as_ref().map(|r| r.errors),
    },
    ZoneFamily {
        name: "ticket_redis_timeouts_total",
        kind: "counter",
        help: "Connections to Redis closed after a reply timeout.",
        value: |z| z.redis.as_ref().map(|r| r.timeouts),
    },
    ZoneFamily {
        name: "ticket_redis_fences_total",
        kind: "counter",
        help: "Counters fenced after Redis restarted or failed over.",
        value: |z| z.redis.as_ref().map(|r| r.fences),
    },
    ZoneFamily {
        name: "ticket_redis_repairs_total",
        kind: "counter",
        help: "Counters Redis had below what this nginx handed out, raised past it.",
        value: |z| z.redis.as_ref().map(|r| r.repairs),
    },
];

fn family_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Where the page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Start,
    /// JSON: rows of zone `zone` from `from`; `first` if none written yet.
    JsonRows {
        zone: usize,
        from: usize,
        first: bool,
    },
    /// Prometheus: counter family `family`, zone `zone`, rows from `from`.
    PromRows {
        family: usize,
        zone: usize,
        from: usize,
    },
    PromZones,
    Done,
}

/// A status page being rendered slice by slice.
pub struct Page {
    format: StatusFormat,
    stage: Stage,
    /// Zone names and sizes as they were when the page began.
    zones: Vec<ZoneInfo>,
}

impl Page {
    pub fn new(format: StatusFormat) -> Self {
        Page {
            format,
            stage: Stage::Start,
            zones: Vec::new(),
        }
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Renders the next slice: at most about `budget` counters. Returns an
    /// empty string once the page is complete.
    pub fn next_slice(&mut self, source: &impl Source, budget: usize) -> String {
        let mut out = String::new();
        let mut rows = Vec::new();
        let mut left = budget.max(1);
        while left > 0 {
            match self.stage {
                Stage::Done => break,
                Stage::Start => {
                    self.zones = (0..source.zone_count()).map(|i| source.zone(i)).collect();
                    match self.format {
                        StatusFormat::Json => {
                            out.push_str("{\"zones\":{");
                            self.stage = self.json_zone(&mut out, 0);
                        }
                        StatusFormat::Prometheus => {
                            self.stage = self.prom_family(&mut out, 0);
                        }
                    }
                }
                Stage::JsonRows { zone, from, first } => {
                    rows.clear();
                    let next = source.rows(zone, from, left, &mut rows);
                    left = left.saturating_sub(rows.len().max(1));
                    for (i, row) in rows.iter().enumerate() {
                        if !(first && i == 0) {
                            out.push(',');
                        }
                        json_row(&mut out, row);
                    }
                    let first = first && rows.is_empty();
                    self.stage = match next {
                        Some(from) => Stage::JsonRows { zone, from, first },
                        None => {
                            if let Some(info) = self.zones.get(zone) {
                                let _ = write!(
                                    out,
                                    "],\"expired\":{},\"keys\":{}",
                                    info.expired, info.keys
                                );
                                if let Some(redis) = &info.redis {
                                    json_redis(&mut out, redis);
                                }
                                let _ = write!(out, ",\"size\":{}}}", info.size);
                            }
                            self.json_zone(&mut out, zone + 1)
                        }
                    };
                }
                Stage::PromRows { family, zone, from } => {
                    rows.clear();
                    let next = source.rows(zone, from, left, &mut rows);
                    left = left.saturating_sub(rows.len().max(1));
                    let f = &COUNTER_FAMILIES[family];
                    let zone_name = self.zones.get(zone).map_or("", |z| z.name.as_str());
                    for row in &rows {
                        if let Some(value) = (f.value)(row) {
                            let key = row.key.as_deref().map(display_key).unwrap_or_default();
                            let _ = writeln!(
                                out,
                                "{}{{zone=\"{}\",key=\"{}\"}} {value}",
                                f.name,
                                label(zone_name),
                                label(&key)
                            );
                        }
                    }
                    self.stage = match next {
                        Some(from) => Stage::PromRows { family, zone, from },
                        None if zone + 1 < self.zones.len() => Stage::PromRows {
                            family,
                            zone: zone + 1,
                            from: 0,
                        },
                        None => self.prom_family(&mut out, family + 1),
                    };
                }
                Stage::PromZones => {
                    for f in &ZONE_FAMILIES {
                        let samples: Vec<(&ZoneInfo, u64)> = self
                            .zones
                            .iter()
                            .filter_map(|z| (f.value)(z).map(|v| (z, v)))
                            .collect();
                        if samples.is_empty() {
                            continue;
                        }
                        family_header(&mut out, f.name, f.kind, f.help);
                        for (zone, value) in samples {
                            let _ = writeln!(
                                out,
                                "{}{{zone=\"{}\"}} {value}",
                                f.name,
                                label(&zone.name)
                            );
                        }
                    }
                    self.stage = Stage::Done;
                }
            }
        }
        out
    }

    /// Opens zone `index` of the JSON page (or closes the page).
    fn json_zone(&self, out: &mut String, index: usize) -> Stage {
        let Some(zone) = self.zones.get(index) else {
            out.push_str("}}\n");
            return Stage::Done;
        };
        if index > 0 {
            out.push(',');
        }
        json_string(out, &zone.name);
        let _ = write!(out, ":{{\"capacity\":{},\"counters\":[", zone.capacity);
        Stage::JsonRows {
            zone: index,
            from: 0,
            first: true,
        }
    }

    /// Starts counter family `index` (or the zone families after the last).
    fn prom_family(&self, out: &mut String, index: usize) -> Stage {
        match COUNTER_FAMILIES.get(index) {
            Some(f) => {
                family_header(out, f.name, f.kind, f.help);
                if self.zones.is_empty() {
                    self.prom_family(out, index + 1)
                } else {
                    Stage::PromRows {
                        family: index,
                        zone: 0,
                        from: 0,
                    }
                }
            }
            None => Stage::PromZones,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zones held in plain vectors.
    struct Fake(Vec<(ZoneInfo, Vec<Row>)>);

    impl Source for Fake {
        fn zone_count(&self) -> usize {
            self.0.len()
        }
        fn zone(&self, index: usize) -> ZoneInfo {
            self.0[index].0.clone()
        }
        fn rows(
            &self,
            index: usize,
            from: usize,
            limit: usize,
            out: &mut Vec<Row>,
        ) -> Option<usize> {
            let rows = &self.0[index].1;
            let end = (from + limit).min(rows.len());
            out.extend(rows[from..end].iter().cloned());
            (end < rows.len()).then_some(end)
        }
    }

    fn view(start: u64, issued: u64, max: Option<u64>) -> CounterView {
        CounterView {
            start: Some(start),
            issued,
            max,
            ..CounterView::default()
        }
    }

    fn sample() -> Fake {
        Fake(vec![(
            ZoneInfo {
                name: "z".into(),
                size: 1 << 20,
                capacity: 7000,
                keys: 1,
                expired: 2,
                redis: Some(RedisInfo {
                    authority: "redis://10.0.0.5:6379/0".into(),
                    mode: "lease",
                    connected: 2,
                    workers: 2,
                    batches: 4,
                    tickets: 40,
                    ..RedisInfo::default()
                }),
            },
            vec![
                Row {
                    key: None,
                    view: view(1, 5, None),
                    lease: None,
                },
                Row {
                    key: Some(b"gala \"A\"\\".to_vec()),
                    view: view(10, 0, Some(20)),
                    lease: Some(7),
                },
            ],
        )])
    }

    fn whole(source: &impl Source, format: StatusFormat, budget: usize) -> String {
        let mut page = Page::new(format);
        let mut out = String::new();
        for _ in 0..10_000 {
            let slice = page.next_slice(source, budget);
            out.push_str(&slice);
            if page.is_done() {
                return out;
            }
        }
        panic!("the page never ended");
    }

    #[test]
    fn json_lists_counters_with_limits() {
        for budget in [1, 2, 100] {
            let body: serde_json::Value =
                serde_json::from_str(&whole(&sample(), StatusFormat::Json, budget)).unwrap();
            let zone = &body["zones"]["z"];
            assert_eq!(zone["capacity"], 7000);
            assert_eq!(zone["keys"], 1);
            assert_eq!(zone["expired"], 2);
            assert_eq!(zone["counters"][0]["key"], serde_json::Value::Null);
            assert_eq!(zone["counters"][0]["last"], 5);
            assert_eq!(zone["counters"][1]["key"], "gala \"A\"\\\\");
            assert_eq!(zone["counters"][1]["last"], serde_json::Value::Null);
            assert_eq!(zone["counters"][1]["max"], 20);
            assert_eq!(zone["counters"][1]["lease"], 7);
            assert_eq!(zone["redis"]["authority"], "redis://10.0.0.5:6379/0");
            assert_eq!(zone["redis"]["tickets_per_batch"], 10);
        }
    }

    #[test]
    fn json_of_many_zones_and_none() {
        let empty = Fake(vec![]);
        assert_eq!(whole(&empty, StatusFormat::Json, 10), "{\"zones\":{}}\n");
        let mut two = sample();
        two.0.push((
            ZoneInfo {
                name: "y".into(),
                ..ZoneInfo::default()
            },
            vec![],
        ));
        let body: serde_json::Value =
            serde_json::from_str(&whole(&two, StatusFormat::Json, 1)).unwrap();
        assert_eq!(body["zones"]["y"]["counters"], serde_json::json!([]));
    }

    #[test]
    fn prometheus_text() {
        for budget in [1, 100] {
            let text = whole(&sample(), StatusFormat::Prometheus, budget);
            assert!(text.contains("# TYPE ticket_issued_total counter\n"));
            assert!(text.contains("ticket_issued_total{zone=\"z\",key=\"\"} 5\n"));
            assert!(
                text.contains("ticket_issued_total{zone=\"z\",key=\"gala \\\"A\\\"\\\\\\\\\"} 0\n")
            );
            assert!(text.contains("ticket_last{zone=\"z\",key=\"\"} 5\n"));
            assert!(text.contains("ticket_max{zone=\"z\",key=\"gala \\\"A\\\"\\\\\\\\\"} 20\n"));
            assert!(text.contains("ticket_zone_capacity_keys{zone=\"z\"} 7000\n"));
            assert!(text.contains("ticket_zone_expired_keys_total{zone=\"z\"} 2\n"));
            assert!(text.contains("ticket_redis_connected_workers{zone=\"z\"} 2\n"));
            assert!(text.contains("ticket_lease_left{zone=\"z\",key=\"gala"));
            assert_eq!(text.matches("# TYPE ticket_last").count(), 1);
            assert!(text.ends_with('\n'));
        }
    }

    #[test]
    fn keys_are_shown_one_to_one() {
        assert_eq!(display_key(b"gala"), "gala");
        assert_eq!(display_key("\u{e9}t\u{e9}".as_bytes()), "\u{e9}t\u{e9}");
        assert_eq!(display_key(b"a\\b"), "a\\\\b");
        assert_eq!(display_key(b"\xff"), "\\xff");
        assert_eq!(display_key(b"\xfe"), "\\xfe");
        // a literal "\xff" and the byte 0xff differ
        assert_ne!(display_key(b"\\xff"), display_key(b"\xff"));
        // control characters as bytes: no CR, LF, NUL or DEL on a page
        assert_eq!(
            display_key(b"a\r\nb\x00\t\x7f"),
            "a\\x0d\\x0ab\\x00\\x09\\x7f"
        );
        let keys: [&[u8]; 9] = [
            b"\xff",
            b"\xfe",
            b"\\xff",
            b"\\\\xff",
            b"x\xc3",
            b"x\xc3\xa9",
            b"\r",
            b"\\x0d",
            b"\\\r",
        ];
        let shown: std::collections::HashSet<String> =
            keys.iter().map(|k| display_key(k)).collect();
        assert_eq!(shown.len(), keys.len());
    }
}
