//! Backfill runs on DynamoDB, in the tracking table beside the expectations.
//!
//! - the run: `pk` = `RUN#<id>`, `sk` = `RUN`, with its counters as numbers (`copied`,
//!   `failed`, `bytes_uploaded`, `remaining`) so each job adds to them with `ADD`, and the rest
//!   (source, destinations, start) as a JSON document that never changes after creation;
//! - one item per reported job: `pk` = `RUN#<id>`, `sk` = `JOB#<job id>`. It is written in one
//!   transaction with the run's counters, on condition that it does not exist yet: a job
//!   delivered twice is counted once;
//! - the completion: `completed_at` set on condition that `remaining` reached zero and it is
//!   not set yet, so exactly one invocation learns the run is complete. A redelivered job tries
//!   again, so an invocation that died between its count and this write does not leave the
//!   run open forever;
//! - the last replication configuration a plan saw per source registry, in the registry's
//!   one rules record (the `rules_record` module).
//!
//! Runs and jobs expire through the table's TTL ([`RUN_RETENTION_DAYS`] after creation).

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use chrono::{DateTime, TimeDelta, Utc};
use replwatch_core::backfill::run::{BackfillRun, BackfillRunStore, JobOutcome, JobRecorded};
use replwatch_core::model::Destination;
use replwatch_core::rules::ReplicationConfiguration;
use replwatch_core::store::StoreError;

use crate::dynamodb_table::{TTL_ATTRIBUTE, backend, request_error, rules_record_key};
use crate::service_error::is_transient_cancellation;

/// How long runs and their job records are kept.
pub const RUN_RETENTION_DAYS: i64 = 30;

type Item = HashMap<String, AttributeValue>;

/// [`BackfillRunStore`] on the tracking table.
#[derive(Debug, Clone)]
pub struct DynamoRunStore {
    client: Client,
    table: String,
}

impl DynamoRunStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn run_key(run_id: &str) -> Item {
        HashMap::from([
            ("pk".to_owned(), AttributeValue::S(format!("RUN#{run_id}"))),
            ("sk".to_owned(), AttributeValue::S("RUN".to_owned())),
        ])
    }

    /// Sets `completed_at` if the run has no job left and is not complete yet; the run when
    /// this call completed it.
    async fn complete_if_done(
        &self,
        run_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<BackfillRun>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::run_key(run_id)))
            .update_expression("SET completed_at = :at")
            .condition_expression("remaining <= :zero AND attribute_not_exists(completed_at)")
            .expression_attribute_values(":at", AttributeValue::S(at.to_rfc3339()))
            .expression_attribute_values(":zero", AttributeValue::N("0".to_owned()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(run_from_item(run_id, output.attributes())?)),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(None)
            }
            Err(e) => Err(backend("UpdateItem", e)),
        }
    }
}

fn number(item: &Item, name: &str) -> u64 {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse::<i64>().map(|v| v.max(0) as u64).unwrap_or(0),
        _ => 0,
    }
}

fn run_from_item(run_id: &str, item: Option<&Item>) -> Result<BackfillRun, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        id: format!("RUN#{run_id}"),
        message,
    };
    let item = item.ok_or_else(|| corrupt("no attributes".to_owned()))?;
    let Some(AttributeValue::S(document)) = item.get("run") else {
        return Err(corrupt("no run document".to_owned()));
    };
    let mut run: BackfillRun =
        serde_json::from_str(document).map_err(|e| corrupt(e.to_string()))?;
    run.copied = number(item, "copied");
    run.failed = number(item, "failed");
    run.bytes_uploaded = number(item, "bytes_uploaded");
    run.completed_at = match item.get("completed_at") {
        Some(AttributeValue::S(at)) => Some(
            DateTime::parse_from_rfc3339(at)
                .map_err(|e| corrupt(format!("completed_at: {e}")))?
                .with_timezone(&Utc),
        ),
        _ => None,
    };
    Ok(run)
}

fn expiry(from: DateTime<Utc>) -> AttributeValue {
    AttributeValue::N(
        (from + TimeDelta::days(RUN_RETENTION_DAYS))
            .timestamp()
            .to_string(),
    )
}

impl BackfillRunStore for DynamoRunStore {
    async fn create_run(&self, run: &BackfillRun) -> Result<bool, StoreError> {
        let document = serde_json::to_string(run).map_err(|e| StoreError::Corrupt {
            id: run.id.clone(),
            message: e.to_string(),
        })?;
        let mut item = Self::run_key(&run.id);
        item.insert("run".to_owned(), AttributeValue::S(document));
        for (name, value) in [
            ("planned", run.planned),
            ("copied", run.copied),
            ("failed", run.failed),
            ("bytes_uploaded", run.bytes_uploaded),
            ("remaining", run.remaining()),
        ] {
            item.insert(name.to_owned(), AttributeValue::N(value.to_string()));
        }
        item.insert(TTL_ATTRIBUTE.to_owned(), expiry(run.started_at));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(false)
            }
            Err(e) => Err(backend("PutItem", e)),
        }
    }

    async fn record_job(
        &self,
        run_id: &str,
        job_id: &str,
        outcome: &JobOutcome,
        at: DateTime<Utc>,
    ) -> Result<JobRecorded, StoreError> {
        let mut job = HashMap::from([
            ("pk".to_owned(), AttributeValue::S(format!("RUN#{run_id}"))),
            ("sk".to_owned(), AttributeValue::S(format!("JOB#{job_id}"))),
            ("at".to_owned(), AttributeValue::S(at.to_rfc3339())),
            (TTL_ATTRIBUTE.to_owned(), expiry(at)),
        ]);
        let (counter, bytes) = match outcome {
            JobOutcome::Copied { bytes_uploaded } => ("copied", *bytes_uploaded),
            JobOutcome::Failed { reason } => {
                job.insert("reason".to_owned(), AttributeValue::S(reason.clone()));
                ("failed", 0)
            }
        };
        job.insert("outcome".to_owned(), AttributeValue::S(counter.to_owned()));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(job))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| request_error("TransactWriteItems", e))?;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::run_key(run_id)))
            .update_expression(format!(
                "ADD {counter} :one, bytes_uploaded :bytes, remaining :minus_one"
            ))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .expression_attribute_values(":minus_one", AttributeValue::N("-1".to_owned()))
            .expression_attribute_values(":bytes", AttributeValue::N(bytes.to_string()))
            .build()
            .map_err(|e| request_error("TransactWriteItems", e))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(update).build())
            .send()
            .await;
        let first_time = match result {
            Ok(_) => true,
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err(),
                    TransactWriteItemsError::TransactionCanceledException(_)
                ) =>
            {
                let reasons: Vec<Option<&str>> = match e.err() {
                    TransactWriteItemsError::TransactionCanceledException(c) => {
                        c.cancellation_reasons().iter().map(|r| r.code()).collect()
                    }
                    _ => Vec::new(),
                };
                match reasons.as_slice() {
                    // The job item exists: a redelivery.
                    [Some("ConditionalCheckFailed"), _] => false,
                    [_, Some("ConditionalCheckFailed")] => {
                        return Err(StoreError::Corrupt {
                            id: format!("RUN#{run_id}"),
                            message: format!("job {job_id} of a run that does not exist"),
                        });
                    }
                    _ => {
                        // Throttled items fail the transaction too: said as such, and like
                        // any other store error the job is delivered again.
                        let cause = if is_transient_cancellation(reasons.iter().copied()) {
                            "throttled or contended, retried later"
                        } else {
                            "cancelled"
                        };
                        return Err(StoreError::Backend {
                            operation: "TransactWriteItems",
                            message: format!("transaction {cause}: {reasons:?}"),
                        });
                    }
                }
            }
            Err(e) => return Err(backend("TransactWriteItems", e)),
        };
        let completed_run = self.complete_if_done(run_id, at).await?;
        Ok(JobRecorded {
            first_time,
            completed_run,
        })
    }

    async fn run(&self, run_id: &str) -> Result<Option<BackfillRun>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::run_key(run_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend("GetItem", e))?;
        match output.item() {
            None => Ok(None),
            Some(item) => run_from_item(run_id, Some(item)).map(Some),
        }
    }

    async fn last_configuration(
        &self,
        source: &Destination,
    ) -> Result<Option<ReplicationConfiguration>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(rules_record_key(source)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend("GetItem", e))?;
        let Some(AttributeValue::S(json)) = output.item().and_then(|i| i.get("configuration"))
        else {
            return Ok(None);
        };
        ReplicationConfiguration::from_json(json.as_bytes())
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                id: format!("CONFIG#{source}"),
                message: e.to_string(),
            })
    }

    async fn remember_configuration(
        &self,
        source: &Destination,
        configuration: &ReplicationConfiguration,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(configuration).map_err(|e| StoreError::Corrupt {
            id: format!("CONFIG#{source}"),
            message: e.to_string(),
        })?;
        // UpdateItem, not PutItem: the tracking functions keep their view of the rules in
        // the same item.
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(rules_record_key(source)))
            .update_expression("SET configuration = :configuration")
            .expression_attribute_values(":configuration", AttributeValue::S(json))
            .send()
            .await
            .map_err(|e| backend("UpdateItem", e))?;
        Ok(())
    }
}
