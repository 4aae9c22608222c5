//! One SQS batch of EventBridge events through the pipeline, the way `track-push` and
//! `track-replication` receive them.
//!
//! Per message: a malformed event is logged with its event id and field, parked on the
//! dead-letter queue untouched, and acknowledged (retrying cannot fix it); an event replwatch
//! does not handle, or one about a registry other than the watched one (counted as
//! `EventsNotWatched`), is logged and acknowledged; an event whose handling failed (throttling, a
//! store error) is reported as a batch item failure so SQS redelivers only that message, and
//! after the queue's `maxReceiveCount` moves it to the dead-letter queue itself. The alerts the
//! batch raised are already stored as pending with their state changes; they are folded,
//! delivered once at the end of the batch, and what a sink refused stays pending for the
//! sweep to send again. Metrics come back as EMF lines for the caller to print.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::future;
use replwatch_core::alerts::Alert;
use replwatch_core::events::{ParsedEvent, parse_event};
use replwatch_core::metrics::{
    ALERT_DELIVERY_FAILURES, EVENTS_NOT_WATCHED, SLACK_WEBHOOK_UNAVAILABLE, dead_lettered_line,
    emf_lines, function_counts_line,
};
use replwatch_core::outbox::{AlertOutbox, PendingAlert};
use replwatch_core::pipeline::Effects;
use replwatch_core::registry::Registry;
use replwatch_core::store::RulesRecord;
use replwatch_core::{Clock, ExpectationStore};

use crate::Tracking;

/// What a batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub response: SqsBatchResponse,
    /// CloudWatch Embedded Metric Format lines, to print to standard output.
    pub emf: Vec<String>,
    pub handled: usize,
    pub skipped: usize,
    /// Events about a registry other than the watched one, dropped.
    pub not_watched: usize,
    pub parked: usize,
    /// Problems raised by this batch (before folding into notifications).
    pub alerts: Vec<Alert>,
    /// Expectations this batch changed.
    pub changed: usize,
}

impl<S: ExpectationStore + AlertOutbox + RulesRecord, R: Registry, C: Clock> Tracking<S, R, C> {
    /// Processes one batch; never fails as a whole. Its messages are handled at once: each
    /// is mostly waiting on DynamoDB and ECR, and the tracking is insensitive to the order of
    /// events, so a batch costs about its slowest message in billed time, not their sum.
    pub async fn process_batch(&self, event: SqsEvent) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        let mut points = Vec::new();
        let mut alerts = Vec::new();
        let handled = future::join_all(
            event
                .records
                .into_iter()
                .map(|message| self.process_message(message)),
        )
        .await;
        for message in handled {
            match message {
                MessageOutcome::Skipped => outcome.skipped += 1,
                MessageOutcome::NotWatched => outcome.not_watched += 1,
                MessageOutcome::Parked => outcome.parked += 1,
                MessageOutcome::Retry(message_id) => outcome
                    .response
                    .batch_item_failures
                    .push(item_failure(message_id)),
                MessageOutcome::Handled(effects) => {
                    outcome.handled += 1;
                    outcome.changed += effects.applied.len() + effects.pushes_written;
                    points.extend(effects.metric_points());
                    alerts.extend(effects.alerts);
                }
            }
        }
        let delivery = self
            .deliver_alerts(alerts.iter().cloned().map(PendingAlert::raised).collect())
            .await;
        outcome.alerts = alerts;
        let now = self.pipeline.clock().now();
        outcome.emf = emf_lines(&self.namespace, now, &points);
        let mut counts = Vec::new();
        if delivery.failed > 0 {
            counts.push((ALERT_DELIVERY_FAILURES, delivery.failed as u64));
        }
        if delivery.slack_unavailable > 0 {
            counts.push((SLACK_WEBHOOK_UNAVAILABLE, 1));
        }
        if outcome.not_watched > 0 {
            counts.push((EVENTS_NOT_WATCHED, outcome.not_watched as u64));
        }
        if !counts.is_empty() {
            outcome.emf.push(function_counts_line(
                &self.namespace,
                now,
                &self.function_name,
                &counts,
            ));
        }
        if outcome.parked > 0 {
            outcome.emf.push(dead_lettered_line(
                &self.namespace,
                now,
                &self.function_name,
                outcome.parked as u32,
            ));
        }
        outcome
    }

    /// One message: parsed, handled, or parked.
    async fn process_message(&self, message: SqsMessage) -> MessageOutcome {
        let message_id = message.message_id.clone().unwrap_or_default();
        let body = message.body.as_deref().unwrap_or_default();
        let event = match parse_event(body.as_bytes()) {
            Ok(ParsedEvent::Handled(event)) => event,
            Ok(ParsedEvent::Skipped(skipped)) => {
                tracing::info!(
                    message_id,
                    event_id = skipped.id.as_deref(),
                    detail_type = skipped.detail_type.as_deref(),
                    reason = %skipped.reason,
                    "event skipped"
                );
                return MessageOutcome::Skipped;
            }
            Err(error) => {
                tracing::error!(
                    message_id,
                    event_id = error.id.as_deref(),
                    field = %error.field,
                    error = %error,
                    "malformed event parked on the dead-letter queue"
                );
                return if self
                    .park(body, error.id.as_deref(), &error.to_string())
                    .await
                {
                    MessageOutcome::Parked
                } else {
                    MessageOutcome::Retry(message_id)
                };
            }
        };
        if let Some(watched) = &self.watched {
            let about = event.source_registry();
            if about != watched {
                // Never read nor stored: a destination that edited its forwarder, or a rule
                // someone widened, must not make replwatch track another registry's images.
                tracing::warn!(
                    message_id,
                    event_id = %event.envelope().id,
                    registry = %about,
                    watched = %watched,
                    "event about a registry replwatch does not watch dropped"
                );
                return MessageOutcome::NotWatched;
            }
        }
        match self.pipeline.handle(&event).await {
            Ok(effects) => {
                // Pushes and on-time arrivals are the bulk of the traffic: one line each at
                // debug level only, so the log bill follows the problems.
                tracing::debug!(
                    event_id = %event.envelope().id,
                    pushes_written = effects.pushes_written,
                    latencies = effects.latencies.len(),
                    "event applied"
                );
                for applied in &effects.applied {
                    tracing::info!(
                        event_id = %event.envelope().id,
                        image = %applied.record.key.image,
                        tag = applied.record.key.tag.as_deref(),
                        destination = %applied.record.key.destination,
                        from = applied.transition.from.as_str(),
                        to = applied.transition.to.as_str(),
                        latency_seconds = applied.transition.new_latency.map(|l| l.num_milliseconds() as f64 / 1000.0),
                        "expectation updated"
                    );
                }
                MessageOutcome::Handled(effects)
            }
            Err(error) => {
                tracing::warn!(
                    message_id,
                    event_id = %event.envelope().id,
                    error = %error,
                    "event not handled; SQS will deliver it again"
                );
                MessageOutcome::Retry(message_id)
            }
        }
    }

    /// Parks a malformed message; false when it could not be parked (then SQS keeps it and
    /// its own redrive policy moves it to the dead-letter queue).
    async fn park(&self, body: &str, event_id: Option<&str>, reason: &str) -> bool {
        let Some(queue) = &self.dead_letters else {
            tracing::error!(
                "no DEAD_LETTER_QUEUE_URL configured; the malformed event is only in this log"
            );
            return true;
        };
        match queue.park(body, event_id, reason).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(error = %error, "could not park the event; leaving it to the queue's redrive policy");
                false
            }
        }
    }
}

/// What became of one message of a batch.
enum MessageOutcome {
    Skipped,
    /// About another registry than the watched one: dropped, counted.
    NotWatched,
    Parked,
    /// Not handled (or not parked): SQS delivers it again.
    Retry(String),
    Handled(Effects),
}

fn item_failure(message_id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = message_id;
    failure
}
