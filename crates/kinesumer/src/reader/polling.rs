//! The polling reader: one task per owned shard, reading with GetRecords within the
//! per-shard limits of Kinesis and handing records to a bounded channel through its
//! [`Feed`] (the checkpoint skip and the splitting of aggregated records, shared with
//! the fan-out reader).
//!
//! ```text
//!  GetShardIterator ──► GetRecords ──► skip ≤ checkpoint ──► out (bounded: backpressure)
//!        ▲                  │  ▲
//!        │ expired          │  └── wait: ≥ 200 ms between calls, bytes ÷ 2 MB/s,
//!        └── after the last ┘      scan_interval when caught up, backoff on errors
//!            record read
//! ```
//!
//! A reader touches only its own shard: its errors, waits and backpressure never pause
//! another shard's reader, each being its own task.
//!
//! # Cancel safety
//!
//! [`read_shard`] returns [`ReaderEnd::Cancelled`] promptly when its token is cancelled,
//! whatever it waits on (a call, a sleep, a full channel). Records already sent stay sent;
//! a record being sent when the token fires is not delivered.

use std::sync::Arc;
use std::time::Duration;

use super::buffer::BufferTx;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::feed::{Feed, ReadFrom, ReaderEnd};
use super::{within, KinesisApi, KinesisError, RecordsPage};
use crate::config::Aggregation;
use crate::load::LoadMeter;

/// Kinesis allows 5 GetRecords calls per second per shard, shared by every reader of
/// the stream ("Kinesis Data Streams quotas and limits", GetRecords): at least 200 ms
/// between the starts of two calls.
const MIN_CALL_SPACING: Duration = Duration::from_millis(200);

/// Kinesis reads at most 2 MB per second per shard (same page). One call may return up
/// to 10 MB; calls within the next 5 s are then throttled, so after `B` bytes the next
/// call waits `B ÷ 2 MB/s` from the start of the previous one. Counted in decimal
/// megabytes, the more cautious reading.
const READ_BYTES_PER_SEC: f64 = 2_000_000.0;

/// How a shard is read.
#[derive(Debug, Clone)]
pub(crate) struct PollingConfig {
    /// Records asked for per GetRecords call (the config's `scan_limit`).
    pub(crate) limit: i32,
    /// The wait before the next call when the shard is caught up.
    pub(crate) scan_interval: Duration,
    /// The bound of one GetRecords call; a call that takes longer is retried.
    pub(crate) scan_timeout: Duration,
    /// Whether aggregated records are split into their user records.
    pub(crate) aggregation: Aggregation,
    /// The member's load meter, when it balances by load.
    pub(crate) load: Option<LoadMeter>,
}

/// Reads shard `shard_id` of `stream` from `from` into `out` until the shard ends, it is
/// gone, a fatal error, or `cancel`.
///
/// Throttles and transient errors (timeouts, connection failures, 5xx) are retried for
/// ever with exponential backoff and full jitter; an expired iterator is replaced by one
/// after the last record read.
pub(crate) async fn read_shard(
    api: Arc<dyn KinesisApi>,
    stream: Arc<str>,
    shard_id: Arc<str>,
    from: ReadFrom,
    cfg: PollingConfig,
    out: BufferTx,
    cancel: CancellationToken,
) -> ReaderEnd {
    let span = tracing::debug_span!("read_shard", stream = %stream, shard = %shard_id);
    let reader = Reader {
        feed: Feed::new(stream, shard_id, from, cfg.aggregation, out, cancel)
            .metered(cfg.load.as_ref()),
        api,
        cfg,
    };
    reader.run().instrument(span).await
}

struct Reader {
    api: Arc<dyn KinesisApi>,
    cfg: PollingConfig,
    feed: Feed,
}

impl Reader {
    async fn run(mut self) -> ReaderEnd {
        let mut iterator: Option<String> = None;
        let mut next_call = Instant::now();
        loop {
            let it = match iterator.take() {
                Some(it) => it,
                None => {
                    let start = self.feed.resume_start();
                    let api = Arc::clone(&self.api);
                    let got = within(
                        self.cfg.scan_timeout,
                        "GetShardIterator",
                        &self.feed.stream,
                        api.shard_iterator(&self.feed.stream, &self.feed.shard_id, &start),
                    );
                    match self.feed.or_cancel(got).await {
                        None => return ReaderEnd::Cancelled,
                        Some(Ok(it)) => it,
                        Some(Err(e)) => match self.feed.recover(e).await {
                            Ok(()) => continue,
                            Err(end) => return end,
                        },
                    }
                }
            };
            if self
                .feed
                .or_cancel(tokio::time::sleep_until(next_call))
                .await
                .is_none()
            {
                return ReaderEnd::Cancelled;
            }
            let started = Instant::now();
            next_call = started + MIN_CALL_SPACING;
            let call = within(
                self.cfg.scan_timeout,
                "GetRecords",
                &self.feed.stream,
                self.api
                    .get_records(&self.feed.stream, &self.feed.shard_id, &it, self.cfg.limit),
            );
            let Some(result) = self.feed.or_cancel(call).await else {
                return ReaderEnd::Cancelled;
            };
            match result {
                Ok(page) => {
                    self.feed.succeeded();
                    next_call = self.next_call_after(started, &page);
                    let RecordsPage {
                        records,
                        next_iterator,
                        millis_behind,
                        child_shards,
                        bytes,
                    } = page;
                    if !self.feed.deliver(records, millis_behind, bytes).await {
                        return ReaderEnd::Cancelled;
                    }
                    match next_iterator {
                        Some(next) => iterator = Some(next),
                        None => return self.feed.shard_end(child_shards),
                    }
                }
                Err(e) => {
                    // An iterator stays valid for 5 minutes and may be used again: keep
                    // it for the retry unless it is the thing that expired.
                    if !matches!(e, KinesisError::ExpiredIterator) {
                        iterator = Some(it);
                    }
                    if let Err(end) = self.feed.recover(e).await {
                        return end;
                    }
                }
            }
        }
    }

    /// When the call after a page that was asked for at `started` may start.
    fn next_call_after(&self, started: Instant, page: &RecordsPage) -> Instant {
        let for_bytes = Duration::from_secs_f64(page.bytes as f64 / READ_BYTES_PER_SEC);
        let earliest = started + MIN_CALL_SPACING.max(for_bytes);
        // Behind and getting records: read again as soon as the limits allow.
        // Caught up (or an empty page, such as the gaps of a sparse shard): idle.
        let behind = page.millis_behind.is_some_and(|m| m > 0) && !page.records.is_empty();
        if behind {
            earliest
        } else {
            earliest.max(Instant::now() + self.cfg.scan_interval)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::reader::buffer::{self, BufferRx};
    use crate::reader::feed::ReadItem;
    use crate::reader::{aggregation, IteratorStart, RawRecord, StreamShards};
    use crate::seq::{Position, SequenceNumber};
    use crate::shards::StoredStart;

    /// A scripted Kinesis shard: GetRecords answers from a queue (and hangs once it is
    /// empty); every call is recorded with its instant.
    #[derive(Debug, Default)]
    struct Fake {
        state: Mutex<FakeState>,
    }

    #[derive(Debug, Default)]
    struct FakeState {
        pages: VecDeque<Result<RecordsPage, KinesisError>>,
        iterators: Vec<IteratorStart>,
        calls: Vec<(String, Instant)>,
    }

    impl Fake {
        fn new(pages: Vec<Result<RecordsPage, KinesisError>>) -> Arc<Self> {
            Arc::new(Self {
                state: Mutex::new(FakeState {
                    pages: pages.into(),
                    ..FakeState::default()
                }),
            })
        }

        fn iterators(&self) -> Vec<IteratorStart> {
            self.state.lock().unwrap().iterators.clone()
        }

        fn calls(&self) -> Vec<(String, Instant)> {
            self.state.lock().unwrap().calls.clone()
        }

        fn gaps(&self) -> Vec<Duration> {
            let calls = self.calls();
            calls.windows(2).map(|w| w[1].1 - w[0].1).collect()
        }
    }

    impl crate::sealed::Sealed for Fake {}

    #[async_trait]
    impl KinesisApi for Fake {
        async fn list_shards(&self, _: &str) -> Result<StreamShards, KinesisError> {
            unreachable!("the reader never lists shards")
        }

        async fn shard_iterator(
            &self,
            _: &str,
            _: &str,
            start: &IteratorStart,
        ) -> Result<String, KinesisError> {
            let mut s = self.state.lock().unwrap();
            s.iterators.push(start.clone());
            Ok(format!("it-{}", s.iterators.len()))
        }

        async fn get_records(
            &self,
            _: &str,
            _: &str,
            iterator: &str,
            _: i32,
        ) -> Result<RecordsPage, KinesisError> {
            let next = {
                let mut s = self.state.lock().unwrap();
                s.calls.push((iterator.to_owned(), Instant::now()));
                s.pages.pop_front()
            };
            match next {
                Some(page) => page,
                None => std::future::pending().await,
            }
        }
    }

    fn seq(n: u64) -> SequenceNumber {
        n.to_string().parse().unwrap()
    }

    /// A page of records `seqs` (10 bytes each), `behind` ms behind, and a next
    /// iterator unless `last`.
    fn page(seqs: &[u64], behind: i64, last: bool) -> Result<RecordsPage, KinesisError> {
        let records = seqs.iter().map(|&n| (n, vec![0xff; 10])).collect();
        page_of(records, behind, last)
    }

    /// A page of records (sequence number, data).
    fn page_of(
        records: Vec<(u64, Vec<u8>)>,
        behind: i64,
        last: bool,
    ) -> Result<RecordsPage, KinesisError> {
        let records: Vec<RawRecord> = records
            .into_iter()
            .map(|(n, data)| RawRecord {
                sequence_number: seq(n),
                partition_key: "pk".into(),
                data: data.into(),
                approximate_arrival: None,
            })
            .collect();
        Ok(RecordsPage {
            bytes: records.iter().map(|r| r.data.len()).sum(),
            records,
            next_iterator: (!last).then(|| "next".to_owned()),
            millis_behind: Some(behind),
            child_shards: if last { vec!["child".into()] } else { vec![] },
        })
    }

    fn other() -> Result<RecordsPage, KinesisError> {
        Err(KinesisError::Other {
            operation: "GetRecords",
            stream: "s".into(),
            message: "HTTP 500".into(),
        })
    }

    fn throttled() -> Result<RecordsPage, KinesisError> {
        Err(KinesisError::Throttled {
            operation: "GetRecords",
            stream: "s".into(),
        })
    }

    struct Running {
        rx: BufferRx,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<ReaderEnd>,
    }

    impl Running {
        /// Receives until the reader ends, then returns the sequence numbers received and
        /// how it ended.
        async fn drain(self) -> (Vec<u64>, ReaderEnd) {
            let (items, end) = self.drain_items().await;
            let got = items
                .iter()
                .map(|i| i.record.sequence_number.as_str().parse().unwrap())
                .collect();
            (got, end)
        }

        /// Receives every item until the reader ends.
        async fn drain_items(mut self) -> (Vec<ReadItem>, ReaderEnd) {
            let mut got = Vec::new();
            while let Some(item) = self.rx.recv().await {
                got.push(item);
            }
            (got, self.task.await.unwrap())
        }
    }

    fn start(fake: &Arc<Fake>, from: ReadFrom, capacity: usize) -> Running {
        start_with(fake, from, capacity, Aggregation::Split)
    }

    fn start_with(
        fake: &Arc<Fake>,
        from: ReadFrom,
        capacity: usize,
        aggregation: Aggregation,
    ) -> Running {
        let (tx, rx) = buffer::channel(capacity, usize::MAX);
        let cancel = CancellationToken::new();
        let cfg = PollingConfig {
            limit: 100,
            scan_interval: Duration::from_secs(1),
            scan_timeout: Duration::from_secs(3),
            aggregation,
            load: None,
        };
        let task = tokio::spawn(read_shard(
            fake.clone(),
            "s".into(),
            "shard-0".into(),
            from,
            cfg,
            tx,
            cancel.clone(),
        ));
        Running { rx, cancel, task }
    }

    const TRIM: ReadFrom = ReadFrom::Start(StoredStart::TrimHorizon);

    fn end_last(end: &ReaderEnd) -> Option<u64> {
        match end {
            ReaderEnd::ShardEnd { last, children } => {
                assert_eq!(children, &["child".to_owned()]);
                last.as_ref().map(|p| {
                    assert_eq!(p.sub_sequence, None, "a shard ends on a whole record");
                    p.sequence.as_str().parse().unwrap()
                })
            }
            other => panic!("expected the shard's end, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_five_calls_per_second_and_two_megabytes_per_second() {
        let mut big = page(&[6], 1000, false).unwrap();
        big.bytes = 4_000_000;
        let mut pages: Vec<_> = (1..=5).map(|n| page(&[n], 1000, false)).collect();
        pages.push(Ok(big));
        pages.push(page(&[7], 1000, true));
        let fake = Fake::new(pages);
        let (got, end) = start(&fake, TRIM, 100).drain().await;
        assert_eq!(got, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(end_last(&end), Some(7));
        let gaps = fake.gaps();
        // Behind: every call as early as the 5 calls/s limit allows...
        assert!(gaps[..5].iter().all(|g| *g == MIN_CALL_SPACING), "{gaps:?}");
        // ...and after 4 MB, 2 s for 2 MB/s.
        assert_eq!(gaps[5], Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn reads_at_once_while_behind_and_idles_when_caught_up() {
        let fake = Fake::new(vec![
            page(&[1], 5000, false), // behind: next call at once (200 ms)
            page(&[2], 0, false),    // caught up: scan_interval
            page(&[], 5000, false),  // behind but empty: scan_interval
            page(&[3], 5000, false), // behind
            page(&[4], 0, true),
        ]);
        let (got, _) = start(&fake, TRIM, 100).drain().await;
        assert_eq!(got, [1, 2, 3, 4]);
        let ms = |n| Duration::from_millis(n);
        assert_eq!(fake.gaps(), [ms(200), ms(1000), ms(1000), ms(200)]);
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_back_off_then_recover_without_loss_or_duplicates() {
        let fake = Fake::new(vec![
            page(&[1, 2], 1000, false),
            throttled(),
            throttled(),
            other(),
            throttled(),
            page(&[3, 4], 0, true),
        ]);
        let (got, end) = start(&fake, TRIM, 100).drain().await;
        assert_eq!(got, [1, 2, 3, 4]);
        assert_eq!(end_last(&end), Some(4));
        // The iterator survives throttling: the same one is retried.
        assert_eq!(fake.iterators(), [IteratorStart::TrimHorizon]);
        let calls = fake.calls();
        assert!(calls[1..].iter().all(|(it, _)| it == "next"), "{calls:?}");
        assert!(fake.gaps().iter().all(|g| *g >= MIN_CALL_SPACING));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_iterator_resumes_after_the_last_record_read() {
        let fake = Fake::new(vec![
            Err(KinesisError::ExpiredIterator), // nothing read yet: the original start
            page(&[11, 12, 13], 1000, false),
            Err(KinesisError::ExpiredIterator),
            page(&[14], 0, true),
        ]);
        let checkpoint = ReadFrom::After(Position::whole(seq(10)));
        // A one-slot channel: the application is far behind the reader.
        let (got, _) = start(&fake, checkpoint, 1).drain().await;
        assert_eq!(got, [11, 12, 13, 14]);
        assert_eq!(
            fake.iterators(),
            [
                IteratorStart::After(seq(10)),
                IteratorStart::After(seq(10)),
                IteratorStart::After(seq(13)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_shard_ends_only_after_every_record_was_sent() {
        let fake = Fake::new(vec![page(&[1, 2, 3], 0, true)]);
        let mut r = start(&fake, TRIM, 1);
        assert_eq!(r.rx.recv().await.unwrap().record.sequence_number, seq(1));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!r.task.is_finished(), "ended with records unsent");
        let (got, end) = r.drain().await;
        assert_eq!(got, [2, 3]);
        assert_eq!(end_last(&end), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_shard_is_gone_at_once() {
        let fake = Fake::new(vec![Err(KinesisError::ShardNotFound {
            stream: "s".into(),
            shard_id: "shard-0".into(),
        })]);
        let (got, end) = start(&fake, TRIM, 1).drain().await;
        assert!(got.is_empty());
        assert!(
            matches!(end, ReaderEnd::ShardGone { last: None }),
            "{end:?}"
        );
        assert_eq!(fake.calls().len(), 1, "never spins on a missing shard");
    }

    #[tokio::test(start_paused = true)]
    async fn access_denied_is_fatal() {
        let fake = Fake::new(vec![Err(KinesisError::AccessDenied {
            operation: "GetRecords",
            stream: "s".into(),
            message: "no".into(),
        })]);
        let (_, end) = start(&fake, TRIM, 1).drain().await;
        assert!(
            matches!(end, ReaderEnd::Fatal(KinesisError::AccessDenied { .. })),
            "{end:?}"
        );
    }

    /// Lets the reader run for `after`, cancels it, and checks that it ends at once.
    async fn cancel_after(r: Running, after: Duration) {
        tokio::time::sleep(after).await;
        r.cancel.cancel();
        let end = tokio::time::timeout(Duration::from_millis(1), r.task)
            .await
            .expect("cancelled promptly")
            .unwrap();
        assert!(matches!(end, ReaderEnd::Cancelled), "{end:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_is_prompt_on_a_full_channel_and_while_waiting() {
        // Blocked on a send: a one-slot channel and three records.
        let fake = Fake::new(vec![page(&[1, 2, 3], 0, false)]);
        cancel_after(start(&fake, TRIM, 1), Duration::from_secs(1)).await;
        // Blocked in a call that does not answer, or in the backoff after its timeout.
        let fake = Fake::new(vec![]);
        cancel_after(start(&fake, TRIM, 1), Duration::from_millis(3100)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_receiver_stops_the_reader() {
        let fake = Fake::new(vec![page(&[1, 2], 0, false)]);
        let r = start(&fake, TRIM, 1);
        drop(r.rx);
        let end = r.task.await.unwrap();
        assert!(matches!(end, ReaderEnd::Cancelled), "{end:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_call_is_retried() {
        // The first call hangs past scan_timeout; the pages are pushed after it started.
        let fake = Fake::new(vec![]);
        let r = start(&fake, TRIM, 10);
        tokio::time::sleep(Duration::from_millis(100)).await;
        fake.state
            .lock()
            .unwrap()
            .pages
            .push_back(page(&[1], 0, true));
        let (got, _) = r.drain().await;
        assert_eq!(got, [1]);
        let gaps = fake.gaps();
        assert!(gaps[0] >= Duration::from_secs(3), "{gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn resumes_inside_an_aggregated_record_at_its_sequence_number() {
        let checkpoint = Position {
            sequence: seq(7),
            sub_sequence: Some(3),
        };
        // Record 6 should not come back at AT_SEQUENCE_NUMBER 7; if it does, it is done.
        let fake = Fake::new(vec![page(&[6, 7, 8], 0, true)]);
        let mut r = start(&fake, ReadFrom::After(checkpoint), 10);
        let seven = r.rx.recv().await.unwrap();
        assert_eq!(seven.record.sequence_number, seq(7));
        assert_eq!(seven.millis_behind, Some(0));
        let eight = r.rx.recv().await.unwrap();
        assert_eq!(eight.record.sequence_number, seq(8));
        assert_eq!(fake.iterators(), [IteratorStart::At(seq(7))]);
        let (rest, end) = r.drain().await;
        assert!(rest.is_empty());
        assert_eq!(end_last(&end), Some(8));
    }

    #[tokio::test(start_paused = true)]
    async fn records_at_or_before_a_whole_checkpoint_are_skipped() {
        let fake = Fake::new(vec![page(&[9, 10, 11], 0, true)]);
        let (got, _) = start(&fake, ReadFrom::After(Position::whole(seq(10))), 10)
            .drain()
            .await;
        assert_eq!(got, [11]);
        assert_eq!(fake.iterators(), [IteratorStart::After(seq(10))]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_past_the_first_chunks_of_a_page_skips_through_it_and_no_further() {
        // Chunks of two records (an eighth of 16): the page is sent a chunk at a time, and
        // the checkpoint covers its first two chunks and half the third.
        let fake = Fake::new(vec![page(&(1..=12).collect::<Vec<_>>(), 0, true)]);
        let (got, end) = start(&fake, ReadFrom::After(Position::whole(seq(5))), 16)
            .drain()
            .await;
        assert_eq!(got, (6..=12).collect::<Vec<_>>());
        assert_eq!(end_last(&end), Some(12));
    }

    #[tokio::test(start_paused = true)]
    async fn a_checkpoint_past_a_whole_page_skips_on_into_the_next() {
        let fake = Fake::new(vec![
            page(&(1..=12).collect::<Vec<_>>(), 1000, false),
            page(&[13, 14, 15, 16], 0, true),
        ]);
        let (got, end) = start(&fake, ReadFrom::After(Position::whole(seq(14))), 16)
            .drain()
            .await;
        assert_eq!(got, [15, 16]);
        assert_eq!(end_last(&end), Some(16));
    }

    /// An aggregate of the independent vectors: 10 user records.
    fn ten() -> Vec<u8> {
        aggregation::tests::fixture("shared_keys")
    }

    fn at(n: u64, sub: Option<u64>) -> Position {
        Position {
            sequence: seq(n),
            sub_sequence: sub,
        }
    }

    fn positions(items: &[ReadItem]) -> Vec<Position> {
        items.iter().map(|i| i.position.clone()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn aggregates_are_split_and_their_last_user_record_stands_for_the_whole() {
        let fake = Fake::new(vec![page_of(
            vec![(1, b"plain".to_vec()), (2, ten()), (3, b"after".to_vec())],
            0,
            true,
        )]);
        let (items, end) = start(&fake, TRIM, 100).drain_items().await;
        let mut want = vec![Position::whole(seq(1))];
        want.extend((0..9).map(|i| at(2, Some(i))));
        want.extend([Position::whole(seq(2)), Position::whole(seq(3))]);
        assert_eq!(positions(&items), want);
        let subs: Vec<_> = items.iter().map(|i| i.sub_sequence).collect();
        assert_eq!(subs[1..11], (0..10).map(Some).collect::<Vec<_>>());
        let keys: String = items[1..11]
            .iter()
            .map(|i| i.record.partition_key.as_str())
            .collect();
        assert_eq!(keys, "abcabbacca");
        assert_eq!(items[1].record.data, &b"shared-0"[..]);
        assert_eq!(end_last(&end), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn resumes_at_the_user_record_after_a_checkpoint_inside_an_aggregate() {
        let fake = Fake::new(vec![page_of(
            vec![(2, ten()), (3, b"after".to_vec())],
            0,
            true,
        )]);
        let (items, end) = start(&fake, ReadFrom::After(at(2, Some(6))), 100)
            .drain_items()
            .await;
        assert_eq!(
            positions(&items),
            [
                at(2, Some(7)),
                at(2, Some(8)),
                Position::whole(seq(2)),
                Position::whole(seq(3))
            ]
        );
        assert_eq!(items[0].record.data, &b"shared-7"[..]);
        assert_eq!(fake.iterators(), [IteratorStart::At(seq(2))]);
        assert_eq!(end_last(&end), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_ending_in_an_aggregate_or_an_empty_one_ends_on_the_last_item_sent() {
        let fake = Fake::new(vec![page_of(vec![(1, b"x".to_vec()), (2, ten())], 0, true)]);
        let (items, end) = start(&fake, TRIM, 100).drain_items().await;
        assert_eq!(items.len(), 11);
        assert_eq!(end_last(&end), Some(2));
        // The empty aggregate sends nothing: the shard waits only for record 1.
        let empty = aggregation::tests::fixture("empty");
        let fake = Fake::new(vec![page_of(vec![(1, b"x".to_vec()), (2, empty)], 0, true)]);
        let (items, end) = start(&fake, TRIM, 100).drain_items().await;
        assert_eq!(positions(&items), [Position::whole(seq(1))]);
        assert_eq!(end_last(&end), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn malformed_aggregates_and_raw_mode_deliver_records_as_they_are() {
        let mut broken = ten();
        let last = broken.len() - 1;
        broken[last] ^= 1; // the MD5 no longer matches
        let fake = Fake::new(vec![page_of(vec![(1, broken.clone())], 0, true)]);
        let (items, _) = start(&fake, TRIM, 100).drain_items().await;
        assert_eq!(positions(&items), [Position::whole(seq(1))]);
        assert_eq!(items[0].record.data, broken);
        assert_eq!(items[0].sub_sequence, None);

        let fake = Fake::new(vec![page_of(vec![(1, ten())], 0, true)]);
        let (items, _) = start_with(&fake, TRIM, 100, Aggregation::Raw)
            .drain_items()
            .await;
        assert_eq!(positions(&items), [Position::whole(seq(1))]);
        assert_eq!(items[0].record.data, ten());
    }
}
