//! Property: whatever order a ticket's events arrive in (retries, late
//! deliveries, duplicates), the stored ticket ends as the newest state:
//! each field holds the value of the newest event that carried it.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use common::{Backend, Codex, TestDb};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Map, Value, json};

for_each_backend!(any_arrival_order_converges_to_the_newest_state);

/// What one event says about one field.
#[derive(Debug, Clone)]
enum Field {
    Absent,
    Null,
    Set(Value),
}

#[derive(Debug, Clone)]
struct Version {
    kind: &'static str,
    fields: Vec<(&'static str, Field)>,
}

const STATUSES: [(i64, &str); 6] = [
    (2, "open"),
    (3, "pending"),
    (4, "resolved"),
    (5, "closed"),
    (7, "deleted"),
    (9, "waiting_customer"),
];
const DONE: [&str; 3] = ["resolved", "closed", "deleted"];

fn field(values: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Field> {
    prop_oneof![
        2 => Just(Field::Absent),
        1 => Just(Field::Null),
        4 => values.prop_map(Field::Set),
    ]
}

fn version() -> impl Strategy<Value = Version> {
    let subject = field("[a-z]{1,8}".prop_map(Value::from));
    let status = prop_oneof![
        1 => Just(Field::Absent),
        4 => (0..STATUSES.len()).prop_map(|i| Field::Set(json!(STATUSES[i].0))),
    ];
    let responder = field((1i64..5).prop_map(Value::from));
    let group = field((10i64..13).prop_map(Value::from));
    let priority = field((1i64..5).prop_map(Value::from));
    (
        prop::bool::weighted(0.15),
        subject,
        status,
        responder,
        group,
        priority,
    )
        .prop_map(|(delete, subject, status, responder, group, priority)| {
            if delete {
                // Deletes carry only the status, as the seed's template does.
                Version {
                    kind: "ticket.deleted",
                    fields: vec![("status_id", Field::Set(json!(7)))],
                }
            } else {
                Version {
                    kind: "ticket.updated",
                    fields: vec![
                        ("subject", subject),
                        ("status_id", status),
                        ("responder_id", responder),
                        ("group_id", group),
                        ("priority_id", priority),
                    ],
                }
            }
        })
}

/// Versions in time order, and the order (a permutation with repeats, as
/// retries produce) in which they are delivered.
fn history() -> impl Strategy<Value = (Vec<Version>, Vec<usize>)> {
    prop::collection::vec(version(), 1..7).prop_flat_map(|versions| {
        let n = versions.len();
        let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        let repeats = prop::collection::vec(0..n, 0..3);
        (Just(versions), order, repeats).prop_map(|(versions, mut order, repeats)| {
            order.extend(repeats);
            (versions, order)
        })
    })
}

fn timestamp(index: usize) -> String {
    format!("2024-06-01T10:{:02}:00Z", index)
}

/// The state the ticket must end in: each field from the newest version
/// that carried it.
fn expected(versions: &[Version]) -> HashMap<&'static str, Option<String>> {
    let mut state: HashMap<&'static str, Option<String>> = HashMap::new();
    for version in versions {
        for (name, value) in &version.fields {
            match value {
                Field::Absent => {}
                Field::Null => {
                    state.insert(name, None);
                }
                Field::Set(v) => {
                    state.insert(name, Some(v.to_string().trim_matches('"').to_string()));
                }
            }
        }
    }
    state
}

fn body(ticket: i64, index: usize, version: &Version) -> Value {
    let mut map = Map::new();
    map.insert("event".into(), json!(version.kind));
    map.insert("ticket_id".into(), json!(ticket));
    map.insert("updated_at".into(), json!(timestamp(index)));
    for (name, value) in &version.fields {
        match value {
            Field::Absent => {}
            Field::Null => {
                map.insert((*name).into(), Value::Null);
            }
            Field::Set(v) => {
                map.insert((*name).into(), v.clone());
            }
        }
    }
    Value::Object(map)
}

fn any_arrival_order_converges_to_the_newest_state(backend: Backend) {
    let db = TestDb::new(&backend);
    let codex = Codex::start(&db, "");
    let next_ticket = AtomicI64::new(1);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&history(), |(versions, order)| {
            let ticket = next_ticket.fetch_add(1, Ordering::SeqCst);
            for &index in &order {
                let response = codex.deliver_json(&body(ticket, index, &versions[index]));
                prop_assert!(
                    matches!(response.status, 200 | 201),
                    "{} {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                );
            }
            if versions.iter().all(|v| v.kind == "ticket.deleted") {
                // Deletes of a ticket never stored leave no row behind.
                prop_assert!(db.ticket(ticket).is_none());
                return Ok(());
            }
            let stored = db.ticket(ticket).expect("ticket stored");
            let want = expected(&versions);
            for (name, value) in &want {
                prop_assert_eq!(
                    &stored[*name],
                    value,
                    "field {} after order {:?}",
                    name,
                    order
                );
            }
            let status_id = want.get("status_id").cloned().flatten();
            let status = STATUSES
                .iter()
                .find(|(id, _)| Some(id.to_string()) == status_id)
                .map(|(_, name)| name.to_string());
            prop_assert_eq!(&stored["status"], &status);
            // closed_at is set exactly when the final status is a done status.
            let done = status.as_deref().is_some_and(|s| DONE.contains(&s));
            prop_assert_eq!(
                stored["closed_at"].is_some(),
                done,
                "closed_at {:?}",
                stored["closed_at"]
            );
            let newest = timestamp(versions.len() - 1);
            prop_assert_eq!(stored["last_updated_at"].as_deref(), Some(newest.as_str()));
            Ok(())
        })
        .unwrap();
}
