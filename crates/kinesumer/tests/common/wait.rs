//! Deadlines for the tests' waits, and the graceful stop of a child process. Shared by
//! the library's and the CLI's integration tests (the CLI includes this file by path).

use std::future::Future;
use std::time::Duration;

/// Every await on the stack is bounded by this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Awaits `f` for at most [`TEST_TIMEOUT`], naming `what` when it does not finish.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {TEST_TIMEOUT:?}: {what} (is the local stack up? scripts/local-stack start)"),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= end {
            panic!("condition not reached within {deadline:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `signal` to the running `child`.
pub fn signal(child: &tokio::process::Child, signal: rustix::process::Signal) {
    let pid = child.id().expect("running") as i32;
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid).expect("pid"), signal)
        .expect("signal");
}

/// Sends SIGTERM to `child`, waits for its exit and then for `stdout_reader` to finish
/// (so every line written before the exit has been read); returns the exit code.
pub async fn terminate(
    child: &mut tokio::process::Child,
    stdout_reader: Option<tokio::task::JoinHandle<()>>,
) -> Option<i32> {
    signal(child, rustix::process::Signal::TERM);
    let status = within("process exit", child.wait()).await.expect("wait");
    if let Some(reader) = stdout_reader {
        within("stdout drained", reader).await.expect("reader");
    }
    status.code()
}
