//! Helpers shared by the benchmark programs and the chaos harness.

use std::ops::Range;
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

pub mod check;
pub mod member;
pub mod procfs;
pub mod proxy;

/// The boxed error of the benchmark programs.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The value of `--name N` on the command line, or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    arg_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value of `--name VALUE` on the command line.
pub fn arg_str(name: &str) -> Option<String> {
    let mut args = std::env::args().skip_while(|a| a != name);
    args.nth(1)
}

/// The `host:port` of the endpoint URL in the environment variable `var`, as a proxy's
/// upstream.
pub fn endpoint(var: &str) -> Result<String, Error> {
    let url = std::env::var(var)
        .map_err(|_| format!("{var} is not set: eval \"$(scripts/local-stack env)\""))?;
    Ok(url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned())
}

/// Creates a stream with `shards` shards and waits until it is ACTIVE.
pub async fn create_stream(
    kinesis: &aws_sdk_kinesis::Client,
    name: &str,
    shards: i32,
) -> Result<(), Error> {
    kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await?;
    loop {
        let d = kinesis
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await?;
        if d.stream_description_summary().map(|s| s.stream_status())
            == Some(&aws_sdk_kinesis::types::StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes a stream.
pub async fn delete_stream(kinesis: &aws_sdk_kinesis::Client, name: &str) -> Result<(), Error> {
    kinesis.delete_stream().stream_name(name).send().await?;
    Ok(())
}

/// Prints `name`: the median (min–max) of `values` and how many there were. Whole numbers
/// from 10 up, three decimals below.
pub fn summary(name: &str, unit: &str, mut values: Vec<f64>) {
    if values.is_empty() {
        println!("{name:<22} no runs");
        return;
    }
    values.sort_by(f64::total_cmp);
    let f = |v: f64| {
        if v.abs() >= 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
        }
    };
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    println!(
        "{name:<22} median {:>8}{unit}   (min {} – max {}{unit}, {} runs)",
        f(values[values.len() / 2]),
        f(values[0]),
        f(values[values.len() - 1]),
        values.len()
    );
}

/// Puts `n` records in one PutRecords call (at most 500), each under a random
/// partition key and with the data `data` makes of its index; refused records are an
/// error.
pub async fn put_batch(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    n: u64,
    data: impl Fn(u64) -> Blob,
) -> Result<(), Error> {
    let records = (0..n).map(|i| (format!("key-{i}-{}", rand::random::<u32>()), data(i)));
    put_records(kinesis, stream, records).await
}

/// Puts the records numbered `numbers` in one PutRecords call, each with its number as
/// payload and the key `key-<number mod keys>`, so each key's records land in number
/// order; refused records are an error (the emulator never refuses one).
pub async fn put_numbered(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    numbers: Range<u64>,
    keys: u64,
) -> Result<(), Error> {
    put_records(kinesis, stream, numbers.map(|n| numbered(n, keys, 0))).await
}

/// Puts the records numbered `0..n`, 500 per PutRecords call, as [`put_numbered`] does
/// over 1,000 keys, each payload zero-padded to `payload` bytes (a number still).
pub async fn load_numbered(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    n: u64,
    payload: usize,
) -> Result<(), Error> {
    for start in (0..n).step_by(500) {
        let records = (start..(start + 500).min(n)).map(|i| numbered(i, 1000, payload));
        put_records(kinesis, stream, records).await?;
    }
    Ok(())
}

/// The record numbered `n`: key `key-<n mod keys>`, the number at least `width` bytes.
fn numbered(n: u64, keys: u64, width: usize) -> (String, Blob) {
    (
        format!("key-{}", n % keys),
        Blob::new(format!("{n:0width$}")),
    )
}

/// A stream and a state-store table, both served by moto, with a backlog loaded.
#[derive(Debug)]
pub struct Backlog {
    /// The stream's name.
    pub stream: String,
    /// The table's name.
    pub table: String,
}

impl Backlog {
    /// Points Kinesis at moto's endpoint (the DynamoDB one of the environment, for this
    /// process and the member processes it starts: moto's Kinesis keeps its speed on a
    /// large stream, where kinesis-local slows down), creates a stream of `shards` shards
    /// and a table, both named after `name`, and loads the records numbered `0..records`
    /// of `payload` bytes each ([`load_numbered`]).
    pub async fn on_moto(
        name: &str,
        shards: i32,
        records: u64,
        payload: usize,
    ) -> Result<Self, Error> {
        let moto = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").map_err(|_| {
            "AWS_ENDPOINT_URL_DYNAMODB is not set: eval \"$(scripts/local-stack env)\""
        })?;
        // Before any client is built; the member processes inherit it.
        std::env::set_var("AWS_ENDPOINT_URL_KINESIS", &moto);
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let kinesis = aws_sdk_kinesis::Client::new(&sdk);
        let stream = format!("{name}-{:08x}", rand::random::<u32>());
        let table = format!("kinesumer-{name}-{:08x}", rand::random::<u32>());
        create_stream(&kinesis, &stream, shards).await?;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        kinesumer::store::create_table(&dynamodb, &table, kinesumer::store::TableBilling::OnDemand)
            .await?;
        let loading = std::time::Instant::now();
        load_numbered(&kinesis, &stream, records, payload).await?;
        eprintln!(
            "loaded {records} records of {payload} bytes into {shards} shards of {stream} in {:.1} s (table {table})",
            loading.elapsed().as_secs_f64()
        );
        Ok(Self { stream, table })
    }
}

/// One PutRecords call of (partition key, data) pairs; refused records are an error.
async fn put_records(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    records: impl Iterator<Item = (String, Blob)>,
) -> Result<(), Error> {
    let entries = records
        .map(|(key, data)| {
            PutRecordsRequestEntry::builder()
                .partition_key(key)
                .data(data)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = entries.len();
    let out = kinesis
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await?;
    match out.failed_record_count().unwrap_or(0) {
        0 => Ok(()),
        refused => Err(format!("{refused} of {n} records refused").into()),
    }
}
