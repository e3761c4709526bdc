//! `kinesumer table create|describe`: the state-store table (DESIGN §2, the Go client's
//! schema).

use anyhow::Context as _;
use kinesumer::store::{create_table, DynamoStore, TableBilling};

use crate::aws::Aws;
use crate::cli::{Billing, TableCommand};

/// Runs `kinesumer table …`.
pub(crate) async fn run(aws: &Aws, cmd: TableCommand) -> anyhow::Result<()> {
    match cmd {
        TableCommand::Create {
            table,
            billing,
            read_capacity,
            write_capacity,
        } => {
            let billing = match billing {
                Billing::OnDemand => TableBilling::OnDemand,
                Billing::Provisioned => TableBilling::Provisioned {
                    read: read_capacity,
                    write: write_capacity,
                },
            };
            create_table(&aws.dynamodb(), &table, billing)
                .await
                .with_context(|| format!("creating table {table:?}"))?;
            println!("table {table} is ACTIVE");
            Ok(())
        }
        TableCommand::Describe { table } => describe(aws, &table).await,
    }
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
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(aws_sdk_dynamodb::Error::from)
        .with_context(|| format!("describing table {table:?}"))?;
    let desc = out.table().context("DescribeTable returned no table")?;
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
    match usable {
        Ok(()) => println!("usable   yes: the kinesumer (and Go client) schema"),
        Err(e) => println!("usable   no: {e}"),
    }
    Ok(())
}
