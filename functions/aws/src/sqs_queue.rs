//! Sending messages to an SQS queue in batches of ten (`SendMessageBatch`), for the
//! backfill's copy jobs and the sweep's parts.
//!
//! Entries SQS refuses with a passing error (`SenderFault` false) are sent again, a few times;
//! one it refuses for the sender's fault fails the whole send, naming the entry, because work
//! whose messages were not all queued would never complete.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use replwatch_core::backfill::fanout::QueueError;

use crate::service_error::describe;

/// SQS takes at most ten entries per batch.
pub const BATCH_SIZE: usize = 10;
/// Rounds of re-sending entries SQS failed for a passing reason.
const SEND_ROUNDS: usize = 4;

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Unique within one send.
    pub id: String,
    pub body: String,
    /// For a FIFO queue: its message group and deduplication id.
    pub fifo: Option<(String, String)>,
}

/// A queue messages are sent to.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// Sends every message, ten per request.
    pub async fn send(&self, messages: &[OutgoingMessage]) -> Result<(), QueueError> {
        for batch in messages.chunks(BATCH_SIZE) {
            self.send_batch(batch).await?;
        }
        Ok(())
    }

    async fn send_batch(&self, batch: &[OutgoingMessage]) -> Result<(), QueueError> {
        let mut pending: Vec<&OutgoingMessage> = batch.iter().collect();
        for _ in 0..SEND_ROUNDS {
            let entries = pending
                .iter()
                .map(|message| {
                    let mut entry = SendMessageBatchRequestEntry::builder()
                        .id(&message.id)
                        .message_body(&message.body);
                    if let Some((group, deduplication)) = &message.fifo {
                        entry = entry
                            .message_group_id(group)
                            .message_deduplication_id(deduplication);
                    }
                    entry.build().map_err(|e| QueueError {
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
            pending.retain(|m| failed.iter().any(|f| f.id() == m.id));
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
