//! A backfill run on AWS: the record the functions share while copy jobs run in parallel.
//!
//! `backfill-plan` creates one [`BackfillRun`] and enqueues one copy job per (image,
//! destination); any number of `backfill-copy` invocations take the jobs. SQS delivers at
//! least once and a Lambda may time out after doing the work, so a job can be reported twice:
//! [`BackfillRunStore::record_job`] counts a job only the first time (one conditional write
//! per job, together with the run's counters), and reports the run complete exactly once, to
//! the invocation whose job was the last one, which then sends the completion notification.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Destination, Digest, RepositoryName};
use crate::rules::ReplicationConfiguration;
use crate::store::StoreError;

/// One run, with its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackfillRun {
    pub id: String,
    pub source: Destination,
    pub started_at: DateTime<Utc>,
    /// Every destination the run copies to, with its planned image count.
    #[serde(with = "planned_per_destination")]
    pub destinations: BTreeMap<Destination, u64>,
    /// Copy jobs enqueued.
    pub planned: u64,
    /// Estimated bytes of the planned images (from `DescribeImages` sizes).
    pub planned_bytes: u64,
    /// Jobs done: the image is now in the destination (copied, or found already there).
    pub copied: u64,
    /// Jobs that ended in an error that retrying will not fix, or that exhausted retries.
    pub failed: u64,
    /// Bytes of blobs uploaded so far.
    pub bytes_uploaded: u64,
    pub completed_at: Option<DateTime<Utc>>,
}

/// JSON object keys must be strings: the map travels as `[{"region", "registryId", "planned"}]`.
mod planned_per_destination {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::model::Destination;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        #[serde(flatten)]
        destination: Destination,
        planned: u64,
    }

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<Destination, u64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let entries: Vec<Entry> = map
            .iter()
            .map(|(destination, planned)| Entry {
                destination: destination.clone(),
                planned: *planned,
            })
            .collect();
        entries.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<Destination, u64>, D::Error> {
        let entries = Vec::<Entry>::deserialize(deserializer)?;
        Ok(entries
            .into_iter()
            .map(|e| (e.destination, e.planned))
            .collect())
    }
}

impl BackfillRun {
    pub fn new(
        id: impl Into<String>,
        source: Destination,
        started_at: DateTime<Utc>,
        destinations: BTreeMap<Destination, u64>,
        planned_bytes: u64,
    ) -> Self {
        let planned = destinations.values().sum();
        Self {
            id: id.into(),
            source,
            started_at,
            destinations,
            planned,
            planned_bytes,
            copied: 0,
            failed: 0,
            bytes_uploaded: 0,
            completed_at: None,
        }
    }

    /// Jobs not yet reported.
    pub fn remaining(&self) -> u64 {
        self.planned.saturating_sub(self.copied + self.failed)
    }
}

/// The identity of a copy job within a run: the same image to the same destination is the same
/// job, however many times it is delivered.
pub fn job_id(destination: &Destination, repository: &RepositoryName, digest: &Digest) -> String {
    format!(
        "{}#{}#{}@{}",
        destination.region, destination.registry_id, repository, digest
    )
}

/// How one job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum JobOutcome {
    /// The image is in the destination with its tags (or with the tags that did not conflict).
    Copied { bytes_uploaded: u64 },
    /// It is not, and retrying will not help (or retries ran out).
    Failed { reason: String },
}

/// What recording a job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecorded {
    /// `false` when this job had already been recorded (a redelivery): nothing was counted.
    pub first_time: bool,
    /// The run, when this job was its last one: notify its completion (exactly once).
    pub completed_run: Option<BackfillRun>,
}

/// Where runs are kept (the tracking table on AWS).
pub trait BackfillRunStore: Send + Sync {
    /// Creates the run; `Ok(false)` when a run with this id exists already (a retried plan
    /// invocation), which is then left as it is.
    fn create_run(
        &self,
        run: &BackfillRun,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Counts `outcome` for job `job_id` of run `run_id`, once per job.
    fn record_job(
        &self,
        run_id: &str,
        job_id: &str,
        outcome: &JobOutcome,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<JobRecorded, StoreError>> + Send;

    fn run(
        &self,
        run_id: &str,
    ) -> impl Future<Output = Result<Option<BackfillRun>, StoreError>> + Send;

    /// The replication configuration the last plan saw for `source`: what
    /// `--since-config-change` compares the current one with.
    fn last_configuration(
        &self,
        source: &Destination,
    ) -> impl Future<Output = Result<Option<ReplicationConfiguration>, StoreError>> + Send;

    fn remember_configuration(
        &self,
        source: &Destination,
        configuration: &ReplicationConfiguration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// [`BackfillRunStore`] in memory, for tests and for the CLI (which runs one process).
#[derive(Debug, Default)]
pub struct InMemoryRunStore {
    state: Mutex<RunState>,
}

#[derive(Debug, Default)]
struct RunState {
    runs: BTreeMap<String, BackfillRun>,
    jobs: BTreeSet<(String, String)>,
    configurations: BTreeMap<Destination, ReplicationConfiguration>,
}

impl InMemoryRunStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, RunState> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Applies one first-time job report to `run`; returns whether it completed the run.
pub fn count_job(run: &mut BackfillRun, outcome: &JobOutcome, at: DateTime<Utc>) -> bool {
    match outcome {
        JobOutcome::Copied { bytes_uploaded } => {
            run.copied += 1;
            run.bytes_uploaded += bytes_uploaded;
        }
        JobOutcome::Failed { .. } => run.failed += 1,
    }
    if run.remaining() == 0 && run.completed_at.is_none() {
        run.completed_at = Some(at);
        return true;
    }
    false
}

impl BackfillRunStore for InMemoryRunStore {
    async fn create_run(&self, run: &BackfillRun) -> Result<bool, StoreError> {
        let mut state = self.lock();
        if state.runs.contains_key(&run.id) {
            return Ok(false);
        }
        state.runs.insert(run.id.clone(), run.clone());
        Ok(true)
    }

    async fn record_job(
        &self,
        run_id: &str,
        job_id: &str,
        outcome: &JobOutcome,
        at: DateTime<Utc>,
    ) -> Result<JobRecorded, StoreError> {
        let mut state = self.lock();
        if !state.runs.contains_key(run_id) {
            return Err(StoreError::Corrupt {
                id: run_id.to_owned(),
                message: "a job of a run that does not exist".to_owned(),
            });
        }
        if !state.jobs.insert((run_id.to_owned(), job_id.to_owned())) {
            return Ok(JobRecorded {
                first_time: false,
                completed_run: None,
            });
        }
        let run = state
            .runs
            .get_mut(run_id)
            .ok_or_else(|| StoreError::Corrupt {
                id: run_id.to_owned(),
                message: "run vanished".to_owned(),
            })?;
        let completed = count_job(run, outcome, at);
        Ok(JobRecorded {
            first_time: true,
            completed_run: completed.then(|| run.clone()),
        })
    }

    async fn run(&self, run_id: &str) -> Result<Option<BackfillRun>, StoreError> {
        Ok(self.lock().runs.get(run_id).cloned())
    }

    async fn last_configuration(
        &self,
        source: &Destination,
    ) -> Result<Option<ReplicationConfiguration>, StoreError> {
        Ok(self.lock().configurations.get(source).cloned())
    }

    async fn remember_configuration(
        &self,
        source: &Destination,
        configuration: &ReplicationConfiguration,
    ) -> Result<(), StoreError> {
        self.lock()
            .configurations
            .insert(source.clone(), configuration.clone());
        Ok(())
    }
}

/// The behaviour every [`BackfillRunStore`] must have; run by the in-memory store's tests and
/// by the DynamoDB store's tests against the local AWS (`contract-tests` feature).
#[cfg(any(test, feature = "contract-tests"))]
// Test support: a panic is the failure report.
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod contract {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::model::{AccountId, Region};

    fn destination(region: &str) -> Destination {
        Destination::new(
            Region::parse(region).expect("region"),
            AccountId::parse("222222222222").expect("account"),
        )
    }

    /// A run `id` from us-west-2/111111111111 with `planned` images per destination Region.
    pub fn sample_run(id: &str, planned: &[(&str, u64)]) -> BackfillRun {
        let source = Destination::new(
            Region::parse("us-west-2").expect("region"),
            AccountId::parse("111111111111").expect("account"),
        );
        let at = Utc
            .with_ymd_and_hms(2026, 11, 28, 6, 0, 0)
            .single()
            .expect("time");
        BackfillRun::new(
            id,
            source,
            at,
            planned.iter().map(|(r, n)| (destination(r), *n)).collect(),
            1000,
        )
    }

    /// Jobs counted once however often they are reported; the last one completes the run,
    /// once; a retried plan does not reset the run; unknown runs are errors.
    pub async fn counts_each_job_once_and_completes_once(store: &impl BackfillRunStore, id: &str) {
        let run = sample_run(id, &[("eu-west-1", 2), ("us-east-1", 1)]);
        assert_eq!(run.planned, 3);
        assert!(store.create_run(&run).await.expect("create"));
        let at = run.started_at;
        let copied = JobOutcome::Copied { bytes_uploaded: 10 };

        let first = store.record_job(id, "a", &copied, at).await.expect("a");
        assert!(first.first_time && first.completed_run.is_none());
        let again = store
            .record_job(id, "a", &copied, at)
            .await
            .expect("a again");
        assert!(!again.first_time && again.completed_run.is_none());
        assert!(!store.create_run(&run).await.expect("retried plan"));
        let stored = store.run(id).await.expect("read").expect("exists");
        assert_eq!((stored.copied, stored.bytes_uploaded), (1, 10), "not reset");

        let failed = JobOutcome::Failed {
            reason: "LayersNotFound".into(),
        };
        store.record_job(id, "b", &failed, at).await.expect("b");
        let last = store.record_job(id, "c", &copied, at).await.expect("c");
        let done = last.completed_run.expect("the last job completes the run");
        assert_eq!((done.copied, done.failed, done.bytes_uploaded), (2, 1, 20));
        assert_eq!(done.destinations, run.destinations);
        assert!(done.completed_at.is_some());
        let late = store
            .record_job(id, "c", &copied, at)
            .await
            .expect("c again");
        assert!(late.completed_run.is_none(), "completion is reported once");

        let unknown = format!("{id}-unknown");
        assert!(store.record_job(&unknown, "a", &copied, at).await.is_err());
        assert_eq!(store.run(&unknown).await.expect("read"), None);
    }

    /// The configuration a plan saw is read back as it was.
    pub async fn remembers_the_last_configuration(store: &impl BackfillRunStore) {
        let source = sample_run("config", &[]).source;
        assert_eq!(store.last_configuration(&source).await.expect("read"), None);
        let configuration = ReplicationConfiguration::from_json(
            br#"{"rules":[{"destinations":[{"region":"eu-west-1","registryId":"222222222222"}]}]}"#,
        )
        .expect("configuration");
        store
            .remember_configuration(&source, &configuration)
            .await
            .expect("write");
        assert_eq!(
            store.last_configuration(&source).await.expect("read"),
            Some(configuration)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Region};

    #[tokio::test]
    async fn the_in_memory_store_keeps_the_contract() {
        let store = InMemoryRunStore::default();
        contract::counts_each_job_once_and_completes_once(&store, "run-1").await;
        contract::remembers_the_last_configuration(&store).await;
    }

    #[test]
    fn job_ids_name_destination_repository_and_digest() {
        let destination = |region: &str| {
            Destination::new(
                Region::parse(region).expect("region"),
                AccountId::parse("222222222222").expect("account"),
            )
        };
        let digest = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest");
        let repository = RepositoryName::parse("team-a/web").expect("repository");
        let id = job_id(&destination("eu-west-1"), &repository, &digest);
        assert!(id.starts_with("eu-west-1#222222222222#team-a/web@sha256:abab"));
        assert_ne!(id, job_id(&destination("us-east-1"), &repository, &digest));
    }
}
