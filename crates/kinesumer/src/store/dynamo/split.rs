//! Bodies too large for one item (a DynamoDB item is at most 400 KB): the first item
//! (`sk`) says in `parts` how many items the body spans, and the others are
//! `sk = <sk>#<n>`, n ≥ 1. All items of one body are written in one transaction and read
//! in one transaction, so a reader never mixes parts of two writes.

use aws_sdk_dynamodb::types::AttributeValue;

use super::codec::{attr, key, n, part_sk, Item};

/// The most body one item carries, leaving room for the key and other attributes.
pub(super) const PART_BYTES: usize = 350_000;

/// The most a transaction carries (DynamoDB: 4 MB, 100 items), with a margin.
pub(super) const MAX_BODY_BYTES: usize = 3_900_000;

/// Splits a string into pieces of at most [`PART_BYTES`] bytes, at char boundaries.
pub(super) fn split_str(body: &str) -> Vec<AttributeValue> {
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let mut end = rest.len().min(PART_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        out.push(AttributeValue::S(piece.to_owned()));
        if tail.is_empty() {
            return out;
        }
        rest = tail;
    }
}

/// Splits list elements into lists of at most about [`PART_BYTES`] each.
pub(super) fn split_list(values: Vec<AttributeValue>) -> Vec<AttributeValue> {
    let mut out = vec![Vec::new()];
    let mut size = 0;
    for v in values {
        let len = size_of(&v);
        if size + len > PART_BYTES && !out.last().is_some_and(Vec::is_empty) {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        out.last_mut().expect("never empty").push(v);
    }
    out.into_iter().map(AttributeValue::L).collect()
}

/// Roughly the size DynamoDB counts for a value (names and values in bytes, plus a few
/// bytes of overhead per element).
pub(super) fn size_of(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + size_of(v)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + size_of(v))
                .sum::<usize>()
        }
        AttributeValue::Ss(l) | AttributeValue::Ns(l) => l.iter().map(String::len).sum(),
        _ => 1,
    }
}

/// Builds the items of one body: every item gets the key and `common`; the first also
/// `first` and `parts`; each gets its piece of the body under `body_attr`.
pub(super) fn items(
    pk: &str,
    sk: &str,
    common: &Item,
    first: Item,
    body_attr: &str,
    pieces: Vec<AttributeValue>,
) -> Vec<Item> {
    let parts = pieces.len();
    let mut first = Some(first);
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let sk = if i == 0 {
                sk.to_owned()
            } else {
                part_sk(sk, i)
            };
            let mut item = key(pk.to_owned(), sk);
            item.extend(common.clone());
            if let Some(first) = first.take() {
                item.extend(first);
                item.insert(attr::PARTS.to_owned(), n(parts));
            }
            item.insert(body_attr.to_owned(), piece);
            item
        })
        .collect()
}

/// The keys of the items of a body in `parts` items.
pub(super) fn keys(pk: &str, sk: &str, parts: usize) -> Vec<Item> {
    (0..parts)
        .map(|i| {
            let sk = if i == 0 {
                sk.to_owned()
            } else {
                part_sk(sk, i)
            };
            key(pk.to_owned(), sk)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_strings_at_char_boundaries() {
        let body = "é".repeat(PART_BYTES); // two bytes each
        let pieces = split_str(&body);
        assert_eq!(pieces.len(), 2);
        let joined: String = pieces.iter().map(|p| p.as_s().unwrap().as_str()).collect();
        assert_eq!(joined, body);
        assert_eq!(split_str("").len(), 1);
    }

    #[test]
    fn splits_lists_by_size() {
        let big = AttributeValue::S("x".repeat(PART_BYTES / 2));
        let lists = split_list(vec![big.clone(), big.clone(), big]);
        assert_eq!(lists.len(), 2);
        assert_eq!(split_list(Vec::new()).len(), 1);
    }

    #[test]
    fn first_item_carries_the_count() {
        let pieces = vec![AttributeValue::S("a".into()), AttributeValue::S("b".into())];
        let items = items("pk", "c", &Item::new(), Item::new(), "plan", pieces);
        assert_eq!(items[0][attr::PARTS], n(2));
        assert_eq!(items[1][attr::SK], AttributeValue::S("c#1".into()));
        assert_eq!(keys("pk", "c", 2)[1], key("pk".into(), "c#1".into()));
    }
}
