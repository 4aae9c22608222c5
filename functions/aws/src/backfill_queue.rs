//! The backfill's copy jobs on SQS: `backfill-plan` sends them, ten per `SendMessageBatch`;
//! `backfill-copy` receives them through its event source mapping.
//!
//! Entries SQS refuses with a passing error (`SenderFault` false) are sent again, a few times;
//! one it refuses for the sender's fault fails the whole enqueue, naming the job, because a
//! run whose jobs were not all queued would never complete.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use replwatch_core::backfill::fanout::{CopyJobQueue, CopyMessage, QueueError};

use crate::service_error::describe;

/// SQS takes at most ten entries per batch.
pub const BATCH_SIZE: usize = 10;
/// Rounds of re-sending entries SQS failed for a passing reason.
const SEND_ROUNDS: usize = 4;

/// The jobs queue.
#[derive(Debug, Clone)]
pub struct BackfillJobQueue {
    client: Client,
    queue_url: String,
}

impl BackfillJobQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    async fn send_batch(&self, batch: &[(String, String)]) -> Result<(), QueueError> {
        let mut pending: Vec<&(String, String)> = batch.iter().collect();
        for _ in 0..SEND_ROUNDS {
            let entries = pending
                .iter()
                .map(|(id, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(id)
                        .message_body(body)
                        .build()
                        .map_err(|e| QueueError {
                            operation: "SendMessageBatch",
                            message: e.to_string(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let answer = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| QueueError {
                    operation: "SendMessageBatch",
                    message: format!("{}: {}", self.queue_url, describe(&e)),
                })?;
            let failed = answer.failed();
            if let Some(refused) = failed.iter().find(|f| f.sender_fault()) {
                return Err(QueueError {
                    operation: "SendMessageBatch",
                    message: format!(
                        "{}: entry {} refused: {} {}",
                        self.queue_url,
                        refused.id(),
                        refused.code(),
                        refused.message().unwrap_or_default()
                    ),
                });
            }
            pending.retain(|(id, _)| failed.iter().any(|f| f.id() == id));
            if pending.is_empty() {
                return Ok(());
            }
        }
        Err(QueueError {
            operation: "SendMessageBatch",
            message: format!(
                "{}: {} entries still failing after {SEND_ROUNDS} rounds",
                self.queue_url,
                pending.len()
            ),
        })
    }
}

impl CopyJobQueue for BackfillJobQueue {
    async fn enqueue(&self, messages: &[CopyMessage]) -> Result<(), QueueError> {
        let bodies = messages
            .iter()
            .enumerate()
            .map(|(index, message)| {
                serde_json::to_string(message)
                    .map(|body| (format!("m{index}"), body))
                    .map_err(|e| QueueError {
                        operation: "SendMessageBatch",
                        message: format!("job {}: {e}", message.job),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for batch in bodies.chunks(BATCH_SIZE) {
            self.send_batch(batch).await?;
        }
        Ok(())
    }
}
