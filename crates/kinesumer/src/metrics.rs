//! The metrics a member records through the [`metrics`] facade: every name,
//! its kind, unit, labels and meaning, in one place ([`ALL`]).
//!
//! The crate records and never exports: the application installs the recorder of its
//! choice (Prometheus, StatsD, …) and then calls [`describe`], so the exporter shows each
//! metric's help text and unit. Without a recorder, recording costs next to nothing.
//!
//! Names follow one scheme: the prefix `kinesumer_`, and the unit at the end — `_total`
//! for counters, `_ms`, `_seconds` or `_bytes_total` where there is a unit. Labels:
//!
//! - `stream`, `shard` on what one shard's reader and delivery record;
//! - `app` on what the member as a whole records (held shards, leadership, lease
//!   events, rebalancing), and `stream` too on lease events;
//! - `op` on state-store requests ([`Operation::name`](crate::store::Operation::name)).
//!
//! No label carries a record's payload, key or a credential. `docs/operations.md` has the
//! table and what to alert on.
//!
//! # Examples
//!
//! ```no_run
//! // Install a recorder first (here: none, so the descriptions go nowhere), then:
//! kinesumer::metrics::describe();
//! for m in kinesumer::metrics::ALL {
//!     println!("{} ({:?}): {}", m.name, m.kind, m.help);
//! }
//! ```

use std::time::Duration;

use ::metrics::{counter, gauge, histogram, Counter, Gauge, Unit};

/// Records read from Kinesis (an aggregated record counts once).
pub const RECORDS_READ: &str = "kinesumer_records_read_total";
/// Bytes of record data read from Kinesis.
pub const BYTES_READ: &str = "kinesumer_read_bytes_total";
/// Records handed to the application (user records of aggregates counted each).
pub const RECORDS_DELIVERED: &str = "kinesumer_records_delivered_total";
/// Bytes of record data handed to the application.
pub const BYTES_DELIVERED: &str = "kinesumer_delivered_bytes_total";
/// How far behind the tip of its shard the last GetRecords page was.
pub const BEHIND_LATEST: &str = "kinesumer_behind_latest_ms";
/// Kinesis calls that were throttled.
pub const KINESIS_THROTTLES: &str = "kinesumer_kinesis_throttles_total";
/// Kinesis calls retried after a throttle or a transient error.
pub const KINESIS_RETRIES: &str = "kinesumer_kinesis_retries_total";
/// Aggregated (KPL) records split into their user records.
pub const AGGREGATED_RECORDS: &str = "kinesumer_aggregated_records_total";
/// User records found in aggregated records.
pub const AGGREGATED_USER_RECORDS: &str = "kinesumer_aggregated_user_records_total";
/// Records with the KPL magic that did not decode, delivered as they are.
pub const AGGREGATED_MALFORMED: &str = "kinesumer_aggregated_malformed_total";
/// Checkpoint writes that landed.
pub const COMMITS: &str = "kinesumer_commits_total";
/// Checkpoint writes that failed or were refused.
pub const COMMIT_FAILURES: &str = "kinesumer_commit_failures_total";
/// Shards this member holds.
pub const SHARDS_HELD: &str = "kinesumer_shards_held";
/// Whether this member leads its group.
pub const LEADER: &str = "kinesumer_leader";
/// Leases taken.
pub const LEASE_TAKES: &str = "kinesumer_lease_takes_total";
/// Leases released as planned.
pub const LEASE_RELEASES: &str = "kinesumer_lease_releases_total";
/// Leases lost.
pub const LEASE_LOSSES: &str = "kinesumer_lease_losses_total";
/// Closed shards read to their end and finished.
pub const SHARDS_FINISHED: &str = "kinesumer_shards_finished_total";
/// Shards the leader planned onto another member.
pub const SHARD_MOVES: &str = "kinesumer_shard_moves_total";
/// Failed handler attempts (the RecordFailed event).
pub const HANDLER_FAILURES: &str = "kinesumer_handler_failures_total";
/// Records written to the dead-letter sink (the RecordDeadLettered event).
pub const DEAD_LETTERS: &str = "kinesumer_dead_letters_total";
/// Shards whose delivery the application stopped (the DeliveryStopped event).
pub const DELIVERY_STOPS: &str = "kinesumer_delivery_stops_total";
/// Times this member fenced itself and rejoined.
pub const FENCINGS: &str = "kinesumer_fencings_total";
/// Times this member fenced itself again and again within a short window.
pub const REPEATED_FENCING: &str = "kinesumer_repeated_fencing_total";
/// How long one heartbeat to the state store took.
pub const HEARTBEAT_DURATION: &str = "kinesumer_heartbeat_seconds";
/// Times another process took over this member's client id.
pub const SUPERSEDED: &str = "kinesumer_superseded_total";
/// Shards of consumed streams the leader planned to no one: every consumer at a limit.
pub const UNPLANNED_SHARDS: &str = "kinesumer_unplanned_shards";
/// Plans the leader wrote.
pub const PLAN_CHANGES: &str = "kinesumer_plan_changes_total";
/// How long one leader tick took: reading the group, planning, writing plans.
pub const LEADER_TICK: &str = "kinesumer_leader_tick_seconds";
/// How long a member took to hold exactly its new plan.
pub const REBALANCE_DURATION: &str = "kinesumer_rebalance_duration_seconds";
/// State-store requests sent.
pub const STORE_REQUESTS: &str = "kinesumer_store_requests_total";
/// State-store requests DynamoDB throttled.
pub const STORE_THROTTLES: &str = "kinesumer_store_throttles_total";
/// State-store requests that failed in transit, on the service side, or timed out.
pub const STORE_ERRORS: &str = "kinesumer_store_errors_total";

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

/// One metric this crate records.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Metric {
    /// The name, as exported.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The unit of its values.
    pub unit: Unit,
    /// The label keys it carries.
    pub labels: &'static [&'static str],
    /// What it means (the help text exporters show).
    pub help: &'static str,
}

const SHARD: &[&str] = &["stream", "shard"];
const APP: &[&str] = &["app"];
const APP_STREAM: &[&str] = &["app", "stream"];
const OP: &[&str] = &["op"];

const fn metric(
    name: &'static str,
    kind: Kind,
    unit: Unit,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        unit,
        labels,
        help,
    }
}

/// Every metric this crate records.
pub const ALL: &[Metric] = &[
    metric(RECORDS_READ, Kind::Counter, Unit::Count, SHARD,
        "Records read from Kinesis with GetRecords, including records at or before the checkpoint that are skipped; an aggregated record counts once."),
    metric(BYTES_READ, Kind::Counter, Unit::Bytes, SHARD,
        "Bytes of record data read from Kinesis."),
    metric(RECORDS_DELIVERED, Kind::Counter, Unit::Count, SHARD,
        "Records handed to the application; each user record of an aggregated record counts."),
    metric(BYTES_DELIVERED, Kind::Counter, Unit::Bytes, SHARD,
        "Bytes of record data handed to the application."),
    metric(BEHIND_LATEST, Kind::Gauge, Unit::Milliseconds, SHARD,
        "MillisBehindLatest of the last GetRecords page: how far the shard's tip is ahead of the reader. Set to 0 when this member stops reading the shard."),
    metric(KINESIS_THROTTLES, Kind::Counter, Unit::Count, SHARD,
        "Kinesis calls of the shard's reader that were throttled."),
    metric(KINESIS_RETRIES, Kind::Counter, Unit::Count, SHARD,
        "Kinesis calls of the shard's reader retried after a throttle, a timeout or a transient error."),
    metric(AGGREGATED_RECORDS, Kind::Counter, Unit::Count, SHARD,
        "Aggregated (KPL) records split into their user records."),
    metric(AGGREGATED_USER_RECORDS, Kind::Counter, Unit::Count, SHARD,
        "User records found in aggregated records."),
    metric(AGGREGATED_MALFORMED, Kind::Counter, Unit::Count, SHARD,
        "Records with the KPL magic that did not decode; delivered as they are."),
    metric(COMMITS, Kind::Counter, Unit::Count, SHARD,
        "Checkpoint writes that landed."),
    metric(COMMIT_FAILURES, Kind::Counter, Unit::Count, SHARD,
        "Checkpoint writes that failed (throttled, timed out, unavailable) or were refused by their condition; retried at the next commit unless the lease was lost."),
    metric(SHARDS_HELD, Kind::Gauge, Unit::Count, APP,
        "Shards this member holds."),
    metric(LEADER, Kind::Gauge, Unit::Count, APP,
        "1 while this member leads its group, else 0."),
    metric(LEASE_TAKES, Kind::Counter, Unit::Count, APP_STREAM,
        "Leases taken (the LeaseTaken event)."),
    metric(LEASE_RELEASES, Kind::Counter, Unit::Count, APP_STREAM,
        "Leases given up as planned (the LeaseReleased event)."),
    metric(LEASE_LOSSES, Kind::Counter, Unit::Count, APP_STREAM,
        "Leases lost: another owner took the lease, or a handoff timed out with records in the application's hands (the LeaseLost event)."),
    metric(SHARDS_FINISHED, Kind::Counter, Unit::Count, APP_STREAM,
        "Closed shards read to their end with every record processed (the ShardFinished event)."),
    metric(SHARD_MOVES, Kind::Counter, Unit::Count, APP_STREAM,
        "Shards this member, as leader, planned onto another member (the ShardMoved event, whose reason says why)."),
    metric(HANDLER_FAILURES, Kind::Counter, Unit::Count, APP_STREAM,
        "Handler attempts that failed (an error or a panic); each is retried or given up on by the error policy (the RecordFailed event)."),
    metric(DEAD_LETTERS, Kind::Counter, Unit::Count, APP_STREAM,
        "Records the handler gave up on that were written to the dead-letter sink (the RecordDeadLettered event)."),
    metric(DELIVERY_STOPS, Kind::Counter, Unit::Count, APP_STREAM,
        "Shards released because the application stopped taking their records: the error policy gave up on a record, or the record stream was dropped (the DeliveryStopped event)."),
    metric(FENCINGS, Kind::Counter, Unit::Count, APP,
        "Times this member fenced itself (stopped every reader) and rejoined (the Fenced event)."),
    metric(REPEATED_FENCING, Kind::Counter, Unit::Count, APP,
        "Times this member fenced itself for the third time within a minute (or ten failover timeouts): its state store is too slow for its timeouts (the RepeatedFencing error)."),
    metric(HEARTBEAT_DURATION, Kind::Histogram, Unit::Seconds, APP,
        "How long each heartbeat request to the state store took (a timed-out one counts as request_timeout)."),
    metric(SUPERSEDED, Kind::Counter, Unit::Count, APP,
        "Times another process registered under this member's client id, stopping it for good."),
    metric(UNPLANNED_SHARDS, Kind::Gauge, Unit::Count, APP,
        "Shards of consumed streams this member, as leader, planned to no one because every member consuming their stream is at its max_shards or max_bytes_per_second: they are not read (the group lacks capacity)."),
    metric(PLAN_CHANGES, Kind::Counter, Unit::Count, APP,
        "Plans the leader wrote because a member's assignment changed."),
    metric(LEADER_TICK, Kind::Histogram, Unit::Seconds, APP,
        "How long one leader tick took: reading the members and leases, listing shards when due, planning, writing the plans that changed, pruning."),
    metric(REBALANCE_DURATION, Kind::Histogram, Unit::Seconds, APP,
        "From the tick a member's plan first differs from what it holds until it holds exactly the planned shards."),
    metric(STORE_REQUESTS, Kind::Counter, Unit::Count, OP,
        "State-store (DynamoDB) requests sent, by operation."),
    metric(STORE_THROTTLES, Kind::Counter, Unit::Count, OP,
        "State-store requests of the group protocol that DynamoDB throttled, by operation."),
    metric(STORE_ERRORS, Kind::Counter, Unit::Count, OP,
        "State-store requests of the group protocol that failed in transit, on the service side, or timed out (request_timeout), by operation."),
];

/// Describes every metric of [`ALL`] to the installed recorder: its unit and help text.
///
/// Call it once, after installing the recorder; recorders keep only the descriptions
/// they were given while installed.
pub fn describe() {
    for m in ALL {
        match m.kind {
            Kind::Counter => ::metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => ::metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => ::metrics::describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

fn shard_labels(stream: &str, shard: &str) -> [(&'static str, String); 2] {
    [("stream", stream.to_owned()), ("shard", shard.to_owned())]
}

/// What a shard's reader records, registered once per reader.
#[derive(Debug)]
pub(crate) struct ReadMetrics {
    pub(crate) records: Counter,
    pub(crate) bytes: Counter,
    pub(crate) throttles: Counter,
    pub(crate) retries: Counter,
    pub(crate) behind: Gauge,
    pub(crate) aggregated: Counter,
    pub(crate) user_records: Counter,
    pub(crate) malformed: Counter,
}

impl ReadMetrics {
    pub(crate) fn new(stream: &str, shard: &str) -> Self {
        let labels = shard_labels(stream, shard);
        Self {
            records: counter!(RECORDS_READ, &labels),
            bytes: counter!(BYTES_READ, &labels),
            throttles: counter!(KINESIS_THROTTLES, &labels),
            retries: counter!(KINESIS_RETRIES, &labels),
            behind: gauge!(BEHIND_LATEST, &labels),
            aggregated: counter!(AGGREGATED_RECORDS, &labels),
            user_records: counter!(AGGREGATED_USER_RECORDS, &labels),
            malformed: counter!(AGGREGATED_MALFORMED, &labels),
        }
    }
}

impl Drop for ReadMetrics {
    /// A reader that stops no longer knows the shard's lag: the gauge goes to 0, so the
    /// largest value across members is that of the shard's current reader.
    fn drop(&mut self) {
        self.behind.set(0.0);
    }
}

/// What a shard's delivery and commits record, registered once per lease held.
#[derive(Debug)]
pub(crate) struct DeliveryMetrics {
    pub(crate) records: Counter,
    pub(crate) bytes: Counter,
    pub(crate) commits: Counter,
    pub(crate) commit_failures: Counter,
}

impl DeliveryMetrics {
    pub(crate) fn new(stream: &str, shard: &str) -> Self {
        let labels = shard_labels(stream, shard);
        Self {
            records: counter!(RECORDS_DELIVERED, &labels),
            bytes: counter!(BYTES_DELIVERED, &labels),
            commits: counter!(COMMITS, &labels),
            commit_failures: counter!(COMMIT_FAILURES, &labels),
        }
    }
}

/// Counts a group event of the member of `app` under the counter `name`, labelled with
/// the stream it concerns, if any (the events say which counter is theirs).
pub(crate) fn event(app: &str, name: &'static str, stream: Option<&str>) {
    match stream {
        Some(stream) => {
            counter!(name, "app" => app.to_owned(), "stream" => stream.to_owned()).increment(1)
        }
        None => counter!(name, "app" => app.to_owned()).increment(1),
    }
}

/// Sets the member gauges of `app`: shards held and leadership.
pub(crate) fn member(app: &str, shards_held: usize, leader: bool) {
    gauge!(SHARDS_HELD, "app" => app.to_owned()).set(shards_held as f64);
    gauge!(LEADER, "app" => app.to_owned()).set(if leader { 1.0 } else { 0.0 });
}

/// Counts a third fence within the window of the member of `app`.
pub(crate) fn repeated_fencing(app: &str) {
    counter!(REPEATED_FENCING, "app" => app.to_owned()).increment(1);
}

/// Records how long a heartbeat of the member of `app` took.
pub(crate) fn heartbeat(app: &str, took: Duration) {
    histogram!(HEARTBEAT_DURATION, "app" => app.to_owned()).record(took.as_secs_f64());
}

/// Sets how many shards the leader of `app` planned to no one in its last tick.
pub(crate) fn unplanned_shards(app: &str, shards: usize) {
    gauge!(UNPLANNED_SHARDS, "app" => app.to_owned()).set(shards as f64);
}

/// Counts a plan the leader of `app` wrote.
pub(crate) fn plan_written(app: &str) {
    counter!(PLAN_CHANGES, "app" => app.to_owned()).increment(1);
}

/// Records how long a leader tick of `app` took.
pub(crate) fn leader_tick(app: &str, took: Duration) {
    histogram!(LEADER_TICK, "app" => app.to_owned()).record(took.as_secs_f64());
}

/// Counts one state-store request of the operation named `op`.
pub(crate) fn store_request(op: &'static str) {
    counter!(STORE_REQUESTS, "op" => op).increment(1);
}

/// Counts a state-store request of the operation named `op` that was throttled.
pub(crate) fn store_throttled(op: &'static str) {
    counter!(STORE_THROTTLES, "op" => op).increment(1);
}

/// Counts a state-store request of the operation named `op` that failed in transit or on
/// the service side.
pub(crate) fn store_error(op: &'static str) {
    counter!(STORE_ERRORS, "op" => op).increment(1);
}

/// Times a member's rebalances: from the first moment its plan differs from what it
/// holds until it holds exactly the plan.
#[derive(Debug, Default)]
pub(crate) struct RebalanceTimer {
    since: Option<Duration>,
}

impl RebalanceTimer {
    /// Notes whether the member holds exactly its plan at `now`; at the end of a
    /// rebalance, records its duration for `app` and returns it.
    pub(crate) fn observe(&mut self, app: &str, settled: bool, now: Duration) -> Option<Duration> {
        match (settled, self.since) {
            (false, None) => {
                self.since = Some(now);
                None
            }
            (true, Some(since)) => {
                self.since = None;
                let took = now.saturating_sub(since);
                histogram!(REBALANCE_DURATION, "app" => app.to_owned()).record(took.as_secs_f64());
                Some(took)
            }
            _ => None,
        }
    }

    /// Forgets a rebalance in progress (the member fenced, or has no current plan).
    pub(crate) fn reset(&mut self) {
        self.since = None;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    use super::*;

    /// Recorded values by (name, sorted labels).
    pub(crate) type Values = BTreeMap<(String, Vec<(String, String)>), DebugValue>;

    /// Takes one snapshot (which resets the recorder's counters and gauges to zero).
    pub(crate) fn values(snapshotter: &Snapshotter) -> Values {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let labels = key.key().labels().map(|l| (l.key(), l.value()));
                (id(key.key().name(), labels), value)
            })
            .collect()
    }

    /// The key of metric `name` with `labels` in [`Values`].
    pub(crate) fn id<'a>(
        name: &str,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (String, Vec<(String, String)>) {
        let mut labels: Vec<(String, String)> = labels
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        labels.sort();
        (name.to_owned(), labels)
    }

    #[test]
    fn names_are_unique_prefixed_and_end_in_their_unit() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "no name twice");
        for m in ALL {
            assert!(m.name.starts_with("kinesumer_"), "{}", m.name);
            let suffix_ok = match (m.kind, m.unit) {
                (Kind::Counter, Unit::Bytes) => m.name.ends_with("_bytes_total"),
                (Kind::Counter, _) => m.name.ends_with("_total"),
                (_, Unit::Milliseconds) => m.name.ends_with("_ms"),
                (_, Unit::Seconds) => m.name.ends_with("_seconds"),
                (_, _) => !m.name.ends_with("_total"),
            };
            assert!(suffix_ok, "{} does not end in its unit", m.name);
        }
    }

    /// The metric names a text mentions (`kinesumer_…`), a histogram's series
    /// (`_bucket`, `_sum`, `_count`) counted as the histogram.
    fn metrics_named(text: &str) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("kinesumer_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| {
                    ALL.iter()
                        .any(|m| m.name == *base && m.kind == Kind::Histogram)
                })
                .unwrap_or(name);
            names.insert(base.to_owned());
            rest = &tail[end..];
        }
        names
    }

    #[test]
    fn the_dashboard_and_the_alert_rules_name_only_metrics_the_library_exports() {
        let dashboard = include_str!("../../../docs/monitoring/grafana-dashboard.json");
        let rules = include_str!("../../../docs/monitoring/prometheus-rules.yml");
        let guide = include_str!("../../../docs/operations.md");
        let exported: std::collections::BTreeSet<String> =
            ALL.iter().map(|m| m.name.to_owned()).collect();
        for (file, text) in [
            ("grafana-dashboard.json", dashboard),
            ("prometheus-rules.yml", rules),
        ] {
            let named = metrics_named(text);
            let unknown: Vec<_> = named.difference(&exported).collect();
            assert!(
                unknown.is_empty(),
                "{file} names metrics nobody exports: {unknown:?}"
            );
        }
        serde_json::from_str::<serde_json::Value>(dashboard).expect("the dashboard is JSON");
        // Every metric the guide alerts on has a rule.
        let alerts = &guide[guide.find("## What to alert on").expect("the alert table")..];
        let alerts = &alerts[..alerts[3..].find("\n## ").map_or(alerts.len(), |i| i + 3)];
        let missing: Vec<_> = metrics_named(alerts)
            .into_iter()
            .filter(|m| !rules.contains(m.as_str()) && m != HEARTBEAT_DURATION)
            .collect();
        assert!(
            missing.is_empty(),
            "alerts of docs/operations.md without a rule: {missing:?}"
        );
    }

    #[test]
    fn the_operations_guide_documents_every_metric_with_its_labels() {
        let guide = include_str!("../../../docs/operations.md");
        for m in ALL {
            let row = guide
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", m.name)))
                .unwrap_or_else(|| panic!("{} is not in docs/operations.md", m.name));
            for label in m.labels {
                assert!(row.contains(&format!("`{label}`")), "{row}: label {label}");
            }
        }
    }

    #[test]
    fn describe_gives_every_metric_its_unit_and_help() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        ::metrics::with_local_recorder(&recorder, || {
            describe();
            for m in ALL {
                match m.kind {
                    Kind::Counter => counter!(m.name).increment(1),
                    Kind::Gauge => gauge!(m.name).set(1.0),
                    Kind::Histogram => histogram!(m.name).record(1.0),
                }
            }
        });
        let described: BTreeMap<String, (Option<Unit>, Option<String>)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(k, unit, help, _)| {
                (
                    k.key().name().to_owned(),
                    (unit, help.map(|h| h.to_string())),
                )
            })
            .collect();
        assert_eq!(described.len(), ALL.len());
        for m in ALL {
            assert_eq!(
                described[m.name],
                (Some(m.unit), Some(m.help.to_owned())),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn a_rebalance_is_timed_from_the_first_unsettled_tick_to_the_settled_one() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let secs = Duration::from_secs;
        let took = ::metrics::with_local_recorder(&recorder, || {
            let mut timer = RebalanceTimer::default();
            let mut took = vec![
                timer.observe("app", true, secs(1)),
                timer.observe("app", false, secs(2)),
                timer.observe("app", false, secs(3)),
                timer.observe("app", true, secs(5)),
                timer.observe("app", true, secs(6)),
                timer.observe("app", false, secs(7)),
            ];
            timer.reset();
            took.push(timer.observe("app", true, secs(9)));
            took
        });
        assert_eq!(took, [None, None, None, Some(secs(3)), None, None, None]);
        assert_eq!(
            values(&snapshotter),
            BTreeMap::from([(
                id(REBALANCE_DURATION, [("app", "app")]),
                DebugValue::Histogram(vec![3.0.into()])
            )])
        );
    }

    #[test]
    fn a_stopped_reader_leaves_its_lag_at_zero() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let kept = ::metrics::with_local_recorder(&recorder, || {
            let stopped = ReadMetrics::new("s", "shardId-1");
            let kept = ReadMetrics::new("s", "shardId-2");
            stopped.behind.set(1500.0);
            kept.behind.set(1500.0);
            drop(stopped);
            kept
        });
        let got = values(&snapshotter);
        let behind = |shard| &got[&id(BEHIND_LATEST, [("stream", "s"), ("shard", shard)])];
        assert_eq!(behind("shardId-1"), &DebugValue::Gauge(0.0.into()));
        assert_eq!(behind("shardId-2"), &DebugValue::Gauge(1500.0.into()));
        drop(kept);
    }
}
