//! `kinesumer table create|describe` on the local stack.

mod common;

use common::{ok, random_name, run};

#[tokio::test]
async fn create_then_describe_shows_the_go_client_schema() {
    let table = random_name("cli-table");
    let created = ok(&["table", "create", "--table", &table]).await;
    assert!(created.contains("ACTIVE"), "{created}");
    // Creating it again is fine: the schema is checked instead.
    ok(&["table", "create", "--table", &table]).await;

    let described = ok(&["table", "describe", "--table", &table]).await;
    for want in [
        "status   ACTIVE",
        "key      pk HASH, sk RANGE",
        "index    index-client-key-last-update (pk HASH, last_update RANGE) KEYS_ONLY",
        "billing  PAY_PER_REQUEST",
        "usable   yes",
        "deletion protection  off",
        "point-in-time recovery  off",
        "tags     -",
    ] {
        assert!(
            described.contains(want),
            "describe lacks {want:?}:\n{described}"
        );
    }
    // A production table: protections turned on, on the existing table too.
    ok(&[
        "table",
        "create",
        "--table",
        &table,
        "--deletion-protection",
        "--pitr",
        "--tag",
        "team=data",
    ])
    .await;
    let described = ok(&["table", "describe", "--table", &table]).await;
    for want in [
        "deletion protection  on",
        "point-in-time recovery  on",
        "tags     team=data",
    ] {
        assert!(
            described.contains(want),
            "describe lacks {want:?}:\n{described}"
        );
    }
}

#[tokio::test]
async fn a_missing_table_is_a_runtime_error_that_says_how_to_create_it() {
    let table = random_name("cli-missing");
    let out = run(&["table", "describe", "--table", &table], b"").await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("kinesumer table create --table {table}")),
        "{stderr}"
    );
}
