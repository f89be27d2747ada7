//! Under CI every test must run: an environment a test needs that is
//! missing there fails the suite, where a developer's machine reports
//! those tests as ignored (see build.rs and scripts/test.sh).

/// Which optional test environments this build of the tests has.
const ENVIRONMENTS: [(&str, bool); 5] = [
    (
        "CODEX_TEST_DATABASE_URL (the PostgreSQL tests)",
        cfg!(codex_postgres_tests),
    ),
    (
        "CODEX_TEST_MOUNTS (the tmpfs tests)",
        cfg!(codex_mount_tests),
    ),
    (
        "CODEX_TEST_PROMETHEUS_PYTHON (the /metrics parser tests)",
        cfg!(codex_prometheus_tests),
    ),
    (
        "CODEX_TEST_CHROMIUM (the status page browser tests)",
        cfg!(codex_browser_tests),
    ),
    (
        "CODEX_TEST_RELEASE_BIN (the resource tests against the release binary)",
        cfg!(codex_release_tests),
    ),
];

#[test]
fn ci_runs_the_postgresql_and_mount_tests() {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        let missing: Vec<&str> = ENVIRONMENTS
            .iter()
            .filter(|(_, present)| !present)
            .map(|(name, _)| *name)
            .collect();
        assert!(
            missing.is_empty(),
            "CI=true but these were not set when the tests were built, so their tests \
             would be ignored: {}",
            missing.join(", ")
        );
    }
}
