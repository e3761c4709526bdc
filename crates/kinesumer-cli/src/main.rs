//! `kinesumer`: the command-line tool of the kinesumer consumer group.
//!
//! See `kinesumer --help` and `docs/cli.md`. Exit codes: 0 ok, 1 runtime error, 2 usage
//! error. Errors go to stderr with their cause chain; no credential and no record payload
//! is ever logged.

mod aws;
mod cli;
mod consume;
mod deregister;
mod exec;
mod groups;
mod iam;
mod member;
mod migrate;
mod observe;
mod prometheus;
mod put;
mod reset;
mod run;
mod say;
mod status;
mod stream;
mod table;
mod wire;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// A mistake on the command line found after parsing (a combination clap cannot check,
/// or a configuration the library refused): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    say::init(cli.log_format);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli {
        aws: options,
        command,
        ..
    } = cli;
    if let Command::IamPolicy(args) = &command {
        // Offline: no AWS call, so no credentials needed.
        return iam::run(args, &options);
    }
    let aws = aws::Aws::load(&options).await?;
    match command {
        Command::Table(cmd) => table::run(&aws, cmd).await,
        Command::Stream(cmd) => stream::run(&aws, cmd).await,
        Command::Status(args) => status::run(&aws, args).await,
        Command::Consume(args) => consume::run(&aws, args).await,
        Command::Run(args) => run::serve(&aws, args).await,
        Command::Reset(args) => reset::run(&aws, args).await,
        Command::Export(args) => reset::export(&aws, args).await,
        Command::Groups(args) => groups::list(&aws, args).await,
        Command::Group(cmd) => groups::run(&aws, cmd).await,
        Command::Put(args) => put::run(&aws, args).await,
        Command::DeregisterConsumer(args) => deregister::run(&aws, args).await,
        Command::Migrate(cmd) => migrate::run(&aws, cmd).await,
        // Answered above, without AWS.
        Command::IamPolicy(_) => Ok(()),
    }
}

/// Prints `error` with its cause chain and picks the exit code: 2 for a usage error or
/// a refused configuration, 1 otherwise.
fn fail(error: &anyhow::Error) -> ExitCode {
    say::error(chain(error));
    let usage = error.chain().any(|cause| {
        cause.is::<UsageError>()
            || cause.is::<kinesumer::ConfigError>()
            || matches!(
                cause.downcast_ref::<kinesumer::Error>(),
                Some(kinesumer::Error::Config(_))
            )
    });
    if usage {
        if !say::json() {
            eprintln!("(see kinesumer --help)");
        }
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

/// The error and its causes, joined by `: `. A cause whose text its parent already ends
/// with (a `thiserror` variant that shows its source) is not repeated.
fn chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_chained_once() {
        let store = kinesumer::store::StoreError::TableNotFound { table: "t".into() };
        let e = anyhow::Error::new(kinesumer::Error::from(store)).context("reading the group");
        let text = chain(&e);
        assert!(
            text.starts_with("reading the group: state store: state-store table \"t\" not found")
        );
        assert_eq!(text.matches("not found").count(), 1, "{text}");
    }
}
