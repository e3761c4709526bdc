//! The stderr of a member process the tests start, kept in a file under `target/tmp/`
//! and printed when the test fails, so a failure on a loaded CI machine comes with the
//! members' side of the story (issue 23). Shared by the library's and the CLI's
//! integration tests (the CLI includes this file by path).

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::process::Stdio;

/// What member processes log unless the test run sets `RUST_LOG`: the group's joins,
/// leases, leadership, events and fencing.
pub fn member_log_filter() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,kinesumer=info".into())
}

/// One process's log file. When dropped during a panic it prints the log to the test's
/// output; when dropped after a pass it removes the file.
pub struct ProcessLog {
    name: String,
    path: PathBuf,
}

impl ProcessLog {
    /// A new, empty log for the process `name` of the running test.
    pub fn create(name: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("member-logs");
        std::fs::create_dir_all(&dir).expect("create the log directory");
        // libtest names each test's thread after the test.
        let test = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-");
        let path = dir.join(format!("{test}-{name}-{:08x}.log", rand::random::<u32>()));
        File::create(&path).expect("create a log file");
        Self {
            name: name.to_owned(),
            path,
        }
    }

    /// The file as a child's stderr; appends, so restarts under one name share a log.
    pub fn stdio(&self) -> Stdio {
        OpenOptions::new()
            .append(true)
            .open(&self.path)
            .expect("open the log file")
            .into()
    }

    /// What the process logged so far.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }
}

impl Drop for ProcessLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- log of {} ({}) ----\n{}---- end of {}'s log ----",
                self.name,
                self.path.display(),
                self.text(),
                self.name
            );
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
