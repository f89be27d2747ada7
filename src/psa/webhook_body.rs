//! Finding a ticket's fields in a webhook body an admin wrote by hand: flat
//! (the guide's template) or nested under one key (`{"ticket": {…}}`,
//! `{"freshdesk_webhook": {…}}`), under Codex's key names, Freshdesk's
//! `ticket_`-prefixed ones, dotted paths (`requester.email`) or the admin's
//! own (`[freshservice.webhook_fields]`); and finding the ticket id in a
//! body that is beyond repair, and reading an id in any of its shapes.

use serde_json::{Map, Value as Json};

pub use crate::config::{FIELD_KEYS, WebhookFields};
use crate::error::PsaError;

/// Keys a nested body is commonly wrapped in.
const WRAPPERS: &[&str] = &[
    "ticket",
    "freshdesk_webhook",
    "freshservice_webhook",
    "webhook",
    "data",
    "payload",
];

/// A parsed body, seen from the object that holds the ticket.
pub struct Body<'a> {
    /// The object holding the ticket first, then the objects around it
    /// (whose keys, such as a top-level `event`, also count).
    layers: Vec<&'a Map<String, Json>>,
    custom: Option<&'a WebhookFields>,
    /// Also read Freshdesk's `ticket_subject` for `subject` and so on.
    prefixed: bool,
}

impl<'a> Body<'a> {
    /// An API ticket: its own keys only.
    pub fn api(object: &'a Map<String, Json>) -> Body<'a> {
        Body {
            layers: vec![object],
            custom: None,
            prefixed: false,
        }
    }

    /// A webhook body: the ticket found flat or nested, with the admin's keys.
    pub fn webhook(top: &'a Map<String, Json>, custom: &'a WebhookFields) -> Body<'a> {
        let mut body = Body {
            layers: vec![top],
            custom: Some(custom),
            prefixed: true,
        };
        if body.find("ticket_id").is_none() {
            if let Some(mut path) = body.nested(top, 3) {
                path.reverse();
                path.push(top);
                body.layers = path;
            }
        }
        body
    }

    /// The key and value a field is carried in, if any: the admin's keys,
    /// then Codex's, then Freshdesk's `ticket_` ones. A name that is not in
    /// [`FIELD_KEYS`] is a key itself (an API ticket's).
    pub fn find(&self, field: &str) -> Option<(String, &'a Json)> {
        let itself = [field];
        let builtin = FIELD_KEYS
            .iter()
            .find(|(name, _)| *name == field)
            .map_or(&itself[..], |(_, keys)| *keys);
        let custom = self
            .custom
            .and_then(|c| c.keys.get(field))
            .map_or(&[][..], Vec::as_slice);
        let prefixed: Vec<String> = if self.prefixed {
            builtin
                .iter()
                .filter(|k| !k.starts_with("ticket_") && !k.contains('.'))
                .map(|k| format!("ticket_{k}"))
                .collect()
        } else {
            Vec::new()
        };
        let keys = custom
            .iter()
            .map(String::as_str)
            .chain(builtin.iter().copied())
            .chain(prefixed.iter().map(String::as_str));
        for key in keys {
            for layer in &self.layers {
                if let Some(value) = lookup(layer, key) {
                    return Some((key.to_string(), value));
                }
            }
        }
        None
    }

    /// The path (outermost first) to a nested object holding a ticket id:
    /// one under a wrapper key, or the only object in its parent.
    fn nested(
        &self,
        parent: &'a Map<String, Json>,
        depth: usize,
    ) -> Option<Vec<&'a Map<String, Json>>> {
        if depth == 0 {
            return None;
        }
        let objects: Vec<(&String, &'a Map<String, Json>)> = parent
            .iter()
            .filter_map(|(k, v)| v.as_object().map(|o| (k, o)))
            .collect();
        let event_keys = FIELD_KEYS[1].1;
        for (key, object) in objects {
            // Any key wraps the ticket when it is all the body holds (besides
            // an event); otherwise only a wrapper name does, so that a flat
            // body's `"requester": {"id": …}` is not taken for the ticket.
            let alone = parent
                .keys()
                .all(|k| k == key || event_keys.contains(&k.to_ascii_lowercase().as_str()));
            if !(alone || WRAPPERS.contains(&key.to_ascii_lowercase().as_str())) {
                continue;
            }
            let probe = Body {
                layers: vec![object],
                custom: self.custom,
                prefixed: self.prefixed,
            };
            if probe.find("ticket_id").is_some() {
                return Some(vec![object]);
            }
            if let Some(mut path) = self.nested(object, depth - 1) {
                path.insert(0, object);
                return Some(path);
            }
        }
        None
    }
}

/// The ids of nested objects that are not a ticket wrapper (`"requester":
/// {"id": 9}`): what a scan for a ticket id must not mistake for one.
pub fn foreign_ids(body: &Json) -> Vec<i64> {
    fn collect(object: &Map<String, Json>, depth: usize, out: &mut Vec<i64>) {
        for (key, value) in object {
            let Some(inner) = value.as_object() else {
                continue;
            };
            if WRAPPERS.contains(&key.to_ascii_lowercase().as_str()) {
                continue;
            }
            if let Some(Ok(Some(id))) = inner.get("id").map(parse_id) {
                out.push(id);
            }
            if depth > 0 {
                collect(inner, depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(object) = body.as_object() {
        collect(object, 3, &mut out);
    }
    out
}

/// A key in an object: exact, else in any case; `a.b` descends.
fn lookup<'a>(object: &'a Map<String, Json>, key: &str) -> Option<&'a Json> {
    let direct = object.get(key).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    });
    if direct.is_some() {
        return direct;
    }
    let (head, rest) = key.split_once('.')?;
    lookup(object, head)?
        .as_object()
        .and_then(|inner| lookup(inner, rest))
}

/// Undoes HTML escaping (`&quot;`, `&amp;`, `&#39;`, `&#x27;`, `&lt;`, `&gt;`,
/// `&apos;`, `&nbsp;`): Freshservice escapes placeholders such as
/// `{{ticket.subject}}`. Anything else that looks like an entity is kept.
pub fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let entity_end = rest[1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '#'))
            .map(|i| i + 1);
        let decoded = entity_end
            .filter(|end| rest[*end..].starts_with(';'))
            .and_then(|end| decode_entity(&rest[1..end]).map(|c| (c, end + 1)));
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(name: &str) -> Option<char> {
    let code = match name {
        "quot" => return Some('"'),
        "amp" => return Some('&'),
        "apos" => return Some('\''),
        "lt" => return Some('<'),
        "gt" => return Some('>'),
        "nbsp" => return Some('\u{a0}'),
        _ => {
            let number = name.strip_prefix('#')?;
            match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            }
        }
    };
    char::from_u32(code).filter(|c| *c != '\0')
}

/// The ticket id of a body that could not be read as a whole: the value
/// after the first id key that has one (`"ticket_id": 123`, `"id":
/// "INC-123"`, `"ticket_id" 123`), so that
/// the journal row and the 400 still name the ticket.
///
/// `foreign` are ids the body is known to carry for something else (a
/// requester's `"id"` in a body that parsed but has no ticket id); they are
/// skipped.
pub fn scan_ticket_id(body: &[u8], custom: &WebhookFields, foreign: &[i64]) -> Option<i64> {
    let text = String::from_utf8_lossy(body);
    let builtin = FIELD_KEYS[0].1.iter().map(|k| k.to_string());
    let custom = custom.keys.get("ticket_id").cloned().unwrap_or_default();
    for key in custom.into_iter().chain(builtin) {
        let needle = format!("\"{key}\"");
        let mut from = 0;
        while let Some(at) = text[from..].find(&needle) {
            let after = text[from + at + needle.len()..].trim_start();
            from += at + needle.len();
            // The colon itself may be what is missing.
            let value = after.strip_prefix(':').unwrap_or(after).trim_start();
            let value = value.strip_prefix('"').unwrap_or(value);
            let end = value
                .find([',', '}', '"', '\n', '\r', ']'])
                .unwrap_or(value.len());
            match parse_id(&Json::String(value[..end].into())) {
                Ok(Some(id)) if !foreign.contains(&id) => return Some(id),
                // The body names its id unreadably (`-1`, `abc`): guessing
                // another would attribute it to another ticket.
                Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
    None
}

/// Reads an id given as a number, a numeric string or a prefixed string
/// (`INC-123`, `#SR-45`). Null and empty read as `None`.
pub fn parse_id(value: &Json) -> Result<Option<i64>, PsaError> {
    match value {
        Json::Null => Ok(None),
        Json::Number(n) => {
            if let Some(id) = n.as_i64() {
                return positive(id, value);
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f > 0.0 && f < 9.0e15 => Ok(Some(f as i64)),
                _ => Err(PsaError::NotAnId {
                    shown: value.to_string(),
                }),
            }
        }
        Json::String(text) => {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            // A number as text: "-1" is minus one, never ticket 1.
            if let Ok(id) = text.parse::<i64>() {
                return positive(id, value);
            }
            let digits = text.trim_start_matches(|c: char| !c.is_ascii_digit());
            let prefix = &text[..text.len() - digits.len()];
            // A prefix names a kind of ticket (`INC-`, `#SR-`, `#`); signs
            // and separators alone are not one.
            let prefix_ok = (prefix == "#" || prefix.chars().any(|c| c.is_ascii_alphabetic()))
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphabetic() || matches!(c, '#' | '-' | '_' | ' '));
            match digits.parse::<i64>() {
                Ok(id) if prefix_ok => positive(id, value),
                _ => Err(PsaError::NotAnId {
                    shown: format!("'{text}'"),
                }),
            }
        }
        other => Err(PsaError::NotAnId {
            shown: other.to_string(),
        }),
    }
}

fn positive(id: i64, value: &Json) -> Result<Option<i64>, PsaError> {
    if id > 0 {
        Ok(Some(id))
    } else {
        Err(PsaError::NotAPositiveId {
            shown: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn find(body: Json, field: &str) -> Option<Json> {
        let fields = WebhookFields::default();
        let object = body.as_object().unwrap();
        Body::webhook(object, &fields)
            .find(field)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn flat_nested_and_prefixed_keys() {
        assert_eq!(find(json!({"ticket_id": 5}), "ticket_id"), Some(json!(5)));
        assert_eq!(
            find(json!({"event": "x", "ticket": {"id": 5}}), "ticket_id"),
            Some(json!(5))
        );
        assert_eq!(
            find(json!({"event": "x", "ticket": {"id": 5}}), "event"),
            Some(json!("x"))
        );
        assert_eq!(
            find(
                json!({"freshdesk_webhook": {"ticket_id": 7, "ticket_subject": "S"}}),
                "subject"
            ),
            Some(json!("S"))
        );
        assert_eq!(
            find(
                json!({"ticket_id": 1, "requester": {"email": "a@b"}}),
                "requester_email"
            ),
            Some(json!("a@b"))
        );
        // A requester's id is not the ticket's.
        assert_eq!(
            find(
                json!({"subject": "x", "requester": {"id": 9}, "agent": {"id": 3}}),
                "ticket_id"
            ),
            None
        );
        assert_eq!(find(json!({"Ticket_ID": 5}), "ticket_id"), Some(json!(5)));
    }

    #[test]
    fn admin_keys_come_first() {
        let mut fields = WebhookFields::default();
        fields
            .insert("ticket_id", vec!["TicketNumber".to_string()])
            .unwrap();
        fields.insert("status", vec!["state".to_string()]).unwrap();
        let body = json!({"TicketNumber": "SR-9", "id": 1, "state": "Open"});
        let b = Body::webhook(body.as_object().unwrap(), &fields);
        assert_eq!(b.find("ticket_id").unwrap().1, &json!("SR-9"));
        assert_eq!(b.find("status").unwrap().0, "state");
        assert!(fields.insert("colour", vec!["c".to_string()]).is_err());
        assert!(fields.insert("subject", vec![]).is_err());
    }

    #[test]
    fn html_entities() {
        assert_eq!(
            html_unescape("Tom &amp; Jerry&#39;s &quot;PC&quot; &lt;b&gt; &#x27;x&#x27;"),
            "Tom & Jerry's \"PC\" <b> 'x'"
        );
        assert_eq!(
            html_unescape("AT&T & co &bogus; &#0;"),
            "AT&T & co &bogus; &#0;"
        );
    }

    #[test]
    fn scanning_finds_the_id_in_a_wreck() {
        let none = WebhookFields::default();
        let scan = |body: &[u8]| scan_ticket_id(body, &none, &[]);
        assert_eq!(
            scan(b"{\"event\": \"x\", \"ticket_id\": INC-42, {{{"),
            Some(42)
        );
        assert_eq!(
            scan(b"{\"ticket_id\" : \"77\" \"subject\": \"a\"b"),
            Some(77)
        );
        assert_eq!(scan(b"{\"subject\": \"ticket_id\""), None);
        assert_eq!(scan(b"{\n \"ticket_id\" 5\n}"), Some(5));
        assert_eq!(scan(b"garbage"), None);
        // An unreadable id is not read as another ticket's.
        assert_eq!(scan(b"{\"ticket_id\": -1, \"id\": 5, {{"), None);
        assert_eq!(scan(b"{\"ticket_id\": \"-1\" x"), None);
        assert_eq!(scan(b"{\"ticket_id\": abc, \"display_id\": 6 {"), None);
        // What the lenient reader could not separate, the scan still reads.
        assert_eq!(
            scan(b"{\"ticket_id\": \"10025\", 0\"subject\": \"S\"}"),
            Some(10025)
        );
        // A requester's id in a body without a ticket id is not the ticket's.
        let body = json!({"subject": "x", "requester": {"id": 9, "agent": {"id": 3}}, "ticket": {"id": 4}});
        assert_eq!(foreign_ids(&body), [9, 3]);
        let raw = body.to_string();
        assert_eq!(scan_ticket_id(raw.as_bytes(), &none, &[9, 3]), Some(4));
    }

    #[test]
    fn ids_in_every_shape() {
        assert_eq!(parse_id(&json!(5)), Ok(Some(5)));
        assert_eq!(parse_id(&json!("5")), Ok(Some(5)));
        assert_eq!(parse_id(&json!("INC-123")), Ok(Some(123)));
        assert_eq!(parse_id(&json!("#SR-45")), Ok(Some(45)));
        assert_eq!(parse_id(&json!(12.0)), Ok(Some(12)));
        assert_eq!(parse_id(&json!("")), Ok(None));
        assert_eq!(parse_id(&json!(null)), Ok(None));
        assert_eq!(
            parse_id(&json!("12abc")).unwrap_err().to_string(),
            "'12abc' is not an id"
        );
        assert_eq!(
            parse_id(&json!(-3)).unwrap_err().to_string(),
            "-3 is not a positive id"
        );
        // Negative, zero or signed text is never read as another ticket's id.
        assert_eq!(
            parse_id(&json!("-1")).unwrap_err().to_string(),
            "\"-1\" is not a positive id"
        );
        assert!(parse_id(&json!("0")).is_err());
        assert!(parse_id(&json!("#0")).is_err());
        assert!(parse_id(&json!("--1")).is_err());
        assert!(parse_id(&json!("#-1")).is_err());
        assert!(parse_id(&json!("- 1")).is_err());
        assert!(parse_id(&json!(-1.0)).is_err());
        assert!(parse_id(&json!(1.5)).is_err());
        assert!(parse_id(&json!("99999999999999999999")).is_err());
        assert_eq!(parse_id(&json!("#7")), Ok(Some(7)));
        assert_eq!(
            parse_id(&json!([1])).unwrap_err().to_string(),
            "[1] is not an id"
        );
    }
}
