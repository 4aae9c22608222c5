//! Where tracking state lives between events: the [`ExpectationStore`] port, an in-memory
//! implementation for unit tests of the core, and the contract every implementation must pass
//! (the DynamoDB store in `replwatch-aws` runs the same suite against the local AWS).
//!
//! It keeps three kinds of item: one [`TrackedPush`] per push (every destination at once, due
//! at its deadline; the same image and tag pushed again is another one, named by its push
//! time), a [`ReplicationExpectation`] per destination of a push only where something about
//! that destination had to be written (a problem, or what followed one; see [`crate::push`]),
//! and a [`TagIncident`] per tag and destination where the tag diverged.
//!
//! Writes are conditional on the version read, because many copies of each function run at
//! once and two of them may hold the same item: the loser of a race gets
//! [`StoreError::Conflict`], reloads and applies its observation again.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::incident::TagIncident;
use crate::model::{Destination, ExpectationKey, SourceImage, TagKey};
use crate::outbox::{AlertOutbox, CLAIM_LEASE, Claimed, PendingAlert};
use crate::push::TrackedPush;
use crate::rules::ReplicationConfiguration;
use crate::tracking::{ExpectationState, ReplicationExpectation, TrackingPolicy};
use crate::unreadable::{ReadIncident, ReadIncidentKey};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The record (a destination's, or a push's) changed or appeared since it was read.
    #[error("{item}: changed by someone else since it was read")]
    Conflict { item: String },
    /// A stored record this version cannot read.
    #[error("stored record {id} is unreadable: {message}")]
    Corrupt { id: String, message: String },
    /// The backend failed (network, throttling after retries, permissions).
    #[error("state store {operation} failed: {message}")]
    Backend {
        operation: &'static str,
        message: String,
    },
}

/// The port the core uses to keep [`ReplicationExpectation`]s.
pub trait ExpectationStore: Send + Sync {
    /// Reads one record, strongly consistent.
    fn get(
        &self,
        key: &ExpectationKey,
    ) -> impl Future<Output = Result<Option<ReplicationExpectation>, StoreError>> + Send;

    /// Writes `item` if the stored version still equals `item.version` (0: the record must
    /// not exist yet), and in the same atomic write the alerts this change raised as pending
    /// records of the [`AlertOutbox`]: either both are stored or neither. Returns the version
    /// now stored.
    fn save(
        &self,
        item: &ReplicationExpectation,
        raised: &[PendingAlert],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Every destination record of one source image (all its tags), without its pushes.
    fn for_image(
        &self,
        image: &SourceImage,
    ) -> impl Future<Output = Result<Vec<ReplicationExpectation>, StoreError>> + Send;

    /// The latest push of `image` with `tag` at or before `until` (any time: `None`), in one
    /// eventually consistent read of one item (it is made once per replication event). A
    /// push written in the last second may not show yet; the callers are correct either way
    /// (the push's own deadline check confirms it).
    fn latest_push(
        &self,
        image: &SourceImage,
        tag: Option<&str>,
        until: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Option<TrackedPush>, StoreError>> + Send;

    /// Writes `push` if the stored version still equals `push.version` (0: it must not exist
    /// yet: the same push, a duplicate event, is tracked once); the version now stored.
    fn save_push(&self, push: &TrackedPush)
    -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Every push of one source image (all its tags, every time it was pushed).
    fn pushes_of(
        &self,
        image: &SourceImage,
    ) -> impl Future<Output = Result<Vec<TrackedPush>, StoreError>> + Send;

    /// The incident of one tag in one destination, strongly consistent.
    fn incident(
        &self,
        key: &TagKey,
    ) -> impl Future<Output = Result<Option<TagIncident>, StoreError>> + Send;

    /// Writes `incident` if the stored version still equals `incident.version` (0: it must
    /// not exist yet), with the alerts it raised, as [`ExpectationStore::save`] does.
    fn save_incident(
        &self,
        incident: &TagIncident,
        raised: &[PendingAlert],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The incident of one registry replwatch cannot read, strongly consistent.
    fn read_incident(
        &self,
        key: &ReadIncidentKey,
    ) -> impl Future<Output = Result<Option<ReadIncident>, StoreError>> + Send;

    /// Writes `incident` if the stored version still equals `incident.version` (0: it must
    /// not exist yet), with the alerts it raised, as [`ExpectationStore::save`] does.
    fn save_read_incident(
        &self,
        incident: &ReadIncident,
        raised: &[PendingAlert],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Open pushes, records and incidents of `part` whose next check is at or before `now`,
    /// roughly earliest first; `more` when some were left for the next call. Closed ones are
    /// never returned. Every item of an image (and of a tag) is in the same part.
    ///
    /// First verdicts (open pushes, and records never checked since their deadline) and
    /// rechecks of known problems ([`ReplicationExpectation::is_recheck`], tag incidents)
    /// are read apart: up to `limit` first verdicts, then [`recheck_budget`] rechecks, so a
    /// backlog of rechecks (a Region down for hours) never delays a first verdict, and the
    /// rechecks still get a share of every round.
    fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        part: SweepPart,
    ) -> impl Future<Output = Result<DueWork, StoreError>> + Send;

    /// How many images are open per destination: pending (a push awaiting its check, or a
    /// record pending) and overdue. The gauges the sweep publishes; reads the due index only,
    /// so its cost follows what is open, not history.
    fn open_counts(&self) -> impl Future<Output = Result<Vec<OpenCount>, StoreError>> + Send;
}

/// One of the parts the due work is split into, so that several sweeps can run side by side
/// without checking the same image twice: part `index` of `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SweepPart {
    pub index: u32,
    pub of: u32,
}

impl SweepPart {
    /// All the due work, in one part.
    pub const WHOLE: SweepPart = SweepPart { index: 0, of: 1 };

    /// Every part of a split in `of` (at least one).
    pub fn all(of: u32) -> Vec<SweepPart> {
        let of = of.max(1);
        (0..of).map(|index| SweepPart { index, of }).collect()
    }

    /// Whether the item hashed to `bucket` (a stable hash of its image) is in this part.
    pub fn holds(&self, bucket: u32) -> bool {
        bucket % self.of.max(1) == self.index
    }
}

/// FNV-1a over the image's name, then MurmurHash3's finalizer: a hash that stays the same
/// across Rust releases, so an image's shard (and part) is stable, and whose low bits depend
/// on every bit of the name (FNV-1a's own low bits do not: names differing only in their
/// digest's high bits would share a shard).
pub fn image_bucket(partition_key: &str) -> u32 {
    let mut h = partition_key.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// How many rechecks a round reads beside `first` first verdicts out of `limit`: the room
/// the first verdicts left, and never less than a quarter of `limit`, so rechecks go on (at a
/// quarter of the sweep's pace at least) while first verdicts fill every round. A round is
/// thus at most 1.25 × `limit` items.
pub fn recheck_budget(limit: usize, first: usize) -> usize {
    limit.saturating_sub(first).max(limit.div_ceil(4))
}

/// What a sweep round has to check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DueWork {
    pub pushes: Vec<TrackedPush>,
    pub records: Vec<ReplicationExpectation>,
    pub incidents: Vec<TagIncident>,
    /// Whether more was due than returned.
    pub more: bool,
}

impl DueWork {
    pub fn len(&self) -> usize {
        self.pushes.len() + self.records.len() + self.incidents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every destination of `image` as a reader sees it: its own record where it has one, else
/// the view of its push ([`crate::push::combined_view`]).
pub async fn expectations_of<S: ExpectationStore + ?Sized>(
    store: &S,
    image: &SourceImage,
    policy: &TrackingPolicy,
) -> Result<Vec<ReplicationExpectation>, StoreError> {
    let pushes = store.pushes_of(image).await?;
    let records = store.for_image(image).await?;
    Ok(crate::push::combined_view(&pushes, records, policy))
}

macro_rules! forward_store {
    ($($pointer:ty),*) => {$(
        impl<T: ExpectationStore + ?Sized> ExpectationStore for $pointer {
            fn get(
                &self,
                key: &ExpectationKey,
            ) -> impl Future<Output = Result<Option<ReplicationExpectation>, StoreError>> + Send {
                (**self).get(key)
            }
            fn save(
                &self,
                item: &ReplicationExpectation,
                raised: &[PendingAlert],
            ) -> impl Future<Output = Result<u64, StoreError>> + Send {
                (**self).save(item, raised)
            }
            fn for_image(
                &self,
                image: &SourceImage,
            ) -> impl Future<Output = Result<Vec<ReplicationExpectation>, StoreError>> + Send {
                (**self).for_image(image)
            }
            fn latest_push(
                &self,
                image: &SourceImage,
                tag: Option<&str>,
                until: Option<DateTime<Utc>>,
            ) -> impl Future<Output = Result<Option<TrackedPush>, StoreError>> + Send {
                (**self).latest_push(image, tag, until)
            }
            fn save_push(
                &self,
                push: &TrackedPush,
            ) -> impl Future<Output = Result<u64, StoreError>> + Send {
                (**self).save_push(push)
            }
            fn incident(
                &self,
                key: &TagKey,
            ) -> impl Future<Output = Result<Option<TagIncident>, StoreError>> + Send {
                (**self).incident(key)
            }
            fn save_incident(
                &self,
                incident: &TagIncident,
                raised: &[PendingAlert],
            ) -> impl Future<Output = Result<u64, StoreError>> + Send {
                (**self).save_incident(incident, raised)
            }
            fn pushes_of(
                &self,
                image: &SourceImage,
            ) -> impl Future<Output = Result<Vec<TrackedPush>, StoreError>> + Send {
                (**self).pushes_of(image)
            }
            fn read_incident(
                &self,
                key: &ReadIncidentKey,
            ) -> impl Future<Output = Result<Option<ReadIncident>, StoreError>> + Send {
                (**self).read_incident(key)
            }
            fn save_read_incident(
                &self,
                incident: &ReadIncident,
                raised: &[PendingAlert],
            ) -> impl Future<Output = Result<u64, StoreError>> + Send {
                (**self).save_read_incident(incident, raised)
            }
            fn due(
                &self,
                now: DateTime<Utc>,
                limit: usize,
                part: SweepPart,
            ) -> impl Future<Output = Result<DueWork, StoreError>> + Send {
                (**self).due(now, limit, part)
            }
            fn open_counts(&self) -> impl Future<Output = Result<Vec<OpenCount>, StoreError>> + Send {
                (**self).open_counts()
            }
        }
    )*};
}

// A store shared by reference or behind an `Arc` is still a store.
forward_store!(&T, std::sync::Arc<T>);

macro_rules! forward_outbox {
    ($($pointer:ty),*) => {$(
        impl<T: AlertOutbox + ?Sized> AlertOutbox for $pointer {
            fn claim_due(
                &self,
                now: DateTime<Utc>,
                limit: usize,
            ) -> impl Future<Output = Result<Claimed, StoreError>> + Send {
                (**self).claim_due(now, limit)
            }
            fn delivered(&self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
                (**self).delivered(id)
            }
            fn retry_later(
                &self,
                pending: &PendingAlert,
            ) -> impl Future<Output = Result<(), StoreError>> + Send {
                (**self).retry_later(pending)
            }
            fn undelivered(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
                (**self).undelivered()
            }
            fn set_aside(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
                (**self).set_aside()
            }
        }
    )*};
}

forward_outbox!(&T, std::sync::Arc<T>);

/// A source registry's replication rules as some container last saw them: from a
/// `PutReplicationConfiguration` event (as of the event's time) or from `DescribeRegistry`
/// (as of the read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRules {
    pub configuration: ReplicationConfiguration,
    pub seen_at: DateTime<Utc>,
}

/// The one shared record of each source registry's rules, so that a rules change one
/// container learns reaches every other within one cheap read (see
/// [`crate::pipeline::PipelineSettings::rules_check_interval`]). The backfill keeps the rules
/// its last plan saw in the same record.
pub trait RulesRecord: Send + Sync {
    /// The rules recorded for `registry`, if any.
    fn recorded_rules(
        &self,
        registry: &Destination,
    ) -> impl Future<Output = Result<Option<RecordedRules>, StoreError>> + Send;

    /// Records `rules` unless rules seen at or after `rules.seen_at` are recorded already;
    /// whether it was written.
    fn record_rules(
        &self,
        registry: &Destination,
        rules: &RecordedRules,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

macro_rules! forward_rules {
    ($($pointer:ty),*) => {$(
        impl<T: RulesRecord + ?Sized> RulesRecord for $pointer {
            fn recorded_rules(
                &self,
                registry: &Destination,
            ) -> impl Future<Output = Result<Option<RecordedRules>, StoreError>> + Send {
                (**self).recorded_rules(registry)
            }
            fn record_rules(
                &self,
                registry: &Destination,
                rules: &RecordedRules,
            ) -> impl Future<Output = Result<bool, StoreError>> + Send {
                (**self).record_rules(registry, rules)
            }
        }
    )*};
}

forward_rules!(&T, std::sync::Arc<T>);

/// Open records of one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCount {
    pub destination: Destination,
    pub pending: u64,
    pub overdue: u64,
}

/// Counts open images per destination, in destination order, from (destination, state, how
/// many items): an open push counts as pending in each of its destinations.
pub fn count_open<'a>(
    open: impl IntoIterator<Item = (&'a Destination, ExpectationState, u64)>,
) -> Vec<OpenCount> {
    let mut counts: BTreeMap<Destination, (u64, u64)> = BTreeMap::new();
    for (destination, state, items) in open {
        let entry = counts.entry(destination.clone()).or_default();
        match state {
            ExpectationState::Pending => entry.0 += items,
            ExpectationState::Overdue | ExpectationState::NotStarted => entry.1 += items,
            _ => {}
        }
    }
    counts
        .into_iter()
        .map(|(destination, (pending, overdue))| OpenCount {
            destination,
            pending,
            overdue,
        })
        .collect()
}

/// An [`ExpectationStore`] and [`AlertOutbox`] in maps, for unit tests of the core and its
/// benchmark.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    records: Mutex<HashMap<ExpectationKey, ReplicationExpectation, BuildHasherDefault<FxHasher>>>,
    pushes: Mutex<BTreeMap<PushName, TrackedPush>>,
    incidents: Mutex<BTreeMap<TagKey, TagIncident>>,
    read_incidents: Mutex<BTreeMap<ReadIncidentKey, ReadIncident>>,
    outbox: Mutex<BTreeMap<String, PendingAlert>>,
    rules: Mutex<HashMap<Destination, RecordedRules>>,
}

/// What names a push: the image, its tag, and when it was pushed.
type PushName = (SourceImage, Option<String>, DateTime<Utc>);

/// The multiply-rotate hash of rustc's `FxHasher`: keys here are our own, never hostile, so
/// SipHash's protection against collision attacks buys nothing and costs a tenth of the core's
/// benchmark time.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        for &byte in chunks.remainder() {
            self.add(u64::from(byte));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl InMemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every destination as a reader sees it ([`expectations_of`]), in key order.
    pub fn all(&self) -> Vec<ReplicationExpectation> {
        let records: Vec<ReplicationExpectation> = self.lock().values().cloned().collect();
        let pushes: Vec<TrackedPush> = self.push_map().values().cloned().collect();
        crate::push::combined_view(&pushes, records, &TrackingPolicy::default())
    }

    /// The destination records alone: what had to be written per destination.
    pub fn records(&self) -> Vec<ReplicationExpectation> {
        let mut all: Vec<ReplicationExpectation> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Every push, in key order.
    pub fn pushes(&self) -> Vec<TrackedPush> {
        self.push_map().values().cloned().collect()
    }

    fn push_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<PushName, TrackedPush>> {
        self.pushes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn incident_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<TagKey, TagIncident>> {
        self.incidents.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_incident_map(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<ReadIncidentKey, ReadIncident>> {
        self.read_incidents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Every read incident, open or resolved, in key order.
    pub fn read_incidents(&self) -> Vec<ReadIncident> {
        self.read_incident_map().values().cloned().collect()
    }

    /// Every tag incident, open or resolved, in key order.
    pub fn incidents(&self) -> Vec<TagIncident> {
        self.incident_map().values().cloned().collect()
    }

    /// Every alert waiting for delivery, by id.
    pub fn pending_alerts(&self) -> Vec<PendingAlert> {
        self.pending().values().cloned().collect()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PendingAlert>> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        HashMap<ExpectationKey, ReplicationExpectation, BuildHasherDefault<FxHasher>>,
    > {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The version a write from `read` stores, if `stored` is still what was read (0: nothing).
/// Stores `item` under `key` if the version stored there (0: none) is still the one `item`
/// was read with; the version now stored.
fn put_versioned<K: Ord + Clone + std::fmt::Display, V: Clone>(
    map: &mut BTreeMap<K, V>,
    key: &K,
    item: &V,
    version: fn(&mut V) -> &mut u64,
) -> Result<u64, StoreError> {
    let stored = map.get_mut(key).map_or(0, |stored| *version(stored));
    let mut next = item.clone();
    let written = versioned(stored, *version(&mut next), key)?;
    *version(&mut next) = written;
    map.insert(key.clone(), next);
    Ok(written)
}

fn versioned(stored: u64, read: u64, item: impl std::fmt::Display) -> Result<u64, StoreError> {
    if stored != read {
        return Err(StoreError::Conflict {
            item: item.to_string(),
        });
    }
    Ok(read + 1)
}

impl InMemoryStore {
    /// Keeps the alerts a write raised as pending, as the write that raised them.
    fn keep_raised(&self, raised: &[PendingAlert]) {
        let mut outbox = self.pending();
        for pending in raised {
            outbox.insert(pending.id(), pending.clone());
        }
    }
}

impl ExpectationStore for InMemoryStore {
    async fn get(
        &self,
        key: &ExpectationKey,
    ) -> Result<Option<ReplicationExpectation>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    async fn save(
        &self,
        item: &ReplicationExpectation,
        raised: &[PendingAlert],
    ) -> Result<u64, StoreError> {
        let mut records = self.lock();
        let stored = records.get(&item.key).map_or(0, |r| r.version);
        let version = versioned(stored, item.version, &item.key)?;
        let mut next = item.clone();
        next.version = version;
        match records.get_mut(&item.key) {
            Some(slot) => *slot = next,
            None => {
                records.insert(item.key.clone(), next);
            }
        }
        self.keep_raised(raised);
        Ok(version)
    }

    async fn for_image(
        &self,
        image: &SourceImage,
    ) -> Result<Vec<ReplicationExpectation>, StoreError> {
        Ok(self
            .lock()
            .values()
            .filter(|r| &r.key.image == image)
            .cloned()
            .collect())
    }

    async fn latest_push(
        &self,
        image: &SourceImage,
        tag: Option<&str>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Option<TrackedPush>, StoreError> {
        // The pushes of one image and tag are one run of the map, in time order.
        let tag = tag.map(str::to_owned);
        let first = (image.clone(), tag.clone(), DateTime::<Utc>::MIN_UTC);
        let last = (
            image.clone(),
            tag,
            until.unwrap_or(DateTime::<Utc>::MAX_UTC),
        );
        Ok(self
            .push_map()
            .range(first..=last)
            .next_back()
            .map(|(_, push)| push.clone()))
    }

    async fn save_push(&self, push: &TrackedPush) -> Result<u64, StoreError> {
        let mut pushes = self.push_map();
        let key = (push.image.clone(), push.tag.clone(), push.pushed_at);
        let stored = pushes.get(&key).map_or(0, |p| p.version);
        let version = versioned(
            stored,
            push.version,
            format!("{} (tag {:?})", push.image, push.tag),
        )?;
        let mut next = push.clone();
        next.version = version;
        pushes.insert(key, next);
        Ok(version)
    }

    async fn incident(&self, key: &TagKey) -> Result<Option<TagIncident>, StoreError> {
        Ok(self.incident_map().get(key).cloned())
    }

    async fn save_incident(
        &self,
        incident: &TagIncident,
        raised: &[PendingAlert],
    ) -> Result<u64, StoreError> {
        let version = put_versioned(&mut self.incident_map(), &incident.key, incident, |i| {
            &mut i.version
        })?;
        self.keep_raised(raised);
        Ok(version)
    }

    async fn read_incident(
        &self,
        key: &ReadIncidentKey,
    ) -> Result<Option<ReadIncident>, StoreError> {
        Ok(self.read_incident_map().get(key).cloned())
    }

    async fn save_read_incident(
        &self,
        incident: &ReadIncident,
        raised: &[PendingAlert],
    ) -> Result<u64, StoreError> {
        let version = put_versioned(
            &mut self.read_incident_map(),
            &incident.key,
            incident,
            |i| &mut i.version,
        )?;
        self.keep_raised(raised);
        Ok(version)
    }

    async fn pushes_of(&self, image: &SourceImage) -> Result<Vec<TrackedPush>, StoreError> {
        Ok(self
            .push_map()
            .values()
            .filter(|p| &p.image == image)
            .cloned()
            .collect())
    }

    async fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        part: SweepPart,
    ) -> Result<DueWork, StoreError> {
        let mine = |image: &SourceImage| part.holds(image_bucket(&image.to_string()));
        let mut incidents: Vec<TagIncident> = self
            .incident_map()
            .values()
            .filter(|i| {
                i.next_check_at.is_some_and(|at| at <= now)
                    && part.holds(image_bucket(&i.key.to_string()))
            })
            .cloned()
            .collect();
        incidents.sort_by_key(|i| i.next_check_at);
        let mut records: Vec<ReplicationExpectation> = self
            .lock()
            .values()
            .filter(|r| r.next_check_at.is_some_and(|at| at <= now) && mine(&r.key.image))
            .cloned()
            .collect();
        let mut pushes: Vec<TrackedPush> = self
            .push_map()
            .values()
            .filter(|p| p.next_check_at().is_some_and(|at| at <= now) && mine(&p.image))
            .cloned()
            .collect();
        records.sort_by(|a, b| {
            a.next_check_at
                .cmp(&b.next_check_at)
                .then(a.key.cmp(&b.key))
        });
        pushes.sort_by_key(TrackedPush::next_check_at);
        let (rechecks, firsts): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(ReplicationExpectation::is_recheck);
        // First verdicts, earliest first across pushes and records, up to `limit`.
        let (mut taken_records, mut taken_pushes) = (0, 0);
        while taken_records + taken_pushes < limit
            && (taken_records < firsts.len() || taken_pushes < pushes.len())
        {
            let record_at = firsts.get(taken_records).and_then(|r| r.next_check_at);
            let push_at = pushes
                .get(taken_pushes)
                .and_then(TrackedPush::next_check_at);
            match (record_at, push_at) {
                (Some(r), Some(p)) if r <= p => taken_records += 1,
                (_, Some(_)) => taken_pushes += 1,
                _ => taken_records += 1,
            }
        }
        let mut more = taken_records + taken_pushes < firsts.len() + pushes.len();
        let mut records = firsts;
        records.truncate(taken_records);
        pushes.truncate(taken_pushes);
        // Then the rechecks, records and incidents earliest first, within their budget.
        let budget = recheck_budget(limit, taken_records + taken_pushes);
        more |= rechecks.len() + incidents.len() > budget;
        let (mut taken_rechecks, mut taken_incidents) = (0, 0);
        while taken_rechecks + taken_incidents < budget
            && (taken_rechecks < rechecks.len() || taken_incidents < incidents.len())
        {
            let record_at = rechecks.get(taken_rechecks).and_then(|r| r.next_check_at);
            let incident_at = incidents.get(taken_incidents).and_then(|i| i.next_check_at);
            match (record_at, incident_at) {
                (Some(r), Some(i)) if r <= i => taken_rechecks += 1,
                (_, Some(_)) => taken_incidents += 1,
                _ => taken_rechecks += 1,
            }
        }
        records.extend(rechecks.into_iter().take(taken_rechecks));
        incidents.truncate(taken_incidents);
        Ok(DueWork {
            pushes,
            records,
            incidents,
            more,
        })
    }

    async fn open_counts(&self) -> Result<Vec<OpenCount>, StoreError> {
        let records = self.lock();
        let pushes = self.push_map();
        let open_records = records
            .values()
            .filter(|r| !r.state.is_closed())
            .map(|r| (&r.key.destination, r.state, 1));
        let open_pushes = pushes.values().filter(|p| p.is_open()).flat_map(|p| {
            p.destinations
                .iter()
                .map(|d| (d, ExpectationState::Pending, 1))
        });
        Ok(count_open(open_records.chain(open_pushes)))
    }
}

impl AlertOutbox for InMemoryStore {
    async fn claim_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Claimed, StoreError> {
        let mut outbox = self.pending();
        let mut due: Vec<&mut PendingAlert> = outbox
            .values_mut()
            .filter(|p| p.next_attempt_at <= now)
            .collect();
        due.sort_by_key(|p| p.next_attempt_at);
        // Kept as values, never unreadable: nothing to set aside here.
        Ok(Claimed {
            alerts: due
                .into_iter()
                .take(limit)
                .map(|p| {
                    let claimed = p.clone();
                    p.next_attempt_at = now + CLAIM_LEASE;
                    claimed
                })
                .collect(),
            set_aside: Vec::new(),
        })
    }

    async fn delivered(&self, id: &str) -> Result<(), StoreError> {
        self.pending().remove(id);
        Ok(())
    }

    async fn retry_later(&self, pending: &PendingAlert) -> Result<(), StoreError> {
        self.pending().insert(pending.id(), pending.clone());
        Ok(())
    }

    async fn undelivered(&self) -> Result<u64, StoreError> {
        Ok(self.pending().len() as u64)
    }

    async fn set_aside(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

impl RulesRecord for InMemoryStore {
    async fn recorded_rules(
        &self,
        registry: &Destination,
    ) -> Result<Option<RecordedRules>, StoreError> {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        Ok(rules.get(registry).cloned())
    }

    async fn record_rules(
        &self,
        registry: &Destination,
        rules: &RecordedRules,
    ) -> Result<bool, StoreError> {
        let mut recorded = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        if recorded
            .get(registry)
            .is_some_and(|r| r.seen_at >= rules.seen_at)
        {
            return Ok(false);
        }
        recorded.insert(registry.clone(), rules.clone());
        Ok(true)
    }
}

/// The behaviour every [`ExpectationStore`] must show. Each function takes a fresh, empty
/// store; [`crate::expectation_store_contract!`] turns them into one `#[tokio::test]` each.
#[cfg(any(test, feature = "contract-tests"))]
// Test support: a panic is the failure report.
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod contract {
    use chrono::{TimeDelta, TimeZone, Utc};

    use super::{ExpectationStore, RecordedRules, RulesRecord, StoreError, SweepPart};
    use crate::alerts::Alert;
    use crate::incident::{
        Divergence, DivergenceCause, ResolutionReason, TagIncident, TagObservation,
    };
    use crate::model::{
        AccountId, Destination, Digest, ExpectationKey, Region, RepositoryName, SourceImage, TagKey,
    };
    use crate::outbox::{AlertOutbox, CLAIM_LEASE, FIRST_RETRY_AFTER, PendingAlert};
    use crate::push::{PushOutcome, TrackedPush};
    use crate::tracking::{
        AlertKind, ExpectationState, Observation, ReplicationExpectation, TagArrival,
        TrackingPolicy,
    };

    /// 25 destination Regions: the most a replication configuration holds, the size a push
    /// item must fit in one write unit with.
    pub const TWENTY_FIVE_REGIONS: [&str; 25] = [
        "us-east-1",
        "us-east-2",
        "us-west-1",
        "us-west-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "eu-central-1",
        "eu-north-1",
        "eu-south-1",
        "ap-south-1",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-east-1",
        "ca-central-1",
        "sa-east-1",
        "me-south-1",
        "af-south-1",
        "il-central-1",
        "mx-central-1",
        "ap-southeast-3",
        "eu-central-2",
    ];

    fn at(minutes: i64) -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
            .single()
            .expect("valid time")
            + TimeDelta::minutes(minutes)
    }

    fn image(n: u8) -> SourceImage {
        SourceImage {
            registry: Destination::new(
                Region::parse("us-west-2").expect("region"),
                AccountId::parse("111111111111").expect("account"),
            ),
            repository: RepositoryName::parse("team-a/web").expect("repository"),
            digest: Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32)))
                .expect("digest"),
        }
    }

    fn key(n: u8, tag: Option<&str>, region: &str, account: &str) -> ExpectationKey {
        ExpectationKey {
            image: image(n),
            tag: tag.map(str::to_owned),
            destination: Destination::new(
                Region::parse(region).expect("region"),
                AccountId::parse(account).expect("account"),
            ),
            occurrence: at(0),
        }
    }

    /// The record of the push of `key`'s image and tag made at `at(minutes)`.
    fn pushed(mut key: ExpectationKey, minutes: i64) -> ReplicationExpectation {
        key.occurrence = at(minutes);
        let mut e = ReplicationExpectation::new(key);
        e.apply(
            &Observation::Pushed { at: at(minutes) },
            &TrackingPolicy::default(),
        );
        e
    }

    pub async fn saved_record_reads_back_identically<S: ExpectationStore>(store: S) {
        let mut e = pushed(key(1, Some("v1.4.2"), "us-east-1", "111111111111"), 0);
        e.apply(
            &Observation::StillInProgress { at: at(31) },
            &TrackingPolicy::default(),
        );
        e.apply(
            &Observation::ReplicationFailed {
                at: at(33),
                failure_code: Some("ROLE_NOT_FOUND".into()),
            },
            &TrackingPolicy::default(),
        );
        assert_eq!(e.alerts.len(), 2);
        let version = store.save(&e, &[]).await.expect("save");
        assert_eq!(version, 1);
        let read = store.get(&e.key).await.expect("get").expect("present");
        let mut expected = e.clone();
        expected.version = 1;
        assert_eq!(read, expected);
        assert!(read.alerts.contains(&AlertKind::Failed));
    }

    pub async fn untagged_and_tagged_records_are_distinct<S: ExpectationStore>(store: S) {
        let untagged = pushed(key(2, None, "us-east-1", "111111111111"), 0);
        let tagged = pushed(key(2, Some("latest"), "us-east-1", "111111111111"), 1);
        store.save(&untagged, &[]).await.expect("save untagged");
        store.save(&tagged, &[]).await.expect("save tagged");
        let read = store
            .get(&untagged.key)
            .await
            .expect("get")
            .expect("present");
        assert_eq!(read.key.tag, None);
        assert_eq!(read.pushed_at, Some(at(0)));
        let read = store.get(&tagged.key).await.expect("get").expect("present");
        assert_eq!(read.key.tag.as_deref(), Some("latest"));
    }

    pub async fn missing_record_reads_as_none<S: ExpectationStore>(store: S) {
        let k = key(3, Some("v1"), "us-east-1", "111111111111");
        assert!(store.get(&k).await.expect("get").is_none());
    }

    pub async fn stale_version_is_a_conflict_and_changes_nothing<S: ExpectationStore>(store: S) {
        let e = pushed(key(4, Some("v1"), "us-east-1", "111111111111"), 0);
        store.save(&e, &[]).await.expect("first save");
        // A second writer that also read "absent" loses.
        let mut racer = e.clone();
        racer.failure_code = Some("RACER".into());
        assert!(matches!(
            store.save(&racer, &[]).await,
            Err(StoreError::Conflict { .. })
        ));
        let mut current = store.get(&e.key).await.expect("get").expect("present");
        assert_eq!(current.failure_code, None);
        // The winner's next write, from the version it read, goes through.
        current.failure_code = Some("X".into());
        assert_eq!(store.save(&current, &[]).await.expect("update"), 2);
        // And the stale copy at version 1 now conflicts.
        assert!(matches!(
            store.save(&current, &[]).await,
            Err(StoreError::Conflict { .. })
        ));
    }

    pub async fn for_image_returns_every_destination_and_tag_of_that_image_only<
        S: ExpectationStore,
    >(
        store: S,
    ) {
        let mine = [
            key(5, Some("v1"), "us-east-1", "111111111111"),
            key(5, Some("v1"), "eu-west-1", "222222222222"),
            key(5, None, "us-east-1", "111111111111"),
        ];
        for k in &mine {
            store.save(&pushed(k.clone(), 0), &[]).await.expect("save");
        }
        store
            .save(
                &pushed(key(6, Some("v1"), "us-east-1", "111111111111"), 0),
                &[],
            )
            .await
            .expect("save other image");
        let mut found: Vec<ExpectationKey> = store
            .for_image(&image(5))
            .await
            .expect("for_image")
            .into_iter()
            .map(|r| r.key)
            .collect();
        found.sort();
        let mut expected = mine.to_vec();
        expected.sort();
        assert_eq!(found, expected);
    }

    pub async fn due_returns_only_open_records_past_their_check_time_earliest_first<
        S: ExpectationStore,
    >(
        store: S,
    ) {
        let policy = TrackingPolicy::default();
        // Deadlines at 30, 35 and 40 minutes.
        let first = pushed(key(7, Some("a"), "us-east-1", "111111111111"), 0);
        let second = pushed(key(7, Some("b"), "us-east-1", "111111111111"), 5);
        let later = pushed(key(7, Some("c"), "us-east-1", "111111111111"), 10);
        let mut closed = pushed(key(7, Some("d"), "us-east-1", "111111111111"), 0);
        closed.apply(
            &Observation::Arrived {
                arrived_at: Some(at(1)),
                observed_at: at(1),
                tag: TagArrival::Present,
            },
            &policy,
        );
        for e in [&later, &closed, &second, &first] {
            store.save(e, &[]).await.expect("save");
        }
        let due = store
            .due(at(36), 100, SweepPart::WHOLE)
            .await
            .expect("due")
            .records;
        let tags: Vec<Option<String>> = due.iter().map(|r| r.key.tag.clone()).collect();
        assert_eq!(tags, vec![Some("a".to_owned()), Some("b".to_owned())]);
        assert!(
            store
                .due(at(29), 100, SweepPart::WHOLE)
                .await
                .expect("due")
                .is_empty()
        );
        assert_eq!(
            store
                .due(at(60), 1, SweepPart::WHOLE)
                .await
                .expect("due")
                .len(),
            1
        );

        // Closing a due record takes it out of the index.
        let mut now_closed = store.get(&first.key).await.expect("get").expect("present");
        now_closed.apply(
            &Observation::Arrived {
                arrived_at: Some(at(32)),
                observed_at: at(32),
                tag: TagArrival::Present,
            },
            &policy,
        );
        store.save(&now_closed, &[]).await.expect("close");
        let due = store
            .due(at(60), 100, SweepPart::WHOLE)
            .await
            .expect("due")
            .records;
        let tags: Vec<Option<String>> = due.iter().map(|r| r.key.tag.clone()).collect();
        assert_eq!(tags, vec![Some("b".to_owned()), Some("c".to_owned())]);
    }

    pub async fn overdue_records_come_back_after_the_recheck_interval<S: ExpectationStore>(
        store: S,
    ) {
        let policy = TrackingPolicy::default();
        let mut e = pushed(key(8, Some("v1"), "eu-west-1", "222222222222"), 0);
        e.apply(&Observation::StillInProgress { at: at(31) }, &policy);
        store.save(&e, &[]).await.expect("save");
        assert!(
            store
                .due(at(40), 10, SweepPart::WHOLE)
                .await
                .expect("due")
                .is_empty()
        );
        let due = store
            .due(at(46), 10, SweepPart::WHOLE)
            .await
            .expect("due")
            .records;
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].state, crate::tracking::ExpectationState::Overdue);
    }

    pub async fn open_counts_count_pending_and_overdue_per_destination<S: ExpectationStore>(
        store: S,
    ) {
        let policy = TrackingPolicy::default();
        let east = ("us-east-1", "111111111111");
        let west = ("eu-west-1", "222222222222");
        let mut overdue = pushed(key(9, Some("a"), west.0, west.1), 0);
        overdue.apply(&Observation::StillInProgress { at: at(31) }, &policy);
        let mut closed = pushed(key(9, Some("b"), east.0, east.1), 0);
        closed.apply(&Observation::SourceDeleted { at: at(2) }, &policy);
        for e in [
            pushed(key(9, Some("c"), east.0, east.1), 0),
            pushed(key(10, Some("c"), east.0, east.1), 0),
            pushed(key(9, Some("d"), west.0, west.1), 0),
            overdue,
            closed,
        ] {
            store.save(&e, &[]).await.expect("save");
        }
        let counts = open_rows(&store).await;
        assert_eq!(
            counts,
            vec![
                ("eu-west-1".to_owned(), 1, 1),
                ("us-east-1".to_owned(), 2, 0)
            ]
        );
    }

    /// (Region, pending, overdue) of each destination with open work.
    async fn open_rows<S: ExpectationStore>(store: &S) -> Vec<(String, u64, u64)> {
        store
            .open_counts()
            .await
            .expect("open counts")
            .into_iter()
            .map(|c| (c.destination.region.to_string(), c.pending, c.overdue))
            .collect()
    }

    /// The record of `push`'s first destination, FAILED at `at(minutes)`.
    fn failed(push: &TrackedPush, minutes: i64) -> ReplicationExpectation {
        let mut record = push.seed(&push.destinations[0], &TrackingPolicy::default());
        record.apply(
            &Observation::ReplicationFailed {
                at: at(minutes),
                failure_code: None,
            },
            &TrackingPolicy::default(),
        );
        record
    }

    fn tracked(n: u8, tag: Option<&str>, regions: &[&str], minutes: i64) -> TrackedPush {
        TrackedPush::new(
            image(n),
            tag.map(str::to_owned),
            regions
                .iter()
                .map(|r| {
                    Destination::new(
                        Region::parse(r).expect("region"),
                        AccountId::parse("222222222222").expect("account"),
                    )
                })
                .collect(),
            at(minutes),
            &TrackingPolicy::default(),
        )
    }

    pub async fn a_push_reads_back_identically_and_only_its_first_write_creates_it<
        S: ExpectationStore,
    >(
        store: S,
    ) {
        let regions = TWENTY_FIVE_REGIONS;
        let push = tracked(20, Some("v1.4.2"), &regions, 0);
        assert_eq!(push.destinations.len(), 25);
        let latest = async || {
            store
                .latest_push(&image(20), Some("v1.4.2"), None)
                .await
                .expect("get")
        };
        assert!(latest().await.is_none());
        assert_eq!(store.save_push(&push).await.expect("save"), 1);
        let mut expected = push.clone();
        expected.version = 1;
        assert_eq!(latest().await, Some(expected.clone()));
        // A duplicate push event loses: the first one stands.
        assert!(matches!(
            store.save_push(&push).await,
            Err(StoreError::Conflict { .. })
        ));
        // Checked from the version read: it closes, with each destination's verdict.
        let mut checked = expected.clone();
        let closed = vec![
            (
                checked.destinations[3].clone(),
                ExpectationState::Superseded,
            ),
            (checked.destinations[4].clone(), ExpectationState::TagLost),
            (
                checked.destinations[5].clone(),
                ExpectationState::NotSelected,
            ),
        ];
        checked.close(
            PushOutcome::Confirmed {
                at: at(31),
                closed,
                recorded: vec![checked.destinations[7].clone()],
            },
            &TrackingPolicy::default(),
        );
        assert_eq!(store.save_push(&checked).await.expect("close"), 2);
        checked.version = 2;
        assert_eq!(latest().await, Some(checked.clone()));
        assert!(checked.is_recorded(&checked.destinations[7]));
        assert!(matches!(
            store.save_push(&expected).await,
            Err(StoreError::Conflict { .. })
        ));
        // Untagged is its own push, and a deleted one reads back deleted.
        let mut untagged = tracked(20, None, &regions[..2], 1);
        untagged.close(
            PushOutcome::Deleted { at: at(2) },
            &TrackingPolicy::default(),
        );
        store.save_push(&untagged).await.expect("save");
        let mut all = store.pushes_of(&image(20)).await.expect("pushes");
        all.sort_by(|a, b| a.tag.cmp(&b.tag));
        let tags: Vec<Option<String>> = all.iter().map(|p| p.tag.clone()).collect();
        assert_eq!(tags, vec![None, Some("v1.4.2".to_owned())]);
        assert_eq!(all[0].outcome, PushOutcome::Deleted { at: at(2) });
        assert!(
            store
                .for_image(&image(20))
                .await
                .expect("records")
                .is_empty(),
            "pushes are not destination records"
        );
    }

    pub async fn open_pushes_are_due_at_their_deadline_beside_records<S: ExpectationStore>(
        store: S,
    ) {
        let policy = TrackingPolicy::default();
        let open = tracked(21, Some("a"), &["eu-west-1", "ap-south-1"], 0);
        let later = tracked(21, Some("b"), &["eu-west-1"], 20);
        let mut checked = tracked(22, Some("a"), &["eu-west-1"], 0);
        checked.close(
            PushOutcome::Confirmed {
                at: at(30),
                closed: vec![],
                recorded: vec![],
            },
            &TrackingPolicy::default(),
        );
        for p in [&open, &later, &checked] {
            store.save_push(p).await.expect("save");
        }
        let mut overdue = pushed(key(23, Some("v1"), "eu-west-1", "222222222222"), 0);
        overdue.apply(&Observation::StillInProgress { at: at(31) }, &policy);
        store.save(&overdue, &[]).await.expect("save");

        let due = store.due(at(31), 100, SweepPart::WHOLE).await.expect("due");
        let tags: Vec<Option<String>> = due.pushes.iter().map(|p| p.tag.clone()).collect();
        assert_eq!(tags, vec![Some("a".to_owned())]);
        assert_eq!(due.pushes[0].image, image(21));
        assert!(due.records.is_empty(), "rechecked 15 minutes later");
        assert!(!due.more);
        let due = store.due(at(60), 100, SweepPart::WHOLE).await.expect("due");
        assert_eq!((due.pushes.len(), due.records.len()), (2, 1));

        let counts = open_rows(&store).await;
        assert_eq!(
            counts,
            vec![
                ("ap-south-1".to_owned(), 1, 0),
                ("eu-west-1".to_owned(), 2, 1)
            ]
        );
    }

    /// A Region down for hours leaves thousands of OVERDUE records due before any new
    /// deadline: a round still reads every first verdict due, and the rechecks get their
    /// share beside them.
    pub async fn rechecks_never_crowd_out_first_verdicts<S: ExpectationStore>(store: S) {
        let policy = TrackingPolicy::default();
        for n in 0..12 {
            let mut overdue = pushed(key(40 + n, Some("v1"), "eu-west-1", "222222222222"), 0);
            overdue.apply(&Observation::StillInProgress { at: at(31) }, &policy);
            assert!(overdue.is_recheck());
            store.save(&overdue, &[]).await.expect("save overdue");
        }
        // First verdicts due long after the rechecks: three pushes and one record an event
        // wrote before its deadline.
        for n in 0..3 {
            store
                .save_push(&tracked(60 + n, Some("new"), &["us-east-1"], 60))
                .await
                .expect("save push");
        }
        let mut early = pushed(key(63, Some("new"), "eu-west-1", "222222222222"), 60);
        early.apply(&Observation::StillInProgress { at: at(70) }, &policy);
        assert!(!early.is_recheck(), "checked only before its deadline");
        store.save(&early, &[]).await.expect("save early");

        let due = store.due(at(95), 8, SweepPart::WHOLE).await.expect("due");
        assert_eq!(due.pushes.len(), 3, "every push due is read");
        let (rechecks, firsts): (Vec<_>, Vec<_>) = due.records.iter().partition(|r| r.is_recheck());
        assert_eq!(
            firsts.len(),
            1,
            "the record never checked since its deadline"
        );
        assert_eq!(
            rechecks.len(),
            4,
            "the room left, at least a quarter of the round"
        );
        assert!(due.more);

        // First verdicts filling the whole round still leave the rechecks their quarter.
        let due = store.due(at(95), 2, SweepPart::WHOLE).await.expect("due");
        let rechecks = due.records.iter().filter(|r| r.is_recheck()).count();
        assert_eq!(
            (due.pushes.len() + due.records.len() - rechecks, rechecks),
            (2, 1)
        );
    }

    pub async fn a_round_takes_its_limit_however_the_due_work_is_spread<S: ExpectationStore>(
        store: S,
    ) {
        // 600 pushes: a store that spreads them over shards has some shards with several
        // times the average; a round must still come back full.
        for n in 0..600u16 {
            let mut push = tracked(0, Some(&format!("build-{n}")), &["eu-west-1"], 0);
            push.image.digest = Digest::parse(&format!("sha256:{}", format!("{n:04x}").repeat(16)))
                .expect("digest");
            store.save_push(&push).await.expect("save");
        }
        let round = store.due(at(31), 500, SweepPart::WHOLE).await.expect("due");
        assert_eq!((round.len(), round.more), (500, true));
        let all = store.due(at(31), 600, SweepPart::WHOLE).await.expect("due");
        assert_eq!((all.len(), all.more), (600, false));
    }

    pub async fn each_push_of_an_image_and_tag_is_its_own_and_the_latest_before_a_time_is_found<
        S: ExpectationStore,
    >(
        store: S,
    ) {
        let latest = async |tag: Option<&str>, until: Option<i64>| {
            store
                .latest_push(&image(24), tag, until.map(at))
                .await
                .expect("latest")
                .map(|p| p.pushed_at)
        };
        assert_eq!(latest(Some("v1"), None).await, None);
        // The same image and tag pushed three times (a rollback, a re-push), and beside it
        // other tags and an untagged push.
        for minutes in [0, 40, 90] {
            let push = tracked(24, Some("v1"), &["eu-west-1"], minutes);
            store.save_push(&push).await.expect("push");
            store
                .save(&failed(&push, minutes + 1), &[])
                .await
                .expect("record");
        }
        for (tag, minutes) in [(Some("v0"), 50), (Some("v10"), 60), (None, 70)] {
            let other = tracked(24, tag, &["eu-west-1"], minutes);
            store.save_push(&other).await.expect("other push");
        }
        assert_eq!(latest(Some("v1"), None).await, Some(at(90)));
        assert_eq!(latest(Some("v1"), Some(89)).await, Some(at(40)));
        assert_eq!(
            latest(Some("v1"), Some(40)).await,
            Some(at(40)),
            "at or before"
        );
        assert_eq!(latest(Some("v1"), Some(0)).await, Some(at(0)));
        assert_eq!(latest(None, Some(80)).await, Some(at(70)));
        assert_eq!(latest(Some("v10"), Some(59)).await, None);
        // Each push's record is its own: three FAILED records of v1, one per push.
        let records = store.for_image(&image(24)).await.expect("records");
        let mut occurrences: Vec<_> = records.iter().map(|r| r.key.occurrence).collect();
        occurrences.sort();
        assert_eq!(occurrences, vec![at(0), at(40), at(90)]);
        assert_eq!(store.pushes_of(&image(24)).await.expect("pushes").len(), 6);
    }

    fn tag_key(tag: &str) -> TagKey {
        TagKey {
            registry: image(25).registry,
            repository: image(25).repository,
            tag: tag.to_owned(),
            destination: Destination::new(
                Region::parse("eu-west-1").expect("region"),
                AccountId::parse("222222222222").expect("account"),
            ),
        }
    }

    pub async fn an_incident_reads_back_is_due_while_open_and_raises_with_its_write<
        S: ExpectationStore + AlertOutbox,
    >(
        store: S,
    ) {
        let policy = TrackingPolicy::default();
        assert_eq!(
            store.incident(&tag_key("latest")).await.expect("read"),
            None
        );
        let divergence = Divergence {
            cause: DivergenceCause::OlderReplicationLast,
            expected: image(25).digest,
            found: Some(image(26).digest),
        };
        let mut incident =
            TagIncident::open(tag_key("latest"), at(31), divergence.clone(), &policy);
        let opened = incident.apply(
            &TagObservation::Diverged {
                at: at(31),
                divergence,
            },
            &policy,
        );
        let raised = PendingAlert::raised(Alert::for_incident(
            opened.raised.expect("raised"),
            &incident,
            at(31),
        ));
        assert_eq!(
            store
                .save_incident(&incident, std::slice::from_ref(&raised))
                .await
                .expect("open"),
            1
        );
        assert_eq!(store.undelivered().await.expect("count"), 1);
        assert!(matches!(
            store.save_incident(&incident, &[]).await,
            Err(StoreError::Conflict { .. })
        ));
        incident.version = 1;
        let read = store
            .incident(&tag_key("latest"))
            .await
            .expect("read")
            .expect("present");
        assert_eq!(read, incident);
        assert!(
            store
                .due(at(40), 10, SweepPart::WHOLE)
                .await
                .expect("due")
                .incidents
                .is_empty()
        );
        let due = store.due(at(46), 10, SweepPart::WHOLE).await.expect("due");
        assert_eq!(due.incidents, vec![incident.clone()]);
        // Resolved: out of the due index, kept until its TTL.
        incident.apply(
            &TagObservation::Settled {
                at: at(46),
                reason: ResolutionReason::Converged,
            },
            &policy,
        );
        store.save_incident(&incident, &[]).await.expect("resolve");
        incident.version = 2;
        let read = store
            .incident(&tag_key("latest"))
            .await
            .expect("read")
            .expect("present");
        assert_eq!(read, incident);
        assert!(
            store
                .due(at(600), 10, SweepPart::WHOLE)
                .await
                .expect("due")
                .incidents
                .is_empty()
        );
    }

    pub async fn parts_split_the_due_work_without_overlap<S: ExpectationStore>(store: S) {
        for n in 30..42 {
            store
                .save_push(&tracked(n, Some("v1"), &["eu-west-1"], 0))
                .await
                .expect("save");
        }
        let whole = store.due(at(31), 100, SweepPart::WHOLE).await.expect("due");
        assert_eq!(whole.pushes.len(), 12);
        let mut seen = Vec::new();
        for part in SweepPart::all(4) {
            let due = store.due(at(31), 1_000, part).await.expect("due");
            seen.extend(due.pushes.into_iter().map(|p| p.image));
        }
        seen.sort();
        let before = seen.len();
        seen.dedup();
        assert_eq!(
            (before, seen.len()),
            (12, 12),
            "each push in exactly one part"
        );
    }

    pub async fn a_raised_alert_is_stored_with_its_state_change_and_only_then<
        S: ExpectationStore + AlertOutbox,
    >(
        store: S,
    ) {
        let policy = TrackingPolicy::default();
        let mut e = pushed(key(11, Some("v1"), "eu-west-1", "222222222222"), 0);
        store.save(&e, &[]).await.expect("push");
        e.version = 1;
        e.apply(&Observation::StillInProgress { at: at(31) }, &policy);
        let raised = PendingAlert::raised(Alert::new(AlertKind::Overdue, &e, at(31)));
        // A writer that lost the race stores neither the state nor the alert.
        let mut stale = e.clone();
        stale.version = 0;
        assert!(matches!(
            store.save(&stale, std::slice::from_ref(&raised)).await,
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(store.undelivered().await.expect("count"), 0);
        store
            .save(&e, std::slice::from_ref(&raised))
            .await
            .expect("raise");
        assert_eq!(store.undelivered().await.expect("count"), 1);
        // Its raiser has FIRST_RETRY_AFTER to send it; only then is it anyone's to send.
        assert!(
            store
                .claim_due(at(32), 10)
                .await
                .expect("claim")
                .alerts
                .is_empty()
        );
        let retry_at = at(31) + FIRST_RETRY_AFTER;
        let claimed = store.claim_due(retry_at, 10).await.expect("claim").alerts;
        assert_eq!(claimed, vec![raised.clone()]);
        assert!(
            store
                .claim_due(retry_at, 10)
                .await
                .expect("claim")
                .alerts
                .is_empty(),
            "claimed: a second sweep leaves it alone"
        );
        // A sink still down: it comes back after its backoff, with what was delivered.
        let mut failed = claimed[0].clone();
        failed.delivered_to.insert("sns".to_owned());
        failed.failed_at(retry_at);
        store.retry_later(&failed).await.expect("retry later");
        let again = store
            .claim_due(failed.next_attempt_at, 10)
            .await
            .expect("claim");
        assert_eq!(again.alerts, vec![failed.clone()]);
        assert_eq!(again.set_aside, vec![]);
        store.delivered(&failed.id()).await.expect("delivered");
        assert_eq!(store.undelivered().await.expect("count"), 0);
        assert!(
            store
                .claim_due(failed.next_attempt_at + CLAIM_LEASE, 10)
                .await
                .expect("claim")
                .alerts
                .is_empty()
        );
        assert_eq!(store.set_aside().await.expect("count"), 0);
    }

    pub async fn the_newest_rules_win_whatever_the_order_they_are_recorded_in<
        S: ExpectationStore + RulesRecord,
    >(
        store: S,
    ) {
        let registry = image(12).registry;
        assert_eq!(store.recorded_rules(&registry).await.expect("read"), None);
        let rules = |prefix: &str, minutes: i64| {
            RecordedRules {
            configuration: crate::rules::ReplicationConfiguration::from_json(
                format!(
                    r#"{{"rules":[{{"destinations":[{{"region":"eu-west-1","registryId":"222222222222"}}],"repositoryFilters":[{{"filter":"{prefix}","filterType":"PREFIX_MATCH"}}]}}]}}"#
                )
                .as_bytes(),
            )
            .expect("rules"),
            seen_at: at(minutes),
        }
        };
        assert!(
            store
                .record_rules(&registry, &rules("a", 5))
                .await
                .expect("record")
        );
        assert!(
            !store
                .record_rules(&registry, &rules("b", 3))
                .await
                .expect("older"),
            "an older view does not replace a newer one"
        );
        assert!(
            store
                .record_rules(&registry, &rules("c", 9))
                .await
                .expect("newer")
        );
        assert_eq!(
            store.recorded_rules(&registry).await.expect("read"),
            Some(rules("c", 9))
        );
    }

    /// Generates one `#[tokio::test]` per contract case; `$make` is an expression evaluating
    /// to a future that yields a fresh, empty store.
    #[macro_export]
    macro_rules! expectation_store_contract {
        ($make:expr) => {
            $crate::expectation_store_contract!(@cases $make;
                saved_record_reads_back_identically,
                untagged_and_tagged_records_are_distinct,
                missing_record_reads_as_none,
                stale_version_is_a_conflict_and_changes_nothing,
                for_image_returns_every_destination_and_tag_of_that_image_only,
                due_returns_only_open_records_past_their_check_time_earliest_first,
                overdue_records_come_back_after_the_recheck_interval,
                open_counts_count_pending_and_overdue_per_destination,
                a_push_reads_back_identically_and_only_its_first_write_creates_it,
                open_pushes_are_due_at_their_deadline_beside_records,
                parts_split_the_due_work_without_overlap,
                each_push_of_an_image_and_tag_is_its_own_and_the_latest_before_a_time_is_found,
                an_incident_reads_back_is_due_while_open_and_raises_with_its_write,
                a_round_takes_its_limit_however_the_due_work_is_spread,
                rechecks_never_crowd_out_first_verdicts,
                a_raised_alert_is_stored_with_its_state_change_and_only_then,
                the_newest_rules_win_whatever_the_order_they_are_recorded_in,
            );
        };
        (@cases $make:expr; $($case:ident),* $(,)?) => {
            $(
                #[tokio::test]
                async fn $case() {
                    $crate::store::contract::$case($make.await).await;
                }
            )*
        };
    }
}

#[cfg(test)]
mod in_memory_contract {
    use super::InMemoryStore;

    crate::expectation_store_contract!(async { InMemoryStore::new() });
}
