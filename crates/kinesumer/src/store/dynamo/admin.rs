//! The operator's view of a whole table: which apps keep items in it, and removing a
//! retired app's items. Neither is part of the group protocol: both read or write every
//! item of an app, with a Scan of the table's keys.

use std::collections::{BTreeMap, BTreeSet};

use super::codec::{attr, Item};
use super::DynamoStore;
use crate::store::{Operation, StoreError};

/// What one app keeps in a state-store table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppItems {
    /// The app.
    pub app: String,
    /// Its member items (alive or not).
    pub members: usize,
    /// The streams it keeps leases of.
    pub streams: BTreeSet<String>,
    /// All its items.
    pub items: usize,
}

/// Whose item a partition key is: `(app, stream of a lease, member item)`. Apps and
/// streams cannot contain `#`, so the key splits unambiguously.
fn owner_of(pk: &str) -> Option<(&str, Option<&str>, bool)> {
    let (kind, rest) = pk.split_once('#')?;
    match kind {
        "client" => Some((rest, None, true)),
        "leader" | "plan" | "shard_cache" => Some((rest, None, false)),
        "check_point" => {
            let (app, stream) = rest.split_once('#')?;
            Some((app, Some(stream), false))
        }
        _ => None,
    }
}

impl DynamoStore {
    /// Every key of the table, by a paged Scan (read units for the whole table: an
    /// operator's command, not something members do).
    async fn keys(&self, op: Operation) -> Result<Vec<Item>, StoreError> {
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            self.begin(op, "every key");
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .projection_expression("#pk, #sk")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#sk", attr::SK)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(self.fail(op, "every key"))?;
            keys.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(keys),
            }
        }
    }

    /// The apps that keep items in this store's table, with their member items and
    /// streams, sorted by app.
    ///
    /// # Errors
    ///
    /// The Scan failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn apps(&self) -> Result<Vec<AppItems>, StoreError> {
        let mut apps: BTreeMap<String, AppItems> = BTreeMap::new();
        for key in self.keys(Operation::ScanApps).await? {
            let pk = key.get(attr::PK).and_then(|v| v.as_s().ok());
            let Some((app, stream, member)) = pk.and_then(|pk| owner_of(pk)) else {
                continue;
            };
            let entry = apps.entry(app.to_owned()).or_insert_with(|| AppItems {
                app: app.to_owned(),
                ..AppItems::default()
            });
            entry.items += 1;
            entry.members += usize::from(member);
            entry.streams.extend(stream.map(str::to_owned));
        }
        Ok(apps.into_values().collect())
    }

    /// Deletes every item of this store's app: members, lock, plans, shard caches,
    /// leases and checkpoints. Returns how many it deleted. The caller makes sure no
    /// member runs (`kinesumer group delete` refuses while one is alive).
    ///
    /// # Errors
    ///
    /// A failed Scan or delete; items deleted before it stay deleted.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped part-way, some items are deleted; running it again
    /// deletes the rest.
    pub async fn delete_app_items(&self) -> Result<usize, StoreError> {
        let op = Operation::DeleteApp;
        let mut deleted = 0;
        for key in self.keys(op).await? {
            let pk = key.get(attr::PK).and_then(|v| v.as_s().ok());
            if pk.and_then(|pk| owner_of(pk)).map(|(app, ..)| app) != Some(self.app.as_str()) {
                continue;
            }
            self.begin(op, "an item of the app");
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key))
                .send()
                .await
                .map_err(self.fail(op, "an item of the app"))?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::owner_of;

    #[test]
    fn keys_name_their_app() {
        assert_eq!(owner_of("client#orders"), Some(("orders", None, true)));
        assert_eq!(owner_of("leader#orders"), Some(("orders", None, false)));
        assert_eq!(
            owner_of("check_point#orders#stream-1"),
            Some(("orders", Some("stream-1"), false))
        );
        assert_eq!(owner_of("something-else"), None);
        assert_eq!(owner_of("unknown#orders"), None);
    }
}
