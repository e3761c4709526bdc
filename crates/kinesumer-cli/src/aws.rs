//! The AWS clients of the tool, from the standard AWS chain.
//!
//! The global options are applied as the standard environment variables
//! ([`apply_to_env`]) before anything else runs, so the tool's own clients and the
//! library's (which `consume` builds through [`kinesumer::Kinesumer::new`]) resolve
//! region, profile and endpoints the same way, with the options winning over the
//! environment.

use anyhow::Context as _;
use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, SdkConfig};

use crate::cli::AwsOptions;
use crate::UsageError;

/// Sets the environment variables the options stand for. Call it before any thread
/// starts (setting the environment races with threads reading it).
pub(crate) fn apply_to_env(opts: &AwsOptions) {
    let set = |name: &str, value: &Option<String>| {
        if let Some(value) = value {
            std::env::set_var(name, value);
        }
    };
    set("AWS_REGION", &opts.region);
    set("AWS_PROFILE", &opts.profile);
    set("AWS_CA_BUNDLE", &opts.ca_bundle);
    // Per-service variables win over AWS_ENDPOINT_URL in the SDK, so set those: the
    // option must win over whatever the environment already holds.
    set("AWS_ENDPOINT_URL_KINESIS", &opts.endpoint_url);
    set("AWS_ENDPOINT_URL_DYNAMODB", &opts.endpoint_url);
    set("AWS_ENDPOINT_URL_KINESIS", &opts.kinesis_endpoint);
    set("AWS_ENDPOINT_URL_DYNAMODB", &opts.dynamodb_endpoint);
}

/// The loaded AWS configuration, and the role to assume for Kinesis.
#[derive(Debug)]
pub(crate) struct Aws {
    sdk: SdkConfig,
    /// `--role-arn`.
    pub(crate) role_arn: Option<String>,
}

impl Aws {
    /// Loads the standard AWS chain.
    ///
    /// # Errors
    ///
    /// A [`UsageError`] when no region is known.
    pub(crate) async fn load(role_arn: Option<String>) -> anyhow::Result<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        // The library's clients honour AWS_CA_BUNDLE; the tool's own must match.
        if let Some(path) = std::env::var_os("AWS_CA_BUNDLE") {
            loader = loader.http_client(kinesumer::ca_bundle_http_client(path.as_ref())?);
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(UsageError(
                "no AWS region: pass --region, or set AWS_REGION or a region in the profile".into(),
            )
            .into());
        }
        Ok(Self { sdk, role_arn })
    }

    /// A DynamoDB client (always the caller's own credentials: the table lives in the
    /// consumer's account).
    pub(crate) fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    /// A Kinesis client, with credentials from STS AssumeRole when `--role-arn` is set.
    pub(crate) async fn kinesis(&self) -> aws_sdk_kinesis::Client {
        let mut conf = aws_sdk_kinesis::config::Builder::from(&self.sdk);
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
            .with_context(|| format!("checking the state-store table {table:?}"))?;
        Ok(store)
    }
}
