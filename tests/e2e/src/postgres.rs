//! A Postgres cluster of one test alone, which the test can stop and start again: what "Postgres
//! is down" is tested with, without touching the shared server every other test uses.
//!
//! Debian's Postgres 15 binaries run on a free port of 127.0.0.1 with their data in a temporary
//! directory, trust authentication and no fsync (the data only has to outlive a restart of the
//! server, not of the machine). `initdb` refuses to run as root, so as root both binaries run as the `postgres`
//! OS user, which then owns the directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::process::{Child, Command};

use crate::{Env, free_port};

/// Where Debian installs the server binaries.
const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// The database the runq processes use.
const DATABASE: &str = "runq";

/// A `postgres` server of one test, on its own port and data directory; stopped and its files
/// removed when dropped.
pub struct PrivatePostgres {
    port: u16,
    dir: PathBuf,
    /// `(uid, gid)` to run the server as (`postgres` when the tests run as root).
    user: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PrivatePostgres {
    /// Creates a cluster with an empty `runq` database, starts it and waits until it answers.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("runq-pg-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        let user = if current_uid() == 0 { Some(postgres_user()) } else { None };
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster directory");
        }
        let mut pg = Self { port: free_port(), dir, user, child: None };
        pg.initdb().await;
        pg.restart().await;
        let mut admin = pg.connect("postgres").await.expect("connect to the new cluster");
        sqlx::query(sqlx::AssertSqlSafe(format!("create database {DATABASE}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        admin.close().await.ok();
        pg
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `DATABASE_URL` of the cluster's `runq` database.
    pub fn database_url(&self) -> String {
        self.url(DATABASE)
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(Path::new(BIN_DIR).join(binary));
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    async fn initdb(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync", "--no-instructions"])
            .output()
            .await
            .unwrap_or_else(|e| panic!("{BIN_DIR}/initdb must be installed (Debian's postgresql-15): {e}"));
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts the server if it is not running (same port, same data) and waits (20 s at most)
    /// until it accepts connections.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))
            .expect("open the server log");
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&self.dir)
            // no fsync: a killed server keeps what it wrote (the OS has it); commits stay synchronous
            // to the server's own WAL, so a crash loses only what runq chose to commit relaxed
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=60", "-c", "shared_buffers=32MB"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn postgres");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("postgres on port {} exited at start ({status}); log:\n{}", self.port, self.log());
            }
            if let Ok(conn) = self.connect("postgres").await {
                conn.close().await.ok();
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "postgres on port {} did not start within 20 s", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
    }

    /// Stops the server the way an operator does (`pg_ctl stop -m fast`, SIGINT): open
    /// transactions are rolled back, every client is disconnected, then it exits. Waits for the
    /// exit.
    pub async fn stop(&mut self) {
        self.signal_and_wait("INT").await;
    }

    /// Stops the server as a crash would (`-m immediate`, SIGQUIT): no clean shutdown; the next
    /// start recovers from the WAL.
    pub async fn crash(&mut self) {
        self.signal_and_wait("QUIT").await;
    }

    async fn signal_and_wait(&mut self, signal: &str) {
        let Some(mut child) = self.child.take() else { return };
        if let Some(pid) = child.id() {
            send(pid, signal);
        }
        if tokio::time::timeout(Duration::from_secs(20), child.wait()).await.is_err() {
            let _ = child.kill().await;
            panic!("postgres on port {} did not stop within 20 s of SIG{signal}", self.port);
        }
    }

    /// Whether the server accepts a connection within a second.
    pub async fn is_up(&self) -> bool {
        match self.connect("postgres").await {
            Ok(conn) => {
                conn.close().await.ok();
                true
            }
            Err(_) => false,
        }
    }

    async fn connect(&self, database: &str) -> Result<PgConnection, sqlx::Error> {
        let url = self.url(database);
        tokio::time::timeout(Duration::from_secs(1), PgConnection::connect(&url))
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Some(pid) = child.id()
        {
            send(pid, "QUIT");
            for _ in 0..100 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Env {
    /// An environment on a database of the test's own (e.g. a [`PrivatePostgres`]) rather than a
    /// fresh one on the shared server.
    pub fn on_database(database_url: &str) -> Self {
        Self {
            database_url: database_url.to_owned(),
            redis_prefix: format!("runq_test_{}", uuid::Uuid::now_v7().simple()),
            admin_key: format!("rq_admin_{}", uuid::Uuid::now_v7().simple()),
            extra: Vec::new(),
        }
    }
}

fn send(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
}

fn current_uid() -> u32 {
    id(&["-u"])
}

/// The `postgres` OS user's uid and gid (Debian's `postgresql` package creates it).
fn postgres_user() -> (u32, u32) {
    (id(&["-u", "postgres"]), id(&["-g", "postgres"]))
}

fn id(args: &[&str]) -> u32 {
    let out = std::process::Command::new("id").args(args).output().expect("run id");
    assert!(out.status.success(), "id {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("id prints a number")
}
