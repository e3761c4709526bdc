//! `kinesumer groups` and `kinesumer group delete`: the apps of a state-store table, and
//! removing a retired one.

use anyhow::Context as _;

use crate::aws::Aws;
use crate::cli::{GroupCommand, GroupsArgs};
use crate::observe::observe;
use crate::UsageError;

/// Runs `kinesumer groups`: one line per app, its members alive (judged as `status`
/// judges them, every app over the same window) and its streams.
pub(crate) async fn list(aws: &Aws, args: GroupsArgs) -> anyhow::Result<()> {
    let store = aws.store(&args.table, "").await?;
    let apps = store
        .apps()
        .await
        .with_context(|| format!("listing the apps of table {:?}", args.table))?;
    let stores: Vec<_> = apps
        .iter()
        .map(|a| kinesumer::store::DynamoStore::new(aws.dynamodb(), &args.table, &a.app))
        .collect();
    let groups =
        futures::future::try_join_all(stores.iter().map(|s| observe(s, args.observe.observe_ms)))
            .await?;
    println!("app | members alive | members | streams");
    for (app, group) in apps.iter().zip(&groups) {
        let streams: Vec<&str> = app.streams.iter().map(String::as_str).collect();
        println!(
            "{} | {} | {} | {}",
            app.app,
            group.alive_owners().len(),
            app.members,
            if streams.is_empty() {
                "-".to_owned()
            } else {
                streams.join(",")
            }
        );
    }
    Ok(())
}

/// Runs `kinesumer group …`.
pub(crate) async fn run(aws: &Aws, cmd: GroupCommand) -> anyhow::Result<()> {
    let GroupCommand::Delete { group, observe: o } = cmd;
    let store = aws.store(&group.table, &group.app).await?;
    let apps = store.apps().await.context("listing the table's apps")?;
    if !apps.iter().any(|a| a.app == group.app) {
        return Err(UsageError(format!(
            "table {:?} has no item of app {:?}: check the name (kinesumer groups lists them)",
            group.table, group.app
        ))
        .into());
    }
    let alive: Vec<String> = observe(&store, o.observe_ms)
        .await?
        .alive_owners()
        .into_iter()
        .map(|o| o.client_id)
        .collect();
    if !alive.is_empty() {
        anyhow::bail!(
            "members of {:?} are alive ({}): stop them before deleting the group",
            group.app,
            alive.join(", ")
        );
    }
    let deleted = store
        .delete_app_items()
        .await
        .with_context(|| format!("deleting the items of {:?}", group.app))?;
    println!("deleted {deleted} items of {:?}", group.app);
    Ok(())
}
