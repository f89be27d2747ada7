//! Tells the test suite which optional test environments this build has,
//! so that tests needing one are reported as ignored (with the reason)
//! rather than as passed when it is missing. `scripts/test.sh` provides
//! both; nothing here affects the binary.
//!
//! - `codex_postgres_tests`: `CODEX_TEST_DATABASE_URL` names a PostgreSQL
//!   server (the tests that start private clusters also need the server
//!   binaries, and fail, not skip, when they are missing).
//! - `codex_mount_tests`: `CODEX_TEST_MOUNTS=1`, the tests may mount small
//!   filesystems (tmpfs; needs root) to fill a disk or make it read-only.
//! - `codex_prometheus_tests`: `CODEX_TEST_PROMETHEUS_PYTHON` names a
//!   Python with `prometheus_client`, whose parser reads `/metrics`.
//! - `codex_browser_tests`: `CODEX_TEST_CHROMIUM` names a headless
//!   Chromium that renders the status page.
//! - `codex_release_tests`: `CODEX_TEST_RELEASE_BIN` names the release
//!   binary, which the resource tests (`tests/resources.rs`) run.

fn main() {
    for (variable, cfg) in [
        ("CODEX_TEST_DATABASE_URL", "codex_postgres_tests"),
        ("CODEX_TEST_MOUNTS", "codex_mount_tests"),
        ("CODEX_TEST_PROMETHEUS_PYTHON", "codex_prometheus_tests"),
        ("CODEX_TEST_CHROMIUM", "codex_browser_tests"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={variable}");
        if std::env::var(variable).is_ok_and(|value| !value.is_empty() && value != "0") {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    println!("cargo::rustc-check-cfg=cfg(codex_release_tests)");
    println!("cargo::rerun-if-env-changed=CODEX_TEST_RELEASE_BIN");
    if std::env::var("CODEX_TEST_RELEASE_BIN").is_ok_and(|value| !value.is_empty()) {
        println!("cargo::rustc-cfg=codex_release_tests");
    }
}
