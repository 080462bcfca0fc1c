//! The status page: zones and counters rendered as JSON or in the Prometheus
//! text exposition format. Reading counters takes no ticket.

use core::fmt::Write;

use serde_json::{json, Value};

use crate::counter::CounterView;

/// One zone as the status page shows it.
pub struct ZoneReport {
    pub name: String,
    /// Bytes of shared memory.
    pub size: usize,
    /// Keys the zone can hold, and keys it holds.
    pub capacity: u64,
    pub keys: u64,
    /// `None` is the zone's default counter (no `key=`).
    pub counters: Vec<(Option<Vec<u8>>, CounterView)>,
}

fn counter_json(key: &Option<Vec<u8>>, view: &CounterView) -> Value {
    json!({
        "key": key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned()),
        "start": view.start,
        "issued": view.issued,
        "last": view.last(),
        "max": view.max,
    })
}

/// `{"zones":{"NAME":{"size":…,"capacity":…,"keys":…,"counters":[…]}}}`
pub fn render_json(zones: &[ZoneReport]) -> String {
    let mut map = serde_json::Map::new();
    for zone in zones {
        map.insert(
            zone.name.clone(),
            json!({
                "size": zone.size,
                "capacity": zone.capacity,
                "keys": zone.keys,
                "counters": zone
                    .counters
                    .iter()
                    .map(|(key, view)| counter_json(key, view))
                    .collect::<Vec<_>>(),
            }),
        );
    }
    let mut body = json!({ "zones": map }).to_string();
    body.push('\n');
    body
}

/// Escapes a label value as the exposition format requires.
fn label(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Prometheus text format 0.0.4.
pub fn render_prometheus(zones: &[ZoneReport]) -> String {
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, samples: &mut dyn Iterator<Item = String>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for sample in samples {
                out.push_str(&sample);
            }
        };
    let counters = || {
        zones.iter().flat_map(|zone| {
            zone.counters.iter().map(move |(key, view)| {
                let labels = format!(
                    "zone=\"{}\",key=\"{}\"",
                    label(zone.name.as_bytes()),
                    label(key.as_deref().unwrap_or_default())
                );
                (labels, *view)
            })
        })
    };
    family(
        "ticket_issued_total",
        "counter",
        "Tickets issued by the counter.",
        &mut counters()
            .map(|(labels, view)| format!("ticket_issued_total{{{labels}}} {}\n", view.issued)),
    );
    family(
        "ticket_last",
        "gauge",
        "The last ticket issued by the counter.",
        &mut counters().filter_map(|(labels, view)| {
            view.last()
                .map(|last| format!("ticket_last{{{labels}}} {last}\n"))
        }),
    );
    family(
        "ticket_max",
        "gauge",
        "The supply limit (max=) of the counter.",
        &mut counters().filter_map(|(labels, view)| {
            view.max
                .map(|max| format!("ticket_max{{{labels}}} {max}\n"))
        }),
    );
    let zone_labels = |zone: &ZoneReport| format!("zone=\"{}\"", label(zone.name.as_bytes()));
    family(
        "ticket_zone_capacity_keys",
        "gauge",
        "Keys the zone can hold.",
        &mut zones.iter().map(|z| {
            format!(
                "ticket_zone_capacity_keys{{{}}} {}\n",
                zone_labels(z),
                z.capacity
            )
        }),
    );
    family(
        "ticket_zone_keys",
        "gauge",
        "Keys the zone holds.",
        &mut zones
            .iter()
            .map(|z| format!("ticket_zone_keys{{{}}} {}\n", zone_labels(z), z.keys)),
    );
    family(
        "ticket_zone_size_bytes",
        "gauge",
        "Shared memory size of the zone.",
        &mut zones
            .iter()
            .map(|z| format!("ticket_zone_size_bytes{{{}}} {}\n", zone_labels(z), z.size)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<ZoneReport> {
        vec![ZoneReport {
            name: "z".into(),
            size: 1 << 20,
            capacity: 7000,
            keys: 1,
            counters: vec![
                (
                    None,
                    CounterView {
                        start: Some(1),
                        issued: 5,
                        reserved: 0,
                        max: None,
                    },
                ),
                (
                    Some(b"gala \"A\"\\".to_vec()),
                    CounterView {
                        start: Some(10),
                        issued: 0,
                        reserved: 0,
                        max: Some(20),
                    },
                ),
            ],
        }]
    }

    #[test]
    fn json_lists_counters_with_limits() {
        let body: Value = serde_json::from_str(&render_json(&sample())).unwrap();
        let zone = &body["zones"]["z"];
        assert_eq!(zone["capacity"], 7000);
        assert_eq!(zone["keys"], 1);
        assert_eq!(zone["counters"][0]["key"], Value::Null);
        assert_eq!(zone["counters"][0]["last"], 5);
        assert_eq!(zone["counters"][1]["key"], "gala \"A\"\\");
        assert_eq!(zone["counters"][1]["last"], Value::Null);
        assert_eq!(zone["counters"][1]["max"], 20);
    }

    #[test]
    fn prometheus_text() {
        let text = render_prometheus(&sample());
        assert!(text.contains("# TYPE ticket_issued_total counter\n"));
        assert!(text.contains("ticket_issued_total{zone=\"z\",key=\"\"} 5\n"));
        assert!(text.contains("ticket_issued_total{zone=\"z\",key=\"gala \\\"A\\\"\\\\\"} 0\n"));
        assert!(text.contains("ticket_last{zone=\"z\",key=\"\"} 5\n"));
        assert!(text.contains("ticket_max{zone=\"z\",key=\"gala \\\"A\\\"\\\\\"} 20\n"));
        assert!(text.contains("ticket_zone_capacity_keys{zone=\"z\"} 7000\n"));
        assert!(text.ends_with('\n'));
    }
}
