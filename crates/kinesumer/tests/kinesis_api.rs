//! `SdkKinesis` against kinesis-local (`scripts/local-stack start`): paging, lineage after
//! resharding, the round trip of bytes, every iterator type, the end of a closed shard,
//! and the errors.

mod common;

use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::StreamStatus;
use kinesumer::reader::{IteratorStart, KinesisApi, KinesisError, RecordsPage, SdkKinesis};
use kinesumer::SequenceNumber;

use common::{create_stream, eventually, kinesis, random_name, within};

/// The middle of the hash key space (2¹²⁷): where a one-shard stream is split in two.
const MIDDLE_HASH_KEY: &str = "170141183460469231731687303715884105728";

/// A stream of `shards` shards, deleted when dropped (kinesis-local counts every shard
/// against one account-wide limit).
struct TestStream {
    client: aws_sdk_kinesis::Client,
    name: String,
}

impl TestStream {
    async fn new(shards: i32) -> Self {
        let client = kinesis().await;
        let name = random_name("kinesis-api");
        create_stream(&client, &name, shards).await;
        Self { client, name }
    }

    fn api(&self) -> SdkKinesis {
        SdkKinesis::new(self.client.clone())
    }

    async fn put(&self, key: &str, data: &[u8]) -> SequenceNumber {
        let out = within("put record", async {
            self.client
                .put_record()
                .stream_name(&self.name)
                .partition_key(key)
                .data(Blob::new(data))
                .send()
                .await
                .expect("put record")
        })
        .await;
        out.sequence_number().parse().unwrap()
    }

    async fn wait_active(&self) {
        eventually("stream active", common::TEST_TIMEOUT, || async {
            let d = self
                .client
                .describe_stream_summary()
                .stream_name(&self.name)
                .send()
                .await
                .expect("describe stream");
            let status = d.stream_description_summary()?.stream_status().clone();
            (status == StreamStatus::Active).then_some(())
        })
        .await
    }

    async fn split(&self, shard_id: &str) {
        within("split shard", async {
            self.client
                .split_shard()
                .stream_name(&self.name)
                .shard_to_split(shard_id)
                .new_starting_hash_key(MIDDLE_HASH_KEY)
                .send()
                .await
                .expect("split shard")
        })
        .await;
        self.wait_active().await;
    }

    /// Reads `shard_id` from `start` until a page comes back empty or the shard ends;
    /// returns the pages.
    async fn read(&self, shard_id: &str, start: IteratorStart) -> Vec<RecordsPage> {
        let api = self.api();
        within("read shard", async {
            let mut it = api
                .shard_iterator(&self.name, shard_id, &start)
                .await
                .expect("shard iterator");
            let mut pages = Vec::new();
            loop {
                let page = api
                    .get_records(&self.name, shard_id, &it, 1000)
                    .await
                    .expect("get records");
                let done = page.records.is_empty() || page.next_iterator.is_none();
                let next = page.next_iterator.clone();
                pages.push(page);
                match next {
                    Some(next) if !done => it = next,
                    _ => return pages,
                }
            }
        })
        .await
    }

    async fn sequences_from(&self, start: IteratorStart) -> Vec<SequenceNumber> {
        self.read("shardId-000000000000", start)
            .await
            .into_iter()
            .flat_map(|p| p.records)
            .map(|r| r.sequence_number)
            .collect()
    }
}

impl Drop for TestStream {
    // Deleted even when the test panics, on a thread of its own: a task spawned on the
    // test's runtime would not run once the test returns. kinesis-local counts every shard against one limit (200 here),
    // which the 120-shard stream nearly fills.
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                // A client of its own: pooled connections of the test's client are
                // driven by the test's runtime, which waits for this thread.
                let delete = kinesis()
                    .await
                    .delete_stream()
                    .stream_name(name)
                    .enforce_consumer_deletion(true)
                    .send();
                let _ = tokio::time::timeout(Duration::from_secs(5), delete).await;
            })
        });
        let _ = deleted.join();
    }
}

#[tokio::test]
async fn list_shards_pages_through_every_shard() {
    let stream = TestStream::new(120).await;
    // The service pages at 100 shards when no MaxResults is given (as kinesis-local
    // does): check that this stream really needs a second page.
    let first = within("first page", async {
        stream
            .client
            .list_shards()
            .stream_name(&stream.name)
            .send()
            .await
            .expect("list shards")
    })
    .await;
    assert!(first.next_token().is_some() && first.shards().len() < 120);
    let listed = within("list shards", stream.api().list_shards(&stream.name))
        .await
        .unwrap();
    let mut ids: Vec<String> = listed.shards.iter().map(|s| s.shard_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 120, "every shard once");
    assert!(listed
        .shards
        .iter()
        .all(|s| !s.closed && s.parent.is_none()));
    assert!(listed.shards.iter().all(|s| s.hash_range.is_some()));
}

#[tokio::test]
async fn lineage_after_a_split() {
    let stream = TestStream::new(1).await;
    stream.split("shardId-000000000000").await;
    let listed = within("list shards", stream.api().list_shards(&stream.name))
        .await
        .unwrap();
    assert_eq!(listed.shards.len(), 3, "{listed:?}");
    let parent = &listed.shards[0];
    assert_eq!(parent.shard_id, "shardId-000000000000");
    assert!(parent.closed && parent.ending_sequence.is_some());
    for child in &listed.shards[1..] {
        assert_eq!(child.parent.as_deref(), Some("shardId-000000000000"));
        assert_eq!(child.adjacent_parent, None);
        assert!(!child.closed && child.ending_sequence.is_none());
    }
    let (low, high) = (&listed.shards[1], &listed.shards[2]);
    assert_eq!(high.hash_range.as_ref().unwrap().0, MIDDLE_HASH_KEY);
    assert_eq!(low.hash_range.as_ref().unwrap().0, "0");
}

#[tokio::test]
async fn lineage_after_a_merge() {
    let stream = TestStream::new(2).await;
    within("merge shards", async {
        stream
            .client
            .merge_shards()
            .stream_name(&stream.name)
            .shard_to_merge("shardId-000000000000")
            .adjacent_shard_to_merge("shardId-000000000001")
            .send()
            .await
            .expect("merge shards")
    })
    .await;
    stream.wait_active().await;
    let listed = within("list shards", stream.api().list_shards(&stream.name))
        .await
        .unwrap();
    assert_eq!(listed.shards.len(), 3, "{listed:?}");
    assert!(listed.shards[..2].iter().all(|s| s.closed));
    let child = &listed.shards[2];
    assert_eq!(child.parent.as_deref(), Some("shardId-000000000000"));
    assert_eq!(
        child.adjacent_parent.as_deref(),
        Some("shardId-000000000001")
    );
    assert!(!child.closed);
}

#[tokio::test]
async fn get_records_returns_the_bytes_as_written() {
    let stream = TestStream::new(1).await;
    let payloads: [&[u8]; 3] = [b"hello", &[0xff, 0x00, 0xfe, 0x80], &[0xc3; 1000]];
    let mut written = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        written.push(stream.put(&format!("key-{i}"), p).await);
    }
    let pages = stream
        .read("shardId-000000000000", IteratorStart::TrimHorizon)
        .await;
    let records: Vec<_> = pages.iter().flat_map(|p| &p.records).collect();
    assert_eq!(records.len(), 3);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.data, payloads[i]);
        assert_eq!(r.partition_key, format!("key-{i}"));
        assert_eq!(r.sequence_number, written[i]);
        assert!(r.approximate_arrival.is_some());
    }
    let bytes: usize = pages.iter().map(|p| p.bytes).sum();
    assert_eq!(bytes, 5 + 4 + 1000);
    assert!(pages[0].millis_behind.is_some());
}

#[tokio::test]
async fn every_iterator_type_starts_where_it_says() {
    let stream = TestStream::new(1).await;
    let first = stream.put("k", b"1").await;
    let second = stream.put("k", b"2").await;
    // AT_TIMESTAMP has millisecond precision: leave a clear gap before the third.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let between = chrono::Utc::now() - chrono::Duration::milliseconds(500);
    let third = stream.put("k", b"3").await;

    let from = |start| stream.sequences_from(start);
    assert_eq!(
        from(IteratorStart::TrimHorizon).await,
        [first.clone(), second.clone(), third.clone()]
    );
    assert_eq!(
        from(IteratorStart::At(second.clone())).await,
        [second.clone(), third.clone()]
    );
    assert_eq!(
        from(IteratorStart::After(second.clone())).await,
        vec![third.clone()]
    );
    assert_eq!(
        from(IteratorStart::AtTimestamp(between)).await,
        vec![third.clone()]
    );

    let api = stream.api();
    let shard = "shardId-000000000000";
    let latest = within(
        "latest iterator",
        api.shard_iterator(&stream.name, shard, &IteratorStart::Latest),
    )
    .await
    .unwrap();
    let fourth = stream.put("k", b"4").await;
    let page = within(
        "get records",
        api.get_records(&stream.name, shard, &latest, 100),
    )
    .await
    .unwrap();
    let got: Vec<_> = page
        .records
        .into_iter()
        .map(|r| r.sequence_number)
        .collect();
    assert_eq!(got, [fourth]);
}

#[tokio::test]
async fn a_closed_parent_ends_with_no_next_iterator_and_its_children() {
    let stream = TestStream::new(1).await;
    let before = stream.put("k", b"before the split").await;
    stream.split("shardId-000000000000").await;
    stream.put("k", b"after the split").await;

    let api = stream.api();
    let shard = "shardId-000000000000";
    let pages = within("read the parent to its end", async {
        let mut it = api
            .shard_iterator(&stream.name, shard, &IteratorStart::TrimHorizon)
            .await
            .unwrap();
        let mut pages = Vec::new();
        for _ in 0..100 {
            let page = api
                .get_records(&stream.name, shard, &it, 100)
                .await
                .unwrap();
            let next = page.next_iterator.clone();
            pages.push(page);
            match next {
                Some(next) => it = next,
                None => return pages,
            }
        }
        panic!("the closed parent never ended");
    })
    .await;
    let records: Vec<_> = pages
        .iter()
        .flat_map(|p| &p.records)
        .map(|r| r.sequence_number.clone())
        .collect();
    assert_eq!(records, [before]);
    let mut children = pages.last().unwrap().child_shards.clone();
    children.sort();
    assert_eq!(children, ["shardId-000000000001", "shardId-000000000002"]);
}

#[tokio::test]
async fn a_missing_stream_is_named_in_the_error() {
    let client = kinesis().await;
    let api = SdkKinesis::new(client);
    let name = random_name("no-such-stream");
    let err = within("list shards", api.list_shards(&name))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, KinesisError::StreamNotFound { stream } if *stream == name),
        "{err:?}"
    );
    assert!(err.to_string().contains(&name), "{err}");
}

#[tokio::test]
async fn a_missing_shard_is_not_found() {
    let stream = TestStream::new(1).await;
    let err = within(
        "shard iterator",
        stream.api().shard_iterator(
            &stream.name,
            "shardId-000000000099",
            &IteratorStart::TrimHorizon,
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, KinesisError::ShardNotFound { shard_id, .. } if shard_id == "shardId-000000000099"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_garbage_iterator_is_a_retryable_error() {
    let stream = TestStream::new(1).await;
    let err = within(
        "get records",
        stream
            .api()
            .get_records(&stream.name, "shardId-000000000000", "garbage", 10),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, KinesisError::Other { .. }), "{err:?}");
}

/// A stream named by its ARN is read as by its name: the API gets StreamARN (which reaches
/// a stream of another account through its resource policy).
#[tokio::test]
async fn a_stream_is_read_by_its_arn() {
    let stream = TestStream::new(1).await;
    stream.wait_active().await;
    let written = stream.put("k", b"by-arn").await;
    let arn = stream
        .client
        .describe_stream_summary()
        .stream_name(&stream.name)
        .send()
        .await
        .expect("describe")
        .stream_description_summary
        .expect("a summary")
        .stream_arn;
    let api = stream.api();
    let listed = api.list_shards(&arn).await.expect("list shards by ARN");
    assert_eq!(listed.shards.len(), 1);
    let created = api.stream_created(&arn).await.expect("describe by ARN");
    assert!(created.is_some());
    let it = api
        .shard_iterator(&arn, "shardId-000000000000", &IteratorStart::TrimHorizon)
        .await
        .expect("an iterator by ARN");
    let page = api
        .get_records(&arn, "shardId-000000000000", &it, 10)
        .await
        .expect("records by ARN");
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].sequence_number, written);
}
