//! The WAL archive as recovery will read it: the committed files of one
//! cluster in each cloud (`<ns>/.wal/<id>/`, their sealed manifests
//! listed), the timeline chain from the base backup's timeline to the
//! target timeline (its `.history` file fetched, authenticated and
//! decrypted), and every segment from the base backup's `start_wal` to the
//! target checked to be there, in at least one cloud, before anything is
//! written.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use backstop_core::crypto::{BackupSecretKey, VerifyingKey, chunks, decrypt_stream_sized};
use backstop_core::manifest::MAX_MANIFEST_BYTES;
use backstop_core::naming::Namespace;
use backstop_core::store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use backstop_core::wal::{Lsn, WalFile, WalKey, WalManifest, WalObject, cluster_prefix};

use super::config::{PitrConfig, RecoveryTarget, TimelineChoice};
use super::error::PitrError;
use super::select::BaseCandidate;

/// History files larger than this are not PostgreSQL's.
const MAX_HISTORY_BYTES: u64 = 1 << 20;

/// One cloud's committed WAL files of a cluster: name → its manifest's
/// listing entry.
pub(super) struct CloudWal<'a> {
    pub cloud: &'static str,
    pub store: &'a dyn ObjectStore,
    pub files: BTreeMap<String, ObjectMeta>,
}

/// The archive of one cluster in every cloud that answered.
pub(super) struct Archive<'a> {
    pub namespace: Namespace,
    pub system_identifier: u64,
    pub clouds: Vec<CloudWal<'a>>,
    /// Clouds that did not answer, with why.
    pub unavailable: Vec<String>,
}

impl<'a> Archive<'a> {
    /// Lists the cluster's sealed manifests in each cloud.
    pub async fn list(
        stores: &[(&'static str, &'a dyn ObjectStore)],
        namespace: &Namespace,
        system_identifier: u64,
    ) -> Result<Self, PitrError> {
        let prefix = cluster_prefix(namespace, system_identifier);
        let mut archive = Archive {
            namespace: namespace.clone(),
            system_identifier,
            clouds: Vec::new(),
            unavailable: Vec::new(),
        };
        let mut last_error = None;
        for &(cloud, store) in stores {
            match store.list_all(&prefix).await {
                Ok(listing) => {
                    let files = listing
                        .into_iter()
                        .filter_map(|m| match WalKey::parse_key(&m.key) {
                            Some((k, WalObject::Manifest))
                                if k.system_identifier == system_identifier =>
                            {
                                Some((k.file.name().to_string(), m))
                            }
                            _ => None,
                        })
                        .collect();
                    archive.clouds.push(CloudWal {
                        cloud,
                        store,
                        files,
                    });
                }
                Err(e) => {
                    archive
                        .unavailable
                        .push(format!("{cloud} ({}): {e}", store.url()));
                    last_error = Some(e);
                }
            }
        }
        match (archive.clouds.is_empty(), last_error) {
            (true, Some(e)) => Err(PitrError::Store(e)),
            _ => Ok(archive),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.clouds.iter().any(|c| c.files.contains_key(name))
    }

    /// Where a missing file is missing, for the error.
    fn missing_in(&self) -> String {
        let names: Vec<String> = self
            .clouds
            .iter()
            .map(|c| format!("{} ({})", c.cloud, c.store.url()))
            .collect();
        let all = if names.len() > 1 {
            "missing in both "
        } else {
            "missing in "
        };
        let mut text = format!("{all}{}", names.join(" and "));
        if !self.unavailable.is_empty() {
            text.push_str(&format!("; not checked: {}", self.unavailable.join("; ")));
        }
        text
    }

    /// Reads one archived file whole (a small one: a `.history`), its
    /// manifest opened first and every chunk authenticated before it is
    /// decrypted, its plaintext SHA-256 checked.
    async fn read_small(
        &self,
        name: &str,
        keys: &[VerifyingKey],
        secret: &BackupSecretKey,
    ) -> Result<Vec<u8>, String> {
        let file = WalFile::parse(name).map_err(|e| e.to_string())?;
        let key = WalKey::new(self.namespace.clone(), self.system_identifier, file);
        let mut errors = Vec::new();
        for c in self.clouds.iter().filter(|c| c.files.contains_key(name)) {
            match read_from(c.store, &key, keys, secret).await {
                Ok(bytes) => return Ok(bytes),
                Err(e) => errors.push(format!("{}: {e}", c.cloud)),
            }
        }
        Err(format!(
            "{name} cannot be read from the archive: {}",
            errors.join("; ")
        ))
    }
}

async fn read_from(
    store: &dyn ObjectStore,
    key: &WalKey,
    keys: &[VerifyingKey],
    secret: &BackupSecretKey,
) -> Result<Vec<u8>, String> {
    let sealed = store
        .get_bytes(&key.manifest_key(), MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    let m = WalManifest::open(&sealed, keys, key).map_err(|e| e.to_string())?;
    if m.plaintext_size > MAX_HISTORY_BYTES {
        return Err(format!(
            "{} is {} bytes, too large for a history file",
            key.file, m.plaintext_size
        ));
    }
    let body = store
        .read(&m.data_key(key))
        .await
        .map_err(|e| e.to_string())?;
    let gated = chunks::authenticated(body, &m.ciphertext).map_err(|e| e.to_string())?;
    let mut plain = decrypt_stream_sized(gated, secret, Some(m.plaintext_size));
    let mut out = Vec::new();
    while let Some(chunk) = plain.next().await {
        out.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    if hex::encode(Sha256::digest(&out)) != m.plaintext_sha256 {
        return Err(format!("{} does not match its signed SHA-256", key.file));
    }
    Ok(out)
}

/// One timeline of the chain: from `begin` (where its parent ended) to
/// `end` (where it was left; `None` for the target timeline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Span {
    pub timeline: u32,
    pub begin: Lsn,
    pub end: Option<Lsn>,
}

/// Parses a timeline history file (`<parent tli>\t<switch lsn>\t<reason>`
/// lines) of `timeline` into its chain, oldest first.
pub(super) fn parse_history(text: &str, timeline: u32) -> Result<Vec<Span>, String> {
    let mut spans: Vec<Span> = Vec::new();
    let mut begin = Lsn(0);
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut fields = line.split_whitespace();
        let (Some(tli), Some(lsn)) = (fields.next(), fields.next()) else {
            return Err(format!("history line {line:?} has no switch point"));
        };
        let tli: u32 = tli
            .parse()
            .map_err(|_| format!("history line {line:?}: bad timeline"))?;
        let end: Lsn = lsn
            .parse()
            .map_err(|_| format!("history line {line:?}: bad LSN"))?;
        if spans.last().is_some_and(|s| s.timeline >= tli) || tli >= timeline || end < begin {
            return Err(format!("history line {line:?} is out of order"));
        }
        spans.push(Span {
            timeline: tli,
            begin,
            end: Some(end),
        });
        begin = end;
    }
    spans.push(Span {
        timeline,
        begin,
        end: None,
    });
    Ok(spans)
}

/// What recovery will read: the chain and the segments to the target.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// The target timeline.
    pub timeline: u32,
    /// Segments checked present, from `start_wal` on.
    pub segments: u64,
    /// The last segment the target needs (its name).
    pub last_needed: String,
    /// Where that segment begins: `--latest` must replay at least to it.
    pub last_needed_start: Lsn,
}

/// The segment file recovery reads for segment number `segno`: the newest
/// timeline of the chain that had begun by then.
fn file_for(chain: &[Span], segno: u64, size: u64) -> WalFile {
    let tli = chain
        .iter()
        .rev()
        .find(|s| s.begin.segment(size) <= segno)
        .map_or(chain[0].timeline, |s| s.timeline);
    WalFile::segment(tli, segno, size)
}

/// The target timeline: the one asked for, or the newest one whose history
/// file follows the backup's timeline without a hole.
fn target_timeline(cfg: &PitrConfig, base: &BaseCandidate, archive: &Archive<'_>) -> u32 {
    match cfg.timeline {
        TimelineChoice::Id(n) => n,
        TimelineChoice::Latest => {
            let mut tli = base.info.timeline;
            while archive.has(&format!("{:08X}.history", tli + 1)) {
                tli += 1;
            }
            tli
        }
    }
}

/// The chain from the base backup's timeline to the target timeline.
async fn chain_for(
    cfg: &PitrConfig,
    base: &BaseCandidate,
    archive: &Archive<'_>,
    tli: u32,
) -> Result<Vec<Span>, PitrError> {
    let backup_tli = base.info.timeline;
    let fail = |reason: String| PitrError::Timeline {
        timeline: tli,
        backup_id: base.id.to_string(),
        backup_timeline: backup_tli,
        reason,
    };
    if tli == backup_tli {
        return Ok(vec![Span {
            timeline: tli,
            begin: Lsn(0),
            end: None,
        }]);
    }
    if tli < backup_tli {
        return Err(fail("the backup was taken on a later timeline".into()));
    }
    let name = format!("{tli:08X}.history");
    if !archive.has(&name) {
        return Err(fail(format!("{name} is not in the archive")));
    }
    let bytes = archive
        .read_small(&name, &cfg.signing_keys, &cfg.secret_key)
        .await
        .map_err(&fail)?;
    let chain = parse_history(&String::from_utf8_lossy(&bytes), tli).map_err(&fail)?;
    match chain.iter().find(|s| s.timeline == backup_tli) {
        None => Err(fail(format!(
            "timeline {tli} does not descend from timeline {backup_tli}"
        ))),
        Some(s) if s.end.is_some_and(|end| end <= base.start_lsn()) => Err(fail(format!(
            "timeline {tli} left timeline {backup_tli} at {} , before the backup started ({})",
            s.end.unwrap_or_default(),
            base.info.start_lsn
        ))),
        Some(_) => Ok(chain
            .into_iter()
            .filter(|s| s.timeline >= backup_tli)
            .collect()),
    }
}

/// The newest archived segment on the chain, with its listing entry.
fn newest_segment(archive: &Archive<'_>, chain: &[Span], size: u64) -> Option<(u64, ObjectMeta)> {
    let mut best: Option<(u64, ObjectMeta)> = None;
    for c in &archive.clouds {
        for (name, meta) in &c.files {
            let Ok(f) = WalFile::parse(name) else {
                continue;
            };
            let Some(segno) = f.segment_number(size).filter(|_| f.is_segment()) else {
                continue;
            };
            if file_for(chain, segno, size).name() == name
                && best.as_ref().is_none_or(|(b, _)| segno > *b)
            {
                best = Some((segno, meta.clone()));
            }
        }
    }
    best
}

/// When the newest segment was archived: its signed `archived_at`.
async fn archived_at(
    archive: &Archive<'_>,
    meta: &ObjectMeta,
    keys: &[VerifyingKey],
) -> Option<DateTime<Utc>> {
    let (key, _) = WalKey::parse_key(&meta.key)?;
    for c in &archive.clouds {
        if let Ok(bytes) = c.store.get_bytes(&meta.key, MAX_MANIFEST_BYTES).await
            && let Ok(m) = WalManifest::open(&bytes, keys, &key)
        {
            return Some(m.archived_at);
        }
    }
    meta.updated
}

/// The last segment number the target needs, or why the archive does not
/// reach it.
async fn last_needed(
    cfg: &PitrConfig,
    archive: &Archive<'_>,
    chain: &[Span],
    size: u64,
    start: u64,
) -> Result<u64, PitrError> {
    let Some((newest, meta)) = newest_segment(archive, chain, size) else {
        return Ok(start);
    };
    let beyond = |archived: Option<DateTime<Utc>>| PitrError::BeyondArchive {
        target: cfg.target.describe(),
        newest: file_for(chain, newest, size).name().to_string(),
        archived_at: archived.map_or("an unknown time".into(), |t| t.to_rfc3339()),
    };
    match &cfg.target {
        RecoveryTarget::Lsn(l) if l.segment(size) > newest => {
            Err(beyond(archived_at(archive, &meta, &cfg.signing_keys).await))
        }
        RecoveryTarget::Lsn(l) => Ok(l.segment(size).max(start)),
        RecoveryTarget::Time(t) => {
            let at = archived_at(archive, &meta, &cfg.signing_keys).await;
            if at.is_some_and(|a| a < *t) {
                return Err(beyond(at));
            }
            // The first segment archived at or after the target holds
            // everything written before it.
            Ok((start..=newest)
                .find(|s| segment_time(archive, chain, *s, size).is_some_and(|u| u >= *t))
                .unwrap_or(newest))
        }
        RecoveryTarget::Xid(_) | RecoveryTarget::Latest => Ok(newest.max(start)),
    }
}

fn segment_time(
    archive: &Archive<'_>,
    chain: &[Span],
    segno: u64,
    size: u64,
) -> Option<DateTime<Utc>> {
    let name = file_for(chain, segno, size);
    archive
        .clouds
        .iter()
        .filter_map(|c| c.files.get(name.name()))
        .filter_map(|m| m.updated)
        .min()
}

/// Checks that recovery from `base` can reach the target: the timeline
/// chain, then every segment from `start_wal` to the target in at least one
/// cloud.
pub(super) async fn plan(
    cfg: &PitrConfig,
    base: &BaseCandidate,
    archive: &Archive<'_>,
) -> Result<Plan, PitrError> {
    let size = base.info.wal_segment_size;
    let tli = target_timeline(cfg, base, archive);
    let chain = chain_for(cfg, base, archive, tli).await?;
    let start = base.start_lsn().segment(size);
    let last = last_needed(cfg, archive, &chain, size, start).await?;
    for segno in start..=last {
        let file = file_for(&chain, segno, size);
        if !archive.has(file.name()) {
            return Err(PitrError::WalGap {
                segment: file.name().to_string(),
                timeline: file.timeline(),
                clouds: archive.missing_in(),
                backup_id: base.id.to_string(),
                start_wal: base.info.start_wal.clone(),
                target: cfg.target.describe(),
            });
        }
        for c in archive
            .clouds
            .iter()
            .filter(|c| !c.files.contains_key(file.name()))
        {
            tracing::warn!(event = "pitr_wal_one_cloud", cloud = c.cloud, file = %file, "WAL segment missing in one cloud; wal-fetch reads the other");
        }
    }
    Ok(Plan {
        timeline: tli,
        last_needed: file_for(&chain, last, size).name().to_string(),
        last_needed_start: Lsn(last * size),
        segments: last - start + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_files_make_a_chain_and_segments_follow_it() {
        let chain = parse_history("1\t0/5000160\tno recovery target specified\n\n", 2).unwrap();
        assert_eq!(
            chain,
            vec![
                Span {
                    timeline: 1,
                    begin: Lsn(0),
                    end: Some(Lsn(0x5000160))
                },
                Span {
                    timeline: 2,
                    begin: Lsn(0x5000160),
                    end: None
                },
            ]
        );
        let size = 16 << 20;
        assert_eq!(file_for(&chain, 4, size).name(), "000000010000000000000004");
        assert_eq!(file_for(&chain, 5, size).name(), "000000020000000000000005");
        assert_eq!(file_for(&chain, 6, size).name(), "000000020000000000000006");
        assert!(
            parse_history("2\t0/1\tx\n1\t0/2\ty\n", 3).is_err(),
            "out of order"
        );
        assert!(parse_history("1\tnot-an-lsn\n", 2).is_err());
        assert!(
            parse_history("3\t0/1\n", 2).is_err(),
            "a parent after its child"
        );
    }
}
