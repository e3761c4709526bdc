//! What a member measures of its shards' load and reports with its heartbeat
//! (`balance = load`, issue 21): each reader counts the records and bytes it reads into a
//! meter; each heartbeat samples the meter into a [`LoadReport`] — smoothed
//! rates per shard and the member's capacity — which the state store keeps in the member
//! item the leader already reads every tick. So the leader learns every shard's load at
//! no extra request.
//!
//! Rates are exponentially smoothed with the time constant `load_window`: a burst
//! shorter than the window moves a shard's rate little, a lasting change shows fully
//! within a few windows. A shard is reported only once its reader has run for one window
//! (its smoothed rate means something by then); until then the leader keeps the rate the
//! previous holder reported.
//!
//! The rate is what the reader reads: the shard's write rate once it is caught up, more
//! while it catches up — which is real work for the member too.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The bytes per second a shard accepts (1 MiB/s): one shard unit of bytes.
const SHARD_BYTES_PER_SEC: f64 = 1_048_576.0;
/// The records per second a shard accepts: one shard unit of records.
const SHARD_RECORDS_PER_SEC: f64 = 1_000.0;

/// The recent load of one shard, as its reader measured it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "(f64, f64)", into = "(f64, f64)")]
pub struct ShardLoad {
    /// Bytes read per second, smoothed.
    pub bytes_per_sec: f64,
    /// Records read per second, smoothed (a KPL aggregate counts as one).
    pub records_per_sec: f64,
}

impl ShardLoad {
    /// The load as one number, in *shard units*: the larger of the bytes per second over
    /// 1 MiB/s and the records per second over 1,000 — the write limits of one shard, so
    /// a shard written at its limit weighs 1.
    pub fn units(&self) -> f64 {
        (self.bytes_per_sec / SHARD_BYTES_PER_SEC).max(self.records_per_sec / SHARD_RECORDS_PER_SEC)
    }
}

/// Stored as `[bytes per second, records per second]`, rounded (to the byte and to a
/// hundredth of a record) to keep the member item small.
impl From<ShardLoad> for (f64, f64) {
    fn from(l: ShardLoad) -> Self {
        (
            l.bytes_per_sec.round(),
            (l.records_per_sec * 100.0).round() / 100.0,
        )
    }
}

impl From<(f64, f64)> for ShardLoad {
    fn from((bytes_per_sec, records_per_sec): (f64, f64)) -> Self {
        Self {
            bytes_per_sec,
            records_per_sec,
        }
    }
}

/// The most a member takes (`Config::max_shards`, `Config::max_bytes_per_second`): the
/// leader plans no more onto it, and leaves shards no member can take unplanned.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// The most shards it holds, across streams; `None`: no limit.
    pub max_shards: Option<usize>,
    /// The most bytes per second of its shards' load; `None`: no limit. Counted in shard
    /// units ([`ShardLoad::units`]), so a shard near its records limit counts as that
    /// share of a shard's bytes: the bytes read stay under the limit either way.
    pub max_bytes_per_sec: Option<f64>,
}

impl Limits {
    /// The most load, in shard units; infinite without a limit.
    pub fn max_units(&self) -> f64 {
        self.max_bytes_per_sec
            .map_or(f64::INFINITY, |b| b / SHARD_BYTES_PER_SEC)
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.max_shards.is_some() || self.max_bytes_per_sec.is_some()
    }
}

/// What a member reports with each heartbeat: its capacity and limits, and its shards'
/// load.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadReport {
    /// The member's capacity (weight; `Config::capacity`).
    pub capacity: f64,
    /// The most it takes.
    pub limits: Limits,
    /// Stream → shard id → load, for the shards whose reader has run for a load window.
    pub shards: BTreeMap<String, BTreeMap<String, ShardLoad>>,
}

impl LoadReport {
    /// The member's total load, in shard units.
    pub fn units(&self) -> f64 {
        self.shards
            .values()
            .flat_map(BTreeMap::values)
            .map(ShardLoad::units)
            .sum()
    }

    /// The shards' loads as the state store keeps them (the `load` attribute):
    /// `{"stream": {"shard id": [bytes/s, records/s]}}`.
    pub fn shards_json(&self) -> String {
        serde_json::to_string(&self.shards).unwrap_or_default()
    }

    /// Reads what [`LoadReport::shards_json`] wrote, with the capacity and limits stored
    /// beside it.
    ///
    /// # Errors
    ///
    /// The text is not such JSON.
    pub fn from_json(
        capacity: f64,
        limits: Limits,
        shards: &str,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            capacity,
            limits,
            shards: serde_json::from_str(shards)?,
        })
    }
}

/// The most shards one report names: about 45 bytes each, so at most about 135 KB (a plan
/// item holds about as many shard entries).
pub(crate) const MAX_REPORTED: usize = 3000;

/// Counts per shard since the last sample, and the smoothed rates.
#[derive(Debug)]
struct Rate {
    records: u64,
    bytes: u64,
    /// When counting started (the reader's start).
    started: Instant,
    /// The last sample; `None` before the first.
    sampled: Option<(Instant, ShardLoad)>,
}

type Key = (Arc<str>, Arc<str>);

/// The member's meter: every running reader counts into it, every heartbeat samples it.
#[derive(Debug, Clone)]
pub(crate) struct LoadMeter {
    window: Duration,
    rates: Arc<Mutex<HashMap<Key, Rate>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LoadMeter {
    /// A meter smoothing with time constant `window`.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            rates: Arc::default(),
        }
    }

    /// Starts counting a shard's reads; they stop counting when the returned handle is
    /// dropped (the reader ends).
    pub(crate) fn track(&self, stream: Arc<str>, shard_id: Arc<str>) -> ShardMeter {
        let key = (stream, shard_id);
        lock(&self.rates).insert(
            key.clone(),
            Rate {
                records: 0,
                bytes: 0,
                started: Instant::now(),
                sampled: None,
            },
        );
        ShardMeter {
            meter: self.clone(),
            key,
        }
    }

    /// Samples every shard's rates since the last sample, smooths them, and reports the
    /// shards whose reader has run for a window — the [`MAX_REPORTED`] heaviest, so the
    /// member item stays far below DynamoDB's 400 KB (the leader counts a shard it has
    /// never been told of as idle, and keeps the last rate of one it has).
    pub(crate) fn report(&self, capacity: f64, limits: Limits) -> LoadReport {
        let now = Instant::now();
        let mut warm = Vec::new();
        for ((stream, shard_id), rate) in lock(&self.rates).iter_mut() {
            let since = rate.sampled.map_or(rate.started, |(at, _)| at);
            let elapsed = now.saturating_duration_since(since).as_secs_f64();
            if elapsed > 0.0 {
                let raw = ShardLoad {
                    bytes_per_sec: rate.bytes as f64 / elapsed,
                    records_per_sec: rate.records as f64 / elapsed,
                };
                let smoothed = match rate.sampled {
                    None => raw,
                    Some((_, old)) => {
                        let alpha = 1.0 - (-elapsed / self.window.as_secs_f64()).exp();
                        let ease = |old: f64, new: f64| old + alpha * (new - old);
                        ShardLoad {
                            bytes_per_sec: ease(old.bytes_per_sec, raw.bytes_per_sec),
                            records_per_sec: ease(old.records_per_sec, raw.records_per_sec),
                        }
                    }
                };
                rate.sampled = Some((now, smoothed));
                rate.records = 0;
                rate.bytes = 0;
            }
            let ran = now.saturating_duration_since(rate.started) >= self.window;
            if let Some((_, smoothed)) = rate.sampled.filter(|_| ran) {
                warm.push((stream.clone(), shard_id.clone(), smoothed));
            }
        }
        if warm.len() > MAX_REPORTED {
            warm.sort_by(|a, b| b.2.units().total_cmp(&a.2.units()));
            warm.truncate(MAX_REPORTED);
        }
        let mut report = LoadReport {
            capacity,
            limits,
            shards: BTreeMap::new(),
        };
        for (stream, shard_id, load) in warm {
            let shards = report.shards.entry(stream.to_string()).or_default();
            shards.insert(shard_id.to_string(), load);
        }
        report
    }
}

/// One reader's handle on the meter.
#[derive(Debug)]
pub(crate) struct ShardMeter {
    meter: LoadMeter,
    key: Key,
}

impl ShardMeter {
    /// Counts what one read returned.
    pub(crate) fn record(&self, records: usize, bytes: usize) {
        if let Some(rate) = lock(&self.meter.rates).get_mut(&self.key) {
            rate.records += records as u64;
            rate.bytes += bytes as u64;
        }
    }
}

impl Drop for ShardMeter {
    fn drop(&mut self) {
        lock(&self.meter.rates).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn units_are_the_larger_share_of_a_shards_write_limit() {
        let records = ShardLoad {
            bytes_per_sec: 100_000.0,
            records_per_sec: 500.0,
        };
        assert_eq!(records.units(), 0.5);
        let bytes = ShardLoad {
            bytes_per_sec: 2.0 * SHARD_BYTES_PER_SEC,
            records_per_sec: 10.0,
        };
        assert_eq!(bytes.units(), 2.0);
    }

    #[test]
    fn a_report_round_trips_through_its_stored_form() {
        let mut report = LoadReport {
            capacity: 2.0,
            limits: Limits::default(),
            shards: BTreeMap::new(),
        };
        report.shards.entry("s".into()).or_default().insert(
            "shardId-000000000001".into(),
            ShardLoad {
                bytes_per_sec: 1234.4,
                records_per_sec: 5.678,
            },
        );
        let json = report.shards_json();
        assert_eq!(json, r#"{"s":{"shardId-000000000001":[1234.0,5.68]}}"#);
        let back = LoadReport::from_json(2.0, Limits::default(), &json).unwrap();
        assert_eq!(
            back.shards["s"]["shardId-000000000001"].records_per_sec,
            5.68
        );
        assert!(LoadReport::from_json(1.0, Limits::default(), "[").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_names_at_most_the_heaviest_shards_that_fit_an_item() {
        let meter = LoadMeter::new(WINDOW);
        let shards: Vec<ShardMeter> = (0..MAX_REPORTED + 10)
            .map(|i| meter.track("s".into(), format!("shardId-{i:012}").into()))
            .collect();
        for (i, shard) in shards.iter().enumerate() {
            shard.record(i, 100 * i);
        }
        tokio::time::advance(WINDOW).await;
        let report = meter.report(1.0, Limits::default());
        assert_eq!(report.shards["s"].len(), MAX_REPORTED);
        assert!(
            !report.shards["s"].contains_key("shardId-000000000000"),
            "the lightest left out"
        );
        assert!(report.shards_json().len() < 200_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_is_reported_after_a_window_with_its_smoothed_rate() {
        let meter = LoadMeter::new(WINDOW);
        let shard = meter.track("s".into(), "a".into());
        // 100 records a second for 5 s: sampled every second, not yet a window.
        for _ in 0..5 {
            shard.record(100, 10_000);
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(meter.report(1.0, Limits::default()).shards.is_empty());
        }
        for _ in 0..5 {
            shard.record(100, 10_000);
            tokio::time::advance(Duration::from_secs(1)).await;
            meter.report(1.0, Limits::default());
        }
        let load = meter.report(1.0, Limits::default()).shards["s"]["a"];
        assert!((load.records_per_sec - 100.0).abs() < 10.0, "{load:?}");
        // It stops: the rate decays with the window, not at once.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            meter.report(1.0, Limits::default());
        }
        let load = meter.report(1.0, Limits::default()).shards["s"]["a"];
        assert!(
            load.records_per_sec > 30.0 && load.records_per_sec < 70.0,
            "{load:?}"
        );
        // A reader that ends is no longer reported.
        drop(shard);
        assert!(meter.report(1.0, Limits::default()).shards.is_empty());
    }
}
