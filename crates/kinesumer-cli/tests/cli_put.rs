//! `kinesumer put` and `kinesumer consume --format jsonl` round-trip payloads byte for
//! byte, valid UTF-8 or not.

mod common;

use std::collections::BTreeMap;

use common::{put, random_name, received_all, table_and_stream, Member};

#[tokio::test]
async fn bytes_round_trip_exactly_and_keys_come_from_the_field() {
    let (table, stream) = table_and_stream(2).await;
    let lines: Vec<Vec<u8>> = vec![
        b"k1 plain text".to_vec(),
        b"k2 \xff\xfe\x00 not utf-8 \x80".to_vec(),
        b"k3 tab\tand carriage return\r".to_vec(),
        "k4 ünïcödé ✓ \"quoted\" \\".as_bytes().to_vec(),
        b"k5 {\"json\": [1, 2]}".to_vec(),
    ];
    put(&stream, &lines, &["--key-field", "1"]).await;

    let member = Member::start(&random_name("app"), &table, &stream, "reader");
    let got = received_all(&[&member], &lines).await;
    let by_data: BTreeMap<Vec<u8>, String> = got
        .iter()
        .map(|l| (l.data.clone(), l.partition_key.clone()))
        .collect();
    assert_eq!(
        got.len(),
        lines.len(),
        "nothing more, nothing twice: {got:?}"
    );
    for line in &lines {
        let key = String::from_utf8_lossy(line.split(|b| *b == b' ').next().unwrap());
        assert_eq!(by_data[line], key, "the partition key is the first field");
    }
}
