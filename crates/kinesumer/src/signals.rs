//! Runtime errors and group events: `Signals`, where a member's tasks send them, and
//! the streams the application reads them from, [`Errors`] and [`Events`] (two
//! [`Notices`]).
//!
//! Both are fed from a bounded broadcast channel, so a slow or absent listener never
//! blocks consumption: a listener that falls behind loses the oldest items. The stream
//! does not end when that happens — it yields one item saying how many were missed
//! ([`Error::Missed`], [`Event::Missed`]) and goes on. It ends only when the member is
//! dropped.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::error::Error;
use crate::event::Event;

/// Where events and errors go: broadcast channels, so a slow or absent listener never
/// blocks consumption (it loses the oldest instead). Events are counted too
/// ([`crate::metrics`]), under the member's application.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    app: Arc<str>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) errors: broadcast::Sender<Error>,
}

impl Signals {
    pub(crate) fn new(app: &str, capacity: usize) -> Self {
        Self {
            app: app.into(),
            events: broadcast::channel(capacity).0,
            errors: broadcast::channel(capacity).0,
        }
    }

    pub(crate) fn event(&self, event: Event) {
        tracing::info!(?event, "group event");
        event.count(&self.app);
        let _ = self.events.send(event);
    }

    /// Reports a runtime error: to [`Kinesumer::errors`](crate::Kinesumer::errors), and
    /// as a `tracing` warning under the target `kinesumer::errors`, which an application
    /// that prints the stream itself can turn off.
    pub(crate) fn error(&self, error: Error) {
        tracing::warn!(target: "kinesumer::errors", %error, "consumer error");
        let _ = self.errors.send(error);
    }
}

/// A stream of what a member reports, fed by a broadcast channel; lag comes as an
/// item. Used as [`Errors`] and [`Events`].
pub struct Notices<T>(BoxStream<'static, T>);

/// The runtime errors of a member ([`Kinesumer::errors`](crate::Kinesumer::errors)):
/// throttling, failed commits, lost leases.
///
/// A listener that fell behind receives [`Error::Missed`] and then the newest errors;
/// the stream ends only when the member is dropped.
pub type Errors = Notices<Error>;

/// The group events of a member ([`Kinesumer::events`](crate::Kinesumer::events)):
/// leases taken, released and lost, leadership, fencing.
///
/// A listener that fell behind receives [`Event::Missed`] and then the newest events;
/// the stream ends only when the member is dropped.
pub type Events = Notices<Event>;

impl<T: Clone + Send + 'static> Notices<T> {
    /// The items of `rx`; `missed(count)` in place of `count` items lost to lag.
    fn new(rx: broadcast::Receiver<T>, missed: fn(u64) -> T) -> Self {
        let items = futures::stream::unfold(rx, move |mut rx| async move {
            match rx.recv().await {
                Ok(item) => Some((item, rx)),
                Err(RecvError::Lagged(count)) => Some((missed(count), rx)),
                Err(RecvError::Closed) => None,
            }
        });
        Self(items.boxed())
    }
}

impl Errors {
    pub(crate) fn errors(rx: broadcast::Receiver<Error>) -> Self {
        Self::new(rx, |count| Error::Missed { count })
    }
}

impl Events {
    pub(crate) fn events(rx: broadcast::Receiver<Event>) -> Self {
        Self::new(rx, |count| Event::Missed { count })
    }
}

impl<T> Stream for Notices<T> {
    type Item = T;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_next_unpin(cx)
    }
}

impl<T> fmt::Debug for Notices<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notices").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_that_falls_behind_learns_how_many_it_missed_and_goes_on() {
        let (tx, rx) = broadcast::channel(2);
        let mut events = Events::events(rx);
        for term in 1..=5 {
            tx.send(Event::LeaderGained { term }).unwrap();
        }
        assert_eq!(events.next().await, Some(Event::Missed { count: 3 }));
        assert_eq!(events.next().await, Some(Event::LeaderGained { term: 4 }));
        assert_eq!(events.next().await, Some(Event::LeaderGained { term: 5 }));
        tx.send(Event::LeaderLost { term: 5 }).unwrap();
        assert_eq!(events.next().await, Some(Event::LeaderLost { term: 5 }));
        drop(tx);
        assert_eq!(events.next().await, None, "ends when the member is gone");
    }

    #[tokio::test]
    async fn errors_report_lag_as_an_error_item() {
        let (tx, rx) = broadcast::channel(1);
        let mut errors = Errors::errors(rx);
        tx.send(Error::NoStreams).unwrap();
        tx.send(Error::Closed).unwrap();
        assert!(matches!(
            errors.next().await,
            Some(Error::Missed { count: 1 })
        ));
        assert!(matches!(errors.next().await, Some(Error::Closed)));
    }
}
