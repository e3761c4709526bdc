//! Verdicts over the deliveries of member runs (a run: one process lifetime).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::member::Delivery;

/// The records numbered `0..produced` that no run delivered.
pub fn lost<'a>(produced: u64, runs: impl IntoIterator<Item = &'a [Delivery]>) -> u64 {
    let got: HashSet<u64> = runs.into_iter().flatten().map(|d| d.n).collect();
    (0..produced).filter(|n| !got.contains(n)).count() as u64
}

/// Deliveries beyond the first of each record.
pub fn duplicates<'a>(runs: impl IntoIterator<Item = &'a [Delivery]>) -> u64 {
    let mut seen = HashSet::new();
    runs.into_iter()
        .flatten()
        .filter(|d| !seen.insert(d.n))
        .count() as u64
}

/// Per-key order within one run: a record delivered for the first time in the run after
/// a later record of its key. A record delivered again (the run re-read from a
/// checkpoint) is a duplicate, not a reordering.
pub fn order_violations(run: &[Delivery]) -> u64 {
    let mut highest: BTreeMap<&str, u64> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut violations = 0;
    for d in run {
        let first = seen.insert(d.n);
        let top = highest.entry(&d.key).or_insert(d.n);
        if first && d.n < *top {
            violations += 1;
        }
        *top = (*top).max(d.n);
    }
    violations
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn run(records: &[(&str, u64)]) -> Vec<Delivery> {
        records
            .iter()
            .enumerate()
            .map(|(i, (key, n))| Delivery {
                at: Instant::now(),
                key: (*key).to_owned(),
                n: *n,
                shard: "shardId-000000000000".into(),
                seq: (i + 1).to_string().parse().expect("digits"),
            })
            .collect()
    }

    #[test]
    fn a_replay_from_a_checkpoint_is_duplicates_not_disorder() {
        let r = run(&[("a", 1), ("b", 2), ("a", 3), ("a", 1), ("a", 3), ("a", 5)]);
        assert_eq!(order_violations(&r), 0);
        assert_eq!(duplicates([r.as_slice()]), 2);
        assert_eq!(lost(6, [r.as_slice()]), 2);
    }

    #[test]
    fn a_first_delivery_behind_its_key_is_disorder() {
        let r = run(&[("a", 3), ("b", 2), ("a", 1)]);
        assert_eq!(order_violations(&r), 1);
    }
}
