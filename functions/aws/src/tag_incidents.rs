//! How a [`TagIncident`] is kept in the tracking table: one item per (source repository, tag,
//! destination), rewritten by each incident of that tag there.
//!
//! - `pk` = `TAG#<region>#<account>#<repository>#<tag>` (the source's), `sk` =
//!   `INCIDENT#<region>#<account>` (the destination's): the incidents of one tag in every
//!   destination are one partition, apart from the images';
//! - `state` is `OPEN` or `RESOLVED` (with `resolved_at` and `resolution`); `cause`,
//!   `expected` (the source's image), `found` (the destination's, absent when the tag is not
//!   there), `opened_at` (with the key, what names the incident and its alerts), `alerts` (the
//!   kinds it raised);
//! - `next_check` and `due_shard` only while open, so an open incident is in the sparse `due`
//!   index like an overdue record (its `due_shard` from a hash of `pk`); `expires_at` (TTL)
//!   only once resolved: an open incident never expires.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use replwatch_core::incident::{Divergence, DivergenceCause, ResolutionReason, TagIncident};
use replwatch_core::model::{AccountId, Destination, Digest, Region, RepositoryName, TagKey};
use replwatch_core::store::StoreError;

use crate::dynamodb::{DueQueue, TTL_ATTRIBUTE, number, timestamp};
use crate::dynamodb_table::{ItemReader, alert_kinds_attribute};

type Item = HashMap<String, AttributeValue>;

/// The sort-key prefix of every incident item.
pub const INCIDENT_PREFIX: &str = "INCIDENT#";
const SCHEMA_VERSION: &str = "1";

pub fn partition_key(key: &TagKey) -> String {
    format!(
        "TAG#{}#{}#{}#{}",
        key.registry.region, key.registry.registry_id, key.repository, key.tag
    )
}

pub fn sort_key(key: &TagKey) -> String {
    format!(
        "{INCIDENT_PREFIX}{}#{}",
        key.destination.region, key.destination.registry_id
    )
}

/// The table key of the incident of `key`.
pub fn item_key(key: &TagKey) -> Item {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(partition_key(key))),
        ("sk".to_owned(), AttributeValue::S(sort_key(key))),
    ])
}

pub fn to_item(incident: &TagIncident, version: u64) -> Item {
    let key = &incident.key;
    let pk = partition_key(key);
    let mut item = item_key(key);
    let mut text = |name: &str, value: String| {
        item.insert(name.to_owned(), AttributeValue::S(value));
    };
    text("schema", SCHEMA_VERSION.to_owned());
    text("source_region", key.registry.region.to_string());
    text("source_account", key.registry.registry_id.to_string());
    text("repository", key.repository.to_string());
    text("tag", key.tag.clone());
    text("destination_region", key.destination.region.to_string());
    text(
        "destination_account",
        key.destination.registry_id.to_string(),
    );
    text("opened_at", timestamp(incident.opened_at));
    text("last_checked_at", timestamp(incident.last_checked_at));
    text("cause", incident.divergence.cause.as_str().to_owned());
    text("expected", incident.divergence.expected.to_string());
    if let Some(found) = &incident.divergence.found {
        text("found", found.to_string());
    }
    match &incident.resolved {
        None => text("state", "OPEN".to_owned()),
        Some((at, reason)) => {
            text("state", "RESOLVED".to_owned());
            text("resolved_at", timestamp(*at));
            text("resolution", reason.as_str().to_owned());
        }
    }
    if let Some(next) = incident.next_check_at {
        text("next_check", timestamp(next));
        text("due_shard", DueQueue::Recheck.shard(&pk));
    }
    if let Some(alerts) = alert_kinds_attribute(&incident.alerts) {
        item.insert("alerts".to_owned(), alerts);
    }
    if let Some(expires) = incident.expires_at {
        item.insert(
            TTL_ATTRIBUTE.to_owned(),
            AttributeValue::N(expires.timestamp().to_string()),
        );
    }
    item.insert("version".to_owned(), number(version));
    item
}

/// Whether `item` is an incident (by its sort key).
pub fn is_incident(item: &Item) -> bool {
    matches!(item.get("sk"), Some(AttributeValue::S(sk)) if sk.starts_with(INCIDENT_PREFIX))
}

/// Reads an incident item back ([`ItemReader`] names what is wrong with a bad one).
pub fn from_item(item: &Item) -> Result<TagIncident, StoreError> {
    let read = ItemReader::new(item);
    let required_time = |name: &str| {
        read.time(name)?
            .ok_or_else(|| read.corrupt(format!("{name} is missing")))
    };
    let key = TagKey {
        registry: Destination::new(
            read.parsed("source_region", Region::parse)?,
            read.parsed("source_account", AccountId::parse)?,
        ),
        repository: read.parsed("repository", RepositoryName::parse)?,
        tag: read.required("tag")?.to_owned(),
        destination: Destination::new(
            read.parsed("destination_region", Region::parse)?,
            read.parsed("destination_account", AccountId::parse)?,
        ),
    };
    let divergence = Divergence {
        cause: read.parsed("cause", |c| {
            DivergenceCause::parse(c).ok_or_else(|| format!("{c:?} is no cause"))
        })?,
        expected: read.parsed("expected", Digest::parse)?,
        found: read
            .text("found")?
            .map(Digest::parse)
            .transpose()
            .map_err(|e| read.corrupt(format!("found: {e}")))?,
    };
    let resolved = match read.required("state")? {
        "OPEN" => None,
        "RESOLVED" => Some((
            required_time("resolved_at")?,
            read.parsed("resolution", |r| {
                ResolutionReason::parse(r).ok_or_else(|| format!("{r:?} is no resolution"))
            })?,
        )),
        other => return Err(read.corrupt(format!("state {other:?}"))),
    };
    Ok(TagIncident {
        key,
        opened_at: required_time("opened_at")?,
        divergence,
        resolved,
        last_checked_at: required_time("last_checked_at")?,
        next_check_at: read.time("next_check")?,
        expires_at: read.expires_at()?,
        alerts: read.alert_kinds()?,
        version: read.version()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamodb_table::{item_size, write_units};
    use replwatch_core::incident::TagObservation;
    use replwatch_core::tracking::TrackingPolicy;

    #[test]
    fn an_incident_reads_back_identically_open_and_resolved_in_one_write_unit() {
        let policy = TrackingPolicy::default();
        let image = crate::dynamodb::long_named_image();
        let key = TagKey {
            registry: image.registry.clone(),
            repository: image.repository.clone(),
            tag: "release-2026.12.03-build.4821".to_owned(),
            destination: Destination::new(
                Region::parse("ap-southeast-2").expect("region"),
                AccountId::parse("222222222222").expect("account"),
            ),
        };
        let at = chrono::DateTime::from_timestamp(1_790_000_000, 123_456_789).expect("time");
        let divergence = Divergence {
            cause: DivergenceCause::OlderReplicationLast,
            expected: image.digest.clone(),
            found: Some(Digest::parse(&format!("sha256:{}", "cd".repeat(32))).expect("digest")),
        };
        let mut incident = TagIncident::open(key, at, divergence.clone(), &policy);
        incident.apply(&TagObservation::Diverged { at, divergence }, &policy);
        let item = to_item(&incident, 1);
        assert_eq!(
            write_units(item_size(&item)),
            1,
            "{} bytes",
            item_size(&item)
        );
        let mut expected = incident.clone();
        expected.version = 1;
        assert_eq!(from_item(&item).expect("reads back"), expected);
        incident.version = 1;
        incident.apply(
            &TagObservation::Settled {
                at: at + chrono::TimeDelta::minutes(15),
                reason: ResolutionReason::Converged,
            },
            &policy,
        );
        let item = to_item(&incident, 2);
        assert!(
            !item.contains_key("due_shard"),
            "resolved: out of the due index"
        );
        incident.version = 2;
        assert_eq!(from_item(&item).expect("reads back"), incident);
    }
}
