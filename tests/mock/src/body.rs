//! Response bodies: pre-rendered frames replayed on a timetable.
//!
//! Every frame of a reply is rendered up front into one buffer, then frames
//! that are due at the same instant are coalesced into a single chunk. With
//! zero latency a whole stream is one write and no timers; with latency each
//! chunk is a zero-copy slice of the buffer preceded by one `sleep`.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::stats::RequestGuard;

/// What a frame means for timing and for fault cut-off points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Framing before the content (role chunk, `message_start`, ...).
    Preamble,
    /// One unit of generated content.
    Token,
    /// Framing after the content (finish reason, usage, `[DONE]`, ...).
    Terminal,
}

struct Mark {
    end: usize,
    delay: Duration,
    kind: Kind,
}

/// Where to stop a reply early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Send everything.
    Full,
    /// Send up to `n` tokens, then stall until shutdown.
    HangAfter(usize),
    /// Send up to `n` tokens, then abort the connection.
    DropAfter(usize),
}

/// Builder for a streamed reply.
pub(crate) struct Frames {
    buf: Vec<u8>,
    marks: Vec<Mark>,
    ttft: Duration,
    delay: Duration,
    tokens: usize,
}

impl Frames {
    pub(crate) fn new(ttft: Duration, delay: Duration, token_hint: usize) -> Self {
        Frames {
            buf: Vec::with_capacity(512 + token_hint * 192),
            marks: Vec::with_capacity(token_hint + 8),
            ttft,
            delay,
            tokens: 0,
        }
    }

    /// Appends one frame. The first frame of the body waits `ttft` (so both
    /// "time to first byte" and "time to first delta" measure it); every
    /// later token waits `delay`.
    pub(crate) fn push(&mut self, kind: Kind, write: impl FnOnce(&mut Vec<u8>)) {
        let delay = if self.marks.is_empty() {
            self.ttft
        } else if kind == Kind::Token && self.tokens > 0 {
            self.delay
        } else {
            Duration::ZERO
        };
        if kind == Kind::Token {
            self.tokens += 1;
        }
        write(&mut self.buf);
        self.marks.push(Mark { end: self.buf.len(), delay, kind });
    }

    /// Turns the frames into a body, applying a fault cut-off.
    pub(crate) fn into_stream(self, cut: Cut, guard: RequestGuard, shutdown: CancellationToken) -> ResponseStream {
        let (limit, tail) = match cut {
            Cut::Full => (usize::MAX, Tail::End),
            Cut::HangAfter(n) => (n, Tail::Hang(shutdown)),
            Cut::DropAfter(n) => (n, Tail::Drop { flushed: false }),
        };
        let mut segments: Vec<Segment> = Vec::new();
        let (mut start, mut end, mut pending) = (0, 0, Duration::ZERO);
        let mut tokens = 0;
        for mark in &self.marks {
            let keep = match mark.kind {
                Kind::Preamble => true,
                Kind::Token => tokens < limit,
                Kind::Terminal => matches!(tail, Tail::End),
            };
            if !keep {
                break;
            }
            if mark.kind == Kind::Token {
                tokens += 1;
            }
            if !mark.delay.is_zero() && end > start {
                segments.push(Segment { delay: pending, bytes: start..end });
                start = end;
                pending = Duration::ZERO;
            }
            pending += mark.delay;
            end = mark.end;
        }
        if end > start {
            segments.push(Segment { delay: pending, bytes: start..end });
        }
        let mut buf = self.buf;
        buf.truncate(end);
        ResponseStream::new(Bytes::from(buf), segments, tail, guard)
    }
}

struct Segment {
    delay: Duration,
    bytes: Range<usize>,
}

enum Tail {
    End,
    Hang(CancellationToken),
    /// `flushed` is false until we have yielded once after the last chunk.
    Drop {
        flushed: bool,
    },
    Done,
}

/// The response body stream. Owns the [`RequestGuard`], so dropping it
/// before the end (client went away) is what counts a disconnect.
pub(crate) struct ResponseStream {
    data: Bytes,
    segments: Vec<Segment>,
    next: usize,
    sleep: Option<Pin<Box<Sleep>>>,
    tail: Tail,
    hang: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    guard: RequestGuard,
}

impl ResponseStream {
    fn new(data: Bytes, segments: Vec<Segment>, tail: Tail, guard: RequestGuard) -> Self {
        ResponseStream { data, segments, next: 0, sleep: None, tail, hang: None, guard }
    }

    /// A complete body sent in one chunk.
    pub(crate) fn whole(data: Vec<u8>, guard: RequestGuard) -> Self {
        let len = data.len();
        let segments = vec![Segment { delay: Duration::ZERO, bytes: 0..len }];
        ResponseStream::new(Bytes::from(data), segments, Tail::End, guard)
    }

    /// The first `len` bytes of `data`, then the given cut's behaviour.
    pub(crate) fn partial(
        mut data: Vec<u8>,
        len: usize,
        cut: Cut,
        guard: RequestGuard,
        shutdown: CancellationToken,
    ) -> Self {
        data.truncate(len);
        let segments = if len == 0 { Vec::new() } else { vec![Segment { delay: Duration::ZERO, bytes: 0..len }] };
        let tail = match cut {
            Cut::Full => Tail::End,
            Cut::HangAfter(_) => Tail::Hang(shutdown),
            Cut::DropAfter(_) => Tail::Drop { flushed: false },
        };
        ResponseStream::new(Bytes::from(data), segments, tail, guard)
    }
}

impl Stream for ResponseStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(segment) = this.segments.get(this.next) {
            if !segment.delay.is_zero() {
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(segment.delay)));
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            let chunk = this.data.slice(segment.bytes.clone());
            this.next += 1;
            if this.next == this.segments.len() && matches!(this.tail, Tail::End) {
                this.guard.finish();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        match &this.tail {
            Tail::End | Tail::Done => {
                this.guard.finish();
                Poll::Ready(None)
            }
            Tail::Drop { flushed: false } => {
                // hyper flushes its write buffer only when the body is
                // pending; erroring right away could discard the tokens we
                // promised to deliver before the cut.
                this.tail = Tail::Drop { flushed: true };
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Tail::Drop { flushed: true } => {
                // The fault did what it was asked to; that is not a client
                // disconnect.
                this.guard.finish();
                this.tail = Tail::Done;
                // An error from the body makes hyper abort the connection
                // without the chunked-encoding terminator, which is exactly
                // what a provider dying mid-stream looks like.
                Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "mock fault: drop"))))
            }
            Tail::Hang(shutdown) => {
                let hang = this.hang.get_or_insert_with(|| Box::pin(shutdown.clone().cancelled_owned()));
                ready!(hang.as_mut().poll(cx));
                this.tail = Tail::Done;
                Poll::Ready(Some(Err(io::Error::other("mock server shutting down"))))
            }
        }
    }
}

/// Splits text into whitespace-delimited tokens, each keeping its trailing
/// whitespace, so concatenating the tokens reproduces the text exactly.
pub(crate) fn tokens(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let end = rest[word_end..].find(|c: char| !c.is_whitespace()).map_or(rest.len(), |i| word_end + i);
        let (token, tail) = rest.split_at(end);
        rest = tail;
        Some(token)
    })
}

/// Splits tool-call arguments into small fragments at char boundaries, the
/// way providers stream partial JSON.
pub(crate) fn fragments(text: &str, size: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = size.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_roundtrip() {
        let text = "Echo: hello  wide\nworld ";
        let parts: Vec<_> = tokens(text).collect();
        assert_eq!(parts, ["Echo: ", "hello  ", "wide\n", "world "]);
        assert_eq!(parts.concat(), text);
        assert_eq!(tokens("").count(), 0);
        assert_eq!(tokens(" x").collect::<Vec<_>>(), [" ", "x"]);
    }

    #[test]
    fn fragments_respect_char_boundaries() {
        let text = "{\"k\":\"héllo wörld\"}";
        let parts: Vec<_> = fragments(text, 4).collect();
        assert_eq!(parts.concat(), text);
        assert!(parts.iter().all(|p| !p.is_empty()));
    }
}
