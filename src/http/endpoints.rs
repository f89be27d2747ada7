//! What Codex serves, by name: the list a health answer and a 404 give,
//! kept apart from the routing so that `failure.rs` can name it without
//! depending on `routes.rs`.

use serde_json::Value;

use crate::psa::Provider;

/// The names of the providers Codex serves.
pub(super) fn supported_providers() -> Vec<&'static str> {
    Provider::ALL.iter().map(|p| p.as_str()).collect()
}

/// The webhook endpoints under `base_path`, by name.
pub(super) fn endpoints(base_path: &str) -> Value {
    let mut endpoints = serde_json::Map::new();
    endpoints.insert(
        "health".into(),
        format!("{base_path}/webhooks/health").into(),
    );
    endpoints.insert("test".into(), format!("{base_path}/webhooks/test").into());
    for provider in Provider::ALL {
        endpoints.insert(
            provider.as_str().into(),
            format!("{base_path}/webhooks/{provider}/ticket").into(),
        );
    }
    Value::Object(endpoints)
}
