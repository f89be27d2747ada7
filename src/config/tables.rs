//! The sections whose keys are data rather than settings: a PSA's status
//! and priority tables and the admin's own webhook body keys. `psa` reads
//! tickets with them; here is how `codex.conf` extends them.

use std::collections::BTreeMap;

use super::value::split_list;
use crate::error::InvalidValue;

/// A section whose every line is an entry: `key = value` adds or replaces one.
pub trait Table {
    /// Adds the entry of one line, or says why it cannot be one.
    fn add(&mut self, key: &str, value: &str) -> Result<(), InvalidValue>;

    /// The entries as `key = value` lines, as `check-config` prints them.
    fn lines(&self) -> Vec<(String, String)>;
}

/// Ids to names (and display names) for Freshservice's statuses or
/// priorities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeTable {
    entries: BTreeMap<i64, CodeEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CodeEntry {
    name: String,
    display: Option<String>,
}

impl CodeTable {
    pub fn insert(&mut self, id: i64, name: &str, display: Option<&str>) {
        let (name, display) = (name.to_string(), display.map(str::to_string));
        self.entries.insert(id, CodeEntry { name, display });
    }

    pub fn name(&self, id: i64) -> Option<&str> {
        self.entries.get(&id).map(|e| e.name.as_str())
    }

    /// Finds the id for a name as a PSA may render it: the normalized name
    /// (`waiting_customer`), the display name (`Waiting on Customer`), in any
    /// case and spacing.
    pub fn lookup_name(&self, text: &str) -> Option<i64> {
        let wanted = slug(text);
        self.entries
            .iter()
            .find(|(_, e)| {
                slug(&e.name) == wanted || e.display.as_deref().is_some_and(|d| slug(d) == wanted)
            })
            .map(|(id, _)| *id)
    }

    /// The display name of a normalized name (`open` -> `Open`), when the
    /// table gives one.
    pub fn display(&self, name: &str) -> Option<&str> {
        self.entries
            .values()
            .find(|e| e.name == name)
            .and_then(|e| e.display.as_deref())
    }

    pub fn ids(&self) -> impl Iterator<Item = (i64, &str)> {
        self.entries.iter().map(|(id, e)| (*id, e.name.as_str()))
    }

    fn with(entries: &[(i64, &str, &str)]) -> CodeTable {
        let mut table = CodeTable::default();
        for (id, name, display) in entries {
            table.insert(*id, name, Some(display));
        }
        table
    }
}

impl Table for CodeTable {
    /// `<id> = <name>` or `<id> = <name>, <Display Name>`.
    fn add(&mut self, key: &str, value: &str) -> Result<(), InvalidValue> {
        let Ok(id) = key.trim().parse::<i64>() else {
            return Err(InvalidValue(
                "keys here are numeric ids, such as 11 = awaiting_parts, Awaiting Parts".into(),
            ));
        };
        let (name, display) = match value.split_once(',') {
            Some((name, display)) => (name, Some(display.trim()).filter(|d| !d.is_empty())),
            None => (value, None),
        };
        self.insert(id, normalized_name(name)?, display);
        Ok(())
    }

    fn lines(&self) -> Vec<(String, String)> {
        let line = |e: &CodeEntry| match &e.display {
            Some(display) => format!("{}, {display}", e.name),
            None => e.name.clone(),
        };
        let entries = self.entries.iter();
        entries.map(|(id, e)| (id.to_string(), line(e))).collect()
    }
}

/// Freshservice's statuses as the predecessor deployed them;
/// `[freshservice.statuses]` extends or overrides the table.
pub fn default_statuses() -> CodeTable {
    CodeTable::with(&[
        (2, "open", "Open"),
        (3, "pending", "Pending"),
        (4, "resolved", "Resolved"),
        (5, "closed", "Closed"),
        (6, "spam", "Spam"),
        (7, "deleted", "Deleted"),
        (8, "scheduled", "Scheduled"),
        (9, "waiting_customer", "Waiting on Customer"),
        (10, "waiting_third_party", "Waiting on Third Party"),
        (13, "under_investigation", "Under Investigation"),
        (15, "job_complete_bill", "Job Complete - Bill"),
        (16, "billing_complete", "Billing Complete - Close"),
        (19, "update_needed", "Update Needed"),
        (23, "on_hold", "On Hold"),
        (26, "customer_replied", "Customer Replied"),
        (27, "pending_hubspot", "Pending Hubspot"),
    ])
}

/// Freshservice's priorities, 1 (Low) to 4 (Urgent);
/// `[freshservice.priorities]` extends or overrides the table.
pub fn default_priorities() -> CodeTable {
    let mut table = CodeTable::default();
    for (id, name) in (1..).zip(["low", "medium", "high", "urgent"]) {
        table.insert(id, name, Some(&(name[..1].to_uppercase() + &name[1..])));
    }
    table
}

/// An account's names (as SuperOps shows them) to Codex's normalized names.
/// Names are matched in any case and spacing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameMap {
    entries: BTreeMap<String, String>,
}

impl NameMap {
    pub fn from_pairs(pairs: &[(&str, &str)]) -> NameMap {
        let mut map = NameMap::default();
        for (name, normalized) in pairs {
            map.insert(name, normalized);
        }
        map
    }

    pub fn insert(&mut self, name: &str, normalized: &str) {
        self.entries.insert(slug(name), normalized.to_string());
    }

    /// The normalized name for an account's name, if it is mapped.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.get(&slug(name)).map(String::as_str)
    }

    /// The normalized names the map produces.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.entries.values().map(String::as_str)
    }
}

impl Table for NameMap {
    /// `<SuperOps name> = <codex_name>`.
    fn add(&mut self, key: &str, value: &str) -> Result<(), InvalidValue> {
        self.insert(key, normalized_name(value)?);
        Ok(())
    }

    /// Names in the lower-case, space-separated form they are matched in.
    fn lines(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|(name, normalized)| (name.replace('_', " "), normalized.clone()))
            .collect()
    }
}

/// SuperOps' out-of-the-box status names and what Codex stores for them.
pub fn superops_statuses() -> NameMap {
    NameMap::from_pairs(&[
        ("Open", "open"),
        ("In Progress", "in_progress"),
        ("On Hold", "on_hold"),
        ("Waiting on Customer", "waiting_customer"),
        ("Waiting on Third Party", "waiting_third_party"),
        ("Customer Replied", "customer_replied"),
        ("Resolved", "resolved"),
        ("Closed", "closed"),
    ])
}

/// SuperOps' out-of-the-box priority names and what Codex stores for them.
pub fn superops_priorities() -> NameMap {
    NameMap::from_pairs(&[
        ("Low", "low"),
        ("Medium", "medium"),
        ("High", "high"),
        ("Urgent", "urgent"),
        ("Critical", "urgent"),
    ])
}

/// The Codex fields a body key can be mapped to, each with the keys read
/// for it when no mapping says otherwise (first present wins).
pub const FIELD_KEYS: &[(&str, &[&str])] = &[
    (
        "ticket_id",
        &[
            "ticket_id",
            "id",
            "ticket_number",
            "display_id",
            "id_numeric",
        ],
    ),
    ("event", &["event", "event_type", "triggered_event"]),
    ("updated_at", &["updated_at"]),
    ("subject", &["subject"]),
    ("description", &["description_text", "description"]),
    ("status", &["status_id", "status"]),
    ("priority", &["priority_id", "priority"]),
    ("ticket_type", &["ticket_type", "type"]),
    ("requester_email", &["requester_email", "requester.email"]),
    ("requester_name", &["requester_name", "requester.name"]),
    ("requester_id", &["requester_id", "requester.id"]),
    (
        "responder_id",
        &["responder_id", "agent_id", "agent.id", "responder.id"],
    ),
    ("group_id", &["group_id", "group.id"]),
    ("department_id", &["department_id", "department.id"]),
    ("created_at", &["created_at"]),
    ("due_by", &["due_by"]),
    ("fr_due_by", &["fr_due_by"]),
    ("is_escalated", &["is_escalated"]),
];

/// `[freshservice.webhook_fields]`: for a Codex field, the admin's own body
/// keys, read before Codex's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookFields {
    pub(crate) keys: BTreeMap<String, Vec<String>>,
}

impl WebhookFields {
    /// Maps `field` (a name from [`FIELD_KEYS`]) to `keys`.
    pub fn insert(&mut self, field: &str, keys: Vec<String>) -> Result<(), InvalidValue> {
        if !FIELD_KEYS.iter().any(|(name, _)| *name == field) {
            let names: Vec<&str> = FIELD_KEYS.iter().map(|(name, _)| *name).collect();
            return Err(InvalidValue(format!(
                "'{field}' is not a Codex field; use one of {}",
                names.join(", ")
            )));
        }
        if keys.is_empty() {
            return Err(InvalidValue(
                "name at least one body key, such as ticket_id = TicketNumber".into(),
            ));
        }
        self.keys.insert(field.to_string(), keys);
        Ok(())
    }
}

impl Table for WebhookFields {
    /// `<codex field> = <body key>[, <body key>…]`.
    fn add(&mut self, key: &str, value: &str) -> Result<(), InvalidValue> {
        self.insert(key.trim(), split_list(value).map(str::to_string).collect())
    }

    fn lines(&self) -> Vec<(String, String)> {
        self.keys
            .iter()
            .map(|(field, keys)| (field.clone(), keys.join(", ")))
            .collect()
    }
}

/// A name as PSAs and people vary it, in the one form names are compared
/// in: `Waiting on Customer`, `waiting-on-customer` -> `waiting_on_customer`.
pub fn slug(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}

/// A name Codex stores: lower-case letters, digits and `_`.
fn normalized_name(text: &str) -> Result<&str, InvalidValue> {
    let name = text.trim();
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    if !name.is_empty() && name.bytes().all(allowed) {
        return Ok(name);
    }
    Err(InvalidValue(format!(
        "'{name}' must be a lower-case name of letters, digits and '_', such as awaiting_parts"
    )))
}
