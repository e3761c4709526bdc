//! Which members of a group are alive, judged as the leader judges them (DESIGN §3):
//! by heartbeat counters seen to move against this process's own clock, never by
//! comparing another machine's wall clock.
//!
//! The member items are read twice, `window` apart. A member is alive when its
//! (`incarnation`, `heartbeat`, `last_update`) changed in between — `last_update` counts
//! so that Go-client members, which keep no counter, are judged too — or when it first
//! appears in the second read (it just joined). A member whose item disappeared left.
//! The window must be longer than the members' sync interval (500 ms by default).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use kinesumer::store::{DynamoStore, LockItem, MemberItem, Owner, StateStore};

/// A member item and whether the member is alive.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The item as read the second time.
    pub(crate) item: MemberItem,
    /// Its heartbeat moved within the window.
    pub(crate) alive: bool,
}

impl Member {
    /// The lease owner this incarnation writes (`None` for a Go-client item).
    pub(crate) fn owner(&self) -> Option<Owner> {
        self.item.incarnation.as_ref().map(|token| Owner {
            client_id: self.item.client_id.clone(),
            token: token.clone(),
        })
    }
}

/// The group as observed: its members and the leader lock.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    /// Every member item, sorted by client id.
    pub(crate) members: Vec<Member>,
    /// The leader lock, read after the second member read.
    pub(crate) lock: Option<LockItem>,
}

impl Group {
    /// The leader: the lock's owner, when it is a member's current incarnation.
    pub(crate) fn leader(&self) -> Option<&Owner> {
        let owner = self.lock.as_ref()?.owner.as_ref()?;
        self.members
            .iter()
            .any(|m| m.owner().as_ref() == Some(owner))
            .then_some(owner)
    }

    /// The owners of the members alive.
    pub(crate) fn alive_owners(&self) -> Vec<Owner> {
        self.members
            .iter()
            .filter(|m| m.alive)
            .filter_map(Member::owner)
            .collect()
    }
}

/// Observes the group over `window`.
///
/// # Errors
///
/// A state-store read failed.
pub(crate) async fn observe(store: &DynamoStore, window: Duration) -> anyhow::Result<Group> {
    let first = store.members().await.context("reading the members")?;
    tokio::time::sleep(window).await;
    let second = store.members().await.context("reading the members")?;
    let lock = store.read_lock().await.context("reading the leader lock")?;
    Ok(Group {
        members: judge(first, second),
        lock,
    })
}

/// The members of the second read, each judged against the first.
fn judge(first: Vec<MemberItem>, second: Vec<MemberItem>) -> Vec<Member> {
    let before: BTreeMap<String, MemberItem> = first
        .into_iter()
        .map(|m| (m.client_id.clone(), m))
        .collect();
    let mut members: Vec<Member> = second
        .into_iter()
        .map(|item| {
            let alive = before.get(&item.client_id).is_none_or(|old| {
                (&old.incarnation, old.heartbeat, old.last_update)
                    != (&item.incarnation, item.heartbeat, item.last_update)
            });
            Member { item, alive }
        })
        .collect();
    members.sort_by(|a, b| a.item.client_id.cmp(&b.item.client_id));
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, token: &str, heartbeat: u64) -> MemberItem {
        MemberItem {
            client_id: id.into(),
            incarnation: Some(token.into()),
            heartbeat,
            streams: vec!["s".into()],
            last_update: None,
            load: None,
        }
    }

    #[test]
    fn a_moving_counter_a_new_token_or_a_new_member_is_alive() {
        let first = vec![item("a", "t", 1), item("b", "t", 5), item("c", "t", 7)];
        let second = vec![
            item("d", "t", 0),
            item("c", "u", 0),
            item("b", "t", 5),
            item("a", "t", 2),
        ];
        let judged: Vec<(String, bool)> = judge(first, second)
            .into_iter()
            .map(|m| (m.item.client_id, m.alive))
            .collect();
        let want = [("a", true), ("b", false), ("c", true), ("d", true)];
        assert_eq!(
            judged,
            want.map(|(id, alive)| (id.to_owned(), alive)).to_vec()
        );
    }
}
