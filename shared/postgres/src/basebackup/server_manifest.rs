//! The server's `backup_manifest`, read as it streams past: its SHA-256,
//! its own checksum, its WAL range and how many files it lists. Memory
//! stays bounded: of the manifest (about 150 bytes per file of the
//! cluster) only its last [`MANIFEST_TAIL`] bytes are kept, where the WAL
//! range and the checksum line are.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use backstop_core::wal::Lsn;

/// How much of the end of `backup_manifest` is kept: its `WAL-Ranges`
/// (about 80 bytes a timeline) and the `Manifest-Checksum` line.
pub(crate) const MANIFEST_TAIL: usize = 64 * 1024;

pub(crate) const MANIFEST: &str = "backup_manifest";

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

/// The manifest's own checksum (`Manifest-Checksum`, on its last line) is
/// the SHA-256 of everything up to and including the newline before that
/// line, as `pg_verifybackup` computes it: bytes that leave the kept tail
/// go into `checked`, and the tail's part before the last line at the end.
///
/// The files it lists are counted as lines that open with a `Path` or an
/// `Encoded-Path` (PostgreSQL writes one file a line).
#[derive(Debug, Default)]
pub(crate) struct ManifestReader {
    whole: Sha256,
    checked: Sha256,
    tail: Vec<u8>,
    /// The start of the current line, up to [`FILE_LINE`]'s longest.
    line: Vec<u8>,
    files: u64,
}

/// How a file's line opens, one way or the other.
const FILE_LINE: [&[u8]; 2] = [b"{ \"Path\": ", b"{ \"Encoded-Path\": "];

/// What the manifest says, once it was read whole and its checksum matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerManifest {
    /// SHA-256 (lower-case hex) of the whole manifest.
    pub sha256: String,
    pub wal_ranges: Vec<WalRange>,
    /// The files it lists (not itself).
    pub files: u64,
}

impl ManifestReader {
    pub(crate) fn data(&mut self, bytes: &[u8]) {
        self.whole.update(bytes);
        self.count_files(bytes);
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * MANIFEST_TAIL {
            let cut = self.tail.len() - MANIFEST_TAIL;
            self.checked.update(&self.tail[..cut]);
            self.tail.drain(..cut);
        }
    }

    fn count_files(&mut self, bytes: &[u8]) {
        let longest = FILE_LINE[1].len();
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            let room = longest.saturating_sub(self.line.len()).min(line.len());
            let before = self.line.len();
            self.line.extend_from_slice(&line[..room]);
            let opened = |p: &[u8]| {
                before < p.len() && self.line.len() >= p.len() && self.line.starts_with(p)
            };
            if FILE_LINE.iter().any(|p| opened(p)) {
                self.files += 1;
            }
            if line.ends_with(b"\n") {
                self.line.clear();
            }
        }
    }

    /// What the manifest says, once its own checksum matched.
    pub(crate) fn finish(self) -> Result<ServerManifest, String> {
        let files = self.files;
        let (sha256, wal_ranges) = self.checked_tail()?;
        Ok(ServerManifest {
            sha256,
            wal_ranges,
            files,
        })
    }

    fn checked_tail(mut self) -> Result<(String, Vec<WalRange>), String> {
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
        read_all(bytes, piece).map(|m| (m.sha256, m.wal_ranges))
    }

    fn read_all(bytes: &[u8], piece: usize) -> Result<ServerManifest, String> {
        let mut m = ManifestReader::default();
        for chunk in bytes.chunks(piece) {
            m.data(chunk);
        }
        m.finish()
    }

    #[test]
    fn the_files_it_lists_are_counted_in_any_pieces() {
        let ranges =
            "{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }";
        let mut bytes = server_manifest(40, ranges);
        // An encoded path, as PostgreSQL writes a name that is not UTF-8.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let text = text.replacen(
            "{ \"Path\": \"base/1/7\"",
            "{ \"Encoded-Path\": \"62617365\"",
            1,
        );
        let body = &text[..text.rfind("\"Manifest-Checksum\"").unwrap()];
        let sum = hex::encode(Sha256::digest(body.as_bytes()));
        bytes = format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n").into_bytes();
        for piece in [1, 3, 9, 17, 4096] {
            assert_eq!(
                read_all(&bytes, piece).unwrap().files,
                40,
                "pieces of {piece}"
            );
        }
        assert_eq!(read_all(&server_manifest(0, ranges), 5).unwrap().files, 0);
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
}
