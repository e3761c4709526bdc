//! `kinesumer reset` and `kinesumer export`: moving the checkpoints of a stream's shards,
//! and writing them out so a reset can put them back.
//!
//! A reset prints its plan first — per shard, the checkpoint now and after — and writes
//! only with `--execute`. It refuses while any member of the group is alive (judged as in
//! [`observe`](crate::observe)), unless `--force`: a live owner would go on from where it
//! is. Each shard is then written with [`StateStore::set_checkpoint`]: conditional on the
//! lease having no owner, except when its owner is not an alive member (a crashed member
//! whose lease was never released) or with `--force`. A member that still holds a moved
//! lease cannot commit over the reset: its checkpoint writes are conditional on the
//! checkpoint it last wrote, so it loses the lease and the next owner starts from the
//! reset position.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use kinesumer::store::{DynamoStore, LeaseItem, StateStore, StoredStart};
use kinesumer::Position;
use serde::{Deserialize, Serialize};

use crate::aws::Aws;
use crate::cli::{ExportArgs, ResetArgs, ResetTarget};
use crate::observe::observe;
use crate::UsageError;

/// One shard's checkpoint as `export` writes it and `reset --from-file` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    shard_id: String,
    /// Reading resumes after this sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence_number: Option<String>,
    /// Inside a KPL aggregate: after this user record of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub_sequence_number: Option<u64>,
    /// Without a checkpoint: `TRIM_HORIZON` or an RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    /// Read to its end.
    #[serde(default)]
    finished: bool,
}

/// A group's checkpoints of one stream, as `export` writes them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Export {
    app: String,
    stream: String,
    shards: Vec<Checkpoint>,
}

/// What a reset writes for one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Move {
    position: Option<Position>,
    start: Option<StoredStart>,
    finished: bool,
}

impl Checkpoint {
    fn of(shard_id: &str, lease: Option<&LeaseItem>) -> Self {
        let position = lease.and_then(|l| l.checkpoint.as_ref());
        Self {
            shard_id: shard_id.to_owned(),
            sequence_number: position.map(|p| p.sequence.to_string()),
            sub_sequence_number: position.and_then(|p| p.sub_sequence),
            start: lease.and_then(|l| l.start.as_ref()).map(start_text),
            finished: lease.is_some_and(|l| l.shard_end),
        }
    }

    fn to_move(&self) -> anyhow::Result<Move> {
        let position = match &self.sequence_number {
            Some(seq) => Some(Position {
                sequence: seq
                    .parse()
                    .with_context(|| format!("{}: sequence_number", self.shard_id))?,
                sub_sequence: self.sub_sequence_number,
            }),
            None => None,
        };
        let start = match self.start.as_deref() {
            None => None,
            Some("TRIM_HORIZON") => Some(StoredStart::TrimHorizon),
            Some(t) => Some(StoredStart::AtTimestamp(
                DateTime::parse_from_rfc3339(t)
                    .with_context(|| format!("{}: start {t:?}", self.shard_id))?
                    .with_timezone(&Utc),
            )),
        };
        Ok(Move {
            position,
            start,
            finished: self.finished,
        })
    }

    fn describe(&self) -> String {
        match (&self.sequence_number, self.sub_sequence_number, &self.start) {
            _ if self.finished => "finished".to_owned(),
            (Some(seq), Some(sub), _) => format!("after {seq} (user record {sub})"),
            (Some(seq), None, _) => format!("after {seq}"),
            (None, _, Some(start)) => format!("from {start}"),
            (None, _, None) => "nothing (initial position)".to_owned(),
        }
    }
}

impl Move {
    fn as_checkpoint(&self, shard_id: &str) -> Checkpoint {
        Checkpoint {
            shard_id: shard_id.to_owned(),
            sequence_number: self.position.as_ref().map(|p| p.sequence.to_string()),
            sub_sequence_number: self.position.as_ref().and_then(|p| p.sub_sequence),
            start: self.start.as_ref().map(start_text),
            finished: self.finished,
        }
    }
}

fn start_text(start: &StoredStart) -> String {
    match start {
        StoredStart::TrimHorizon => "TRIM_HORIZON".to_owned(),
        StoredStart::AtTimestamp(t) => t.to_rfc3339(),
    }
}

/// The leases of `stream`, by shard.
async fn leases(store: &DynamoStore, stream: &str) -> anyhow::Result<BTreeMap<String, LeaseItem>> {
    let leases = store
        .leases(stream)
        .await
        .with_context(|| format!("reading the leases of {stream:?}"))?;
    Ok(leases
        .into_iter()
        .map(|l| (l.shard_id.clone(), l))
        .collect())
}

/// The shards of `stream` the group knows: leased or in its shard cache.
async fn known_shards(
    store: &DynamoStore,
    stream: &str,
    leases: &BTreeMap<String, LeaseItem>,
) -> anyhow::Result<BTreeSet<String>> {
    let cache = store
        .shard_cache(stream)
        .await
        .with_context(|| format!("reading the shard cache of {stream:?}"))?;
    let listed = cache.into_iter().flat_map(|c| c.shards).map(|s| s.shard_id);
    Ok(leases.keys().cloned().chain(listed).collect())
}

/// Runs `kinesumer export`: the group's checkpoints of the stream as JSON on stdout.
pub(crate) async fn export(aws: &Aws, args: ExportArgs) -> anyhow::Result<()> {
    let store = aws.store(&args.group.table, &args.group.app).await?;
    let leases = leases(&store, &args.stream).await?;
    let shards = known_shards(&store, &args.stream, &leases).await?;
    let export = Export {
        app: args.group.app,
        shards: shards
            .iter()
            .map(|s| Checkpoint::of(s, leases.get(s)))
            .collect(),
        stream: args.stream,
    };
    println!("{}", serde_json::to_string_pretty(&export)?);
    Ok(())
}

/// The moves of a reset, by shard.
fn moves(
    to: &ResetTarget,
    shards: &BTreeSet<String>,
    file: Option<&Export>,
) -> anyhow::Result<BTreeMap<String, Move>> {
    if let Some(file) = file {
        return file
            .shards
            .iter()
            .map(|c| Ok((c.shard_id.clone(), c.to_move()?)))
            .collect();
    }
    let now = Utc::now();
    let start_at = |t: DateTime<Utc>| Move {
        position: None,
        start: Some(StoredStart::AtTimestamp(t)),
        finished: false,
    };
    let one = if to.to_earliest {
        Move {
            position: None,
            start: Some(StoredStart::TrimHorizon),
            finished: false,
        }
    } else if to.to_latest {
        start_at(now)
    } else if let Some(t) = to.to_datetime {
        start_at(t)
    } else if let Some(d) = to.by_duration {
        start_at(now - chrono::Duration::from_std(d).context("--by-duration is too long")?)
    } else if let Some(seq) = &to.to_sequence {
        Move {
            position: Some(Position::whole(seq.clone())),
            start: None,
            finished: false,
        }
    } else {
        anyhow::bail!("no reset target given")
    };
    Ok(shards.iter().map(|s| (s.clone(), one.clone())).collect())
}

/// Runs `kinesumer reset`.
pub(crate) async fn run(aws: &Aws, args: ResetArgs) -> anyhow::Result<()> {
    let file: Option<Export> = match &args.to.from_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let export: Export = serde_json::from_str(&text).map_err(|e| {
                UsageError(format!(
                    "{} is not a file `kinesumer export` wrote: {e}",
                    path.display()
                ))
            })?;
            if export.stream != args.stream {
                return Err(UsageError(format!(
                    "{} holds checkpoints of stream {:?}, not {:?}",
                    path.display(),
                    export.stream,
                    args.stream
                ))
                .into());
            }
            Some(export)
        }
        None => None,
    };
    let store = aws.store(&args.group.table, &args.group.app).await?;
    let leases = leases(&store, &args.stream).await?;
    let shards: BTreeSet<String> = if args.shards.is_empty() {
        known_shards(&store, &args.stream, &leases).await?
    } else {
        args.shards.iter().cloned().collect()
    };
    if shards.is_empty() && file.is_none() {
        return Err(UsageError(format!(
            "the group {:?} knows no shard of stream {:?}: name them with --shard",
            args.group.app, args.stream
        ))
        .into());
    }
    let moves = moves(&args.to, &shards, file.as_ref())?;
    println!("shard | now | after");
    for (shard, m) in &moves {
        let now = Checkpoint::of(shard, leases.get(shard));
        println!(
            "{}/{shard} | {} | {}",
            args.stream,
            now.describe(),
            m.as_checkpoint(shard).describe()
        );
    }
    if !args.execute {
        println!("dry run: nothing written; --execute writes");
        return Ok(());
    }

    let group = observe(&store, args.observe.observe_ms).await?;
    let alive = group.alive_owners();
    if !alive.is_empty() && !args.force {
        let names: Vec<String> = alive.iter().map(|o| o.client_id.clone()).collect();
        anyhow::bail!(
            "members of {:?} are alive ({}): stop them first, or pass --force",
            args.group.app,
            names.join(", ")
        );
    }
    for (shard, m) in &moves {
        let owner = leases.get(shard).and_then(|l| l.owner.as_ref());
        let force = args.force || owner.is_some_and(|o| !alive.contains(o));
        store
            .set_checkpoint(
                &args.stream,
                shard,
                m.position.as_ref(),
                m.start.as_ref(),
                m.finished,
                force,
            )
            .await
            .with_context(|| {
                format!(
                    "moving the checkpoint of {}/{shard} (taken meanwhile? pass --force)",
                    args.stream
                )
            })?;
    }
    println!("{} checkpoints of {:?} moved", moves.len(), args.stream);
    Ok(())
}
