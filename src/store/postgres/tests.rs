//! The statement cache, against the suite's server: each connection
//! prepares each statement once.

use super::*;
use crate::config::DatabaseUrl;
use crate::store::connection::Connection;
use crate::store::{JournalEntryUpdate, JournalOutcome, RunKind, SyncRun, SyncState};
use crate::store::{JournalQuery, TicketQuery};
use connection::tests::server;

/// A database of the test's own on the suite's server, dropped after.
struct OwnDatabase {
    name: String,
    url: PostgresUrl,
}

impl OwnDatabase {
    fn create(tag: &str) -> OwnDatabase {
        let name = format!("codex_{tag}_{}", std::process::id());
        let admin = open_client(&server()).unwrap();
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let server = server();
        let text = server.expose();
        let (base, query) = text
            .split_once('?')
            .map_or((text, None), |(b, q)| (b, Some(q)));
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let host = base[scheme_end..]
            .find('/')
            .map_or(base, |i| &base[..scheme_end + i]);
        let url = match query {
            Some(query) => format!("{host}/{name}?{query}"),
            None => format!("{host}/{name}"),
        };
        let Ok(DatabaseUrl::Postgres(url)) = url.parse() else {
            panic!("{name} does not make a PostgreSQL URL")
        };
        OwnDatabase { name, url }
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        if let Ok(admin) = open_client(&server()) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// Statements prepared on `conn`'s own session, and any text prepared
/// there more than once.
fn server_prepared(conn: &dyn Connection) -> (i64, Vec<String>) {
    let rows = conn
        .query(
            "SELECT statement, CAST(count(*) AS BIGINT) FROM pg_prepared_statements GROUP BY statement",
            &[],
        )
        .unwrap();
    let total = rows.iter().map(|row| row.int(1).unwrap().unwrap()).sum();
    let twice = rows
        .iter()
        .filter(|row| row.int(1).unwrap() > Some(1))
        .map(|row| row.text(0).unwrap().unwrap_or_default())
        .collect();
    (total, twice)
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn the_writer_prepares_each_statement_once_per_connection() {
    let db = OwnDatabase::create("writer_cache");
    let mut backend = PostgresBackend::connect(&db.url).unwrap();
    let after_connect = backend.client.prepared();
    let mut after_first = 0;
    for round in 1..=5 {
        let mut run = SyncRun::starting(Provider::Freshservice, RunKind::Incremental);
        run.id = backend.start_run(&run).unwrap();
        run.missed_ticket_ids = vec![7, 8];
        backend.finish_run(&run).unwrap();
        let state = SyncState {
            cursor: Some(format!("2024-01-0{round}T00:00:00Z")),
            last_reconcile_at: None,
        };
        backend
            .save_sync_state(Provider::Freshservice, &state)
            .unwrap();
        backend.prune_journal("2000-01-01T00:00:00Z", 100).unwrap();
        let update = JournalEntryUpdate {
            id: -1,
            event: None,
            ticket_id: None,
            outcome: JournalOutcome::Rejected,
            error: None,
        };
        assert!(!backend.mark_replayed(&update).unwrap());
        backend.ping().unwrap();
        if round == 1 {
            after_first = backend.client.prepared();
        }
    }
    // The shared statements were prepared by the migration; the first
    // round adds only the prune lock's.
    assert_eq!(after_first, after_connect + 1);
    assert_eq!(
        backend.client.prepared(),
        after_first,
        "later rounds prepare nothing"
    );
    let (total, twice) = server_prepared(backend.connection());
    assert!(
        twice.is_empty(),
        "prepared twice on one connection: {twice:?}"
    );
    assert!(
        total >= i64::try_from(after_first).unwrap(),
        "{total} on the server"
    );
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn a_read_connection_prepares_each_statement_once() {
    let db = OwnDatabase::create("reader_cache");
    drop(PostgresBackend::connect(&db.url).unwrap());
    let mut reader = PostgresReader::connect(&db.url).unwrap();
    let mut after_first = 0;
    for round in 1..=5 {
        reader.sync_state(Provider::Freshservice).unwrap();
        reader.recent_runs(Some(Provider::Freshservice), 5).unwrap();
        reader.recent_runs(None, 5).unwrap();
        reader
            .webhook_counts(Provider::Freshservice, "2000-01-01T00:00:00Z")
            .unwrap();
        reader
            .missed_since(Provider::Freshservice, "2000-01-01T00:00:00Z")
            .unwrap();
        reader.journal_rows().unwrap();
        reader.schema_version().unwrap();
        reader.recent_deliveries(10).unwrap();
        reader.delivery_counts("2000-01-01T00:00:00Z").unwrap();
        reader
            .journaled(&JournalQuery {
                id: None,
                since: None,
                outcomes: vec![JournalOutcome::Rejected],
            })
            .unwrap();
        let query = TicketQuery {
            limit: 10,
            ..TicketQuery::default()
        };
        reader.tickets(&query).unwrap();
        reader.ticket(1, None).unwrap();
        reader.company_tickets("ACME-1", None).unwrap();
        reader
            .active_tickets(Provider::Freshservice, &["Closed".to_string()], 0, 100)
            .unwrap();
        if round == 1 {
            after_first = reader.client.prepared();
        }
    }
    assert!(after_first >= 14, "{after_first} statements");
    assert_eq!(
        reader.client.prepared(),
        after_first,
        "later rounds prepare nothing"
    );
    let (total, twice) = server_prepared(reader.connection());
    assert!(
        twice.is_empty(),
        "prepared twice on one connection: {twice:?}"
    );
    // Everything the reads prepared, and the look at the server's list.
    assert_eq!(total, i64::try_from(after_first).unwrap() + 1);
}

#[test]
#[cfg_attr(
    not(codex_postgres_tests),
    ignore = "needs PostgreSQL: run scripts/test.sh, or set CODEX_TEST_DATABASE_URL"
)]
fn a_kept_statement_the_server_refuses_is_prepared_again() {
    let db = OwnDatabase::create("stale_statement");
    let client = open_client(&db.url).unwrap();
    client
        .batch_execute("CREATE TABLE kept (a BIGINT); INSERT INTO kept VALUES (1)")
        .unwrap();
    let conn: &dyn Connection = &client;
    let select = "SELECT * FROM kept";
    assert_eq!(conn.query(select, &[]).unwrap()[0].0.len(), 1);
    // Another session changes the table under the kept statement.
    open_client(&db.url)
        .unwrap()
        .batch_execute("ALTER TABLE kept ADD COLUMN b TEXT")
        .unwrap();
    let error = conn.query(select, &[]).unwrap_err();
    assert!(
        matches!(&error, StoreError::Statement(m) if m.contains("cached plan")),
        "{error}"
    );
    let prepared = client.prepared();
    assert_eq!(conn.query(select, &[]).unwrap()[0].0.len(), 2);
    assert_eq!(client.prepared(), prepared + 1, "prepared again once");
    conn.query(select, &[]).unwrap();
    assert_eq!(client.prepared(), prepared + 1);
}
