//! `kinesumer consume --exec COMMAND` with `--on-error` and `--max-attempts`, on the
//! local stack.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::*;

/// Prints the record as a `consume --format jsonl` line; fails (exit 3) for payloads
/// that start with "poison" and hangs for those that start with "slow".
const HANDLER: &str = r#"data=$(cat)
case "$data" in poison*) echo "cannot handle $data" >&2; exit 3;; slow*) sleep 60;; esac
printf '{"shard_id":"%s","sequence_number":"%s","partition_key":"%s","data":"%s","token":"%s"}\n' \
  "$KINESUMER_SHARD_ID" "$KINESUMER_SEQUENCE_NUMBER" "$KINESUMER_PARTITION_KEY" "$data" "$KINESUMER_FENCING_TOKEN""#;

#[tokio::test]
async fn failing_and_hanging_commands_send_their_records_to_the_dead_letter_file_and_the_shard_moves_on(
) {
    let (table, stream) = table_and_stream(1).await;
    let app = random_name("app");
    let dir = std::env::temp_dir().join(random_name("exec"));
    std::fs::create_dir_all(&dir).unwrap();
    let letters = dir.join("dead.jsonl");
    let on_error = format!("dead-letter=file:{}", letters.display());
    let mut member = Member::start_with(
        &app,
        &table,
        &stream,
        "exec-1",
        &[
            "--exec",
            HANDLER,
            "--on-error",
            &on_error,
            "--max-attempts",
            "2",
            "--attempt-timeout-ms",
            "1000",
        ],
    );
    let first: Vec<Vec<u8>> = ["ok-0", "ok-1", "poison-2", "ok-3", "slow-4", "ok-5"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
    put(&stream, &first, &[]).await;
    let good: Vec<Vec<u8>> = first
        .iter()
        .filter(|d| d.starts_with(b"ok"))
        .cloned()
        .collect();
    let lines = received_all(&[&member], &good).await;
    assert_eq!(lines.len(), 4, "each good record once: {lines:?}");
    let dead = eventually("the dead letters", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&letters).ok()?;
        let dead: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (dead.len() == 2).then_some(dead)
    })
    .await;
    let data = |letter: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(letter["data"].as_str().unwrap())
            .unwrap()
    };
    for letter in &dead {
        assert_eq!(letter["stream"], stream.as_str());
        assert_eq!(letter["attempts"], 2);
    }
    assert_eq!(data(&dead[0]), b"poison-2");
    assert_eq!(dead[0]["error"], "the command exited with exit status: 3");
    assert_eq!(data(&dead[1]), b"slow-4");
    assert_eq!(dead[1]["error"], "the attempt did not finish within 1s");
    assert_eq!(member.terminate().await, Some(0));

    // Everything was committed, the dead letter too: a new member reads only what follows.
    let mut next = Member::start(&app, &table, &stream, "plain-2");
    put(&stream, &[b"after".to_vec()], &[]).await;
    received_all(&[&next], &[b"after".to_vec()]).await;
    let again: Vec<Line> = next.received();
    assert_eq!(again.len(), 1, "nothing delivered again: {again:?}");
    assert_eq!(next.terminate().await, Some(0));
    let text = std::fs::read_to_string(&letters).unwrap();
    assert_eq!(text.lines().count(), 2, "no more dead letters: {text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_missing_dead_letter_stream_fails_the_start_and_says_so() {
    let (table, stream) = table_and_stream(1).await;
    let out = run(
        &[
            "consume",
            "--app",
            "a",
            "--table",
            &table,
            "--stream",
            &stream,
            "--exec",
            "cat",
            "--on-error",
            "dead-letter=kinesis:no-such-dlq",
        ],
        b"",
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("dead-letter stream no-such-dlq")
            && stderr.contains("not found; create it"),
        "{stderr}"
    );
}

/// `--log-format json`: what a command writes to its stderr reaches the member's as JSON
/// objects naming the command's shard, beside the member's own JSON lines.
#[tokio::test]
async fn with_json_logs_a_commands_stderr_lines_are_objects_naming_its_shard() {
    let (table, stream) = table_and_stream(1).await;
    let app = random_name("app");
    let handler = r#"echo "handled $(cat)" >&2"#;
    let options = ["--exec", handler, "--log-format", "json"];
    let mut member = Member::start_with(&app, &table, &stream, "exec-json", &options);
    put(&stream, &payloads("j", 3), &[]).await;
    let objects = eventually("the commands' lines", Duration::from_secs(30), || async {
        let stderr = member.stderr();
        (0..3)
            .all(|i| stderr.contains(&format!("handled j-{i}")))
            .then_some(stderr)
    })
    .await;
    let lines: Vec<serde_json::Value> = objects
        .lines()
        .filter(|l| !l.starts_with("----"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let handled: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("handled j-")
        })
        .collect();
    assert_eq!(handled.len(), 3, "{lines:?}");
    let shard = format!("[{stream}/shardId-000000000000]");
    assert!(
        handled.iter().all(|l| l["child"] == shard.as_str()),
        "{handled:?}"
    );
    assert_eq!(member.terminate().await, Some(0), "{}", member.stderr());
}
