//! A shard's buffer between its reader and its delivery: bounded in records and in
//! payload bytes (a budget the reader waits on). A stalled application fills it; the
//! reader then waits to send, so it stops calling GetRecords (or stops taking events from
//! its subscription), and memory stays flat.
//!
//! Records cross it in chunks, each at most an eighth of either bound: one budget
//! take, one channel send and one wake-up per chunk rather than per record (a GetRecords
//! page is up to thousands). A chunk counts against the budget until its last record is
//! taken.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

use super::feed::ReadItem;

/// The part of each bound one chunk may use (the merged stream's chunks too).
pub(crate) const CHUNKS_PER_BUFFER: usize = 8;

/// A buffer of at most `records` records and, beyond its first chunk, `bytes` bytes of
/// payload.
pub(crate) fn channel(records: usize, bytes: usize) -> (BufferTx, BufferRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Budget {
        cap: Use {
            records: records.max(1),
            bytes,
        },
        used: Mutex::new(Use::default()),
        freed: Notify::new(),
    });
    let chunk = Use {
        records: (records / CHUNKS_PER_BUFFER).max(1),
        bytes: (bytes / CHUNKS_PER_BUFFER).max(1),
    };
    (
        BufferTx {
            tx,
            budget: budget.clone(),
            chunk,
        },
        BufferRx {
            rx,
            budget,
            current: VecDeque::new(),
            current_use: Use::default(),
        },
    )
}

/// Records and payload bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Use {
    records: usize,
    bytes: usize,
}

impl Use {
    fn of(items: &[ReadItem]) -> Self {
        items.iter().map(Use::one).fold(Use::default(), Use::plus)
    }

    fn one(item: &ReadItem) -> Self {
        Use {
            records: 1,
            bytes: item.record.data.len(),
        }
    }

    fn fits_in(self, cap: Use) -> bool {
        self.records <= cap.records && self.bytes <= cap.bytes
    }

    fn plus(self, other: Use) -> Use {
        Use {
            records: self.records.saturating_add(other.records),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }

    fn minus(self, other: Use) -> Use {
        Use {
            records: self.records.saturating_sub(other.records),
            bytes: self.bytes.saturating_sub(other.bytes),
        }
    }
}

#[derive(Debug)]
struct Budget {
    cap: Use,
    used: Mutex<Use>,
    freed: Notify,
}

impl Budget {
    fn used(&self) -> std::sync::MutexGuard<'_, Use> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `n` more fits (always, into an empty buffer: a record larger than the
    /// budget still passes), and takes it.
    async fn take(&self, n: Use) {
        loop {
            let freed = self.freed.notified();
            {
                let mut used = self.used();
                if used.records == 0 || used.plus(n).fits_in(self.cap) {
                    *used = used.plus(n);
                    return;
                }
            }
            freed.await;
        }
    }

    fn give(&self, n: Use) {
        let mut used = self.used();
        *used = used.minus(n);
        drop(used);
        self.freed.notify_waiters();
    }
}

/// The reader's end.
#[derive(Debug, Clone)]
pub(crate) struct BufferTx {
    tx: mpsc::UnboundedSender<Vec<ReadItem>>,
    budget: Arc<Budget>,
    /// The most one chunk holds (at least one record).
    chunk: Use,
}

/// The buffer's receiving end is gone.
#[derive(Debug)]
pub(crate) struct Closed;

impl BufferTx {
    /// Sends `items`, in order, chunk by chunk as each fits.
    pub(crate) async fn send_all(&self, items: Vec<ReadItem>) -> Result<(), Closed> {
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let mut chunk = Vec::with_capacity(items.len().min(self.chunk.records));
            let mut size = Use::default();
            while let Some(item) = items
                .next_if(|item| chunk.is_empty() || size.plus(Use::one(item)).fits_in(self.chunk))
            {
                size = size.plus(Use::one(&item));
                chunk.push(item);
            }
            self.budget.take(size).await;
            if self.tx.send(chunk).is_err() {
                self.budget.give(size);
                return Err(Closed);
            }
        }
        Ok(())
    }

    /// Sends one item once it fits.
    #[cfg(test)]
    pub(crate) async fn send(&self, item: ReadItem) -> Result<(), Closed> {
        self.send_all(vec![item]).await
    }
}

/// The delivery's end.
#[derive(Debug)]
pub(crate) struct BufferRx {
    rx: mpsc::UnboundedReceiver<Vec<ReadItem>>,
    budget: Arc<Budget>,
    /// The chunk being taken, and its whole size (given back with its last record).
    current: VecDeque<ReadItem>,
    current_use: Use,
}

impl BufferRx {
    /// The next item; `None` once the reader ended and the buffer is empty.
    pub(crate) async fn recv(&mut self) -> Option<ReadItem> {
        if self.current.is_empty() {
            let chunk = self.rx.recv().await?;
            self.start(chunk);
        }
        self.pop()
    }

    /// The next item if one is buffered now.
    pub(crate) fn try_recv(&mut self) -> Option<ReadItem> {
        if self.current.is_empty() {
            let chunk = self.rx.try_recv().ok()?;
            self.start(chunk);
        }
        self.pop()
    }

    /// How many items can be taken now without waiting: what is left of the chunk being
    /// taken (more chunks may be queued behind it).
    pub(crate) fn ready(&self) -> usize {
        self.current.len()
    }

    fn start(&mut self, chunk: Vec<ReadItem>) {
        self.current_use = Use::of(&chunk);
        self.current = chunk.into();
    }

    fn pop(&mut self) -> Option<ReadItem> {
        let item = self.current.pop_front()?;
        if self.current.is_empty() {
            self.budget.give(std::mem::take(&mut self.current_use));
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::RawRecord;
    use crate::seq::Position;

    fn item(n: u64, bytes: usize) -> ReadItem {
        ReadItem {
            record: RawRecord {
                sequence_number: n.to_string().parse().unwrap(),
                partition_key: "k".into(),
                data: vec![0; bytes].into(),
                approximate_arrival: None,
            },
            sub_sequence: None,
            explicit_hash_key: None,
            position: Position::whole(n.to_string().parse().unwrap()),
            millis_behind: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_reader_waits_while_the_bytes_are_used_and_a_large_record_still_passes() {
        let (tx, mut rx) = channel(100, 1000);
        tx.send(item(1, 600)).await.unwrap();
        let blocked =
            tokio::time::timeout(std::time::Duration::from_secs(1), tx.send(item(2, 600)));
        assert!(blocked.await.is_err(), "1200 bytes do not fit in 1000");
        assert_eq!(rx.recv().await.unwrap().record.data.len(), 600);
        tx.send(item(2, 5000)).await.unwrap();
        assert_eq!(
            rx.try_recv().unwrap().record.data.len(),
            5000,
            "alone, it passes"
        );
        drop(rx);
        assert!(tx.send(item(3, 1)).await.is_err());
    }
}
