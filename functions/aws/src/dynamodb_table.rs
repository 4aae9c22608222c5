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
