//! Where alerts go: the SNS topic and the Slack webhook, whichever are configured.
//!
//! A sink that fails does not stop the others, and a failure is logged with the alert's
//! subject (never the webhook URL): the alert is already recorded as raised on its item, so
//! the log line is what an operator can find if a sink was down.

use replwatch_aws::slack::SlackNotifier;
use replwatch_aws::sns::SnsNotifier;
use replwatch_core::alerts::{Notification, Notifier};

/// The configured sinks.
#[derive(Default)]
pub struct Delivery {
    pub sns: Option<SnsNotifier>,
    pub slack: Option<SlackNotifier>,
}

/// What a delivery round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    pub failed: usize,
}

impl Delivery {
    pub async fn deliver(&self, notifications: &[Notification]) -> DeliveryReport {
        let mut report = DeliveryReport::default();
        for notification in notifications {
            if let Some(sns) = &self.sns {
                record(
                    &mut report,
                    notification,
                    "sns",
                    sns.notify(notification).await,
                );
            }
            if let Some(slack) = &self.slack {
                record(
                    &mut report,
                    notification,
                    "slack",
                    slack.notify(notification).await,
                );
            }
            tracing::info!(
                kind = notification.kind(),
                severity = notification.severity().as_str(),
                destination_region = %notification.destination_region(),
                subject = %notification.subject(),
                "alert"
            );
        }
        report
    }
}

fn record(
    report: &mut DeliveryReport,
    notification: &Notification,
    sink: &'static str,
    result: Result<(), replwatch_core::alerts::NotifyError>,
) {
    match result {
        Ok(()) => report.delivered += 1,
        Err(error) => {
            report.failed += 1;
            tracing::error!(
                sink,
                subject = %notification.subject(),
                retryable = error.retryable,
                error = %error,
                "alert not delivered"
            );
        }
    }
}
