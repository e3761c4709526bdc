//! A shard's buffer between its reader and its delivery: bounded in records (the
//! channel) and in payload bytes (a budget the reader waits on). A stalled application
//! fills it; the reader then waits to send, so it stops calling GetRecords (or stops
//! taking events from its subscription), and memory stays flat.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

use super::feed::ReadItem;

/// A buffer of at most `records` records and, beyond its first record, `bytes` bytes of
/// payload.
pub(crate) fn channel(records: usize, bytes: usize) -> (BufferTx, BufferRx) {
    let (tx, rx) = mpsc::channel(records.max(1));
    let budget = Arc::new(Budget {
        cap: bytes,
        used: Mutex::new(0),
        freed: Notify::new(),
    });
    (
        BufferTx {
            tx,
            budget: budget.clone(),
        },
        BufferRx { rx, budget },
    )
}

#[derive(Debug)]
struct Budget {
    cap: usize,
    used: Mutex<usize>,
    freed: Notify,
}

impl Budget {
    fn used(&self) -> std::sync::MutexGuard<'_, usize> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `n` more bytes fit (always, into an empty buffer: one record larger
    /// than the budget still passes), and takes them.
    async fn take(&self, n: usize) {
        loop {
            let freed = self.freed.notified();
            {
                let mut used = self.used();
                if *used == 0 || used.saturating_add(n) <= self.cap {
                    *used += n;
                    return;
                }
            }
            freed.await;
        }
    }

    fn give(&self, n: usize) {
        let mut used = self.used();
        *used = used.saturating_sub(n);
        drop(used);
        self.freed.notify_waiters();
    }
}

/// The reader's end.
#[derive(Debug, Clone)]
pub(crate) struct BufferTx {
    tx: mpsc::Sender<ReadItem>,
    budget: Arc<Budget>,
}

/// The buffer's receiving end is gone.
#[derive(Debug)]
pub(crate) struct Closed;

impl BufferTx {
    /// Sends `item` once its bytes fit and a slot is free.
    pub(crate) async fn send(&self, item: ReadItem) -> Result<(), Closed> {
        let n = item.record.data.len();
        self.budget.take(n).await;
        self.tx.send(item).await.map_err(|_| {
            self.budget.give(n);
            Closed
        })
    }
}

/// The delivery's end.
#[derive(Debug)]
pub(crate) struct BufferRx {
    rx: mpsc::Receiver<ReadItem>,
    budget: Arc<Budget>,
}

impl BufferRx {
    /// The next item; `None` once the reader ended and the buffer is empty.
    pub(crate) async fn recv(&mut self) -> Option<ReadItem> {
        let item = self.rx.recv().await?;
        self.budget.give(item.record.data.len());
        Some(item)
    }

    /// The next item if one is buffered now.
    pub(crate) fn try_recv(&mut self) -> Option<ReadItem> {
        let item = self.rx.try_recv().ok()?;
        self.budget.give(item.record.data.len());
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
