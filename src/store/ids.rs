//! The `missed_ticket_ids` column: ticket ids as `1,2,3`.

/// `1,2,3` for the `missed_ticket_ids` column.
pub fn join_ids(ids: &[i64]) -> Option<String> {
    (!ids.is_empty()).then(|| {
        ids.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// The ids of a `missed_ticket_ids` value; anything unreadable is skipped.
pub fn split_ids(text: Option<&str>) -> Vec<i64> {
    text.unwrap_or_default()
        .split(',')
        .filter_map(|id| id.trim().parse().ok())
        .collect()
}
