//! Applying an observation to a stored expectation: read, transition, conditional write, and
//! on a lost race read again. This is the one loop every handler shares, so the "each alert
//! raised once" guarantee of [`crate::tracking`] holds across concurrent Lambda invocations,
//! and the alerts a write raises are stored in that same write ([`crate::outbox`]).

use chrono::{DateTime, Utc};

use crate::alerts::Alert;
use crate::model::ExpectationKey;
use crate::outbox::PendingAlert;
use crate::store::{ExpectationStore, StoreError};
use crate::tracking::{Observation, ReplicationExpectation, TrackingPolicy, Transition};

/// How many times a write that lost a race is retried before giving up; each retry re-reads,
/// so this bounds contention on one record, not failures.
pub const MAX_ATTEMPTS: usize = 8;

/// Whether an observation may create a record that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// Replication outcomes create their record (a replication event may come before its
    /// push).
    Create,
    /// Deletes and sweep confirmations only touch records that exist.
    ExistingOnly,
}

/// The record after an observation and what the observation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub record: ReplicationExpectation,
    pub transition: Transition,
    /// The alerts this write raised, already stored as pending for delivery.
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TrackerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key}: still contended after {MAX_ATTEMPTS} attempts")]
    Contended { key: Box<ExpectationKey> },
}

/// Applies observations to stored expectations under one policy, at one instant (the time
/// its alerts say they were detected).
#[derive(Debug)]
pub struct Tracker<'a, S> {
    store: &'a S,
    policy: TrackingPolicy,
    now: DateTime<Utc>,
}

impl<'a, S: ExpectationStore> Tracker<'a, S> {
    pub fn new(store: &'a S, policy: TrackingPolicy, now: DateTime<Utc>) -> Self {
        Self { store, policy, now }
    }

    /// Writes `record` with the alerts `transition` raised; the version stored.
    async fn write(
        &self,
        record: &ReplicationExpectation,
        transition: &Transition,
    ) -> Result<(u64, Vec<Alert>), StoreError> {
        let alerts: Vec<Alert> = transition
            .raised
            .iter()
            .map(|kind| Alert::new(*kind, record, self.now))
            .collect();
        let pending: Vec<PendingAlert> = alerts.iter().cloned().map(PendingAlert::raised).collect();
        let version = self.store.save(record, &pending).await?;
        Ok((version, alerts))
    }

    pub fn policy(&self) -> &TrackingPolicy {
        &self.policy
    }

    /// Applies `observation` to the record named `key`. Returns `None` when there is no record
    /// and `creation` forbids making one. A duplicate observation returns an unchanged
    /// transition and writes nothing.
    pub async fn observe(
        &self,
        key: &ExpectationKey,
        observation: &Observation,
        creation: Creation,
    ) -> Result<Option<Applied>, TrackerError> {
        self.observe_from(key, observation, creation, || {
            ReplicationExpectation::new(key.clone())
        })
        .await
    }

    /// Applies `observation` to the record of `seed.key`, starting from `seed` if there is
    /// none: how a destination of a [`crate::push::TrackedPush`] gets a record of its own when
    /// something about it must be written.
    pub async fn observe_seeded(
        &self,
        seed: &ReplicationExpectation,
        observation: &Observation,
    ) -> Result<Option<Applied>, TrackerError> {
        self.observe_from(&seed.key, observation, Creation::Create, || seed.clone())
            .await
    }

    async fn observe_from(
        &self,
        key: &ExpectationKey,
        observation: &Observation,
        creation: Creation,
        fresh: impl Fn() -> ReplicationExpectation,
    ) -> Result<Option<Applied>, TrackerError> {
        for _ in 0..MAX_ATTEMPTS {
            let mut record = match self.store.get(key).await? {
                Some(record) => record,
                None if creation != Creation::ExistingOnly => fresh(),
                None => return Ok(None),
            };
            let transition = record.apply(observation, &self.policy);
            if !transition.changed {
                return Ok(Some(Applied {
                    record,
                    transition,
                    alerts: Vec::new(),
                }));
            }
            if !record.is_known() {
                return Ok(None);
            }
            match self.write(&record, &transition).await {
                Ok((version, alerts)) => {
                    record.version = version;
                    return Ok(Some(Applied {
                        record,
                        transition,
                        alerts,
                    }));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(TrackerError::Contended {
            key: Box::new(key.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Destination, Digest, Region, RepositoryName, SourceImage};
    use crate::store::InMemoryStore;
    use crate::tracking::{AlertKind, ExpectationState};
    use chrono::{TimeDelta, TimeZone, Utc};

    fn key() -> ExpectationKey {
        ExpectationKey {
            image: SourceImage {
                registry: Destination::new(
                    Region::parse("us-west-2").expect("region"),
                    AccountId::parse("111111111111").expect("account"),
                ),
                repository: RepositoryName::parse("team-a/web").expect("repo"),
                digest: Digest::parse(&format!("sha256:{}", "cd".repeat(32))).expect("digest"),
            },
            tag: Some("v1".into()),
            destination: Destination::new(
                Region::parse("eu-west-1").expect("region"),
                AccountId::parse("222222222222").expect("account"),
            ),
            occurrence: chrono::DateTime::<Utc>::default(),
        }
    }

    /// A store where another handler writes the same observation between our read and our
    /// write, once: the race the conditional write exists for.
    struct RacingStore {
        inner: InMemoryStore,
        competitor: std::sync::Mutex<Option<Observation>>,
    }

    impl ExpectationStore for RacingStore {
        async fn get(
            &self,
            key: &ExpectationKey,
        ) -> Result<Option<ReplicationExpectation>, StoreError> {
            self.inner.get(key).await
        }

        async fn save(
            &self,
            item: &ReplicationExpectation,
            raised: &[PendingAlert],
        ) -> Result<u64, StoreError> {
            let competitor = self.competitor.lock().expect("lock").take();
            if let Some(observation) = competitor {
                let mut theirs = self.inner.get(&item.key).await?.expect("exists");
                let transition = theirs.apply(&observation, &TrackingPolicy::default());
                assert_eq!(
                    transition.raised,
                    vec![AlertKind::Overdue],
                    "competitor alerts"
                );
                self.inner.save(&theirs, &[]).await?;
            }
            self.inner.save(item, raised).await
        }

        async fn for_image(
            &self,
            image: &SourceImage,
        ) -> Result<Vec<ReplicationExpectation>, StoreError> {
            self.inner.for_image(image).await
        }

        async fn latest_push(
            &self,
            image: &SourceImage,
            tag: Option<&str>,
            until: Option<chrono::DateTime<Utc>>,
        ) -> Result<Option<crate::push::TrackedPush>, StoreError> {
            self.inner.latest_push(image, tag, until).await
        }

        async fn save_push(&self, push: &crate::push::TrackedPush) -> Result<u64, StoreError> {
            self.inner.save_push(push).await
        }

        async fn incident(
            &self,
            key: &crate::model::TagKey,
        ) -> Result<Option<crate::incident::TagIncident>, StoreError> {
            self.inner.incident(key).await
        }

        async fn save_incident(
            &self,
            incident: &crate::incident::TagIncident,
            raised: &[PendingAlert],
        ) -> Result<u64, StoreError> {
            self.inner.save_incident(incident, raised).await
        }

        async fn pushes_of(
            &self,
            image: &SourceImage,
        ) -> Result<Vec<crate::push::TrackedPush>, StoreError> {
            self.inner.pushes_of(image).await
        }

        async fn read_incident(
            &self,
            key: &crate::unreadable::ReadIncidentKey,
        ) -> Result<Option<crate::unreadable::ReadIncident>, StoreError> {
            self.inner.read_incident(key).await
        }

        async fn save_read_incident(
            &self,
            incident: &crate::unreadable::ReadIncident,
            raised: &[PendingAlert],
        ) -> Result<u64, StoreError> {
            self.inner.save_read_incident(incident, raised).await
        }

        async fn due(
            &self,
            now: chrono::DateTime<Utc>,
            limit: usize,
            part: crate::store::SweepPart,
        ) -> Result<crate::store::DueWork, StoreError> {
            self.inner.due(now, limit, part).await
        }

        async fn open_counts(&self) -> Result<Vec<crate::store::OpenCount>, StoreError> {
            self.inner.open_counts().await
        }
    }

    #[tokio::test]
    async fn a_lost_race_rereads_and_does_not_alert_twice() {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
            .single()
            .expect("time");
        let late = Observation::StillInProgress {
            at: t0 + TimeDelta::minutes(31),
        };
        let store = RacingStore {
            inner: InMemoryStore::new(),
            competitor: std::sync::Mutex::new(None),
        };
        let tracker = Tracker::new(&store, TrackingPolicy::default(), Utc::now());
        tracker
            .observe(&key(), &Observation::Pushed { at: t0 }, Creation::Create)
            .await
            .expect("push");
        *store.competitor.lock().expect("lock") = Some(late.clone());
        let ours = tracker
            .observe(&key(), &late, Creation::ExistingOnly)
            .await
            .expect("observe")
            .expect("exists");
        assert!(
            ours.transition.raised.is_empty() && ours.alerts.is_empty(),
            "the competitor already alerted"
        );
        assert!(!ours.transition.changed);
        let stored = store.get(&key()).await.expect("get").expect("present");
        assert_eq!(stored.state, ExpectationState::Overdue);
        assert_eq!(
            stored.version, 2,
            "push, then the competitor's write; ours was not written"
        );
        assert_eq!(
            stored.alerts.iter().copied().collect::<Vec<_>>(),
            vec![AlertKind::Overdue]
        );
    }

    #[tokio::test]
    async fn sweep_confirmations_do_not_create_records() {
        let store = InMemoryStore::new();
        let tracker = Tracker::new(&store, TrackingPolicy::default(), Utc::now());
        let now = Utc::now();
        let applied = tracker
            .observe(
                &key(),
                &Observation::StillInProgress { at: now },
                Creation::Create,
            )
            .await
            .expect("observe");
        assert!(applied.is_none(), "nothing known: nothing written");
        assert!(store.all().is_empty());
        let applied = tracker
            .observe(
                &key(),
                &Observation::SourceDeleted { at: now },
                Creation::ExistingOnly,
            )
            .await
            .expect("observe");
        assert!(applied.is_none());
    }

    #[tokio::test]
    async fn a_duplicate_event_writes_nothing() {
        let store = InMemoryStore::new();
        let tracker = Tracker::new(&store, TrackingPolicy::default(), Utc::now());
        let push = Observation::Pushed { at: Utc::now() };
        tracker
            .observe(&key(), &push, Creation::Create)
            .await
            .expect("first");
        let again = tracker
            .observe(&key(), &push, Creation::Create)
            .await
            .expect("second")
            .expect("exists");
        assert!(!again.transition.changed);
        assert_eq!(again.record.version, 1, "no second write");
    }
}
