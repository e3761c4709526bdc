//! A member process (`kinesumer consume` or `kinesumer-member`) whose JSON lines are
//! collected as deliveries, and whose stderr is kept.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kinesumer::seq::SequenceNumber;
use rustix::process::{kill_process, Pid, Signal};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::Error;

/// One record as a member wrote it to stdout, numbered by the producer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// When the harness read the line.
    pub at: Instant,
    /// The partition key.
    pub key: String,
    /// The record's number (its payload).
    pub n: u64,
    /// The shard it was read from.
    pub shard: String,
    /// Its sequence number.
    pub seq: SequenceNumber,
}

impl Delivery {
    fn parse(line: &str, at: Instant) -> Result<Self, Error> {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let text = |field: &str| -> Result<&str, Error> {
            v[field]
                .as_str()
                .ok_or_else(|| format!("member output without {field}").into())
        };
        Ok(Self {
            at,
            key: text("partition_key")?.to_owned(),
            n: text("data")?.parse()?,
            shard: text("shard_id")?.to_owned(),
            seq: text("sequence_number")?.parse()?,
        })
    }
}

/// A running (or ended) member process.
#[derive(Debug)]
pub struct Member {
    child: Child,
    pid: Pid,
    /// Its deliveries, in the order it wrote them.
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// Every stderr line.
    pub stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Member {
    /// Starts `command` with stdout and stderr collected.
    pub fn spawn(mut command: Command) -> Result<Self, Error> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child
            .id()
            .and_then(|id| Pid::from_raw(id as i32))
            .ok_or("a child without a pid")?;
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().ok_or("no stdout")?;
        let err = child.stderr.take().ok_or("no stderr")?;
        let sink = deliveries.clone();
        let out = tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match Delivery::parse(&line, Instant::now()) {
                    Ok(d) => sink.lock().expect("lock").push(d),
                    Err(e) => eprintln!("chaos: unreadable member output ({e})"),
                }
            }
        });
        let sink = stderr.clone();
        let err = tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("lock").push(line);
            }
        });
        Ok(Self {
            child,
            pid,
            deliveries,
            stderr,
            readers: vec![out, err],
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw_nonzero().get() as u32
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        kill_process(self.pid, signal)?;
        Ok(())
    }

    /// The exit code when the process has ended by itself (`Some(None)`: by a signal).
    pub fn exited(&mut self) -> Result<Option<Option<i32>>, Error> {
        Ok(self.child.try_wait()?.map(|s| s.code()))
    }

    /// Waits for the process to end, then for its output to be read; `None` after
    /// `deadline` (the process is then killed).
    pub async fn wait(&mut self, deadline: Duration) -> Result<Option<Option<i32>>, Error> {
        let status = match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => Some(status?.code()),
            Err(_) => {
                self.child.kill().await?;
                None
            }
        };
        for reader in self.readers.drain(..) {
            reader.await?;
        }
        Ok(status)
    }

    /// SIGTERM, then [`Member::wait`].
    pub async fn terminate(&mut self, deadline: Duration) -> Result<Option<Option<i32>>, Error> {
        self.signal(Signal::TERM)?;
        self.wait(deadline).await
    }

    /// Lines of stderr containing `needle`.
    pub fn stderr_count(&self, needle: &str) -> usize {
        let lines = self.stderr.lock().expect("lock");
        lines.iter().filter(|l| l.contains(needle)).count()
    }
}
