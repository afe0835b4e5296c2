//! zstd decompression of a `tar.zst` base backup on its way from the
//! decryption to the extraction: a stage on a thread of its own, so the
//! extraction's writes and the decompression overlap. The frames (the
//! server's, then Backstop's end with `backup_manifest`) decode as one
//! stream; one that stops inside a frame is an error, not a short tar.
//! Its input has been authenticated against the signed manifest's chunk
//! digests, so the decoder only ever sees bytes Backstop wrote.

use std::io;

use bytes::Bytes;
use futures::StreamExt;
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

use backstop_core::store::{ByteStream, byte_stream};

/// Decompressed bytes handed on at a time.
const OUT: usize = 256 * 1024;

/// `input` (zstd frames) decompressed.
pub(super) fn decompress(mut input: ByteStream) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let result = (|| -> io::Result<()> {
            let mut decoder = Decoder::new()?;
            // 0 once a frame is complete: where the stream may end.
            let mut hint = 0usize;
            let mut out = vec![0u8; OUT];
            while let Some(chunk) = handle.block_on(input.next()) {
                let chunk = chunk?;
                let mut src = InBuffer::around(&chunk);
                while src.pos() < chunk.len() || hint != 0 {
                    let mut dst = OutBuffer::around(&mut out[..]);
                    hint = decoder.run(&mut src, &mut dst)?;
                    let n = dst.pos();
                    if n > 0
                        && tx
                            .blocking_send(Ok(Bytes::copy_from_slice(&out[..n])))
                            .is_err()
                    {
                        return Ok(());
                    }
                    if n < OUT && src.pos() == chunk.len() {
                        break;
                    }
                }
            }
            if hint != 0 {
                return Err(io::Error::other(
                    "the base backup's zstd stream ends inside a frame: it is truncated",
                ));
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    byte_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(bytes: Vec<u8>, piece: usize) -> ByteStream {
        let chunks: Vec<io::Result<Bytes>> = bytes
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        byte_stream(futures::stream::iter(chunks))
    }

    async fn all(mut s: ByteStream) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concatenated_frames_decode_in_any_pieces() {
        let a: Vec<u8> = (0..3_000_000u32).map(|i| (i % 97) as u8).collect();
        let b = b"a second frame".repeat(50_000);
        let mut z = zstd::bulk::compress(&a, 1).unwrap();
        z.extend(zstd::bulk::compress(&b, 3).unwrap());
        let mut expected = a.clone();
        expected.extend_from_slice(&b);
        for piece in [1 << 20, 4096, 7] {
            let got = all(decompress(pieces(z.clone(), piece))).await.unwrap();
            assert!(got == expected, "pieces of {piece}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_or_garbled_stream_is_an_error() {
        let a: Vec<u8> = (0..1_000_000u32).map(|i| (i % 13) as u8).collect();
        let z = zstd::bulk::compress(&a, 1).unwrap();
        let cut = z[..z.len() - 10].to_vec();
        let err = all(decompress(pieces(cut, 4096))).await.unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        let mut garbled = z.clone();
        garbled[0] ^= 0xff;
        assert!(all(decompress(pieces(garbled, 4096))).await.is_err());
    }
}
