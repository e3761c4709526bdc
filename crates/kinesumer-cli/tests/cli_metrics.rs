//! `kinesumer consume --metrics-addr`: the metrics a running member serves for
//! Prometheus match what it consumed, on the local stack.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One sample of the Prometheus text format: its labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// `GET /metrics` over HTTP/1.0 (so the body is neither chunked nor kept alive); the
/// body, or `None` while nothing listens or the answer is not a 200.
async fn scrape(addr: &str) -> Option<String> {
    let mut conn = TcpStream::connect(addr).await.ok()?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: kinesumer\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
}

/// The samples of metric `name` in a scraped body.
fn samples(body: &str, name: &str) -> Vec<Sample> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((metric, labels)) => (metric, labels.strip_suffix('}')?),
                None => (series, ""),
            };
            (metric == name).then(|| Sample {
                labels: labels
                    .split(',')
                    .filter(|kv| !kv.is_empty())
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.to_owned(), v.trim_matches('"').to_owned()))
                    })
                    .collect(),
                value: value.parse().expect("a number"),
            })
        })
        .collect()
}

/// The value of metric `name` per shard.
fn per_shard(body: &str, name: &str) -> BTreeMap<String, f64> {
    samples(body, name)
        .into_iter()
        .map(|s| (s.labels["shard"].clone(), s.value))
        .collect()
}

/// A port nothing listens on now (the kernel's pick, released for the member to take).
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    probe.local_addr().expect("its address").port()
}

#[tokio::test]
async fn a_consuming_member_serves_metrics_that_match_what_it_consumed() {
    const SHARDS: usize = 3;
    let (table, stream) = table_and_stream(SHARDS as u32).await;
    let app = random_name("app");
    let records: Vec<Vec<u8>> = (0..60).map(|i| format!("m-{i}").into_bytes()).collect();
    put(&stream, &records, &[]).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut member =
        Member::start_with(&app, &table, &stream, "scraped", &["--metrics-addr", &addr]);
    let lines = received_all(&[&member], &records).await;
    let unique: BTreeSet<&String> = lines.iter().map(|l| &l.sequence_number).collect();
    assert_eq!(unique.len(), records.len(), "each record once");
    let mut written: BTreeMap<String, f64> = BTreeMap::new();
    for line in &lines {
        *written.entry(line.shard_id.clone()).or_default() += 1.0;
    }

    // The gauges follow the member's coordinator loop a moment after the fact: wait for
    // a scrape of the settled member (every shard held, leading, every record counted).
    let body = eventually(
        "the scraped metrics catch up with what was consumed",
        Duration::from_secs(30),
        || async {
            let body = scrape(&addr).await?;
            let held = samples(&body, "kinesumer_shards_held").first()?.value;
            let leader = samples(&body, "kinesumer_leader").first()?.value;
            let delivered = per_shard(&body, "kinesumer_records_delivered_total");
            let counted = delivered.values().sum::<f64>() >= 60.0;
            (held == SHARDS as f64 && leader == 1.0 && counted).then_some(body)
        },
    )
    .await;

    let delivered = per_shard(&body, "kinesumer_records_delivered_total");
    assert_eq!(
        delivered, written,
        "records delivered per shard = lines written"
    );
    let bytes: f64 = per_shard(&body, "kinesumer_delivered_bytes_total")
        .values()
        .sum();
    let written_bytes: usize = lines.iter().map(|l| l.data.len()).sum();
    assert_eq!(
        bytes, written_bytes as f64,
        "bytes delivered = bytes written"
    );
    // Equal unless a lease moved and its shard was read again from its checkpoint.
    let read: f64 = per_shard(&body, "kinesumer_records_read_total")
        .values()
        .sum();
    assert!(read >= 60.0, "every record read: {read}");
    let held = samples(&body, "kinesumer_shards_held");
    assert_eq!(
        held,
        [Sample {
            labels: BTreeMap::from([("app".to_owned(), app.clone())]),
            value: SHARDS as f64
        }]
    );
    let leader = samples(&body, "kinesumer_leader");
    assert_eq!(leader.len(), 1);
    assert_eq!(leader[0].value, 1.0, "the only member leads");
    let lag = per_shard(&body, "kinesumer_behind_latest_ms");
    assert_eq!(lag.len(), SHARDS, "a lag gauge per shard: {lag:?}");
    assert!(lag.values().all(|&ms| ms >= 0.0), "{lag:?}");
    let takes = samples(&body, "kinesumer_lease_takes_total");
    assert_eq!(takes.len(), 1);
    assert_eq!(takes[0].labels["stream"], stream);
    assert!(takes[0].value >= SHARDS as f64, "{takes:?}");
    assert!(
        body.contains("# HELP kinesumer_records_delivered_total Records handed to the application")
    );
    assert!(!samples(&body, "kinesumer_store_requests_total").is_empty());

    // The checkpoints carry the lag too: status shows it without reading the stream.
    eventually(
        "status shows every shard's lag",
        Duration::from_secs(30),
        || async {
            let s = status(&app, &table, &stream).await;
            let shards = s["streams"][0]["shards"].as_array()?.clone();
            (shards.len() == SHARDS && shards.iter().all(|x| x["millis_behind"].is_i64()))
                .then_some(())
        },
    )
    .await;

    assert_eq!(member.terminate().await, Some(0));
}

/// The sum over shards of metric `name` scraped from `addr`, once it is served.
async fn total(addr: &str, name: &str) -> Option<f64> {
    let body = scrape(addr).await?;
    Some(samples(&body, name).iter().map(|s| s.value).sum())
}

#[tokio::test]
async fn sigusr1_pauses_every_shard_and_sigusr2_resumes_them() {
    let (table, stream) = table_and_stream(2).await;
    let app = random_name("app");
    let addr = format!("127.0.0.1:{}", free_port());
    let options = ["--metrics-addr", addr.as_str()];
    let mut member = Member::start_with(&app, &table, &stream, "pausing", &options);
    let before = payloads("before", 4);
    put(&stream, &before, &[]).await;
    received_all(&[&member], &before).await;

    member.signal(rustix::process::Signal::USR1);
    eventually(
        "the member says it paused",
        Duration::from_secs(10),
        || async { member.stderr().contains("paused every shard").then_some(()) },
    )
    .await;
    let during = payloads("during", 6);
    put(&stream, &during, &[]).await;
    eventually(
        "the paused member read them",
        Duration::from_secs(30),
        || async { (total(&addr, "kinesumer_records_read_total").await? >= 10.0).then_some(()) },
    )
    .await;
    // Read and buffered: unpaused, a record is handed out within milliseconds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(member.received().len(), 4, "{:?}", member.received());
    assert_eq!(
        total(&addr, "kinesumer_records_delivered_total").await,
        Some(4.0)
    );

    member.signal(rustix::process::Signal::USR2);
    received_all(&[&member], &during).await;
    assert!(
        member.stderr().contains("resumed every shard"),
        "{}",
        member.stderr()
    );
    assert_eq!(member.terminate().await, Some(0), "{}", member.stderr());
}
