//! Usage errors exit 2 with a message that says what is wrong; `--help` documents every
//! subcommand. None of these reaches AWS.

mod common;

use common::run;

async fn usage_error(args: &[&str], says: &str) {
    let out = run(args, b"").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "kinesumer {args:?}: {stderr}");
    assert!(
        stderr.contains(says),
        "kinesumer {args:?} should say {says:?}: {stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn usage_errors_exit_2_and_say_why() {
    usage_error(&["consume", "--table", "t", "--stream", "s"], "--app <APP>").await;
    usage_error(
        &["consume", "--app", "a", "--table", "t"],
        "--stream <STREAM>",
    )
    .await;
    usage_error(
        &[
            "consume",
            "--app",
            "a",
            "--table",
            "table",
            "--stream",
            "s",
            "--efo",
            "--consumer-region",
            "eu west",
        ],
        "the fan-out consumer name \"a-eu west\"",
    )
    .await;
    usage_error(&["deregister-consumer", "--app", "a"], "--stream <STREAM>").await;
    let consume = ["consume", "--app", "a", "--table", "t", "--stream", "s"];
    // A valid table name: the configuration is checked past it.
    let valid = ["consume", "--app", "a", "--table", "table", "--stream", "s"];
    usage_error(
        &[&valid[..], &["--balance", "load", "--capacity", "0"]].concat(),
        "capacity: must be over 0",
    )
    .await;
    // By count nothing is measured: the message names both ways out, in flags.
    for command in ["consume", "run"] {
        let mut args = valid.to_vec();
        args[0] = command;
        args.extend(["--max-bytes-per-second", "1048576"]);
        if command == "run" {
            args.extend(["--", "cat"]);
        }
        usage_error(
            &args,
            "--max-bytes-per-second needs --balance load (balancing by count measures no load); or limit the shards with --max-shards",
        )
        .await;
    }
    usage_error(
        &[&consume[..], &["--on-error", "dead-letter=file:x"]].concat(),
        "--exec <COMMAND>",
    )
    .await;
    usage_error(
        &[
            &consume[..],
            &["--exec", "cat", "--on-error", "dead-letter=s3:x"],
        ]
        .concat(),
        "expected stop, dead-letter=kinesis:STREAM or dead-letter=file:PATH",
    )
    .await;
    usage_error(
        &[&consume[..], &["--exec", "cat", "--max-attempts", "0"]].concat(),
        "0 is not in 1..",
    )
    .await;
    usage_error(
        &[
            "--ca-bundle",
            "/nonexistent/ca.pem",
            "deregister-consumer",
            "--app",
            "a",
            "--stream",
            "s",
        ],
        "ca_bundle: cannot read it",
    )
    .await;
    usage_error(
        &[
            "consume", "--app", "a", "--table", "t", "--stream", "s", "--from", "soon",
        ],
        "expected latest, trim-horizon or an RFC 3339 time",
    )
    .await;
    let reset = ["reset", "--app", "a", "--table", "t", "--stream", "s"];
    for (extra, says) in [
        (
            &["--to-sequence", "12ab", "--shard", "x"][..],
            "expected decimal digits",
        ),
        (&["--to-sequence", "123"][..], "--shard"),
        (&["--to-earliest", "--to-latest"][..], "cannot be used with"),
        (&["--by-duration", "15"][..], "e.g. 15m"),
        (&[][..], "required"),
    ] {
        usage_error(&[&reset[..], extra].concat(), says).await;
    }
    usage_error(
        &[
            "put",
            "--stream",
            "s",
            "--partition-key",
            "k",
            "--key-field",
            "1",
        ],
        "cannot be used with",
    )
    .await;
    usage_error(
        &["table", "create", "--table", "t", "--billing", "free"],
        "on-demand",
    )
    .await;
    usage_error(&["frobnicate"], "unrecognized subcommand").await;
}

#[tokio::test]
async fn a_metrics_address_that_cannot_serve_is_a_usage_error() {
    fn with(addr: &str) -> Vec<&str> {
        let consume = ["consume", "--app", "a", "--table", "t", "--stream", "s"];
        [&consume[..], &["--metrics-addr", addr]].concat()
    }
    usage_error(&with("nowhere"), "expected HOST:PORT").await;
    usage_error(&with("127.0.0.1:99999"), "expected HOST:PORT").await;
    // A port in use: refused before the member joins (so before any AWS request).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    usage_error(
        &with(&addr),
        &format!("--metrics-addr {addr}: failed to create HTTP listener"),
    )
    .await;
}

#[tokio::test]
async fn help_lists_every_subcommand_and_the_aws_options() {
    let out = run(&["--help"], b"").await;
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for word in [
        "table",
        "stream",
        "status",
        "consume",
        "reset",
        "put",
        "deregister-consumer",
        "export",
        "migrate",
        "iam-policy",
        "--region",
        "--endpoint-url",
        "--kinesis-endpoint",
        "--dynamodb-endpoint",
        "--role-arn",
        "--profile",
        "--ca-bundle",
        "Exit codes",
    ] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
}

/// SIGTERM while the member is still joining (here: the state store accepts the
/// connection and never answers) ends the process with 0, not killed by the signal.
#[tokio::test]
async fn sigterm_while_joining_exits_0() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let mut child = common::kinesumer()
        .args([
            "consume", "--app", "app", "--table", "table", "--stream", "s",
        ])
        .env("AWS_ENDPOINT_URL_DYNAMODB", &endpoint)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A connection proves the process is joining, past installing its handlers.
    let (_held, _) = common::within("the member connects", silent.accept())
        .await
        .unwrap();
    assert_eq!(common::terminate(&mut child, None).await, Some(0));
}

/// An unreachable endpoint is one line that names what failed, where, and why — not a
/// dump of the SDK's error.
#[tokio::test]
async fn an_unreachable_endpoint_is_one_line_naming_it() {
    let out = run(
        &[
            "--dynamodb-endpoint",
            "http://127.0.0.1:1",
            "status",
            "--app",
            "a",
            "--table",
            "t",
        ],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    for want in [
        "http://127.0.0.1:1",
        "cannot reach DynamoDB",
        "Connection refused",
    ] {
        assert!(lines[0].contains(want), "{want:?} in {stderr}");
    }
    assert!(
        !stderr.contains("DispatchFailure"),
        "no Debug dump: {stderr}"
    );
}

/// `run` of a valid group, up to its command.
const RUN: [&str; 8] = [
    "run", "--app", "a", "--table", "table", "--stream", "s", "--",
];

/// A processor that cannot be started would fail every shard's attempts for ever (each
/// shard released and taken again): `run` refuses it before joining.
#[tokio::test]
async fn run_refuses_a_command_that_cannot_be_started() {
    let run = RUN;
    usage_error(
        &[&run[..], &["/nonexistent/handler", "x"]].concat(),
        "cannot start /nonexistent/handler: no such file",
    )
    .await;
    usage_error(
        &[&run[..], &["kinesumer-no-such-program"]].concat(),
        "cannot start kinesumer-no-such-program: not found in any directory of PATH",
    )
    .await;
    let not_executable = std::env::temp_dir().join(common::random_name("not-executable"));
    std::fs::write(&not_executable, "print('hi')\n").unwrap();
    let path = not_executable.to_str().unwrap();
    usage_error(
        &[&run[..], &[path]].concat(),
        &format!("cannot start {path}: not executable"),
    )
    .await;
    let _ = std::fs::remove_file(not_executable);
}

/// `--log-format json` (or `KINESUMER_LOG_FORMAT=json`): an error the tool ends with is
/// one JSON object on stderr.
#[tokio::test]
async fn with_json_logs_an_error_is_one_object() {
    let command = [&RUN[..], &["/nonexistent/handler"]].concat();
    let by_option = [&["--log-format", "json"][..], &command].concat();
    is_one_error_object(run(&by_option, b"").await);
    let mut by_env = common::kinesumer();
    by_env.args(&command).env("KINESUMER_LOG_FORMAT", "json");
    is_one_error_object(by_env.output().await.unwrap());
}

fn is_one_error_object(out: std::process::Output) {
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["level"], "ERROR");
    let message = lines[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("cannot start /nonexistent/handler"),
        "{message}"
    );
}
