//! `kinesumer iam-policy`: the least-privilege IAM policy of a member, and of this tool.
//!
//! [`ACTIONS`] lists every AWS action the code calls, with the SDK call that makes it and
//! who needs it; a test reads the sources and checks that the list and the calls agree,
//! so a new call cannot ship without its permission.

use serde_json::{json, Value};

use crate::cli::{AwsOptions, IamPolicyArgs};
use crate::UsageError;

/// Who needs an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Every member (`consume`, or a program with the library).
    Member,
    /// A member reading with enhanced fan-out (`--efo`).
    FanOut,
    /// `deregister-consumer`.
    Deregister,
    /// `migrate from-kcl` (reads the KCL's lease table).
    Migrate,
    /// `table create`, `stream create`, `put`, `groups`, `group delete`: setting up and
    /// administering, not consuming.
    Setup,
}

/// What an action is granted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Stream,
    Consumer,
    Table,
    TableAndIndexes,
    KclTable,
}

/// One action the code calls.
struct Action {
    /// `kinesis:GetRecords`.
    action: &'static str,
    /// The SDK method that calls it (a waiter counts as the call it makes): read by the
    /// test that ties this list to the code.
    #[cfg_attr(not(test), allow(dead_code))]
    call: &'static str,
    need: Need,
    on: On,
}

const fn a(action: &'static str, call: &'static str, need: Need, on: On) -> Action {
    Action {
        action,
        call,
        need,
        on,
    }
}

/// Every AWS action the library and the tool call.
const ACTIONS: &[Action] = &[
    a(
        "kinesis:ListShards",
        "list_shards",
        Need::Member,
        On::Stream,
    ),
    a(
        "kinesis:DescribeStreamSummary",
        "describe_stream_summary",
        Need::Member,
        On::Stream,
    ),
    a(
        "kinesis:GetShardIterator",
        "get_shard_iterator",
        Need::Member,
        On::Stream,
    ),
    a(
        "kinesis:GetRecords",
        "get_records",
        Need::Member,
        On::Stream,
    ),
    a(
        "kinesis:RegisterStreamConsumer",
        "register_stream_consumer",
        Need::FanOut,
        On::Stream,
    ),
    a(
        "kinesis:DescribeStreamConsumer",
        "describe_stream_consumer",
        Need::FanOut,
        On::Consumer,
    ),
    a(
        "kinesis:SubscribeToShard",
        "subscribe_to_shard",
        Need::FanOut,
        On::Consumer,
    ),
    a(
        "kinesis:DeregisterStreamConsumer",
        "deregister_stream_consumer",
        Need::Deregister,
        On::Consumer,
    ),
    a("kinesis:PutRecords", "put_records", Need::Setup, On::Stream),
    a(
        "kinesis:CreateStream",
        "create_stream",
        Need::Setup,
        On::Stream,
    ),
    a(
        "kinesis:DescribeStream",
        "wait_until_stream_exists",
        Need::Setup,
        On::Stream,
    ),
    a(
        "dynamodb:DescribeTable",
        "describe_table",
        Need::Member,
        On::Table,
    ),
    a("dynamodb:GetItem", "get_item", Need::Member, On::Table),
    a("dynamodb:PutItem", "put_item", Need::Member, On::Table),
    a(
        "dynamodb:UpdateItem",
        "update_item",
        Need::Member,
        On::Table,
    ),
    a(
        "dynamodb:DeleteItem",
        "delete_item",
        Need::Member,
        On::Table,
    ),
    a("dynamodb:Query", "query", Need::Member, On::TableAndIndexes),
    a(
        "dynamodb:BatchGetItem",
        "batch_get_item",
        Need::Member,
        On::Table,
    ),
    a(
        "dynamodb:TransactGetItems",
        "transact_get_items",
        Need::Member,
        On::Table,
    ),
    a(
        "dynamodb:TransactWriteItems",
        "transact_write_items",
        Need::Member,
        On::Table,
    ),
    a(
        "dynamodb:CreateTable",
        "create_table",
        Need::Setup,
        On::Table,
    ),
    a(
        "dynamodb:DescribeTable",
        "wait_until_table_exists",
        Need::Setup,
        On::Table,
    ),
    a(
        "dynamodb:UpdateTable",
        "update_table",
        Need::Setup,
        On::Table,
    ),
    a(
        "dynamodb:UpdateContinuousBackups",
        "update_continuous_backups",
        Need::Setup,
        On::Table,
    ),
    a(
        "dynamodb:DescribeContinuousBackups",
        "describe_continuous_backups",
        Need::Setup,
        On::Table,
    ),
    a(
        "dynamodb:TagResource",
        "tag_resource",
        Need::Setup,
        On::Table,
    ),
    a(
        "dynamodb:ListTagsOfResource",
        "list_tags_of_resource",
        Need::Setup,
        On::Table,
    ),
    a("dynamodb:Scan", "scan", Need::Migrate, On::KclTable),
    a("dynamodb:Scan", "scan", Need::Setup, On::Table),
];

/// Runs `kinesumer iam-policy`: prints the policy as JSON. The region is the global
/// `--region` (or `AWS_REGION`); with the global `--role-arn`, the role to assume.
pub(crate) fn run(args: &IamPolicyArgs, options: &AwsOptions) -> anyhow::Result<()> {
    let region = options
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .ok_or_else(|| UsageError("give the region of the table and streams: --region".into()))?;
    let policy = policy(args, &region, options.role_arn.as_deref());
    println!("{}", serde_json::to_string_pretty(&policy)?);
    Ok(())
}

fn policy(args: &IamPolicyArgs, region: &str, role_arn: Option<&str>) -> Value {
    let account = &args.account;
    let stream_arns: Vec<String> = args
        .streams
        .iter()
        .map(|s| match s.strip_prefix("arn:") {
            Some(_) => s.clone(),
            None => format!("arn:aws:kinesis:{region}:{account}:stream/{s}"),
        })
        .collect();
    let table = format!("arn:aws:dynamodb:{region}:{account}:table/{}", args.table);
    let resources = |on: On| -> Vec<String> {
        match on {
            On::Stream => stream_arns.clone(),
            On::Consumer => stream_arns
                .iter()
                .map(|s| format!("{s}/consumer/*"))
                .collect(),
            On::Table => vec![table.clone()],
            On::TableAndIndexes => vec![table.clone(), format!("{table}/index/*")],
            On::KclTable => args
                .kcl_table
                .iter()
                .map(|t| format!("arn:aws:dynamodb:{region}:{account}:table/{t}"))
                .collect(),
        }
    };
    let wanted = |need: Need| match need {
        Need::Member => true,
        Need::FanOut => args.efo,
        Need::Deregister => args.efo && args.tools,
        Need::Migrate => args.kcl_table.is_some(),
        Need::Setup => args.tools,
    };
    let mut statements: Vec<Value> = Vec::new();
    for on in [
        On::Stream,
        On::Consumer,
        On::Table,
        On::TableAndIndexes,
        On::KclTable,
    ] {
        let mut actions: Vec<&str> = ACTIONS
            .iter()
            .filter(|a| a.on == on && wanted(a.need))
            .map(|a| a.action)
            .collect();
        actions.sort_unstable();
        actions.dedup();
        if !actions.is_empty() {
            statements.push(json!({
                "Effect": "Allow",
                "Action": actions,
                "Resource": resources(on),
            }));
        }
    }
    if let Some(role) = role_arn {
        statements.push(json!({
            "Effect": "Allow",
            "Action": ["sts:AssumeRole"],
            "Resource": [role],
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The SDK operations the sources call: `client.operation()` (or `kinesis.…`,
    /// `dynamodb.…`), on one line or across lines — the style of every call here.
    fn sdk_calls(source: &str) -> BTreeSet<String> {
        let text: String = source.split_whitespace().collect();
        let mut calls = BTreeSet::new();
        for receiver in ["client.", "kinesis.", "dynamodb."] {
            for (at, _) in text.match_indices(receiver) {
                let rest = &text[at + receiver.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(rest.len());
                // A client's own methods, not operations.
                let own = ["clone", "config"].contains(&&rest[..end]);
                if end > 0 && !own && rest[end..].starts_with("()") {
                    calls.insert(rest[..end].to_owned());
                }
            }
        }
        calls
    }

    #[test]
    fn the_policy_lists_exactly_the_calls_the_code_makes() {
        let sources = [
            include_str!("../../kinesumer/src/reader/kinesis.rs"),
            include_str!("../../kinesumer/src/store/dynamo.rs"),
            include_str!("../../kinesumer/src/store/dynamo/table.rs"),
            include_str!("../../kinesumer/src/migrate.rs"),
            include_str!("put.rs"),
            include_str!("stream.rs"),
            include_str!("table.rs"),
            include_str!("deregister.rs"),
        ];
        let called: BTreeSet<String> = sources.iter().flat_map(|s| sdk_calls(s)).collect();
        let listed: BTreeSet<String> = ACTIONS.iter().map(|a| a.call.to_owned()).collect();
        assert_eq!(
            called, listed,
            "SDK calls in the code vs the IAM action list"
        );
    }

    fn args(efo: bool, tools: bool) -> IamPolicyArgs {
        IamPolicyArgs {
            table: "state".into(),
            streams: vec![
                "orders".into(),
                "arn:aws:kinesis:eu-west-1:222222222222:stream/shared".into(),
            ],
            efo,
            tools,
            kcl_table: None,
            account: "111111111111".into(),
        }
    }

    const ROLE: Option<&str> = Some("arn:aws:iam::222222222222:role/reader");

    #[test]
    fn a_member_gets_only_what_it_calls_on_exact_resources() {
        let p = policy(&args(false, false), "us-east-1", ROLE);
        let text = p.to_string();
        for action in [
            "kinesis:GetRecords",
            "dynamodb:TransactWriteItems",
            "sts:AssumeRole",
        ] {
            assert!(text.contains(action), "{action} in {text}");
        }
        for action in [
            "kinesis:SubscribeToShard",
            "dynamodb:CreateTable",
            "dynamodb:Scan",
            "kinesis:PutRecords",
        ] {
            assert!(!text.contains(action), "{action} not in {text}");
        }
        assert!(text.contains("arn:aws:kinesis:us-east-1:111111111111:stream/orders"));
        assert!(text.contains("arn:aws:kinesis:eu-west-1:222222222222:stream/shared"));
        assert!(text.contains("arn:aws:dynamodb:us-east-1:111111111111:table/state/index/*"));
        assert!(!text.contains("\"*\""), "no wildcard resource: {text}");
        let fan_out = policy(&args(true, true), "us-east-1", ROLE).to_string();
        assert!(fan_out.contains("stream/orders/consumer/*"), "{fan_out}");
        assert!(fan_out.contains("kinesis:DeregisterStreamConsumer"));
    }
}
