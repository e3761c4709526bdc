//! `kinesumer table create|describe`: the state-store table (DESIGN §2, the Go client's
//! schema).

use anyhow::Context as _;
use aws_sdk_dynamodb::types::{
    PointInTimeRecoverySpecification, PointInTimeRecoveryStatus, SseSpecification, SseType,
    TableDescription, Tag,
};
use kinesumer::store::{create_table, DynamoStore, TableBilling};

use crate::aws::Aws;
use crate::cli::{Billing, TableCommand, TableProtection};

/// Runs `kinesumer table …`.
pub(crate) async fn run(aws: &Aws, cmd: TableCommand) -> anyhow::Result<()> {
    match cmd {
        TableCommand::Create {
            table,
            billing,
            read_capacity,
            write_capacity,
            protection,
        } => {
            let billing = match billing {
                Billing::OnDemand => TableBilling::OnDemand,
                Billing::Provisioned => TableBilling::Provisioned {
                    read: read_capacity,
                    write: write_capacity,
                },
            };
            let client = aws.dynamodb();
            create_table(&client, &table, billing)
                .await
                .with_context(|| format!("creating table {table:?}"))?;
            protect(&client, &table, &protection)
                .await
                .with_context(|| format!("protecting table {table:?}"))?;
            println!("table {table} is ACTIVE");
            Ok(())
        }
        TableCommand::Describe { table } => describe(aws, &table).await,
    }
}

/// Turns on what was asked, on a new table or an existing one (each call is idempotent).
async fn protect(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    p: &TableProtection,
) -> anyhow::Result<()> {
    if p.deletion_protection || p.kms_key.is_some() {
        let sse = p.kms_key.as_ref().map(|key| {
            SseSpecification::builder()
                .enabled(true)
                .sse_type(SseType::Kms)
                .kms_master_key_id(key)
                .build()
        });
        let update = client
            .update_table()
            .table_name(table)
            .set_deletion_protection_enabled(p.deletion_protection.then_some(true))
            .set_sse_specification(sse);
        update.send().await.map_err(aws_sdk_dynamodb::Error::from)?;
    }
    if p.pitr {
        let spec = PointInTimeRecoverySpecification::builder()
            .point_in_time_recovery_enabled(true)
            .build()?;
        client
            .update_continuous_backups()
            .table_name(table)
            .point_in_time_recovery_specification(spec)
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from)?;
    }
    if !p.tags.is_empty() {
        let arn = table_description(client, table).await?.table_arn;
        let arn = arn.context("DescribeTable returned no table ARN")?;
        let tags = p
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect::<Result<Vec<_>, _>>()?;
        client
            .tag_resource()
            .resource_arn(arn)
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from)?;
    }
    Ok(())
}

async fn table_description(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> anyhow::Result<TableDescription> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(aws_sdk_dynamodb::Error::from)
        .with_context(|| format!("describing table {table:?}"))?;
    out.table.context("DescribeTable returned no table")
}

async fn describe(aws: &Aws, table: &str) -> anyhow::Result<()> {
    let client = aws.dynamodb();
    // The schema check first: it says how to create a missing table.
    let usable = DynamoStore::new(client.clone(), table, "-")
        .check_table()
        .await;
    if let Err(e @ kinesumer::store::StoreError::TableNotFound { .. }) = usable {
        return Err(e.into());
    }
    let desc = &table_description(&client, table).await?;
    let keys = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| {
        schema
            .iter()
            .map(|k| format!("{} {}", k.attribute_name(), k.key_type().as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let billing = desc
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .map_or("PROVISIONED", |m| m.as_str());
    println!("table    {table}");
    println!(
        "status   {}",
        desc.table_status().map_or("unknown", |s| s.as_str())
    );
    println!("key      {}", keys(desc.key_schema()));
    for index in desc.local_secondary_indexes() {
        println!(
            "index    {} ({}) {}",
            index.index_name().unwrap_or("?"),
            keys(index.key_schema()),
            index
                .projection()
                .and_then(|p| p.projection_type())
                .map_or("", |p| p.as_str())
        );
    }
    println!("billing  {billing}");
    if let Some(n) = desc.item_count() {
        println!("items    {n} (approximate)");
    }
    let on = |b: bool| if b { "on" } else { "off" };
    println!(
        "deletion protection  {}",
        on(desc.deletion_protection_enabled() == Some(true))
    );
    let pitr = client
        .describe_continuous_backups()
        .table_name(table)
        .send()
        .await
        .map_err(aws_sdk_dynamodb::Error::from)
        .with_context(|| format!("reading the backups of {table:?}"))?;
    let pitr = pitr
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        .is_some_and(|s| *s == PointInTimeRecoveryStatus::Enabled);
    println!("point-in-time recovery  {}", on(pitr));
    let encryption = desc
        .sse_description()
        .and_then(|s| s.kms_master_key_arn())
        .map_or("the AWS-owned key".to_owned(), |k| format!("KMS key {k}"));
    println!("encryption  {encryption}");
    if let Some(arn) = desc.table_arn() {
        let tags = client
            .list_tags_of_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(aws_sdk_dynamodb::Error::from)
            .with_context(|| format!("reading the tags of {table:?}"))?;
        let tags: Vec<String> = tags
            .tags()
            .iter()
            .map(|t| format!("{}={}", t.key(), t.value()))
            .collect();
        println!(
            "tags     {}",
            if tags.is_empty() {
                "-".to_owned()
            } else {
                tags.join(", ")
            }
        );
    }
    match usable {
        Ok(()) => println!("usable   yes: the kinesumer (and Go client) schema"),
        Err(e) => println!("usable   no: {e}"),
    }
    Ok(())
}
