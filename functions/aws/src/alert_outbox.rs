//! Undelivered alerts on the tracking table, each its own item:
//!
//! - `pk` = `ALERT#<alert id>`, `sk` = `ALERT`;
//! - `alert`: the alert as JSON (it never changes after it is raised);
//! - `delivered_to`: the sinks that took it (a string set, absent while none did);
//! - `attempts`: failed delivery attempts;
//! - `due_shard` = `OUTBOX#<n>` ([`OUTBOX_SHARDS`] of them, by a hash of the id) and
//!   `next_check` = the next attempt's time: the items sit in their own partitions of the
//!   table's sparse `due` index, apart from the pushes' and records' `DUE#n` shards. Alerts
//!   are rare (one per problem), but a Region outage raises one per image and destination: at
//!   three times the average rate of 10 million pushes a day to 25 destinations, all failing,
//!   that is 8,700 a second stored and as many deleted once delivered, 271 index writes a
//!   second per shard, under half of a partition's 1,000.
//!   Alerts stored by earlier versions in the one partition `OUTBOX` are still read.
//!
//! The item is put in the same transaction as the state change that raised the alert
//! ([`crate::dynamodb`]), and deleted once every sink took it. It has no TTL: an alert waits
//! until it is delivered, and the `UndeliveredAlerts` alarm says when that takes too long.
//!
//! A due item the claim cannot read (an attribute missing or garbled) is set aside in place:
//! same key, moved to the due index partition [`SET_ASIDE_SHARD`] (`next_check` = when it
//! was set aside) with `set_aside_reason` and `set_aside_from` (its outbox shard), so no
//! claim reads it again and the others go out; the `SetAsideAlerts` alarm counts them. To
//! send it after a repair, set `due_shard` back to `set_aside_from` and `next_check` to a
//! past time; or delete it.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Put, Select};
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};
use replwatch_core::alerts::Alert;
use replwatch_core::outbox::{AlertOutbox, CLAIM_LEASE, Claimed, PendingAlert, SetAsideAlert};
use replwatch_core::store::{StoreError, image_bucket};

use crate::dynamodb::{DUE_INDEX, DynamoExpectationStore, number, timestamp};
use crate::dynamodb_table::{backend, conditional, request_error};

/// Partitions of the due index that pending alerts are spread over.
pub const OUTBOX_SHARDS: u32 = 64;
/// The one partition of pending alerts before they were spread.
const LEGACY_OUTBOX_SHARD: &str = "OUTBOX";
/// The due index partition of pending alerts that could not be read.
pub const SET_ASIDE_SHARD: &str = "OUTBOX_SET_ASIDE";
/// How many outbox shards are read at once.
const SHARD_READS_AT_ONCE: usize = 8;

/// The `due_shard` of the pending alert `id`.
fn outbox_shard(id: &str) -> String {
    format!("OUTBOX#{}", image_bucket(id) % OUTBOX_SHARDS)
}

/// Every partition a pending alert may be in.
fn outbox_shards() -> impl Iterator<Item = String> {
    std::iter::once(LEGACY_OUTBOX_SHARD.to_owned())
        .chain((0..OUTBOX_SHARDS).map(|n| format!("OUTBOX#{n}")))
}

type Item = HashMap<String, AttributeValue>;

fn key(id: &str) -> Item {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(format!("ALERT#{id}"))),
        ("sk".to_owned(), AttributeValue::S("ALERT".to_owned())),
    ])
}

fn corrupt(id: &str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        id: format!("ALERT#{id}"),
        message: message.into(),
    }
}

fn to_item(pending: &PendingAlert) -> Result<Item, StoreError> {
    let id = pending.id();
    let alert = serde_json::to_string(&pending.alert).map_err(|e| corrupt(&id, e.to_string()))?;
    let mut item = key(&id);
    item.insert("alert".to_owned(), AttributeValue::S(alert));
    item.insert("attempts".to_owned(), number(u64::from(pending.attempts)));
    item.insert(
        "due_shard".to_owned(),
        AttributeValue::S(outbox_shard(&pending.id())),
    );
    item.insert(
        "next_check".to_owned(),
        AttributeValue::S(timestamp(pending.next_attempt_at)),
    );
    if !pending.delivered_to.is_empty() {
        item.insert(
            "delivered_to".to_owned(),
            AttributeValue::Ss(pending.delivered_to.iter().cloned().collect()),
        );
    }
    Ok(item)
}

fn from_item(item: &Item) -> Result<PendingAlert, StoreError> {
    let id = match item.get("pk") {
        Some(AttributeValue::S(pk)) => pk.trim_start_matches("ALERT#").to_owned(),
        _ => "<no pk>".to_owned(),
    };
    let Some(AttributeValue::S(alert)) = item.get("alert") else {
        return Err(corrupt(&id, "no alert document"));
    };
    let alert: Alert = serde_json::from_str(alert).map_err(|e| corrupt(&id, e.to_string()))?;
    let attempts = match item.get("attempts") {
        Some(AttributeValue::N(n)) => n
            .parse::<u32>()
            .map_err(|e| corrupt(&id, format!("attempts {n:?}: {e}")))?,
        _ => 0,
    };
    let next_attempt_at = match item.get("next_check") {
        Some(AttributeValue::S(at)) => DateTime::parse_from_rfc3339(at)
            .map_err(|e| corrupt(&id, format!("next_check: {e}")))?
            .with_timezone(&Utc),
        _ => return Err(corrupt(&id, "next_check is missing")),
    };
    let delivered_to = match item.get("delivered_to") {
        Some(AttributeValue::Ss(sinks)) => sinks.iter().cloned().collect(),
        _ => Default::default(),
    };
    Ok(PendingAlert {
        id,
        alert,
        delivered_to,
        attempts,
        next_attempt_at,
    })
}

/// The put of a pending alert, for the transaction that raises it.
pub fn put(table: &str, pending: &PendingAlert) -> Result<Put, StoreError> {
    Put::builder()
        .table_name(table)
        .set_item(Some(to_item(pending)?))
        .build()
        .map_err(|e| request_error("TransactWriteItems", e))
}

impl AlertOutbox for DynamoExpectationStore {
    async fn claim_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Claimed, StoreError> {
        let per_shard =
            i32::try_from(limit.div_ceil(OUTBOX_SHARDS as usize) + 1).unwrap_or(i32::MAX);
        let pages: Vec<Vec<Item>> = stream::iter(outbox_shards())
            .map(|shard| async move {
                self.client()
                    .query()
                    .table_name(self.table())
                    .index_name(DUE_INDEX)
                    .key_condition_expression("due_shard = :shard AND next_check <= :now")
                    .expression_attribute_values(":shard", AttributeValue::S(shard))
                    .expression_attribute_values(":now", AttributeValue::S(timestamp(now)))
                    .limit(per_shard)
                    .send()
                    .await
                    .map(|page| page.items.unwrap_or_default())
                    .map_err(|e| backend("Query(due)", e))
            })
            .buffer_unordered(SHARD_READS_AT_ONCE)
            .try_collect()
            .await?;
        let mut due = Vec::new();
        let mut set_aside = Vec::new();
        for item in pages.iter().flatten() {
            match from_item(item) {
                Ok(pending) => due.push(pending),
                Err(error) => set_aside.extend(self.set_item_aside(item, &error, now).await),
            }
        }
        due.sort_by_key(|p| p.next_attempt_at);
        due.truncate(limit);
        let lease = AttributeValue::S(timestamp(now + CLAIM_LEASE));
        let mut claimed = Vec::new();
        for pending in due {
            // The claim moves the next attempt past the lease, on condition that no one else
            // moved it since the query: the index is read eventually consistent.
            let result = self
                .client()
                .update_item()
                .table_name(self.table())
                .set_key(Some(key(&pending.id())))
                .update_expression("SET next_check = :lease")
                .condition_expression("next_check = :seen")
                .expression_attribute_values(":lease", lease.clone())
                .expression_attribute_values(
                    ":seen",
                    AttributeValue::S(timestamp(pending.next_attempt_at)),
                )
                .send()
                .await;
            if conditional("UpdateItem", result)? {
                claimed.push(pending);
            }
        }
        Ok(Claimed {
            alerts: claimed,
            set_aside,
        })
    }

    async fn delivered(&self, id: &str) -> Result<(), StoreError> {
        self.client()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(key(id)))
            .send()
            .await
            .map_err(|e| backend("DeleteItem", e))?;
        Ok(())
    }

    async fn retry_later(&self, pending: &PendingAlert) -> Result<(), StoreError> {
        // Only over the item itself: one delivered (and deleted) meanwhile stays gone.
        let result = self
            .client()
            .put_item()
            .table_name(self.table())
            .set_item(Some(to_item(pending)?))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        conditional("PutItem", result).map(|_| ())
    }

    async fn undelivered(&self) -> Result<u64, StoreError> {
        let counts: Vec<u64> = stream::iter(outbox_shards())
            .map(|shard| self.count_shard(shard))
            .buffer_unordered(SHARD_READS_AT_ONCE)
            .try_collect()
            .await?;
        Ok(counts.into_iter().sum())
    }

    async fn set_aside(&self) -> Result<u64, StoreError> {
        self.count_shard(SET_ASIDE_SHARD.to_owned()).await
    }
}

impl DynamoExpectationStore {
    /// Moves the unreadable due `item` out of the claims' way (see the module documentation),
    /// unless it changed since it was read. A failure to move it is logged and leaves it where
    /// it is, for the next claim to try again; the other alerts go out either way.
    async fn set_item_aside(
        &self,
        item: &Item,
        error: &StoreError,
        now: DateTime<Utc>,
    ) -> Option<SetAsideAlert> {
        let text = |name: &str| match item.get(name) {
            Some(AttributeValue::S(value)) => Some(value.clone()),
            _ => None,
        };
        let (Some(pk), Some(sk), Some(shard), Some(seen)) = (
            text("pk"),
            text("sk"),
            text("due_shard"),
            text("next_check"),
        ) else {
            tracing::error!(item = ?item.get("pk"), error = %error, "unreadable pending alert without its keys left in place");
            return None;
        };
        let reason = error.to_string();
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .key("pk", AttributeValue::S(pk.clone()))
            .key("sk", AttributeValue::S(sk.clone()))
            .update_expression(
                "SET due_shard = :aside, next_check = :now, set_aside_reason = :reason, \
                 set_aside_from = :shard",
            )
            .condition_expression("due_shard = :shard AND next_check = :seen")
            .expression_attribute_values(":aside", AttributeValue::S(SET_ASIDE_SHARD.to_owned()))
            .expression_attribute_values(":now", AttributeValue::S(timestamp(now)))
            .expression_attribute_values(":reason", AttributeValue::S(reason.clone()))
            .expression_attribute_values(":shard", AttributeValue::S(shard))
            .expression_attribute_values(":seen", AttributeValue::S(seen))
            .send()
            .await;
        let key = format!("{pk} / {sk}");
        match conditional("UpdateItem", result) {
            Ok(true) => {
                tracing::error!(
                    key,
                    reason,
                    "unreadable pending alert set aside; the others are sent"
                );
                Some(SetAsideAlert { key, reason })
            }
            // Repaired, delivered or set aside by someone else since it was read.
            Ok(false) => None,
            Err(move_error) => {
                tracing::error!(key, reason, error = %move_error, "unreadable pending alert could not be set aside; the others are sent");
                None
            }
        }
    }

    /// How many pending alerts one outbox shard holds (`Select: COUNT`, every page).
    async fn count_shard(&self, shard: String) -> Result<u64, StoreError> {
        let mut count = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client()
                .query()
                .table_name(self.table())
                .index_name(DUE_INDEX)
                .key_condition_expression("due_shard = :shard")
                .expression_attribute_values(":shard", AttributeValue::S(shard.clone()))
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend("Query(due)", e))?;
            count += u64::try_from(page.count()).unwrap_or(0);
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(count),
            }
        }
    }
}
