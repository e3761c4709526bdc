//! `kinesumer reset`: moves the checkpoints of a stream's shards.
//!
//! It refuses while any member of the group is alive (judged as in
//! [`observe`](crate::observe)), unless `--force`: a live owner would go on from where it
//! is. Each shard is then written with [`StateStore::set_checkpoint`]: conditional on the
//! lease having no owner, except when its owner is not an alive member (a crashed member
//! whose lease was never released) or with `--force`. A member that still holds a moved
//! lease cannot commit over the reset: its checkpoint writes are conditional on the
//! checkpoint it last wrote, so it loses the lease and the next owner starts from the
//! reset position.

use std::collections::BTreeSet;

use anyhow::Context as _;
use chrono::Utc;
use kinesumer::store::{StateStore, StoredStart};
use kinesumer::Position;

use crate::aws::Aws;
use crate::cli::{ResetArgs, ResetTo};
use crate::observe::observe;
use crate::UsageError;

/// Runs `kinesumer reset`.
pub(crate) async fn run(aws: &Aws, args: ResetArgs) -> anyhow::Result<()> {
    let store = aws.store(&args.group.table, &args.group.app).await?;
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
    let leases = store
        .leases(&args.stream)
        .await
        .with_context(|| format!("reading the leases of {:?}", args.stream))?;
    let shards: BTreeSet<String> = if args.shards.is_empty() {
        let cache = store
            .shard_cache(&args.stream)
            .await
            .with_context(|| format!("reading the shard cache of {:?}", args.stream))?;
        let listed = cache.into_iter().flat_map(|c| c.shards).map(|s| s.shard_id);
        leases
            .iter()
            .map(|l| l.shard_id.clone())
            .chain(listed)
            .collect()
    } else {
        args.shards.iter().cloned().collect()
    };
    if shards.is_empty() {
        return Err(UsageError(format!(
            "the group {:?} knows no shard of stream {:?}: name them with --shard",
            args.group.app, args.stream
        ))
        .into());
    }

    let (position, start) = target(&args.to);
    for shard in &shards {
        let owner = leases
            .iter()
            .find(|l| &l.shard_id == shard)
            .and_then(|l| l.owner.as_ref());
        let force = args.force || owner.is_some_and(|o| !alive.contains(o));
        store
            .set_checkpoint(
                &args.stream,
                shard,
                position.as_ref(),
                start.as_ref(),
                false,
                force,
            )
            .await
            .with_context(|| {
                format!(
                    "moving the checkpoint of {}/{shard} (taken meanwhile? pass --force)",
                    args.stream
                )
            })?;
        println!("{}/{shard}: {}", args.stream, describe(&args.to));
    }
    Ok(())
}

/// The checkpoint and stored start a reset writes. Without a checkpoint, the next owner
/// reads from the stored start.
fn target(to: &ResetTo) -> (Option<Position>, Option<StoredStart>) {
    match to {
        ResetTo::TrimHorizon => (None, Some(StoredStart::TrimHorizon)),
        ResetTo::Latest => (None, Some(StoredStart::AtTimestamp(Utc::now()))),
        ResetTo::At(t) => (None, Some(StoredStart::AtTimestamp(*t))),
        ResetTo::After(seq) => (
            Some(Position {
                sequence: seq.clone(),
                sub_sequence: None,
            }),
            None,
        ),
    }
}

fn describe(to: &ResetTo) -> String {
    match to {
        ResetTo::TrimHorizon => "reset to TRIM_HORIZON".into(),
        ResetTo::Latest => "reset to records written from now on".into(),
        ResetTo::At(t) => format!("reset to records written from {t}"),
        ResetTo::After(seq) => format!("reset to after sequence number {seq}"),
    }
}
