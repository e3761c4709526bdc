//! `kinesumer status`: the members of a group, then every shard of its streams.
//!
//! The JSON shape (`--json`) is documented in `docs/cli.md`; [`Report`] is it.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use chrono::Utc;
use kinesumer::store::{format_time, LeaseItem, ShardCache, StateStore, StoredStart};
use serde::Serialize;

use kinesumer::reader::{IteratorStart, KinesisApi, SdkKinesis};
use tokio::signal::unix::{signal, SignalKind};

use crate::aws::Aws;
use crate::cli::StatusArgs;
use crate::observe::{observe, Group};

/// The whole report, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    app: String,
    table: String,
    /// How long the member items were watched to judge liveness.
    observed_ms: u128,
    /// The leader's lease-owner string (`<client id>#<token>`), when the lock's owner is
    /// a member's current incarnation.
    leader: Option<String>,
    /// The lock's term.
    term: Option<u64>,
    members: Vec<MemberRow>,
    streams: Vec<StreamRow>,
}

#[derive(Debug, Serialize)]
struct MemberRow {
    client_id: String,
    incarnation: Option<String>,
    alive: bool,
    leader: bool,
    heartbeat: u64,
    /// The member's own wall clock at its last heartbeat.
    last_update: Option<String>,
    /// This machine's clock minus `last_update` (informational: two clocks).
    since_last_update_ms: Option<i64>,
    streams: Vec<String>,
    /// Leases of the reported streams that name this incarnation.
    shards_held: usize,
    /// Its capacity (weight), as its last heartbeat reported it (`balance = load`).
    capacity: Option<f64>,
    /// The load of the shards it reported, in shard units (a shard written at its limit
    /// weighs 1), as its last heartbeat reported it (`balance = load`).
    load: Option<f64>,
    /// The most shards the leader plans onto it (`--max-shards`), if it declared one.
    max_shards: Option<usize>,
    /// The most bytes per second of load (`--max-bytes-per-second`), if it declared one.
    max_bytes_per_second: Option<f64>,
}

#[derive(Debug, Serialize)]
struct StreamRow {
    stream: String,
    shards: Vec<ShardRow>,
}

#[derive(Debug, Serialize)]
struct ShardRow {
    shard_id: String,
    /// The lease owner, `<client id>#<token>`; `null` when free.
    owner: Option<String>,
    /// The owner's client id.
    owner_client_id: Option<String>,
    lease_counter: Option<u64>,
    /// The committed sequence number; `null` when none.
    checkpoint: Option<String>,
    sub_sequence_number: Option<u64>,
    /// Where an owner without checkpoint starts: `TRIM_HORIZON` or an RFC 3339 time.
    start: Option<String>,
    /// `shard_end` is set: read to its end and every record processed.
    finished: bool,
    /// The stream no longer takes records into this shard (from the shard cache;
    /// `null` when the cache does not list it).
    closed: Option<bool>,
    parents: Vec<String>,
    /// Milliseconds behind the stream's tip, as stored with the last checkpoint.
    millis_behind: Option<i64>,
    /// Milliseconds behind the tip, asked of Kinesis now (`--live-lag`).
    live_behind_ms: Option<i64>,
    last_update: Option<String>,
}

/// Runs `kinesumer status`.
pub(crate) async fn run(aws: &Aws, args: StatusArgs) -> anyhow::Result<()> {
    let Some(every) = args.watch else {
        return show(aws, &args).await;
    };
    // Listening from the start: a signal that arrives while a report is drawn is not lost.
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    loop {
        // Home and clear: the report redraws in place.
        print!("\x1b[H\x1b[2J");
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
            shown = show(aws, &args) => shown?,
        }
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_secs(every)) => {}
        }
    }
}

/// One report, printed.
async fn show(aws: &Aws, args: &StatusArgs) -> anyhow::Result<()> {
    let store = aws.store(&args.group.table, &args.group.app).await?;
    let group = observe(&store, args.observe.observe_ms).await?;
    let streams: BTreeSet<String> = if args.streams.is_empty() {
        group
            .members
            .iter()
            .flat_map(|m| m.item.streams.iter().cloned())
            .collect()
    } else {
        args.streams.iter().cloned().collect()
    };
    let mut rows = Vec::new();
    for stream in streams {
        let leases = store
            .leases(&stream)
            .await
            .with_context(|| format!("reading the leases of {stream:?}"))?;
        let cache = store
            .shard_cache(&stream)
            .await
            .with_context(|| format!("reading the shard cache of {stream:?}"))?;
        rows.push(stream_row(stream, leases, cache));
    }
    if let Some(most) = args.live_lag {
        live_lag(aws, &mut rows, most).await;
    }
    let report = report(
        args.group.app.clone(),
        args.group.table.clone(),
        &args.observe,
        group,
        rows,
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Asks Kinesis how far behind the tip each unfinished shard's checkpoint (or stored
/// start) is, for at most `most` shards: a GetShardIterator from there and a GetRecords
/// of one record, whose MillisBehindLatest is the lag. A shard whose calls fail keeps no
/// live lag (said on stderr).
async fn live_lag(aws: &Aws, rows: &mut [StreamRow], most: usize) {
    let kinesis = SdkKinesis::new(aws.kinesis().await);
    let shards = rows
        .iter_mut()
        .flat_map(|r| r.shards.iter_mut().map(|s| (r.stream.clone(), s)))
        .filter(|(_, s)| !s.finished)
        .take(most);
    for (stream, shard) in shards {
        let start = match (&shard.checkpoint, shard.start.as_deref()) {
            (Some(seq), _) => match seq.parse() {
                Ok(seq) => IteratorStart::After(seq),
                Err(_) => continue,
            },
            (None, Some("TRIM_HORIZON")) => IteratorStart::TrimHorizon,
            (None, Some(t)) => match chrono::DateTime::parse_from_rfc3339(t) {
                Ok(t) => IteratorStart::AtTimestamp(t.with_timezone(&Utc)),
                Err(_) => continue,
            },
            (None, None) => continue,
        };
        let asked = async {
            let it = kinesis
                .shard_iterator(&stream, &shard.shard_id, &start)
                .await?;
            kinesis.get_records(&stream, &shard.shard_id, &it, 1).await
        };
        match asked.await {
            Ok(page) => shard.live_behind_ms = page.millis_behind,
            Err(e) => crate::say::note(format!("live lag of {stream}/{}: {e}", shard.shard_id)),
        }
    }
}

fn start_text(start: &StoredStart) -> String {
    match start {
        StoredStart::TrimHorizon => "TRIM_HORIZON".to_owned(),
        StoredStart::AtTimestamp(t) => format_time(*t),
    }
}

/// Every shard the leases or the shard cache name, sorted by shard id.
fn stream_row(stream: String, leases: Vec<LeaseItem>, cache: Option<ShardCache>) -> StreamRow {
    let listed: BTreeMap<String, _> = cache
        .map(|c| c.shards)
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.shard_id.clone(), s))
        .collect();
    let mut leases: BTreeMap<String, LeaseItem> = leases
        .into_iter()
        .map(|l| (l.shard_id.clone(), l))
        .collect();
    let ids: BTreeSet<String> = listed.keys().chain(leases.keys()).cloned().collect();
    let shards = ids
        .into_iter()
        .map(|id| {
            let lease = leases.remove(&id);
            let info = listed.get(&id);
            let lease = lease.as_ref();
            ShardRow {
                owner: lease
                    .and_then(|l| l.owner.as_ref())
                    .map(ToString::to_string),
                owner_client_id: lease
                    .and_then(|l| l.owner.as_ref())
                    .map(|o| o.client_id.clone()),
                lease_counter: lease.and_then(|l| l.lease_counter),
                checkpoint: lease
                    .and_then(|l| l.checkpoint.as_ref())
                    .map(|p| p.sequence.as_str().to_owned()),
                sub_sequence_number: lease
                    .and_then(|l| l.checkpoint.as_ref())
                    .and_then(|p| p.sub_sequence),
                start: lease.and_then(|l| l.start.as_ref()).map(start_text),
                finished: lease.is_some_and(|l| l.shard_end),
                closed: info.map(|s| s.closed),
                parents: info
                    .map(|s| s.parent.iter().chain(&s.adjacent_parent).cloned().collect())
                    .unwrap_or_default(),
                millis_behind: lease.and_then(|l| l.millis_behind),
                live_behind_ms: None,
                last_update: lease.and_then(|l| l.last_update).map(format_time),
                shard_id: id,
            }
        })
        .collect();
    StreamRow { stream, shards }
}

fn report(
    app: String,
    table: String,
    observe: &crate::cli::Observe,
    group: Group,
    streams: Vec<StreamRow>,
) -> Report {
    let leader = group.leader().map(ToString::to_string);
    let now = Utc::now();
    let members = group
        .members
        .iter()
        .map(|m| {
            let owner = m.owner().map(|o| o.to_string());
            MemberRow {
                client_id: m.item.client_id.clone(),
                incarnation: m.item.incarnation.clone(),
                alive: m.alive,
                leader: owner.is_some() && owner == leader,
                heartbeat: m.item.heartbeat,
                last_update: m.item.last_update.map(format_time),
                since_last_update_ms: m.item.last_update.map(|t| (now - t).num_milliseconds()),
                streams: m.item.streams.clone(),
                shards_held: streams
                    .iter()
                    .flat_map(|s| &s.shards)
                    .filter(|s| owner.is_some() && s.owner == owner)
                    .count(),
                capacity: m.item.load.as_ref().map(|l| l.capacity),
                load: m.item.load.as_ref().map(|l| l.units()),
                max_shards: m.item.load.as_ref().and_then(|l| l.limits.max_shards),
                max_bytes_per_second: m
                    .item
                    .load
                    .as_ref()
                    .and_then(|l| l.limits.max_bytes_per_sec),
            }
        })
        .collect();
    Report {
        app,
        table,
        observed_ms: observe.observe_ms.as_millis(),
        leader,
        term: group.lock.map(|l| l.term),
        members,
        streams,
    }
}

/// The width of the lag bar, in cells.
const BAR: usize = 10;

/// A bar of `lag` against `scale`: at least one cell for any lag above zero.
fn bar(lag: i64, scale: i64) -> String {
    let filled = if lag <= 0 {
        0
    } else {
        ((lag as f64 / scale as f64) * BAR as f64)
            .ceil()
            .clamp(1.0, BAR as f64) as usize
    };
    format!("{}{}", "█".repeat(filled), "░".repeat(BAR - filled))
}

/// A long sequence number shortened to its last digits (JSON has it whole).
fn short_seq(seq: &str) -> String {
    const KEEP: usize = 12;
    if seq.len() > KEEP {
        format!("…{}", &seq[seq.len() - KEEP..])
    } else {
        seq.to_owned()
    }
}

/// A member's limits as the MAX column shows them: `8 shards`, `4194304 B/s`, both, or `-`.
fn limits(m: &MemberRow) -> String {
    let shards = m.max_shards.map(|n| format!("{n} shards"));
    let bytes = m.max_bytes_per_second.map(|b| format!("{b} B/s"));
    let both: Vec<String> = shards.into_iter().chain(bytes).collect();
    if both.is_empty() {
        "-".into()
    } else {
        both.join(", ")
    }
}

fn seconds(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// Lays out rows as columns, two spaces apart, the last column unpadded.
fn columns(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn render(r: &Report) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let mut out = format!(
        "app {} · table {} · leader {} · liveness watched for {} ms\n\n",
        r.app,
        r.table,
        r.leader.as_deref().unwrap_or("none"),
        r.observed_ms
    );
    let mut rows = vec![[
        "MEMBER",
        "ALIVE",
        "LEADER",
        "LAST BEAT",
        "SHARDS",
        "LOAD",
        "CAPACITY",
        "MAX",
        "STREAMS",
    ]
    .map(String::from)
    .to_vec()];
    rows.extend(r.members.iter().map(|m| {
        vec![
            m.client_id.clone(),
            yes_no(m.alive),
            if m.leader { "*".into() } else { String::new() },
            m.since_last_update_ms
                .map(|ms| format!("{} ago", seconds(ms)))
                .unwrap_or_else(|| "-".into()),
            m.shards_held.to_string(),
            m.load.map_or_else(|| "-".into(), |l| format!("{l:.3}")),
            m.capacity.map_or_else(|| "-".into(), |c| format!("{c}")),
            limits(m),
            m.streams.join(","),
        ]
    }));
    if r.members.is_empty() {
        out.push_str("no members\n");
    } else {
        out.push_str(&columns(&rows));
    }
    let scale = r
        .streams
        .iter()
        .flat_map(|s| &s.shards)
        .filter_map(|s| s.live_behind_ms.or(s.millis_behind))
        .max()
        .unwrap_or(0)
        .max(1000);
    for stream in &r.streams {
        out.push_str(&format!("\nstream {}\n", stream.stream));
        let mut rows = vec![
            ["SHARD", "OWNER", "CHECKPOINT", "FINISHED", "PARENTS", "LAG"]
                .map(String::from)
                .to_vec(),
        ];
        rows.extend(stream.shards.iter().map(|s| {
            let checkpoint = match (&s.checkpoint, &s.start) {
                (Some(seq), _) => short_seq(seq),
                (None, Some(start)) => format!("(start {start})"),
                (None, None) => "-".into(),
            };
            let parents = if s.parents.is_empty() {
                "-".into()
            } else {
                s.parents.join(",")
            };
            let lag = s
                .live_behind_ms
                .or(s.millis_behind)
                .map(|ms| format!("{} {:>7}", bar(ms, scale), format!("{ms} ms")))
                .unwrap_or_else(|| "-".into());
            vec![
                s.shard_id.clone(),
                s.owner_client_id.clone().unwrap_or_else(|| "-".into()),
                checkpoint,
                yes_no(s.finished),
                parents,
                lag,
            ]
        }));
        if stream.shards.is_empty() {
            out.push_str("no shards known yet\n");
        } else {
            out.push_str(&columns(&rows));
        }
    }
    if r.streams.is_empty() {
        out.push_str("\nno streams: no member consumes one; name them with --stream\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_and_show_any_lag() {
        assert_eq!(bar(0, 1000), "░".repeat(10));
        assert_eq!(bar(1, 1000), format!("█{}", "░".repeat(9)));
        assert_eq!(bar(5000, 5000), "█".repeat(10));
        assert_eq!(
            bar(2500, 5000),
            format!("{}{}", "█".repeat(5), "░".repeat(5))
        );
    }

    #[test]
    fn long_sequences_are_shortened() {
        assert_eq!(short_seq("123"), "123");
        assert_eq!(
            short_seq("49590338271490256608559692538361571095921575989136588898"),
            "…989136588898"
        );
    }
}
