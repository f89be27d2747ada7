//! How a statement runs on either backend: written once in SQLite's
//! spelling, bound to typed `Param`s, answered with rows of `Cells`. The
//! shared statements (`statements`), the journal's and the tickets' reads
//! are written against `Connection`; each backend implements it.

use super::dialect::Dialect;
use super::records::Snapshot;
use crate::error::StoreError;
use crate::psa::{Field, Kind, Value};

/// One value of an insert row, typed so each backend can bind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(Option<bool>),
}

impl<'a> Param<'a> {
    /// A text value that is there.
    pub fn text(value: &'a str) -> Param<'a> {
        Param::Text(Some(value))
    }
}

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    Bytes(Vec<u8>),
}

/// One row of a result, read by position.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cells(pub Vec<Cell>);

impl Cells {
    fn cell(&self, at: usize) -> Result<&Cell, StoreError> {
        self.0.get(at).ok_or_else(|| {
            StoreError::Statement(format!(
                "a result row has {} columns, not {}",
                self.0.len(),
                at + 1
            ))
        })
    }

    fn mismatch(&self, at: usize, wanted: &str) -> StoreError {
        StoreError::Statement(format!(
            "result column {at} holds {:?} where {wanted} was expected",
            self.0[at]
        ))
    }

    pub fn int(&self, at: usize) -> Result<Option<i64>, StoreError> {
        match self.cell(at)? {
            Cell::Null => Ok(None),
            Cell::Int(n) => Ok(Some(*n)),
            _ => Err(self.mismatch(at, "an integer")),
        }
    }

    pub fn bytes(&self, at: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.cell(at)? {
            Cell::Null => Ok(None),
            Cell::Bytes(bytes) => Ok(Some(bytes.clone())),
            Cell::Text(text) => Ok(Some(text.clone().into_bytes())),
            _ => Err(self.mismatch(at, "bytes")),
        }
    }

    pub fn text(&self, at: usize) -> Result<Option<String>, StoreError> {
        match self.cell(at)? {
            Cell::Null => Ok(None),
            Cell::Text(text) => Ok(Some(text.clone())),
            _ => Err(self.mismatch(at, "text")),
        }
    }

    /// A number; an integer column reads as one too.
    pub fn float(&self, at: usize) -> Result<Option<f64>, StoreError> {
        match self.cell(at)? {
            Cell::Null => Ok(None),
            Cell::Float(x) => Ok(Some(*x)),
            // Ticket hours fit an f64 exactly.
            #[allow(clippy::cast_precision_loss)]
            Cell::Int(n) => Ok(Some(*n as f64)),
            _ => Err(self.mismatch(at, "a number")),
        }
    }

    /// A boolean: SQLite stores it as an integer.
    pub fn bool(&self, at: usize) -> Result<Option<bool>, StoreError> {
        match self.cell(at)? {
            Cell::Null => Ok(None),
            Cell::Bool(b) => Ok(Some(*b)),
            Cell::Int(n) => Ok(Some(*n != 0)),
            _ => Err(self.mismatch(at, "a boolean")),
        }
    }

    /// The `statements::snapshot_columns()` starting at column `at`.
    pub fn snapshot(&self, at: usize) -> Result<Snapshot, StoreError> {
        let mut values: [Option<Value>; Field::COUNT] = Default::default();
        for (i, field) in Field::ALL.iter().enumerate() {
            let column = at + 1 + i;
            values[i] = match field.kind() {
                Kind::Text => self.text(column)?.map(Value::Text),
                Kind::Int => self.int(column)?.map(Value::Int),
                Kind::Bool => self.bool(column)?.map(Value::Bool),
            };
        }
        Ok(Snapshot {
            revision: self.int(at)?.unwrap_or(0),
            values,
            last_updated_at: self.text(at + 1 + Field::COUNT)?,
        })
    }
}

/// A connection (or a transaction) that runs statements written in
/// SQLite's spelling, binding `Param`s to `?N`.
pub trait Connection {
    fn dialect(&self) -> Dialect;
    /// Runs one statement; returns how many rows it changed.
    fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError>;
    /// Runs one statement; returns its rows.
    fn query(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Cells>, StoreError>;
}

/// The first row of a statement that returns one.
pub fn one(rows: Vec<Cells>) -> Result<Cells, StoreError> {
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::Statement("a statement that returns a row returned none".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_read_what_each_database_returns() {
        let row = Cells(vec![
            Cell::Int(3),
            Cell::Null,
            Cell::Text("x".into()),
            Cell::Int(1),
        ]);
        assert_eq!(row.int(0).unwrap(), Some(3));
        assert_eq!(row.text(1).unwrap(), None);
        assert_eq!(row.text(2).unwrap().as_deref(), Some("x"));
        assert_eq!(row.bool(3).unwrap(), Some(true));
        assert!(row.int(2).is_err());
        assert!(row.text(4).is_err());
    }
}
