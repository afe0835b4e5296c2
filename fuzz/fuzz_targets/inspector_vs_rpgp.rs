//! Differential fuzzing of our packet inspector against rpgp's packet
//! parser: the same bytes go to `PacketInspector` (our streaming structure
//! check) and to `pgp::packet::PacketParser`; the target fails when one
//! accepts what the other rejects.
//!
//! The two do not have the same job, so "accepts" is compared where they
//! overlap, and the intended differences are these:
//!
//! - Policy. We accept only what a backup is: v3 PKESKs followed by one
//!   SEIPD v1 and nothing else. Literal, compressed, SKESK, tag-9, v2 SEIPD,
//!   v6 PKESK, marker or any other packet is a refusal by design, however
//!   well-formed; rpgp parses them. Such verdicts are not compared.
//! - PKESK contents. We read a PKESK's version, key id and algorithm only;
//!   rpgp parses the algorithm-specific fields (MPIs, the ECDH point). A
//!   PKESK rpgp cannot parse but we pass is fine: decryption refuses it.
//! - Bounds. We refuse a PKESK over `MAX_PKESK_BODY` bytes, more than
//!   `MAX_PKESKS` of them, and a SEIPD too short to hold the CFB prefix and
//!   the MDC; rpgp accepts them as packets (and would fail at decryption).
//! - RFC 4880 §4.2.2.4: only data packets may have partial (or old-format
//!   indeterminate) lengths. We refuse a PKESK framed that way.
//! - A truncated trailing header: rpgp's iterator takes an end of input in
//!   the middle of a packet header for the end of the packets; we report
//!   truncation. So rpgp "accepts" only if it consumed every byte.
#![no_main]

use std::io::{BufRead, Read};

use backstop_core::crypto::{CryptoError, PacketInspector};
use libfuzzer_sys::fuzz_target;
use pgp::packet::{Packet, PacketParser};

/// A reader that counts what rpgp consumed.
struct Counting<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl BufRead for Counting<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        Ok(&self.data[self.pos..])
    }
    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.data.len());
    }
}

impl std::fmt::Debug for Counting<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({}/{})", self.pos, self.data.len())
    }
}

/// One packet as rpgp read it.
#[derive(Debug, PartialEq)]
enum Seen {
    Pkesk(u8),
    Seipd(usize),
    Other,
    Error(String),
}

/// rpgp's packets, and whether it consumed every byte without a header
/// error.
fn rpgp_packets(data: &[u8]) -> (Vec<Seen>, bool) {
    let mut input = Counting { data, pos: 0 };
    let mut seen = Vec::new();
    let mut clean = true;
    for p in PacketParser::new(&mut input).take(1024) {
        seen.push(match p {
            Ok(Packet::PublicKeyEncryptedSessionKey(k)) => Seen::Pkesk(match k.version() {
                pgp::types::PkeskVersion::V3 => 3,
                pgp::types::PkeskVersion::V6 => 6,
                _ => 0,
            }),
            Ok(Packet::SymEncryptedProtectedData(d)) => Seen::Seipd(d.version()),
            Ok(_) => Seen::Other,
            Err(e) => {
                clean = false;
                Seen::Error(e.to_string())
            }
        });
    }
    let consumed_all = input.pos == data.len();
    (seen, consumed_all && clean)
}

/// Our framing errors, minus the intended differences listed above.
fn is_unexpected_framing_refusal(e: &CryptoError) -> bool {
    match e {
        CryptoError::MalformedPacket { reason, .. } => !(reason.contains("too short to hold")
            || reason.contains("implausibly large")
            || reason.contains("session key packets")
            || reason.contains("partial body length")
            || reason.contains("indeterminate length")),
        CryptoError::Truncated { .. } | CryptoError::TrailingData { .. } => true,
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut ours = PacketInspector::any_recipient();
    let verdict = ours.feed(data).and_then(|()| ours.finish());
    let (seen, rpgp_clean) = rpgp_packets(data);
    match verdict {
        Ok(report) => {
            let n = report.recipients.len();
            assert!(rpgp_clean, "we accept, rpgp does not parse it: {seen:?}");
            assert_eq!(seen.len(), n + 1, "packet count: {seen:?}");
            assert_eq!(seen[n], Seen::Seipd(1), "{seen:?}");
            for s in &seen[..n] {
                assert!(
                    matches!(s, Seen::Pkesk(3) | Seen::Error(_)),
                    "we saw a v3 PKESK, rpgp saw {s:?}"
                );
            }
        }
        Err(e) => {
            let backup_shaped = seen.len() >= 2
                && seen[..seen.len() - 1].iter().all(|s| *s == Seen::Pkesk(3))
                && seen[seen.len() - 1] == Seen::Seipd(1);
            assert!(
                !(rpgp_clean && backup_shaped && is_unexpected_framing_refusal(&e)),
                "rpgp parses a well-formed backup-shaped message we refuse: {e} ({seen:?})"
            );
        }
    }
});
