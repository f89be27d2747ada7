//! Reloading `codex.conf` (SIGHUP): what changed, what takes effect at once
//! and what waits for a restart.

use std::collections::BTreeMap;

use crate::config::Config;

/// Settings a running service cannot change: a reload keeps their running
/// value and says they need a restart.
const RESTART_ONLY: &[&str] = &[
    "[server] bind",
    "[server] threads",
    "[server] max_body_bytes",
    "[server] read_timeout",
    "[server] header_timeout",
    "[server] body_timeout",
    "[server] max_connections",
    "[database] connection_string",
    "[webhooks] journal_retention_days",
];

/// A reloaded configuration and how it differs from the one in force.
pub struct Plan {
    /// The new configuration, with the running value of every
    /// restart-only setting.
    pub config: Config,
    /// `[section] key: old -> new` for each changed setting that takes
    /// effect now (secrets as `changed`, never their value).
    pub applied: Vec<String>,
    /// `[section] key` of each changed restart-only setting.
    pub needs_restart: Vec<String>,
    /// Polling must be restarted with the new settings.
    pub polling_changed: bool,
}

/// Compares `new` with `old`, the configuration in force.
pub fn plan(old: &Config, mut new: Config) -> Plan {
    let before = entries(&old.render_masked());
    let after = entries(&new.render_masked());
    let mut changed: BTreeMap<String, String> = after
        .iter()
        .filter(|(key, value)| before.get(*key) != Some(*value))
        .map(|(key, value)| {
            let was = before.get(key).map_or("", String::as_str);
            (key.clone(), format!("{key}: {was} -> {value}"))
        })
        .collect();
    let secrets = |c: &Config| -> Vec<String> {
        c.webhooks
            .secrets
            .iter()
            .map(|s| s.expose().to_string())
            .collect()
    };
    if secrets(old) != secrets(&new) {
        changed.insert(
            "[webhooks] secret".into(),
            "[webhooks] secret: changed".into(),
        );
    }
    let api_key = |c: &Config| {
        c.freshservice
            .api_key
            .as_ref()
            .map(|k| k.expose().to_string())
    };
    if api_key(old) != api_key(&new) {
        changed.insert(
            "[freshservice] api_key".into(),
            "[freshservice] api_key: changed".into(),
        );
    }
    let token = |c: &Config| {
        c.superops
            .api_token
            .as_ref()
            .map(|k| k.expose().to_string())
    };
    if token(old) != token(&new) {
        changed.insert(
            "[superops] api_token".into(),
            "[superops] api_token: changed".into(),
        );
    }
    let polling_changed = changed.keys().any(|key| {
        key.starts_with("[freshservice")
            || key.starts_with("[superops")
            || key.starts_with("[scheduler]")
            || key == "[webhooks] enabled"
    });
    let (restart, applied): (Vec<_>, Vec<_>) = changed
        .into_iter()
        .partition(|(key, _)| RESTART_ONLY.contains(&key.as_str()));

    new.source = old.source.clone().or(new.source);
    new.server.bind = old.server.bind;
    new.server.threads = old.server.threads;
    new.server.max_body_bytes = old.server.max_body_bytes;
    new.server.read_timeout = old.server.read_timeout;
    new.server.header_timeout = old.server.header_timeout;
    new.server.body_timeout = old.server.body_timeout;
    new.server.max_connections = old.server.max_connections;
    new.database = old.database.clone();
    new.webhooks.journal_retention_days = old.webhooks.journal_retention_days;

    Plan {
        config: new,
        applied: applied.into_iter().map(|(_, line)| line).collect(),
        needs_restart: restart.into_iter().map(|(key, _)| key).collect(),
        polling_changed,
    }
}

/// `[section] key` -> value, from `Config::render_masked`.
fn entries(rendered: &str) -> BTreeMap<String, String> {
    let mut section = String::new();
    let mut entries = BTreeMap::new();
    for line in rendered.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            entries.insert(
                format!("{section} {}", key.trim()),
                value.trim().to_string(),
            );
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn lists_changes_masks_secrets_and_keeps_restart_only_settings() {
        let old = Config::default();
        let mut new = old.clone();
        new.webhooks.rate_limit_per_minute = 7;
        new.webhooks.secrets = vec![Secret::new("a-new-secret-value")];
        new.server.threads = old.server.threads + 1;
        let plan = plan(&old, new);
        assert!(
            plan.applied
                .iter()
                .any(|l| l.starts_with("[webhooks] rate_limit_per_minute") && l.ends_with("-> 7")),
            "{:?}",
            plan.applied
        );
        assert!(
            plan.applied
                .iter()
                .all(|l| !l.contains("a-new-secret-value"))
        );
        assert!(
            plan.applied
                .contains(&"[webhooks] secret: changed".to_string())
        );
        assert_eq!(plan.needs_restart, ["[server] threads"]);
        assert_eq!(plan.config.server.threads, old.server.threads);
        assert!(!plan.polling_changed);
    }

    #[test]
    fn a_superops_token_or_setting_restarts_polling() {
        let old = Config::default();
        let mut new = old.clone();
        new.superops.api_token = Some(Secret::new("so-token-value"));
        let plan = plan(&old, new);
        assert!(plan.polling_changed);
        assert!(
            plan.applied
                .contains(&"[superops] api_token: changed".to_string()),
            "{:?}",
            plan.applied
        );
        assert!(plan.applied.iter().all(|l| !l.contains("so-token-value")));
        let mut new = old.clone();
        new.superops.max_requests_per_minute = 100;
        assert!(super::plan(&old, new).polling_changed);
    }
}
