//! The one record of each source registry's replication rules, on the tracking table:
//! `pk` = `CONFIG#<region>#<account>`, `sk` = `CONFIG`.
//!
//! Two readers keep their own attribute of the same item, each written with `UpdateItem` so
//! neither erases the other's:
//! - `rules` and `rules_seen_at`: the rules as the tracking functions last saw them (from a
//!   `PutReplicationConfiguration` event or a `DescribeRegistry` read), replaced only by a
//!   newer view; every container compares its cache with them every few seconds;
//! - `configuration`: the rules the backfill's last plan saw, so `--since-config-change` and
//!   the rules-change trigger plan only the destinations added since
//!   ([`crate::backfill_runs`]).

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use replwatch_core::model::Destination;
use replwatch_core::rules::ReplicationConfiguration;
use replwatch_core::store::{RecordedRules, RulesRecord, StoreError};

use crate::dynamodb::{DynamoExpectationStore, timestamp};
use crate::dynamodb_table::{backend, conditional, rules_record_key as key};

fn corrupt(registry: &Destination, message: String) -> StoreError {
    StoreError::Corrupt {
        id: format!("CONFIG#{registry}"),
        message,
    }
}

impl RulesRecord for DynamoExpectationStore {
    async fn recorded_rules(
        &self,
        registry: &Destination,
    ) -> Result<Option<RecordedRules>, StoreError> {
        // Eventually consistent (half the read cost): a view a second old is fresh enough for
        // a check made every few seconds.
        let output = self
            .client()
            .get_item()
            .table_name(self.table())
            .set_key(Some(key(registry)))
            // `rules` is a DynamoDB reserved word.
            .projection_expression("#rules, rules_seen_at")
            .expression_attribute_names("#rules", "rules")
            .send()
            .await
            .map_err(|e| backend("GetItem", e))?;
        let Some(item) = output.item() else {
            return Ok(None);
        };
        let (Some(AttributeValue::S(rules)), Some(AttributeValue::S(seen_at))) =
            (item.get("rules"), item.get("rules_seen_at"))
        else {
            return Ok(None);
        };
        let configuration = ReplicationConfiguration::from_json(rules.as_bytes())
            .map_err(|e| corrupt(registry, format!("rules: {e}")))?;
        let seen_at = DateTime::parse_from_rfc3339(seen_at)
            .map_err(|e| corrupt(registry, format!("rules_seen_at: {e}")))?
            .with_timezone(&Utc);
        Ok(Some(RecordedRules {
            configuration,
            seen_at,
        }))
    }

    async fn record_rules(
        &self,
        registry: &Destination,
        rules: &RecordedRules,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(&rules.configuration)
            .map_err(|e| corrupt(registry, e.to_string()))?;
        let result = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(key(registry)))
            .update_expression("SET #rules = :rules, rules_seen_at = :seen")
            .expression_attribute_names("#rules", "rules")
            .condition_expression("attribute_not_exists(rules_seen_at) OR rules_seen_at < :seen")
            .expression_attribute_values(":rules", AttributeValue::S(json))
            .expression_attribute_values(":seen", AttributeValue::S(timestamp(rules.seen_at)))
            .send()
            .await;
        conditional("UpdateItem", result)
    }
}
