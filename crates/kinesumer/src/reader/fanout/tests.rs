//! The fan-out reader's event handling against scripted subscriptions (the integration
//! tests run it against kinesis-local).

use std::collections::VecDeque;

use async_trait::async_trait;

use super::*;
use crate::reader::buffer;
use crate::reader::{IteratorStart, RawRecord, RecordsPage, StreamShards};
use crate::seq::{Position, SequenceNumber};
use crate::shards::{ShardInfo, StoredStart};

/// How long each scripted event takes to arrive.
const EVENT_GAP: Duration = Duration::from_millis(500);

type Script = Vec<Result<Option<FanOutEvent>, KinesisError>>;

/// Scripted subscriptions, one script per SubscribeToShard in order (a subscription
/// hangs once its script is done), and a shard that ListShards shows closed and
/// GetRecords shows drained after `pages_before_drained` non-empty pages.
#[derive(Debug, Default)]
struct Fake {
    state: std::sync::Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    scripts: VecDeque<Script>,
    starts: Vec<(IteratorStart, Instant)>,
    closed: bool,
    /// ListShards no longer shows the shard (expired past retention).
    gone: bool,
    /// What SubscribeToShard answers instead of a subscription.
    refuse: Option<KinesisError>,
    pages_before_drained: usize,
    iterators: Vec<IteratorStart>,
}

#[derive(Debug)]
struct FakeSubscription {
    events: VecDeque<Result<Option<FanOutEvent>, KinesisError>>,
}

impl crate::sealed::Sealed for FakeSubscription {}

#[async_trait]
impl Subscription for FakeSubscription {
    async fn next_event(&mut self) -> Result<Option<FanOutEvent>, KinesisError> {
        match self.events.pop_front() {
            Some(event) => {
                tokio::time::sleep(EVENT_GAP).await;
                event
            }
            None => std::future::pending().await,
        }
    }
}

impl Fake {
    fn new(scripts: Vec<Script>) -> Arc<Self> {
        Arc::new(Self {
            state: std::sync::Mutex::new(FakeState {
                scripts: scripts.into(),
                ..FakeState::default()
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    fn starts(&self) -> Vec<IteratorStart> {
        self.state().starts.iter().map(|(s, _)| s.clone()).collect()
    }
}

impl crate::sealed::Sealed for Fake {}

#[async_trait]
impl KinesisApi for Fake {
    async fn list_shards(&self, _: &str) -> Result<StreamShards, KinesisError> {
        let (closed, gone) = {
            let s = self.state();
            (s.closed, s.gone)
        };
        if gone {
            return Ok(StreamShards::default());
        }
        Ok(StreamShards {
            shards: vec![ShardInfo {
                shard_id: "shard-0".into(),
                parent: None,
                adjacent_parent: None,
                closed,
                hash_range: None,
                ending_sequence: closed.then(|| "99".to_owned()),
            }],
        })
    }

    async fn shard_iterator(
        &self,
        _: &str,
        _: &str,
        start: &IteratorStart,
    ) -> Result<String, KinesisError> {
        self.state().iterators.push(start.clone());
        Ok("it".into())
    }

    async fn get_records(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: i32,
    ) -> Result<RecordsPage, KinesisError> {
        let mut s = self.state();
        if s.pages_before_drained > 0 {
            s.pages_before_drained -= 1;
            return Ok(RecordsPage {
                records: records(&[50]),
                next_iterator: Some("next".into()),
                ..RecordsPage::default()
            });
        }
        Ok(RecordsPage {
            child_shards: vec!["child".into()],
            ..RecordsPage::default()
        })
    }

    async fn subscribe(
        &self,
        consumer_arn: &str,
        _: &str,
        _: &str,
        start: &IteratorStart,
    ) -> Result<Box<dyn Subscription>, KinesisError> {
        assert_eq!(consumer_arn, "arn:consumer");
        let mut s = self.state();
        s.starts.push((start.clone(), Instant::now()));
        if let Some(e) = s.refuse.clone() {
            return Err(e);
        }
        let events = s.scripts.pop_front().unwrap_or_default().into();
        Ok(Box::new(FakeSubscription { events }))
    }
}

fn seq(n: u64) -> SequenceNumber {
    n.to_string().parse().unwrap()
}

fn records(seqs: &[u64]) -> Vec<RawRecord> {
    seqs.iter()
        .map(|&n| RawRecord {
            sequence_number: seq(n),
            partition_key: "pk".into(),
            data: vec![0xff; 10].into(),
            approximate_arrival: None,
        })
        .collect()
}

/// An event of records `seqs`, continuing after `continuation`.
fn event(seqs: &[u64], continuation: u64) -> Result<Option<FanOutEvent>, KinesisError> {
    Ok(Some(FanOutEvent {
        records: records(seqs),
        continuation: Some(seq(continuation)),
        millis_behind: Some(0),
        child_shards: vec![],
        bytes: seqs.len() * 10,
    }))
}

fn in_use() -> Result<Option<FanOutEvent>, KinesisError> {
    Err(KinesisError::ResourceInUse {
        operation: "SubscribeToShard",
        stream: "s".into(),
        message: "another subscription is open".into(),
    })
}

/// Runs the reader to its end; returns the sequence numbers sent and the end.
async fn run(
    fake: &Arc<Fake>,
    from: ReadFrom,
    may_subscribe: MaySubscribe,
) -> (Vec<u64>, ReaderEnd) {
    let (tx, mut rx) = buffer::channel(100, usize::MAX);
    let cfg = FanOutConfig {
        consumer_arn: "arn:consumer".into(),
        aggregation: Aggregation::Split,
        end_check_interval: Duration::from_secs(2),
        load: None,
    };
    let task = tokio::spawn(read_shard(
        fake.clone(),
        "s".into(),
        "shard-0".into(),
        from,
        cfg,
        may_subscribe,
        tx,
        CancellationToken::new(),
    ));
    let mut got = Vec::new();
    while let Some(item) = rx.recv().await {
        got.push(item.record.sequence_number.as_str().parse().unwrap());
    }
    (got, task.await.unwrap())
}

fn always() -> MaySubscribe {
    Arc::new(|| true)
}

fn shard_end(end: &ReaderEnd) -> (Option<u64>, Vec<String>) {
    match end {
        ReaderEnd::ShardEnd { last, children } => (
            last.as_ref().map(|p| p.sequence.as_str().parse().unwrap()),
            children.clone(),
        ),
        other => panic!("expected the shard's end, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn child_shards_end_the_shard_after_its_records() {
    let mut last = event(&[3], 3);
    if let Ok(Some(e)) = &mut last {
        e.child_shards = vec!["shard-1".into(), "shard-2".into()];
    }
    let fake = Fake::new(vec![vec![event(&[1, 2], 2), last]]);
    let (got, end) = run(&fake, ReadFrom::Start(StoredStart::TrimHorizon), always()).await;
    assert_eq!(got, [1, 2, 3]);
    assert_eq!(
        shard_end(&end),
        (Some(3), vec!["shard-1".to_owned(), "shard-2".to_owned()])
    );
    assert_eq!(fake.starts(), [IteratorStart::TrimHorizon]);
}

#[tokio::test(start_paused = true)]
async fn resubscribes_from_the_continuation_without_loss_or_repeats() {
    let mut end = event(&[16], 16);
    if let Ok(Some(e)) = &mut end {
        e.child_shards = vec!["child".into()];
    }
    let fake = Fake::new(vec![
        // Ends after 5 minutes on the real service.
        vec![event(&[9, 10, 11, 12], 12), Ok(None)],
        // The previous subscription is still in use.
        vec![in_use()],
        // An empty event moves the continuation on; then the subscription breaks.
        vec![event(&[], 15), Err(other())],
        vec![end],
    ]);
    let checkpoint = ReadFrom::After(Position::whole(seq(10)));
    let (got, end) = run(&fake, checkpoint, always()).await;
    assert_eq!(
        got,
        [11, 12, 16],
        "nothing at or before the checkpoint, nothing twice"
    );
    assert_eq!(shard_end(&end).0, Some(16));
    assert_eq!(
        fake.starts(),
        [
            IteratorStart::After(seq(10)),
            IteratorStart::After(seq(12)),
            IteratorStart::After(seq(12)),
            IteratorStart::After(seq(15)),
        ]
    );
    let at: Vec<Instant> = fake.state().starts.iter().map(|(_, at)| *at).collect();
    assert!(
        at[2] - at[1] >= Duration::from_secs(5),
        "ResourceInUse waits at least 5 s"
    );
}

fn other() -> KinesisError {
    KinesisError::Other {
        operation: "SubscribeToShard",
        stream: "s".into(),
        message: "connection reset".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_closed_and_drained_shard_ends_without_child_shards() {
    // As kinesis-local: empty events for ever, never ChildShards.
    let mut script = vec![event(&[1], 1)];
    script.extend((0..40).map(|_| event(&[], 1)));
    let fake = Fake::new(vec![script]);
    {
        let mut s = fake.state();
        s.closed = true;
        s.pages_before_drained = 1;
    }
    let (got, end) = run(&fake, ReadFrom::Start(StoredStart::TrimHorizon), always()).await;
    assert_eq!(got, [1]);
    assert_eq!(shard_end(&end), (Some(1), vec!["child".to_owned()]));
    // Checked after the last record read; the first check found records still to come.
    let iterators = fake.state().iterators.clone();
    assert_eq!(iterators, vec![IteratorStart::After(seq(1)); 2]);
}

#[tokio::test(start_paused = true)]
async fn an_open_shard_is_not_ended_by_quiet_subscriptions() {
    let fake = Fake::new(vec![(0..40).map(|_| event(&[], 1)).collect()]);
    let (tx, _rx) = buffer::channel(10, usize::MAX);
    let cfg = FanOutConfig {
        consumer_arn: "arn:consumer".into(),
        aggregation: Aggregation::Split,
        end_check_interval: Duration::from_secs(2),
        load: None,
    };
    let read = read_shard(
        fake.clone(),
        "s".into(),
        "shard-0".into(),
        ReadFrom::Start(StoredStart::TrimHorizon),
        cfg,
        always(),
        tx,
        CancellationToken::new(),
    );
    assert!(tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .is_err());
    assert!(fake.state().iterators.is_empty(), "open: never drained");
}

#[tokio::test(start_paused = true)]
async fn a_fenced_member_never_subscribes() {
    let fake = Fake::new(vec![vec![event(&[1], 1)]]);
    let fenced: MaySubscribe = Arc::new(|| false);
    let (got, end) = run(&fake, ReadFrom::Start(StoredStart::TrimHorizon), fenced).await;
    assert!(got.is_empty());
    assert!(matches!(end, ReaderEnd::Cancelled), "{end:?}");
    assert!(fake.starts().is_empty());
}

/// ResourceNotFound from SubscribeToShard: the shard's end only when ListShards no longer
/// shows it; otherwise the consumer went, which stops the reader without finishing it.
#[tokio::test(start_paused = true)]
async fn not_found_is_the_shard_s_end_only_when_the_shard_is_gone() {
    for (gone, finished) in [(true, true), (false, false)] {
        let fake = Fake::new(vec![]);
        {
            let mut s = fake.state();
            s.gone = gone;
            s.refuse = Some(KinesisError::ShardNotFound {
                stream: "s".into(),
                shard_id: "shard-0".into(),
            });
        }
        let (_, end) = run(&fake, ReadFrom::Start(StoredStart::TrimHorizon), always()).await;
        match end {
            ReaderEnd::ShardGone { last: None } => assert!(finished),
            ReaderEnd::Fatal(KinesisError::FanOutConsumer {
                consumer, reason, ..
            }) => {
                assert!(!finished);
                assert_eq!(consumer, "arn:consumer");
                assert!(reason.contains("deregistered"), "{reason}");
            }
            other => panic!("gone={gone}: {other:?}"),
        }
    }
}
