//! Reloading `codex.conf` (SIGHUP): what changed, what takes effect at once
//! and what waits for a restart, as each setting's declaration says
//! (`config::SETTINGS`).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, OnReload, SETTINGS, Setting};

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
    let (mut applied, mut needs_restart, mut polling_changed) = (Vec::new(), Vec::new(), false);
    for setting in SETTINGS {
        if (setting.same)(old, &new) {
            continue;
        }
        if setting.on_reload == OnReload::Restart {
            needs_restart.push(setting.name());
            (setting.keep)(&mut new, old);
            continue;
        }
        polling_changed |= setting.on_reload == OnReload::Poller;
        applied.extend(changes(setting, old, &new));
    }
    new.source = old.source.clone().or(new.source);
    Plan {
        config: new,
        applied,
        needs_restart,
        polling_changed,
    }
}

/// `[section] key: old -> new` for each line of `setting` that differs; for
/// a secret, only that it changed.
fn changes(setting: &Setting, old: &Config, new: &Config) -> Vec<String> {
    if setting.secret {
        return vec![format!("{}: changed", setting.name())];
    }
    let before: BTreeMap<_, _> = (setting.lines)(old).into_iter().collect();
    let after: BTreeMap<_, _> = (setting.lines)(new).into_iter().collect();
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let value = |lines: &BTreeMap<String, String>, key| lines.get(key).cloned().unwrap_or_default();
    keys.into_iter()
        .filter(|key| before.get(*key) != after.get(*key))
        .map(|key| {
            let (was, now) = (value(&before, key), value(&after, key));
            format!("[{}] {key}: {was} -> {now}", setting.section)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DatabaseUrl, Secret};

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

    #[test]
    fn the_declaration_says_what_needs_a_restart() {
        let restart: Vec<String> = SETTINGS
            .iter()
            .filter(|s| s.on_reload == OnReload::Restart)
            .map(Setting::name)
            .collect();
        assert_eq!(
            restart,
            [
                "[server] bind",
                "[server] threads",
                "[server] max_body_bytes",
                "[server] max_inflight_body_bytes",
                "[server] first_byte_timeout",
                "[server] read_timeout",
                "[server] header_timeout",
                "[server] body_timeout",
                "[server] max_connections",
                "[server] max_connections_per_ip",
                "[server] tls_cert",
                "[server] tls_key",
                "[database] connection_string",
                "[webhooks] journal_retention_days",
            ]
        );
    }

    #[test]
    fn a_table_entry_is_listed_and_restarts_polling() {
        let old = Config::default();
        let new = Config::from_ini(
            "[freshservice.statuses]\n11 = awaiting_parts, Awaiting Parts\n",
            None,
            &|_| None,
        )
        .unwrap()
        .config;
        let plan = plan(&old, new);
        assert!(plan.polling_changed);
        assert_eq!(
            plan.applied,
            ["[freshservice.statuses] 11:  -> awaiting_parts, Awaiting Parts"]
        );
        assert!(plan.needs_restart.is_empty());
    }

    #[test]
    fn a_database_password_change_needs_a_restart_and_is_not_shown() {
        let url = |password: &str| {
            let text =
                format!("[database]\nconnection_string = postgresql://u:{password}@db/codex\n");
            Config::from_ini(&text, None, &|_| None).unwrap().config
        };
        let plan = plan(&url("first-pw"), url("second-pw"));
        assert_eq!(plan.needs_restart, ["[database] connection_string"]);
        assert!(plan.applied.is_empty());
        let DatabaseUrl::Postgres(kept) = &plan.config.database.url else {
            panic!("{:?}", plan.config.database.url)
        };
        assert!(kept.expose().contains("first-pw"));
    }
}
