//! OpenPGP packet framing (RFC 9580 section 4.2): incremental header and
//! length parsing, and the writers for the lengths Backstop emits.

/// Packet tags Backstop deals with.
pub(crate) mod tag {
    pub const PKESK: u8 = 1;
    pub const SIGNATURE: u8 = 2;
    pub const SKESK: u8 = 3;
    pub const ONE_PASS_SIGNATURE: u8 = 4;
    pub const COMPRESSED: u8 = 8;
    pub const SED: u8 = 9;
    pub const MARKER: u8 = 10;
    pub const LITERAL: u8 = 11;
    pub const SEIPD: u8 = 18;
    pub const AEAD: u8 = 20;
    pub const PADDING: u8 = 21;
}

pub(crate) fn tag_name(t: u8) -> &'static str {
    match t {
        0 => "reserved",
        1 => "public-key encrypted session key",
        2 => "signature",
        3 => "symmetric-key encrypted session key",
        4 => "one-pass signature",
        5 => "secret key",
        6 => "public key",
        7 => "secret subkey",
        8 => "compressed data",
        9 => "symmetrically encrypted data",
        10 => "marker",
        11 => "literal data",
        12 => "trust",
        13 => "user id",
        14 => "public subkey",
        17 => "user attribute",
        18 => "symmetrically encrypted and integrity protected data",
        19 => "modification detection code",
        20 => "AEAD encrypted data",
        21 => "padding",
        _ => "unknown",
    }
}

/// Whether a packet with this tag may use partial body lengths.
pub(crate) fn may_be_partial(t: u8) -> bool {
    matches!(
        t,
        tag::COMPRESSED | tag::SED | tag::LITERAL | tag::SEIPD | tag::AEAD
    )
}

/// How a packet's body length is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLen {
    /// Exactly this many bytes.
    Fixed(u64),
    /// A partial chunk of this many bytes, followed by another length.
    Partial(u64),
    /// Old format, length type 3: the packet runs to the end of the input.
    Indeterminate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub tag: u8,
    pub len: BodyLen,
}

/// Outcome of trying to parse from a (possibly too short) buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<T> {
    /// Not enough bytes yet.
    NeedMore,
    /// Parsed, using this many bytes.
    Done(T, usize),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Bit 7 of the first octet is clear.
    NotAPacket(u8),
    /// Partial length on a packet that may not have one, and similar.
    Invalid(String),
}

/// Parses a new-format length (used in new-format headers and between
/// partial chunks).
pub(crate) fn parse_new_len(buf: &[u8]) -> Parsed<BodyLen> {
    let Some(&b0) = buf.first() else {
        return Parsed::NeedMore;
    };
    match b0 {
        0..=191 => Parsed::Done(BodyLen::Fixed(b0 as u64), 1),
        192..=223 => {
            if buf.len() < 2 {
                return Parsed::NeedMore;
            }
            let len = ((b0 as u64 - 192) << 8) + buf[1] as u64 + 192;
            Parsed::Done(BodyLen::Fixed(len), 2)
        }
        224..=254 => Parsed::Done(BodyLen::Partial(1u64 << (b0 & 0x1f)), 1),
        255 => {
            if buf.len() < 5 {
                return Parsed::NeedMore;
            }
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as u64;
            Parsed::Done(BodyLen::Fixed(len), 5)
        }
    }
}

/// Parses a packet header (old or new format).
pub(crate) fn parse_header(buf: &[u8]) -> Result<Parsed<Header>, HeaderError> {
    let Some(&b0) = buf.first() else {
        return Ok(Parsed::NeedMore);
    };
    if b0 & 0x80 == 0 {
        return Err(HeaderError::NotAPacket(b0));
    }
    if b0 & 0x40 != 0 {
        let t = b0 & 0x3f;
        match parse_new_len(&buf[1..]) {
            Parsed::NeedMore => Ok(Parsed::NeedMore),
            Parsed::Done(len, n) => {
                if matches!(len, BodyLen::Partial(_)) && !may_be_partial(t) {
                    return Err(HeaderError::Invalid(format!(
                        "{} packet (tag {t}) with a partial body length",
                        tag_name(t)
                    )));
                }
                Ok(Parsed::Done(Header { tag: t, len }, 1 + n))
            }
        }
    } else {
        let t = (b0 >> 2) & 0x0f;
        let rest = &buf[1..];
        let (len, n) = match b0 & 0x03 {
            0 => match rest.first() {
                Some(&l) => (BodyLen::Fixed(l as u64), 1),
                None => return Ok(Parsed::NeedMore),
            },
            1 => {
                if rest.len() < 2 {
                    return Ok(Parsed::NeedMore);
                }
                (
                    BodyLen::Fixed(u16::from_be_bytes([rest[0], rest[1]]) as u64),
                    2,
                )
            }
            2 => {
                if rest.len() < 4 {
                    return Ok(Parsed::NeedMore);
                }
                (
                    BodyLen::Fixed(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64),
                    4,
                )
            }
            _ => {
                if !may_be_partial(t) {
                    return Err(HeaderError::Invalid(format!(
                        "{} packet (tag {t}) with an indeterminate length",
                        tag_name(t)
                    )));
                }
                (BodyLen::Indeterminate, 0)
            }
        };
        Ok(Parsed::Done(Header { tag: t, len }, 1 + n))
    }
}

/// Writes a definite new-format length.
pub(crate) fn write_fixed_len(out: &mut Vec<u8>, len: usize) {
    if len < 192 {
        out.push(len as u8);
    } else if len < 8384 {
        let l = len - 192;
        out.push(((l >> 8) as u8) + 192);
        out.push(l as u8);
    } else {
        out.push(0xff);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Encodes a definite new-format length into `buf`, returning how many bytes
/// it takes (1, 2 or 5).
pub(crate) fn encode_fixed_len(len: usize, buf: &mut [u8; 5]) -> usize {
    let mut v = Vec::with_capacity(5);
    write_fixed_len(&mut v, len);
    buf[..v.len()].copy_from_slice(&v);
    v.len()
}

/// The octet announcing a partial chunk of `1 << power` bytes.
pub(crate) fn partial_len_octet(power: u32) -> u8 {
    debug_assert!((9..=30).contains(&power));
    0xe0 | power as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_lengths_round_trip() {
        for len in [
            0usize,
            1,
            191,
            192,
            193,
            8383,
            8384,
            100_000,
            u32::MAX as usize,
        ] {
            let mut v = Vec::new();
            write_fixed_len(&mut v, len);
            assert_eq!(
                parse_new_len(&v),
                Parsed::Done(BodyLen::Fixed(len as u64), v.len())
            );
            assert_eq!(parse_new_len(&v[..v.len() - 1]), Parsed::NeedMore);
        }
        assert_eq!(
            parse_new_len(&[0xe0 | 20]),
            Parsed::Done(BodyLen::Partial(1 << 20), 1)
        );
    }

    #[test]
    fn headers_old_and_new() {
        // new format, tag 1, 94 bytes
        assert_eq!(
            parse_header(&[0xc1, 0x5e]).unwrap(),
            Parsed::Done(
                Header {
                    tag: 1,
                    len: BodyLen::Fixed(94)
                },
                2
            )
        );
        // old format tag 1 (0x84 | len type 0)
        assert_eq!(
            parse_header(&[0x84, 0x5e]).unwrap(),
            Parsed::Done(
                Header {
                    tag: 1,
                    len: BodyLen::Fixed(94)
                },
                2
            )
        );
        // old format, tag 18 can't be old (tags > 15) but tag 8 indeterminate can
        assert_eq!(
            parse_header(&[0xa3]).unwrap(),
            Parsed::Done(
                Header {
                    tag: 8,
                    len: BodyLen::Indeterminate
                },
                1
            )
        );
        assert!(matches!(
            parse_header(&[0x50]),
            Err(HeaderError::NotAPacket(0x50))
        ));
        assert!(matches!(
            parse_header(&[0xc1, 0xe5]),
            Err(HeaderError::Invalid(_))
        ));
        assert_eq!(parse_header(&[0xd2]).unwrap(), Parsed::NeedMore);
        assert_eq!(parse_header(&[0xd2, 0xff, 0, 0]).unwrap(), Parsed::NeedMore);
    }
}
