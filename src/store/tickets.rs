//! Ticket reads for the predecessor's read API (`http/api.rs`): a page of
//! tickets, one ticket, a company's tickets. Each statement is written once
//! in SQLite's spelling; optional filters are parameters that may be NULL,
//! so the statement text never depends on the request.
//!
//! `companies` is the predecessor's table and Codex never creates it, so
//! each read comes in two spellings: joined with it when it exists, with
//! its columns as NULL when it does not.

use super::connection::{Cells, Connection, Param};
use crate::error::StoreError;

/// What `/api/tickets` asks for. `None` filters nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TicketQuery {
    pub company: Option<String>,
    pub status: Option<String>,
    pub priority: Option<String>,
    pub source: Option<String>,
    /// Stored form (`YYYY-MM-DDTHH:MM:SSZ`): tickets last updated then or later.
    pub updated_since: Option<String>,
    /// Keyset position: only rows after this one in the listing's order.
    pub after: Option<Position>,
    pub limit: i64,
    pub offset: i64,
}

/// A row's place in the listing's order (`last_updated_at` descending,
/// then row id descending); a missing time sorts as the empty string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub last_updated_at: String,
    pub id: i64,
}

/// One page of `/api/tickets`.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketPage {
    pub tickets: Vec<TicketRow>,
    /// Rows matching the filters (keyset position and paging aside).
    pub total: i64,
}

/// A `ticket_details` row with its company's columns, as the read API
/// shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TicketRow {
    /// The table's own row id.
    pub id: i64,
    pub external_id: i64,
    pub source: String,
    pub ticket_number: Option<String>,
    pub subject: Option<String>,
    pub description: Option<String>,
    pub description_text: Option<String>,
    pub status: Option<String>,
    pub priority: Option<String>,
    pub company_account_number: Option<String>,
    pub company_name: Option<String>,
    pub compliance_level: Option<String>,
    pub requester_email: Option<String>,
    pub requester_name: Option<String>,
    pub created_at: Option<String>,
    pub last_updated_at: Option<String>,
    pub closed_at: Option<String>,
    pub total_hours_spent: Option<f64>,
    pub conversations: Option<String>,
    pub notes: Option<String>,
}

impl TicketRow {
    pub fn position(&self) -> Position {
        Position {
            last_updated_at: self.last_updated_at.clone().unwrap_or_default(),
            id: self.id,
        }
    }
}

/// The columns every read selects, in `TicketRow` order; `c` is
/// `companies` or, without it, a one-row stand-in of NULLs.
const COLUMNS: &str = "t.id, t.external_id, t.external_source, t.ticket_number, t.subject, \
     t.description, t.description_text, t.status, t.priority, t.company_account_number, \
     c.name, c.compliance_level, t.requester_email, t.requester_name, t.created_at, \
     t.last_updated_at, t.closed_at, t.total_hours_spent, t.conversations, t.notes";

/// `FROM` with the company joined.
const WITH_COMPANIES: &str = "ticket_details t LEFT JOIN companies c \
     ON c.account_number = t.company_account_number";

/// `FROM` without `companies`: the same column names, all NULL.
const WITHOUT_COMPANIES: &str = "ticket_details t LEFT JOIN \
     (SELECT CAST(NULL AS TEXT) AS account_number, CAST(NULL AS TEXT) AS name, \
     CAST(NULL AS TEXT) AS compliance_level) c ON c.account_number = t.company_account_number";

/// The listing's filters: ?1 company, ?2 status, ?3 priority, ?4 source,
/// ?5 updated since.
const FILTERS: &str = "(CAST(?1 AS TEXT) IS NULL OR t.company_account_number = ?1) \
     AND (CAST(?2 AS TEXT) IS NULL OR t.status = ?2) \
     AND (CAST(?3 AS TEXT) IS NULL OR t.priority = ?3) \
     AND (CAST(?4 AS TEXT) IS NULL OR t.external_source = ?4) \
     AND (CAST(?5 AS TEXT) IS NULL OR t.last_updated_at >= ?5)";

/// The listing's order; `last_updated_at` holds the stored form, which
/// sorts in time order.
const ORDER: &str = "ORDER BY COALESCE(t.last_updated_at, '') DESC, t.id DESC";

fn from(companies: bool) -> &'static str {
    if companies {
        WITH_COMPANIES
    } else {
        WITHOUT_COMPANIES
    }
}

/// Whether the predecessor's `companies` table is in the database.
pub fn companies_exist(conn: &dyn Connection) -> Result<bool, StoreError> {
    let sql = match conn.dialect() {
        super::dialect::Dialect::Sqlite => {
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'companies'"
        }
        super::dialect::Dialect::Postgres => {
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = 'companies'"
        }
    };
    let rows = conn.query(sql, &[])?;
    Ok(rows
        .first()
        .map(|row| row.int(0))
        .transpose()?
        .flatten()
        .unwrap_or(0)
        > 0)
}

/// A page of tickets and how many match.
pub fn page(conn: &dyn Connection, query: &TicketQuery) -> Result<TicketPage, StoreError> {
    let companies = companies_exist(conn)?;
    let filters = [
        Param::Text(query.company.as_deref()),
        Param::Text(query.status.as_deref()),
        Param::Text(query.priority.as_deref()),
        Param::Text(query.source.as_deref()),
        Param::Text(query.updated_since.as_deref()),
    ];
    let count = format!(
        "SELECT CAST(count(*) AS BIGINT) FROM {} WHERE {FILTERS}",
        from(companies)
    );
    let total = conn
        .query(&count, &filters)?
        .first()
        .map(|row| row.int(0))
        .transpose()?
        .flatten()
        .unwrap_or(0);
    let (after_time, after_id) = match &query.after {
        Some(position) => (Some(position.last_updated_at.as_str()), Some(position.id)),
        None => (None, None),
    };
    let mut params = filters.to_vec();
    params.extend([
        Param::Text(after_time),
        Param::Int(after_id),
        Param::Int(Some(query.limit)),
        Param::Int(Some(query.offset)),
    ]);
    let select = format!(
        "SELECT {COLUMNS} FROM {} WHERE {FILTERS} \
         AND (CAST(?6 AS TEXT) IS NULL OR COALESCE(t.last_updated_at, '') < ?6 \
              OR (COALESCE(t.last_updated_at, '') = ?6 AND t.id < ?7)) \
         {ORDER} LIMIT ?8 OFFSET ?9",
        from(companies)
    );
    let tickets = conn
        .query(&select, &params)?
        .iter()
        .map(ticket_row)
        .collect::<Result<_, _>>()?;
    Ok(TicketPage { tickets, total })
}

/// The ticket with the PSA's id `external_id` (from `source` when given;
/// else the most recently updated of the sources that have one).
pub fn by_external_id(
    conn: &dyn Connection,
    external_id: i64,
    source: Option<&str>,
) -> Result<Option<TicketRow>, StoreError> {
    let select = format!(
        "SELECT {COLUMNS} FROM {} WHERE t.external_id = ?1 \
         AND (CAST(?2 AS TEXT) IS NULL OR t.external_source = ?2) {ORDER} LIMIT 1",
        from(companies_exist(conn)?)
    );
    let params = [Param::Int(Some(external_id)), Param::Text(source)];
    conn.query(&select, &params)?
        .first()
        .map(ticket_row)
        .transpose()
}

/// A company's tickets, newest first (last updated in `year` when given);
/// `None` when the company is not known: not in `companies`, or, in a
/// database without that table, on no ticket.
pub fn of_company(
    conn: &dyn Connection,
    account_number: &str,
    year: Option<&str>,
) -> Result<Option<Vec<TicketRow>>, StoreError> {
    let companies = companies_exist(conn)?;
    let known = if companies {
        "SELECT CAST(count(*) AS BIGINT) FROM companies WHERE account_number = ?1"
    } else {
        "SELECT CAST(count(*) AS BIGINT) FROM ticket_details WHERE company_account_number = ?1"
    };
    let found = conn
        .query(known, &[Param::Text(Some(account_number))])?
        .first()
        .map(|row| row.int(0))
        .transpose()?
        .flatten()
        .unwrap_or(0);
    if found == 0 {
        return Ok(None);
    }
    let select = format!(
        "SELECT {COLUMNS} FROM {} WHERE t.company_account_number = ?1 \
         AND (CAST(?2 AS TEXT) IS NULL OR substr(t.last_updated_at, 1, 4) = ?2) {ORDER}",
        from(companies)
    );
    let params = [Param::Text(Some(account_number)), Param::Text(year)];
    conn.query(&select, &params)?
        .iter()
        .map(ticket_row)
        .collect::<Result<_, _>>()
        .map(Some)
}

/// A row as `COLUMNS` selects it.
fn ticket_row(row: &Cells) -> Result<TicketRow, StoreError> {
    Ok(TicketRow {
        id: row.int(0)?.unwrap_or_default(),
        external_id: row.int(1)?.unwrap_or_default(),
        source: row.text(2)?.unwrap_or_default(),
        ticket_number: row.text(3)?,
        subject: row.text(4)?,
        description: row.text(5)?,
        description_text: row.text(6)?,
        status: row.text(7)?,
        priority: row.text(8)?,
        company_account_number: row.text(9)?,
        company_name: row.text(10)?,
        compliance_level: row.text(11)?,
        requester_email: row.text(12)?,
        requester_name: row.text(13)?,
        created_at: row.text(14)?,
        last_updated_at: row.text(15)?,
        closed_at: row.text(16)?,
        total_hours_spent: row.float(17)?,
        conversations: row.text(18)?,
        notes: row.text(19)?,
    })
}
