//! The backfill's copy jobs on SQS: `backfill-plan` sends them, ten per `SendMessageBatch`
//! ([`crate::sqs_queue`]); `backfill-copy` receives them through its event source mapping.

use aws_sdk_sqs::Client;
use replwatch_core::backfill::fanout::{CopyJobQueue, CopyMessage, QueueError};

use crate::sqs_queue::{OutgoingMessage, SqsQueue};

pub use crate::sqs_queue::BATCH_SIZE;

/// The jobs queue.
#[derive(Debug, Clone)]
pub struct BackfillJobQueue {
    queue: SqsQueue,
}

impl BackfillJobQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            queue: SqsQueue::new(client, queue_url),
        }
    }
}

impl CopyJobQueue for BackfillJobQueue {
    async fn enqueue(&self, messages: &[CopyMessage]) -> Result<(), QueueError> {
        let outgoing = messages
            .iter()
            .enumerate()
            .map(|(index, message)| {
                serde_json::to_string(message)
                    .map(|body| OutgoingMessage {
                        id: format!("m{index}"),
                        body,
                        fifo: None,
                    })
                    .map_err(|e| QueueError {
                        operation: "SendMessageBatch",
                        message: format!("job {}: {e}", message.job),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.queue.send(&outgoing).await
    }
}
