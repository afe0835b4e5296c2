//! The three members of a base backup's tar that the job reads as they
//! stream past: `backup_label` (where the backup starts), the server's
//! `backup_manifest` (its SHA-256, its own checksum, its WAL range) and
//! `global/pg_control` (the cluster's system identifier). Memory stays
//! bounded: the label is small, and of the manifest (about 150 bytes per
//! file of the cluster) only its last [`MANIFEST_TAIL`] bytes are kept,
//! where the WAL range and the checksum line are.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use backstop_core::wal::Lsn;

/// `backup_label` is a few hundred bytes; anything over this is not one.
const LABEL_MAX: usize = 64 * 1024;
/// How much of the end of `backup_manifest` is kept: its `WAL-Ranges`
/// (about 80 bytes a timeline) and the `Manifest-Checksum` line.
pub(crate) const MANIFEST_TAIL: usize = 64 * 1024;

const LABEL: &str = "backup_label";
const MANIFEST: &str = "backup_manifest";
const CONTROL: &str = "global/pg_control";

/// What the tar said about the backup, once it was read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Regular files in the tar (the label and the manifest included).
    pub files: u64,
    pub label: BackupLabel,
    /// SHA-256 (lower-case hex) of `backup_manifest`.
    pub manifest_sha256: String,
    /// The manifest's `WAL-Ranges`, in order (one, unless the timeline
    /// changed during a backup of a standby).
    pub wal_ranges: Vec<WalRange>,
    /// The first 8 bytes of `global/pg_control`: the system identifier, in
    /// the server's byte order.
    pub control_system_identifier: [u8; 8],
}

impl Facts {
    /// Whether `global/pg_control` names the cluster `system_identifier`.
    pub fn is_cluster(&self, system_identifier: u64) -> bool {
        let bytes = self.control_system_identifier;
        u64::from_le_bytes(bytes) == system_identifier
            || u64::from_be_bytes(bytes) == system_identifier
    }
}

/// The parts of `backup_label` the manifest records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackupLabel {
    /// `START WAL LOCATION`.
    pub start_lsn: Lsn,
    /// `START TIMELINE`.
    pub timeline: u32,
    /// `START TIME`, as the server wrote it.
    pub start_time: String,
}

/// One entry of the manifest's `WAL-Ranges`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct WalRange {
    #[serde(rename = "Timeline")]
    pub timeline: u32,
    #[serde(rename = "Start-LSN", deserialize_with = "lsn")]
    pub start: Lsn,
    #[serde(rename = "End-LSN", deserialize_with = "lsn")]
    pub end: Lsn,
}

fn lsn<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// The member being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Label,
    Manifest,
    Control,
}

/// Collects the three members from the tar observer's calls.
#[derive(Debug, Default)]
pub(crate) struct Members {
    reading: Option<Reading>,
    label: Option<Vec<u8>>,
    manifest: Option<ManifestReader>,
    control: Option<Vec<u8>>,
}

impl Members {
    /// A regular file `name` begins.
    pub fn begin(&mut self, name: &str) {
        self.reading = match name {
            LABEL => Some(Reading::Label),
            MANIFEST => Some(Reading::Manifest),
            CONTROL => Some(Reading::Control),
            _ => None,
        };
        match self.reading {
            Some(Reading::Label) => self.label = Some(Vec::new()),
            Some(Reading::Manifest) => self.manifest = Some(ManifestReader::default()),
            Some(Reading::Control) => self.control = Some(Vec::new()),
            None => {}
        }
    }

    /// The next bytes of the current member.
    pub fn data(&mut self, bytes: &[u8]) {
        match self.reading {
            Some(Reading::Label) => keep(self.label.as_mut(), bytes, LABEL_MAX + 1),
            Some(Reading::Control) => keep(self.control.as_mut(), bytes, 8),
            Some(Reading::Manifest) => {
                if let Some(m) = self.manifest.as_mut() {
                    m.data(bytes);
                }
            }
            None => {}
        }
    }

    /// The current member is complete.
    pub fn end(&mut self) -> Result<(), String> {
        if self.reading.take() == Some(Reading::Label)
            && self.label.as_ref().is_some_and(|l| l.len() > LABEL_MAX)
        {
            return Err(format!("{LABEL} is larger than {LABEL_MAX} bytes"));
        }
        Ok(())
    }

    /// The tar has ended: every member was there and reads.
    pub fn finish(self, files: u64) -> Result<Facts, String> {
        let absent = |name: &str| {
            format!(
                "it has no {name} member (is the server PostgreSQL 13 or newer, and was the backup manifest left on?)"
            )
        };
        let label = self.label.ok_or_else(|| absent(LABEL))?;
        let label = parse_label(&String::from_utf8_lossy(&label))?;
        let manifest = self.manifest.ok_or_else(|| absent(MANIFEST))?.finish()?;
        let control = self.control.ok_or_else(|| absent(CONTROL))?;
        let control_system_identifier: [u8; 8] =
            control
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("{CONTROL} is shorter than 8 bytes"))?;
        Ok(Facts {
            files,
            label,
            manifest_sha256: manifest.0,
            wal_ranges: manifest.1,
            control_system_identifier,
        })
    }
}

/// Appends `bytes` to `buf`, up to `max` bytes in all.
fn keep(buf: Option<&mut Vec<u8>>, bytes: &[u8], max: usize) {
    if let Some(buf) = buf {
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..room.min(bytes.len())]);
    }
}

/// `backup_label`'s `START WAL LOCATION`, `START TIMELINE` and `START TIME`.
fn parse_label(text: &str) -> Result<BackupLabel, String> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
            .map(str::trim)
            .ok_or_else(|| format!("{LABEL} has no {key} line"))
    };
    let location = field("START WAL LOCATION")?;
    let start_lsn = location
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("{LABEL}: START WAL LOCATION: {e}"))?;
    let timeline = field("START TIMELINE")?
        .parse()
        .map_err(|_| format!("{LABEL}: START TIMELINE is not a number"))?;
    Ok(BackupLabel {
        start_lsn,
        timeline,
        start_time: field("START TIME")?.to_string(),
    })
}

/// Hashes `backup_manifest` as it streams past and keeps its end.
///
/// The manifest's own checksum (`Manifest-Checksum`, on its last line) is
/// the SHA-256 of everything up to and including the newline before that
/// line, as `pg_verifybackup` computes it: bytes that leave the kept tail
/// go into `checked`, and the tail's part before the last line at the end.
#[derive(Debug, Default)]
struct ManifestReader {
    whole: Sha256,
    checked: Sha256,
    tail: Vec<u8>,
}

impl ManifestReader {
    fn data(&mut self, bytes: &[u8]) {
        self.whole.update(bytes);
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * MANIFEST_TAIL {
            let cut = self.tail.len() - MANIFEST_TAIL;
            self.checked.update(&self.tail[..cut]);
            self.tail.drain(..cut);
        }
    }

    /// The manifest's SHA-256 and its WAL ranges, once its own checksum
    /// matched.
    fn finish(mut self) -> Result<(String, Vec<WalRange>), String> {
        let newlines: Vec<usize> = self
            .tail
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        let [.., before_last, _] = newlines[..] else {
            return Err(format!("{MANIFEST} does not end in a checksum line"));
        };
        let (body, last) = self.tail.split_at(before_last + 1);
        self.checked.update(body);
        #[derive(Deserialize)]
        struct Checksum {
            #[serde(rename = "Manifest-Checksum")]
            checksum: String,
        }
        let line = format!("{{{}", String::from_utf8_lossy(last));
        let stated: Checksum = serde_json::from_str(&line)
            .map_err(|e| format!("{MANIFEST}'s last line is not its checksum: {e}"))?;
        let computed = hex::encode(self.checked.finalize());
        if !stated.checksum.eq_ignore_ascii_case(&computed) {
            return Err(format!(
                "{MANIFEST}'s checksum is {}, its contents have {computed}: it is damaged",
                stated.checksum
            ));
        }
        let ranges = wal_ranges(&String::from_utf8_lossy(body))?;
        Ok((hex::encode(self.whole.finalize()), ranges))
    }
}

/// The `"WAL-Ranges": [...]` array of the manifest's end.
fn wal_ranges(tail: &str) -> Result<Vec<WalRange>, String> {
    let missing = || {
        format!(
            "no WAL-Ranges in the last {MANIFEST_TAIL} bytes of {MANIFEST} (too many timelines?)"
        )
    };
    let at = tail.rfind("\"WAL-Ranges\"").ok_or_else(missing)?;
    let rest = &tail[at..];
    let open = rest.find('[').ok_or_else(missing)?;
    let close = rest[open..].find(']').ok_or_else(missing)? + open;
    let ranges: Vec<WalRange> = serde_json::from_str(&rest[open..=close])
        .map_err(|e| format!("{MANIFEST}'s WAL-Ranges do not read: {e}"))?;
    if ranges.is_empty() {
        return Err(format!("{MANIFEST}'s WAL-Ranges are empty"));
    }
    Ok(ranges)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A manifest as PostgreSQL writes it, with a correct checksum.
    pub(crate) fn server_manifest(files: usize, ranges: &str) -> Vec<u8> {
        let mut text = String::from("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n");
        for i in 0..files {
            let comma = if i + 1 < files { "," } else { "" };
            text.push_str(&format!(
                "{{ \"Path\": \"base/1/{i}\", \"Size\": 8192, \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"536f950b\" }}{comma}\n"
            ));
        }
        text.push_str(&format!("],\n\"WAL-Ranges\": [\n{ranges}\n],\n"));
        let sum = hex::encode(Sha256::digest(text.as_bytes()));
        text.push_str(&format!("\"Manifest-Checksum\": \"{sum}\"}}\n"));
        text.into_bytes()
    }

    fn read(bytes: &[u8], piece: usize) -> Result<(String, Vec<WalRange>), String> {
        let mut m = ManifestReader::default();
        for chunk in bytes.chunks(piece) {
            m.data(chunk);
        }
        m.finish()
    }

    #[test]
    fn manifests_of_any_size_are_checked_with_bounded_memory() {
        let ranges =
            "{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }";
        // 5,000 files: about 600 KB, ten times the kept tail.
        for files in [0, 3, 5000] {
            let bytes = server_manifest(files, ranges);
            for piece in [1, 7, 4096, 1 << 20] {
                if files == 5000 && piece == 1 {
                    continue;
                }
                let (sha, found) = read(&bytes, piece).unwrap();
                assert_eq!(sha, hex::encode(Sha256::digest(&bytes)));
                assert_eq!(
                    found,
                    vec![WalRange {
                        timeline: 1,
                        start: "0/2000028".parse().unwrap(),
                        end: "0/2000100".parse().unwrap(),
                    }]
                );
            }
        }
    }

    #[test]
    fn a_damaged_manifest_is_refused() {
        let ranges =
            "{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }";
        let mut bytes = server_manifest(10, ranges);
        bytes[100] ^= 1;
        let err = read(&bytes, 64).unwrap_err();
        assert!(err.contains("damaged"), "{err}");
        let err = read(b"{}\n", 64).unwrap_err();
        assert!(err.contains("checksum line"), "{err}");
        let err = read(&server_manifest(1, ""), 64).unwrap_err();
        assert!(err.contains("WAL-Ranges"), "{err}");
    }

    #[test]
    fn the_label_gives_the_start() {
        let text = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-12-01 18:34:44 UTC\nLABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n";
        assert_eq!(
            parse_label(text).unwrap(),
            BackupLabel {
                start_lsn: Lsn(0x2000028),
                timeline: 1,
                start_time: "2026-12-01 18:34:44 UTC".into(),
            }
        );
        let err = parse_label("START WAL LOCATION: 0/1\n").unwrap_err();
        assert!(err.contains("START TIMELINE"), "{err}");
    }
}
