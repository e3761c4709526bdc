//! The AWS configuration of the tool: one [`SdkConfig`] built from the global options
//! over the standard AWS chain, used by the tool's own clients and handed to the library
//! ([`kinesumer::Kinesumer::from_sdk_config`]). The options win over the environment:
//! they are set on the loader and on each service's client, never written to the
//! process environment.

use anyhow::Context as _;
use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::cli::AwsOptions;
use crate::UsageError;

/// The loaded AWS configuration, the endpoints the options name per service, and the
/// role to assume for Kinesis.
#[derive(Debug)]
pub(crate) struct Aws {
    sdk: SdkConfig,
    /// `--kinesis-endpoint`, else `--endpoint-url`.
    pub(crate) kinesis_endpoint: Option<String>,
    /// `--dynamodb-endpoint`, else `--endpoint-url`.
    pub(crate) dynamodb_endpoint: Option<String>,
    /// `--role-arn`.
    pub(crate) role_arn: Option<String>,
}

impl Aws {
    /// Loads the standard AWS chain under the options.
    ///
    /// The region comes from `--region`, else the environment or the profile; the
    /// instance metadata service is not asked (on a laptop it only times out, with a
    /// warning per attempt), so a missing region fails at once.
    ///
    /// # Errors
    ///
    /// A [`UsageError`] when no region is known; the CA bundle cannot be read.
    pub(crate) async fn load(opts: &AwsOptions) -> anyhow::Result<Self> {
        let region = match &opts.region {
            Some(region) => Some(Region::new(region.clone())),
            None => local_region(opts.profile.as_deref()).await,
        };
        let Some(region) = region else {
            return Err(UsageError(
                "no AWS region: pass --region, or set AWS_REGION or a region in the profile".into(),
            )
            .into());
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
        if let Some(profile) = &opts.profile {
            loader = loader.profile_name(profile);
        }
        // The library's clients honour AWS_CA_BUNDLE; the tool's own must match.
        let ca_bundle = opts
            .ca_bundle
            .clone()
            .map(std::ffi::OsString::from)
            .or_else(|| std::env::var_os("AWS_CA_BUNDLE"));
        if let Some(path) = ca_bundle {
            loader = loader.http_client(kinesumer::ca_bundle_http_client(path.as_ref())?);
        }
        Ok(Self {
            sdk: loader.load().await,
            kinesis_endpoint: opts.kinesis_endpoint.clone().or(opts.endpoint_url.clone()),
            dynamodb_endpoint: opts.dynamodb_endpoint.clone().or(opts.endpoint_url.clone()),
            role_arn: opts.role_arn.clone(),
        })
    }

    /// The loaded configuration, for the library.
    pub(crate) fn sdk(&self) -> &SdkConfig {
        &self.sdk
    }

    /// A DynamoDB client (always the caller's own credentials: the table lives in the
    /// consumer's account).
    pub(crate) fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let mut conf = aws_sdk_dynamodb::config::Builder::from(&self.sdk);
        if let Some(url) = &self.dynamodb_endpoint {
            conf = conf.endpoint_url(url);
        }
        aws_sdk_dynamodb::Client::from_conf(conf.build())
    }

    /// A Kinesis client, with credentials from STS AssumeRole when `--role-arn` is set.
    pub(crate) async fn kinesis(&self) -> aws_sdk_kinesis::Client {
        let mut conf = aws_sdk_kinesis::config::Builder::from(&self.sdk);
        if let Some(url) = &self.kinesis_endpoint {
            conf = conf.endpoint_url(url);
        }
        if let Some(arn) = &self.role_arn {
            let provider = AssumeRoleProvider::builder(arn)
                .session_name("kinesumer-cli")
                .configure(&self.sdk)
                .build()
                .await;
            conf = conf.credentials_provider(provider);
        }
        aws_sdk_kinesis::Client::from_conf(conf.build())
    }

    /// The state store of `app` on `table`, checked to exist with the right schema.
    ///
    /// # Errors
    ///
    /// The table is missing (the message says how to create it), has the wrong schema,
    /// or cannot be reached.
    pub(crate) async fn store(
        &self,
        table: &str,
        app: &str,
    ) -> anyhow::Result<kinesumer::store::DynamoStore> {
        let store = kinesumer::store::DynamoStore::new(self.dynamodb(), table, app);
        store
            .check_table()
            .await
            .with_context(|| match &self.dynamodb_endpoint {
                Some(url) => format!("checking the state-store table {table:?} at {url}"),
                None => format!("checking the state-store table {table:?}"),
            })?;
        Ok(store)
    }
}

/// The region from the environment or the profile (`profile`, else the default one):
/// the standard chain without its last link, the instance metadata service.
async fn local_region(profile: Option<&str>) -> Option<Region> {
    let mut from_profile = ProfileFileRegionProvider::builder();
    if let Some(profile) = profile {
        from_profile = from_profile.profile_name(profile);
    }
    RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(from_profile.build())
        .region()
        .await
}
