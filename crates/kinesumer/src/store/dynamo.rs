//! The DynamoDB state store, on the Go client's table schema (DESIGN §2–§3).
//!
//! Every request is one SDK call with the condition the protocol needs, every attribute
//! and literal named through expression placeholders, and every read strongly
//! consistent. Each SDK call is counted once in the store's [`RequestCounter`] (a paged
//! Query counts each page) and logged at debug level by operation and item — never its
//! payload.
//!
//! # Examples
//!
//! ```no_run
//! # async fn example() -> Result<(), kinesumer::store::StoreError> {
//! use kinesumer::store::{create_table, DynamoStore, TableBilling};
//!
//! let conf = aws_config::load_from_env().await;
//! let client = aws_sdk_dynamodb::Client::new(&conf);
//! create_table(&client, "kinesumer", TableBilling::OnDemand).await?;
//! let store = DynamoStore::new(client, "kinesumer", "my-app");
//! store.check_table().await?;
//! # Ok(()) }
//! ```

mod admin;
mod codec;
mod error;
mod expr;
mod split;
mod table;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Get, KeysAndAttributes, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactGetItem, TransactWriteItem,
};

use self::codec::{attr, key, n, now, s, start_value, string_list, Attrs, Item, Keys, PlanBody};
use self::expr::{with_expr, Expr};
use super::{
    CheckpointWrite, HeartbeatOutcome, LeaseDeletion, LeaseItem, LeaseSeen, LoadReport, LockItem,
    MemberItem, Operation, Owner, PlanItem, Registration, RequestCounter, RequestCounts,
    ShardCache, StateStore, StoreError, StoredStart,
};
use crate::seq::Position;

pub use self::admin::AppItems;
pub use self::table::{create_table, TableBilling, LSI_NAME};

/// How often a batch read retries keys DynamoDB returned unprocessed before giving up.
const UNPROCESSED_RETRIES: u32 = 8;

/// How often a split body is re-read when it changed between the first read and the read
/// of its parts.
const SPLIT_READ_ATTEMPTS: usize = 3;

/// The name of the leader lock in errors.
const LOCK_NAME: &str = "leader lock";

/// Sends a request on one key (UpdateItem, DeleteItem) with the table, key, return
/// values and `Expr`, counts it, maps its error, and yields the returned attributes.
macro_rules! send_keyed {
    ($store:ident, $req:expr, $op:expr, $name:expr, $key:expr, $e:expr, $ret:expr) => {{
        $store.begin($op, $name);
        let req = $req
            .table_name(&$store.table)
            .set_key(Some($key))
            .return_values($ret);
        let out = with_expr!(req, $e)
            .send()
            .await
            .map_err($store.fail($op, $name))?;
        out.attributes.unwrap_or_default()
    }};
}

/// A [`StateStore`] on one DynamoDB table, bound to one application.
///
/// Cloning is cheap and shares the client and the request counts.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    app: String,
    keys: Keys,
    counter: Arc<RequestCounter>,
}

impl DynamoStore {
    /// A store on `table` for `app`. Sends nothing; see [`DynamoStore::check_table`].
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        app: impl Into<String>,
    ) -> Self {
        let app = app.into();
        Self {
            client,
            table: table.into(),
            keys: Keys::new(&app),
            app,
            counter: Arc::default(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Checks that the table exists and has the key `pk` (S, HASH), `sk` (S, RANGE).
    ///
    /// # Errors
    ///
    /// [`StoreError::TableNotFound`] (its message says how to create the table),
    /// [`StoreError::TableSchema`] naming what is wrong, or a request failure.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn check_table(&self) -> Result<(), StoreError> {
        self.counter.count(Operation::DescribeTable);
        let desc = table::describe(&self.client, &self.table).await?;
        table::check_schema(&self.table, &desc)
    }

    /// Counts and logs one SDK call.
    fn begin(&self, op: Operation, item: &str) {
        self.counter.count(op);
        tracing::debug!(table = %self.table, op = op.name(), item, "state-store request");
    }

    /// Maps an SDK error of a request on `item`.
    fn fail<E, R>(
        &self,
        op: Operation,
        item: &str,
    ) -> impl FnOnce(SdkError<E, R>) -> StoreError + '_
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        let item = item.to_owned();
        move |e| error::classify(&e, op, &self.table, &item)
    }

    async fn get(&self, op: Operation, name: &str, key: Item) -> Result<Option<Item>, StoreError> {
        self.begin(op, name);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(self.fail(op, name))?;
        Ok(out.item)
    }

    /// An UpdateItem with `e`'s update, names, values and condition.
    async fn update(
        &self,
        op: Operation,
        name: &str,
        key: Item,
        e: &Expr,
        ret: ReturnValue,
    ) -> Result<Item, StoreError> {
        let req = self.client.update_item().set_update_expression(e.update());
        Ok(send_keyed!(self, req, op, name, key, e, ret))
    }

    /// A DeleteItem with `e`'s condition.
    async fn delete(
        &self,
        op: Operation,
        name: &str,
        key: Item,
        e: &Expr,
        ret: ReturnValue,
    ) -> Result<Item, StoreError> {
        let req = self.client.delete_item();
        Ok(send_keyed!(self, req, op, name, key, e, ret))
    }

    /// Writes the items of one body: one PutItem, or one TransactWriteItems (every item
    /// under the same condition) when it is split.
    async fn put_all(
        &self,
        op: Operation,
        name: &str,
        mut items: Vec<Item>,
        e: &Expr,
    ) -> Result<(), StoreError> {
        let bytes: usize = items
            .iter()
            .flat_map(|i| i.iter().map(|(k, v)| k.len() + split::size_of(v)))
            .sum();
        if bytes > split::MAX_BODY_BYTES {
            return Err(StoreError::TooLarge {
                item: name.to_owned(),
                bytes,
            });
        }
        self.begin(op, name);
        if items.len() == 1 {
            let req = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(items.pop());
            with_expr!(req, e)
                .send()
                .await
                .map_err(self.fail(op, name))?;
            return Ok(());
        }
        let puts = items
            .into_iter()
            .map(|item| {
                let put = Put::builder().table_name(&self.table).set_item(Some(item));
                let put = with_expr!(put, e).build().map_err(|e| invalid(op, e))?;
                Ok(TransactWriteItem::builder().put(put).build())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(puts))
            .send()
            .await;
        result.map(drop).map_err(|err| {
            let refused = matches!(
                err.as_service_error(),
                Some(TransactWriteItemsError::TransactionCanceledException(t))
                    if t.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))
            );
            if refused {
                StoreError::ConditionFailed {
                    item: name.to_owned(),
                }
            } else {
                error::classify(&err, op, &self.table, name)
            }
        })
    }

    /// Every item of one partition: a strongly consistent Query, page by page.
    async fn query(&self, op: Operation, pk: String) -> Result<Vec<Item>, StoreError> {
        let mut e = Expr::default();
        let cond = e.eq(attr::PK, s(pk.as_str()));
        let mut items = Vec::new();
        let mut start = None;
        loop {
            self.begin(op, &pk);
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(cond.as_str())
                .set_expression_attribute_names(e.names())
                .set_expression_attribute_values(e.values())
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(self.fail(op, &pk))?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }

    /// A strongly consistent BatchGetItem. Keys returned unprocessed are asked again
    /// (with a short backoff) before anything is returned: a key missing from the
    /// result then means the item does not exist.
    async fn batch_get(&self, op: Operation, keys: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        let mut pending = keys;
        let mut found = Vec::new();
        for attempt in 0..=UNPROCESSED_RETRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(10 << attempt.min(6))).await;
            }
            self.begin(op, "batch");
            let request = KeysAndAttributes::builder()
                .set_keys(Some(pending))
                .consistent_read(true)
                .build()
                .map_err(|e| invalid(op, e))?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(self.fail(op, "batch"))?;
            found.extend(
                out.responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default(),
            );
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.table))
                .map(|k| k.keys)
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(found);
            }
        }
        Err(StoreError::Throttled { op })
    }

    /// Reads the rest of a body split over several items, given its first item. All
    /// parts are read in one TransactGetItems, so they come from one write; when the
    /// body changed since `first` was read, it is read again. `None` when it was deleted
    /// meanwhile.
    async fn read_split(
        &self,
        op: Operation,
        name: &str,
        pk: &str,
        sk: &str,
        first: Item,
    ) -> Result<Option<Vec<Item>>, StoreError> {
        let mut parts = Attrs::new(&first, name).parts()?;
        if parts == 1 {
            return Ok(Some(vec![first]));
        }
        for _ in 0..SPLIT_READ_ATTEMPTS {
            self.begin(op, name);
            let gets = split::keys(pk, sk, parts)
                .into_iter()
                .map(|k| {
                    let get = Get::builder().table_name(&self.table).set_key(Some(k));
                    Ok(TransactGetItem::builder()
                        .get(get.build().map_err(|e| invalid(op, e))?)
                        .build())
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let out = self
                .client
                .transact_get_items()
                .set_transact_items(Some(gets))
                .send()
                .await
                .map_err(self.fail(op, name))?;
            let items: Vec<Option<Item>> = out
                .responses
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.item.filter(|i| !i.is_empty()))
                .collect();
            let Some(Some(head)) = items.first() else {
                return Ok(None);
            };
            let now_parts = Attrs::new(head, name).parts()?;
            if now_parts != parts {
                parts = now_parts;
                continue;
            }
            return items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    item.ok_or_else(|| StoreError::Malformed {
                        item: name.to_owned(),
                        reason: format!("part {i} of {parts} is missing"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some);
        }
        Err(StoreError::Unavailable {
            op,
            message: format!("{name} kept changing while it was read"),
        })
    }

    /// Reads a plan from its first item (and its parts).
    async fn plan(
        &self,
        op: Operation,
        client_id: &str,
        first: Item,
    ) -> Result<Option<PlanItem>, StoreError> {
        let name = plan_name(client_id);
        let pk = self.keys.plan_pk();
        let Some(items) = self.read_split(op, &name, &pk, client_id, first).await? else {
            return Ok(None);
        };
        let mut body = String::new();
        for item in &items {
            body.push_str(Attrs::new(item, &name).required_s(attr::PLAN)?);
        }
        let a = Attrs::new(&items[0], &name);
        let PlanBody { streams, release } =
            serde_json::from_str(&body).map_err(|e| a.malformed(attr::PLAN, e))?;
        Ok(Some(PlanItem {
            client_id: client_id.to_owned(),
            term: a.required_n(attr::TERM)?,
            version: a.n(attr::PLAN_VERSION)?.unwrap_or(0),
            token: a.required_s(attr::TOKEN)?.to_owned(),
            streams,
            release,
        }))
    }

    /// Updates a lease item.
    async fn update_lease(
        &self,
        op: Operation,
        stream: &str,
        shard_id: &str,
        e: &Expr,
        ret: ReturnValue,
    ) -> Result<Item, StoreError> {
        let key = self.lease_key(stream, shard_id);
        self.update(op, &lease_name(stream, shard_id), key, e, ret)
            .await
    }

    /// Updates the leader lock.
    async fn update_lock(&self, op: Operation, e: &Expr) -> Result<Item, StoreError> {
        self.update(op, LOCK_NAME, self.keys.lock(), e, ReturnValue::None)
            .await
    }

    /// Deletes a member item on `clause`, or when it is already gone.
    async fn delete_member(
        &self,
        op: Operation,
        client_id: &str,
        mut e: Expr,
        clause: String,
    ) -> Result<(), StoreError> {
        gone_or(&mut e, clause);
        let key = self.member_key(client_id);
        self.delete(op, &member_name(client_id), key, &e, ReturnValue::None)
            .await
            .map(drop)
    }

    fn member_key(&self, client_id: &str) -> Item {
        key(self.keys.member_pk(), client_id.to_owned())
    }

    fn lease_key(&self, stream: &str, shard_id: &str) -> Item {
        key(self.keys.lease_pk(stream), shard_id.to_owned())
    }
}

fn invalid(op: Operation, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        op,
        message: format!("invalid request: {e}"),
    }
}

fn member_name(client_id: &str) -> String {
    format!("member {client_id}")
}

fn plan_name(client_id: &str) -> String {
    format!("plan {client_id}")
}

fn lease_name(stream: &str, shard_id: &str) -> String {
    format!("lease {stream}/{shard_id}")
}

fn owner_value(o: &Owner) -> AttributeValue {
    s(o.to_string())
}

/// The fence of the lock holder's writes: `owner = me AND term = :term`.
fn lock_fence(e: &mut Expr, me: &Owner, term: u64) {
    let c = format!(
        "{} AND {}",
        e.eq(attr::OWNER, owner_value(me)),
        e.eq(attr::TERM, n(term))
    );
    e.cond(c);
}

/// The fence of a lease owner's writes: `owner = me AND lease_counter = :counter`.
fn lease_fence(e: &mut Expr, me: &Owner, counter: u64) {
    let c = format!(
        "{} AND {}",
        e.eq(attr::OWNER, owner_value(me)),
        e.eq(attr::LEASE_COUNTER, n(counter))
    );
    e.cond(c);
}

/// `attribute_not_exists(pk) OR <clause>`: a delete of an item already gone succeeds.
fn gone_or(e: &mut Expr, clause: String) {
    let c = format!("{} OR {clause}", e.missing(attr::PK));
    e.cond(c);
}

/// The condition of plan writes and deletes: no plan, or one of a term not above ours.
/// `(term, version) < (:term, :version)` on a plan item, or no item: a deposed leader's
/// write, and a write that landed after a newer one of the same term, are refused.
fn plan_fence(e: &mut Expr, term: u64, version: u64) {
    let (term_name, term) = (e.name(attr::TERM), e.value(n(term)));
    let c = format!(
        "{} OR {term_name} < {term} OR ({term_name} = {term} AND ({} OR {} < {}))",
        e.missing(attr::SK),
        e.missing(attr::PLAN_VERSION),
        e.name(attr::PLAN_VERSION),
        e.value(n(version))
    );
    e.cond(c);
}

impl crate::sealed::Sealed for DynamoStore {}

/// Sets a member's load report: its capacity, limits (removed when unset) and shard loads.
fn set_report(e: &mut Expr, load: &LoadReport) {
    e.set(attr::CAPACITY, n(load.capacity))
        .set_or_remove(attr::MAX_SHARDS, load.limits.max_shards.map(n))
        .set_or_remove(
            attr::MAX_BYTES_PER_SEC,
            load.limits.max_bytes_per_sec.map(n),
        )
        .set(attr::LOAD, s(load.shards_json()));
}

#[async_trait]
impl StateStore for DynamoStore {
    fn app(&self) -> &str {
        &self.app
    }

    fn requests(&self) -> RequestCounts {
        self.counter.snapshot()
    }

    async fn register(
        &self,
        client_id: &str,
        token: &str,
        streams: &[String],
        how: &Registration,
        load: Option<&LoadReport>,
    ) -> Result<(), StoreError> {
        let mut e = Expr::default();
        e.set(attr::INCARNATION, s(token))
            .set(attr::STREAMS, string_list(streams))
            .set(attr::VERSION, s(env!("CARGO_PKG_VERSION")))
            .set(attr::LAST_UPDATE, now());
        match how {
            // Every attribute of a member item is set or removed: an update without a
            // condition replaces it as a put would. The last process's load report goes:
            // its capacity and limits are not this one's, which its heartbeats report.
            Registration::Start => {
                e.set(attr::HEARTBEAT, n(0));
                if load.is_none() {
                    for report in [
                        attr::CAPACITY,
                        attr::LOAD,
                        attr::MAX_SHARDS,
                        attr::MAX_BYTES_PER_SEC,
                    ] {
                        e.remove(report);
                    }
                }
            }
            Registration::Rejoin { old_token } => {
                e.increment(attr::HEARTBEAT);
                let c = format!(
                    "{} OR {} IN ({}, {})",
                    e.missing(attr::PK),
                    e.name(attr::INCARNATION),
                    e.value(s(old_token.as_str())),
                    e.value(s(token))
                );
                e.cond(c);
            }
        }
        if let Some(load) = load {
            set_report(&mut e, load);
        }
        let key = self.member_key(client_id);
        self.update(
            Operation::Register,
            &member_name(client_id),
            key,
            &e,
            ReturnValue::None,
        )
        .await
        .map(drop)
    }

    async fn heartbeat(
        &self,
        client_id: &str,
        token: &str,
        streams: &[String],
        load: Option<&LoadReport>,
    ) -> Result<HeartbeatOutcome, StoreError> {
        let op = Operation::Heartbeat;
        let name = member_name(client_id);
        let mut e = Expr::default();
        e.increment(attr::HEARTBEAT)
            .set(attr::STREAMS, string_list(streams))
            .set(attr::LAST_UPDATE, now());
        if let Some(load) = load {
            set_report(&mut e, load);
        }
        let c = e.eq(attr::INCARNATION, s(token));
        e.cond(c);
        self.begin(op, &name);
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.member_key(client_id)))
            .set_update_expression(e.update())
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match with_expr!(req, &e).send().await {
            Ok(out) => {
                let new = out.attributes.unwrap_or_default();
                Ok(HeartbeatOutcome::Beat(
                    Attrs::new(&new, &name).required_n(attr::HEARTBEAT)?,
                ))
            }
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(refused)) => {
                    match refused.item().filter(|old| !old.is_empty()) {
                        None => Ok(HeartbeatOutcome::Missing),
                        Some(old) => Ok(HeartbeatOutcome::Superseded(
                            Attrs::new(old, &name)
                                .s(attr::INCARNATION)?
                                .map(str::to_owned),
                        )),
                    }
                }
                _ => Err(error::classify(&err, op, &self.table, &name)),
            },
        }
    }

    async fn leave(&self, client_id: &str, token: &str) -> Result<(), StoreError> {
        let mut e = Expr::default();
        let c = e.eq(attr::INCARNATION, s(token));
        self.delete_member(Operation::Leave, client_id, e, c).await
    }

    async fn read_lock_and_plan(
        &self,
        client_id: &str,
    ) -> Result<(Option<LockItem>, Option<PlanItem>), StoreError> {
        let op = Operation::ReadLockAndPlan;
        let lock_key = self.keys.lock();
        let plan_pk = self.keys.plan_pk();
        let items = self
            .batch_get(
                op,
                vec![lock_key.clone(), key(plan_pk.clone(), client_id.to_owned())],
            )
            .await?;
        let (mut lock, mut plan) = (None, None);
        for item in items {
            if item.get(attr::PK) == lock_key.get(attr::PK) {
                lock = Some(codec::lock(&item)?);
            } else if item.get(attr::PK) == Some(&s(plan_pk.as_str())) {
                plan = self.plan(op, client_id, item).await?;
            }
        }
        Ok((lock, plan))
    }

    async fn read_lock(&self) -> Result<Option<LockItem>, StoreError> {
        let item = self
            .get(Operation::ReadLock, LOCK_NAME, self.keys.lock())
            .await?;
        item.as_ref().map(codec::lock).transpose()
    }

    async fn take_lock(&self, me: &Owner, seen: Option<&LockItem>) -> Result<LockItem, StoreError> {
        let mut e = Expr::default();
        let old = seen.cloned().unwrap_or_default();
        let new = LockItem {
            owner: Some(me.clone()),
            term: old.term + 1,
            renewals: old.renewals + 1,
        };
        e.set(attr::OWNER, owner_value(me))
            .set(attr::TERM, n(new.term))
            .set(attr::RENEWALS, n(new.renewals));
        let c = match seen {
            None => e.missing(attr::PK),
            Some(l) => format!(
                "{} AND {} AND {}",
                e.eq_or_missing(attr::OWNER, l.owner.as_ref().map(owner_value)),
                e.eq(attr::TERM, n(l.term)),
                e.eq(attr::RENEWALS, n(l.renewals))
            ),
        };
        e.cond(c);
        self.update_lock(Operation::TakeLock, &e).await?;
        Ok(new)
    }

    async fn renew_lock(&self, me: &Owner, term: u64) -> Result<(), StoreError> {
        let mut e = Expr::default();
        e.increment(attr::RENEWALS);
        lock_fence(&mut e, me, term);
        self.update_lock(Operation::RenewLock, &e).await.map(drop)
    }

    async fn release_lock(&self, me: &Owner, term: u64) -> Result<(), StoreError> {
        let mut e = Expr::default();
        e.remove(attr::OWNER).increment(attr::TERM);
        lock_fence(&mut e, me, term);
        self.update_lock(Operation::ReleaseLock, &e).await.map(drop)
    }

    async fn members(&self) -> Result<Vec<MemberItem>, StoreError> {
        let items = self
            .query(Operation::Members, self.keys.member_pk())
            .await?;
        items.iter().map(codec::member).collect()
    }

    async fn leases(&self, stream: &str) -> Result<Vec<LeaseItem>, StoreError> {
        let items = self
            .query(Operation::Leases, self.keys.lease_pk(stream))
            .await?;
        items.iter().map(|i| codec::lease(stream, i)).collect()
    }

    async fn lease(&self, stream: &str, shard_id: &str) -> Result<Option<LeaseItem>, StoreError> {
        let name = lease_name(stream, shard_id);
        let item = self
            .get(Operation::Lease, &name, self.lease_key(stream, shard_id))
            .await?;
        item.map(|i| codec::lease(stream, &i)).transpose()
    }

    async fn take_lease(
        &self,
        stream: &str,
        shard_id: &str,
        me: &Owner,
        seen: &LeaseSeen,
        start: &StoredStart,
    ) -> Result<LeaseItem, StoreError> {
        let mut e = Expr::default();
        e.set(attr::OWNER, owner_value(me))
            .increment(attr::LEASE_COUNTER)
            .set_if_missing(attr::START, start_value(start))
            .set(attr::LAST_UPDATE, now());
        let c = if seen.exists {
            // What the taker read — never the checkpoint — and not finished.
            format!(
                "attribute_exists({}) AND {} AND {} AND ({} OR {})",
                e.name(attr::PK),
                e.eq_or_missing(attr::OWNER, seen.owner.as_ref().map(owner_value)),
                e.eq_or_missing(attr::LEASE_COUNTER, seen.lease_counter.map(n)),
                e.missing(attr::SHARD_END),
                e.eq(attr::SHARD_END, AttributeValue::Bool(false))
            )
        } else {
            e.missing(attr::PK)
        };
        e.cond(c);
        let new = self
            .update_lease(
                Operation::TakeLease,
                stream,
                shard_id,
                &e,
                ReturnValue::AllNew,
            )
            .await?;
        codec::lease(stream, &new)
    }

    async fn release_lease(
        &self,
        stream: &str,
        shard_id: &str,
        me: &Owner,
        counter: u64,
    ) -> Result<(), StoreError> {
        let mut e = Expr::default();
        e.remove(attr::OWNER)
            .increment(attr::LEASE_COUNTER)
            .set(attr::LAST_UPDATE, now());
        lease_fence(&mut e, me, counter);
        self.update_lease(
            Operation::ReleaseLease,
            stream,
            shard_id,
            &e,
            ReturnValue::None,
        )
        .await
        .map(drop)
    }

    async fn checkpoint(
        &self,
        stream: &str,
        shard_id: &str,
        me: &Owner,
        counter: u64,
        previous: Option<&Position>,
        write: &CheckpointWrite,
    ) -> Result<(), StoreError> {
        let mut e = Expr::default();
        lease_fence(&mut e, me, counter);
        let c = match previous {
            None => format!(
                "{} OR {}",
                e.missing(attr::SEQUENCE_NUMBER),
                e.eq(attr::SEQUENCE_NUMBER, s(""))
            ),
            Some(p) => format!(
                "{} AND {}",
                e.eq(attr::SEQUENCE_NUMBER, s(p.sequence.as_str())),
                e.eq_or_missing(attr::SUB_SEQUENCE_NUMBER, p.sub_sequence.map(n))
            ),
        };
        e.cond(c);
        if let Some(p) = &write.position {
            e.set(attr::SEQUENCE_NUMBER, s(p.sequence.as_str()))
                .set_or_remove(attr::SUB_SEQUENCE_NUMBER, p.sub_sequence.map(n));
        }
        if let Some(m) = write.millis_behind {
            e.set(attr::MILLIS_BEHIND, n(m));
        }
        if write.shard_end {
            e.set(attr::SHARD_END, AttributeValue::Bool(true));
        }
        e.set(attr::LAST_UPDATE, now());
        self.update_lease(
            Operation::Checkpoint,
            stream,
            shard_id,
            &e,
            ReturnValue::None,
        )
        .await
        .map(drop)
    }

    async fn delete_lease(
        &self,
        stream: &str,
        shard_id: &str,
        which: LeaseDeletion,
    ) -> Result<(), StoreError> {
        let mut e = Expr::default();
        if which == LeaseDeletion::Tombstone {
            let c = e.eq(attr::SHARD_END, AttributeValue::Bool(true));
            gone_or(&mut e, c);
        }
        let (name, key) = (
            lease_name(stream, shard_id),
            self.lease_key(stream, shard_id),
        );
        self.delete(Operation::DeleteLease, &name, key, &e, ReturnValue::None)
            .await
            .map(drop)
    }

    async fn set_checkpoint(
        &self,
        stream: &str,
        shard_id: &str,
        position: Option<&Position>,
        start: Option<&StoredStart>,
        finished: bool,
        force: bool,
    ) -> Result<(), StoreError> {
        let mut e = Expr::default();
        e.set_or_remove(
            attr::SEQUENCE_NUMBER,
            position.map(|p| s(p.sequence.as_str())),
        )
        .set_or_remove(
            attr::SUB_SEQUENCE_NUMBER,
            position.and_then(|p| p.sub_sequence).map(n),
        )
        .set_or_remove(attr::START, start.map(start_value))
        .set_or_remove(
            attr::SHARD_END,
            finished.then_some(AttributeValue::Bool(true)),
        )
        .remove(attr::MILLIS_BEHIND)
        .set(attr::LAST_UPDATE, now());
        if !force {
            let c = e.missing(attr::OWNER);
            e.cond(c);
        }
        self.update_lease(
            Operation::SetCheckpoint,
            stream,
            shard_id,
            &e,
            ReturnValue::None,
        )
        .await
        .map(drop)
    }

    async fn write_plan(&self, plan: &PlanItem) -> Result<(), StoreError> {
        let name = plan_name(&plan.client_id);
        let body = PlanBody {
            streams: plan.streams.clone(),
            release: plan.release.clone(),
        };
        let json = serde_json::to_string(&body).map_err(|e| invalid(Operation::WritePlan, e))?;
        let common = Item::from([
            (attr::TERM.to_owned(), n(plan.term)),
            (attr::PLAN_VERSION.to_owned(), n(plan.version)),
            (attr::TOKEN.to_owned(), s(plan.token.as_str())),
            (attr::LAST_UPDATE.to_owned(), now()),
        ]);
        let pk = self.keys.plan_pk();
        let items = split::items(
            &pk,
            &plan.client_id,
            &common,
            Item::new(),
            attr::PLAN,
            split::split_str(&json),
        );
        let mut e = Expr::default();
        plan_fence(&mut e, plan.term, plan.version);
        self.put_all(Operation::WritePlan, &name, items, &e).await
    }

    async fn delete_plan(
        &self,
        client_id: &str,
        term: u64,
        version: u64,
    ) -> Result<(), StoreError> {
        let op = Operation::DeletePlan;
        let name = plan_name(client_id);
        let mut e = Expr::default();
        plan_fence(&mut e, term, version);
        let pk = self.keys.plan_pk();
        let old = self
            .delete(
                op,
                &name,
                key(pk.clone(), client_id.to_owned()),
                &e,
                ReturnValue::AllOld,
            )
            .await?;
        // The parts of a split plan, under the same condition.
        let parts = Attrs::new(&old, &name).parts()?;
        for k in split::keys(&pk, client_id, parts).into_iter().skip(1) {
            self.delete(op, &name, k, &e, ReturnValue::None).await?;
        }
        Ok(())
    }

    async fn prune(
        &self,
        client_id: &str,
        heartbeat: u64,
        incarnation: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut e = Expr::default();
        let mut beat = e.eq(attr::HEARTBEAT, n(heartbeat));
        if heartbeat == 0 {
            // A Go-client member item has no counter: it reads as 0.
            beat = format!("({beat} OR {})", e.missing(attr::HEARTBEAT));
        }
        let token = match incarnation {
            Some(t) => e.eq(attr::INCARNATION, s(t)),
            // A Go-client member item has no incarnation.
            None => e.missing(attr::INCARNATION),
        };
        let c = format!("{beat} AND {token}");
        self.delete_member(Operation::Prune, client_id, e, c).await
    }

    async fn shard_cache(&self, stream: &str) -> Result<Option<ShardCache>, StoreError> {
        let op = Operation::ShardCache;
        let name = format!("shard cache {stream}");
        let pk = self.keys.shard_cache_pk();
        let Some(first) = self
            .get(op, &name, key(pk.clone(), stream.to_owned()))
            .await?
        else {
            return Ok(None);
        };
        let Some(items) = self.read_split(op, &name, &pk, stream, first).await? else {
            return Ok(None);
        };
        let mut cache = codec::shard_cache(stream, &Attrs::new(&items[0], &name))?;
        for part in &items[1..] {
            cache
                .shards
                .extend(codec::shards(&Attrs::new(part, &name))?);
        }
        Ok(Some(cache))
    }

    async fn put_shard_cache(&self, cache: &ShardCache) -> Result<(), StoreError> {
        let name = format!("shard cache {}", cache.stream);
        let mut first = Item::from([(attr::LAST_UPDATE.to_owned(), now())]);
        if let Some(t) = cache.stream_created {
            first.insert(attr::STREAM_CREATED.to_owned(), codec::time(t));
        }
        let shards = cache.shards.iter().map(codec::shard_value).collect();
        let items = split::items(
            &self.keys.shard_cache_pk(),
            &cache.stream,
            &Item::new(),
            first,
            attr::SHARDS,
            split::split_list(shards),
        );
        self.put_all(Operation::PutShardCache, &name, items, &Expr::default())
            .await
    }
}
