//! Where alerts go: the SNS topic and the Slack webhook, whichever are configured, and how
//! their pending records ([`replwatch_core::outbox`]) are settled afterwards.
//!
//! Each sink gets the alerts it has not taken yet, storm-folded on their own, so a Slack
//! outage never makes SNS subscribers see an alert twice. An alert that every sink took loses
//! its pending record; one that some sink refused keeps it with what was delivered, one more
//! attempt counted and the next one backed off, for the sweep to send again. A failure is
//! logged with the alert's subject and id (never the webhook URL) and counted in the
//! `AlertDeliveryFailures` metric.
//!
//! Slack is optional at runtime: its webhook is read when first needed
//! ([`replwatch_aws::webhook_secret::SlackWebhook`]); while it cannot be read, Slack refuses
//! every alert (so each stays pending for Slack alone), the report says so, and the caller
//! counts it in `SlackWebhookUnavailable`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use replwatch_aws::slack::SINK;
use replwatch_aws::sns::SnsNotifier;
use replwatch_aws::webhook_secret::{SlackWebhook, WebhookUnavailable};
use replwatch_core::alerts::{Notification, Notifier, NotifyError, fold};
use replwatch_core::outbox::{AlertOutbox, PendingAlert};
use replwatch_core::registry::Registry;
use replwatch_core::{Clock, ExpectationStore};

use crate::Tracking;

/// The sink names kept in a pending alert's `delivered_to`.
pub const SNS_SINK: &str = "sns";
pub const SLACK_SINK: &str = SINK;

/// The configured sinks.
#[derive(Default)]
pub struct Delivery {
    pub sns: Option<SnsNotifier>,
    pub slack: Option<SlackWebhook>,
}

/// What a delivery round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Notifications a sink took.
    pub delivered: usize,
    /// Notifications a sink refused.
    pub failed: usize,
    /// Notifications not sent to Slack because its webhook could not be read (also counted in
    /// `failed`).
    pub slack_unavailable: usize,
}

impl Delivery {
    /// The configured sinks' names.
    pub fn sinks(&self) -> Vec<&'static str> {
        let mut sinks = Vec::new();
        if self.sns.is_some() {
            sinks.push(SNS_SINK);
        }
        if self.slack.is_some() {
            sinks.push(SLACK_SINK);
        }
        sinks
    }

    /// Why Slack cannot be posted to at `now`, when it is configured and its webhook cannot
    /// be read (read now unless the last read failed within its backoff).
    pub async fn slack_unavailable(&self, now: DateTime<Utc>) -> Option<WebhookUnavailable> {
        self.slack.as_ref()?.notifier(now).await.err()
    }

    async fn send(
        &self,
        sink: &str,
        notification: &Notification,
        now: DateTime<Utc>,
    ) -> Result<(), Refused> {
        match (sink, &self.sns, &self.slack) {
            (SNS_SINK, Some(sns), _) => sns.notify(notification).await.map_err(Refused::Sink),
            (SLACK_SINK, _, Some(slack)) => {
                let notifier = slack
                    .notifier(now)
                    .await
                    .map_err(Refused::WebhookUnavailable)?;
                let posted = notifier.notify(notification).await;
                if posted.as_ref().is_err_and(|e| !e.retryable) {
                    slack.forget().await;
                }
                posted.map_err(Refused::Sink)
            }
            _ => Ok(()),
        }
    }

    /// Sends notifications that have no pending record (a backfill's completion notice).
    pub async fn deliver(
        &self,
        notifications: &[Notification],
        now: DateTime<Utc>,
    ) -> DeliveryReport {
        let mut report = DeliveryReport::default();
        for notification in notifications {
            for sink in self.sinks() {
                record(
                    &mut report,
                    notification,
                    sink,
                    self.send(sink, notification, now).await,
                );
            }
            log_alert(notification);
        }
        report
    }

    /// Sends each alert of `pending` to every sink that has not taken it, folded per sink
    /// past `storm_threshold`, and marks in each what was delivered.
    pub async fn deliver_pending(
        &self,
        pending: &mut [PendingAlert],
        storm_threshold: usize,
        now: DateTime<Utc>,
    ) -> DeliveryReport {
        let mut report = DeliveryReport::default();
        let sinks = self.sinks();
        if sinks.is_empty() {
            // The log line is then the only place the alert is told.
            let alerts = pending.iter().map(|p| p.alert.clone()).collect();
            fold(alerts, storm_threshold).iter().for_each(log_alert);
        }
        for sink in sinks {
            let lacking: Vec<usize> = (0..pending.len())
                .filter(|&i| !pending[i].delivered_to.contains(sink))
                .collect();
            let alerts = lacking.iter().map(|&i| pending[i].alert.clone()).collect();
            for notification in fold(alerts, storm_threshold) {
                let result = self.send(sink, &notification, now).await;
                let took = result.is_ok();
                record(&mut report, &notification, sink, result);
                if took {
                    let ids: BTreeSet<String> = notification.alert_ids().into_iter().collect();
                    for &i in &lacking {
                        if ids.contains(&pending[i].id()) {
                            pending[i].delivered_to.insert(sink.to_owned());
                        }
                    }
                }
                if sink == SNS_SINK || self.sns.is_none() {
                    log_alert(&notification);
                }
            }
        }
        report
    }
}

impl<S: ExpectationStore + AlertOutbox, R: Registry, C: Clock> Tracking<S, R, C> {
    /// Sends `pending` and settles their records: removed when every sink took them, kept
    /// with the next attempt backed off otherwise.
    pub async fn deliver_alerts(&self, mut pending: Vec<PendingAlert>) -> DeliveryReport {
        if pending.is_empty() {
            return DeliveryReport::default();
        }
        let clock = self.pipeline.clock();
        let report = self
            .delivery
            .deliver_pending(&mut pending, self.storm_threshold, clock.now())
            .await;
        let sinks = self.delivery.sinks();
        let outbox = self.pipeline.store();
        let now = clock.now();
        for mut alert in pending {
            let id = alert.id();
            let settled = if alert.delivered_everywhere(sinks.iter().copied()) {
                outbox.delivered(&id).await
            } else {
                alert.failed_at(now);
                tracing::warn!(
                    alert_id = %id,
                    attempts = alert.attempts,
                    next_attempt_at = %alert.next_attempt_at.to_rfc3339(),
                    "alert kept for another delivery attempt"
                );
                outbox.retry_later(&alert).await
            };
            if let Err(error) = settled {
                // The record stays as it was: the alert is sent again later, with its id.
                tracing::error!(alert_id = %id, error = %error, "pending alert not settled");
            }
        }
        report
    }
}

fn log_alert(notification: &Notification) {
    tracing::info!(
        alert_id = %notification.id(),
        kind = notification.kind(),
        severity = notification.severity().as_str(),
        destination_region = %notification.destination_region(),
        subject = %notification.subject(),
        "alert"
    );
}

/// Why a sink did not take a notification.
enum Refused {
    Sink(NotifyError),
    /// Slack's webhook could not be read: nothing was posted.
    WebhookUnavailable(WebhookUnavailable),
}

fn record(
    report: &mut DeliveryReport,
    notification: &Notification,
    sink: &'static str,
    result: Result<(), Refused>,
) {
    match result {
        Ok(()) => report.delivered += 1,
        Err(Refused::Sink(error)) => {
            report.failed += 1;
            tracing::error!(
                sink,
                alert_id = %notification.id(),
                subject = %notification.subject(),
                retryable = error.retryable,
                error = %error,
                "alert not delivered"
            );
        }
        Err(Refused::WebhookUnavailable(unavailable)) => {
            report.failed += 1;
            report.slack_unavailable += 1;
            tracing::warn!(
                sink,
                alert_id = %notification.id(),
                subject = %notification.subject(),
                retry_at = %unavailable.retry_at.to_rfc3339(),
                "alert kept for Slack: its webhook cannot be read"
            );
        }
    }
}
