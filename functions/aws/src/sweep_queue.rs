//! The sweep's parts on SQS: the scheduled sweep checks part 0 itself and sends the other
//! parts of the due work to a FIFO queue whose event source mapping runs the same function
//! once per message. One message group per part keeps two sweeps of the same part from
//! running at once (a part still being swept when the next tick comes waits its turn), and a
//! deduplication id per part and minute keeps a retried send from queueing it twice.
//!
//! Each message carries its tick (`{"index": 3, "of": 8, "tick": "2026-…Z"}`, [`QueuedPart`]):
//! every part's heartbeat is counted at its tick's time, so the heartbeat alarm sees, per
//! minute, how many parts of that tick finished. A send that fails is tried again a few times
//! with backoff ([`DISPATCH_ATTEMPTS`], [`DISPATCH_BACKOFF`]); what still failed is returned, so
//! the sweep counts it rather than only logging it.

use std::time::Duration;

use aws_sdk_sqs::Client;
use chrono::{DateTime, Utc};
use replwatch_core::backfill::fanout::QueueError;
use replwatch_core::clock::Sleeper;
use replwatch_core::store::SweepPart;

use crate::sqs_queue::{BATCH_SIZE, OutgoingMessage, SqsQueue};
use crate::tokio_sleeper::TokioSleeper;

/// Sends of one batch of parts in one dispatch, the first included.
pub const DISPATCH_ATTEMPTS: u32 = 3;
/// The wait after the first failed send; doubled after each further one (1 s, 2 s: well
/// within the sweep's minute).
pub const DISPATCH_BACKOFF: Duration = Duration::from_secs(1);

/// Where the sweep sends its parts.
#[derive(Debug, Clone)]
pub struct SweepPartQueue {
    queue: SqsQueue,
}

/// One part of one tick, as a message of the parts queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedPart {
    pub part: SweepPart,
    /// When the scheduled sweep queued it: its heartbeat is counted at this time.
    pub tick: DateTime<Utc>,
}

impl QueuedPart {
    pub fn body(&self) -> String {
        serde_json::json!({
            "index": self.part.index,
            "of": self.part.of,
            "tick": self.tick.to_rfc3339(),
        })
        .to_string()
    }

    /// The part a message body names; a body without a tick (queued before ticks were
    /// carried) is of the tick `received`.
    pub fn parse(body: &str, received: DateTime<Utc>) -> Result<Self, String> {
        let part: SweepPart =
            serde_json::from_str(body).map_err(|e| format!("not a sweep part: {e}"))?;
        if part.index >= part.of {
            return Err(format!("part {} of {} does not exist", part.index, part.of));
        }
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
        let tick = match value.get("tick") {
            None | Some(serde_json::Value::Null) => received,
            Some(tick) => serde_json::from_value(tick.clone())
                .map_err(|e| format!("tick is not a time: {e}"))?,
        };
        Ok(Self { part, tick })
    }
}

/// Parts that were not queued after every attempt, and the last error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} sweep parts not queued after {DISPATCH_ATTEMPTS} attempts: {error}", parts.len())]
pub struct PartsNotQueued {
    pub parts: Vec<SweepPart>,
    pub error: QueueError,
}

impl SweepPartQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            queue: SqsQueue::new(client, queue_url),
        }
    }

    /// Queues `parts` for the tick at `tick`, trying a failed batch again with backoff.
    pub async fn dispatch(
        &self,
        parts: &[SweepPart],
        tick: DateTime<Utc>,
    ) -> Result<(), PartsNotQueued> {
        let minute = tick.timestamp() / 60;
        let mut unsent = parts.to_vec();
        let mut delay = DISPATCH_BACKOFF;
        let mut attempt = 1;
        loop {
            let mut failed = Vec::new();
            let mut last_error = None;
            for batch in unsent.chunks(BATCH_SIZE) {
                let messages: Vec<OutgoingMessage> = batch
                    .iter()
                    .map(|&part| OutgoingMessage {
                        id: format!("part{}", part.index),
                        body: QueuedPart { part, tick }.body(),
                        fifo: Some((
                            format!("part-{}-of-{}", part.index, part.of),
                            format!("part-{}-of-{}-{minute}", part.index, part.of),
                        )),
                    })
                    .collect();
                if let Err(error) = self.queue.send(&messages).await {
                    failed.extend_from_slice(batch);
                    last_error = Some(error);
                }
            }
            let Some(error) = last_error else {
                return Ok(());
            };
            if attempt >= DISPATCH_ATTEMPTS {
                return Err(PartsNotQueued {
                    parts: failed,
                    error,
                });
            }
            tracing::warn!(
                attempt,
                parts = failed.len(),
                error = %error,
                "sweep parts not queued; trying again"
            );
            TokioSleeper.sleep(delay).await;
            delay *= 2;
            attempt += 1;
            unsent = failed;
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_part_carries_its_tick_and_an_older_message_takes_its_arrival() {
        let tick = Utc
            .with_ymd_and_hms(2026, 12, 7, 12, 0, 0)
            .single()
            .expect("time");
        let queued = QueuedPart {
            part: SweepPart { index: 3, of: 8 },
            tick,
        };
        let received = tick + chrono::TimeDelta::minutes(7);
        assert_eq!(QueuedPart::parse(&queued.body(), received), Ok(queued));
        assert_eq!(
            QueuedPart::parse(r#"{"index": 3, "of": 8}"#, received),
            Ok(QueuedPart {
                tick: received,
                ..queued
            })
        );
        for bad in [
            r#"{"index": 8, "of": 8}"#,
            r#"{"index": 1}"#,
            r#"{"index": 1, "of": 2, "tick": "yesterday"}"#,
            "part 1",
        ] {
            assert!(QueuedPart::parse(bad, received).is_err(), "{bad}");
        }
    }
}
