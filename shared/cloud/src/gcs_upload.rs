//! The source of a GCS upload: the caller's byte stream, with the last
//! bytes kept for a resume ([`REPLAY_WINDOW`]) and the stall watch told when
//! the stream itself is slow (see [`crate::timeouts::StallWatch`]).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use google_cloud_storage::streaming_source::{Seek, StreamingSource};

use backstop_core::store::ByteStream;

use crate::timeouts::StallWatch;

/// Bytes of an upload kept after they were sent, so that an interrupted
/// upload can resume from wherever the server's copy ends (see
/// [`StreamSource`]).
const REPLAY_WINDOW: u64 = 16 << 20;

/// Feeds a [`ByteStream`] to the upload and remembers why it failed, so that
/// a source failure is reported as such and not as a storage failure.
///
/// The upload is one streaming request (`send_unbuffered`), not a series of
/// buffered chunk requests: no round trip per chunk between the data and
/// the server, and no server-side reassembly per chunk (fake-gcs-server
/// rehashes the whole object on every chunk: 8 MiB chunks of a 1 GiB backup
/// cost it 140 s of CPU, against 2–5 s for the same bytes in one request).
/// When that request fails, the client asks the server how many bytes it
/// kept and seeks there; the last [`REPLAY_WINDOW`] bytes are kept for that,
/// in whole chunks, so memory stays bounded. A resume point further back
/// fails the upload for good with a [`StreamSource::seek`] error.
pub(crate) struct StreamSource {
    // The upload requires a `Sync` source; the lock is never contended
    // (`next` takes `&mut self`).
    body: Mutex<ByteStream>,
    size: Option<u64>,
    failure: Arc<Mutex<Option<io::Error>>>,
    /// Chunks already taken from `body`, newest last, covering
    /// `kept_from..taken`.
    kept: VecDeque<Bytes>,
    kept_from: u64,
    taken: u64,
    /// Offset of the next byte to hand out (below `taken` after a seek).
    pos: u64,
    /// Told when the source waits for its input and when the client has
    /// its bytes, so that a stalled upload is told from a slow source.
    watch: StallWatch,
}

impl StreamSource {
    pub(crate) fn new(
        body: ByteStream,
        size: Option<u64>,
        failure: Arc<Mutex<Option<io::Error>>>,
        watch: StallWatch,
    ) -> Self {
        StreamSource {
            body: Mutex::new(body),
            size,
            failure,
            kept: VecDeque::new(),
            kept_from: 0,
            taken: 0,
            pos: 0,
            watch,
        }
    }

    /// The rest of the kept chunk holding `pos`, for a replay after a seek.
    fn replay(&self) -> Bytes {
        let mut start = self.kept_from;
        for chunk in &self.kept {
            let end = start + chunk.len() as u64;
            if self.pos < end {
                return chunk.slice((self.pos - start) as usize..);
            }
            start = end;
        }
        unreachable!("pos {} is below taken {}", self.pos, self.taken)
    }

    fn keep(&mut self, chunk: Bytes) {
        self.taken += chunk.len() as u64;
        self.kept.push_back(chunk);
        while let Some(front) = self.kept.front() {
            if self.taken - self.kept_from - (front.len() as u64) < REPLAY_WINDOW {
                break;
            }
            self.kept_from += front.len() as u64;
            self.kept.pop_front();
        }
    }
}

impl StreamingSource for StreamSource {
    type Error = io::Error;

    async fn next(&mut self) -> Option<Result<Bytes, Self::Error>> {
        if self.pos < self.taken {
            let chunk = self.replay();
            self.pos += chunk.len() as u64;
            self.watch.progressed();
            return Some(Ok(chunk));
        }
        let body = self.body.get_mut().expect("stream lock");
        self.watch.source_busy();
        let next = body.next().await;
        self.watch.progressed();
        match next {
            Some(Ok(chunk)) => {
                self.keep(chunk.clone());
                self.pos = self.taken;
                Some(Ok(chunk))
            }
            Some(Err(e)) => {
                let kind = e.kind();
                let message = e.to_string();
                *self.failure.lock().expect("source failure lock") = Some(e);
                Some(Err(io::Error::new(kind, message)))
            }
            None => None,
        }
    }

    async fn size_hint(
        &self,
    ) -> Result<google_cloud_storage::streaming_source::SizeHint, Self::Error> {
        Ok(match self.size {
            Some(n) => google_cloud_storage::streaming_source::SizeHint::with_exact(n),
            None => google_cloud_storage::streaming_source::SizeHint::new(),
        })
    }
}

impl Seek for StreamSource {
    type Error = io::Error;

    async fn seek(&mut self, offset: u64) -> Result<(), Self::Error> {
        if offset < self.kept_from || offset > self.taken {
            return Err(io::Error::other(format!(
                "cannot resume the upload at byte {offset}: the server kept fewer bytes than \
                 were sent, and only bytes {}..{} are still held (the last {} MiB); the upload \
                 has to start again",
                self.kept_from,
                self.taken,
                REPLAY_WINDOW >> 20
            )));
        }
        self.pos = offset;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::store::byte_stream;

    fn source(chunks: usize, chunk: usize) -> StreamSource {
        let body =
            futures::stream::iter((0..chunks).map(move |i| Ok(Bytes::from(vec![i as u8; chunk]))));
        StreamSource::new(byte_stream(body), None, Arc::default(), StallWatch::new())
    }

    async fn drain(s: &mut StreamSource) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_resume_inside_the_window_replays_the_same_bytes() {
        let chunk = 1 << 20;
        let mut s = source(40, chunk);
        let whole: Vec<u8> = (0..40u8).flat_map(|i| vec![i; chunk]).collect();
        for _ in 0..30 {
            s.next().await.unwrap().unwrap();
        }
        // The server kept 20.5 MiB of the 30 MiB sent: resume mid-chunk.
        let at = (20 << 20) + (chunk as u64 / 2);
        s.seek(at).await.unwrap();
        let rest = drain(&mut s).await;
        assert_eq!(&rest[..], &whole[at as usize..]);
        // Memory: whole chunks covering the window, no more.
        let kept: u64 = s.kept.iter().map(|c| c.len() as u64).sum();
        assert!(
            kept >= REPLAY_WINDOW && kept < REPLAY_WINDOW + chunk as u64,
            "{kept}"
        );
    }

    #[tokio::test]
    async fn a_resume_behind_the_window_fails_and_says_why() {
        let mut s = source(40, 1 << 20);
        for _ in 0..30 {
            s.next().await.unwrap().unwrap();
        }
        let err = s.seek(0).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot resume the upload at byte 0"),
            "{err}"
        );
        assert!(s.seek(31 << 20).await.is_err(), "beyond what was sent");
        // A failed seek changes nothing: the stream goes on where it was.
        assert_eq!(s.next().await.unwrap().unwrap()[0], 30);
    }
}
