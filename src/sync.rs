//! Polling: the safety net behind webhooks.

use serde_json::{Map, Value, json};

use crate::config::Config;

/// What `/webhooks/health` reports about polling.
pub struct SyncStatus {
    configured: bool,
}

impl SyncStatus {
    pub fn new(config: &Config) -> SyncStatus {
        SyncStatus {
            configured: config.freshservice_polling(),
        }
    }

    pub fn health_fields(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("polling_enabled".into(), json!(self.configured));
        map
    }
}
