//! How a [`ReadIncident`] is kept in the tracking table: one item per (registry, kind of
//! failure), rewritten by each incident of that registry.
//!
//! - `pk` = `UNREADABLE#<region>#<account>` (the registry that cannot be read), `sk` =
//!   `READ#<kind>` (`REFUSED` or `UNAVAILABLE`);
//! - `state` is `OPEN` or `RESOLVED` (with `resolved_at`); `opened_at` (with the key, what
//!   names the incident and its alerts), `failure` and `waiting` (the latest failure and one
//!   image whose verdict waited on it, as JSON: only ever read back whole), `alerts`;
//! - no `next_check`: the incident is not swept; the destinations it holds unconfirmed are,
//!   and the first one read again resolves it. No TTL: one small item per registry and kind.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use replwatch_core::model::{AccountId, Destination, Region};
use replwatch_core::store::StoreError;
use replwatch_core::unreadable::{ReadFailureKind, ReadIncident, ReadIncidentKey};

use crate::dynamodb::{number, timestamp};
use crate::dynamodb_table::{ItemReader, alert_kinds_attribute};

type Item = HashMap<String, AttributeValue>;

const SCHEMA_VERSION: &str = "1";

/// The table key of the incident of `key`.
pub fn item_key(key: &ReadIncidentKey) -> Item {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!(
                "UNREADABLE#{}#{}",
                key.location.region, key.location.registry_id
            )),
        ),
        (
            "sk".to_owned(),
            AttributeValue::S(format!("READ#{}", key.kind.as_str())),
        ),
    ])
}

pub fn to_item(incident: &ReadIncident, version: u64) -> Result<Item, StoreError> {
    let key = &incident.key;
    let mut item = item_key(key);
    let json = |value: serde_json::Result<String>| {
        value.map_err(|e| StoreError::Corrupt {
            id: key.to_string(),
            message: e.to_string(),
        })
    };
    let failure = json(serde_json::to_string(&incident.failure))?;
    let waiting = json(serde_json::to_string(&incident.waiting))?;
    let mut text = |name: &str, value: String| {
        item.insert(name.to_owned(), AttributeValue::S(value));
    };
    text("schema", SCHEMA_VERSION.to_owned());
    text("location_region", key.location.region.to_string());
    text("location_account", key.location.registry_id.to_string());
    text("kind", key.kind.as_str().to_owned());
    text("opened_at", timestamp(incident.opened_at));
    text("failure", failure);
    text("waiting", waiting);
    match incident.resolved_at {
        None => text("state", "OPEN".to_owned()),
        Some(at) => {
            text("state", "RESOLVED".to_owned());
            text("resolved_at", timestamp(at));
        }
    }
    if let Some(alerts) = alert_kinds_attribute(&incident.alerts) {
        item.insert("alerts".to_owned(), alerts);
    }
    item.insert("version".to_owned(), number(version));
    Ok(item)
}

/// Reads an incident item back ([`ItemReader`] names what is wrong with a bad one).
pub fn from_item(item: &Item) -> Result<ReadIncident, StoreError> {
    let read = ItemReader::new(item);
    let key = ReadIncidentKey {
        location: Destination::new(
            read.parsed("location_region", Region::parse)?,
            read.parsed("location_account", AccountId::parse)?,
        ),
        kind: read.parsed("kind", |k| {
            ReadFailureKind::parse(k).ok_or_else(|| format!("{k:?} is no kind of failure"))
        })?,
    };
    let resolved_at = match read.required("state")? {
        "OPEN" => None,
        "RESOLVED" => read.time("resolved_at")?,
        other => return Err(read.corrupt(format!("state {other:?}"))),
    };
    Ok(ReadIncident {
        key,
        opened_at: read
            .time("opened_at")?
            .ok_or_else(|| read.corrupt("opened_at is missing".into()))?,
        failure: read.parsed("failure", |j| serde_json::from_str(j))?,
        waiting: read.parsed("waiting", |j| serde_json::from_str(j))?,
        resolved_at,
        alerts: read.alert_kinds()?,
        version: read.version()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamodb_table::{item_size, write_units};
    use replwatch_core::model::ExpectationKey;
    use replwatch_core::registry::RegistryError;
    use replwatch_core::unreadable::{ReadFailure, ReadObservation};

    #[test]
    fn an_incident_reads_back_identically_open_and_resolved_in_one_write_unit() {
        let image = crate::dynamodb::long_named_image();
        let partner = Destination::new(
            Region::parse("ap-northeast-3").expect("region"),
            AccountId::parse("222222222222").expect("account"),
        );
        let failure = ReadFailure::new(
            partner.clone(),
            &RegistryError {
                operation: "DescribeImages",
                resource: format!("{partner} {}", image.repository),
                message: "AccessDeniedException: User: arn:aws:sts::111111111111:assumed-role/replwatch/x is not authorized to perform: ecr:DescribeImages".into(),
                retryable: false,
            },
        );
        let at = chrono::DateTime::from_timestamp(1_765_000_000, 0).expect("time");
        let waiting = ExpectationKey {
            image,
            tag: Some("release-2026.12.07-build.4411".into()),
            destination: partner,
            occurrence: at,
        };
        let (opened, _) = ReadIncident::observe(
            None,
            &ReadObservation::Unreadable {
                at,
                failure,
                waiting,
            },
        );
        let opened = opened.expect("opened");
        let (resolved, _) =
            ReadIncident::observe(Some(opened.clone()), &ReadObservation::Readable { at });
        for incident in [opened, resolved.expect("resolved")] {
            let item = to_item(&incident, 3).expect("item");
            assert_eq!(write_units(item_size(&item)), 1);
            let back = from_item(&item).expect("reads back");
            assert_eq!(
                back,
                ReadIncident {
                    version: 3,
                    ..incident
                }
            );
        }
    }
}
