//! The enhanced fan-out reader (DESIGN §5): one SubscribeToShard subscription per owned
//! shard, handing records to the same bounded channel as the polling reader through the
//! same [`Feed`] (checkpoint skip, aggregation splitting, backoff).
//!
//! ```text
//!  fence ok? ──► SubscribeToShard(from) ──► events ──► skip ≤ checkpoint ──► out
//!     ▲            │ ResourceInUse (first event)  │ continuation sequence number
//!     │            └── back off ≥ 5 s             │ ChildShards: shard end
//!     └── after the continuation ◄── ended (every 5 min) / broke / quiet too long
//!                  quiet and due: ListShards closed + GetRecords drained: shard end
//! ```
//!
//! - A subscription starts from the checkpoint (AFTER_SEQUENCE_NUMBER, or
//!   AT_SEQUENCE_NUMBER inside an aggregate) or the shard's start; each later one from
//!   after the last continuation sequence number, so a resubscription neither loses nor
//!   repeats a record.
//! - Before every SubscribeToShard the member's fence is checked, not only before a
//!   hand-out: on the real service a new subscription evicts the open one after 5 s, so a
//!   woken zombie must never subscribe.
//! - The end of a closed shard comes as an event with ChildShards. The local emulator
//!   never sends one (it keeps sending empty events), so a quiet subscription also
//!   checks, at most every `end_check_interval`, whether ListShards shows the shard
//!   closed and GetRecords after the last record read returns nothing and no next
//!   iterator: then the shard is at its end too.
//!
//! # Cancel safety
//!
//! As the polling reader's: [`read_shard`] returns [`ReaderEnd::Cancelled`] promptly when
//! its token is cancelled, and dropping the subscription ends it at the service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::buffer::BufferTx;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::feed::{Feed, ReadFrom, ReaderEnd};
use super::{FanOutEvent, KinesisApi, KinesisError, Subscription};
use crate::config::Aggregation;
use crate::load::LoadMeter;

/// How long a subscription may go without any event before it is judged broken and
/// replaced. The service sends an event at least every few seconds, empty or not.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The ARNs of the app's stream consumers, per stream: filled when `consume` and
/// `refresh` register them, read when a shard is taken.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConsumerArns(Arc<Mutex<HashMap<String, Arc<str>>>>);

impl ConsumerArns {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<str>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The consumer ARN of `stream`, if registered.
    pub(crate) fn get(&self, stream: &str) -> Option<Arc<str>> {
        self.map().get(stream).cloned()
    }

    /// Records the consumer ARN of `stream`.
    pub(crate) fn insert(&self, stream: &str, arn: &str) {
        self.map().insert(stream.to_owned(), arn.into());
    }
}

/// Whether this member may still open a subscription (its fence).
pub(crate) type MaySubscribe = Arc<dyn Fn() -> bool + Send + Sync>;

/// How a shard is read over fan-out.
#[derive(Debug, Clone)]
pub(crate) struct FanOutConfig {
    /// The ARN of the app's stream consumer on this stream.
    pub(crate) consumer_arn: Arc<str>,
    /// Whether aggregated records are split into their user records.
    pub(crate) aggregation: Aggregation,
    /// How often a quiet subscription checks whether its shard is closed and drained.
    pub(crate) end_check_interval: Duration,
    /// The member's load meter, when it balances by load.
    pub(crate) load: Option<LoadMeter>,
}

/// Reads shard `shard_id` of `stream` from `from` into `out` over fan-out until the shard
/// ends, it is gone, a fatal error, or `cancel`; subscribes only while `may_subscribe`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn read_shard(
    api: Arc<dyn KinesisApi>,
    stream: Arc<str>,
    shard_id: Arc<str>,
    from: ReadFrom,
    cfg: FanOutConfig,
    may_subscribe: MaySubscribe,
    out: BufferTx,
    cancel: CancellationToken,
) -> ReaderEnd {
    let span = tracing::debug_span!("fan_out", stream = %stream, shard = %shard_id);
    let reader = Reader {
        feed: Feed::new(stream, shard_id, from, cfg.aggregation, out, cancel)
            .metered(cfg.load.as_ref()),
        next_end_check: Instant::now() + cfg.end_check_interval,
        api,
        cfg,
        may_subscribe,
    };
    reader.run().instrument(span).await
}

struct Reader {
    api: Arc<dyn KinesisApi>,
    cfg: FanOutConfig,
    may_subscribe: MaySubscribe,
    feed: Feed,
    /// When a quiet subscription may next check for the shard's end.
    next_end_check: Instant,
}

impl Reader {
    async fn run(mut self) -> ReaderEnd {
        loop {
            if !(self.may_subscribe)() {
                tracing::debug!("fenced: no new subscription");
                return ReaderEnd::Cancelled;
            }
            let start = self.feed.resume_start();
            let api = Arc::clone(&self.api);
            let opened = api.subscribe(
                &self.cfg.consumer_arn,
                &self.feed.stream,
                &self.feed.shard_id,
                &start,
            );
            let failure = match self.feed.or_cancel(opened).await {
                None => return ReaderEnd::Cancelled,
                Some(Ok(mut subscription)) => {
                    tracing::debug!(?start, "subscribed");
                    match self.follow(subscription.as_mut()).await {
                        Ok(()) => continue,
                        Err(Follow::End(end)) => return end,
                        Err(Follow::Broke(e)) => e,
                    }
                }
                Some(Err(e)) => e,
            };
            let failure = match self.feed.or_cancel(self.explain_not_found(failure)).await {
                None => return ReaderEnd::Cancelled,
                Some(failure) => failure,
            };
            if let Err(end) = self.feed.recover(failure).await {
                return end;
            }
        }
    }

    /// ResourceNotFound from SubscribeToShard names the shard or the consumer. Only a
    /// shard that ListShards no longer shows is gone (finished, as in polling); a listed
    /// one means the consumer was deregistered under the member, which must never be
    /// taken for the shard's end.
    async fn explain_not_found(&self, e: KinesisError) -> KinesisError {
        if !matches!(e, KinesisError::ShardNotFound { .. }) {
            return e;
        }
        match self.api.list_shards(&self.feed.stream).await {
            Ok(shards)
                if shards
                    .shards
                    .iter()
                    .all(|s| *s.shard_id != *self.feed.shard_id) =>
            {
                e
            }
            Ok(_) => KinesisError::FanOutConsumer {
                stream: self.feed.stream.to_string(),
                consumer: self.cfg.consumer_arn.to_string(),
                reason: "SubscribeToShard does not find it: it was deregistered while this \
                         app reads with it; restart the members to register it again"
                    .to_owned(),
            },
            Err(listing) => listing,
        }
    }

    /// Reads one subscription's events: `Ok` when the service ended it (resubscribe at
    /// once), `Err` when it broke or the reading is over.
    async fn follow(&mut self, subscription: &mut dyn Subscription) -> Result<(), Follow> {
        loop {
            let next = tokio::time::timeout(EVENT_TIMEOUT, subscription.next_event());
            let event = match self.feed.or_cancel(next).await {
                None => return Err(Follow::End(ReaderEnd::Cancelled)),
                Some(Err(_elapsed)) => {
                    return Err(Follow::Broke(KinesisError::Other {
                        operation: "SubscribeToShard",
                        stream: self.feed.stream.to_string(),
                        message: format!("no event for {EVENT_TIMEOUT:?}"),
                    }))
                }
                Some(Ok(Err(e))) => return Err(Follow::Broke(e)),
                Some(Ok(Ok(None))) => {
                    tracing::debug!(after = ?self.feed.last_read(), "subscription ended; resubscribing");
                    return Ok(());
                }
                Some(Ok(Ok(Some(event)))) => event,
            };
            self.feed.succeeded();
            if let Some(end) = self.on_event(event).await {
                return Err(Follow::End(end));
            }
        }
    }

    /// Delivers one event; the reader's end when the shard ended or it was cancelled.
    async fn on_event(&mut self, event: FanOutEvent) -> Option<ReaderEnd> {
        let FanOutEvent {
            records,
            continuation,
            millis_behind,
            child_shards,
            bytes,
        } = event;
        let quiet = records.is_empty();
        if !self.feed.deliver(records, millis_behind, bytes).await {
            return Some(ReaderEnd::Cancelled);
        }
        if let Some(continuation) = continuation {
            self.feed.read_through(continuation);
        }
        if !child_shards.is_empty() {
            return Some(self.feed.shard_end(child_shards));
        }
        if quiet && Instant::now() >= self.next_end_check {
            self.next_end_check = Instant::now() + self.cfg.end_check_interval;
            return self.closed_and_drained().await;
        }
        None
    }

    /// The shard's end when ListShards shows it closed and GetRecords after the last
    /// record read finds nothing more and no next iterator. Failures only postpone the
    /// check (the subscription goes on), except those that end the reader.
    async fn closed_and_drained(&mut self) -> Option<ReaderEnd> {
        let api = Arc::clone(&self.api);
        let (stream, shard_id) = (self.feed.stream.clone(), self.feed.shard_id.clone());
        let check = async {
            let shards = api.list_shards(&stream).await?;
            let closed = shards
                .shards
                .iter()
                .any(|s| s.shard_id == *shard_id && s.closed);
            if !closed {
                return Ok(None);
            }
            let start = self.feed.resume_start();
            let iterator = api.shard_iterator(&stream, &shard_id, &start).await?;
            let page = api.get_records(&stream, &shard_id, &iterator, 1).await?;
            Ok(
                (page.records.is_empty() && page.next_iterator.is_none()).then(|| {
                    tracing::debug!("closed and drained (ListShards, GetRecords)");
                    page.child_shards
                }),
            )
        };
        match self.feed.or_cancel(check).await {
            None => Some(ReaderEnd::Cancelled),
            Some(Ok(None)) => None,
            Some(Ok(Some(children))) => Some(self.feed.shard_end(children)),
            Some(Err(e @ (KinesisError::Throttled { .. } | KinesisError::Other { .. }))) => {
                tracing::debug!(error = %e, "shard end check failed; trying again later");
                None
            }
            Some(Err(e)) => self.feed.recover(e).await.err(),
        }
    }
}

/// Why following a subscription stopped, other than the service ending it.
enum Follow {
    /// The reading is over.
    End(ReaderEnd),
    /// The subscription broke: recover, then subscribe again.
    Broke(KinesisError),
}

#[cfg(test)]
mod tests;
