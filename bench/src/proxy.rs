//! Fault-injecting proxies on loopback, between member processes and the local stack.
//!
//! - [`TcpProxy`] forwards bytes to one upstream (moto, the state store) and can refuse
//!   or stall every connection (the state store unreachable), or delay each request by a
//!   random time (a slow network: a request delayed past the client's timeout still
//!   lands).
//! - [`HttpFaultProxy`] forwards HTTP/1.1 requests to kinesis-local and can answer a
//!   fraction of them itself with throttling (HTTP 400,
//!   `ProvisionedThroughputExceededException`) or an HTTP 500 — the emulators never
//!   throttle — or forward them late.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::Error;

/// What [`TcpProxy`] does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpMode {
    /// Forward bytes both ways.
    Pass,
    /// Close every open connection and every new one at once.
    Refuse,
    /// Keep every connection open and forward nothing; when the mode goes back to
    /// [`TcpMode::Pass`], close them (their requests are lost).
    Stall,
    /// Forward, holding each chunk sent upstream for a random time up to this long; the
    /// chunk is sent even if the client has given up meanwhile.
    Delay(Duration),
}

/// A TCP proxy on `127.0.0.1`, whose mode can be switched while it runs.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    mode: watch::Sender<TcpMode>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free port of `127.0.0.1` and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, watcher) = watch::channel(TcpMode::Pass);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(tcp_connection(client, upstream.clone(), watcher.clone()));
            }
        });
        Ok(Self { addr, mode, task })
    }

    /// `http://127.0.0.1:<port>`, for an endpoint option.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the mode; open connections follow at once.
    pub fn set(&self, mode: TcpMode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tcp_connection(
    mut client: TcpStream,
    upstream: String,
    mut mode: watch::Receiver<TcpMode>,
) {
    let current = *mode.borrow_and_update();
    match current {
        TcpMode::Refuse => return,
        TcpMode::Stall => {
            let _ = mode.wait_for(|m| *m != TcpMode::Stall).await;
            return;
        }
        TcpMode::Pass | TcpMode::Delay(_) => {}
    }
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (client_read, mut client_write) = client.split();
    let (mut server_read, server_write) = server.split();
    let forward = futures::future::join(
        delayed_copy(client_read, server_write, mode.clone()),
        tokio::io::copy(&mut server_read, &mut client_write),
    );
    let cut = |m: &TcpMode| matches!(m, TcpMode::Refuse | TcpMode::Stall);
    let changed = tokio::select! {
        _ = forward => return,
        changed = mode.wait_for(cut) => changed.map(|m| *m).ok(),
    };
    if changed == Some(TcpMode::Stall) {
        let _ = mode.wait_for(|m| *m == TcpMode::Pass).await;
    }
}

/// Copies `from` to `to`, holding each chunk for a random time up to the delay of the
/// current mode (none unless it is [`TcpMode::Delay`]).
async fn delayed_copy(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    mode: watch::Receiver<TcpMode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let current = *mode.borrow();
        if let TcpMode::Delay(most) = current {
            tokio::time::sleep(most.mul_f64(rand::random::<f64>())).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// What [`HttpFaultProxy`] does with a request it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFault {
    /// HTTP 400 with `ProvisionedThroughputExceededException`.
    Throttle,
    /// HTTP 500 with `InternalFailure`.
    ServerError,
    /// Forwarded after a random time up to this long.
    Delay(Duration),
}

/// The faults of [`HttpFaultProxy`]: which answer, for which share of which requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HttpFaults {
    /// The answer given instead of forwarding.
    pub fault: HttpFault,
    /// The share of requests answered so, from 0 (none) to 1 (all).
    pub fraction: f64,
    /// The operations (`ListShards`, …, from the `X-Amz-Target` header) it applies to;
    /// empty: every request.
    pub operations: &'static [&'static str],
}

impl HttpFaults {
    /// `fault` for `fraction` of every request.
    pub fn all(fault: HttpFault, fraction: f64) -> Self {
        Self {
            fault,
            fraction,
            operations: &[],
        }
    }

    fn applies(&self, request: &Request<Incoming>) -> bool {
        let target = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.to_str().ok())
            .unwrap_or_default();
        let operation = target.rsplit('.').next().unwrap_or_default();
        (self.operations.is_empty() || self.operations.contains(&operation))
            && rand::random::<f64>() < self.fraction
    }
}

/// Requests answered with a fault and requests forwarded.
#[derive(Debug, Default)]
pub struct HttpCounts {
    /// Answered with [`HttpFault::Throttle`].
    pub throttled: AtomicU64,
    /// Answered with [`HttpFault::ServerError`].
    pub server_errors: AtomicU64,
    /// Forwarded late ([`HttpFault::Delay`]).
    pub delayed: AtomicU64,
    /// Forwarded.
    pub forwarded: AtomicU64,
}

/// An HTTP/1.1 proxy on `127.0.0.1` in front of kinesis-local, injecting faults.
#[derive(Debug)]
pub struct HttpFaultProxy {
    addr: SocketAddr,
    faults: watch::Sender<Option<HttpFaults>>,
    counts: Arc<HttpCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpFaultProxy {
    /// Listens on a free port of `127.0.0.1` and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (faults, watcher) = watch::channel(None);
        let counts = Arc::new(HttpCounts::default());
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, faults, counts) =
                    (upstream.clone(), watcher.clone(), shared.clone());
                let service = hyper::service::service_fn(move |request| {
                    let fault = faults
                        .borrow()
                        .filter(|f: &HttpFaults| f.applies(&request))
                        .map(|f| f.fault);
                    answer(request, fault, upstream.clone(), counts.clone())
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(client), service),
                );
            }
        });
        Ok(Self {
            addr,
            faults,
            counts,
            task,
        })
    }

    /// `http://127.0.0.1:<port>`, for an endpoint option.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Injects these faults from now on, or none.
    pub fn set(&self, faults: Option<HttpFaults>) {
        self.faults.send_replace(faults);
    }

    /// What the proxy did so far.
    pub fn counts(&self) -> &HttpCounts {
        &self.counts
    }
}

impl Drop for HttpFaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    request: Request<Incoming>,
    fault: Option<HttpFault>,
    upstream: String,
    counts: Arc<HttpCounts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, kind) = match fault {
        None | Some(HttpFault::Delay(_)) => {
            if let Some(HttpFault::Delay(most)) = fault {
                counts.delayed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(most.mul_f64(rand::random::<f64>())).await;
            }
            counts.forwarded.fetch_add(1, Ordering::Relaxed);
            return Ok(forward(request, &upstream).await.unwrap_or_else(|e| {
                error_response(StatusCode::BAD_GATEWAY, "Proxy", &e.to_string())
            }));
        }
        Some(HttpFault::Throttle) => {
            counts.throttled.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::BAD_REQUEST,
                "ProvisionedThroughputExceededException",
            )
        }
        Some(HttpFault::ServerError) => {
            counts.server_errors.fetch_add(1, Ordering::Relaxed);
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure")
        }
    };
    // The request body is read in full so that the connection stays usable.
    let _ = request.into_body().collect().await;
    Ok(error_response(status, kind, "injected by the chaos proxy"))
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "__type": kind, "message": message });
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

async fn forward(
    request: Request<Incoming>,
    upstream: &str,
) -> Result<Response<Full<Bytes>>, Error> {
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}
