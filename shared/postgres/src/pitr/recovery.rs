//! The recovery settings of the restored data directory, and (with
//! `--start`) the server started and watched until it reached the target.
//!
//! `restore_command` runs `backstop wal-fetch --config <pgdata>/backstop-wal-fetch.json %f %p`;
//! that file (0600) holds key *settings* (`file:` / `gcpkms:` paths),
//! never key text. `archive_mode` is turned off unless `--archive`: the
//! restored cluster keeps the source's system identifier and would archive
//! into the source's WAL series.
//!
//! The server is watched through its log and SQL: a FATAL or PANIC of the
//! startup process (a `restore_command` that exited 126, a target that was
//! never reached) stops the wait and is quoted; the target counts as
//! reached only when `pg_is_in_recovery()` is false (promote) or
//! `pg_get_wal_replay_pause_state()` is `paused` (pause), not when the
//! first connection succeeds.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::config::{PitrConfig, RecoveryAction, RecoveryTarget};
use super::error::PitrError;
use super::select::BaseCandidate;
use super::timeline::Plan;

/// `wal-fetch`'s settings, in the data directory.
pub(super) const FETCH_CONFIG: &str = "backstop-wal-fetch.json";
/// The server's log while Backstop watches recovery (`pg_ctl -l`).
pub(super) const RECOVERY_LOG: &str = "backstop-recovery.log";

/// Log lines that are about a client connecting too early, not recovery.
const CONNECTION_NOISE: [&str; 3] = [
    "the database system is starting up",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
];

pub(super) fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `postgresql.conf` string syntax.
fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A word for `sh -c` (restore_command runs through the shell).
fn sh_word(value: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:@,=".contains(c);
    if value.chars().all(safe) {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// `wal-fetch`'s settings: key settings, never key text.
fn fetch_config(cfg: &PitrConfig, base: &BaseCandidate) -> serde_json::Value {
    serde_json::json!({
        "namespace": cfg.namespace.as_str(),
        "gcs_bucket": cfg.gcs_bucket,
        "s3_bucket": cfg.s3_bucket,
        "backup_key": cfg.backup_key_setting,
        "signing_public_key": cfg.signing_key_setting,
        "system_identifier": base.system_identifier.to_string(),
    })
}

/// The lines appended to `postgresql.auto.conf`.
pub(super) fn settings_text(
    cfg: &PitrConfig,
    base: &BaseCandidate,
    plan: &Plan,
    exe: &Path,
) -> String {
    let config = cfg.pgdata.join(FETCH_CONFIG);
    let command = format!(
        "{} wal-fetch --config {} %f %p",
        sh_word(&exe.display().to_string()),
        sh_word(&config.display().to_string())
    );
    let mut lines = vec![
        format!(
            "# backstop restore-cluster {}: recovery of {} to {}",
            chrono::Utc::now().to_rfc3339(),
            base.id,
            cfg.target.describe()
        ),
        format!("restore_command = {}", conf_quote(&command)),
    ];
    match &cfg.target {
        RecoveryTarget::Time(t) => lines.push(format!(
            "recovery_target_time = '{}'",
            t.format("%Y-%m-%d %H:%M:%S%.6f+00")
        )),
        RecoveryTarget::Lsn(l) => lines.push(format!("recovery_target_lsn = '{l}'")),
        RecoveryTarget::Xid(x) => lines.push(format!("recovery_target_xid = '{x}'")),
        RecoveryTarget::Latest => {}
    }
    lines.push(format!("recovery_target_timeline = '{}'", plan.timeline));
    if cfg.target != RecoveryTarget::Latest {
        lines.push(format!(
            "recovery_target_action = '{}'",
            cfg.action.as_str()
        ));
    }
    if !cfg.archive {
        lines.push("archive_mode = 'off'  # a restored cluster keeps the source's system identifier: it must not archive into the source's WAL".into());
    }
    if let Some(port) = cfg.start_port {
        lines.push(format!("port = {port}"));
    }
    lines.join("\n") + "\n"
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Writes `recovery.signal`, `wal-fetch`'s file and the recovery settings,
/// then gives the directory to the `postgres` user when running as root.
pub(super) fn write_settings(
    cfg: &PitrConfig,
    base: &BaseCandidate,
    plan: &Plan,
) -> Result<(), PitrError> {
    let pgdata = &cfg.pgdata;
    let fail = |reason: String| PitrError::Settings {
        pgdata: pgdata.display().to_string(),
        reason,
    };
    let exe = std::env::current_exe().map_err(|e| {
        fail(format!(
            "cannot tell this program's path for restore_command: {e}"
        ))
    })?;
    let json = serde_json::to_vec_pretty(&fetch_config(cfg, base)).expect("serializes");
    write_new(&pgdata.join(FETCH_CONFIG), &json)
        .map_err(|e| fail(format!("{FETCH_CONFIG}: {e}")))?;
    write_new(&pgdata.join("recovery.signal"), b"")
        .map_err(|e| fail(format!("recovery.signal: {e}")))?;
    let auto = pgdata.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&auto)
        .map_err(|e| fail(format!("postgresql.auto.conf: {e}")))?;
    f.write_all(settings_text(cfg, base, plan, &exe).as_bytes())
        .map_err(|e| fail(format!("postgresql.auto.conf: {e}")))?;
    if is_root() {
        chown_postgres(pgdata).map_err(fail)?;
    }
    Ok(())
}

fn chown_postgres(dir: &Path) -> Result<(), String> {
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run chown: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "chown -R postgres:postgres {} failed: {}; as root the data directory must belong to the postgres user",
        dir.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// A PostgreSQL server program, run as `postgres` when root.
fn server_program(cfg: &PitrConfig, name: &str) -> Command {
    let program = cfg.tools.program(name);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// What the server log says about the recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct LogFacts {
    /// `restored log file "..." from archive` lines.
    pub restored: u64,
    /// `recovery stopping before/after ...`.
    pub stopping: Option<String>,
    /// `redo done at ...`.
    pub redo_done: Option<String>,
    /// `selected new timeline ID: N`.
    pub new_timeline: Option<u32>,
    /// The first FATAL or PANIC about recovery (not a client's early connection).
    pub fatal: Option<String>,
}

/// The message after `LOG:  ` (or the line).
fn message(line: &str) -> String {
    line.split_once(":  ")
        .map_or(line, |(_, m)| m)
        .trim()
        .to_string()
}

pub(super) fn read_log(text: &str) -> LogFacts {
    let mut f = LogFacts::default();
    for line in text.lines() {
        if line.contains("restored log file \"") {
            f.restored += 1;
        } else if line.contains("recovery stopping ") {
            f.stopping = Some(message(line));
        } else if line.contains("redo done at ") {
            f.redo_done = Some(message(line));
        } else if let Some((_, n)) = line.split_once("selected new timeline ID: ") {
            f.new_timeline = n.trim().parse().ok();
        } else if (line.contains("FATAL:") || line.contains("PANIC:"))
            && f.fatal.is_none()
            && !CONNECTION_NOISE.iter().any(|n| line.contains(n))
        {
            f.fatal = Some(line.trim().to_string());
        }
    }
    f
}

pub(super) fn log_path(cfg: &PitrConfig) -> PathBuf {
    cfg.pgdata.join(RECOVERY_LOG)
}

/// `pg_ctl start` without waiting (recovery may take long); the wait is
/// [`wait_for_target`]'s.
pub(super) fn start(cfg: &PitrConfig) -> Result<(), PitrError> {
    let log = log_path(cfg);
    let fail = |reason: String| PitrError::Recovery {
        pgdata: cfg.pgdata.display().to_string(),
        reason,
        log: log.display().to_string(),
    };
    let out = server_program(cfg, "pg_ctl")
        .arg("-D")
        .arg(&cfg.pgdata)
        .arg("-l")
        .arg(&log)
        .args(["-W", "start"])
        .output()
        .map_err(|e| {
            fail(format!(
                "cannot run pg_ctl ({e}); set --pg-bindir or PG_BINDIR"
            ))
        })?;
    if !out.status.success() {
        return Err(fail(format!(
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Stops the server at once (after a failed recovery).
pub(super) fn stop(cfg: &PitrConfig) {
    let _ = server_program(cfg, "pg_ctl")
        .arg("-D")
        .arg(&cfg.pgdata)
        .args(["-m", "immediate", "-w", "stop"])
        .output();
}

pub(super) fn url(cfg: &PitrConfig) -> String {
    format!(
        "postgres://{}@127.0.0.1:{}/postgres",
        cfg.user,
        cfg.start_port.unwrap_or(5432)
    )
}

/// Whether the server answers that it reached the target.
async fn reached(cfg: &PitrConfig) -> Option<bool> {
    let url = url(cfg);
    let connect = crate::pg::connect(&url);
    let client = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .ok()?
        .ok()?;
    let sql = match cfg.action {
        RecoveryAction::Promote => "SELECT NOT pg_is_in_recovery()",
        RecoveryAction::Pause => {
            "SELECT pg_is_in_recovery() AND pg_get_wal_replay_pause_state() = 'paused'"
        }
    };
    let row = client.query_one(sql, &[]).await.ok()?;
    row.try_get::<_, bool>(0).ok()
}

/// Polls until the server reached the target; a FATAL in the log, a server
/// that stopped, or the timeout fail the recovery (the server is stopped).
pub(super) async fn wait_for_target(cfg: &PitrConfig) -> Result<LogFacts, PitrError> {
    let log = log_path(cfg);
    let fail = |reason: String| PitrError::Recovery {
        pgdata: cfg.pgdata.display().to_string(),
        reason,
        log: log.display().to_string(),
    };
    let clock = Instant::now();
    loop {
        let facts = read_log(&std::fs::read_to_string(&log).unwrap_or_default());
        if let Some(fatal) = &facts.fatal {
            stop(cfg);
            return Err(fail(format!(
                "the server reported {fatal:?} (the server was stopped; the target was not reached)"
            )));
        }
        if reached(cfg).await == Some(true) {
            return Ok(read_log(&std::fs::read_to_string(&log).unwrap_or_default()));
        }
        if clock.elapsed() > Duration::from_secs(10) && !cfg.pgdata.join("postmaster.pid").exists()
        {
            return Err(fail(
                "the server is not running (it stopped during recovery)".into(),
            ));
        }
        if clock.elapsed() > cfg.recovery_timeout {
            stop(cfg);
            return Err(fail(format!(
                "the target was not reached within {}s (the server was stopped); raise --recovery-timeout for a long archive",
                cfg.recovery_timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_tells_what_recovery_did() {
        let log = "\
2026-01-01 10:00:00 UTC [1] FATAL:  the database system is starting up
2026-01-01 10:00:00 UTC [1] LOG:  restored log file \"000000010000000000000002\" from archive
2026-01-01 10:00:01 UTC [1] LOG:  restored log file \"000000010000000000000003\" from archive
2026-01-01 10:00:01 UTC [1] LOG:  recovery stopping before commit of transaction 742, time 2026-01-01 09:59:00.1+00
2026-01-01 10:00:01 UTC [1] LOG:  redo done at 0/3000060
2026-01-01 10:00:01 UTC [1] LOG:  selected new timeline ID: 2
";
        let f = read_log(log);
        assert_eq!(f.restored, 2);
        assert!(
            f.stopping
                .unwrap()
                .starts_with("recovery stopping before commit of transaction 742")
        );
        assert_eq!(f.new_timeline, Some(2));
        assert_eq!(
            f.fatal, None,
            "a client's early connection is no recovery failure"
        );
        let failed = read_log(
            "x FATAL:  could not restore file \"00000001000000000000000A\" from archive: child process exited with exit code 126\n",
        );
        assert!(failed.fatal.unwrap().contains("exit code 126"));
    }

    #[test]
    fn restore_command_words_are_quoted_for_the_shell_and_the_file() {
        assert_eq!(sh_word("/usr/bin/backstop"), "/usr/bin/backstop");
        assert_eq!(
            sh_word("/opt/my tools/backstop"),
            "'/opt/my tools/backstop'"
        );
        assert_eq!(conf_quote("it's"), "'it''s'");
    }
}
