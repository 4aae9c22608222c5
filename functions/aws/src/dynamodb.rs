//! The expectation store on DynamoDB.
//!
//! One item per push ([`crate::tracked_pushes`]), one per (push, destination) that had to be
//! written on its own (a problem, or what followed one), and one per tag incident
//! ([`crate::tag_incidents`], in the tag's own partition):
//! - `pk` = `IMG#<region>#<account>#<repository>@<digest>` so one query returns every push
//!   and destination record of an image (the sweep confirms an image with one API call);
//! - `sk` = `DST#<region>#<account>#TAG#<tag>#<push time>` (or `#UNTAGGED#<push time>`) for a
//!   destination record, `PUSH#…` for a push: each push of the same image and tag has its
//!   own records;
//! - `due_shard` and `next_check` only while the item is open: the global secondary index
//!   `due` on them is sparse, so the sweep reads what is due and nothing else. The due items
//!   are spread over [`DUE_SHARDS`] partitions by a hash of `pk`, so no key of the index is
//!   hot (the README has the arithmetic), in two queues (`DueQueue`): first verdicts
//!   (`DUE#<n>`) and rechecks of known problems (`RECHECK#<n>`), read in that order;
//! - `expires_at` (epoch seconds) for the table's TTL;
//! - `version` for conditional writes: a write succeeds only if the version read is still the
//!   stored one, which is what lets any number of handler copies run at once;
//! - a write that raises alerts is one transaction with their pending records
//!   ([`crate::alert_outbox`]), so an alert is stored exactly when its state change is.
//!
//! Timestamps are RFC 3339 with nine fractional digits, fixed width, so their string order is
//! their time order in the index.
//!
//! Items written before pushes had their own items (schema 1: one push item per image and
//! tag, records without the push time in their key) are moved to their schema 2 keys when the
//! sweep first reads them as due; closed ones are read as they are until their TTL.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};
use replwatch_core::incident::TagIncident;
use replwatch_core::model::{
    AccountId, Destination, Digest, ExpectationKey, Region, SourceImage, TagKey,
};
use replwatch_core::outbox::PendingAlert;
use replwatch_core::push::TrackedPush;
use replwatch_core::store::{
    DueWork, ExpectationStore, OpenCount, StoreError, SweepPart, count_open, image_bucket,
    recheck_budget,
};
use replwatch_core::tracking::{ExpectationState, ReplicationExpectation};
use replwatch_core::unreadable::{ReadIncident, ReadIncidentKey};

/// Partitions of the due index for pushes and records: at three times the average rate of
/// 10 million pushes a day to 25 destinations, even with every destination failing (each
/// push then has 25 records entering and leaving the index), each takes 68 writes a second,
/// and the sweep's rechecks at its full rate 156 more: under half of DynamoDB's 1,000 per
/// partition (the README has the arithmetic).
pub const DUE_SHARDS: u32 = 256;
/// How many shards of the due index are read at once.
const SHARD_READS_AT_ONCE: usize = 16;
/// Items asked for per page when counting (DynamoDB also ends a page at 1 MB read).
const PAGE_ITEMS: usize = 1_000;
/// The sort-key prefix of destination records.
const RECORD_PREFIX: &str = "DST#";
pub const DUE_INDEX: &str = "due";
/// The TTL attribute the table is configured with.
pub use crate::dynamodb_table::TTL_ATTRIBUTE;
pub(crate) use crate::dynamodb_table::{ItemReader, backend, request_error};
use crate::{read_incidents, tag_incidents, tracked_pushes};
const SCHEMA_VERSION: &str = "2";

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

    /// Up to `limit` items of a query from `start`, and where to resume when more were left.
    /// Each page asks for at most what is still wanted, so a page never runs past `limit`
    /// and DynamoDB's own resume key is always the right one.
    async fn query_all(
        &self,
        operation: &'static str,
        build: impl Fn() -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        limit: usize,
        mut start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let mut items = Vec::new();
        loop {
            let mut query = build().set_exclusive_start_key(start.take());
            if limit < usize::MAX {
                query = query.limit(i32::try_from(limit - items.len()).unwrap_or(i32::MAX));
            }
            let page = query.send().await.map_err(|e| backend(operation, e))?;
            items.extend(page.items.unwrap_or_default());
            let resume = page.last_evaluated_key.filter(|k| !k.is_empty());
            if resume.is_none() || items.len() >= limit {
                return Ok((items, resume));
            }
            start = resume;
        }
    }

    /// Every item of `image` whose sort key starts with `prefix`, strongly consistent.
    async fn image_items(
        &self,
        image: &SourceImage,
        prefix: &str,
    ) -> Result<Vec<Item>, StoreError> {
        self.image_items_where(image, "begins_with(sk, :v0)", &[prefix], true)
            .await
    }

    /// Every item of `image` whose sort key meets `sk_condition`, in which `:v0`, `:v1` … stand
    /// for `values` in order.
    async fn image_items_where(
        &self,
        image: &SourceImage,
        sk_condition: &str,
        values: &[&str],
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let pk = partition_key(image);
        let condition = format!("pk = :pk AND {sk_condition}");
        let (items, _) = self
            .query_all(
                "Query",
                || {
                    let mut query = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression(&condition)
                        .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
                        .consistent_read(consistent);
                    for (i, value) in values.iter().enumerate() {
                        query = query.expression_attribute_values(
                            format!(":v{i}"),
                            AttributeValue::S((*value).to_owned()),
                        );
                    }
                    query
                },
                usize::MAX,
                None,
            )
            .await?;
        Ok(items)
    }

    /// Writes `item` if the stored `version` is `read` (0: if there is none).
    async fn put_versioned(&self, item: Item, read: u64, name: String) -> Result<(), StoreError> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        request = if read == 0 {
            request.condition_expression("attribute_not_exists(pk)")
        } else {
            request
                .condition_expression("#version = :read")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":read", number(read))
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Err(StoreError::Conflict { item: name })
            }
            Err(e) => Err(backend("PutItem", e)),
        }
    }

    /// About `limit` due items of one queue of `part`, earliest first, and whether more were
    /// left. Each shard's share of what is still wanted, again from the shards that had more,
    /// until the round is full or nothing is left: a round reads about `limit` items however
    /// they are spread, without reading every shard's backlog.
    async fn due_of(
        &self,
        queue: DueQueue,
        until: &str,
        limit: usize,
        part: SweepPart,
    ) -> Result<(Vec<Item>, bool), StoreError> {
        let mut items: Vec<Item> = Vec::new();
        let mut shards: Vec<(String, Option<Item>)> = (0..DUE_SHARDS)
            .filter(|s| part.holds(*s))
            .map(|s| (queue.shard_name(s), None))
            .collect();
        while !shards.is_empty() && items.len() < limit {
            let per_shard = (limit - items.len()).div_ceil(shards.len());
            let read = self.due_in_shards(shards, until, None, per_shard).await?;
            shards = Vec::new();
            for (shard, shard_items, resume) in read {
                items.extend(shard_items);
                if let Some(resume) = resume {
                    shards.push((shard, Some(resume)));
                }
            }
        }
        let mut more = !shards.is_empty();
        let next_check = |item: &Item| match item.get("next_check") {
            Some(AttributeValue::S(at)) => at.clone(),
            _ => String::new(),
        };
        items.sort_by_key(next_check);
        if items.len() > limit {
            items.truncate(limit);
            more = true;
        }
        Ok((items, more))
    }

    /// Up to `limit` items of one shard of the due index from `start`, and where to resume
    /// when more were left.
    async fn due_in_shard(
        &self,
        shard: String,
        until: &str,
        projection: Option<&'static str>,
        limit: usize,
        start: Option<Item>,
    ) -> Result<(String, Vec<Item>, Option<Item>), StoreError> {
        let name = shard.clone();
        let (items, resume) = self
            .query_all(
                "Query(due)",
                || {
                    let mut query = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .index_name(DUE_INDEX)
                        .key_condition_expression("due_shard = :shard AND next_check <= :until")
                        .expression_attribute_values(":shard", AttributeValue::S(name.clone()))
                        .expression_attribute_values(":until", AttributeValue::S(until.to_owned()));
                    if let Some(projection) = projection {
                        query = query
                            .projection_expression(projection)
                            .expression_attribute_names("#state", "state");
                    }
                    query
                },
                limit,
                start,
            )
            .await?;
        Ok((shard, items, resume))
    }

    /// The due items of `shards` (each with where to start), [`SHARD_READS_AT_ONCE`] shards at
    /// a time, up to `per_shard` from each.
    async fn due_in_shards(
        &self,
        shards: Vec<(String, Option<Item>)>,
        until: &str,
        projection: Option<&'static str>,
        per_shard: usize,
    ) -> Result<Vec<(String, Vec<Item>, Option<Item>)>, StoreError> {
        stream::iter(shards)
            .map(|(shard, start)| self.due_in_shard(shard, until, projection, per_shard, start))
            .buffer_unordered(SHARD_READS_AT_ONCE)
            .try_collect()
            .await
    }
}

impl ExpectationStore for DynamoExpectationStore {
    async fn get(
        &self,
        key: &ExpectationKey,
    ) -> Result<Option<ReplicationExpectation>, StoreError> {
        let key = HashMap::from([
            (
                "pk".to_owned(),
                AttributeValue::S(partition_key(&key.image)),
            ),
            ("sk".to_owned(), AttributeValue::S(sort_key(key))),
        ]);
        self.read_item(key, from_item).await
    }

    async fn save(
        &self,
        record: &ReplicationExpectation,
        raised: &[PendingAlert],
    ) -> Result<u64, StoreError> {
        let next = record.version + 1;
        self.put_with_alerts(
            to_item(record, next),
            record.version,
            raised,
            record.key.to_string(),
        )
        .await?;
        Ok(next)
    }

    async fn for_image(
        &self,
        image: &SourceImage,
    ) -> Result<Vec<ReplicationExpectation>, StoreError> {
        self.image_items(image, RECORD_PREFIX)
            .await?
            .iter()
            .map(from_item)
            .collect()
    }

    async fn latest_push(
        &self,
        image: &SourceImage,
        tag: Option<&str>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Option<TrackedPush>, StoreError> {
        // The pushes of one image and tag sort by time: the one wanted is the first of a
        // descending query that starts at `until`, one item read (half a read unit).
        let prefix = tracked_pushes::push_prefix(tag);
        let upper = match until {
            Some(at) => format!("{prefix}{}", tracked_pushes::occurrence_stamp(at)),
            None => format!("{prefix}~"),
        };
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
            .expression_attribute_values(":pk", AttributeValue::S(partition_key(image)))
            .expression_attribute_values(":low", AttributeValue::S(prefix))
            .expression_attribute_values(":high", AttributeValue::S(upper))
            .scan_index_forward(false)
            .limit(1)
            .send()
            .await
            .map_err(|e| backend("Query", e))?;
        output
            .items()
            .first()
            .map(tracked_pushes::from_item)
            .transpose()
    }

    async fn save_push(&self, push: &TrackedPush) -> Result<u64, StoreError> {
        let next = push.version + 1;
        self.put_versioned(
            tracked_pushes::to_item(push, next),
            push.version,
            format!("{} (tag {:?})", push.image, push.tag),
        )
        .await?;
        Ok(next)
    }

    async fn incident(&self, key: &TagKey) -> Result<Option<TagIncident>, StoreError> {
        self.read_item(tag_incidents::item_key(key), tag_incidents::from_item)
            .await
    }

    async fn save_incident(
        &self,
        incident: &TagIncident,
        raised: &[PendingAlert],
    ) -> Result<u64, StoreError> {
        let next = incident.version + 1;
        self.put_with_alerts(
            tag_incidents::to_item(incident, next),
            incident.version,
            raised,
            incident.key.to_string(),
        )
        .await?;
        Ok(next)
    }

    async fn read_incident(
        &self,
        key: &ReadIncidentKey,
    ) -> Result<Option<ReadIncident>, StoreError> {
        self.read_item(read_incidents::item_key(key), read_incidents::from_item)
            .await
    }

    async fn save_read_incident(
        &self,
        incident: &ReadIncident,
        raised: &[PendingAlert],
    ) -> Result<u64, StoreError> {
        let next = incident.version + 1;
        self.put_with_alerts(
            read_incidents::to_item(incident, next)?,
            incident.version,
            raised,
            incident.key.to_string(),
        )
        .await?;
        Ok(next)
    }

    async fn pushes_of(&self, image: &SourceImage) -> Result<Vec<TrackedPush>, StoreError> {
        self.image_items(image, tracked_pushes::PUSH_PREFIX)
            .await?
            .iter()
            .map(tracked_pushes::from_item)
            .collect()
    }

    async fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        part: SweepPart,
    ) -> Result<DueWork, StoreError> {
        // First verdicts, then rechecks within their budget: two sets of shards, so a backlog
        // of rechecks is never read before a first verdict.
        let until = timestamp(now);
        let mut work = DueWork::default();
        let (mut items, more) = self.due_of(DueQueue::First, &until, limit, part).await?;
        let budget = recheck_budget(limit, items.len());
        let (rechecks, more_rechecks) =
            self.due_of(DueQueue::Recheck, &until, budget, part).await?;
        items.extend(rechecks);
        work.more = more || more_rechecks;
        for item in items {
            if tag_incidents::is_incident(&item) {
                work.incidents.push(tag_incidents::from_item(&item)?);
            } else if is_push(&item) {
                let push = tracked_pushes::from_item(&item)?;
                let key = tracked_pushes::push_sort_key(push.tag.as_deref(), push.pushed_at);
                if self.moved_to_current_key(item, &key, push.version).await {
                    work.pushes.push(push);
                }
            } else {
                let record = from_item(&item)?;
                let key = sort_key(&record.key);
                if self.moved_to_current_key(item, &key, record.version).await {
                    work.records.push(record);
                }
            }
        }
        Ok(work)
    }

    async fn open_counts(&self) -> Result<Vec<OpenCount>, StoreError> {
        // Every shard of both queues, 16 at a time, each folded page by page into counts:
        // what is held at once is one page per shard being read and the counts (one per
        // destination, state and list of destinations), never the open items, so a backlog
        // of millions (a Region down for hours) costs read units and time, not memory.
        let shards: Vec<String> = DueQueue::ALL
            .into_iter()
            .flat_map(|queue| (0..DUE_SHARDS).map(move |s| queue.shard_name(s)))
            .collect();
        let tallies: Vec<OpenTally> = stream::iter(shards)
            .map(|shard| self.open_in_shard(shard))
            .buffer_unordered(SHARD_READS_AT_ONCE)
            .try_collect()
            .await?;
        let mut total = OpenTally::default();
        for tally in tallies {
            total.merge(tally);
        }
        let mut open: Vec<(Destination, ExpectationState, u64)> = total
            .records
            .into_iter()
            .map(|((destination, state), n)| (destination, state, n))
            .collect();
        for (count, sample) in total.pushes.into_values() {
            for destination in self.destinations_of(&sample).await? {
                open.push((destination, ExpectationState::Pending, count));
            }
        }
        Ok(count_open(open.iter().map(|(d, s, n)| (d, *s, *n))))
    }
}

/// Open items of some shards of the due index, counted: records per destination and state,
/// pushes per list of destinations (with one push's key, to read the list once).
#[derive(Default)]
struct OpenTally {
    records: HashMap<(Destination, ExpectationState), u64>,
    pushes: HashMap<String, (u64, Item)>,
}

impl OpenTally {
    /// Counts one open item of the due index (read with [`OPEN_COUNT_PROJECTION`]).
    fn add(&mut self, item: Item) -> Result<(), StoreError> {
        if is_push(&item) {
            let Some(AttributeValue::S(set)) = item.get("dset") else {
                return Err(backend_message(
                    "Query(due)",
                    "an open push has no dset".to_owned(),
                ));
            };
            match self.pushes.get_mut(set) {
                Some((count, _)) => *count += 1,
                None => {
                    self.pushes.insert(set.clone(), (1, item));
                }
            }
            return Ok(());
        }
        let read = ItemReader::new(&item);
        let destination = read
            .parsed("destination_region", Region::parse)
            .and_then(|region| {
                Ok(Destination::new(
                    region,
                    read.parsed("destination_account", AccountId::parse)?,
                ))
            });
        let state = read.parsed("state", |s| {
            ExpectationState::parse(s).ok_or_else(|| format!("{s:?} is no state"))
        });
        // A tag incident (no destination attributes of a record) is not an open image.
        if let (Ok(destination), Ok(state)) = (destination, state) {
            *self.records.entry((destination, state)).or_default() += 1;
        }
        Ok(())
    }

    fn merge(&mut self, other: OpenTally) {
        for (key, n) in other.records {
            *self.records.entry(key).or_default() += n;
        }
        for (set, (n, sample)) in other.pushes {
            self.pushes.entry(set).or_insert((0, sample)).0 += n;
        }
    }
}

/// Only the short attributes the counts need: a push's destinations by the name of their
/// list, each list read once.
const OPEN_COUNT_PROJECTION: &str = "pk, sk, #state, destination_region, destination_account, dset";

impl DynamoExpectationStore {
    /// The open items of one shard, counted page by page.
    async fn open_in_shard(&self, shard: String) -> Result<OpenTally, StoreError> {
        // Every open item is in the due index with some `next_check`; the last instant with
        // a four-digit year (which keeps the string order) selects all of them.
        let end_of_time = "9999-12-31T23:59:59.000000000Z";
        let mut tally = OpenTally::default();
        let mut start = None;
        loop {
            let (_, items, resume) = self
                .due_in_shard(
                    shard.clone(),
                    end_of_time,
                    Some(OPEN_COUNT_PROJECTION),
                    PAGE_ITEMS,
                    start,
                )
                .await?;
            for item in items {
                tally.add(item)?;
            }
            match resume {
                Some(resume) => start = Some(resume),
                None => return Ok(tally),
            }
        }
    }
}

impl DynamoExpectationStore {
    /// Writes `item` if the stored `version` is `read` (0: if there is none), with the pending
    /// records of the alerts this change raised in the same transaction: both or neither.
    /// One item by its key, strongly consistent (every read before a conditional write),
    /// read back with `from_item`.
    async fn read_item<T>(
        &self,
        key: Item,
        from_item: impl FnOnce(&Item) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend("GetItem", e))?;
        output.item.as_ref().map(from_item).transpose()
    }

    async fn put_with_alerts(
        &self,
        item: Item,
        read: u64,
        raised: &[PendingAlert],
        name: String,
    ) -> Result<(), StoreError> {
        if raised.is_empty() {
            // The common case: one conditional PutItem.
            return self.put_versioned(item, read, name).await;
        }
        let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
        put = if read == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("#version = :read")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":read", number(read))
        };
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
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err(),
                    TransactWriteItemsError::TransactionCanceledException(c)
                        if c.cancellation_reasons().first().and_then(|r| r.code())
                            == Some("ConditionalCheckFailed")
                ) =>
            {
                Err(StoreError::Conflict { item: name })
            }
            Err(e) => Err(backend("TransactWriteItems", e)),
        }
    }

    /// Whether the due `item` is under `current` (its sort key in this schema), moving it
    /// there first if an earlier schema wrote it elsewhere: the new item, at the same
    /// version, and the removal of the old one in one transaction. An item another sweep is
    /// moving, or that changed meanwhile, is left for the next round.
    async fn moved_to_current_key(&self, mut item: Item, current: &str, version: u64) -> bool {
        let Some(AttributeValue::S(stored)) = item.get("sk").cloned() else {
            return false;
        };
        if stored == current {
            return true;
        }
        let old_key: Item = ["pk", "sk"]
            .into_iter()
            .filter_map(|k| item.get(k).map(|v| (k.to_owned(), v.clone())))
            .collect();
        item.insert("sk".to_owned(), AttributeValue::S(current.to_owned()));
        item.insert(
            "schema".to_owned(),
            AttributeValue::S(SCHEMA_VERSION.to_owned()),
        );
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build();
        let delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .set_key(Some(old_key))
            .condition_expression("#version = :read")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":read", number(version))
            .build();
        let (Ok(put), Ok(delete)) = (put, delete) else {
            return false;
        };
        let moved = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .send()
            .await;
        match moved {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(from = %stored, to = %current, error = %backend("TransactWriteItems", error), "item of an earlier schema not moved; left for the next round");
                false
            }
        }
    }

    /// The destinations of the push whose keys `sample` holds.
    async fn destinations_of(&self, sample: &Item) -> Result<Vec<Destination>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(
                ["pk", "sk"]
                    .into_iter()
                    .filter_map(|k| sample.get(k).map(|v| (k.to_owned(), v.clone())))
                    .collect(),
            ))
            .projection_expression("dests")
            .send()
            .await
            .map_err(|e| backend("GetItem", e))?;
        let Some(AttributeValue::S(list)) = output.item.as_ref().and_then(|i| i.get("dests"))
        else {
            // Closed and gone since it was counted.
            return Ok(Vec::new());
        };
        tracked_pushes::parse_destination_list(list).ok_or_else(|| StoreError::Corrupt {
            id: "a push's dests".to_owned(),
            message: format!("{list:?}"),
        })
    }
}

fn is_push(item: &Item) -> bool {
    matches!(item.get("sk"), Some(AttributeValue::S(sk)) if sk.starts_with(tracked_pushes::PUSH_PREFIX))
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
    let pushed = tracked_pushes::occurrence_stamp(key.occurrence);
    match &key.tag {
        Some(tag) => format!("{destination}#TAG#{tag}#{pushed}"),
        None => format!("{destination}#UNTAGGED#{pushed}"),
    }
}

/// The two queues of the due index, each over [`DUE_SHARDS`] shards: first verdicts (open
/// pushes, records not yet checked since their deadline) and rechecks of known problems
/// (records checked before, tag incidents), read in that order ([`recheck_budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DueQueue {
    First,
    Recheck,
}

impl DueQueue {
    /// The queue of a destination record.
    pub(crate) fn of(record: &ReplicationExpectation) -> Self {
        if record.is_recheck() {
            DueQueue::Recheck
        } else {
            DueQueue::First
        }
    }

    fn shard_name(self, shard: u32) -> String {
        match self {
            DueQueue::First => format!("DUE#{shard}"),
            DueQueue::Recheck => format!("RECHECK#{shard}"),
        }
    }

    /// The due-index partition of the items of partition `pk` in this queue.
    pub(crate) fn shard(self, pk: &str) -> String {
        self.shard_name(shard_of(pk))
    }

    const ALL: [DueQueue; 2] = [DueQueue::First, DueQueue::Recheck];
}

/// The shard of partition `pk`: shards and sweep parts follow the same stable hash, so part
/// `i` of `n` reads exactly the shards `s` with `s % n == i` (`n` dividing [`DUE_SHARDS`]).
fn shard_of(pk: &str) -> u32 {
    image_bucket(pk) % DUE_SHARDS
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
        text("due_shard", DueQueue::of(record).shard(&pk));
    }
    if let Some(expires) = record.expires_at {
        item.insert(
            TTL_ATTRIBUTE.to_owned(),
            AttributeValue::N(expires.timestamp().to_string()),
        );
    }
    if let Some(alerts) = crate::dynamodb_table::alert_kinds_attribute(&record.alerts) {
        item.insert("alerts".to_owned(), alerts);
    }
    // Only while the reads that would confirm it fail; read back whole.
    if let Some(unconfirmed) = &record.unconfirmed
        && let Ok(json) = serde_json::to_string(unconfirmed)
    {
        item.insert("unconfirmed".to_owned(), AttributeValue::S(json));
    }
    item.insert("version".to_owned(), number(version));
    item
}

/// Reads a destination record back ([`ItemReader`] names what is wrong with a bad one).
fn from_item(item: &Item) -> Result<ReplicationExpectation, StoreError> {
    let read = ItemReader::new(item);
    // The push a record follows is the last part of its key; a schema 1 record has none,
    // and follows the one push of its image and tag then tracked.
    let occurrence = match read.text("schema")? {
        Some("1") | None => read.time("pushed_at")?.unwrap_or_default(),
        Some(_) => read.parsed("sk", |sk| {
            sk.rsplit('#')
                .next()
                .and_then(tracked_pushes::parse_occurrence_stamp)
                .ok_or("no push time at its end")
        })?,
    };
    let key = ExpectationKey {
        image: read.source_image()?,
        tag: read.text("tag")?.map(str::to_owned),
        destination: Destination::new(
            read.parsed("destination_region", Region::parse)?,
            read.parsed("destination_account", AccountId::parse)?,
        ),
        occurrence,
    };
    let state = read.parsed("state", |s| {
        ExpectationState::parse(s).ok_or_else(|| format!("{s:?} is no state"))
    })?;
    let alerts = read.alert_kinds()?;
    Ok(ReplicationExpectation {
        key,
        state,
        pushed_at: read.time("pushed_at")?,
        deadline: read.time("deadline")?,
        arrived_at: read.time("arrived_at")?,
        failure_code: read.text("failure_code")?.map(str::to_owned),
        tag_held_by: read
            .text("tag_held_by")?
            .map(Digest::parse)
            .transpose()
            .map_err(|e| read.corrupt(format!("tag_held_by: {e}")))?,
        closed_at: read.time("closed_at")?,
        overdue_since: read.time("overdue_since")?,
        last_checked_at: read.time("last_checked_at")?,
        next_check_at: read.time("next_check")?,
        expires_at: read.expires_at()?,
        unconfirmed: read
            .text("unconfirmed")?
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| read.corrupt(format!("unconfirmed: {e}")))?,
        alerts,
        version: read.version()?,
    })
}

/// An image with long names, as platform teams use them: what item sizes are measured with.
#[cfg(test)]
pub(crate) fn long_named_image() -> SourceImage {
    SourceImage {
        registry: Destination::new(
            Region::parse("ap-southeast-2").expect("region"),
            AccountId::parse("111111111111").expect("account"),
        ),
        repository: replwatch_core::model::RepositoryName::parse(
            "platform/build-tools/ci-runner-images-x86",
        )
        .expect("repository"),
        digest: Digest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest"),
    }
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
        let used: std::collections::BTreeSet<u32> =
            (0..4096).map(|i| shard_of(&format!("IMG#x#{i}"))).collect();
        assert_eq!(used.len(), DUE_SHARDS as usize);
        // Digests that differ in few bits still spread: 1,024 images, 4 a shard on average.
        let mut per_shard = [0u32; DUE_SHARDS as usize];
        for n in 0..1024u32 {
            let pk = format!(
                "IMG#us-west-2#111111111111#web@sha256:{}",
                format!("{n:04x}").repeat(16)
            );
            per_shard[shard_of(&pk) as usize] += 1;
        }
        let busiest = per_shard.iter().max().copied().unwrap_or_default();
        let used = per_shard.iter().filter(|n| **n > 0).count();
        assert!(
            busiest <= 16 && used >= 240,
            "busiest {busiest}, {used} shards used"
        );
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
            image: long_named_image(),
            tag: Some("release-2026.12.03-build.4821".to_owned()),
            destination: Destination::new(
                Region::parse("ap-southeast-2").expect("region"),
                AccountId::parse("222222222222").expect("account"),
            ),
            occurrence: DateTime::from_timestamp(1_790_000_000, 123_456_789).expect("time"),
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
