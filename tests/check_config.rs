//! The mistakes an admin makes in `codex.conf` and around it, each caught
//! by `check-config` (exit code, and a message that names the fix) and
//! refusing `serve`; commands that read the database never create one.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{SECRET, run_codex, run_codex_in, wait_with_deadline};

/// One mistake (or several), as a configuration file.
struct Case {
    name: &'static str,
    /// The configuration; `{db}` is a database path in an existing
    /// directory, `{secret}` a strong secret, `{bind}` a free address.
    config: &'static str,
    /// Each must appear in `check-config`'s error output.
    check_says: &'static [&'static str],
    /// Each must appear in `serve`'s error output; empty when `serve`
    /// starts (it does with nothing to take in, as README's first run).
    serve_says: &'static [&'static str],
}

const GOOD: &str = "[server]\nbind = {bind}\n[database]\nconnection_string = sqlite:///{db}\n\
                    [webhooks]\nenabled = true\nsecret = {secret}\n";

const CASES: &[Case] = &[
    Case {
        name: "a section typo",
        config: "[server]\nbind = {bind}\n[database]\nconnection_string = sqlite:///{db}\n\
                 [webhook]\nenabled = true\nsecret = {secret}\n",
        check_says: &["[webhook] is not a section Codex reads; did you mean [webhooks]?"],
        serve_says: &["did you mean [webhooks]?"],
    },
    Case {
        name: "a key typo with transposed letters",
        config: "[server]\nbnid = {bind}\n[database]\nconnection_string = sqlite:///{db}\n\
                 [webhooks]\nenabled = true\nsecret = {secret}\n",
        check_says: &["[server] bnid is not a key Codex reads; did you mean bind?"],
        serve_says: &["did you mean bind?"],
    },
    Case {
        name: "a key typo together with the error it causes",
        config: "[server]\nbind = {bind}\n[database]\nconnection_string = sqlite:///{db}\n\
                 [webhooks]\nenabled = true\nsecert = {secret}\n",
        check_says: &[
            "[webhooks] secert is not a key Codex reads; did you mean secret?",
            "no secret is set",
        ],
        serve_says: &["did you mean secret?", "no secret is set"],
    },
    Case {
        name: "a key in the wrong section",
        config: "[server]\nbind = {bind}\nsecret = {secret}\n\
                 [database]\nconnection_string = sqlite:///{db}\n[webhooks]\nenabled = true\n",
        check_says: &["[server] secret", "`secret` belongs in [webhooks]"],
        serve_says: &["`secret` belongs in [webhooks]"],
    },
    Case {
        name: "a short secret",
        config: "[server]\nbind = {bind}\n[database]\nconnection_string = sqlite:///{db}\n\
                 [webhooks]\nenabled = true\nsecret = abc\n",
        check_says: &[
            "[webhooks] secret: the secret is 3 characters",
            "codex gen-secret",
        ],
        serve_says: &["codex gen-secret"],
    },
    Case {
        name: "a dictionary word",
        config: "[server]\nbind = {bind}\n[database]\nconnection_string = sqlite:///{db}\n\
                 [webhooks]\nenabled = true\nsecret = password123\n",
        check_says: &["[webhooks] secret", "codex gen-secret"],
        serve_says: &["codex gen-secret"],
    },
    Case {
        name: "README's placeholder",
        config: "[server]\nbind = {bind}\n[database]\nconnection_string = sqlite:///{db}\n\
                 [webhooks]\nenabled = true\nsecret = YOUR_SECRET_HERE\n",
        check_says: &["[webhooks] secret", "codex gen-secret"],
        serve_says: &["codex gen-secret"],
    },
    Case {
        name: "a long placeholder",
        config: "[server]\nbind = {bind}\n[database]\nconnection_string = sqlite:///{db}\n\
                 [webhooks]\nenabled = true\nsecret = YOUR_SECRET_HERE_PLEASE_0123456789\n",
        check_says: &["placeholder", "codex gen-secret"],
        serve_says: &["placeholder"],
    },
    Case {
        name: "a secret of one character class",
        config: "[server]\nbind = {bind}\n[database]\nconnection_string = sqlite:///{db}\n\
                 [webhooks]\nenabled = true\nsecret = abcdefghijklmnopqrstuvwxyzabcdefgh\n",
        check_says: &["one kind of character", "codex gen-secret"],
        serve_says: &["one kind of character"],
    },
    Case {
        name: "a database in a directory that does not exist",
        config: "[server]\nbind = {bind}\n[database]\nconnection_string = sqlite:///{dir}/nowhere/codex.db\n\
                 [webhooks]\nenabled = true\nsecret = {secret}\n",
        check_says: &[
            "/nowhere for the database",
            "set by [database] connection_string in",
            "set [database] connection_string",
        ],
        serve_says: &["/nowhere for the database", "[database] connection_string"],
    },
    Case {
        name: "the port in use",
        config: "[server]\nbind = {held}\n[database]\nconnection_string = sqlite:///{db}\n\
                 [webhooks]\nenabled = true\nsecret = {secret}\n",
        check_says: &["Address already in use", "(pid {pid})", "set [server] bind"],
        serve_says: &["(pid {pid})", "set [server] bind"],
    },
    Case {
        name: "nothing to take deliveries from",
        config: "[server]\nbind = {bind}\n[database]\nconnection_string = sqlite:///{db}\n",
        check_says: &[
            "take no deliveries",
            "[webhooks] enabled = true",
            "codex gen-secret",
        ],
        serve_says: &[],
    },
    Case {
        name: "every configuration mistake at once",
        config: "[server]\nbnid = {bind}\n[database]\nconnection_string = sqlite:///{db}\n\
                 [webhook]\nx = 1\n[webhooks]\nenabled = true\nsecret = YOUR_SECRET_HERE\nsecert = x\n",
        check_says: &[
            "did you mean bind?",
            "did you mean [webhooks]?",
            "did you mean secret?",
            "codex gen-secret",
        ],
        serve_says: &[
            "did you mean bind?",
            "did you mean [webhooks]?",
            "codex gen-secret",
        ],
    },
    Case {
        name: "the port in use and the directory missing",
        config: "[server]\nbind = {held}\n[database]\nconnection_string = sqlite:///{dir}/nowhere/codex.db\n\
                 [webhooks]\nenabled = true\nsecret = {secret}\n",
        check_says: &[
            "2 problems",
            "set [server] bind",
            "/nowhere for the database",
        ],
        serve_says: &["/nowhere for the database"],
    },
];

/// `text` with the placeholders of `Case` filled in.
fn fill(text: &str, dir: &Path, held: &TcpListener) -> String {
    text.replace("{db}", &dir.join("codex.db").display().to_string())
        .replace("{dir}", &dir.display().to_string())
        .replace("{secret}", SECRET)
        .replace("{bind}", "127.0.0.1:0")
        .replace("{held}", &held.local_addr().unwrap().to_string())
        .replace("{pid}", &std::process::id().to_string())
}

/// Runs `codex serve`, which must exit on its own (refused) within the
/// deadline; returns whether it succeeded and its stderr.
fn serve_exits(conf: &Path) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_codex"))
        .args(["serve", "--config", conf.to_str().unwrap()])
        .env_remove("CODEX_CONFIG")
        .env_remove("CODEX_WEBHOOK_SECRET")
        .env_remove("CODEX_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut child, Duration::from_secs(20));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.success(), err)
}

#[test]
fn every_mistake_fails_check_config_with_its_fix_and_refuses_serve() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("codex.conf");
        std::fs::write(&conf, fill(case.config, dir.path(), &held)).unwrap();
        let (status, out, err) =
            run_codex(&["check-config", "--config", conf.to_str().unwrap()], &[]);
        assert!(
            !status.success(),
            "{}: check-config passed:\n{err}",
            case.name
        );
        for needle in case.check_says {
            let needle = fill(needle, dir.path(), &held);
            assert!(
                err.contains(&needle),
                "{}: {needle:?} not in\n{err}",
                case.name
            );
        }
        assert!(
            !err.contains(SECRET) && !out.contains(SECRET),
            "{}",
            case.name
        );
        if !case.serve_says.is_empty() {
            let (started, err) = serve_exits(&conf);
            assert!(!started, "{}: serve succeeded", case.name);
            for needle in case.serve_says {
                let needle = fill(needle, dir.path(), &held);
                assert!(
                    err.contains(&needle),
                    "{}: serve: {needle:?} not in\n{err}",
                    case.name
                );
            }
        }
        // Nothing was created: no database, no directory.
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["codex.conf"], "{}", case.name);
    }
}

#[test]
fn a_good_configuration_passes_and_says_what_serve_would_do_first() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("codex.conf");
    std::fs::write(&conf, fill(GOOD, dir.path(), &held)).unwrap();
    let (status, out, err) = run_codex(&["check-config", "--config", conf.to_str().unwrap()], &[]);
    assert!(status.success(), "{err}");
    let db = dir.path().join("codex.db");
    let first: Vec<&str> = out.lines().take(5).collect();
    assert_eq!(
        first[0],
        "serve would listen on http://127.0.0.1:0 ([server] bind)"
    );
    assert!(
        first[1].contains(&format!("database: SQLite {}", db.display())),
        "{out}"
    );
    assert!(first[2].contains("webhooks: enabled, 1 secret"), "{out}");
    assert!(first[3].contains("freshservice: not configured"), "{out}");
    assert!(err.contains("address: 127.0.0.1:0 is free"), "{err}");
    assert!(err.contains("will be created at start-up"), "{err}");
    assert!(
        err.contains("serve would start and take deliveries"),
        "{err}"
    );
    assert!(!db.exists(), "check-config created the database");
}

#[test]
fn status_and_sync_on_a_missing_database_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // No configuration: the built-in ./codex.db, named by its full path.
    let (status, _, err) = run_codex_in(dir.path(), &["status"], &[]);
    assert!(!status.success());
    let full = dir.path().canonicalize().unwrap().join("codex.db");
    assert!(
        err.contains(&format!("{} does not exist", full.display())),
        "{err}"
    );
    assert!(err.contains("built-in default"), "{err}");
    // The log says where the embedded default is, in full.
    assert!(
        err.contains(&format!(
            "using built-in defaults, database SQLite {}",
            full.display()
        )),
        "{err}"
    );
    assert!(err.contains("codex migrate"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // A configuration that names a database in a directory that is not there.
    let conf = dir.path().join("codex.conf");
    let db = dir.path().join("data").join("codex.db");
    std::fs::write(
        &conf,
        format!(
            "[database]\nconnection_string = sqlite:///{}\n\
             [freshservice]\ndomain = example.invalid\napi_key = k\n",
            db.display()
        ),
    )
    .unwrap();
    for args in [&["status"][..], &["sync", "--once"]] {
        let mut all = args.to_vec();
        all.extend(["--config", conf.to_str().unwrap()]);
        let (status, _, err) = run_codex(&all, &[]);
        assert!(!status.success(), "{args:?}");
        assert!(
            err.contains(&format!("{} does not exist", db.display())),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(&format!(
                "set by [database] connection_string in {}",
                conf.display()
            )),
            "{args:?}: {err}"
        );
    }
    assert!(!db.parent().unwrap().exists(), "a directory was created");
}

#[test]
fn migrate_creates_the_database_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("codex.conf");
    let db = dir.path().join("data").join("codex.db");
    std::fs::write(
        &conf,
        format!(
            "[database]\nconnection_string = sqlite:///{}\n",
            db.display()
        ),
    )
    .unwrap();
    let (status, out, err) = run_codex(&["migrate", "--config", conf.to_str().unwrap()], &[]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains(&format!("created the SQLite database {}", db.display())),
        "{out}"
    );
    assert!(db.exists());
    // Now it exists, status reads it.
    let (status, _, err) = run_codex(&["status", "--config", conf.to_str().unwrap()], &[]);
    assert!(status.success(), "{err}");
    // Again: nothing to create, and it does not say so.
    let (status, out, _) = run_codex(&["migrate", "--config", conf.to_str().unwrap()], &[]);
    assert!(status.success());
    assert!(!out.contains("created"), "{out}");
}

#[test]
fn version_works_as_a_command() {
    let (status, out, _) = run_codex(&["version"], &[]);
    assert!(status.success());
    let (_, flag, _) = run_codex(&["--version"], &[]);
    assert_eq!(out, flag);
    assert!(out.starts_with("codex "), "{out}");
}

/// Runs codex as a user other than the owner of the files: as root, as
/// `nobody` (through `setpriv`); otherwise as the current user, the
/// files' write bits then being taken away instead.
fn run_as_other(args: &[&str]) -> (bool, String) {
    let mut command = match running_as_root() {
        true => {
            let mut command = Command::new("setpriv");
            command.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
            command.arg(env!("CARGO_BIN_EXE_codex"));
            command
        }
        false => Command::new(env!("CARGO_BIN_EXE_codex")),
    };
    let output = command
        .args(args)
        .env_remove("CODEX_CONFIG")
        .env_remove("CODEX_WEBHOOK_SECRET")
        .env_remove("CODEX_DATABASE_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), err)
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn permission_denied_on_the_database_names_the_path_and_the_user() {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("codex.db");
    let conf = dir.path().join("codex.conf");
    std::fs::write(
        &conf,
        format!(
            "[server]\nbind = 127.0.0.1:0\n[database]\nconnection_string = sqlite:///{}\n\
             [webhooks]\nenabled = true\nsecret = {SECRET}\n",
            db.display()
        ),
    )
    .unwrap();
    chmod(&conf, 0o644);
    let user = match running_as_root() {
        true => "Codex runs as user nobody (uid 65534)",
        false => "Codex runs as ",
    };
    let conf = conf.to_str().unwrap();

    // No database yet, and a directory Codex may not create it in.
    chmod(&data, 0o555);
    for command in ["check-config", "serve"] {
        let (ok, err) = run_as_other(&[command, "--config", conf]);
        assert!(!ok, "{command} succeeded");
        assert!(
            err.contains(&format!("permission denied on {}: {user}", data.display())),
            "{command}: {err}"
        );
    }
    assert!(!db.exists());

    // A database Codex may not write.
    chmod(&data, 0o755);
    let (status, _, err) = run_codex(&["migrate", "--config", conf], &[]);
    assert!(status.success(), "{err}");
    for file in std::fs::read_dir(&data).unwrap() {
        chmod(&file.unwrap().path(), 0o444);
    }
    chmod(&data, 0o555);
    for command in ["check-config", "serve"] {
        let (ok, err) = run_as_other(&[command, "--config", conf]);
        assert!(!ok, "{command} succeeded");
        assert!(
            err.contains(&format!("permission denied on {}: {user}", db.display())),
            "{command}: {err}"
        );
    }
    // `status` only reads: a database it may not write is no obstacle.
    let (ok, err) = run_as_other(&["status", "--config", conf]);
    assert!(ok, "status: {err}");
    chmod(&data, 0o755);
}
