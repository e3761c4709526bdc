//! A group of `kinesumer consume` processes, watched with `kinesumer status --json` and
//! moved with `kinesumer reset`, on the local stack.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::tls::{kinesis_tls_endpoint, local_ca_bundle};
use common::*;

/// Waits until the status shows `alive` members alive holding every one of `shards`
/// shards, balanced; returns that status.
async fn settled(
    app: &str,
    table: &str,
    stream: &str,
    alive: usize,
    shards: usize,
) -> serde_json::Value {
    eventually(
        "a balanced group in status",
        Duration::from_secs(30),
        || async {
            let s = status(app, table, stream).await;
            let members = s["members"].as_array()?;
            let held: Vec<u64> = members
                .iter()
                .filter(|m| m["alive"] == true)
                .map(|m| m["shards_held"].as_u64().unwrap())
                .collect();
            let balanced = held.len() == alive
                && held.iter().sum::<u64>() == shards as u64
                && held.iter().max()? - held.iter().min()? <= 1;
            (balanced && owners(&s).values().all(Option::is_some)).then_some(s)
        },
    )
    .await
}

#[tokio::test]
async fn three_members_share_a_stream_and_lose_nothing_when_one_is_killed() {
    let (table, stream) = table_and_stream(8).await;
    let app = random_name("app");
    let mut members: Vec<Member> = (1..=3)
        .map(|n| Member::start(&app, &table, &stream, &format!("member-{n}")))
        .collect();
    let before = settled(&app, &table, &stream, 3, 8).await;

    // Status matches what the members hold: one leader among them, and every record a
    // member writes comes from a shard the status names it the owner of.
    let leaders: Vec<&str> = before["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["leader"] == true)
        .map(|m| m["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(leaders.len(), 1, "{before:#}");
    assert!(before["leader"].as_str().unwrap().starts_with(leaders[0]));
    let owner_of = owners(&before);
    let first = payloads("first", 80);
    put(&stream, &first, &[]).await;
    let refs: Vec<&Member> = members.iter().collect();
    received_all(&refs, &first).await;
    for m in &members {
        for line in m.received() {
            assert_eq!(
                owner_of[&line.shard_id].as_deref(),
                Some(m.client_id.as_str()),
                "{} wrote a record of {} which status gives to another",
                m.client_id,
                line.shard_id
            );
        }
    }

    // SIGKILL one: its shards move to the other two, and nothing is lost.
    let killed = members[2].client_id.clone();
    members[2].kill().await;
    let after = settled(&app, &table, &stream, 2, 8).await;
    let dead = after["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["client_id"] == killed.as_str());
    assert!(dead.is_none_or(|m| m["alive"] == false), "{after:#}");
    assert!(owners(&after)
        .values()
        .all(|o| o.as_deref() != Some(killed.as_str())));

    let second = payloads("second", 80);
    put(&stream, &second, &[]).await;
    let all: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
    let refs: Vec<&Member> = members.iter().collect();
    let lines = received_all(&refs, &all).await;
    let unique: BTreeSet<&String> = lines.iter().map(|l| &l.sequence_number).collect();
    assert_eq!(
        unique.len(),
        all.len(),
        "every record, once each by sequence number"
    );
}

#[tokio::test]
async fn reset_refuses_while_members_are_alive_then_moves_checkpoints() {
    let (table, stream) = table_and_stream(2).await;
    let app = random_name("app");
    let records = payloads("r", 20);
    put(&stream, &records, &[]).await;
    let mut member = Member::start(&app, &table, &stream, "only");
    received_all(&[&member], &records).await;
    // Wait for the commits, so there is a checkpoint to move.
    let committed = eventually("checkpoints written", Duration::from_secs(20), || async {
        let s = status(&app, &table, &stream).await;
        let shards = s["streams"][0]["shards"].as_array()?.clone();
        (shards.len() == 2 && shards.iter().all(|s| s["checkpoint"].is_string())).then_some(s)
    })
    .await;

    let reset = [
        "reset", "--app", &app, "--table", &table, "--stream", &stream,
    ];
    // The plan first: per shard, now and after; nothing written.
    let plan = ok(&[&reset[..], &["--to-earliest"]].concat()).await;
    assert!(
        plan.contains("dry run") && plan.contains("from TRIM_HORIZON"),
        "{plan}"
    );
    let out = run(&[&reset[..], &["--to-earliest", "--execute"]].concat(), b"").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("alive (only)") && stderr.contains("--force"),
        "{stderr}"
    );
    let checkpoints = |s: &serde_json::Value| -> Vec<serde_json::Value> {
        s["streams"][0]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["checkpoint"].clone())
            .collect()
    };
    // The member may have committed further meanwhile, never back to nothing.
    let now = checkpoints(&status(&app, &table, &stream).await);
    assert!(
        now.iter().all(serde_json::Value::is_string),
        "nothing reset: {now:?}"
    );
    assert_eq!(now.len(), checkpoints(&committed).len());

    assert_eq!(
        member.terminate().await,
        Some(0),
        "SIGTERM is a graceful exit"
    );
    let before: Vec<_> = member.received();
    // Exported before the reset, put back after it.
    let exported = ok(&[
        "export", "--app", &app, "--table", &table, "--stream", &stream,
    ])
    .await;
    ok(&[&reset[..], &["--to-earliest", "--execute"]].concat()).await;
    let s = status(&app, &table, &stream).await;
    for shard in s["streams"][0]["shards"].as_array().unwrap() {
        assert!(shard["checkpoint"].is_null(), "{s:#}");
        assert_eq!(shard["start"], "TRIM_HORIZON");
    }
    let file = std::env::temp_dir().join(random_name("checkpoints"));
    std::fs::write(&file, &exported).unwrap();
    let from_file = ["--from-file", file.to_str().unwrap(), "--execute"];
    ok(&[&reset[..], &from_file].concat()).await;
    let exported: serde_json::Value = serde_json::from_str(&exported).unwrap();
    let exported: Vec<serde_json::Value> = exported["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["sequence_number"].clone())
        .collect();
    assert!(
        exported.iter().all(serde_json::Value::is_string),
        "{exported:?}"
    );
    assert_eq!(
        checkpoints(&status(&app, &table, &stream).await),
        exported,
        "the exported checkpoints are back"
    );
    std::fs::write(&file, b"{\"app\": 1}").unwrap();
    let bad = run(&[&reset[..], &from_file].concat(), b"").await;
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a malformed file is a usage error"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a file `kinesumer export` wrote"));
    std::fs::remove_file(&file).unwrap();
    ok(&[&reset[..], &["--to-earliest", "--execute"]].concat()).await;

    // Move one shard to just after its third record: a new member reads all of the
    // other shard again, and only what follows that record in this one.
    let mut per_shard: BTreeMap<String, Vec<&Line>> = BTreeMap::new();
    for line in &before {
        per_shard
            .entry(line.shard_id.clone())
            .or_default()
            .push(line);
    }
    let (shard, lines) = per_shard
        .iter()
        .find(|(_, l)| l.len() > 3)
        .expect("a shard with 4+ records");
    let after_seq = lines[2].sequence_number.clone();
    ok(&[
        &reset[..],
        &["--to-sequence", &after_seq, "--shard", shard, "--execute"],
    ]
    .concat())
    .await;
    let s = status(&app, &table, &stream).await;
    let moved = s["streams"][0]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["shard_id"] == shard.as_str())
        .unwrap();
    assert_eq!(moved["checkpoint"], after_seq.as_str());

    let want: Vec<Vec<u8>> = before
        .iter()
        .filter(|l| &l.shard_id != shard || lines[3..].iter().any(|x| x.data == l.data))
        .map(|l| l.data.clone())
        .collect();
    let again = Member::start(&app, &table, &stream, "again");
    received_all(&[&again], &want).await;
    // Let it poll a little longer: nothing at or before the moved checkpoint comes back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got: BTreeSet<Vec<u8>> = again.received().into_iter().map(|l| l.data).collect();
    assert_eq!(got, want.into_iter().collect::<BTreeSet<_>>());
}

/// `consume --efo` reads by enhanced fan-out; `deregister-consumer` then removes the
/// app's stream consumer, and says so when there is none.
#[tokio::test]
async fn consume_with_efo_then_deregister_the_consumer() {
    let (table, stream) = table_and_stream(2).await;
    let app = random_name("app");
    let records = payloads("efo", 20);
    put(&stream, &records, &[]).await;
    let mut member = Member::start_with(&app, &table, &stream, "efo", &["--efo"]);
    received_all(&[&member], &records).await;
    assert_eq!(
        member.terminate().await,
        Some(0),
        "SIGTERM is a graceful exit"
    );
    let deregister = ["deregister-consumer", "--app", &app, "--stream", &stream];
    let out = ok(&deregister).await;
    assert!(
        out.contains(&format!("consumer {app} deregistered")),
        "{out}"
    );
    let out = ok(&deregister).await;
    assert!(out.contains(&format!("no consumer {app}")), "{out}");
    // The tool's own clients trust --ca-bundle: the same call over kinesis-local's TLS port.
    let (tls, ca) = (kinesis_tls_endpoint(), local_ca_bundle());
    let over_tls = [
        &["--kinesis-endpoint", &tls, "--ca-bundle", &ca],
        &deregister[..],
    ]
    .concat();
    let out = ok(&over_tls).await;
    assert!(out.contains(&format!("no consumer {app}")), "{out}");
}

/// A downstream that stops reading must not stop the member (issue 14, defect 7): with
/// its stdout a full pipe nobody reads, the member still heartbeats and holds its shards,
/// and SIGTERM still ends it gracefully with 0.
#[tokio::test]
async fn a_stalled_stdout_stops_neither_heartbeats_nor_sigterm() {
    let (table, stream) = table_and_stream(2).await;
    let app = random_name("app");
    // About 200 KB of JSON lines: more than a pipe holds.
    let records: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("{i:0>1000}").into_bytes())
        .collect();
    put(&stream, &records, &[]).await;
    let (mut member, stdout) = Member::start_stalled(&app, &table, &stream, "stalled", &[]);
    eventually("stdout's pipe full", Duration::from_secs(30), || async {
        stdout.is_full().then_some(())
    })
    .await;
    settled(&app, &table, &stream, 1, 2).await;
    assert_eq!(
        member.terminate().await,
        Some(0),
        "SIGTERM is a graceful exit while stdout is stalled"
    );
}

/// `groups` lists the apps of a table; `group delete` refuses while a member is alive,
/// then deletes every item of the app (and names an unknown app as a usage error).
#[tokio::test]
async fn groups_lists_apps_and_group_delete_removes_a_retired_one() {
    let (table, stream) = table_and_stream(1).await;
    let app = random_name("retired");
    let records = payloads("g", 5);
    put(&stream, &records, &[]).await;
    let mut member = Member::start(&app, &table, &stream, "last");
    received_all(&[&member], &records).await;
    let listed = ok(&["groups", "--table", &table]).await;
    let line = listed
        .lines()
        .find(|l| l.starts_with(&app))
        .unwrap_or_else(|| panic!("{app} in {listed}"));
    assert_eq!(line, format!("{app} | 1 | 1 | {stream}"), "{listed}");
    // The lag asked of Kinesis now, per shard, once the checkpoint is written.
    let live = eventually("a live lag", Duration::from_secs(20), || async {
        let out = ok(&[
            "status",
            "--app",
            &app,
            "--table",
            &table,
            "--stream",
            &stream,
            "--json",
            "--live-lag",
            "--observe-ms",
            "300",
        ])
        .await;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["streams"][0]["shards"][0]["live_behind_ms"]
            .as_i64()
            .map(|_| v)
    })
    .await;
    assert!(
        live["streams"][0]["shards"][0]["checkpoint"].is_string(),
        "{live}"
    );

    let delete = ["group", "delete", "--app", &app, "--table", &table];
    let out = run(&delete, b"").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("alive (last)"));
    assert_eq!(member.terminate().await, Some(0));
    let done = ok(&delete).await;
    assert!(done.starts_with("deleted "), "{done}");
    let listed = ok(&["groups", "--table", &table]).await;
    assert!(!listed.contains(&app), "{listed}");
    let unknown = run(&delete, b"").await;
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "an unknown app is a usage error"
    );
}

/// A stream named by its ARN is consumed like one named by its name, and its checkpoints
/// are kept under the ARN: a stream of the same name in another account never shares them.
#[tokio::test]
async fn a_stream_named_by_its_arn_is_consumed_with_checkpoints_of_its_own() {
    let (table, stream) = table_and_stream(1).await;
    let arn = format!("arn:aws:kinesis:us-east-1:000000000000:stream/{stream}");
    let app = random_name("by-arn");
    let records = payloads("arn", 5);
    put(&stream, &records, &[]).await;
    let mut member = Member::start(&app, &table, &arn, "arn-reader");
    received_all(&[&member], &records).await;
    let checkpointed = eventually(
        "a checkpoint under the ARN",
        Duration::from_secs(20),
        || async {
            let s = status(&app, &table, &arn).await;
            s["streams"][0]["shards"][0]["checkpoint"]
                .as_str()
                .map(str::to_owned)
        },
    )
    .await;
    assert!(!checkpointed.is_empty());
    assert_eq!(member.terminate().await, Some(0));
    let by_name = status(&app, &table, &stream).await;
    let shards = by_name["streams"][0]["shards"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        shards.iter().all(|s| s["checkpoint"].is_null()),
        "the name's checkpoints are apart from the ARN's: {by_name}"
    );
}

/// `status --watch` redraws in place (home and clear before each report) until SIGINT,
/// then exits 0.
#[tokio::test]
async fn status_watch_redraws_until_interrupted() {
    use tokio::io::AsyncReadExt;
    let (table, stream) = table_and_stream(1).await;
    let mut child = kinesumer()
        .args([
            "status", "--app", "watched", "--table", &table, "--stream", &stream,
        ])
        .args(["--watch", "1", "--observe-ms", "200"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start status --watch");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = String::new();
    within("two reports", async {
        let mut buf = [0u8; 4096];
        while seen.matches("\x1b[H\x1b[2J").count() < 2 {
            let n = stdout.read(&mut buf).await.expect("read");
            assert!(n > 0, "status --watch ended early: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(seen.contains("app watched"), "{seen}");
    let pid = rustix::process::Pid::from_raw(child.id().expect("running") as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let status = within("exit", child.wait()).await.expect("wait");
    assert_eq!(status.code(), Some(0));
}

/// The shards held per alive member in a status report, by client id.
fn held(status: &serde_json::Value) -> BTreeMap<String, u64> {
    status["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["alive"] == true)
        .map(|m| {
            let id = m["client_id"].as_str().expect("client_id").to_owned();
            (id, m["shards_held"].as_u64().expect("shards_held"))
        })
        .collect()
}

/// `--max-shards` is a hard limit (issue 21): alone, a member limited to one shard of four
/// holds one and leaves three unread; a second member takes those three. At no status
/// does the limited member hold more than one, it writes records of one shard only, and
/// every record is written once.
#[tokio::test]
async fn a_member_with_max_shards_never_holds_more() {
    let (table, stream) = table_and_stream(4).await;
    let app = random_name("app");
    // Records on every shard before anyone starts: any shard a member takes, it reads.
    let first = payloads("first", 80);
    put(&stream, &first, &[]).await;
    let limited = Member::start_with(&app, &table, &stream, "limited", &["--max-shards", "1"]);
    let at_most_one = |s: &serde_json::Value| {
        let held = held(s).get("limited").copied().unwrap_or(0);
        assert!(held <= 1, "the limited member holds {held} shards: {s:#}");
    };

    let alone = eventually(
        "the limited member holding one shard",
        Duration::from_secs(30),
        || async {
            let s = status(&app, &table, &stream).await;
            at_most_one(&s);
            (held(&s).get("limited") == Some(&1)).then_some(s)
        },
    )
    .await;
    let member = &alone["members"][0];
    assert_eq!(member["max_shards"], 1, "status shows the limit: {alone:#}");
    let owned = owners(&alone).values().filter(|o| o.is_some()).count();
    assert_eq!(owned, 1, "the other three are not read: {alone:#}");

    let other = Member::start(&app, &table, &stream, "other");
    eventually(
        "the other member holding three shards",
        Duration::from_secs(30),
        || async {
            let s = status(&app, &table, &stream).await;
            at_most_one(&s);
            let want = BTreeMap::from([("limited".to_owned(), 1), ("other".to_owned(), 3)]);
            (held(&s) == want).then_some(())
        },
    )
    .await;

    let second = payloads("second", 80);
    put(&stream, &second, &[]).await;
    let all: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
    let lines = received_all(&[&limited, &other], &all).await;
    let unique: BTreeSet<&String> = lines.iter().map(|l| &l.sequence_number).collect();
    assert_eq!(unique.len(), lines.len(), "every record once");
    let read: BTreeSet<String> = limited.received().into_iter().map(|l| l.shard_id).collect();
    assert_eq!(read.len(), 1, "the limited member read {read:?}");
}
