//! The point-in-time recovery drill: after the server reached the target,
//! check that it got there and no further, and record the outcome for the
//! audit as a drill record of the base backup (create-only, one per run,
//! with a `pitr` field: see `backstop_core::drill::PitrDrillRecord`).

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use backstop_core::drill::{DrillRecord, PitrDrill, PitrDrillRecord, new_run_id};
use backstop_core::store::{ObjectStoreExt, PutOptions};
use backstop_core::wal::Lsn;

use super::config::{PitrConfig, RecoveryTarget};
use super::recovery::{LogFacts, url};
use super::select::{BaseCandidate, ordered};
use super::timeline::Plan;
use crate::restore::Clouds;

const DRILL_WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the recovered server says it replayed last.
async fn last_replayed(cfg: &PitrConfig) -> Result<(Option<DateTime<Utc>>, Option<Lsn>), String> {
    let client = crate::pg::connect(&url(cfg))
        .await
        .map_err(|e| e.to_string())?;
    let row = client
        .query_one("SELECT extract(epoch FROM pg_last_xact_replay_timestamp())::float8, pg_last_wal_replay_lsn()::text", &[])
        .await
        .map_err(|e| format!("reading the last replayed position failed: {e}"))?;
    let at = row
        .get::<_, Option<f64>>(0)
        .and_then(|s| DateTime::from_timestamp_micros((s * 1e6).round() as i64));
    let lsn = row.get::<_, Option<String>>(1).and_then(|l| l.parse().ok());
    Ok((at, lsn))
}

/// Checks that recovery reached the target and went no further; `Err`
/// says why the drill failed.
fn judge(
    target: &RecoveryTarget,
    facts: &LogFacts,
    at: Option<DateTime<Utc>>,
    lsn: Option<Lsn>,
) -> Result<(), String> {
    let stopping = facts.stopping.as_deref();
    match target {
        RecoveryTarget::Time(t) => {
            if let Some(a) = at.filter(|a| a > t) {
                return Err(format!("the last replayed commit is at {}, after the target {}", a.to_rfc3339(), t.to_rfc3339()));
            }
            match stopping {
                Some(s) if s.contains("before") || s.contains("after") => Ok(()),
                _ => Err("the server log has no \"recovery stopping before/after\" line: recovery did not stop at the target time".into()),
            }
        }
        RecoveryTarget::Lsn(l) => match (lsn, stopping) {
            (Some(r), Some(_)) if r >= *l => Ok(()),
            (r, _) => Err(format!("the last replayed WAL position is {}, before the target {l} (or the log has no recovery stopping line)", r.map_or("unknown".into(), |r| r.to_string()))),
        },
        RecoveryTarget::Xid(x) => match stopping {
            Some(s) if s.contains(&format!("transaction {x}")) => Ok(()),
            other => Err(format!("recovery did not stop at transaction {x} (the log says {other:?})")),
        },
        RecoveryTarget::Latest => match &facts.redo_done {
            Some(_) => Ok(()),
            None => Err("the server log has no \"redo done\" line: recovery did not replay the archive to its end".into()),
        },
    }
}

/// `--latest` must have replayed into the newest archived segment: a
/// recovery that ended early (a segment it could not fetch) also says
/// `redo done`.
fn replayed_through(target: &RecoveryTarget, lsn: Option<Lsn>, plan: &Plan) -> Result<(), String> {
    match (target, lsn) {
        (RecoveryTarget::Latest, Some(l)) if l >= plan.last_needed_start => Ok(()),
        (RecoveryTarget::Latest, l) => Err(format!(
            "replay ended at {}, before the newest archived segment {}: recovery stopped early (a WAL file it could not fetch); the restored cluster is missing data",
            l.map_or("an unknown position".into(), |l| l.to_string()),
            plan.last_needed
        )),
        _ => Ok(()),
    }
}

/// Runs the checks: the drill's result and the PITR part of its record.
pub(super) async fn check(
    cfg: &PitrConfig,
    plan: &Plan,
    facts: &LogFacts,
) -> (PitrDrill, Result<(), String>) {
    let timeline = plan.timeline;
    let (at, lsn, verdict) = match last_replayed(cfg).await {
        Ok((at, lsn)) => {
            let verdict = judge(&cfg.target, facts, at, lsn)
                .and_then(|()| replayed_through(&cfg.target, lsn, plan));
            (at, lsn, verdict)
        }
        Err(e) => (None, None, Err(e)),
    };
    let pitr = PitrDrill {
        target: cfg.target.describe(),
        timeline,
        stopped: facts.stopping.clone().or_else(|| facts.redo_done.clone()),
        last_replayed_commit: at.map(|a| a.to_rfc3339()),
        last_replayed_lsn: lsn.map(|l| l.to_string()),
        wal_segments_fetched: facts.restored,
    };
    (pitr, verdict)
}

/// The record of this recovery of `base`.
pub(super) fn record(
    cfg: &PitrConfig,
    base: &BaseCandidate,
    started_at: DateTime<Utc>,
    pitr: PitrDrill,
    verdict: &Result<(), String>,
) -> PitrDrillRecord {
    PitrDrillRecord {
        drill: DrillRecord {
            backup_id: base.id.to_string(),
            run_id: new_run_id(started_at),
            namespace: base.id.namespace.clone(),
            target_database: cfg.pgdata.display().to_string(),
            started_at,
            finished_at: Utc::now(),
            success: verdict.is_ok(),
            tables_checked: 0,
            mismatches: Vec::new(),
            error: verdict.clone().err(),
            restored_from: Some(base.cloud.to_string()),
        },
        pitr,
    }
}

/// Writes the record create-only: to the primary cloud (where the audit
/// reads it), else to the cloud the backup came from. Returns where it
/// landed, or why it did not.
pub(super) async fn write(
    clouds: &Clouds<'_>,
    used: &str,
    record: &PitrDrillRecord,
) -> Result<String, String> {
    let key = record.drill.key().map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    for (i, (cloud, store)) in ordered(clouds).into_iter().enumerate() {
        if i > 0 && cloud != used {
            continue;
        }
        let opts = PutOptions::create().with_content_type("application/json");
        let put = store.put_bytes(&key, Bytes::from(record.to_bytes()), opts);
        match tokio::time::timeout(DRILL_WRITE_TIMEOUT, put).await {
            Ok(Ok(_)) => {
                let at = format!("{}/{key}", store.url());
                tracing::info!(event = "drill_recorded", cloud, at = %at, success = record.drill.success, "PITR drill record written");
                return Ok(at);
            }
            Ok(Err(e)) => errors.push(format!("{cloud}: {e}")),
            Err(_) => errors.push(format!(
                "{cloud}: no answer within {}s",
                DRILL_WRITE_TIMEOUT.as_secs()
            )),
        }
    }
    Err(if errors.is_empty() {
        "no cloud to write it to".into()
    } else {
        errors.join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drill_passes_only_at_the_target() {
        let t: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
        let stopped = LogFacts {
            stopping: Some(
                "recovery stopping before commit of transaction 750, time 2026-01-01 10:00:01+00"
                    .into(),
            ),
            ..LogFacts::default()
        };
        let before = Some(t - chrono::TimeDelta::seconds(1));
        assert!(judge(&RecoveryTarget::Time(t), &stopped, before, None).is_ok());
        let after = Some(t + chrono::TimeDelta::seconds(1));
        assert!(
            judge(&RecoveryTarget::Time(t), &stopped, after, None)
                .unwrap_err()
                .contains("after the target")
        );
        assert!(
            judge(&RecoveryTarget::Time(t), &LogFacts::default(), before, None).is_err(),
            "no stop line"
        );
        assert!(judge(&RecoveryTarget::Xid(750), &stopped, None, None).is_ok());
        assert!(judge(&RecoveryTarget::Xid(751), &stopped, None, None).is_err());
        let l = Lsn(0x3000060);
        assert!(
            judge(
                &RecoveryTarget::Lsn(l),
                &stopped,
                None,
                Some(Lsn(0x3000100))
            )
            .is_ok()
        );
        assert!(
            judge(
                &RecoveryTarget::Lsn(l),
                &stopped,
                None,
                Some(Lsn(0x3000000))
            )
            .is_err()
        );
        assert!(judge(&RecoveryTarget::Latest, &LogFacts::default(), None, None).is_err());
    }
}
