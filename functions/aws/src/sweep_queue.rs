//! The sweep's parts on SQS: the scheduled sweep checks part 0 itself and sends the other
//! parts of the due work to a FIFO queue whose event source mapping runs the same function
//! once per message. One message group per part keeps two sweeps of the same part from
//! running at once (a part still being swept when the next tick comes waits its turn), and a
//! deduplication id per part and minute keeps a retried send from queueing it twice.

use aws_sdk_sqs::Client;
use chrono::{DateTime, Utc};
use replwatch_core::backfill::fanout::QueueError;
use replwatch_core::store::SweepPart;

use crate::sqs_queue::{OutgoingMessage, SqsQueue};

/// Where the sweep sends its parts.
#[derive(Debug, Clone)]
pub struct SweepPartQueue {
    queue: SqsQueue,
}

impl SweepPartQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            queue: SqsQueue::new(client, queue_url),
        }
    }

    /// Queues `parts` for the tick at `tick`.
    pub async fn dispatch(
        &self,
        parts: &[SweepPart],
        tick: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let minute = tick.timestamp() / 60;
        let messages = parts
            .iter()
            .map(|part| {
                serde_json::to_string(part)
                    .map(|body| OutgoingMessage {
                        id: format!("part{}", part.index),
                        body,
                        fifo: Some((
                            format!("part-{}-of-{}", part.index, part.of),
                            format!("part-{}-of-{}-{minute}", part.index, part.of),
                        )),
                    })
                    .map_err(|e| QueueError {
                        operation: "SendMessageBatch",
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.queue.send(&messages).await
    }
}
