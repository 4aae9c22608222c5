//! The expectation store on DynamoDB.
//!
//! One item per (source image, tag, destination):
//! - `pk` = `IMG#<region>#<account>#<repository>@<digest>` so one query returns every
//!   destination and tag of an image (the sweep confirms an image with one API call);
//! - `sk` = `DST#<region>#<account>#TAG#<tag>` (or `#UNTAGGED`);
//! - `due_shard` and `next_check` only while the item is open: the global secondary index
//!   `due` on them is sparse, so the sweep reads what is due and nothing else. The due items
//!   are spread over [`DUE_SHARDS`] partitions so a burst of pushes does not make one hot key;
//! - `expires_at` (epoch seconds) for the table's TTL;
//! - `version` for conditional writes: a write succeeds only if the version read is still the
//!   stored one, which is what lets any number of handler copies run at once;
//! - a write that raises alerts is one transaction with their pending records
//!   ([`crate::alert_outbox`]), so an alert is stored exactly when its state change is.
//!
//! Timestamps are RFC 3339 with nine fractional digits, fixed width, so their string order is
//! their time order in the index.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::{DateTime, SecondsFormat, Utc};
use replwatch_core::model::{
    AccountId, Destination, Digest, ExpectationKey, Region, RepositoryName, SourceImage,
};
use replwatch_core::outbox::PendingAlert;
use replwatch_core::store::{ExpectationStore, OpenCount, StoreError, count_open};
use replwatch_core::tracking::{AlertKind, ExpectationState, ReplicationExpectation};

/// Partitions of the due index.
pub const DUE_SHARDS: u32 = 4;
pub const DUE_INDEX: &str = "due";
/// The TTL attribute the table is configured with.
pub use crate::dynamodb_table::TTL_ATTRIBUTE;
pub(crate) use crate::dynamodb_table::{backend, request_error};
const SCHEMA_VERSION: &str = "1";

type Item = HashMap<String, AttributeValue>;

/// [`ExpectationStore`] on one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoExpectationStore {
    client: Client,
    table: String,
}

impl DynamoExpectationStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    async fn query_all(
        &self,
        operation: &'static str,
        build: impl Fn() -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        limit: usize,
    ) -> Result<Vec<ReplicationExpectation>, StoreError> {
        let mut records = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = build()
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend(operation, e))?;
            for item in page.items() {
                records.push(from_item(item)?);
                if records.len() >= limit {
                    return Ok(records);
                }
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(records),
            }
        }
    }
}

impl ExpectationStore for DynamoExpectationStore {
    async fn get(
        &self,
        key: &ExpectationKey,
    ) -> Result<Option<ReplicationExpectation>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(partition_key(&key.image)))
            .key("sk", AttributeValue::S(sort_key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend("GetItem", e))?;
        output.item.as_ref().map(from_item).transpose()
    }

    async fn save(
        &self,
        record: &ReplicationExpectation,
        raised: &[PendingAlert],
    ) -> Result<u64, StoreError> {
        let next = record.version + 1;
        let (condition, read) = if record.version == 0 {
            ("attribute_not_exists(pk)", None)
        } else {
            ("#version = :read", Some(number(record.version)))
        };
        let conflict = || StoreError::Conflict {
            key: Box::new(record.key.clone()),
        };
        if raised.is_empty() {
            // The common case: one conditional PutItem.
            let mut request = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(to_item(record, next)))
                .condition_expression(condition);
            if let Some(read) = read {
                request = request
                    .expression_attribute_names("#version", "version")
                    .expression_attribute_values(":read", read);
            }
            return match request.send().await {
                Ok(_) => Ok(next),
                Err(SdkError::ServiceError(e))
                    if e.err().is_conditional_check_failed_exception() =>
                {
                    Err(conflict())
                }
                Err(e) => Err(backend("PutItem", e)),
            };
        }
        // A change that raises alerts writes them in the same transaction: both or neither.
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(record, next)))
            .condition_expression(condition);
        if let Some(read) = read {
            put = put
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":read", read);
        }
        let mut items = vec![
            TransactWriteItem::builder()
                .put(
                    put.build()
                        .map_err(|e| request_error("TransactWriteItems", e))?,
                )
                .build(),
        ];
        for pending in raised {
            items.push(
                TransactWriteItem::builder()
                    .put(crate::alert_outbox::put(&self.table, pending)?)
                    .build(),
            );
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(next),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err(),
                    TransactWriteItemsError::TransactionCanceledException(c)
                        if c.cancellation_reasons().first().and_then(|r| r.code())
                            == Some("ConditionalCheckFailed")
                ) =>
            {
                Err(conflict())
            }
            Err(e) => Err(backend("TransactWriteItems", e)),
        }
    }

    async fn for_image(
        &self,
        image: &SourceImage,
    ) -> Result<Vec<ReplicationExpectation>, StoreError> {
        let pk = partition_key(image);
        self.query_all(
            "Query",
            || {
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                    .consistent_read(true)
            },
            usize::MAX,
        )
        .await
    }

    async fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ReplicationExpectation>, StoreError> {
        let now = timestamp(now);
        let mut due = Vec::new();
        for shard in 0..DUE_SHARDS {
            let shard = shard_name(shard);
            let page = self
                .query_all(
                    "Query(due)",
                    || {
                        self.client
                            .query()
                            .table_name(&self.table)
                            .index_name(DUE_INDEX)
                            .key_condition_expression("due_shard = :shard AND next_check <= :now")
                            .expression_attribute_values(":shard", AttributeValue::S(shard.clone()))
                            .expression_attribute_values(":now", AttributeValue::S(now.clone()))
                    },
                    limit,
                )
                .await?;
            due.extend(page);
        }
        due.sort_by(|a, b| {
            a.next_check_at
                .cmp(&b.next_check_at)
                .then(a.key.cmp(&b.key))
        });
        due.truncate(limit);
        Ok(due)
    }

    async fn open_counts(&self) -> Result<Vec<OpenCount>, StoreError> {
        // Every open record is in the due index with some `next_check`; the last instant with
        // a four-digit year (which keeps the string order) selects all of them.
        let end_of_time = DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
            .map_err(|e| backend_message("Query(due)", e.to_string()))?
            .with_timezone(&Utc);
        let open = self.due(end_of_time, usize::MAX).await?;
        Ok(count_open(&open))
    }
}

fn backend_message(operation: &'static str, message: String) -> StoreError {
    StoreError::Backend { operation, message }
}

pub fn partition_key(image: &SourceImage) -> String {
    format!(
        "IMG#{}#{}#{}@{}",
        image.registry.region, image.registry.registry_id, image.repository, image.digest
    )
}

pub fn sort_key(key: &ExpectationKey) -> String {
    let destination = format!(
        "DST#{}#{}",
        key.destination.region, key.destination.registry_id
    );
    match &key.tag {
        Some(tag) => format!("{destination}#TAG#{tag}"),
        None => format!("{destination}#UNTAGGED"),
    }
}

/// FNV-1a: a hash that stays the same across Rust releases, so an item's shard is stable.
fn shard_of(pk: &str) -> u32 {
    let hash = pk.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash % DUE_SHARDS
}

fn shard_name(shard: u32) -> String {
    format!("DUE#{shard}")
}

pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub(crate) fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn to_item(record: &ReplicationExpectation, version: u64) -> Item {
    let key = &record.key;
    let pk = partition_key(&key.image);
    let mut item = Item::new();
    let mut text = |name: &str, value: String| {
        item.insert(name.to_owned(), AttributeValue::S(value));
    };
    text("pk", pk.clone());
    text("sk", sort_key(key));
    text("schema", SCHEMA_VERSION.to_owned());
    text("source_region", key.image.registry.region.to_string());
    text("source_account", key.image.registry.registry_id.to_string());
    text("repository", key.image.repository.to_string());
    text("digest", key.image.digest.to_string());
    text("destination_region", key.destination.region.to_string());
    text(
        "destination_account",
        key.destination.registry_id.to_string(),
    );
    text("state", record.state.as_str().to_owned());
    if let Some(tag) = &key.tag {
        text("tag", tag.clone());
    }
    if let Some(code) = &record.failure_code {
        text("failure_code", code.clone());
    }
    if let Some(holder) = &record.tag_held_by {
        text("tag_held_by", holder.to_string());
    }
    for (name, value) in [
        ("pushed_at", record.pushed_at),
        ("deadline", record.deadline),
        ("arrived_at", record.arrived_at),
        ("closed_at", record.closed_at),
        ("overdue_since", record.overdue_since),
        ("last_checked_at", record.last_checked_at),
    ] {
        if let Some(at) = value {
            text(name, timestamp(at));
        }
    }
    if let Some(next) = record.next_check_at {
        text("next_check", timestamp(next));
        text("due_shard", shard_name(shard_of(&pk)));
    }
    if let Some(expires) = record.expires_at {
        item.insert(
            TTL_ATTRIBUTE.to_owned(),
            AttributeValue::N(expires.timestamp().to_string()),
        );
    }
    if !record.alerts.is_empty() {
        item.insert(
            "alerts".to_owned(),
            AttributeValue::L(
                record
                    .alerts
                    .iter()
                    .map(|a| AttributeValue::S(a.as_str().to_owned()))
                    .collect(),
            ),
        );
    }
    item.insert("version".to_owned(), number(version));
    item
}

/// Reads an item back; any missing or malformed attribute is a [`StoreError::Corrupt`] that
/// names the item and the attribute.
fn from_item(item: &Item) -> Result<ReplicationExpectation, StoreError> {
    let id = match (item.get("pk"), item.get("sk")) {
        (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => format!("{pk} / {sk}"),
        _ => "<item without pk/sk>".to_owned(),
    };
    let corrupt = |message: String| StoreError::Corrupt {
        id: id.clone(),
        message,
    };
    let text = |name: &str| -> Result<Option<&str>, StoreError> {
        match item.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(corrupt(format!("{name} is not a string: {other:?}"))),
        }
    };
    let required = |name: &str| -> Result<&str, StoreError> {
        text(name)?.ok_or_else(|| corrupt(format!("{name} is missing")))
    };
    let time = |name: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        text(name)?
            .map(|s| {
                DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| corrupt(format!("{name}: {e}")))
            })
            .transpose()
    };
    let invalid = |e: replwatch_core::model::InvalidValue| corrupt(e.to_string());

    let key = ExpectationKey {
        image: SourceImage {
            registry: Destination::new(
                Region::parse(required("source_region")?).map_err(invalid)?,
                AccountId::parse(required("source_account")?).map_err(invalid)?,
            ),
            repository: RepositoryName::parse(required("repository")?).map_err(invalid)?,
            digest: Digest::parse(required("digest")?).map_err(invalid)?,
        },
        tag: text("tag")?.map(str::to_owned),
        destination: Destination::new(
            Region::parse(required("destination_region")?).map_err(invalid)?,
            AccountId::parse(required("destination_account")?).map_err(invalid)?,
        ),
    };
    let state = required("state")?;
    let state =
        ExpectationState::parse(state).ok_or_else(|| corrupt(format!("state {state:?}")))?;
    let alerts = match item.get("alerts") {
        None => BTreeSet::new(),
        Some(AttributeValue::L(values)) => values
            .iter()
            .map(|v| match v {
                AttributeValue::S(s) => {
                    AlertKind::parse(s).ok_or_else(|| corrupt(format!("alert kind {s:?}")))
                }
                other => Err(corrupt(format!("alert {other:?}"))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(corrupt(format!("alerts is not a list: {other:?}"))),
    };
    let version = match item.get("version") {
        Some(AttributeValue::N(n)) => n
            .parse::<u64>()
            .map_err(|e| corrupt(format!("version {n:?}: {e}")))?,
        _ => return Err(corrupt("version is missing".into())),
    };
    let expires_at = match item.get(TTL_ATTRIBUTE) {
        None => None,
        Some(AttributeValue::N(n)) => {
            let seconds = n
                .parse::<i64>()
                .map_err(|e| corrupt(format!("{TTL_ATTRIBUTE} {n:?}: {e}")))?;
            Some(
                DateTime::from_timestamp(seconds, 0)
                    .ok_or_else(|| corrupt(format!("{TTL_ATTRIBUTE} {seconds} out of range")))?,
            )
        }
        Some(other) => return Err(corrupt(format!("{TTL_ATTRIBUTE} {other:?}"))),
    };
    Ok(ReplicationExpectation {
        key,
        state,
        pushed_at: time("pushed_at")?,
        deadline: time("deadline")?,
        arrived_at: time("arrived_at")?,
        failure_code: text("failure_code")?.map(str::to_owned),
        tag_held_by: text("tag_held_by")?
            .map(Digest::parse)
            .transpose()
            .map_err(invalid)?,
        closed_at: time("closed_at")?,
        overdue_since: time("overdue_since")?,
        last_checked_at: time("last_checked_at")?,
        next_check_at: time("next_check")?,
        expires_at,
        alerts,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(
            shard_of("IMG#us-west-2#111111111111#web@sha256:00"),
            shard_of("IMG#us-west-2#111111111111#web@sha256:00")
        );
        let used: BTreeSet<u32> = (0..64).map(|i| shard_of(&format!("IMG#x#{i}"))).collect();
        assert_eq!(used.len(), DUE_SHARDS as usize);
    }

    #[test]
    fn timestamps_sort_as_strings_in_time_order() {
        let a = DateTime::from_timestamp(1_700_000_000, 5).expect("time");
        let b = DateTime::from_timestamp(1_700_000_000, 40).expect("time");
        let c = DateTime::from_timestamp(1_700_000_001, 0).expect("time");
        assert!(timestamp(a) < timestamp(b) && timestamp(b) < timestamp(c));
        assert_eq!(timestamp(a).len(), timestamp(c).len());
    }

    /// What a write of today's record costs: the basis of the cost model.
    #[test]
    fn a_tracking_record_fits_one_write_unit() {
        use replwatch_core::tracking::{Observation, TagArrival, TrackingPolicy};

        use crate::dynamodb_table::{item_size, write_units};

        let key = ExpectationKey {
            image: SourceImage {
                registry: Destination::new(
                    Region::parse("ap-southeast-2").expect("region"),
                    AccountId::parse("111111111111").expect("account"),
                ),
                // Long names, as platform teams use them.
                repository: RepositoryName::parse("platform/build-tools/ci-runner-images-x86")
                    .expect("repository"),
                digest: Digest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest"),
            },
            tag: Some("release-2026.12.03-build.4821".to_owned()),
            destination: Destination::new(
                Region::parse("ap-southeast-2").expect("region"),
                AccountId::parse("222222222222").expect("account"),
            ),
        };
        let policy = TrackingPolicy::default();
        let at = DateTime::from_timestamp(1_790_000_000, 123_456_789).expect("time");
        let mut record = ReplicationExpectation::new(key);
        record.apply(&Observation::Pushed { at }, &policy);
        let pending = item_size(&to_item(&record, 1));
        record.apply(
            &Observation::Arrived {
                arrived_at: Some(at),
                observed_at: at,
                tag: TagArrival::Present,
            },
            &policy,
        );
        let closed = item_size(&to_item(&record, 2));
        assert!(
            pending < 1024 && closed < 1024,
            "{pending} and {closed} bytes"
        );
        assert_eq!(write_units(pending), 1);
    }

    #[test]
    fn an_item_missing_its_state_is_reported_by_name() {
        let mut item = Item::new();
        item.insert("pk".into(), AttributeValue::S("IMG#x".into()));
        item.insert("sk".into(), AttributeValue::S("DST#y".into()));
        let err = from_item(&item).expect_err("corrupt");
        assert!(err.to_string().contains("IMG#x / DST#y"), "{err}");
    }
}
