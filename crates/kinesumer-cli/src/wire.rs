//! How a record is written for another program — `consume`'s JSON lines and `run`'s
//! `records` messages: its payload as text or base64, and its arrival time.

use std::borrow::Cow;

use base64::Engine as _;
use chrono::SecondsFormat;
use kinesumer::Record;

/// A record's payload as written.
pub(crate) enum Payload<'a> {
    /// Valid UTF-8, written as it is.
    Text(&'a str),
    Base64(String),
}

impl<'a> Payload<'a> {
    /// `data` as text when `text` is allowed and it is valid UTF-8, else as base64.
    pub(crate) fn of(data: &'a [u8], text: bool) -> Self {
        match text.then(|| std::str::from_utf8(data)) {
            Some(Ok(text)) => Payload::Text(text),
            _ => Payload::Base64(base64::engine::general_purpose::STANDARD.encode(data)),
        }
    }

    /// Its `data_encoding`: `text` or `base64`.
    pub(crate) fn encoding(&self) -> &'static str {
        match self {
            Payload::Text(_) => "text",
            Payload::Base64(_) => "base64",
        }
    }

    /// Its `data`.
    pub(crate) fn into_data(self) -> Cow<'a, str> {
        match self {
            Payload::Text(text) => text.into(),
            Payload::Base64(encoded) => encoded.into(),
        }
    }
}

/// A record's approximate arrival: RFC 3339 in UTC, to the millisecond.
pub(crate) fn arrival(r: &Record) -> Option<String> {
    r.approximate_arrival
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}
