//! Kinesis sequence numbers and positions inside a shard.
//!
//! Sequence numbers are decimal strings of up to about 56 digits, past even 128 bits, so
//! they are compared as numbers written in decimal: by length (after leading zeros), then
//! lexicographically — never as plain strings, which would put `"9"` after `"10"`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use thiserror::Error;

/// A Kinesis sequence number, ordered numerically.
///
/// # Examples
///
/// ```
/// use kinesumer::SequenceNumber;
///
/// let a: SequenceNumber = "9".parse().unwrap();
/// let b: SequenceNumber = "10".parse().unwrap();
/// assert!(a < b);
/// ```
///
/// Cloning one is cheap (the digits are shared): every record's position carries it.
/// Equality and hashing agree with the order: `"007"` equals `"7"`.
#[derive(Clone)]
pub struct SequenceNumber(Arc<str>);

/// A string that is not a sequence number (not a non-empty run of ASCII digits).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid sequence number {0:?}: expected decimal digits")]
pub struct InvalidSequenceNumber(pub String);

impl SequenceNumber {
    /// The digits as Kinesis wrote them.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn significant(&self) -> &str {
        let trimmed = self.0.trim_start_matches('0');
        if trimmed.is_empty() {
            "0"
        } else {
            trimmed
        }
    }
}

impl FromStr for SequenceNumber {
    type Err = InvalidSequenceNumber;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidSequenceNumber(s.to_owned()));
        }
        Ok(Self(s.into()))
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.significant(), other.significant());
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
}

impl PartialEq for SequenceNumber {
    fn eq(&self, other: &Self) -> bool {
        self.significant() == other.significant()
    }
}

impl Eq for SequenceNumber {}

impl std::hash::Hash for SequenceNumber {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.significant().hash(state);
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SequenceNumber({})", self.0)
    }
}

/// A position inside a shard: a sequence number and, inside a record aggregated by the
/// Kinesis Producer Library, the index of a user record.
///
/// Positions compare as `(sequence, sub-sequence)`, an absent sub-sequence counting as
/// the whole record: so `(7, Some(3)) < (7, None) < (8, Some(0))`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    /// The Kinesis sequence number of the record.
    pub sequence: SequenceNumber,
    /// The user record inside an aggregated record; `None` means the whole record.
    pub sub_sequence: Option<u64>,
}

impl Position {
    /// The position of a whole (not aggregated) record.
    pub fn whole(sequence: SequenceNumber) -> Self {
        Self {
            sequence,
            sub_sequence: None,
        }
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sequence.cmp(&other.sequence).then_with(|| {
            match (self.sub_sequence, other.sub_sequence) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(&b),
            }
        })
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(s: &str) -> SequenceNumber {
        s.parse().unwrap()
    }

    #[test]
    fn compares_numerically() {
        assert!(seq("9") < seq("10"));
        assert!(seq("0009") < seq("10"));
        assert_eq!(seq("007").cmp(&seq("7")), Ordering::Equal);
        let long = "49590338271490256608559692538361571095921575989136588898";
        assert!(seq(long) > seq(&long[1..]));
    }

    #[test]
    fn rejects_non_digits() {
        assert!("".parse::<SequenceNumber>().is_err());
        assert!("12a".parse::<SequenceNumber>().is_err());
        assert!("-1".parse::<SequenceNumber>().is_err());
    }

    #[test]
    fn sub_sequence_orders_inside_the_record() {
        let p = |s: &str, sub: Option<u64>| Position {
            sequence: seq(s),
            sub_sequence: sub,
        };
        assert!(p("7", Some(3)) < p("7", None));
        assert!(p("7", None) < p("8", Some(0)));
        assert!(p("7", Some(2)) < p("7", Some(3)));
    }

    proptest! {
        #[test]
        fn order_matches_u128(a in any::<u128>(), b in any::<u128>()) {
            prop_assert_eq!(seq(&a.to_string()).cmp(&seq(&b.to_string())), a.cmp(&b));
        }

        #[test]
        fn leading_zeros_do_not_matter(a in any::<u64>(), zeros in 0usize..5) {
            let padded = format!("{}{}", "0".repeat(zeros), a);
            prop_assert_eq!(seq(&padded).cmp(&seq(&a.to_string())), Ordering::Equal);
        }

        #[test]
        fn equality_and_hash_agree_with_the_order(a in any::<u64>(), zeros in 0usize..5) {
            use std::hash::BuildHasher;
            let (padded, plain) = (seq(&format!("{}{}", "0".repeat(zeros), a)), seq(&a.to_string()));
            prop_assert_eq!(&padded, &plain);
            let hasher = std::collections::hash_map::RandomState::new();
            prop_assert_eq!(hasher.hash_one(&padded), hasher.hash_one(&plain));
        }
    }
}
