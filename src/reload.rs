//! Reloading `codex.conf` (SIGHUP): what changed, what takes effect at once
//! and what waits for a restart, as each setting's declaration says
//! (`config::SETTINGS`).

use std::collections::BTreeMap;

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
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| before.get(*key) != after.get(*key))
        .map(|key| {
            let value =
                |lines: &BTreeMap<String, String>| lines.get(key).cloned().unwrap_or_default();
            let (was, now) = (value(&before), value(&after));
            format!("[{}] {key}: {was} -> {now}", setting.section)
        })
        .collect()
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
