//! Last-seen writes off the request path. A session check that is due a
//! touch (see `SessionPolicy::touch_interval`) records it here and answers
//! at once; one background writer puts the pending touches in the database,
//! many sessions per statement. A touch only moves the idle deadline, so
//! one still pending when another instance reads the row costs that
//! instance at most the milliseconds until it is written. `Core::flush_touches`
//! writes what is pending (at shutdown; tests).
use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use super::{Core, Error, Timestamp};

/// Pending touches kept at most (the database is unreachable for long):
/// beyond, new touches are dropped, costing idle-time precision only.
const MAX_PENDING: usize = 100_000;

#[derive(Default)]
pub(crate) struct Touches {
    state: Mutex<State>,
    /// Held while writing, so `flush` waits for a batch being written.
    writer: tokio::sync::Mutex<()>,
}

type Batch = HashMap<[u8; 32], (Uuid, Timestamp)>;

#[derive(Default)]
struct State {
    /// By token hash: the session id and the time to write.
    pending: HashMap<[u8; 32], (Uuid, Timestamp)>,
    /// A background writer has been spawned and not yet finished.
    draining: bool,
}

impl Touches {
    /// Record a touch; true when the caller must spawn the writer.
    fn push(&self, hash: [u8; 32], id: Uuid, now: Timestamp) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.pending.len() >= MAX_PENDING && !s.pending.contains_key(&hash) {
            return false;
        }
        let (_, at) = s.pending.entry(hash).or_insert((id, now));
        *at = (*at).max(now);
        !std::mem::replace(&mut s.draining, true)
    }

    /// A touch of this session not yet written.
    pub(crate) fn pending(&self, hash: &[u8; 32]) -> Option<Timestamp> {
        Some(self.state.lock().ok()?.pending.get(hash)?.1)
    }

    /// What is pending (kept until written, so a check reading the row
    /// meanwhile still sees it through [`Self::pending`]).
    fn snapshot(&self) -> Batch {
        self.state
            .lock()
            .map(|s| s.pending.clone())
            .unwrap_or_default()
    }

    /// A batch was written (or could not be: it is dropped all the same, so
    /// an unreachable database does not keep the writer spinning). With
    /// `last`: true when nothing is left, and the writer ends.
    fn done(&self, batch: &Batch, last: bool) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        for (hash, entry) in batch {
            if s.pending.get(hash) == Some(entry) {
                s.pending.remove(hash);
            }
        }
        let finished = s.pending.is_empty();
        if finished && last {
            s.draining = false;
        }
        finished
    }
}

impl Core {
    /// Write a session's last-seen time soon (not on the request path).
    pub(crate) fn touch_later(&self, hash: [u8; 32], id: Uuid, now: Timestamp) {
        if self.inner.touches.push(hash, id, now) {
            let core = self.clone();
            tokio::spawn(async move {
                let touches = &core.inner.touches;
                let _writing = touches.writer.lock().await;
                loop {
                    tokio::time::sleep(super::sessions::BATCH_WINDOW).await;
                    let batch = touches.snapshot();
                    if let Err(e) = core.write_touches(&batch).await {
                        tracing::warn!(error = %e, "cannot write sessions' last-seen times");
                    }
                    if touches.done(&batch, true) {
                        break;
                    }
                }
            });
        }
    }

    /// A touch of ours not yet written, to apply to the session as read
    /// next. Look it up *before* reading: a touch leaves the pending set only
    /// after its write committed, so a read that starts after this lookup
    /// and finds nothing here sees the write.
    pub(crate) fn pending_touch(&self, hash: &[u8; 32]) -> Option<Timestamp> {
        self.inner.touches.pending(hash)
    }

    /// Write every pending touch now (at shutdown; tests).
    pub async fn flush_touches(&self) -> Result<(), Error> {
        let touches = &self.inner.touches;
        let _writing = touches.writer.lock().await;
        let batch = touches.snapshot();
        let written = self.write_touches(&batch).await;
        touches.done(&batch, false);
        written
    }

    async fn write_touches(&self, batch: &Batch) -> Result<(), Error> {
        let mut by_time: HashMap<Timestamp, Vec<Uuid>> = HashMap::new();
        for &(id, at) in batch.values() {
            by_time.entry(at).or_default().push(id);
        }
        for (at, ids) in by_time {
            self.store().touch_sessions(&ids, at).await?;
        }
        Ok(())
    }
}
