//! `kinesumer run -- COMMAND` on the local stack, with real child processes in Python
//! and Node speaking the record-processor protocol (docs/processor-protocol.md).

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

fn processor(name: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/processors");
    dir.join(name).display().to_string()
}

/// A file for a test's children to write to, and what they wrote: one JSON object per
/// line.
struct Out(PathBuf);

impl Out {
    fn new() -> Self {
        Self(std::env::temp_dir().join(random_name("run-out")))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn data(&self) -> Vec<String> {
        self.lines()
            .iter()
            .map(|l| l["data"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until the children wrote every one of `want`.
    async fn has_all(&self, want: &[Vec<u8>]) -> Vec<String> {
        let want: BTreeSet<String> = want
            .iter()
            .map(|w| String::from_utf8(w.clone()).unwrap())
            .collect();
        eventually(
            "every record processed",
            Duration::from_secs(40),
            || async {
                let got = self.data();
                let seen: BTreeSet<&String> = got.iter().collect();
                want.iter().all(|w| seen.contains(w)).then_some(got.clone())
            },
        )
        .await
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("crashed"));
        let _ = std::fs::remove_file(self.0.with_extension("hung"));
    }
}

/// A member running `record.py`: one child for all its shards, unless `options` say
/// `--child-per-shard`.
fn python_member(
    app: &str,
    table: &str,
    stream: &str,
    id: &str,
    options: &[&str],
    env: &[(&str, &str)],
) -> RunMember {
    let command = ["python3", &processor("record.py")];
    RunMember::start(app, table, stream, id, options, env, &command)
}

/// The children that processed what `out` holds.
fn pids(out: &Out) -> BTreeSet<u64> {
    out.lines()
        .iter()
        .map(|l| l["pid"].as_u64().unwrap())
        .collect()
}

/// A member of 2 shards processes 60 records once each, with `options`; returns how
/// many children processed them.
async fn every_record_once(options: &[&str]) -> usize {
    let (table, stream) = table_and_stream(2).await;
    let app = random_name("app");
    let out = Out::new();
    let env = [("OUT", out.path())];
    let mut member = python_member(&app, &table, &stream, "py-1", options, &env);
    let records = payloads("r", 60);
    put(&stream, &records, &[]).await;
    let got = out.has_all(&records).await;
    assert_eq!(got.len(), 60, "each record once: {got:?}");
    assert!(out.lines().iter().all(|l| l["token"].as_u64() >= Some(1)));
    assert!(
        out.lines().iter().all(|l| l["behind"].as_i64() >= Some(0)),
        "every batch says how far behind the tip it was read"
    );
    assert_eq!(member.terminate().await, Some(0), "{}", member.stderr());
    pids(&out).len()
}

#[tokio::test]
async fn one_python_child_gets_every_record_of_both_shards_once_with_its_token() {
    assert_eq!(every_record_once(&[]).await, 1, "one child for both shards");
}

#[tokio::test]
async fn a_python_child_per_shard_gets_every_record_of_its_shard_once() {
    let children = every_record_once(&["--child-per-shard"]).await;
    assert_eq!(children, 2, "a child per shard");
}

/// `--text`: a UTF-8 payload goes as itself with `"data_encoding": "text"`, any other
/// as base64 with `"data_encoding": "base64"`.
#[tokio::test]
async fn text_mode_sends_text_where_the_payload_is_utf8() {
    let (table, stream) = table_and_stream(1).await;
    let app = random_name("app");
    let out = Out::new();
    let command = ["python3", &processor("raw.py")];
    let mut member = RunMember::start(
        &app,
        &table,
        &stream,
        "raw-1",
        &["--text"],
        &[("OUT", out.path())],
        &command,
    );
    let mut records = payloads("t", 5);
    records.push(vec![0xff, 0x00]);
    put(&stream, &records, &[]).await;
    out.has_all(&records[..5]).await;
    eventually("the binary record", Duration::from_secs(30), || async {
        out.lines()
            .iter()
            .any(|l| l["data"] == "/wA=" && l["enc"] == "base64")
            .then_some(())
    })
    .await;
    let lines = out.lines();
    let text = lines.iter().filter(|l| l["data"] != "/wA=");
    assert!(text.clone().count() >= 5);
    assert!(text.into_iter().all(|l| l["enc"] == "text"), "{lines:?}");
    assert_eq!(member.terminate().await, Some(0), "{}", member.stderr());
}

/// Of 2 shards, one gets 40 records (one partition key) and a child exits at the 21st;
/// then both get more. Returns how many children processed them.
async fn exits_mid_batch(options: &[&str]) -> usize {
    let (table, stream) = table_and_stream(2).await;
    let app = random_name("app");
    let out = Out::new();
    let crashed = out.0.with_extension("crashed");
    let env = [("OUT", out.path()), ("CRASH_ON", "r-20")];
    let mut member = python_member(&app, &table, &stream, "py-crash", options, &env);
    let records = payloads("r", 40);
    put(&stream, &records, &["--partition-key", "one"]).await;
    out.has_all(&records).await;
    assert!(crashed.exists(), "the child crashed at r-20");
    let more = payloads("more", 20);
    put(&stream, &more, &[]).await;
    let got = out.has_all(&[records, more].concat()).await;
    // What the crashed child had processed of its batch, unacknowledged, came again.
    assert!(got.len() >= 60, "{got:?}");
    assert!(
        member
            .stderr()
            .contains("stopped: it closed its stdout (exit status: 3)"),
        "the member says the child exited: {}",
        member.stderr()
    );
    assert_eq!(member.terminate().await, Some(0), "{}", member.stderr());
    pids(&out).len()
}

/// The handler of docs/processor-protocol.md ("A handler in 20 lines, without the
/// helper"), written to a file of its own (removed when dropped).
struct DocHandler(PathBuf);

impl DocHandler {
    fn new() -> Self {
        let doc =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/processor-protocol.md");
        let doc = std::fs::read_to_string(doc).unwrap();
        let (_, after) = doc.split_once("## A handler in 20 lines").unwrap();
        let (_, code) = after.split_once("```python\n").unwrap();
        let (code, _) = code.split_once("```").unwrap();
        let path = std::env::temp_dir().join(format!("{}.py", random_name("doc-handler")));
        std::fs::write(&path, code).unwrap();
        Self(path)
    }

    /// Runs a member of 2 shards with it and `options`, until it printed every one of 10
    /// records to its stderr; returns what the member wrote to stderr.
    async fn serve(&self, options: &[&str]) -> String {
        let (table, stream) = table_and_stream(2).await;
        let app = random_name("app");
        let command = ["python3", self.0.to_str().unwrap()];
        let mut member = RunMember::start(&app, &table, &stream, "doc", options, &[], &command);
        put(&stream, &payloads("doc", 10), &[]).await;
        eventually("every record printed", Duration::from_secs(40), || async {
            let stderr = member.stderr();
            (0..10)
                .all(|i| stderr.contains(&format!("b'doc-{i}'")))
                .then_some(())
        })
        .await;
        assert_eq!(member.terminate().await, Some(0), "{}", member.stderr());
        member.stderr()
    }
}

impl Drop for DocHandler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The handler written out in the protocol's doc serves a shared child: every record
/// reaches it.
#[tokio::test]
async fn the_handler_written_out_in_the_protocols_doc_works() {
    let stderr = DocHandler::new().serve(&[]).await;
    assert!(stderr.contains("[child] shardId-"), "{stderr}");
}

/// `--log-format json`: every line on the member's stderr is a JSON object — the
/// library's events, the tool's notes, and the child's stderr with the child named.
#[tokio::test]
async fn with_json_logs_every_stderr_line_is_an_object_the_childs_lines_too() {
    let stderr = DocHandler::new().serve(&["--log-format", "json"]).await;
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.starts_with("----"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["message"].is_string()));
    let child: Vec<&serde_json::Value> = lines.iter().filter(|l| l["child"] == "[child]").collect();
    assert!(
        child
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("b'doc-0'")),
        "{child:?}"
    );
    assert!(
        lines.iter().any(|l| l["target"]
            .as_str()
            .unwrap_or_default()
            .starts_with("kinesumer::")),
        "the library's events are JSON too: {lines:?}"
    );
}

/// A shared child whose first batch of each shard waits for the other shard's: every
/// record of both shards arrives only if the helper handles shards at once.
async fn shards_at_once(command: &[&str], slow: &str) {
    let (table, stream) = table_and_stream(2).await;
    let app = random_name("app");
    let out = Out::new();
    let env = [("OUT", out.path())];
    let mut member = RunMember::start(&app, &table, &stream, "at-once", &[], &env, command);
    let records = payloads("c", 30);
    put(&stream, &records, &[]).await;
    let got = out.has_all(&records).await;
    assert_eq!(got.len(), 30, "each record once: {got:?}");
    assert!(!member.stderr().contains(slow), "{}", member.stderr());
    assert_eq!(pids(&out).len(), 1, "one child");
    assert_eq!(member.terminate().await, Some(0), "{}", member.stderr());
}

#[tokio::test]
async fn the_python_helper_handles_shards_at_once_when_concurrent() {
    let command = ["python3", &processor("barrier.py")];
    shards_at_once(&command, "BrokenBarrierError").await;
}

#[tokio::test]
async fn the_node_helper_handles_shards_at_once() {
    let command = ["node".to_owned(), processor("barrier.js")];
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    shards_at_once(&command, "the other shard never came").await;
}

/// A member of a new app running `raw.py` (`--text`), whose answers do not name the
/// shard.
fn nameless_member(stream: &str, table: &str, per_shard: bool, out: &Out) -> RunMember {
    let command = ["python3", &processor("raw.py")];
    let env = [("OUT", out.path()), ("NAMELESS", "1")];
    let options: &[&str] = if per_shard {
        &["--text", "--child-per-shard"]
    } else {
        &["--text"]
    };
    let app = random_name("app");
    RunMember::start(&app, table, stream, "raw-nameless", options, &env, &command)
}

#[tokio::test]
async fn a_shared_child_must_name_the_shard_in_its_answers_and_a_shards_own_need_not() {
    let (table, stream) = table_and_stream(1).await;
    let records = payloads("n", 5);
    put(&stream, &records, &[]).await;

    let out = Out::new();
    let mut shared = nameless_member(&stream, &table, false, &out);
    let said = "the shared child answered without naming the shard";
    eventually("the member says why", Duration::from_secs(30), || async {
        shared.stderr().contains(said).then_some(())
    })
    .await;
    assert!(
        shared.stderr().contains("--child-per-shard"),
        "{}",
        shared.stderr()
    );
    assert_eq!(shared.terminate().await, Some(0), "{}", shared.stderr());

    let out = Out::new();
    let mut own = nameless_member(&stream, &table, true, &out);
    out.has_all(&records).await;
    assert!(!own.stderr().contains(said), "{}", own.stderr());
    assert_eq!(own.terminate().await, Some(0), "{}", own.stderr());
}

#[tokio::test]
async fn a_shared_child_that_exits_mid_batch_is_restarted_and_nothing_is_lost() {
    let children = exits_mid_batch(&[]).await;
    assert_eq!(children, 2, "one child, then one other for both shards");
}

#[tokio::test]
async fn a_shared_child_that_hangs_is_replaced_for_every_shard_and_nothing_is_lost() {
    let (table, stream) = table_and_stream(2).await;
    let app = random_name("app");
    let out = Out::new();
    let env = [("OUT", out.path()), ("HANG_ON", "h-20")];
    let options = ["--attempt-timeout-ms", "2000"];
    let mut member = python_member(&app, &table, &stream, "py-hang", &options, &env);
    let records = payloads("h", 40);
    put(&stream, &records, &["--partition-key", "one"]).await;
    let more = payloads("more", 20);
    put(&stream, &more, &[]).await;
    let got = out.has_all(&[records, more].concat()).await;
    assert!(
        out.0.with_extension("hung").exists(),
        "the child hung at h-20"
    );
    assert!(got.len() >= 60, "{got:?}");
    let children = pids(&out);
    assert_eq!(children.len(), 2, "one child, then one other: {children:?}");
    assert!(
        member
            .stderr()
            .contains("the attempt did not finish within 2s"),
        "{}",
        member.stderr()
    );
    assert_eq!(member.terminate().await, Some(0), "{}", member.stderr());
}

#[tokio::test]
async fn a_shards_child_that_exits_mid_batch_is_restarted_and_nothing_is_lost() {
    // The crashed child and its successor; the other shard's child if it got any.
    let children = exits_mid_batch(&["--child-per-shard"]).await;
    assert!(children >= 2, "a second child took over: {children}");
}

#[tokio::test]
async fn a_child_that_never_checkpoints_stops_its_shard_at_the_in_flight_bound() {
    let (table, stream) = table_and_stream(1).await;
    let app = random_name("app");
    let out = Out::new();
    let mut member = python_member(
        &app,
        &table,
        &stream,
        "py-stuck",
        &["--max-in-flight", "20", "--batch-max-records", "5"],
        &[("OUT", out.path()), ("MODE", "never-checkpoint")],
    );
    put(&stream, &payloads("r", 100), &[]).await;
    eventually("the bound reached", Duration::from_secs(30), || async {
        (out.data().len() >= 20).then_some(())
    })
    .await;
    // Past the failover timeout: the member still heartbeats and holds its shard, and
    // the child got no more than the bound and one batch.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let given = out.data().len();
    assert!(
        given <= 25,
        "{given} records delivered past the bound of 20 (+ a batch of 5)"
    );
    let s = status(&app, &table, &stream).await;
    let alive = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["alive"] == true && m["shards_held"] == 1);
    assert!(alive, "the member heartbeats and holds the shard: {s:#}");
    assert_eq!(member.terminate().await, Some(0), "{}", member.stderr());
}

#[tokio::test]
async fn a_handoff_with_records_in_a_node_childs_buffer_duplicates_nothing() {
    let (table, stream) = table_and_stream(2).await;
    let app = random_name("app");
    let out = Out::new();
    let env = [("OUT", out.path())];
    let command = ["node".to_owned(), processor("buffer.js")];
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let mut a = RunMember::start(&app, &table, &stream, "node-a", &[], &env, &command);
    eventually("a holds both shards", Duration::from_secs(30), || async {
        let s = status(&app, &table, &stream).await;
        (owners(&s)
            .values()
            .filter(|o| o.as_deref() == Some("node-a"))
            .count()
            == 2)
            .then_some(())
    })
    .await;
    let first = payloads("first", 40);
    put(&stream, &first, &[]).await;
    // The children buffer: nothing is written (or checkpointed) until a revoke.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(out.data().is_empty(), "{:?}", out.data());

    let mut b = RunMember::start(&app, &table, &stream, "node-b", &[], &env, &command);
    eventually("one shard each", Duration::from_secs(30), || async {
        let s = status(&app, &table, &stream).await;
        let owners = owners(&s);
        let held: BTreeSet<&str> = owners.values().flatten().map(String::as_str).collect();
        (owners.len() == 2 && owners.values().all(Option::is_some) && held.len() == 2).then_some(())
    })
    .await;
    let second = payloads("second", 40);
    put(&stream, &second, &[]).await;
    assert_eq!(a.terminate().await, Some(0), "{}", a.stderr());
    assert_eq!(b.terminate().await, Some(0), "{}", b.stderr());
    // What neither had been given before its close is read by the next member, which
    // writes at once.
    let mut c = python_member(&app, &table, &stream, "py-c", &[], &env);
    let all = [first, second].concat();
    out.has_all(&all).await;
    assert_eq!(c.terminate().await, Some(0), "{}", c.stderr());
    let got = out.data();
    assert_eq!(got.len(), 80, "a record was processed twice: {got:?}");
}
