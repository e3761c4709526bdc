//! `kinesumer migrate from-kcl`: imports a KCL lease table's checkpoints
//! ([`kinesumer::migrate`]). A dry run prints the plan; `--execute` first watches the KCL
//! leases for a while (a lease counter that moves is a live KCL worker) and this group's
//! members, then writes.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::Utc;
use kinesumer::migrate::{self, KclLease};

use crate::aws::Aws;
use crate::cli::{FromKclArgs, MigrateCommand};
use crate::observe::observe;

/// Runs `kinesumer migrate …`.
pub(crate) async fn run(aws: &Aws, cmd: MigrateCommand) -> anyhow::Result<()> {
    let MigrateCommand::FromKcl(args) = cmd;
    from_kcl(aws, args).await
}

async fn from_kcl(aws: &Aws, args: FromKclArgs) -> anyhow::Result<()> {
    let dynamodb = aws.dynamodb();
    let first = migrate::read_lease_table(&dynamodb, &args.kcl_table).await?;
    let imports = migrate::plan(&first, &args.stream, args.at_timestamp, Utc::now())?;
    println!("shard | KCL checkpoint | parents | this group's checkpoint");
    for i in &imports {
        println!(
            "{} | {} | {} | {}",
            i.shard_id,
            i.kcl,
            if i.parents.is_empty() {
                "-".to_owned()
            } else {
                i.parents.join(",")
            },
            i.write
        );
    }
    if !args.execute {
        println!("dry run: nothing written; --execute writes these checkpoints");
        return Ok(());
    }
    tokio::time::sleep(args.kcl_observe_ms).await;
    let second = migrate::read_lease_table(&dynamodb, &args.kcl_table).await?;
    let moving = moved(&first, &second);
    if !moving.is_empty() && !args.force {
        anyhow::bail!(
            "KCL workers still hold leases of {} ({}: their lease counters moved within {:?}): stop them first, or pass --force",
            args.kcl_table,
            moving.join(", "),
            args.kcl_observe_ms
        );
    }
    let store = aws.store(&args.group.table, &args.group.app).await?;
    let group = observe(&store, args.observe.observe_ms).await?;
    let alive: Vec<String> = group
        .alive_owners()
        .into_iter()
        .map(|o| o.client_id)
        .collect();
    if !alive.is_empty() && !args.force {
        anyhow::bail!(
            "members of {:?} are alive ({}): stop them first, or pass --force",
            args.group.app,
            alive.join(", ")
        );
    }
    migrate::import(&store, &args.stream, &imports, args.overwrite)
        .await
        .with_context(|| format!("importing into {:?}", args.group.app))?;
    println!(
        "imported {} shards of {:?} into {:?}: start its members",
        imports.len(),
        args.stream,
        args.group.app
    );
    Ok(())
}

/// The leases whose liveness mark (lease counter, lease timeout) changed between the two
/// reads, or that appeared: held by a live worker.
fn moved(before: &[KclLease], after: &[KclLease]) -> Vec<String> {
    let key = |l: &KclLease| (l.stream.clone(), l.shard_id.clone());
    let seen: BTreeMap<_, _> = before.iter().map(|l| (key(l), &l.liveness)).collect();
    after
        .iter()
        .filter(|l| seen.get(&key(l)) != Some(&&l.liveness))
        .map(|l| l.shard_id.clone())
        .collect()
}
