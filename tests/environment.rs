//! What the suite itself must hold. Under CI every test must run: an
//! environment a test needs that is missing there fails the suite, where a
//! developer's machine reports those tests as ignored (see build.rs and
//! scripts/test.sh). And tests wait for conditions, not time.

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

/// Every sleep under `tests/` is either the poll interval of a wait with a
/// deadline (`common::wait_until`) or a place where the passage of time is
/// what is tested, and says so in a comment just above it; any other
/// sleep stands in for a condition a test should wait on.
#[test]
fn tests_sleep_only_where_time_is_what_is_tested() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let needle = ["thread", "::sleep("].concat();
    let mut files = vec![root];
    let mut unexplained = Vec::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            if !line.contains(&needle) {
                continue;
            }
            let explained = lines[n.saturating_sub(4)..n].iter().any(|above| {
                let above = above.trim_start();
                above.starts_with("//")
                    && (above.contains("time is what is tested here")
                        || above.contains("poll interval"))
            });
            if !explained {
                unexplained.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "sleeps in place of waiting on a condition (use common::wait_until, or \
         say `// time is what is tested here: ...` above a sleep that is the \
         point):\n{}",
        unexplained.join("\n")
    );
}
