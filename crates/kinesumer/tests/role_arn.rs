//! A member with a role ARN reads Kinesis with the role's credentials, from STS
//! AssumeRole (moto serves STS on the local stack), and keeps the state store in its own
//! account with its own credentials. A tap in front of each service records the access
//! key of every request's SigV4 `Authorization` header.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The access key of each request sent through the tap to `target` (`host:port`).
#[derive(Clone, Default)]
struct Keys(Arc<Mutex<Vec<String>>>);

impl Keys {
    fn seen(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Records the access key of every `Credential=` in `bytes`.
    fn record(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        for (at, _) in text.match_indices("Credential=") {
            let rest = &text[at + "Credential=".len()..];
            let key = rest.split('/').next().unwrap_or_default();
            self.0.lock().unwrap().push(key.to_owned());
        }
    }
}

/// A TCP forwarder to `target` that records the access keys of what passes upstream;
/// returns its `http://` URL.
async fn tap(target: String, keys: Keys) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let (target, keys) = (target.clone(), keys.clone());
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(&target).await else {
                    return;
                };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_server, mut to_server) = outbound.into_split();
                let upstream = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from_client.read(&mut buf).await {
                        if n == 0 || to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        keys.record(&buf[..n]);
                    }
                };
                let downstream = tokio::io::copy(&mut from_server, &mut to_client);
                let _ = futures::future::join(upstream, downstream).await;
            });
        }
    });
    url
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

#[tokio::test]
async fn a_member_with_a_role_arn_reads_kinesis_with_the_roles_credentials() {
    let table = create_table().await;
    let stream = random_name("role");
    let kinesis_client = kinesis().await;
    create_stream(&kinesis_client, &stream, 1).await;
    kinesis_client
        .put_record()
        .stream_name(&stream)
        .partition_key("k")
        .data(aws_sdk_kinesis::primitives::Blob::new("as the role"))
        .send()
        .await
        .expect("put a record");

    let (kinesis_keys, store_keys) = (Keys::default(), Keys::default());
    let kinesis_url = tap(host_port(&kinesis_endpoint()), kinesis_keys.clone()).await;
    let store_url = tap(host_port(&dynamodb_endpoint()), store_keys.clone()).await;
    let config = config(&random_name("app"), &table, "role-member")
        .kinesis_endpoint(kinesis_url)
        .dynamodb_endpoint(store_url)
        .role_arn("arn:aws:iam::123456789012:role/reader")
        .build()
        .unwrap();
    let member = kinesumer::Kinesumer::new(config).await.expect("a member");
    let mut records = member.consume([stream.as_str()]).await.unwrap();
    let record = tokio::time::timeout(Duration::from_secs(30), records.next())
        .await
        .expect("a record within 30 s")
        .expect("the record stream");
    assert_eq!(&record.data[..], b"as the role");
    member.close().await.expect("close");

    let own = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "local".into());
    let kinesis_seen = kinesis_keys.seen();
    assert!(!kinesis_seen.is_empty(), "Kinesis requests were signed");
    assert!(
        kinesis_seen.iter().all(|k| k != &own),
        "every Kinesis request used the role's credentials, not {own}: {kinesis_seen:?}"
    );
    let store_seen = store_keys.seen();
    assert!(!store_seen.is_empty());
    assert!(
        store_seen.iter().all(|k| k == &own),
        "the state store stays with the member's own credentials: {store_seen:?}"
    );
}
