//! The packets inside a SEIPD body, parsed as they are decrypted: one
//! literal data packet (possibly inside one layer of ZIP/ZLIB compressed
//! data), with signature-related, marker and padding packets skipped. Used
//! by [`super::Unwrapper`].

use bytes::{Bytes, BytesMut};

use crate::crypto::CryptoError;
use crate::crypto::packet::{self, BodyLen, Parsed, tag};

/// Parses the decrypted packet stream: literal data (possibly inside one
/// layer of compression), skipping signature-related and padding packets.
pub(crate) struct InnerParser {
    depth: u8,
    /// Most literal data bytes this message may hold (`u64::MAX`: any).
    limit: u64,
    hdr: Vec<u8>,
    state: InnerState,
    literal_seen: bool,
}

enum InnerState {
    /// Between packets (collecting a header in `hdr`).
    Header,
    /// In a packet body.
    Body {
        remaining: u64,
        /// More length headers follow this chunk.
        partial: bool,
        indeterminate: bool,
        handler: Handler,
    },
    /// Collecting the next partial length (in `hdr`).
    NextLen { handler: Handler },
}

enum Handler {
    Literal {
        head: Vec<u8>,
        head_done: bool,
        /// Literal bytes still allowed before the limit.
        left: u64,
        limit: u64,
    },
    Compressed(Box<Compressed>),
    Skip,
}

struct Compressed {
    algo: Option<u8>,
    dec: Option<flate2::Decompress>,
    nested: InnerParser,
    done: bool,
}

const DECOMPRESS_BUF: usize = 256 * 1024;

impl Compressed {
    fn push(&mut self, mut data: &[u8], out: &mut dyn FnMut(Bytes)) -> Result<(), CryptoError> {
        if self.algo.is_none() {
            let Some((&a, rest)) = data.split_first() else {
                return Ok(());
            };
            self.algo = Some(a);
            self.dec = Some(match a {
                1 => flate2::Decompress::new(false),
                2 => flate2::Decompress::new(true),
                0 => {
                    return Err(CryptoError::InnerPacket(
                        "compressed packet with algorithm 'uncompressed' is not supported".into(),
                    ));
                }
                other => return Err(CryptoError::UnsupportedCompression(other)),
            });
            data = rest;
        }
        self.inflate(data, false, out)
    }

    fn inflate(
        &mut self,
        mut data: &[u8],
        finish: bool,
        out: &mut dyn FnMut(Bytes),
    ) -> Result<(), CryptoError> {
        let Some(dec) = self.dec.as_mut() else {
            return Err(CryptoError::InnerPacket(
                "empty compressed data packet".into(),
            ));
        };
        loop {
            if self.done {
                // Bytes after the end of the deflate stream are ignored, as gpg does.
                return Ok(());
            }
            let mut buf = BytesMut::zeroed(DECOMPRESS_BUF);
            let before_in = dec.total_in();
            let before_out = dec.total_out();
            let flush = if finish {
                flate2::FlushDecompress::Finish
            } else {
                flate2::FlushDecompress::None
            };
            let status = dec
                .decompress(data, &mut buf, flush)
                .map_err(|e| CryptoError::Decompress(e.to_string()))?;
            let consumed = (dec.total_in() - before_in) as usize;
            let produced = (dec.total_out() - before_out) as usize;
            data = &data[consumed..];
            if produced > 0 {
                buf.truncate(produced);
                self.nested.push(buf.freeze(), out)?;
            }
            if status == flate2::Status::StreamEnd {
                self.done = true;
                return Ok(());
            }
            if consumed == 0 && produced == 0 {
                if finish {
                    return Err(CryptoError::Decompress("compressed data ends early".into()));
                }
                return Ok(());
            }
            if data.is_empty() && produced < DECOMPRESS_BUF && !finish {
                return Ok(());
            }
        }
    }

    fn finish(mut self, out: &mut dyn FnMut(Bytes)) -> Result<(), CryptoError> {
        if !self.done {
            self.inflate(&[], true, out)?;
        }
        self.nested.finish(out)
    }
}

impl Handler {
    fn for_tag(t: u8, depth: u8, literal_seen: bool, limit: u64) -> Result<Handler, CryptoError> {
        match t {
            tag::LITERAL => {
                if literal_seen {
                    return Err(CryptoError::InnerPacket(
                        "more than one literal data packet (a message holds exactly one)".into(),
                    ));
                }
                Ok(Handler::Literal {
                    head: Vec::new(),
                    head_done: false,
                    left: limit,
                    limit,
                })
            }
            tag::COMPRESSED if depth == 0 => Ok(Handler::Compressed(Box::new(Compressed {
                algo: None,
                dec: None,
                nested: InnerParser::with_limit(depth + 1, limit),
                done: false,
            }))),
            tag::COMPRESSED => Err(CryptoError::InnerPacket(
                "nested compressed data packets are refused".into(),
            )),
            tag::ONE_PASS_SIGNATURE | tag::SIGNATURE | tag::MARKER | tag::PADDING => {
                Ok(Handler::Skip)
            }
            other => Err(CryptoError::InnerPacket(format!(
                "{} packet (tag {other}) where literal data was expected",
                packet::tag_name(other)
            ))),
        }
    }

    fn push(&mut self, data: Bytes, out: &mut dyn FnMut(Bytes)) -> Result<(), CryptoError> {
        match self {
            Handler::Literal {
                head,
                head_done,
                left,
                limit,
            } => {
                let mut data = data;
                if !*head_done {
                    // format (1), name length (1), name, date (4)
                    let need = |h: &Vec<u8>| {
                        if h.len() < 2 {
                            2
                        } else {
                            2 + h[1] as usize + 4
                        }
                    };
                    while !*head_done && !data.is_empty() {
                        let want = need(head) - head.len();
                        let n = want.min(data.len());
                        head.extend_from_slice(&data[..n]);
                        let _ = data.split_to(n);
                        if head.len() == need(head) && head.len() > 2 {
                            *head_done = true;
                        }
                    }
                }
                if !data.is_empty() {
                    // Checked before anything is handed on, so a bomb stops
                    // within one inflate buffer of the limit.
                    if data.len() as u64 > *left {
                        return Err(CryptoError::PlaintextTooLarge { limit: *limit });
                    }
                    *left -= data.len() as u64;
                    out(data);
                }
                Ok(())
            }
            Handler::Compressed(c) => c.push(&data, out),
            Handler::Skip => Ok(()),
        }
    }

    fn finish(self, out: &mut dyn FnMut(Bytes)) -> Result<bool, CryptoError> {
        match self {
            Handler::Literal { head_done, .. } => {
                if !head_done {
                    return Err(CryptoError::InnerPacket(
                        "literal data packet too short".into(),
                    ));
                }
                Ok(true)
            }
            Handler::Compressed(c) => {
                let seen = c.nested.literal_seen;
                c.finish(out)?;
                Ok(seen)
            }
            Handler::Skip => Ok(false),
        }
    }
}

impl InnerParser {
    pub fn new(depth: u8) -> Self {
        Self::with_limit(depth, u64::MAX)
    }

    /// A parser that fails once the literal data exceeds `limit` bytes.
    pub fn with_limit(depth: u8, limit: u64) -> Self {
        InnerParser {
            depth,
            limit,
            hdr: Vec::with_capacity(8),
            state: InnerState::Header,
            literal_seen: false,
        }
    }

    fn end_packet(
        &mut self,
        handler: Handler,
        out: &mut dyn FnMut(Bytes),
    ) -> Result<(), CryptoError> {
        if handler.finish(out)? {
            self.literal_seen = true;
        }
        self.state = InnerState::Header;
        Ok(())
    }

    pub fn push(&mut self, mut data: Bytes, out: &mut dyn FnMut(Bytes)) -> Result<(), CryptoError> {
        while !data.is_empty() {
            match std::mem::replace(&mut self.state, InnerState::Header) {
                InnerState::Header => self.push_header(&mut data, out)?,
                InnerState::Body {
                    remaining,
                    partial,
                    indeterminate,
                    handler,
                } => self.push_body(&mut data, remaining, partial, indeterminate, handler, out)?,
                InnerState::NextLen { handler } => self.push_next_len(&mut data, handler, out)?,
            }
        }
        Ok(())
    }

    /// Between packets: collects a packet header from the front of `data`
    /// and starts the packet's body.
    fn push_header(
        &mut self,
        data: &mut Bytes,
        out: &mut dyn FnMut(Bytes),
    ) -> Result<(), CryptoError> {
        let take = (6 - self.hdr.len()).min(data.len());
        let start = self.hdr.len();
        self.hdr.extend_from_slice(&data[..take]);
        match packet::parse_header(&self.hdr) {
            Err(_) => {
                return Err(CryptoError::InnerPacket(format!(
                    "invalid packet header {:02x?}",
                    &self.hdr
                )));
            }
            Ok(Parsed::NeedMore) => {
                let _ = data.split_to(take);
                self.state = InnerState::Header;
            }
            Ok(Parsed::Done(h, used)) => {
                let _ = data.split_to(used - start);
                self.hdr.clear();
                let handler = Handler::for_tag(h.tag, self.depth, self.literal_seen, self.limit)?;
                self.state = match h.len {
                    BodyLen::Fixed(n) => InnerState::Body {
                        remaining: n,
                        partial: false,
                        indeterminate: false,
                        handler,
                    },
                    BodyLen::Partial(n) => InnerState::Body {
                        remaining: n,
                        partial: true,
                        indeterminate: false,
                        handler,
                    },
                    BodyLen::Indeterminate => InnerState::Body {
                        remaining: u64::MAX,
                        partial: false,
                        indeterminate: true,
                        handler,
                    },
                };
                if let InnerState::Body {
                    remaining: 0,
                    partial: false,
                    indeterminate: false,
                    ..
                } = self.state
                {
                    let InnerState::Body { handler, .. } =
                        std::mem::replace(&mut self.state, InnerState::Header)
                    else {
                        unreachable!()
                    };
                    self.end_packet(handler, out)?;
                }
            }
        }
        Ok(())
    }

    /// In a packet body: hands the body bytes at the front of `data` to the
    /// packet's handler.
    fn push_body(
        &mut self,
        data: &mut Bytes,
        remaining: u64,
        partial: bool,
        indeterminate: bool,
        mut handler: Handler,
        out: &mut dyn FnMut(Bytes),
    ) -> Result<(), CryptoError> {
        let n = if indeterminate {
            data.len()
        } else {
            remaining.min(data.len() as u64) as usize
        };
        let piece = data.split_to(n);
        handler.push(piece, out)?;
        let remaining = if indeterminate {
            remaining
        } else {
            remaining - n as u64
        };
        if remaining == 0 {
            if partial {
                self.state = InnerState::NextLen { handler };
            } else {
                self.end_packet(handler, out)?;
            }
        } else {
            self.state = InnerState::Body {
                remaining,
                partial,
                indeterminate,
                handler,
            };
        }
        Ok(())
    }

    /// After a partial body chunk: collects the next length from the front
    /// of `data`.
    fn push_next_len(
        &mut self,
        data: &mut Bytes,
        handler: Handler,
        out: &mut dyn FnMut(Bytes),
    ) -> Result<(), CryptoError> {
        let take = (5 - self.hdr.len()).min(data.len());
        let start = self.hdr.len();
        self.hdr.extend_from_slice(&data[..take]);
        match packet::parse_new_len(&self.hdr) {
            Parsed::NeedMore => {
                let _ = data.split_to(take);
                self.state = InnerState::NextLen { handler };
            }
            Parsed::Done(len, used) => {
                let _ = data.split_to(used - start);
                self.hdr.clear();
                let (remaining, partial) = match len {
                    BodyLen::Fixed(n) => (n, false),
                    BodyLen::Partial(n) => (n, true),
                    BodyLen::Indeterminate => unreachable!(),
                };
                if remaining == 0 && !partial {
                    self.end_packet(handler, out)?;
                } else {
                    self.state = InnerState::Body {
                        remaining,
                        partial,
                        indeterminate: false,
                        handler,
                    };
                }
            }
        }
        Ok(())
    }

    pub fn finish(mut self, out: &mut dyn FnMut(Bytes)) -> Result<(), CryptoError> {
        match std::mem::replace(&mut self.state, InnerState::Header) {
            InnerState::Header if self.hdr.is_empty() => {}
            InnerState::Body {
                indeterminate: true,
                handler,
                ..
            } => self.end_packet(handler, out)?,
            _ => {
                return Err(CryptoError::InnerPacket(
                    "the encrypted message ends in the middle of a packet".into(),
                ));
            }
        }
        if !self.literal_seen {
            return Err(CryptoError::InnerPacket(
                "no literal data packet in the message".into(),
            ));
        }
        Ok(())
    }
}
