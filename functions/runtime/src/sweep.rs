//! The scheduled sweep: confirm what is due, alert on what is wrong, publish the gauges.

use std::collections::BTreeSet;

use replwatch_core::Destination;
use replwatch_core::alerts::{Alert, fold};
use replwatch_core::metrics::{GaugePublisher, emf_lines, gauges_from_open_counts, points_for};
use replwatch_core::registry::Registry;
use replwatch_core::store::OpenCount;
use replwatch_core::{Clock, ExpectationStore};
use serde::Serialize;

use crate::Tracking;

/// What one sweep did; also the sweep function's response.
#[derive(Debug, Default, Serialize)]
pub struct SweepSummary {
    pub checked: usize,
    pub images: usize,
    pub reconciled: usize,
    /// Problems raised by this sweep (before folding into notifications).
    #[serde(serialize_with = "count")]
    pub alerts: Vec<Alert>,
    pub unconfirmed_images: usize,
    pub open_pending: u64,
    pub open_overdue: u64,
    #[serde(skip)]
    pub emf: Vec<String>,
}

impl<S: ExpectationStore, R: Registry, C: Clock> Tracking<S, R, C> {
    pub async fn run_sweep(&self) -> Result<SweepSummary, replwatch_core::pipeline::PipelineError> {
        let report = self.pipeline.sweep().await?;
        for failure in &report.failures {
            tracing::warn!(error = %failure, retryable = failure.retryable, "image not confirmed; it stays due");
        }
        let points: Vec<_> = report
            .effects
            .applied
            .iter()
            .flat_map(|a| points_for(&a.record, &a.transition))
            .collect();
        let alerts = report.effects.alerts;
        let notifications = fold(alerts.clone(), self.storm_threshold);
        self.delivery.deliver(&notifications).await;

        // Destinations that had open records before and have none now get an explicit zero,
        // so the dashboard shows the backlog draining instead of a gap.
        let mut counts = report.open.clone();
        {
            let mut known = self
                .known_destinations
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let open: BTreeSet<Destination> =
                report.open.iter().map(|c| c.destination.clone()).collect();
            counts.extend(known.difference(&open).map(|destination| OpenCount {
                destination: destination.clone(),
                pending: 0,
                overdue: 0,
            }));
            known.extend(open);
        }
        let gauges = gauges_from_open_counts(&counts);
        if let Some(publisher) = &self.gauges
            && let Err(error) = publisher
                .publish(self.pipeline.clock().now(), &gauges)
                .await
        {
            tracing::error!(error = %error, "gauges not published");
        }
        let summary = SweepSummary {
            checked: report.checked,
            images: report.images,
            reconciled: report.reconciled,
            alerts,
            unconfirmed_images: report.failures.len(),
            open_pending: report.open.iter().map(|c| c.pending).sum(),
            open_overdue: report.open.iter().map(|c| c.overdue).sum(),
            emf: emf_lines(&self.namespace, self.pipeline.clock().now(), &points),
        };
        tracing::info!(
            checked = summary.checked,
            images = summary.images,
            reconciled = summary.reconciled,
            alerts = summary.alerts.len(),
            unconfirmed_images = summary.unconfirmed_images,
            open_pending = summary.open_pending,
            open_overdue = summary.open_overdue,
            "sweep done"
        );
        Ok(summary)
    }
}

/// The response says how many alerts a sweep raised; their details are in the log.
fn count<S: serde::Serializer>(alerts: &[Alert], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(alerts.len() as u64)
}
