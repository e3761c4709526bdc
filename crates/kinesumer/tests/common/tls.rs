//! kinesis-local's TLS port (HTTP/2) and the CA the local stack made for it
//! (`scripts/local-stack env` exports both; the CLI's tests include this file too).

/// The Kinesis endpoint over TLS.
pub fn kinesis_tls_endpoint() -> String {
    std::env::var("KINESUMER_TEST_KINESIS_TLS_ENDPOINT")
        .unwrap_or_else(|_| "https://localhost:4568".into())
}

/// The PEM file of the local stack's certificate authority.
pub fn local_ca_bundle() -> String {
    std::env::var("KINESUMER_TEST_CA_BUNDLE").unwrap_or_else(|_| {
        // Both test crates live two levels below the workspace.
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../.local-stack/tls/ca.pem").into()
    })
}
