//! The catalog for people: `list`'s table, `show`'s text, and the JSON.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Utc};

use super::{
    Action, BackupKind, BackupRow, CloudState, DrillResult, DrillState, Listing, Parity, Retention,
    Shown, WalRange,
};
use crate::naming::cluster_of;

/// `1.5 MiB`: binary units, one decimal.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn minute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

fn database_label(database: &str) -> String {
    match cluster_of(database) {
        Some(id) => format!("cluster {id}"),
        None => database.to_string(),
    }
}

fn retention_text(r: &Retention) -> String {
    let action = match r.action {
        Action::Keep => "keep",
        Action::Delete => "delete",
        Action::Hold => "hold",
    };
    format!("{action} ({})", r.reasons.join(", "))
}

fn present(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "?",
    }
}

/// The S3 column: present, or why not.
fn replica_text(row: &BackupRow) -> &'static str {
    match row.parity {
        Parity::InSync | Parity::OnlyInReplica => "yes",
        Parity::Mismatch => "DIFFERS",
        Parity::Missing => "MISSING",
        Parity::Pending => "pending",
        Parity::NotReplicated if row.in_s3.is_none() => "-",
        Parity::NotReplicated => "no (not replicated)",
        Parity::Unknown => present(row.in_s3),
    }
}

fn drill_text(d: Option<&DrillState>) -> String {
    let Some(d) = d else {
        return "never".into();
    };
    let result = match d.result {
        DrillResult::Passed => "passed",
        DrillResult::Failed => "FAILED",
        DrillResult::Unreadable => "unreadable record",
    };
    match d.finished_at {
        Some(t) => format!("{} {result}", minute(t)),
        None => result.to_string(),
    }
}

fn verified_text(row: &BackupRow) -> String {
    if row.verified {
        "yes".into()
    } else {
        format!("no ({})", row.status)
    }
}

fn size_text(row: &BackupRow) -> String {
    row.size.map_or("-".into(), format_bytes)
}

fn rows_text(row: &BackupRow) -> String {
    match (row.kind, row.tables, row.rows) {
        (BackupKind::BaseBackup, _, _) => "-".into(),
        (_, Some(t), Some(r)) => format!("{t}/{r}"),
        _ => "-".into(),
    }
}

/// Left-aligned columns two spaces apart, the last one unpadded.
fn columns(out: &mut String, rows: &[Vec<String>]) {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == n {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// The header of `list`'s table (also what a test matches).
pub(super) const HEADER: [&str; 11] = [
    "NAMESPACE",
    "DATABASE",
    "BACKUP",
    "TAKEN (UTC)",
    "SIZE",
    "TABLES/ROWS",
    "VERIFIED",
    "GCS",
    "S3",
    "LAST DRILL",
    "RETENTION",
];

const WAL_HEADER: [&str; 9] = [
    "NAMESPACE",
    "CLUSTER",
    "TIMELINES",
    "FIRST",
    "LAST",
    "FILES",
    "NEWEST ARCHIVED",
    "GCS/S3",
    "RETENTION",
];

fn backup_cells(row: &BackupRow) -> Vec<String> {
    vec![
        row.namespace.clone(),
        database_label(&row.database),
        row.id.rsplit('/').next().unwrap_or_default().to_string(),
        minute(row.taken_at),
        size_text(row),
        rows_text(row),
        verified_text(row),
        present(row.in_gcs).into(),
        replica_text(row).into(),
        drill_text(row.last_drill.as_ref()),
        retention_text(&row.retention),
    ]
}

fn wal_cells(w: &WalRange) -> Vec<String> {
    let count = |n: Option<usize>| n.map_or("?".into(), |n| n.to_string());
    let timelines: Vec<String> = w.timelines.iter().map(u32::to_string).collect();
    let retention = match &w.keep_from {
        Some(from) => format!("keep from {from}, delete {}", w.to_delete),
        None => format!("keep all, delete {}", w.to_delete),
    };
    vec![
        w.namespace.clone(),
        w.system_identifier.clone(),
        timelines.join(","),
        w.first.clone().unwrap_or("-".into()),
        w.last.clone().unwrap_or("-".into()),
        format!("{} ({} verified)", w.files, w.verified),
        w.newest_archived_at.map_or("-".into(), minute),
        format!("{}/{}", count(w.in_gcs), count(w.in_s3)),
        retention,
    ]
}

fn unlisted(out: &mut String, clouds: &[CloudState]) {
    for c in clouds.iter().filter(|c| !c.listed) {
        let _ = writeln!(
            out,
            "{} ({}) was not listed: {}; its column shows ?",
            c.store,
            c.cloud,
            c.error.as_deref().unwrap_or("unknown error")
        );
    }
}

impl Listing {
    /// The listing as pretty-printed JSON (the `--json` output).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("listing serializes")
    }

    /// The terminal table: backups, then (when there is any) archived WAL.
    pub fn table(&self) -> String {
        let mut out = String::new();
        unlisted(&mut out, &self.clouds);
        if self.backups.is_empty() {
            out.push_str("no backups match\n");
        } else {
            let mut rows = vec![HEADER.iter().map(|h| h.to_string()).collect()];
            rows.extend(self.backups.iter().map(backup_cells));
            columns(&mut out, &rows);
        }
        if !self.wal.is_empty() {
            out.push_str("\nWAL archive\n");
            let mut rows = vec![WAL_HEADER.iter().map(|h| h.to_string()).collect()];
            rows.extend(self.wal.iter().map(wal_cells));
            columns(&mut out, &rows);
        }
        out
    }
}

impl Shown {
    /// As pretty-printed JSON (the `--json` output).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("show serializes")
    }
}

fn field(f: &mut fmt::Formatter<'_>, name: &str, value: impl fmt::Display) -> fmt::Result {
    writeln!(f, "{name:<12} {value}")
}

fn drill_line(d: &DrillState) -> String {
    let mut line = drill_text(Some(d));
    if let Some(db) = &d.target_database {
        let _ = write!(line, " into {db}");
    }
    if let Some(cloud) = &d.restored_from {
        let _ = write!(line, " from {cloud}");
    }
    if let Some(n) = d.tables_checked {
        let _ = write!(line, ", {n} tables checked, {} differed", d.mismatches);
    }
    if let Some(e) = &d.error {
        let _ = write!(line, ": {e}");
    }
    let _ = write!(line, " ({})", d.record);
    line
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.backup;
        let mut tmp = String::new();
        unlisted(&mut tmp, &self.clouds);
        f.write_str(&tmp)?;
        field(f, "backup", &b.id)?;
        field(f, "database", database_label(&b.database))?;
        field(f, "taken", minute(b.taken_at))?;
        if let Some(t) = b.finished_at {
            field(f, "finished", minute(t))?;
        }
        let plain = b.plaintext_size.map_or(String::new(), |p| {
            format!(", {} before compression", format_bytes(p))
        });
        field(f, "size", format!("{}{plain}", size_text(b)))?;
        if let (Some(t), Some(r)) = (b.tables, b.rows) {
            field(f, "tables", format!("{t} ({r} rows)"))?;
        }
        let digests = b.digests.as_ref().map_or(String::new(), |d| {
            format!(
                ", sha256 {}, crc32c {}, {} chunk digests",
                d.sha256, d.crc32c, d.chunks
            )
        });
        field(f, "verified", format!("{}{digests}", verified_text(b)))?;
        if let Some(m) = &self.manifest {
            field(f, "signer", &m.signer)?;
            field(f, "server", &m.server_version)?;
        }
        for c in &b.copies {
            let detail = c
                .detail
                .as_deref()
                .map_or(String::new(), |d| format!(": {d}"));
            let retention = retention_text(&c.retention);
            field(f, &c.cloud, format!("{}{detail}; {retention}", c.status))?;
        }
        field(f, "replica", replica_text(b))?;
        let rule = b.retention.rule.as_deref().unwrap_or("no rule");
        field(
            f,
            "retention",
            format!("{} under rule {rule:?}", retention_text(&b.retention)),
        )?;
        if self.drills.is_empty() {
            field(f, "drills", "never")?;
        }
        for (i, d) in self.drills.iter().enumerate() {
            field(f, if i == 0 { "drills" } else { "" }, drill_line(d))?;
        }
        if !self.tables.is_empty() {
            writeln!(f, "tables:")?;
            for (table, rows) in &self.tables {
                writeln!(f, "  {table}  {rows}")?;
            }
        }
        Ok(())
    }
}
