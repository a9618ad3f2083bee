//! Numbers a run's events and writes them to its Redis log and channel in batches: one round
//! trip per batch of provider output, not one per token.

use redis::aio::ConnectionManager;
use runq_shared::events::{self, Event, Part, RunKeys};

pub struct Emitter {
    conn: ConnectionManager,
    pub keys: RunKeys,
    seq: u64,
    pending: Vec<Event>,
    /// Everything this attempt wrote, for Postgres at the end (saves reading the log back).
    written: Vec<Event>,
}

impl Emitter {
    /// Continues numbering after `last_seq` (0 for a first attempt).
    pub fn new(conn: ConnectionManager, keys: RunKeys, last_seq: u64) -> Self {
        Self { conn, keys, seq: last_seq, pending: Vec::with_capacity(8), written: Vec::new() }
    }

    pub fn emit(&mut self, part: &Part) {
        self.seq += 1;
        self.pending.push(Event::new(self.seq, part));
    }

    /// Appends and publishes what is pending.
    pub async fn flush(&mut self) -> redis::RedisResult<()> {
        self.write(&[]).await
    }

    /// Flushes what is pending and appends the terminal event, in one round trip, without
    /// announcing the terminal event: it is published by [`Emitter::announce`] once Postgres holds
    /// the final state, so a client that sees it can read the result.
    pub async fn append_terminal(&mut self, part: &Part) -> redis::RedisResult<Event> {
        self.seq += 1;
        let terminal = Event::new(self.seq, part);
        self.write(std::slice::from_ref(&terminal)).await?;
        Ok(terminal)
    }

    /// Appends and publishes what is pending, then appends `held` unannounced, in one round
    /// trip. The pending batch is taken first, so a write cut short (the run was cancelled
    /// mid-write) never sends the same `seq` twice. The Redis round trip is boxed, so that a
    /// run's future does not keep room for it while it waits on its provider.
    async fn write(&mut self, held: &[Event]) -> redis::RedisResult<()> {
        let pending = std::mem::take(&mut self.pending);
        Box::pin(events::append(&mut self.conn, &self.keys, &pending, held)).await?;
        self.written.extend(pending);
        self.written.extend_from_slice(held);
        Ok(())
    }

    /// Keeps the log past a pause's `finish`: the run continues it when it resumes.
    pub async fn keep(&mut self) -> redis::RedisResult<()> {
        events::keep(&mut self.conn, &self.keys).await
    }

    pub async fn announce(&mut self, event: &Event) -> redis::RedisResult<()> {
        events::publish(&mut self.conn, &self.keys, std::slice::from_ref(event)).await
    }

    /// The run's whole log, for Postgres: what this attempt wrote, or (after a retry, when
    /// earlier attempts wrote too) the log read back from Redis.
    pub async fn log(&mut self) -> redis::RedisResult<Vec<Event>> {
        if self.written.first().is_some_and(|e| e.seq == 1) {
            return Ok(std::mem::take(&mut self.written));
        }
        events::replay(&mut self.conn, &self.keys, 0).await
    }
}
