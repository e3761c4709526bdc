//! The AWS SDK clients the consumer talks through, built from the standard AWS chain and
//! the [`Config`]'s per-service overrides.
//!
//! Everything the AWS SDK reads from the environment keeps working (`AWS_REGION`,
//! profiles, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_KINESIS`, `AWS_ENDPOINT_URL_DYNAMODB`,
//! `AWS_ENDPOINT_URL_STS`, the credential chain); a region or endpoint set in the
//! [`Config`] wins over it for its service.
//!
//! # Timeouts and retries
//!
//! - Kinesis: every attempt of every call is bounded by `scan_timeout` (the GetRecords
//!   timeout; control calls are smaller and faster). The SDK's standard retry (3 attempts,
//!   jittered backoff) stays on for the control calls (ListShards, GetShardIterator);
//!   [`SdkKinesis`](crate::reader::SdkKinesis) turns it off for GetRecords, because the
//!   polling reader backs off itself and must see each throttle to count it and to keep
//!   the per-shard call rate in its own hands.
//! - DynamoDB: only a connect timeout here; the state store bounds each request with
//!   `request_timeout` itself, and keeps the SDK's standard retry.
//!
//! # Private certificate authorities
//!
//! With a CA bundle ([`ConfigBuilder::ca_bundle`](crate::ConfigBuilder::ca_bundle), else
//! the file named by `AWS_CA_BUNDLE`, the variable the other AWS SDKs and the CLI read),
//! both clients use an HTTP client (rustls, HTTP/1.1 and HTTP/2) that trusts the
//! bundle's certificates as well as the system's. Fan-out needs HTTP/2 on the real
//! service; the SDK's client negotiates it over TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::sts::AssumeRoleProvider;
use aws_config::{Region, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::timeout::TimeoutConfig;

use crate::config::{Config, ConfigError};

/// The environment variable naming a CA bundle when the [`Config`] has none.
const CA_BUNDLE_VAR: &str = "AWS_CA_BUNDLE";

/// How long opening a connection may take, for both services.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The Kinesis and DynamoDB clients for `config`, on an [`SdkConfig`] the application
/// loaded itself (credentials, HTTP client, endpoints). The [`Config`]'s regions,
/// endpoints and role ARN still apply on top of it.
///
/// With a role ARN, the Kinesis client's credentials come from STS AssumeRole (session
/// name `kinesumer-<app>`), called with `sdk`'s credentials, in the Kinesis region, at
/// the STS endpoint `sdk` resolves (`AWS_ENDPOINT_URL_STS`, or `sdk`'s endpoint URL).
/// DynamoDB keeps `sdk`'s own credentials: the state store lives in the consumer's
/// account, the stream in the other one.
///
/// # Errors
///
/// A [`ConfigError`] naming `kinesis_region` or `dynamodb_region` when no region is
/// known for a service (neither set in the [`Config`] nor in `sdk`), or `ca_bundle`
/// when the CA bundle cannot be read or holds no certificate.
pub(crate) async fn sdk_clients_from(
    config: &Config,
    sdk: &SdkConfig,
) -> Result<(aws_sdk_kinesis::Client, aws_sdk_dynamodb::Client), ConfigError> {
    let kinesis_region = region(sdk, config.kinesis_region(), "kinesis_region")?;
    let dynamodb_region = region(sdk, config.dynamodb_region(), "dynamodb_region")?;
    let ca_bundle = config
        .ca_bundle()
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(CA_BUNDLE_VAR).map(PathBuf::from))
        .map(|path| ca_bundle_http_client(&path))
        .transpose()?;

    let mut kinesis = aws_sdk_kinesis::config::Builder::from(sdk)
        .region(kinesis_region.clone())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(config.scan_timeout())
                .build(),
        );
    if let Some(url) = config.kinesis_endpoint() {
        kinesis = kinesis.endpoint_url(url);
    }
    if let Some(http) = &ca_bundle {
        kinesis = kinesis.http_client(http.clone());
    }
    if let Some(arn) = config.role_arn() {
        let provider = AssumeRoleProvider::builder(arn)
            .session_name(session_name(config.app()))
            .region(kinesis_region)
            .configure(sdk)
            .build()
            .await;
        kinesis = kinesis.credentials_provider(provider);
    }

    let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(sdk)
        .region(dynamodb_region)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build(),
        );
    if let Some(url) = config.dynamodb_endpoint() {
        dynamodb = dynamodb.endpoint_url(url);
    }
    if let Some(http) = ca_bundle {
        dynamodb = dynamodb.http_client(http);
    }

    Ok((
        aws_sdk_kinesis::Client::from_conf(kinesis.build()),
        aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
    ))
}

/// An HTTP client for the AWS SDK (rustls; HTTP/1.1, and HTTP/2 by ALPN) trusting the
/// system's roots and the certificates of the PEM file at `path`: what the consumer's
/// clients use with a CA bundle, for an application's or a tool's own clients to match.
///
/// # Errors
///
/// A [`ConfigError`] naming `ca_bundle` and the file when it cannot be read or holds no
/// certificate.
pub fn ca_bundle_http_client(path: &Path) -> Result<SharedHttpClient, ConfigError> {
    let refused = |reason: String| ConfigError {
        field: "ca_bundle",
        reason: format!(
            "{reason} (the CA bundle {}: set with ca_bundle or {CA_BUNDLE_VAR}); \
             point it at a PEM file of CA certificates",
            path.display()
        ),
    };
    let pem = std::fs::read(path).map_err(|e| refused(format!("cannot read it: {e}")))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(refused("it holds no PEM certificate".to_owned()));
    }
    let context = TlsContext::builder()
        .with_trust_store(
            TrustStore::default()
                .with_native_roots(true)
                .with_pem_certificate(pem),
        )
        .build()
        .map_err(|e| refused(format!("its certificates are refused: {e}")))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

/// The region of one service: the [`Config`]'s, else the AWS chain's. Refused when
/// neither has one, because the SDK would otherwise fail every call with a message that
/// does not say which setting is missing.
fn region(
    sdk: &SdkConfig,
    configured: Option<&str>,
    field: &'static str,
) -> Result<Region, ConfigError> {
    configured
        .map(|r| Region::new(r.to_owned()))
        .or_else(|| sdk.region().cloned())
        .ok_or_else(|| ConfigError {
            field,
            reason: "no region: set it here, or AWS_REGION, or a region in the AWS profile"
                .to_owned(),
        })
}

/// `kinesumer-<app>`, made a valid STS role session name: 2 to 64 characters of
/// `[A-Za-z0-9_+=,.@-]` (the AssumeRole `RoleSessionName` constraint); any other
/// character becomes `-`.
fn session_name(app: &str) -> String {
    format!("kinesumer-{app}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

/// What an AWS SDK error of a request to `service` says, in one line a person reads: the
/// Display of each error in its source chain, each once — never the `Debug` dump
/// `DisplayErrorContext` appends. A request that got no answer (a refused connection, a
/// DNS failure, a connect timeout) says so first: "cannot reach DynamoDB: tcp connect
/// error: Connection refused (os error 111)". The SDK's errors carry neither credentials
/// nor payloads.
pub(crate) fn sdk_message(service: &str, error: &(dyn std::error::Error + 'static)) -> String {
    // The SDK's and hyper's wrappers around the cause: they say nothing a reader needs.
    const WRAPPERS: [&str; 2] = ["dispatch failure", "client error (Connect)"];
    let mut parts: Vec<String> = Vec::new();
    let mut unreached = false;
    let mut next = Some(error);
    while let Some(e) = next {
        next = e.source();
        // The connector error's text is only its kind ("io error", "timeout", "other").
        // I/O and timeouts mean no answer; "other" is also how a request ends when no
        // credentials could be loaded, which no network fix helps.
        if let Some(connector) = e.downcast_ref::<ConnectorError>() {
            unreached |= connector.is_io() || connector.is_timeout();
            continue;
        }
        let text = e.to_string();
        if WRAPPERS.contains(&text.as_str()) || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    let text = parts.join(": ");
    if unreached {
        format!("cannot reach {service}: {text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use aws_config::BehaviorVersion;

    use super::*;

    fn sdk(region: Option<&'static str>) -> SdkConfig {
        let mut b = SdkConfig::builder().behavior_version(BehaviorVersion::latest());
        if let Some(r) = region {
            b = b.region(Region::from_static(r));
        }
        b.build()
    }

    #[test]
    fn session_names_are_valid_for_sts() {
        assert_eq!(session_name("orders"), "kinesumer-orders");
        assert_eq!(session_name("my app/é"), "kinesumer-my-app--");
        assert_eq!(session_name(&"x".repeat(100)).len(), 64);
    }

    #[tokio::test]
    async fn config_regions_override_the_chain() {
        let config = Config::builder("app", "table")
            .kinesis_region("eu-west-1")
            .kinesis_endpoint("http://127.0.0.1:1")
            .build()
            .unwrap();
        let (k, d) = sdk_clients_from(&config, &sdk(Some("us-east-1")))
            .await
            .unwrap();
        assert_eq!(k.config().region().unwrap().as_ref(), "eu-west-1");
        assert_eq!(d.config().region().unwrap().as_ref(), "us-east-1");
        assert_eq!(
            k.config()
                .timeout_config()
                .unwrap()
                .operation_attempt_timeout(),
            Some(config.scan_timeout())
        );
    }

    #[tokio::test]
    async fn the_standard_chain_with_config_regions() {
        let config = Config::builder("app", "table")
            .kinesis_region("eu-west-1")
            .dynamodb_region("eu-west-2")
            .build()
            .unwrap();
        let load = async {
            let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
            sdk_clients_from(&config, &sdk).await
        };
        let (k, d) = tokio::time::timeout(Duration::from_secs(10), load)
            .await
            .expect("loading the AWS chain")
            .unwrap();
        assert_eq!(k.config().region().unwrap().as_ref(), "eu-west-1");
        assert_eq!(d.config().region().unwrap().as_ref(), "eu-west-2");
    }

    #[tokio::test]
    async fn an_unreadable_ca_bundle_names_the_field_and_the_file() {
        let config = Config::builder("app", "table")
            .ca_bundle("/nonexistent/ca.pem")
            .build()
            .unwrap();
        let err = sdk_clients_from(&config, &sdk(Some("us-east-1")))
            .await
            .unwrap_err();
        assert_eq!(err.field, "ca_bundle");
        assert!(err.reason.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_region_names_the_field() {
        let config = Config::builder("app", "table")
            .kinesis_region("eu-west-1")
            .build()
            .unwrap();
        let err = sdk_clients_from(&config, &sdk(None)).await.unwrap_err();
        assert_eq!(err.field, "dynamodb_region");
    }

    #[test]
    fn sdk_messages_say_what_got_no_answer_and_nothing_else() {
        use aws_smithy_runtime_api::client::result::SdkError;
        use std::io::{Error, ErrorKind};

        let message = |connector: ConnectorError| {
            sdk_message(
                "DynamoDB",
                &SdkError::<Error, ()>::dispatch_failure(connector),
            )
        };
        let refused = Error::new(ErrorKind::ConnectionRefused, "Connection refused");
        assert_eq!(
            message(ConnectorError::io(refused.into())),
            "cannot reach DynamoDB: Connection refused"
        );
        assert_eq!(
            message(ConnectorError::timeout(
                Error::other("connect timed out").into()
            )),
            "cannot reach DynamoDB: connect timed out"
        );
        let no_credentials = Error::other("an error occurred while loading credentials");
        assert_eq!(
            message(ConnectorError::other(no_credentials.into(), None)),
            "an error occurred while loading credentials"
        );
    }
}
