//! The WAL archive: PostgreSQL's WAL file names, positions, and where each
//! archived file lives.
//!
//! ```text
//! <namespace>/.wal/<system id>/<timeline>/<file>.<nonce>.pgp   the encrypted file
//! <namespace>/.wal/<system id>/<timeline>/<file>.json          its signed manifest (commit marker)
//! ```
//! `<system id>` is the cluster's `system_identifier` (decimal), so WAL of
//! two clusters never mixes even in one namespace; `<timeline>` is 8
//! upper-case hex digits, as in the file names, so each timeline's files
//! sort by position. `<file>` is the name PostgreSQL gave it: a segment
//! (`000000010000000A000000FF`), a partial segment (`….partial`), a
//! backup history file (`….00000028.backup`) or a timeline history file
//! (`00000002.history`). The manifest's name is fixed by the file's, so a
//! second, different file of the same name can never be committed (writes
//! are create-only); the data object's name carries a random nonce, so a
//! push killed between the two writes leaves an uncommitted object that
//! blocks nothing.
//!
//! `.wal` cannot be a database's key segment (those never start with `.`),
//! so WAL never mixes with dumps under one namespace.

use std::fmt;
use std::str::FromStr;

use crate::naming::{NameError, Namespace};

mod manifest;
pub use manifest::{WAL_MANIFEST_KIND, WAL_MANIFEST_VERSION, WalManifest, WalManifestError};

/// The key segment under a namespace that holds its WAL.
pub const WAL_SEGMENT: &str = ".wal";
/// PostgreSQL's default WAL segment size (16 MiB); `initdb --wal-segsize`
/// can choose another power of two from 1 MiB to 1 GiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// A WAL position (an LSN), as PostgreSQL prints it: `X/Y`, both halves
/// hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The number of the segment holding this position.
    pub fn segment(self, segment_size: u64) -> u64 {
        self.0 / segment_size
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl FromStr for Lsn {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let bad = || NameError::NotAWalFile(format!("{s:?} is not an LSN (expected X/Y in hex)"));
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// What kind of file PostgreSQL archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalFileKind {
    /// A whole segment.
    Segment,
    /// The last, incomplete segment of a timeline a promotion ended.
    Partial,
    /// A backup history file (`<segment>.<offset>.backup`).
    BackupHistory,
    /// A timeline history file (`<timeline>.history`).
    TimelineHistory,
}

/// A WAL file name PostgreSQL archives, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalFile {
    name: String,
    kind: WalFileKind,
    timeline: u32,
    /// The segment's (log, seg) halves; (0, 0) for a timeline history file.
    log: u32,
    seg: u32,
}

fn hex8(s: &str) -> Option<u32> {
    (s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
    .then(|| u32::from_str_radix(s, 16).ok())
    .flatten()
}

impl WalFile {
    /// Parses a file name as PostgreSQL writes it (upper-case hex only).
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let bad = || {
            NameError::NotAWalFile(format!(
                "{name:?} is not the name of a WAL file PostgreSQL archives (a segment like 000000010000000000000001, a .partial, .backup or .history file)"
            ))
        };
        if let Some(tli) = name.strip_suffix(".history") {
            let timeline = hex8(tli).ok_or_else(bad)?;
            return Ok(Self {
                name: name.into(),
                kind: WalFileKind::TimelineHistory,
                timeline,
                log: 0,
                seg: 0,
            });
        }
        let (segment, kind) = if let Some(s) = name.strip_suffix(".partial") {
            (s, WalFileKind::Partial)
        } else if let Some(s) = name.strip_suffix(".backup") {
            let (segment, offset) = s.split_once('.').ok_or_else(bad)?;
            hex8(offset).ok_or_else(bad)?;
            (segment, WalFileKind::BackupHistory)
        } else {
            (name, WalFileKind::Segment)
        };
        if segment.len() != 24 {
            return Err(bad());
        }
        let (timeline, log, seg) = (
            hex8(&segment[..8]).ok_or_else(bad)?,
            hex8(&segment[8..16]).ok_or_else(bad)?,
            hex8(&segment[16..]).ok_or_else(bad)?,
        );
        if timeline == 0 {
            return Err(bad());
        }
        Ok(Self {
            name: name.into(),
            kind,
            timeline,
            log,
            seg,
        })
    }

    /// The segment file of `timeline` holding segment number `segno`.
    pub fn segment(timeline: u32, segno: u64, segment_size: u64) -> Self {
        let per_log = 0x1_0000_0000 / segment_size;
        let (log, seg) = ((segno / per_log) as u32, (segno % per_log) as u32);
        Self {
            name: format!("{timeline:08X}{log:08X}{seg:08X}"),
            kind: WalFileKind::Segment,
            timeline,
            log,
            seg,
        }
    }

    /// The file name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind.
    pub fn kind(&self) -> WalFileKind {
        self.kind
    }

    /// Its timeline (the history file's own timeline for `.history`).
    pub fn timeline(&self) -> u32 {
        self.timeline
    }

    /// The segment number it belongs to (`None` for a timeline history file).
    pub fn segment_number(&self, segment_size: u64) -> Option<u64> {
        (self.kind != WalFileKind::TimelineHistory)
            .then(|| u64::from(self.log) * (0x1_0000_0000 / segment_size) + u64::from(self.seg))
    }

    /// Whether this is a whole segment (what recovery replays).
    pub fn is_segment(&self) -> bool {
        self.kind == WalFileKind::Segment
    }
}

impl fmt::Display for WalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// One archived WAL file's place: namespace, cluster and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalKey {
    /// The namespace it was archived into.
    pub namespace: Namespace,
    /// The cluster's `system_identifier`.
    pub system_identifier: u64,
    /// The file.
    pub file: WalFile,
}

/// Which of an archived file's two objects a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalObject {
    /// `<file>.json`, the signed manifest.
    Manifest,
    /// `<file>.<nonce>.pgp`, an encrypted copy (committed only if the
    /// manifest names it).
    Data {
        /// The object's random suffix.
        nonce: String,
    },
}

/// `<namespace>/.wal/`: everything archived into `namespace`.
pub fn namespace_prefix(namespace: &Namespace) -> String {
    format!("{namespace}/{WAL_SEGMENT}/")
}

/// `<namespace>/.wal/<system id>/`: one cluster's archive.
pub fn cluster_prefix(namespace: &Namespace, system_identifier: u64) -> String {
    format!("{}{system_identifier}/", namespace_prefix(namespace))
}

impl WalKey {
    /// The key of `file` archived from cluster `system_identifier`.
    pub fn new(namespace: Namespace, system_identifier: u64, file: WalFile) -> Self {
        Self {
            namespace,
            system_identifier,
            file,
        }
    }

    /// `<namespace>/.wal/<system id>/<timeline>/`.
    pub fn dir(&self) -> String {
        format!(
            "{}{:08X}/",
            cluster_prefix(&self.namespace, self.system_identifier),
            self.file.timeline
        )
    }

    /// The signed manifest's key, `<dir><file>.json`.
    pub fn manifest_key(&self) -> String {
        format!("{}{}.json", self.dir(), self.file)
    }

    /// The name (relative to [`Self::dir`]) of an encrypted copy.
    pub fn data_name(&self, nonce: &str) -> String {
        format!("{}.{nonce}.pgp", self.file)
    }

    /// A fresh random nonce for a data object.
    pub fn new_nonce() -> String {
        format!("{:08x}", rand::random::<u32>())
    }

    /// Parses a key under `<namespace>/.wal/`; `None` for any other key.
    pub fn parse_key(key: &str) -> Option<(WalKey, WalObject)> {
        let mut parts = key.splitn(5, '/');
        let (ns, wal, sysid, tli, file) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if wal != WAL_SEGMENT || file.contains('/') {
            return None;
        }
        let namespace = Namespace::new(ns).ok()?;
        let system_identifier: u64 = sysid.parse().ok()?;
        if system_identifier.to_string() != sysid {
            return None;
        }
        let (name, object) = if let Some(name) = file.strip_suffix(".json") {
            (name, WalObject::Manifest)
        } else {
            let (name, nonce) = file.strip_suffix(".pgp")?.rsplit_once('.')?;
            if nonce.is_empty() || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            (
                name,
                WalObject::Data {
                    nonce: nonce.to_string(),
                },
            )
        };
        let file = WalFile::parse(name).ok()?;
        if format!("{:08X}", file.timeline) != tli {
            return None;
        }
        Some((
            WalKey {
                namespace,
                system_identifier,
                file,
            },
            object,
        ))
    }
}

impl fmt::Display for WalKey {
    /// `<namespace>/.wal/<system id>/<timeline>/<file>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dir(), self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_print_and_parse_as_postgresql_does() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn(0x0200_0028).to_string(), "0/2000028");
        assert_eq!(l.segment(DEFAULT_SEGMENT_SIZE), 0x16_B3);
        for bad in ["", "1", "x/1", "1/", "1/2/3", "100000000/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn wal_file_names_parse_by_kind() {
        let s = WalFile::parse("000000010000000A000000FF").unwrap();
        assert_eq!((s.kind(), s.timeline()), (WalFileKind::Segment, 1));
        assert_eq!(
            s.segment_number(DEFAULT_SEGMENT_SIZE),
            Some(0xA * 256 + 0xFF)
        );
        assert_eq!(
            WalFile::segment(1, 0xA * 256 + 0xFF, DEFAULT_SEGMENT_SIZE),
            s
        );
        let p = WalFile::parse("000000020000000000000005.partial").unwrap();
        assert_eq!((p.kind(), p.timeline()), (WalFileKind::Partial, 2));
        let b = WalFile::parse("000000010000000000000002.00000028.backup").unwrap();
        assert_eq!(b.kind(), WalFileKind::BackupHistory);
        assert_eq!(b.segment_number(DEFAULT_SEGMENT_SIZE), Some(2));
        let h = WalFile::parse("0000000A.history").unwrap();
        assert_eq!((h.kind(), h.timeline()), (WalFileKind::TimelineHistory, 10));
        for bad in [
            "",
            "00000001000000000000000",
            "000000010000000000000001x",
            "000000010000000000000001.backup",
            "00000000000000000000000001",
            "000000000000000000000001",
            "0000000100000000000000ab",
            "0000000a.history",
            "../000000010000000000000001",
            "archive_status",
        ] {
            assert!(WalFile::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_keep_clusters_and_timelines_apart_and_round_trip() {
        let ns = Namespace::new("production").unwrap();
        let file = WalFile::parse("000000020000000000000005").unwrap();
        let key = WalKey::new(ns.clone(), 7_312_345_678_901_234_567, file.clone());
        assert_eq!(
            key.manifest_key(),
            "production/.wal/7312345678901234567/00000002/000000020000000000000005.json"
        );
        assert_eq!(
            WalKey::parse_key(&key.manifest_key()),
            Some((key.clone(), WalObject::Manifest))
        );
        let data = format!("{}{}", key.dir(), key.data_name("0a1b2c3d"));
        assert_eq!(
            WalKey::parse_key(&data),
            Some((
                key.clone(),
                WalObject::Data {
                    nonce: "0a1b2c3d".into()
                }
            ))
        );
        let other = WalKey::new(ns.clone(), 1, file);
        assert_ne!(other.dir(), key.dir());
        for bad in [
            "production/.wal/7312345678901234567/00000001/000000020000000000000005.json",
            "production/.wal/07312345678901234567/00000002/000000020000000000000005.json",
            "production/app/20231114T221320Z-00000a/manifest.json",
            "production/.wal/1/00000002/000000020000000000000005.pgp",
            "production/.wal/1/00000002/x/000000020000000000000005.json",
        ] {
            assert_eq!(WalKey::parse_key(bad), None, "{bad}");
        }
    }
}
