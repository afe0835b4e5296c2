//! A throwaway PostgreSQL cluster of its own, for tests that need server
//! settings the stack's server does not have (WAL archiving, replication
//! roles, base backups, point-in-time recovery): `initdb` into a temporary
//! directory, started on a free loopback port with the settings given,
//! stopped (and removed) on drop.
//!
//! The programs come from `PG_BINDIR` (the stack sets it). PostgreSQL
//! refuses to run as root, so as root the server runs as the `postgres`
//! user (`tests/stack/stack.sh install` creates it), as the stack's does.
//!
//! ```no_run
//! # async fn f() {
//! use backstop_tests::cluster::Cluster;
//! let cluster = Cluster::start(&Cluster::ARCHIVING).expect("a cluster");
//! cluster.sql("CREATE ROLE r LOGIN REPLICATION");
//! let client = backstop_postgres::pg::connect(&cluster.url("postgres")).await;
//! # }
//! ```

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The superuser `initdb` creates (trust authentication on loopback).
pub const SUPERUSER: &str = "backstop";

/// A running cluster; stopped and removed when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
}

impl Cluster {
    /// What WAL archiving needs (archived nowhere: `archive_command` is
    /// `/bin/true`), for base backups and WAL tests.
    pub const ARCHIVING: [(&'static str, &'static str); 3] = [
        ("wal_level", "replica"),
        ("archive_mode", "on"),
        ("archive_command", "'/bin/true'"),
    ];

    /// `initdb`, then starts the server with `settings` (postgresql.conf
    /// lines `name = value`, values as the file wants them: quoted strings)
    /// on a free loopback port.
    pub fn start(settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let bindir = PathBuf::from(
            std::env::var("PG_BINDIR").context("PG_BINDIR (the stack sets it) is not set")?,
        );
        let dir = tempfile::Builder::new().prefix("bs-cluster-").tempdir()?;
        let mut cluster = Self {
            dir,
            bindir,
            port: 0,
        };
        if as_root() {
            chown_postgres(cluster.dir.path())?;
        }
        cluster.run_as_server(&cluster.program("initdb"), |c| {
            c.arg("-D")
                .arg(cluster.data_dir())
                .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync"])
                .arg("--locale=C");
        })?;
        cluster.port = free_port()?;
        let mut conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n",
            cluster.port,
            cluster.dir.path().display()
        );
        for (name, value) in settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        let config = cluster.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str(&conf);
        std::fs::write(&config, text)?;
        let log = cluster.dir.path().join("server.log");
        cluster.run_as_server(&cluster.program("pg_ctl"), |c| {
            c.arg("-D")
                .arg(cluster.data_dir())
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "start"]);
        })?;
        Ok(cluster)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the PostgreSQL programs are.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// A program of `PG_BINDIR`.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// `postgres://<user>@127.0.0.1:<port>/<database>`.
    pub fn url_as(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }

    /// [`Self::url_as`] the superuser.
    pub fn url(&self, database: &str) -> String {
        self.url_as(SUPERUSER, database)
    }

    /// Runs `sql` with `psql` as the superuser in `postgres` (stops at the
    /// first error) and returns its unaligned, tuples-only output, trimmed.
    pub fn sql(&self, sql: &str) -> String {
        let mut psql = Command::new(self.program("psql"));
        psql.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url("postgres"))
            .args(["-c", sql]);
        checked(&mut psql)
            .map(|out| out.trim().to_string())
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The cluster's `system_identifier`, as PostgreSQL prints it (unsigned).
    pub fn system_identifier(&self) -> u64 {
        let signed: i64 = self
            .sql("SELECT system_identifier FROM pg_control_system()")
            .parse()
            .expect("a number");
        signed as u64
    }

    /// Runs a server program (as `postgres` when root); its failure
    /// quotes the server's log.
    fn run_as_server(
        &self,
        program: &Path,
        args: impl FnOnce(&mut Command),
    ) -> anyhow::Result<String> {
        let mut cmd = if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        args(&mut cmd);
        checked(&mut cmd).with_context(|| format!("the server's log:\n{}", self.log()))
    }
}

/// Runs `cmd` and returns its stdout; a failure says what ran and quotes
/// its output.
pub fn checked(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let _ = self.run_as_server(&self.program("pg_ctl"), |c| {
            c.arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "-t", "30", "stop"]);
        });
    }
}

fn as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Gives `dir` to the `postgres` user (the server's data lives inside).
fn chown_postgres(dir: &Path) -> anyhow::Result<()> {
    let out = Command::new("chown")
        .arg("postgres")
        .arg(dir)
        .output()
        .context("run chown")?;
    if !out.status.success() {
        bail!(
            "chown postgres {} failed: {} (as root, the tests need the postgres user: tests/stack/stack.sh install)",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A loopback port nothing listens on just now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
