//! What every adapter on the tracking table shares: the TTL attribute, and how a DynamoDB
//! failure becomes a [`StoreError`]. No DynamoDB call is made here, so an adapter using it is
//! granted only what that adapter calls.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use replwatch_core::store::StoreError;

use crate::service_error::describe;

/// The key of `registry`'s one rules record (the `rules_record` module keeps the tracking
/// functions' view in it, `backfill_runs` the last plan's).
pub fn rules_record_key(
    registry: &replwatch_core::model::Destination,
) -> std::collections::HashMap<String, AttributeValue> {
    std::collections::HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!(
                "CONFIG#{}#{}",
                registry.region, registry.registry_id
            )),
        ),
        ("sk".to_owned(), AttributeValue::S("CONFIG".to_owned())),
    ])
}

/// Epoch seconds after which DynamoDB deletes the item (the table's TTL attribute).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// Reads the attributes of one tracking-table item; any missing or malformed attribute is a
/// [`StoreError::Corrupt`] that names the item (`pk / sk`) and the attribute.
pub struct ItemReader<'a> {
    item: &'a std::collections::HashMap<String, AttributeValue>,
    id: String,
}

impl<'a> ItemReader<'a> {
    pub fn new(item: &'a std::collections::HashMap<String, AttributeValue>) -> Self {
        let id = match (item.get("pk"), item.get("sk")) {
            (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) => format!("{pk} / {sk}"),
            _ => "<item without pk/sk>".to_owned(),
        };
        Self { item, id }
    }

    pub fn corrupt(&self, message: String) -> StoreError {
        StoreError::Corrupt {
            id: self.id.clone(),
            message,
        }
    }

    pub fn get(&self, name: &str) -> Option<&'a AttributeValue> {
        self.item.get(name)
    }

    pub fn text(&self, name: &str) -> Result<Option<&'a str>, StoreError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(self.corrupt(format!("{name} is not a string: {other:?}"))),
        }
    }

    pub fn required(&self, name: &str) -> Result<&'a str, StoreError> {
        self.text(name)?
            .ok_or_else(|| self.corrupt(format!("{name} is missing")))
    }

    /// A value that must parse (a digest, a Region, …) from a required string.
    pub fn parsed<T, E: std::fmt::Display>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        parse(self.required(name)?).map_err(|e| self.corrupt(format!("{name}: {e}")))
    }

    /// The source image every tracking item names (`source_region`, `source_account`,
    /// `repository`, `digest`).
    pub fn source_image(&self) -> Result<replwatch_core::model::SourceImage, StoreError> {
        use replwatch_core::model::{AccountId, Destination, Digest, Region, RepositoryName};
        Ok(replwatch_core::model::SourceImage {
            registry: Destination::new(
                self.parsed("source_region", Region::parse)?,
                self.parsed("source_account", AccountId::parse)?,
            ),
            repository: self.parsed("repository", RepositoryName::parse)?,
            digest: self.parsed("digest", Digest::parse)?,
        })
    }

    /// The source image named by the item's partition key, `IMG#<region>#<account>#<repository>@<digest>`
    /// (`dynamodb::partition_key`): for items that do not repeat it in attributes of their own.
    pub fn source_image_of_key(&self) -> Result<replwatch_core::model::SourceImage, StoreError> {
        use replwatch_core::model::{AccountId, Destination, Digest, Region, RepositoryName};
        self.parsed("pk", |pk| {
            let (region, rest) = pk
                .strip_prefix("IMG#")
                .and_then(|rest| rest.split_once('#'))
                .ok_or("not IMG#<region>#…")?;
            let (account, image) = rest.split_once('#').ok_or("no account")?;
            // A repository name never holds `@`; a digest always starts `sha256:`.
            let (repository, digest) = image.rsplit_once('@').ok_or("no @<digest>")?;
            Ok::<_, String>(replwatch_core::model::SourceImage {
                registry: Destination::new(
                    Region::parse(region).map_err(|e| e.to_string())?,
                    AccountId::parse(account).map_err(|e| e.to_string())?,
                ),
                repository: RepositoryName::parse(repository).map_err(|e| e.to_string())?,
                digest: Digest::parse(digest).map_err(|e| e.to_string())?,
            })
        })
    }

    /// An RFC 3339 time, if present.
    pub fn time(&self, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        self.text(name)?
            .map(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|e| self.corrupt(format!("{name}: {e}")))
            })
            .transpose()
    }

    /// The optimistic-concurrency `version`.
    pub fn version(&self) -> Result<u64, StoreError> {
        match self.item.get("version") {
            Some(AttributeValue::N(n)) => n
                .parse::<u64>()
                .map_err(|e| self.corrupt(format!("version {n:?}: {e}"))),
            _ => Err(self.corrupt("version is missing".into())),
        }
    }

    /// The `alerts` attribute: the kinds of alert an item raised so far (none when absent).
    pub fn alert_kinds(
        &self,
    ) -> Result<std::collections::BTreeSet<replwatch_core::tracking::AlertKind>, StoreError> {
        use replwatch_core::tracking::AlertKind;
        match self.item.get("alerts") {
            None => Ok(Default::default()),
            Some(AttributeValue::L(values)) => values
                .iter()
                .map(|v| match v {
                    AttributeValue::S(s) => {
                        AlertKind::parse(s).ok_or_else(|| self.corrupt(format!("alert kind {s:?}")))
                    }
                    other => Err(self.corrupt(format!("alert {other:?}"))),
                })
                .collect(),
            Some(other) => Err(self.corrupt(format!("alerts is not a list: {other:?}"))),
        }
    }

    /// The TTL attribute, if present.
    pub fn expires_at(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        match self.item.get(TTL_ATTRIBUTE) {
            None => Ok(None),
            Some(AttributeValue::N(n)) => n
                .parse::<i64>()
                .ok()
                .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("{TTL_ATTRIBUTE} {n:?}"))),
            Some(other) => Err(self.corrupt(format!("{TTL_ATTRIBUTE} {other:?}"))),
        }
    }
}

/// The `alerts` attribute [`ItemReader::alert_kinds`] reads (none for no alert).
pub fn alert_kinds_attribute(
    kinds: &std::collections::BTreeSet<replwatch_core::tracking::AlertKind>,
) -> Option<AttributeValue> {
    (!kinds.is_empty()).then(|| {
        AttributeValue::L(
            kinds
                .iter()
                .map(|k| AttributeValue::S(k.as_str().to_owned()))
                .collect(),
        )
    })
}

pub fn request_error(
    operation: &'static str,
    error: aws_sdk_dynamodb::error::BuildError,
) -> StoreError {
    StoreError::Backend {
        operation,
        message: format!("request could not be built: {error}"),
    }
}

/// A conditional write's outcome: `true` when it went through, `false` when its condition did
/// not hold (someone else wrote first), an error for anything else.
pub fn conditional<T, E, R>(
    operation: &'static str,
    result: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
) -> Result<bool, StoreError>
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(backend(operation, e)),
    }
}

pub fn backend(
    operation: &'static str,
    error: impl std::error::Error + ProvideErrorMetadata,
) -> StoreError {
    let message = describe(&error);
    StoreError::Backend { operation, message }
}

/// An item's size as DynamoDB bills it (Developer Guide, "DynamoDB item sizes and formats"):
/// each attribute's name in UTF-8 bytes plus its value: a string's UTF-8 bytes, a binary's
/// raw bytes, a number's one byte per two significant digits plus one, one byte for a
/// boolean or null, and for a list or map three bytes plus one per element plus the
/// elements. What the cost model counts write units from, since the local AWS does not
/// report consumed capacity.
pub fn item_size(item: &std::collections::HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

/// Write units of one standard write of an item of `size` bytes: one per started KB
/// (a transactional write costs twice that).
pub fn write_units(size: usize) -> usize {
    size.div_ceil(1024).max(1)
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(values) => values.iter().map(String::len).sum(),
        AttributeValue::Ns(values) => values.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(values) => values.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(values) => 3 + values.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(name, v)| 1 + name.len() + value_size(v))
                .sum::<usize>()
        }
        // A type newer than this SDK: count it like a string of its debug form, an upper bound.
        other => format!("{other:?}").len(),
    }
}

/// One byte per two significant digits (leading and trailing zeroes trimmed), plus one.
fn number_size(number: &str) -> usize {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn sizes_follow_the_developer_guide() {
        let item = HashMap::from([
            ("pk".to_owned(), AttributeValue::S("IMG#x".to_owned())),
            ("n".to_owned(), AttributeValue::N("12345".to_owned())),
            ("flag".to_owned(), AttributeValue::Bool(true)),
            (
                "l".to_owned(),
                AttributeValue::L(vec![AttributeValue::S("ab".to_owned())]),
            ),
        ]);
        // "pk"+"IMG#x" = 7; "n" + (3 + 1) = 5; "flag" + 1 = 5; "l" + 3 + (1 + 2) = 7.
        assert_eq!(item_size(&item), 24);
        assert_eq!(number_size("1000"), 2, "trailing zeroes trimmed");
        assert_eq!(number_size("0.0012"), 2, "leading zeroes trimmed");
        assert_eq!(write_units(1), 1);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
    }
}
