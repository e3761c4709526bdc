//! `kinesumer put`: writes the lines of stdin as records, for demos and tests.
//!
//! Lines are read as bytes, so any payload round-trips exactly, valid UTF-8 or not: a
//! record is a line without its `\n` terminator (a `\r` before it is kept as data). What
//! stdin already holds goes out in one PutRecords call of at most 500 records and 5 MiB
//! (the service's limits); entries the service refused (throttled, internal failure)
//! are sent again with backoff.

use std::io::BufRead;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use tokio::sync::mpsc;

use crate::aws::Aws;
use crate::cli::PutArgs;

/// Records per PutRecords call at most (the service's limit).
const MAX_RECORDS: usize = 500;
/// Bytes (payloads and partition keys) per PutRecords call at most (the service's limit).
const MAX_BYTES: usize = 5 * 1024 * 1024;
/// Rounds of retries of refused entries before giving up.
const MAX_ROUNDS: u32 = 20;

/// One line of stdin, with its line number for messages.
type Line = (u64, Vec<u8>);

/// Runs `kinesumer put`.
pub(crate) async fn run(aws: &Aws, args: PutArgs) -> anyhow::Result<()> {
    let kinesis = aws.kinesis().await;
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Line>>(MAX_RECORDS * 2);
    // Reading stdin blocks, so it runs on its own thread; what it has read by the time a
    // call is sent goes into that call.
    let reader = std::thread::spawn(move || read_lines(tx));
    let mut total = 0u64;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first?];
        let mut bytes = batch[0].1.len();
        while batch.len() < MAX_RECORDS && bytes < MAX_BYTES / 2 {
            match rx.try_recv() {
                Ok(line) => {
                    let line = line?;
                    bytes += line.1.len();
                    batch.push(line);
                }
                Err(_) => break,
            }
        }
        let entries = batch
            .into_iter()
            .map(|(n, data)| entry(&args, n, data))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for chunk in chunks(entries) {
            total += chunk.len() as u64;
            send(&kinesis, &args.stream, chunk).await?;
        }
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the stdin reader panicked"))?;
    crate::say::note(format!("put {total} records to {}", args.stream));
    Ok(())
}

fn read_lines(tx: mpsc::Sender<std::io::Result<Line>>) {
    let mut stdin = std::io::stdin().lock();
    for number in 1.. {
        let mut line = Vec::new();
        let read = match stdin.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Ok((number, line))
            }
            Err(e) => Err(e),
        };
        let failed = read.is_err();
        if tx.blocking_send(read).is_err() || failed {
            return;
        }
    }
}

/// The record of one line, with its partition key.
fn entry(args: &PutArgs, number: u64, data: Vec<u8>) -> anyhow::Result<PutRecordsRequestEntry> {
    let key = match (&args.partition_key, args.key_field) {
        (Some(key), _) => key.clone(),
        (None, Some(n)) => {
            let field = data
                .split(u8::is_ascii_whitespace)
                .filter(|f| !f.is_empty())
                .nth(usize::from(n) - 1)
                .with_context(|| format!("line {number} has no field {n} for --key-field"))?;
            String::from_utf8_lossy(field).into_owned()
        }
        (None, None) => format!("{:016x}", rand::random::<u64>()),
    };
    PutRecordsRequestEntry::builder()
        .partition_key(key)
        .data(Blob::new(data))
        .build()
        .with_context(|| format!("line {number}"))
}

fn size(e: &PutRecordsRequestEntry) -> usize {
    e.data().as_ref().len() + e.partition_key().map_or(0, str::len)
}

/// Splits entries into calls within the service's limits.
fn chunks(entries: Vec<PutRecordsRequestEntry>) -> Vec<Vec<PutRecordsRequestEntry>> {
    let mut calls: Vec<Vec<PutRecordsRequestEntry>> = Vec::new();
    let mut bytes = 0;
    for e in entries {
        let full = calls
            .last()
            .is_none_or(|c| c.len() == MAX_RECORDS || bytes + size(&e) > MAX_BYTES);
        if full {
            calls.push(Vec::new());
            bytes = 0;
        }
        bytes += size(&e);
        calls.last_mut().expect("pushed above").push(e);
    }
    calls
}

/// Sends entries, then again those the service refused, until every one landed.
async fn send(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    mut pending: Vec<PutRecordsRequestEntry>,
) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(100);
    for _ in 0..MAX_ROUNDS {
        let out = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(pending.clone()))
            .send()
            .await
            .map_err(aws_sdk_kinesis::Error::from)
            .with_context(|| format!("PutRecords to stream {stream:?}"))?;
        if out.failed_record_count().unwrap_or(0) == 0 {
            return Ok(());
        }
        pending = pending
            .into_iter()
            .zip(out.records())
            .filter(|(_, result)| result.error_code().is_some())
            .map(|(entry, _)| entry)
            .collect();
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    anyhow::bail!(
        "{} records to stream {stream:?} still refused after {MAX_ROUNDS} attempts",
        pending.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(partition_key: Option<&str>, key_field: Option<u16>) -> PutArgs {
        PutArgs {
            stream: "s".into(),
            partition_key: partition_key.map(Into::into),
            key_field,
        }
    }

    #[test]
    fn keys_come_from_the_option_or_the_field() {
        let e = entry(&args(Some("k"), None), 1, b"a b".to_vec()).unwrap();
        assert_eq!(e.partition_key(), Some("k"));
        let e = entry(&args(None, Some(2)), 1, b"  a \t b\xff c".to_vec()).unwrap();
        assert_eq!(e.partition_key(), Some("b\u{fffd}"));
        assert_eq!(e.data().as_ref(), b"  a \t b\xff c");
        let err = entry(&args(None, Some(3)), 7, b"a b".to_vec()).unwrap_err();
        assert_eq!(err.to_string(), "line 7 has no field 3 for --key-field");
    }

    #[test]
    fn calls_stay_within_the_limits() {
        let small = |i: usize| entry(&args(Some("k"), None), 1, vec![i as u8]).unwrap();
        let calls = chunks((0..1201).map(small).collect());
        assert_eq!(
            calls.iter().map(Vec::len).collect::<Vec<_>>(),
            [500, 500, 201]
        );
        let big = || entry(&args(Some("k"), None), 1, vec![0; 1024 * 1024 - 1]).unwrap();
        let calls = chunks((0..6).map(|_| big()).collect());
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [5, 1]);
    }
}
