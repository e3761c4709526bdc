//! `consume --metrics-addr`: the member's metrics (`kinesumer::metrics`) served in the
//! Prometheus text format by `metrics-exporter-prometheus`, the process's one recorder.

use std::net::SocketAddr;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::UsageError;

/// Bucket bounds of `kinesumer_rebalance_duration_seconds`: a planned handoff takes under
/// a second, a takeover the failover timeout (2.2 s), a handoff waiting on a slow
/// application up to `handoff_timeout` (5 s) and more.
const REBALANCE_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Installs the Prometheus recorder and starts serving it on `addr`; the returned task
/// serves until it is aborted.
///
/// # Errors
///
/// A [`UsageError`] when `addr` cannot be listened on (in use, not a local address).
pub(crate) fn serve(addr: SocketAddr) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let rebalance = Matcher::Full(kinesumer::metrics::REBALANCE_DURATION.to_owned());
    let (recorder, exporter) = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(rebalance, REBALANCE_BUCKETS)
        .context("rebalance duration buckets")?
        .build()
        .map_err(|e| UsageError(format!("--metrics-addr {addr}: {e}")))?;
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    kinesumer::metrics::describe();
    Ok(tokio::spawn(async move {
        if let Err(e) = exporter.await {
            crate::say::warning(format!("the metrics endpoint stopped: {e:?}"));
        }
    }))
}
