//! A private PostgreSQL cluster for tests that must stop and start the
//! server (the shared one from scripts/test.sh serves everything else).
//! As root the server runs as the `postgres` user, which PostgreSQL needs.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl PgCluster {
    /// True when the pid file names a live postmaster.
    fn server_pids_quiet(&self, pidfile: &str) -> bool {
        pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }
}

/// The password of the `postgres` role (connections over TCP use it).
pub const PASSWORD: &str = "cluster-pw-31337";

fn find_bin() -> Option<PathBuf> {
    if let Ok(bin) = std::env::var("CODEX_TEST_PG_BIN") {
        return Some(PathBuf::from(bin));
    }
    let on_path = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v initdb)\""])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            Path::new(String::from_utf8_lossy(&o.stdout).trim())
                .parent()
                .map(Path::to_path_buf)
        });
    if on_path.as_ref().is_some_and(|p| p.join("pg_ctl").exists()) {
        return on_path;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

impl PgCluster {
    /// Starts a new cluster on a free port. The tests that call this are
    /// ignored unless the build has `codex_postgres_tests` (see build.rs),
    /// so missing server binaries are an error here, not a skip.
    pub fn start() -> PgCluster {
        let bin = find_bin().expect(
            "no PostgreSQL server binaries (initdb, pg_ctl): install them or set CODEX_TEST_PG_BIN",
        );
        let as_postgres = output("id", &["-u"]).as_deref() == Some("0");
        let dir = tempfile::Builder::new()
            .prefix("codex-pgtest")
            .tempdir()
            .expect("temp dir")
            .keep();
        if as_postgres {
            let uid: u32 = output("id", &["-u", "postgres"])
                .expect("a postgres user")
                .parse()
                .unwrap();
            std::os::unix::fs::chown(&dir, Some(uid), None).expect("chown");
        }
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if as_postgres {
            std::os::unix::fs::chown(
                &pwfile,
                Some(output("id", &["-u", "postgres"]).unwrap().parse().unwrap()),
                None,
            )
            .unwrap();
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let cluster = PgCluster {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "--no-sync",
            ],
        );
        cluster.start_server();
        cluster
    }

    /// A command for one of the server tools, as `postgres` when root.
    fn tool(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .tool(program)
            .args(args)
            .output()
            .expect("run postgres tool");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// postgresql://postgres:<password>@127.0.0.1:<port>/postgres
    pub fn url(&self) -> String {
        format!(
            "postgresql://postgres:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    pub fn start_server(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                    self.port,
                    self.dir.display()
                ),
                "start",
            ],
        );
    }

    /// Stops the server (fast: connections are cut, as in an outage).
    pub fn stop_server(&self) {
        self.stop_server_mode("fast");
    }

    /// `pg_ctl stop -m <mode>` (smart, fast or immediate).
    pub fn stop_server_mode(&self, mode: &str) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        );
    }

    /// The postmaster and every process it started.
    pub fn server_pids(&self) -> Vec<u32> {
        let pidfile =
            std::fs::read_to_string(self.dir.join("data/postmaster.pid")).expect("postmaster.pid");
        let postmaster: u32 = pidfile.lines().next().unwrap().trim().parse().unwrap();
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Sends `signal` (KILL, STOP, CONT) to every server process.
    pub fn signal_all(&self, signal: &str) {
        let pids: Vec<String> = self.server_pids().iter().map(u32::to_string).collect();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(&pids)
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pids:?}");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // A test that failed while the server was frozen leaves it stopped.
        if let Ok(text) = std::fs::read_to_string(self.dir.join("data/postmaster.pid")) {
            if self.server_pids_quiet(&text) {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .args(self.server_pids().iter().map(u32::to_string))
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        let data = self.dir.join("data");
        let _ = self
            .tool("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
