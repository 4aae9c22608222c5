//! How a [`TrackedPush`] is kept in the tracking table: one item per push, beside the
//! destination records of its image.
//!
//! - `pk` is the image's partition key (as for its records), `sk` = `PUSH#TAG#<tag>#<time>`
//!   or `PUSH#UNTAGGED#<time>`, the time of the push as [`occurrence_stamp`] writes it: every
//!   push of the same image and tag is its own item, and the latest one before a time is one
//!   descending query of one item (what a replication event reads). The image and the tag are
//!   read back from the keys, not repeated in attributes: with a repository name and a tag of
//!   ECR's maximum length (256 and 300 characters) the repetition alone was 0.7 KB, a second
//!   write unit for every write of the item and of its index entry (items written before keep
//!   their attributes, which are read first);
//! - `dests` lists the destinations grouped by account, `<account>:<region>,<region>;…` (a
//!   push to 25 Regions stays under the 1 KB of one write unit), and `dset` names that list
//!   with 16 hex digits of its SHA-256, so counting open pushes per destination reads the
//!   short name and looks each distinct list up once;
//! - `outcome` is `OPEN`, `CONFIRMED` (with `closed_at`, and the destinations that closed
//!   otherwise than REPLICATED in `superseded`, `tag_lost`, `not_selected`, and those left to a
//!   record of their own in `recorded`) or `DELETED`;
//! - `next_check` and `due_shard` only while open, like the records: the push is in the
//!   sparse `due` index until its deadline check (`next_check` is the deadline, or later when
//!   a check that failed put it off);
//! - the TTL only once closed: an open push never expires.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use replwatch_core::model::{AccountId, Destination, Region};
use replwatch_core::push::{PushOutcome, TrackedPush};
use replwatch_core::store::StoreError;
use replwatch_core::tracking::ExpectationState;
use sha2::{Digest as _, Sha256};

use crate::dynamodb::{DueQueue, TTL_ATTRIBUTE, number, partition_key, timestamp};
use crate::dynamodb_table::ItemReader;

type Item = HashMap<String, AttributeValue>;

/// The sort-key prefix of every push item.
pub const PUSH_PREFIX: &str = "PUSH#";
/// Schema 2: one item per push (the push time in the sort key). Items of schema 1 (one per
/// image and tag) are moved to their schema 2 key when the sweep reads them.
pub const SCHEMA_VERSION: &str = "2";

/// The sort-key prefix of every push of `image` with `tag`.
pub fn push_prefix(tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("{PUSH_PREFIX}TAG#{tag}#"),
        None => format!("{PUSH_PREFIX}UNTAGGED#"),
    }
}

pub fn push_sort_key(tag: Option<&str>, pushed_at: DateTime<Utc>) -> String {
    format!("{}{}", push_prefix(tag), occurrence_stamp(pushed_at))
}

/// A push time as a key part that sorts as the time does: epoch seconds on ten digits, then
/// `.` and nine digits of nanoseconds only when there are any (ECR's event times have none),
/// so a whole second sorts before its fractions and every key stays short.
pub fn occurrence_stamp(at: DateTime<Utc>) -> String {
    match at.timestamp_subsec_nanos() {
        0 => format!("{:010}", at.timestamp()),
        nanos => format!("{:010}.{nanos:09}", at.timestamp()),
    }
}

/// `<account>:<region>,<region>;<account>:<region>`: destinations as `dests` keeps them.
pub fn destination_list(destinations: &[Destination]) -> String {
    let mut by_account: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for destination in destinations {
        by_account
            .entry(destination.registry_id.as_str())
            .or_default()
            .push(destination.region.as_str());
    }
    by_account
        .into_iter()
        .map(|(account, regions)| format!("{account}:{}", regions.join(",")))
        .collect::<Vec<_>>()
        .join(";")
}

/// The destinations of a [`destination_list`]; `None` if any is malformed.
pub fn parse_destination_list(list: &str) -> Option<Vec<Destination>> {
    let mut destinations = Vec::new();
    for group in list.split(';').filter(|g| !g.is_empty()) {
        let (account, regions) = group.split_once(':')?;
        let account = AccountId::parse(account).ok()?;
        for region in regions.split(',') {
            destinations.push(Destination::new(
                Region::parse(region).ok()?,
                account.clone(),
            ));
        }
    }
    destinations.sort();
    Some(destinations)
}

/// The short name of a destination list.
pub fn destination_set(destinations: &[Destination]) -> String {
    let hash = Sha256::digest(destination_list(destinations).as_bytes());
    hex::encode(&hash[..8])
}

pub fn to_item(push: &TrackedPush, version: u64) -> Item {
    let pk = partition_key(&push.image);
    let mut item = Item::new();
    let mut text = |name: &str, value: String| {
        item.insert(name.to_owned(), AttributeValue::S(value));
    };
    text("sk", push_sort_key(push.tag.as_deref(), push.pushed_at));
    text("schema", SCHEMA_VERSION.to_owned());
    text("deadline", timestamp(push.deadline));
    text("dset", destination_set(&push.destinations));
    match &push.outcome {
        PushOutcome::Open => text("outcome", "OPEN".to_owned()),
        PushOutcome::Confirmed { at, .. } => {
            text("outcome", "CONFIRMED".to_owned());
            text("closed_at", timestamp(*at));
        }
        PushOutcome::Deleted { at } => {
            text("outcome", "DELETED".to_owned());
            text("closed_at", timestamp(*at));
        }
    }
    if let Some(next) = push.next_check_at() {
        text("next_check", timestamp(next));
        text("due_shard", DueQueue::First.shard(&pk));
    }
    text("pk", pk);
    item.insert(
        "dests".to_owned(),
        AttributeValue::S(destination_list(&push.destinations)),
    );
    if let PushOutcome::Confirmed {
        closed, recorded, ..
    } = &push.outcome
    {
        let mut lists: Vec<(&str, Vec<Destination>)> = CLOSED_LISTS
            .iter()
            .map(|(name, state)| {
                let destinations = closed
                    .iter()
                    .filter(|(_, s)| s == state)
                    .map(|(d, _)| d.clone())
                    .collect();
                (*name, destinations)
            })
            .collect();
        lists.push(("recorded", recorded.clone()));
        for (name, destinations) in lists {
            if !destinations.is_empty() {
                item.insert(
                    name.to_owned(),
                    AttributeValue::S(destination_list(&destinations)),
                );
            }
        }
    }
    if let Some(expires) = push.expires_at {
        item.insert(
            TTL_ATTRIBUTE.to_owned(),
            AttributeValue::N(expires.timestamp().to_string()),
        );
    }
    item.insert("version".to_owned(), number(version));
    item
}

/// The push time an [`occurrence_stamp`] names.
pub fn parse_occurrence_stamp(stamp: &str) -> Option<DateTime<Utc>> {
    let (seconds, nanos) = match stamp.split_once('.') {
        Some((seconds, nanos)) if nanos.len() == 9 => (seconds, nanos.parse().ok()?),
        Some(_) => return None,
        None => (stamp, 0),
    };
    if seconds.len() != 10 || !seconds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    DateTime::from_timestamp(seconds.parse().ok()?, nanos)
}

/// The attributes listing the destinations a check closed in each state other than
/// REPLICATED.
const CLOSED_LISTS: [(&str, ExpectationState); 3] = [
    ("superseded", ExpectationState::Superseded),
    ("tag_lost", ExpectationState::TagLost),
    ("not_selected", ExpectationState::NotSelected),
];

/// Reads a push item back ([`ItemReader`] names what is wrong with a bad one).
pub fn from_item(item: &Item) -> Result<TrackedPush, StoreError> {
    let read = ItemReader::new(item);
    let time = |name: &str| {
        read.time(name)?
            .ok_or_else(|| read.corrupt(format!("{name} is missing")))
    };
    let destinations = |name: &str| -> Result<Vec<Destination>, StoreError> {
        match read.text(name)? {
            None => Ok(Vec::new()),
            Some(list) => parse_destination_list(list)
                .ok_or_else(|| read.corrupt(format!("{name}: {list:?}"))),
        }
    };
    let outcome = match read.required("outcome")? {
        "OPEN" => PushOutcome::Open,
        "CONFIRMED" => {
            let mut closed = Vec::new();
            for (name, state) in CLOSED_LISTS {
                closed.extend(destinations(name)?.into_iter().map(|d| (d, state)));
            }
            closed.sort();
            PushOutcome::Confirmed {
                at: time("closed_at")?,
                closed,
                recorded: destinations("recorded")?,
            }
        }
        "DELETED" => PushOutcome::Deleted {
            at: time("closed_at")?,
        },
        other => return Err(read.corrupt(format!("outcome {other:?}"))),
    };
    // Items written before the image and tag were left to the keys still hold them.
    let (image, tag) = if read.get("repository").is_some() {
        (read.source_image()?, read.text("tag")?.map(str::to_owned))
    } else {
        let tag = read.parsed("sk", |sk| match sk.strip_prefix(&push_prefix(None)) {
            Some(_) => Ok(None),
            None => sk
                .strip_prefix(PUSH_PREFIX)
                .and_then(|rest| rest.strip_prefix("TAG#"))
                .and_then(|rest| rest.rsplit_once('#'))
                .map(|(tag, _)| Some(tag.to_owned()))
                .ok_or("neither PUSH#TAG#<tag>#<time> nor PUSH#UNTAGGED#<time>"),
        })?;
        (read.source_image_of_key()?, tag)
    };
    Ok(TrackedPush {
        image,
        tag,
        destinations: destinations("dests")?,
        // The push time is in the sort key (schema 1 kept it in its own attribute).
        pushed_at: match read.time("pushed_at")? {
            Some(at) => at,
            None => read.parsed("sk", |sk| {
                sk.rsplit('#')
                    .next()
                    .and_then(parse_occurrence_stamp)
                    .ok_or("no push time at its end")
            })?,
        },
        deadline: time("deadline")?,
        // An open push is due at its deadline unless its check failed and was put off.
        retry_at: match (&outcome, read.time("next_check")?) {
            (PushOutcome::Open, Some(next)) if next > time("deadline")? => Some(next),
            _ => None,
        },
        outcome,
        expires_at: read.expires_at()?,
        version: read.version()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamodb_table::{item_size, write_units};
    use replwatch_core::tracking::TrackingPolicy;

    /// What tracking a push costs to write, whatever the number of destinations: the basis
    /// of the cost model.
    #[test]
    fn push_times_sort_as_their_keys_do() {
        let at = |seconds: i64, nanos: u32| DateTime::from_timestamp(seconds, nanos).expect("time");
        let times = [
            at(999_999_999, 0),
            at(1_790_000_000, 0),
            at(1_790_000_000, 5),
            at(1_790_000_000, 500_000_000),
            at(1_790_000_001, 0),
        ];
        let stamps: Vec<String> = times.iter().map(|t| occurrence_stamp(*t)).collect();
        let mut sorted = stamps.clone();
        sorted.sort();
        assert_eq!(stamps, sorted);
        for (time, stamp) in times.iter().zip(&stamps) {
            assert_eq!(parse_occurrence_stamp(stamp), Some(*time), "{stamp}");
        }
        assert_eq!(parse_occurrence_stamp("v1"), None);
        assert_eq!(stamps[1], "1790000000");
        assert_eq!(
            push_sort_key(Some("v1"), times[1]),
            "PUSH#TAG#v1#1790000000"
        );
    }

    /// The worst case the cost table is sized for: a repository name and a tag of ECR's
    /// maximum length (API reference: `repositoryName` 256, `imageTag` 300 characters), and
    /// 25 destinations each in an account of its own (the longest destination list).
    #[test]
    fn a_push_with_names_at_ecrs_limits_fits_two_write_units_and_one_with_three_destinations() {
        let policy = TrackingPolicy::default();
        let mut repository = "platform-engineering/build-services/".repeat(6);
        repository.push_str(&"a".repeat(256 - repository.len()));
        let tag = format!("release-{}", "x".repeat(292));
        assert_eq!((repository.len(), tag.len()), (256, 300));
        let image = replwatch_core::model::SourceImage {
            registry: Destination::new(
                Region::parse("us-west-2").expect("region"),
                AccountId::parse("111111111111").expect("account"),
            ),
            repository: replwatch_core::model::RepositoryName::parse(&repository)
                .expect("ECR's longest repository name"),
            digest: replwatch_core::model::Digest::parse(&format!("sha256:{}", "ab".repeat(32)))
                .expect("digest"),
        };
        let destinations: Vec<Destination> = replwatch_core::store::contract::TWENTY_FIVE_REGIONS
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Destination::new(
                    Region::parse(r).expect("region"),
                    AccountId::parse(&format!("{}", 200_000_000_000u64 + i as u64))
                        .expect("account"),
                )
            })
            .collect();
        let pushed_at = DateTime::from_timestamp(1_790_000_000, 0).expect("time");
        for (count, units) in [(25, 2), (3, 1)] {
            let mut push = TrackedPush::new(
                image.clone(),
                Some(tag.clone()),
                destinations[..count].to_vec(),
                pushed_at,
                &policy,
            );
            let open = to_item(&push, 1);
            push.version = 1;
            // The repository and the tag are in the keys only.
            let holding = |text: &str| {
                open.values()
                    .filter(|v| matches!(v, AttributeValue::S(s) if s.contains(text)))
                    .count()
            };
            assert_eq!((holding(&repository), holding(&tag)), (1, 1));
            assert_eq!(from_item(&open).expect("reads back"), push);
            let mut checked = push.clone();
            checked.close(
                PushOutcome::Confirmed {
                    at: push.deadline,
                    closed: Vec::new(),
                    recorded: Vec::new(),
                },
                &policy,
            );
            let closed = to_item(&checked, 2);
            let sizes = (item_size(&open), item_size(&closed));
            assert_eq!(
                (write_units(sizes.0), write_units(sizes.1)),
                (units, units),
                "{count} destinations: {sizes:?} bytes open and closed"
            );
            checked.version = 2;
            assert_eq!(from_item(&closed).expect("reads back"), checked);
        }
    }

    /// An item written when the image and the tag were repeated in attributes reads back the
    /// same.
    #[test]
    fn a_push_item_with_its_image_in_attributes_reads_back() {
        let policy = TrackingPolicy::default();
        let image = crate::dynamodb::long_named_image();
        let destination = Destination::new(
            Region::parse("eu-west-1").expect("region"),
            AccountId::parse("222222222222").expect("account"),
        );
        let at = DateTime::from_timestamp(1_790_000_000, 0).expect("time");
        for tag in [Some("v1".to_owned()), None] {
            let push = TrackedPush::new(
                image.clone(),
                tag.clone(),
                vec![destination.clone()],
                at,
                &policy,
            );
            let mut item = to_item(&push, 1);
            for (name, value) in [
                ("source_region", image.registry.region.to_string()),
                ("source_account", image.registry.registry_id.to_string()),
                ("repository", image.repository.to_string()),
                ("digest", image.digest.to_string()),
            ]
            .into_iter()
            .chain(tag.clone().map(|t| ("tag", t)))
            {
                item.insert(name.to_owned(), AttributeValue::S(value));
            }
            let mut expected = push.clone();
            expected.version = 1;
            assert_eq!(from_item(&item).expect("reads back"), expected);
        }
    }

    #[test]
    fn a_push_to_25_destinations_fits_one_write_unit() {
        let policy = TrackingPolicy::default();
        let regions = replwatch_core::store::contract::TWENTY_FIVE_REGIONS;
        let destinations: Vec<Destination> = regions
            .iter()
            .map(|r| {
                Destination::new(
                    Region::parse(r).expect("region"),
                    AccountId::parse("222222222222").expect("account"),
                )
            })
            .collect();
        let mut push = TrackedPush::new(
            crate::dynamodb::long_named_image(),
            Some("release-2026.12.03-build.4821".to_owned()),
            destinations,
            chrono::DateTime::from_timestamp(1_790_000_000, 123_456_789).expect("time"),
            &policy,
        );
        let open = item_size(&to_item(&push, 1));
        let mut checked = push.clone();
        checked.close(
            PushOutcome::Confirmed {
                at: push.deadline,
                closed: Vec::new(),
                recorded: Vec::new(),
            },
            &policy,
        );
        let closed = item_size(&to_item(&checked, 2));
        assert!(
            open < 1024 && closed < 1024,
            "{open} and {closed} bytes: an open push and its happy closing write"
        );
        assert_eq!(write_units(open), 1);
        let read = from_item(&to_item(&checked, 2)).expect("reads back");
        checked.version = 2;
        assert_eq!(read, checked);
        // A check that closes destinations otherwise (rare: the tag moved on, rules changed)
        // or leaves them to records lists them, and reads them back.
        let every = push.destinations.clone();
        push.close(
            PushOutcome::Confirmed {
                at: push.deadline,
                closed: every[..8]
                    .iter()
                    .map(|d| (d.clone(), ExpectationState::Superseded))
                    .chain([(every[8].clone(), ExpectationState::TagLost)])
                    .chain([(every[9].clone(), ExpectationState::NotSelected)])
                    .collect(),
                recorded: every[10..12].to_vec(),
            },
            &policy,
        );
        let read = from_item(&to_item(&push, 2)).expect("reads back");
        push.version = 2;
        assert_eq!(read, push);
    }
}
