//! One child for all of a member's shards: the default of `kinesumer run`.
//!
//! ```text
//!  shard A's Child ─┐                      ┌──▶ stdin ──▶ COMMAND ──▶ stdout ──┐
//!  shard B's Child ─┼─ lines, one at a time┘                                   │
//!  shard C's Child ─┘ ◀── each shard's answers, by `stream` and `shard_id` ◀───┘ (the router)
//! ```
//!
//! Every shard keeps its own conversation ([`Seat`]): its messages go to the one child's
//! stdin whole, one line at a time, and the router hands each answer to the shard it
//! names. A child that exits, writes a line that is not the protocol or answers without
//! naming a shard ends its generation: every shard waiting for an answer fails that
//! attempt, and the next attempt of any shard starts a new child, in which each shard is
//! initialized again after its last checkpoint and sent everything after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kinesumer::store::ShardRef;
use tokio::io::{AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::mpsc;

use super::{next_reply, not_the_protocol, spawn, Broken, Reply, Running, EXIT_SEEN};
use crate::exec::KillOnDrop;
use crate::member::AbortOnDrop;

/// How the child is named in what is said of it.
const WHO: &str = "the shared child";

/// A shard, as answers name it: `(stream, shard_id)`.
type Key = (String, String);

/// What the router hands a shard: an answer, or why the child's generation ended.
type Routed = Result<Reply, String>;

/// The member's one child, started when a shard first needs it and again after it ends.
pub(crate) struct Shared {
    command: Arc<[String]>,
    state: tokio::sync::Mutex<State>,
    routes: Arc<Mutex<HashMap<Key, Route>>>,
    /// The generation of the child running now; 0 when none is (it ended, or none started).
    live: Arc<AtomicU64>,
}

struct State {
    running: Option<Generation>,
    /// The generation of the last child started.
    last: u64,
}

/// A started child: its stdin, and the task routing its answers (which waits for its
/// exit once its stdout closes).
struct Generation {
    number: u64,
    stdin: ChildStdin,
    /// Kills it with everything it started, when the generation ends.
    _group: KillOnDrop,
    _stderr: AbortOnDrop,
    router: AbortOnDrop,
}

/// Where the router sends one shard's answers, in one generation.
struct Route {
    generation: u64,
    tx: mpsc::UnboundedSender<Routed>,
}

impl Shared {
    pub(crate) fn new(command: Arc<[String]>) -> Arc<Self> {
        Arc::new(Self {
            command,
            state: tokio::sync::Mutex::new(State {
                running: None,
                last: 0,
            }),
            routes: Arc::default(),
            live: Arc::default(),
        })
    }

    /// Closes the child's stdin and waits up to `grace` for it to exit, then kills its
    /// process group: what it left running, or itself if it has not exited (a child that
    /// broke the protocol was not waited for). A shard's write the child never reads
    /// holds the stdin past `grace`: the child is then killed as the member's process
    /// ends.
    pub(crate) async fn close(&self, grace: Duration) {
        let Ok(mut state) = tokio::time::timeout(grace, self.state.lock()).await else {
            return;
        };
        let running = state.running.take();
        drop(state);
        if let Some(generation) = running {
            self.live.store(0, Ordering::Release);
            let Generation {
                stdin, mut router, ..
            } = generation;
            drop(stdin);
            let _ = tokio::time::timeout(grace, &mut router.0).await;
        }
    }

    /// Ends generation `number`, if it is still the one running: the child is killed with
    /// everything it started, and the shards waiting for its answers are told `why`.
    async fn end(&self, number: u64, why: &str) {
        let mut state = self.state.lock().await;
        if state.running.as_ref().is_some_and(|g| g.number == number) {
            state.running = None;
            end_routes(&self.routes, &self.live, number, why);
        }
    }
}

/// Marks generation `number` ended and tells every shard routed to it `why`.
fn end_routes(routes: &Mutex<HashMap<Key, Route>>, live: &AtomicU64, number: u64, why: &str) {
    let _ = live.compare_exchange(number, 0, Ordering::AcqRel, Ordering::Acquire);
    for route in lock(routes).values().filter(|r| r.generation == number) {
        let _ = route.tx.send(Err(why.to_owned()));
    }
}

fn lock(routes: &Mutex<HashMap<Key, Route>>) -> std::sync::MutexGuard<'_, HashMap<Key, Route>> {
    routes.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands each answer of generation `number` to the shard it names, until the child ends
/// or breaks the protocol; then ends the generation.
async fn route(
    mut stdout: Lines<BufReader<ChildStdout>>,
    mut process: tokio::process::Child,
    number: u64,
    routes: Arc<Mutex<HashMap<Key, Route>>>,
    live: Arc<AtomicU64>,
) {
    // A broken protocol ends the generation at once; a child that stopped says how.
    let stopped = loop {
        let (shard, reply) = match next_reply(&mut stdout).await {
            Ok(next) => next,
            Err(Broken::Stopped(what)) => break Ok(what),
            Err(Broken::NotTheProtocol(line)) => break Err(not_the_protocol(WHO, &line)),
        };
        let Some(shard) = shard else {
            break Err(format!("{WHO} answered without naming the shard: a child shared by the member's shards names `stream` and `shard_id` in every answer (docs/processor-protocol.md), or runs with --child-per-shard"));
        };
        let routes = lock(&routes);
        match routes.get(&shard).filter(|r| r.generation == number) {
            Some(route) => {
                let _ = route.tx.send(Ok(reply));
            }
            None => {
                break Err(format!(
                    "{WHO} answered for {}/{}, a shard it is not serving",
                    shard.0, shard.1
                ))
            }
        }
    };
    let why = match stopped {
        Ok(what) => {
            let status = tokio::time::timeout(EXIT_SEEN, process.wait()).await;
            super::stopped(WHO, &what, status.ok().and_then(Result::ok))
        }
        Err(why) => why,
    };
    end_routes(&routes, &live, number, &why);
}

/// One shard's conversation with the shared child.
pub(crate) struct Seat {
    shared: Arc<Shared>,
    key: Key,
    /// The generation this shard was initialized in, and its answers there.
    joined: Option<(u64, mpsc::UnboundedReceiver<Routed>)>,
}

impl Seat {
    pub(crate) fn new(shared: Arc<Shared>, shard: &ShardRef) -> Self {
        Self {
            shared,
            key: (shard.stream.clone(), shard.shard_id.clone()),
            joined: None,
        }
    }

    /// Whether this shard is initialized in the child running now.
    pub(crate) fn joined(&self) -> bool {
        self.joined
            .as_ref()
            .is_some_and(|(g, _)| *g == self.shared.live.load(Ordering::Acquire))
    }

    /// Takes a seat in the running child, starting one if none runs: the shard is then
    /// to be initialized.
    pub(crate) async fn join(&mut self) -> Result<(), String> {
        self.leave();
        let shared = &self.shared;
        let mut state = shared.state.lock().await;
        let live = shared.live.load(Ordering::Acquire);
        let number = match &state.running {
            Some(g) if g.number == live => g.number,
            _ => {
                // Whatever ran before is gone or broken: killed with what it started.
                state.running = None;
                let (running, stdout) = spawn(&shared.command, "[child]".to_owned())?;
                let Running {
                    stdin,
                    process,
                    group,
                    _stderr,
                } = running;
                state.last += 1;
                let number = state.last;
                let router = tokio::spawn(route(
                    stdout,
                    process,
                    number,
                    shared.routes.clone(),
                    shared.live.clone(),
                ));
                shared.live.store(number, Ordering::Release);
                state.running = Some(Generation {
                    number,
                    stdin,
                    _group: group,
                    _stderr,
                    router: AbortOnDrop(router),
                });
                number
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&shared.routes).insert(
            self.key.clone(),
            Route {
                generation: number,
                tx,
            },
        );
        self.joined = Some((number, rx));
        Ok(())
    }

    /// Writes one line (a whole message) to the child this shard is initialized in.
    pub(crate) async fn write(&self, line: &str) -> Result<(), String> {
        let number = self.joined.as_ref().map(|(g, _)| *g);
        let mut state = self.shared.state.lock().await;
        let Some(generation) = state.running.as_mut().filter(|g| Some(g.number) == number) else {
            return Err(format!("{WHO} stopped"));
        };
        if let Err(e) = generation.stdin.write_all(line.as_bytes()).await {
            let why = super::stopped(WHO, &format!("writing to it failed: {e}"), None);
            drop(state);
            self.shared.end(number.unwrap_or_default(), &why).await;
            return Err(why);
        }
        Ok(())
    }

    /// The child's next answer to this shard.
    pub(crate) async fn next(&mut self) -> Result<Reply, String> {
        let Some((_, rx)) = &mut self.joined else {
            return Err(format!("{WHO} stopped"));
        };
        rx.recv()
            .await
            .unwrap_or_else(|| Err(format!("{WHO} stopped")))
    }

    /// This shard's conversation is out of step (an answer it waited for will come, to
    /// nobody): the child is replaced, and every shard in it starts again after its last
    /// checkpoint.
    pub(crate) async fn replace(&mut self, why: &str) {
        if let Some((number, _)) = self.joined.take() {
            lock(&self.shared.routes).remove(&self.key);
            self.shared.end(number, why).await;
        }
    }

    /// Leaves the child: its answers to this shard are no longer expected.
    pub(crate) fn leave(&mut self) {
        if self.joined.take().is_some() {
            lock(&self.shared.routes).remove(&self.key);
        }
    }
}
