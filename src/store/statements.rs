//! The statements both backends run, each written once in SQLite's
//! spelling (`Dialect::render` makes PostgreSQL's), with the decoders of
//! their rows.
//!
//! The first is the upsert: one statement that inserts a new ticket or
//! merges an event into a known one field by field (the newest version of
//! each field wins), and refuses (by its WHERE clause) an event that would
//! change nothing: a duplicate or a stale one. The decision is the
//! database's, so two writers on one database cannot race. Then the
//! tombstones, pruning, sync bookkeeping and `codex_meta`; the journal's
//! statements are in `journal`, the read API's in `tickets`.

use super::connection::{Cells, Connection, Param};
use super::dialect::Dialect;
use super::journal::{self, JournalOutcome};
use super::records::{self, SyncRun, Tombstone, UnknownValue};
use crate::error::StoreError;
use crate::psa::{Field, Kind, Source, TicketEvent, Value};

/// The insert row for `event`, in `insert_columns()` order. `now` is the
/// commit's time, recorded as `webhook_updated_at` or `synced_at`, and as
/// `created_at` of a ticket whose first event does not say when the PSA
/// created it (the predecessor did the same).
pub fn row_params<'a>(event: &'a TicketEvent, now: &'a str) -> Vec<Param<'a>> {
    let mut row = Vec::with_capacity(2 + 2 * Field::COUNT + EXTRA_COLUMNS.len());
    row.push(Param::Int(Some(event.ticket_id)));
    row.push(Param::Text(Some(event.provider.as_str())));
    for field in Field::ALL {
        let value = event.insert_value(field);
        row.push(match field.kind() {
            Kind::Text => Param::Text(match value {
                Some(Value::Text(text)) => Some(text.as_str()),
                _ if field == Field::CreatedAt => Some(now),
                _ => None,
            }),
            Kind::Int => Param::Int(match value {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            }),
            Kind::Bool => Param::Bool(match value {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            }),
        });
    }
    for field in Field::ALL {
        let version = event
            .get(field)
            .is_some()
            .then_some(event.updated_at.as_deref())
            .flatten();
        row.push(Param::Text(version));
    }
    row.push(Param::Text(event.updated_at.as_deref()));
    row.push(Param::Text(event.closed_at.as_deref()));
    let webhook = event.source == Source::Webhook;
    row.push(Param::Text(webhook.then_some(now)));
    row.push(Param::Text((!webhook).then_some(now)));
    row.push(Param::Text(Some(event.source.as_str())));
    row.push(Param::Int(Some(event.present_mask())));
    row
}

/// Cuts text values to the length limits of their columns: `limits` holds
/// (position in `insert_columns()`, characters) for inherited `VARCHAR(n)`
/// columns the migration could not widen (a view uses them). PostgreSQL
/// would refuse the whole event otherwise.
pub fn fit(row: &mut [Param<'_>], limits: &[(usize, usize)], ticket_id: i64) {
    for &(at, limit) in limits {
        if let Some(Param::Text(Some(text))) = row.get_mut(at) {
            if let Some((cut, _)) = text.char_indices().nth(limit) {
                log::warn!(
                    "ticket {ticket_id}: {} has {} characters, more than the column holds; stored cut to {limit}",
                    insert_columns()[at],
                    text.chars().count()
                );
                *text = &text[..cut];
            }
        }
    }
}

/// Columns an event writes after `external_id, external_source`, the
/// fields and their `<field>_as_of` versions: the PSA's `updated_at`, the
/// derived `closed_at`, when and how it arrived, and the mask of fields it
/// carries.
pub const EXTRA_COLUMNS: [&str; 6] = [
    "last_updated_at",
    "closed_at",
    "webhook_updated_at",
    "synced_at",
    "last_source",
    "last_event_fields",
];

/// The version column of `field`.
pub fn as_of(field: Field) -> String {
    format!("{}_as_of", field.column())
}

/// `external_id, external_source, subject, …, subject_as_of, …, last_event_fields`.
pub fn insert_columns() -> Vec<String> {
    let mut columns = vec!["external_id".to_string(), "external_source".to_string()];
    columns.extend(Field::ALL.iter().map(|f| f.column().to_string()));
    columns.extend(Field::ALL.iter().map(|&f| as_of(f)));
    columns.extend(EXTRA_COLUMNS.iter().map(|c| c.to_string()));
    columns
}

/// Columns only a new row gets, as the predecessor wrote them: the id as
/// text, no hours spent, and (with `companies`) the company the ticket's
/// department maps to. `values` are the SQL expressions for the new row's
/// `external_id`, `external_source` and `department_id`.
fn insert_only(companies: bool, values: [&str; 3]) -> (Vec<&'static str>, Vec<String>) {
    let [id, source, department] = values;
    let mut columns = vec!["ticket_number", "total_hours_spent"];
    let mut exprs = vec![format!("CAST({id} AS TEXT)"), "0.0".to_string()];
    if companies {
        columns.push("company_account_number");
        exprs.push(company_lookup(department, source));
    }
    (columns, exprs)
}

/// The predecessor's mapping of a ticket to a company: the `companies` row
/// whose `external_id` is the ticket's department (Freshservice's
/// companies) at the same PSA.
pub fn company_lookup(department: &str, source: &str) -> String {
    format!(
        "(SELECT c.account_number FROM companies c WHERE c.external_id = {department} \
         AND c.external_source = {source} ORDER BY c.account_number LIMIT 1)"
    )
}

/// Columns read back for diffing: `revision`, the fields, `last_updated_at`.
/// Integers are read as BIGINT whatever the column's own type (the
/// predecessor's table has INTEGER ids).
pub fn snapshot_columns(prefix: &str) -> String {
    let mut columns = vec![format!("CAST({prefix}revision AS BIGINT)")];
    columns.extend(Field::ALL.iter().map(|f| match f.kind() {
        Kind::Int => format!("CAST({prefix}{} AS BIGINT)", f.column()),
        Kind::Text | Kind::Bool => format!("{prefix}{}", f.column()),
    }));
    columns.push(format!("{prefix}last_updated_at"));
    columns.join(", ")
}

/// `ON CONFLICT … DO UPDATE SET … WHERE …`, shared by both dialects.
///
/// Each field is a last-writer-wins register: it takes the event's value
/// when the event carries it and is not older than the version the stored
/// value is from. An event without `updated_at` cannot be ordered and
/// applies what it carries. Among equal versions the later arrival wins.
/// The row is written only if some value changes or the version advances;
/// otherwise the statement returns nothing (unchanged or stale).
///
/// A row Codex never wrote (`last_source` NULL: the predecessor's, inherited
/// or written since) has no versions; its fields are as of its
/// `last_updated_at`, so a late delivery cannot overwrite what the
/// predecessor stored. The first event Codex applies to such a row records
/// that version for every field.
///
/// With `companies`, `company_account_number` follows the department.
pub fn on_conflict(companies: bool) -> String {
    let ts = "excluded.last_updated_at";
    let version = |field: Field| {
        format!(
            "COALESCE(ticket_details.{}, CASE WHEN ticket_details.last_source IS NULL THEN ticket_details.last_updated_at END)",
            as_of(field)
        )
    };
    let applies = |field: Field| {
        let version = version(field);
        format!(
            "((excluded.last_event_fields & {bit}) <> 0 AND ({ts} IS NULL OR {version} IS NULL OR {ts} >= {version}))",
            bit = field.bit()
        )
    };
    let advances = format!(
        "({ts} IS NOT NULL AND (ticket_details.last_updated_at IS NULL OR {ts} > ticket_details.last_updated_at))"
    );
    let mut set = Vec::new();
    for &field in &Field::ALL {
        let c = field.column();
        let v = as_of(field);
        set.push(format!(
            "{c} = CASE WHEN {} THEN excluded.{c} ELSE ticket_details.{c} END",
            applies(field)
        ));
        set.push(format!(
            "{v} = CASE WHEN {} THEN COALESCE({ts}, {version}) ELSE {version} END",
            applies(field),
            version = version(field)
        ));
    }
    if companies {
        set.push(format!(
            "company_account_number = CASE WHEN {} THEN excluded.company_account_number \
             ELSE ticket_details.company_account_number END",
            applies(Field::DepartmentId)
        ));
    }
    set.push(format!(
        "last_updated_at = CASE WHEN {advances} THEN {ts} ELSE ticket_details.last_updated_at END"
    ));
    // closed_at follows the status: kept while the status does not change,
    // cleared by a status that is not done (a reopen), set on entering a
    // done status, keeping the first closing time while it stays done.
    set.push(format!(
        "closed_at = CASE WHEN NOT {} THEN ticket_details.closed_at \
         WHEN excluded.closed_at IS NULL THEN NULL \
         ELSE COALESCE(ticket_details.closed_at, excluded.closed_at) END",
        applies(Field::Status)
    ));
    set.push("webhook_updated_at = COALESCE(excluded.webhook_updated_at, ticket_details.webhook_updated_at)".into());
    set.push("synced_at = COALESCE(excluded.synced_at, ticket_details.synced_at)".into());
    set.push("last_source = excluded.last_source".into());
    set.push("revision = ticket_details.revision + 1".into());
    set.push("last_event_fields = excluded.last_event_fields".into());

    // A field changes when it takes a different value, or the same value
    // from a newer version: the version must move too, or an older event
    // arriving later would wrongly take the field.
    let mut changes = vec![advances];
    changes.extend(Field::ALL.iter().map(|&f| {
        let c = f.column();
        let v = version(f);
        format!(
            "({} AND (excluded.{c} IS DISTINCT FROM ticket_details.{c} OR ({ts} IS NOT NULL AND ({v} IS NULL OR {ts} > {v}))))",
            applies(f)
        )
    }));
    format!(
        "ON CONFLICT (external_id, external_source) DO UPDATE SET {} WHERE {}",
        set.join(", "),
        changes.join(" OR ")
    )
}

/// SQLite: one event per statement, parameters `?1…`.
pub fn sqlite_upsert(companies: bool) -> String {
    let mut columns = insert_columns();
    let mut values: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let department = format!("?{}", 3 + Field::DepartmentId.index());
    let (extra_columns, extra_values) = insert_only(companies, ["?1", "?2", &department]);
    columns.extend(extra_columns.iter().map(|c| c.to_string()));
    values.extend(extra_values);
    format!(
        "INSERT INTO ticket_details ({}) VALUES ({}) {} RETURNING {}",
        columns.join(", "),
        values.join(", "),
        on_conflict(companies),
        snapshot_columns("")
    )
}

/// PostgreSQL: one statement for a whole round of a batch (distinct tickets),
/// passed as one array per column. It reads the rows as they were before
/// (`old`), upserts in ticket order (so concurrent writers lock rows in the
/// same order), and returns both side by side, in input order:
/// `had_old, <old snapshot>, has_new, inserted, <new snapshot>, tombstoned`.
pub fn postgres_upsert(companies: bool) -> String {
    let columns = insert_columns().join(", ");
    let (extra_columns, extra_values) = insert_only(
        companies,
        [
            "input.external_id",
            "input.external_source",
            "input.department_id",
        ],
    );
    let unnest: Vec<String> = postgres_array_types()
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("${}::{ty}[]", i + 1))
        .collect();
    let key = |a: &str, b: &str| {
        format!("{a}.external_id = {b}.external_id AND {a}.external_source = {b}.external_source")
    };
    format!(
        "WITH input AS (SELECT * FROM unnest({unnest}) WITH ORDINALITY AS i({columns}, ord)), \
         old AS (SELECT t.external_id, t.external_source, {old_columns} FROM ticket_details t JOIN input i ON {ti}), \
         up AS (INSERT INTO ticket_details ({columns}, {extra_columns}) SELECT {columns}, {extra_values} FROM input \
                ORDER BY input.external_source, input.external_id \
                {conflict} RETURNING external_id, external_source, (xmax = 0) AS inserted, {new_columns}) \
         SELECT (o.external_id IS NOT NULL), {o_columns}, (u.external_id IS NOT NULL), COALESCE(u.inserted, false), {u_columns}, \
                EXISTS (SELECT 1 FROM ticket_tombstones tb WHERE {tbi}) \
         FROM input i LEFT JOIN old o ON {oi} LEFT JOIN up u ON {ui} ORDER BY i.ord",
        extra_columns = extra_columns.join(", "),
        extra_values = extra_values.join(", "),
        tbi = key("tb", "i"),
        unnest = unnest.join(", "),
        old_columns = snapshot_columns("t."),
        ti = key("t", "i"),
        conflict = on_conflict(companies),
        new_columns = snapshot_columns(""),
        o_columns = snapshot_columns("o."),
        u_columns = snapshot_columns("u."),
        oi = key("o", "i"),
        ui = key("u", "i"),
    )
}

/// The PostgreSQL element type of each insert column, in order.
pub fn postgres_array_types() -> Vec<&'static str> {
    let mut types = vec!["int8", "text"];
    types.extend(Field::ALL.iter().map(|f| match f.kind() {
        crate::psa::Kind::Text => "text",
        crate::psa::Kind::Int => "int8",
        crate::psa::Kind::Bool => "bool",
    }));
    types.extend(Field::ALL.iter().map(|_| "text"));
    types.extend(["text", "text", "text", "text", "text", "int8"]);
    types
}

pub const JOURNAL_COLUMNS: &str =
    "provider, received_at, client_ip, event, ticket_id, outcome, error, body";

/// A ticket's key in `ticket_details` and `ticket_tombstones`.
const TICKET_KEY: &str = "external_id = ?1 AND external_source = ?2";

/// The stored row of a ticket, as `snapshot_columns()`.
pub fn ticket_select() -> String {
    format!(
        "SELECT {} FROM ticket_details WHERE {TICKET_KEY}",
        snapshot_columns("")
    )
}

pub fn ticket_delete() -> String {
    format!("DELETE FROM ticket_details WHERE {TICKET_KEY}")
}

/// Tombstone statements (`ticket_tombstones`), parameters `?1` (ticket id)
/// and `?2` (provider) first.
pub fn tombstone_select() -> String {
    format!(
        "SELECT CAST(last_updated_at AS TEXT), CAST(status AS TEXT), CAST(status_id AS BIGINT), \
         CAST(closed_at AS TEXT) FROM ticket_tombstones WHERE {TICKET_KEY}"
    )
}

pub fn tombstone_delete() -> String {
    format!("DELETE FROM ticket_tombstones WHERE {TICKET_KEY}")
}

/// Records a delete, unless a newer one is recorded; `?3` … `?7`:
/// `last_updated_at, status, status_id, closed_at, recorded_at`.
pub const TOMBSTONE_UPSERT: &str = "INSERT INTO ticket_tombstones \
     (external_id, external_source, last_updated_at, status, status_id, closed_at, recorded_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (external_id, external_source) DO UPDATE SET \
     last_updated_at = excluded.last_updated_at, status = excluded.status, status_id = excluded.status_id, \
     closed_at = excluded.closed_at, recorded_at = excluded.recorded_at \
     WHERE excluded.last_updated_at IS NULL OR (ticket_tombstones.last_updated_at IS NOT NULL \
     AND excluded.last_updated_at >= ticket_tombstones.last_updated_at)";

pub const PRUNE_TOMBSTONES: &str = "DELETE FROM ticket_tombstones WHERE recorded_at < ?1";

pub const PRUNE_JOURNAL: &str = "DELETE FROM webhook_events WHERE id IN \
     (SELECT id FROM webhook_events WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)";

/// Tickets of `?1` whose status is not in the JSON array `?2`, with an id
/// above `?4`, by id, at most `?3`.
pub fn active_tickets(dialect: Dialect) -> String {
    format!(
        "SELECT CAST(external_id AS BIGINT), CAST(status_id AS BIGINT) FROM ticket_details \
         WHERE external_source = ?1 AND (status IS NULL OR status NOT IN ({})) \
         AND external_id > ?4 ORDER BY external_id LIMIT ?3",
        dialect.json_texts("CAST(?2 AS TEXT)")
    )
}

/// `WebhookCounts` of provider `?1` since `?2`.
pub fn webhook_counts() -> String {
    let applied = JournalOutcome::sql_list(&JournalOutcome::APPLIED);
    let refused = JournalOutcome::sql_list(&JournalOutcome::REFUSED);
    format!(
        "SELECT count(*), count(*) FILTER (WHERE outcome IN ({applied})), \
         count(*) FILTER (WHERE outcome IN ({refused})), \
         max(received_at) FILTER (WHERE outcome NOT IN ({refused})), max(received_at), \
         max(received_at) FILTER (WHERE event = 'ticket.deleted' AND outcome NOT IN ({refused})) \
         FROM webhook_events WHERE provider = ?1 AND received_at >= ?2"
    )
}

pub const SYNC_STATE_GET: &str =
    "SELECT cursor, last_reconcile_at FROM sync_state WHERE provider = ?1";

pub const SYNC_STATE_SET: &str = "INSERT INTO sync_state (provider, cursor, last_reconcile_at) \
     VALUES (?1, ?2, ?3) ON CONFLICT (provider) DO UPDATE SET cursor = excluded.cursor, \
     last_reconcile_at = excluded.last_reconcile_at";

pub const RUN_START: &str = "INSERT INTO sync_runs (provider, kind, started_at, outcome) \
     VALUES (?1, ?2, ?3, ?4) RETURNING id";

pub const RUN_FINISH: &str = "UPDATE sync_runs SET finished_at = ?2, outcome = ?3, \
     tickets_seen = ?4, tickets_changed = ?5, missed_by_webhooks = ?6, missed_ticket_ids = ?7, \
     api_calls = ?8, error = ?9 WHERE id = ?1";

/// The newest runs, of provider `?1` (or all when NULL), at most `?2`; the
/// columns `sync_run` reads.
pub const RUNS_RECENT: &str = "SELECT id, provider, kind, started_at, finished_at, outcome, \
     tickets_seen, tickets_changed, missed_by_webhooks, missed_ticket_ids, api_calls, error \
     FROM sync_runs WHERE CAST(?1 AS TEXT) IS NULL OR provider = ?1 ORDER BY id DESC LIMIT ?2";

pub const MISSED_SINCE: &str = "SELECT CAST(coalesce(sum(missed_by_webhooks), 0) AS BIGINT) \
     FROM sync_runs WHERE provider = ?1 AND started_at >= ?2 AND outcome = 'ok'";

pub const JOURNAL_ROWS: &str = "SELECT CAST(count(*) AS BIGINT) FROM webhook_events";

pub const META_GET: &str = "SELECT value FROM codex_meta WHERE key = ?1";

pub const META_SET: &str = "INSERT INTO codex_meta (key, value) VALUES (?1, ?2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// Every statement above, for a migration to prepare before it commits.
pub fn all(dialect: Dialect) -> Vec<String> {
    let mut all = vec![
        ticket_select(),
        ticket_delete(),
        tombstone_select(),
        tombstone_delete(),
        active_tickets(dialect),
        webhook_counts(),
        journal::select(dialect),
        journal::mark_replayed(),
    ];
    all.extend(
        [
            TOMBSTONE_UPSERT,
            PRUNE_TOMBSTONES,
            PRUNE_JOURNAL,
            SYNC_STATE_GET,
            SYNC_STATE_SET,
            RUN_START,
            RUN_FINISH,
            RUNS_RECENT,
            MISSED_SINCE,
            JOURNAL_ROWS,
            META_GET,
            META_SET,
        ]
        .map(str::to_string),
    );
    all.extend(journal::ACTIVITY.map(str::to_string));
    all
}

/// A `sync_runs` row as `RUNS_RECENT` reads it.
pub fn sync_run(row: &Cells) -> Result<SyncRun, StoreError> {
    let parsed = |at: usize| row.text(at).map(Option::unwrap_or_default);
    let unknown = |error: UnknownValue| StoreError::Statement(error.to_string());
    Ok(SyncRun {
        id: row.int(0)?.unwrap_or_default(),
        provider: row.text(1)?.unwrap_or_default(),
        kind: parsed(2)?.parse().map_err(unknown)?,
        started_at: row.text(3)?.unwrap_or_default(),
        finished_at: row.text(4)?,
        outcome: parsed(5)?.parse().map_err(unknown)?,
        tickets_seen: row.int(6)?.unwrap_or_default(),
        tickets_changed: row.int(7)?.unwrap_or_default(),
        missed_by_webhooks: row.int(8)?.unwrap_or_default(),
        missed_ticket_ids: records::split_ids(row.text(9)?.as_deref()),
        api_calls: row.int(10)?.unwrap_or_default(),
        error: row.text(11)?,
    })
}

/// A tombstone as `tombstone_select` reads it.
pub fn tombstone(row: &Cells) -> Result<Tombstone, StoreError> {
    Ok(Tombstone {
        last_updated_at: row.text(0)?,
        status: row.text(1)?,
        status_id: row.int(2)?,
        closed_at: row.text(3)?,
    })
}

/// Deletes tombstones recorded before `cutoff`, then up to `limit` journal
/// rows received before it; returns how many journal rows went.
pub fn prune(conn: &dyn Connection, cutoff: &str, limit: i64) -> Result<u64, StoreError> {
    conn.execute(PRUNE_TOMBSTONES, &[Param::text(cutoff)])?;
    conn.execute(
        PRUNE_JOURNAL,
        &[Param::text(cutoff), Param::Int(Some(limit))],
    )
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_written_once_in_sqlite_spelling() {
        for statement in all(Dialect::Postgres) {
            assert!(!statement.contains('$'), "{statement}");
            let rendered = Dialect::Postgres.render(&statement);
            assert!(!rendered.contains("?1"), "{rendered}");
        }
        assert_eq!(
            Dialect::Postgres.render(SYNC_STATE_GET),
            "SELECT cursor, last_reconcile_at FROM sync_state WHERE provider = $1"
        );
    }

    #[test]
    fn webhook_counts_name_the_journal_outcomes() {
        let sql = webhook_counts();
        assert!(
            sql.contains("outcome IN ('created', 'updated', 'deleted', 'ignored')"),
            "{sql}"
        );
        assert!(
            sql.contains("outcome NOT IN ('rejected', 'failed')"),
            "{sql}"
        );
    }

    #[test]
    fn fit_cuts_at_character_boundaries() {
        let name = "é".repeat(5);
        let mut row = vec![Param::Int(Some(1)), Param::Text(Some(&name))];
        fit(&mut row, &[(1, 3), (0, 1), (7, 1)], 1);
        assert_eq!(row[1], Param::Text(Some("ééé")));
        let mut row = vec![Param::Int(Some(1)), Param::Text(Some("short"))];
        fit(&mut row, &[(1, 10)], 1);
        assert_eq!(row[1], Param::Text(Some("short")));
    }

    #[test]
    fn column_lists_line_up() {
        assert_eq!(insert_columns().len(), postgres_array_types().len());
        for companies in [false, true] {
            let upsert = sqlite_upsert(companies);
            let (columns, rest) = upsert.split_once(") VALUES (").unwrap();
            let columns = columns.split_once('(').unwrap().1;
            let values = rest.split_once(") ON CONFLICT").unwrap().0;
            assert_eq!(
                columns.split(", ").count(),
                values.split(", ").count(),
                "{upsert}"
            );
        }
    }
}
