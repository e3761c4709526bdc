//! The group events the application can watch ([`Kinesumer::events`](crate::Kinesumer::events)).

use crate::metrics;

/// A change in the group, as seen by this member.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// This process registered as a new incarnation.
    Joined {
        /// The client id.
        client_id: String,
    },
    /// A lease was taken; records of the shard follow.
    LeaseTaken {
        /// The stream.
        stream: String,
        /// The shard.
        shard_id: String,
    },
    /// A lease was given up as planned.
    LeaseReleased {
        /// The stream.
        stream: String,
        /// The shard.
        shard_id: String,
    },
    /// A lease was lost: another owner took it, or a handoff timed out with records
    /// still in the application's hands (they may be delivered again).
    LeaseLost {
        /// The stream.
        stream: String,
        /// The shard.
        shard_id: String,
    },
    /// A closed shard was read to its end and every record processed.
    ShardFinished {
        /// The stream.
        stream: String,
        /// The shard.
        shard_id: String,
    },
    /// A record's handler failed (returned an error or panicked). The error policy
    /// retries it, or gives up on it (a dead letter, or a stop).
    RecordFailed {
        /// The stream.
        stream: String,
        /// The shard.
        shard_id: String,
        /// The record's sequence number.
        sequence_number: String,
        /// Which attempt failed, counting from 1.
        attempt: u32,
        /// The handler's error, or the panic message.
        error: String,
        /// Whether the record is tried again.
        will_retry: bool,
    },
    /// A record its handler gave up on was written to the dead-letter sink; it counts as
    /// processed.
    RecordDeadLettered {
        /// The stream.
        stream: String,
        /// The shard.
        shard_id: String,
        /// The record's sequence number.
        sequence_number: String,
        /// How many attempts it had.
        attempts: u32,
    },
    /// The application stopped taking a shard's records (the error policy gave up on a
    /// record, or the record stream was dropped): the shard is released and read again
    /// from its checkpoint. [`Error::DeliveryStopped`](crate::Error::DeliveryStopped)
    /// says why.
    DeliveryStopped {
        /// The stream.
        stream: String,
        /// The shard.
        shard_id: String,
    },
    /// This member became the leader.
    LeaderGained {
        /// The leader term.
        term: u64,
    },
    /// This member stopped being the leader.
    LeaderLost {
        /// The leader term.
        term: u64,
    },
    /// This member stopped its readers and rejoined as a new incarnation.
    Fenced {
        /// Why.
        reason: String,
    },
    /// Another process took over this client id; this one stopped for good.
    Superseded,
    /// As leader, this member planned a shard onto another member (one event per move,
    /// when it is first planned; a log line says the same).
    ShardMoved {
        /// The stream.
        stream: String,
        /// The shard.
        shard_id: String,
        /// The client id of the lease's owner when it was planned, if any.
        from: Option<String>,
        /// The client id it is planned to.
        to: String,
        /// Why.
        reason: MoveReason,
    },
    /// As leader, this member plans this many shards to no one: every member consuming
    /// their streams is at a limit it declares (`max_shards`, `max_bytes_per_second`), so
    /// they are not read until a member joins or a limit is raised. Sent when the number
    /// changes, 0 when every shard is planned again; a log line says the same, and the
    /// gauge `kinesumer_unplanned_shards` holds it.
    UnplannedShards {
        /// How many.
        count: usize,
    },
    /// The listener of [`Kinesumer::events`](crate::Kinesumer::events) fell behind and
    /// missed this many events.
    Missed {
        /// How many.
        count: u64,
    },
}

/// Why the leader planned a shard onto another member ([`Event::ShardMoved`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum MoveReason {
    /// Rebalancing by count after a member joined (or started consuming the stream).
    Join,
    /// Its owner left: released it, stopped consuming the stream, or restarted.
    Leave,
    /// Its owner was judged gone (its heartbeat stopped).
    Crash,
    /// A child of a split or merge, now that its parents are finished.
    Reshard,
    /// Rebalancing by load (`balance = load`).
    Load,
    /// A shard never leased before (a new stream, or the group's first start).
    New,
    /// Its owner holds more than a limit it declares (`max_shards`,
    /// `max_bytes_per_second`): it started with a lower limit, or its shards grew heavier.
    Limit,
}

impl MoveReason {
    /// The reason as one lowercase word, as logs and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveReason::Join => "join",
            MoveReason::Leave => "leave",
            MoveReason::Crash => "crash",
            MoveReason::Reshard => "reshard",
            MoveReason::Load => "load",
            MoveReason::New => "new",
            MoveReason::Limit => "limit",
        }
    }
}

impl std::fmt::Display for MoveReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    /// Counts the event in the member's metrics, under the application `app`: lease
    /// takes, releases and losses and finished shards per stream, fencings and
    /// supersessions per member.
    pub(crate) fn count(&self, app: &str) {
        let (name, stream) = match self {
            Event::LeaseTaken { stream, .. } => (metrics::LEASE_TAKES, Some(stream)),
            Event::LeaseReleased { stream, .. } => (metrics::LEASE_RELEASES, Some(stream)),
            Event::LeaseLost { stream, .. } => (metrics::LEASE_LOSSES, Some(stream)),
            Event::ShardFinished { stream, .. } => (metrics::SHARDS_FINISHED, Some(stream)),
            Event::ShardMoved { stream, .. } => (metrics::SHARD_MOVES, Some(stream)),
            Event::RecordFailed { stream, .. } => (metrics::HANDLER_FAILURES, Some(stream)),
            Event::RecordDeadLettered { stream, .. } => (metrics::DEAD_LETTERS, Some(stream)),
            Event::DeliveryStopped { stream, .. } => (metrics::DELIVERY_STOPS, Some(stream)),
            Event::Fenced { .. } => (metrics::FENCINGS, None),
            Event::Superseded => (metrics::SUPERSEDED, None),
            // Leadership is the `kinesumer_leader` gauge, unplanned shards the
            // `kinesumer_unplanned_shards` gauge; joining is not worth a series.
            Event::Joined { .. }
            | Event::LeaderGained { .. }
            | Event::LeaderLost { .. }
            | Event::UnplannedShards { .. }
            | Event::Missed { .. } => return,
        };
        metrics::event(app, name, stream.map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;
    use crate::metrics::tests::{id, values};
    use crate::metrics::{FENCINGS, LEASE_LOSSES, LEASE_RELEASES, LEASE_TAKES, SHARDS_FINISHED};

    #[test]
    fn lease_events_count_per_app_and_stream() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let taken = |stream: &str| Event::LeaseTaken {
            stream: stream.into(),
            shard_id: "shardId-1".into(),
        };
        ::metrics::with_local_recorder(&recorder, || {
            for e in [
                taken("s"),
                taken("s"),
                taken("t"),
                Event::LeaseReleased {
                    stream: "s".into(),
                    shard_id: "shardId-1".into(),
                },
                Event::LeaseLost {
                    stream: "t".into(),
                    shard_id: "shardId-1".into(),
                },
                Event::ShardFinished {
                    stream: "s".into(),
                    shard_id: "shardId-1".into(),
                },
                Event::Fenced {
                    reason: "test".into(),
                },
                Event::LeaderGained { term: 1 },
            ] {
                e.count("app");
            }
        });
        let got = values(&snapshotter);
        let s = [("app", "app"), ("stream", "s")];
        let t = [("app", "app"), ("stream", "t")];
        let want = BTreeMap::from([
            (id(LEASE_TAKES, s), DebugValue::Counter(2)),
            (id(LEASE_TAKES, t), DebugValue::Counter(1)),
            (id(LEASE_RELEASES, s), DebugValue::Counter(1)),
            (id(LEASE_LOSSES, t), DebugValue::Counter(1)),
            (id(SHARDS_FINISHED, s), DebugValue::Counter(1)),
            (id(FENCINGS, [("app", "app")]), DebugValue::Counter(1)),
        ]);
        assert_eq!(
            got, want,
            "and leadership events record nothing of their own"
        );
    }
}
