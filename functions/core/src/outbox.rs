//! Alerts on their way to a human: delivered at least once, each with a stable id.
//!
//! An alert is written as its own pending record in the same atomic write as the state change
//! that raises it ([`crate::store::ExpectationStore::save`]), so a raised alert can no longer
//! be lost between the write and the send: not to a crash, a timeout, nor an SNS or Slack
//! outage. Whoever raised it sends it at once and removes the record when every sink took it;
//! what is left (a sink down, a function that died first) becomes due again after
//! [`FIRST_RETRY_AFTER`] and the sweep sends it then, backing off between attempts
//! ([`retry_delay`]) until it goes through.
//!
//! At least once means a subscriber may see an alert twice (a send that succeeded but whose
//! record could not be removed). Every notification carries the alert's [`Alert::id`], the
//! same on every attempt, so a subscriber can drop a repeat; a storm summary lists the ids it
//! folds.
//!
//! The pending records are separate from the expectations on purpose: a change of how
//! expectations are stored leaves the undelivered alerts where they are.
//!
//! A pending record nobody can read (an attribute lost or garbled by hand, a bug) never
//! blocks the others: the claim that meets it sets it aside where no claim sees it again,
//! keeping its key and the reason, and the sweep counts what is set aside
//! ([`AlertOutbox::set_aside`]) for an alarm, until someone repairs or removes it. Pending
//! records have no expiry: an alert waits until it is delivered.

use std::collections::BTreeSet;
use std::future::Future;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::alerts::Alert;
use crate::backoff::Backoff;
use crate::store::StoreError;

/// How long the raiser of an alert has to send it before the sweep may: longer than the
/// tracking functions' timeout, so a live sender and the sweep do not both send.
pub const FIRST_RETRY_AFTER: TimeDelta = TimeDelta::minutes(2);

/// How long a sweep holds the alerts it is sending, so a concurrent sweep leaves them alone.
pub const CLAIM_LEASE: TimeDelta = TimeDelta::minutes(5);

/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY: TimeDelta = TimeDelta::minutes(30);

/// How a failed delivery is tried again: one minute, doubling, at most [`MAX_RETRY_DELAY`].
pub const RETRY_BACKOFF: Backoff = Backoff::new(TimeDelta::minutes(1), MAX_RETRY_DELAY);

/// The wait after the `attempts`-th failed attempt ([`RETRY_BACKOFF`]).
pub fn retry_delay(attempts: u32) -> TimeDelta {
    RETRY_BACKOFF.after(attempts)
}

/// One alert not yet delivered to every sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAlert {
    /// The id the alert was raised with, kept as stored: a later version that names alerts
    /// differently still settles the alerts an earlier one stored.
    pub id: String,
    pub alert: Alert,
    /// The sinks (`sns`, `slack`) that already took it.
    pub delivered_to: BTreeSet<String>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it may be sent again by someone other than its raiser.
    pub next_attempt_at: DateTime<Utc>,
}

impl PendingAlert {
    /// An alert just raised, to be sent by its raiser now.
    pub fn raised(alert: Alert) -> Self {
        let next_attempt_at = alert.detected_at + FIRST_RETRY_AFTER;
        Self {
            id: alert.id(),
            alert,
            delivered_to: BTreeSet::new(),
            attempts: 0,
            next_attempt_at,
        }
    }

    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// Whether every sink of `sinks` took it.
    pub fn delivered_everywhere<'a>(&self, mut sinks: impl Iterator<Item = &'a str>) -> bool {
        sinks.all(|sink| self.delivered_to.contains(sink))
    }

    /// After a failed attempt at `now`: one more attempt counted, the next one backed off.
    pub fn failed_at(&mut self, now: DateTime<Utc>) {
        self.attempts += 1;
        self.next_attempt_at = now + retry_delay(self.attempts);
    }
}

/// A pending alert record that could not be read, set aside by the claim that met it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAsideAlert {
    /// The record's key as stored, for whoever repairs or removes it.
    pub key: String,
    /// Why it could not be read.
    pub reason: String,
}

/// What one claim took: the alerts to send now, and the unreadable records it set aside.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    pub alerts: Vec<PendingAlert>,
    pub set_aside: Vec<SetAsideAlert>,
}

/// Where undelivered alerts wait. Written together with expectations by the store's `save`;
/// read and settled through this port.
pub trait AlertOutbox: Send + Sync {
    /// Up to `limit` alerts whose next attempt is due at `now`, each claimed until
    /// `now + CLAIM_LEASE` (an alert another caller claimed first is left out). A due record
    /// that cannot be read is set aside and reported, never returned nor an error.
    fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Claimed, StoreError>> + Send;

    /// Every sink took the alert: its record goes.
    fn delivered(&self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Some sink still lacks it: keep what was delivered, and when to try next.
    fn retry_later(
        &self,
        pending: &PendingAlert,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many alerts are waiting for delivery.
    fn undelivered(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How many unreadable records claims set aside and nobody repaired or removed yet.
    fn set_aside(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_a_minute_to_half_an_hour() {
        let delays: Vec<i64> = (1..=8).map(|n| retry_delay(n).num_minutes()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }
}
