//! Codex under systemd, without systemd running: the notifications of a
//! `Type=notify` unit (a test binds the `NOTIFY_SOCKET`), socket
//! activation (a listening socket passed as fd 3 with `LISTEN_FDS`), and
//! secrets read from `$CREDENTIALS_DIRECTORY`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, Codex, TestDb, base_config, seed_body, wait_until};

/// A secret only the credential file holds.
const CREDENTIAL_SECRET: &str = "Crd2Wq8Er4Ty6Ui0Op3As5Df7Gh9Jk1Lz";

/// The notify socket a test binds, and every message received on it.
struct NotifySocket {
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = socket.recv(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..n]).to_string();
                sink.lock().unwrap().push(text);
            }
        });
        NotifySocket { path, messages }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    fn saw(&self, message: &str) -> bool {
        self.messages()
            .iter()
            .any(|m| m.lines().any(|l| l == message))
    }
}

/// Where in `messages` the first one holding the line `line` is.
fn position(messages: &[String], line: &str) -> Option<usize> {
    messages.iter().position(|m| m.lines().any(|l| l == line))
}

#[test]
fn ready_then_watchdog_then_stopping_in_order() {
    let db = TestDb::new(&Backend::Sqlite);
    let notify = NotifySocket::bind(db.dir.path());
    let config = db.dir.path().join("codex.conf");
    std::fs::write(&config, base_config(&db, "")).unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: the shell's, which
    // exec keeps.
    let mut command = Command::new("sh");
    command
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_codex"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("CODEX_WEBHOOK_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut codex = Codex::spawn(command, &config);
    assert!(
        wait_until(Duration::from_secs(10), || notify.saw("WATCHDOG=1")),
        "no WATCHDOG=1: {:?}",
        notify.messages()
    );
    assert!(codex.terminate().success());
    assert!(
        wait_until(Duration::from_secs(5), || notify.saw("STOPPING=1")),
        "no STOPPING=1: {:?}",
        notify.messages()
    );
    let messages = notify.messages();
    let ready = position(&messages, "READY=1").expect("READY=1");
    let watchdog = position(&messages, "WATCHDOG=1").expect("WATCHDOG=1");
    let stopping = position(&messages, "STOPPING=1").expect("STOPPING=1");
    assert!(ready < watchdog && watchdog < stopping, "{messages:?}");
    // Nothing is pinged once the drain began.
    assert!(
        messages[stopping + 1..]
            .iter()
            .all(|m| !m.contains("WATCHDOG=1")),
        "{messages:?}"
    );
}

#[test]
fn a_reload_is_announced_with_its_time_and_ends_ready() {
    let db = TestDb::new(&Backend::Sqlite);
    let notify = NotifySocket::bind(db.dir.path());
    let codex = Codex::start_with_env(&db, "", &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())]);
    assert!(wait_until(Duration::from_secs(10), || notify.saw("READY=1")));
    let hup = Command::new("kill")
        .args(["-HUP", &codex.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    assert!(
        wait_until(Duration::from_secs(10), || {
            let messages = notify.messages();
            let reloading = position(&messages, "RELOADING=1");
            reloading.is_some_and(|at| position(&messages[at + 1..], "READY=1").is_some())
        }),
        "{:?}",
        notify.messages()
    );
    let messages = notify.messages();
    let reloading = &messages[position(&messages, "RELOADING=1").unwrap()];
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC with RELOADING=1");
    assert!(usec.parse::<u64>().unwrap() > 0, "{reloading}");
}

#[test]
fn a_socket_passed_as_fd_3_is_served_and_bind_is_ignored() {
    let db = TestDb::new(&Backend::Sqlite);
    // A bind that cannot be listened on: Codex must not try.
    let config = db.dir.path().join("codex.conf");
    std::fs::write(
        &config,
        base_config(&db, "[server]\nbind = 192.0.2.1:5010\n"),
    )
    .unwrap();
    let mut command = Command::new("python3");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/socket_activate.py"))
        .arg(env!("CARGO_BIN_EXE_codex"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env_remove("CODEX_WEBHOOK_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut codex = Codex::spawn(command, &config);
    assert_ne!(codex.addr.port(), 5010);
    let response = codex.deliver_json(&seed_body("ticket.created", 31, 2, "2024-03-01T00:00:00Z"));
    assert_eq!(response.status, 201, "{:?}", response.json());
    assert!(db.ticket(31).is_some());
    let logs = codex.logs();
    assert_eq!(
        logs.matches("[server] bind = 192.0.2.1:5010 is not used")
            .count(),
        1,
        "{logs}"
    );
    assert!(codex.terminate().success());
}

#[test]
fn secrets_are_read_from_the_credentials_directory_after_the_environment() {
    let db = TestDb::new(&Backend::Sqlite);
    let credentials = db.dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(
        credentials.join("CODEX_WEBHOOK_SECRET"),
        format!("{CREDENTIAL_SECRET}\n"),
    )
    .unwrap();
    // Of the four, only the webhook secret is there: a missing one is fine.
    let config = db.dir.path().join("codex.conf");
    let text = base_config(&db, "").replace(
        &format!("secret = {}", common::SECRET),
        "secret = Cfg4Hn8Qw2Ze6Ty0Ui3Op7As1Df5Gh9Jk",
    );
    std::fs::write(&config, text).unwrap();
    let deliver = |codex: &Codex, secret: &str| {
        codex
            .request(
                "POST",
                "/webhooks/test",
                &[("X-Webhook-Secret", secret)],
                b"",
            )
            .status
    };

    // The credential overrides the file.
    let dir = credentials.to_str().unwrap();
    let codex = Codex::start_config(&config, &[("CREDENTIALS_DIRECTORY", dir)]);
    assert_eq!(deliver(&codex, CREDENTIAL_SECRET), 200);
    assert_eq!(deliver(&codex, "Cfg4Hn8Qw2Ze6Ty0Ui3Op7As1Df5Gh9Jk"), 401);
    drop(codex);

    // The environment variable overrides the credential.
    let from_env = "Env5Rt9Yu3Io7Pa1Sd4Fg8Hj2Kl6Zx0Cv";
    let codex = Codex::start_config(
        &config,
        &[
            ("CREDENTIALS_DIRECTORY", dir),
            ("CODEX_WEBHOOK_SECRET", from_env),
        ],
    );
    assert_eq!(deliver(&codex, from_env), 200);
    assert_eq!(deliver(&codex, CREDENTIAL_SECRET), 401);
}
