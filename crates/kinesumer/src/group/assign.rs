//! Assignment (stub).
#![allow(missing_docs, unused)]
use std::collections::{BTreeMap, BTreeSet};
use crate::store::ShardInfo;
pub struct AssignInput {
    pub members: BTreeMap<String, BTreeSet<String>>,
    pub shards: BTreeMap<String, BTreeMap<String, Option<String>>>,
}
pub type Assignment = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;
pub fn assign(input: &AssignInput) -> Assignment { todo!() }
pub fn eligible(shards: &[ShardInfo], finished: &BTreeSet<String>) -> BTreeSet<String> { todo!() }
