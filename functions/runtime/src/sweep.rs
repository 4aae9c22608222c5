//! The scheduled sweep: send the alerts still pending, queue the other parts of the due work
//! when it is split, confirm its own part in rounds and deliver each round's alerts before the
//! next, stop before the invocation's deadline with the rest left due, publish the gauges and
//! a heartbeat. A sweep of another part (from the parts queue) only confirms that part.
//!
//! Every part that finishes beats (`SweepHeartbeat` 1, counted at its tick's time), so a tick
//! whose parts all ran counts as many beats as there are parts, and the heartbeat alarm fires
//! when no tick of its window did: a part that never runs, or keeps failing, is seen, not
//! hidden by part 0 beating alone. Parts the scheduled sweep could not queue after its
//! retries are counted (`SweepPartsNotDispatched`), and at every tick it checks that the Slack
//! webhook can be read (`SlackWebhookUnavailable`), a read only when it could not be before.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
pub use replwatch_aws::sweep_queue::QueuedPart;
use replwatch_core::Destination;
use replwatch_core::alerts::Alert;
use replwatch_core::metrics::{
    ALERT_DELIVERY_FAILURES, GaugePublisher, MetricPoint, SET_ASIDE_ALERTS,
    SLACK_WEBHOOK_UNAVAILABLE, SWEEP_HEARTBEAT, SWEEP_PARTS_NOT_DISPATCHED, UNDELIVERED_ALERTS,
    emf_lines, function_counts_line, gauges_from_open_counts,
};
use replwatch_core::outbox::{AlertOutbox, Claimed, PendingAlert};
use replwatch_core::pipeline::PipelineError;
use replwatch_core::registry::Registry;
use replwatch_core::store::{OpenCount, RulesRecord, SweepPart};
use replwatch_core::{Clock, ExpectationStore};
use serde::Serialize;

use crate::Tracking;

/// The least time a sweep keeps in hand before its deadline; more when its rounds are slow.
pub use replwatch_core::clock::DEADLINE_MARGIN;

/// How often the gauges (pending and overdue per destination) are counted and published:
/// the dashboard shows them per 5 minutes.
pub const GAUGE_INTERVAL: TimeDelta = TimeDelta::minutes(5);

/// How many pending alerts one sweep sends again at most.
pub const PENDING_ALERTS_PER_SWEEP: usize = 1_000;

/// What one sweep did; also the sweep function's response.
#[derive(Debug, Default, Serialize)]
pub struct SweepSummary {
    pub checked: usize,
    pub images: usize,
    /// Open tag incidents looked at again.
    pub incidents: usize,
    pub reconciled: usize,
    /// Problems raised by this sweep (before folding into notifications).
    #[serde(serialize_with = "count")]
    pub alerts: Vec<Alert>,
    /// Alerts raised earlier whose delivery this sweep tried again.
    pub retried_alerts: usize,
    /// Alerts not yet delivered to every sink when the sweep ended (0 also when they could
    /// not be counted; the log says so and the metric is left out).
    pub undelivered_alerts: u64,
    /// Images whose check failed as a whole (the store), put off.
    pub unconfirmed_images: usize,
    /// Destinations of pushes left unconfirmed: a registry their confirmation needs could
    /// not be read. Retried with backoff; the other destinations got their verdicts.
    pub unconfirmed_destinations: usize,
    /// Registry reads not made because a round had seen the registry down (three reads in a
    /// row failed as unavailable): their destinations were left unconfirmed without a call.
    pub skipped_reads: usize,
    /// Unreadable pending alert records this sweep set aside (their keys are in the log).
    pub set_aside_alerts: usize,
    /// Whether due records were left for the next sweep (time ran out, or a round was
    /// full).
    pub stopped_early: bool,
    pub open_pending: u64,
    pub open_overdue: u64,
    /// Parts of this tick the scheduled sweep could not queue (they are not checked now).
    pub parts_not_dispatched: usize,
    /// Every metric line the sweep wrote to its log, each as it was written (so a sweep cut
    /// off loses none it had written); kept here for tests and the local runner.
    #[serde(skip)]
    pub emf: Vec<String>,
}

impl<S: ExpectationStore + AlertOutbox + RulesRecord, R: Registry, C: Clock> Tracking<S, R, C> {
    /// The scheduled sweep: part 0 of the configured split, which also sends the other parts
    /// to the parts queue. `deadline` is when the invocation is cut off (Lambda's), if there is
    /// one.
    pub async fn run_sweep(
        &self,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<SweepSummary, PipelineError> {
        let parts = self.sweep_parts.as_ref().map_or(1, |(_, parts)| *parts);
        let all = SweepPart::all(parts);
        let tick = self.pipeline.clock().now();
        let mut not_dispatched = Vec::new();
        if let Some((queue, _)) = &self.sweep_parts
            && all.len() > 1
            && let Err(error) = queue.dispatch(&all[1..], tick).await
        {
            // Those parts wait for the next tick (the heartbeat alarm sees them missing); this
            // one is checked now.
            not_dispatched = error.parts.iter().map(|p| p.index).collect();
            tracing::error!(error = %error, parts = ?not_dispatched, "sweep parts not queued");
        }
        let mut summary = self
            .run_queued_part(deadline, QueuedPart { part: all[0], tick })
            .await?;
        summary.parts_not_dispatched = not_dispatched.len();
        let now = self.pipeline.clock().now();
        let mut counts = Vec::new();
        if !not_dispatched.is_empty() {
            counts.push((SWEEP_PARTS_NOT_DISPATCHED, not_dispatched.len() as u64));
        }
        if let Some(unavailable) = self.delivery.slack_unavailable(now).await {
            tracing::warn!(error = %unavailable, "Slack webhook unavailable; Slack alerts stay pending");
            counts.push((SLACK_WEBHOOK_UNAVAILABLE, 1));
        }
        if !counts.is_empty() {
            summary.write_metric_line(function_counts_line(
                &self.namespace,
                now,
                &self.function_name,
                &counts,
            ));
        }
        Ok(summary)
    }

    /// One part of one tick ([`Self::run_sweep_part`]), and its heartbeat at the tick's time
    /// once it finished.
    pub async fn run_queued_part(
        &self,
        deadline: Option<DateTime<Utc>>,
        queued: QueuedPart,
    ) -> Result<SweepSummary, PipelineError> {
        let mut summary = self.run_sweep_part(deadline, queued.part).await?;
        summary.write_metric_line(function_counts_line(
            &self.namespace,
            queued.tick,
            &self.function_name,
            &[(SWEEP_HEARTBEAT, 1)],
        ));
        Ok(summary)
    }

    /// One sweep of `part`. Part 0 (the scheduled one) also sends the pending alerts again and
    /// publishes the gauges and the undelivered count; the others only confirm their share of
    /// the due work. The heartbeat is [`Self::run_queued_part`]'s.
    pub async fn run_sweep_part(
        &self,
        deadline: Option<DateTime<Utc>>,
        part: SweepPart,
    ) -> Result<SweepSummary, PipelineError> {
        let clock = self.pipeline.clock();
        let store = self.pipeline.store();
        let mut summary = SweepSummary::default();
        let mut failed_deliveries = 0;
        let scheduled = part.index == 0;

        // Alerts whose first delivery failed or never happened: before anything new.
        let claimed = if scheduled {
            store.claim_due(clock.now(), PENDING_ALERTS_PER_SWEEP).await
        } else {
            Ok(Claimed::default())
        };
        let retry = match claimed {
            Ok(claimed) => {
                summary.set_aside_alerts = claimed.set_aside.len();
                claimed.alerts
            }
            Err(error) => {
                // They stay pending: the next sweep tries again. The due records still get
                // checked now.
                tracing::error!(error = %error, "pending alerts not read");
                Vec::new()
            }
        };
        summary.retried_alerts = retry.len();
        failed_deliveries += self.deliver_alerts(retry).await.failed;

        let round = self.pipeline.settings().sweep_batch.max(1);
        // Each check's metric lines are written as soon as its writes are stored: a sweep cut
        // off later (its deadline, a crash, SIGKILL) has already counted what it wrote. The
        // happy path's counts (`MetricName::counted_per_round`) wait for the end of their
        // round, folded into one line per destination instead of one per push.
        let written = std::sync::Mutex::new(Vec::new());
        let per_round = std::sync::Mutex::new(Vec::new());
        let write_lines = |points: &[MetricPoint]| {
            let lines = emf_lines(&self.namespace, clock.now(), points);
            for line in &lines {
                crate::logging::write_metric_line(line);
            }
            written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(lines);
        };
        let write_metrics = |effects: &replwatch_core::pipeline::Effects| {
            let (folded, now): (Vec<MetricPoint>, Vec<MetricPoint>) = effects
                .metric_points()
                .into_iter()
                .partition(|p| p.name.counted_per_round());
            write_lines(&now);
            per_round
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(folded);
        };
        let mut slowest = TimeDelta::zero();
        loop {
            let started = clock.now();
            let report = self
                .pipeline
                .sweep_reporting(round, part, &write_metrics)
                .await;
            let folded = std::mem::take(&mut *per_round.lock().unwrap_or_else(|p| p.into_inner()));
            write_lines(&folded);
            let report = report?;
            for failure in &report.failures {
                tracing::warn!(error = %failure, "check failed; put off");
            }
            let raised: Vec<PendingAlert> = report
                .effects
                .alerts
                .iter()
                .cloned()
                .map(PendingAlert::raised)
                .collect();
            failed_deliveries += self.deliver_alerts(raised).await.failed;
            summary.checked += report.checked;
            summary.images += report.images;
            summary.incidents += report.incidents;
            summary.reconciled += report.reconciled;
            summary.unconfirmed_images += report.failures.len();
            summary.unconfirmed_destinations += report.unconfirmed;
            summary.skipped_reads += report.skipped_reads;
            summary.alerts.extend(report.effects.alerts);

            slowest = slowest.max(clock.now() - started);
            let full = report.more;
            // Failed checks are put off, out of the next round's way; only a round whose
            // every item failed and stayed at the head of the due index would read them again.
            let progressed = report.stuck < report.images + report.incidents;
            let time_left =
                deadline.is_none_or(|d| d - clock.now() > (slowest * 3 / 2).max(DEADLINE_MARGIN));
            if !(full && progressed && time_left) {
                summary.stopped_early = full;
                break;
            }
        }

        let now = clock.now();
        summary.emf = written.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut counts = Vec::new();
        if scheduled {
            // Not counted is not zero: a count that failed is left out rather than reported
            // falsely low.
            let undelivered = match store.undelivered().await {
                Ok(n) => Some(n),
                Err(error) => {
                    tracing::error!(error = %error, "undelivered alerts not counted");
                    None
                }
            };
            summary.undelivered_alerts = undelivered.unwrap_or_default();
            if let Some(open) = self.open_counts(now).await {
                summary.open_pending = open.iter().map(|c| c.pending).sum();
                summary.open_overdue = open.iter().map(|c| c.overdue).sum();
                self.publish_gauges(open).await;
            }
            if let Some(n) = undelivered {
                counts.push((UNDELIVERED_ALERTS, n));
            }
            match store.set_aside().await {
                Ok(n) => counts.push((SET_ASIDE_ALERTS, n)),
                Err(error) => tracing::error!(error = %error, "set-aside alerts not counted"),
            }
        }
        if failed_deliveries > 0 {
            counts.push((ALERT_DELIVERY_FAILURES, failed_deliveries as u64));
        }
        if !counts.is_empty() {
            summary.write_metric_line(function_counts_line(
                &self.namespace,
                now,
                &self.function_name,
                &counts,
            ));
        }
        tracing::info!(
            part = part.index,
            of = part.of,
            checked = summary.checked,
            images = summary.images,
            incidents = summary.incidents,
            reconciled = summary.reconciled,
            alerts = summary.alerts.len(),
            retried_alerts = summary.retried_alerts,
            undelivered_alerts = summary.undelivered_alerts,
            unconfirmed_images = summary.unconfirmed_images,
            unconfirmed_destinations = summary.unconfirmed_destinations,
            skipped_reads = summary.skipped_reads,
            set_aside_alerts = summary.set_aside_alerts,
            stopped_early = summary.stopped_early,
            open_pending = summary.open_pending,
            open_overdue = summary.open_overdue,
            "sweep done"
        );
        Ok(summary)
    }

    /// The open counts, when the last ones this container published are at least
    /// [`GAUGE_INTERVAL`] old (or there are none): each count reads every open item's index
    /// entry, about 208,000 of them at 10 million pushes a day.
    async fn open_counts(&self, now: DateTime<Utc>) -> Option<Vec<OpenCount>> {
        {
            let last = self.gauges_at.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| now - at < GAUGE_INTERVAL) {
                return None;
            }
        }
        match self.pipeline.store().open_counts().await {
            Ok(open) => {
                *self.gauges_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                Some(open)
            }
            Err(error) => {
                tracing::error!(error = %error, "open counts not read; gauges skipped");
                None
            }
        }
    }

    async fn publish_gauges(&self, open: Vec<OpenCount>) {
        // Destinations that had open records before and have none now get an explicit zero,
        // so the dashboard shows the backlog draining instead of a gap.
        let mut counts = open.clone();
        {
            let mut known = self
                .known_destinations
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let open: BTreeSet<Destination> = open.iter().map(|c| c.destination.clone()).collect();
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
    }
}

impl SweepSummary {
    /// Writes `line` to the log now (CloudWatch extracts its metrics from there) and keeps
    /// it in [`SweepSummary::emf`].
    fn write_metric_line(&mut self, line: String) {
        crate::logging::write_metric_line(&line);
        self.emf.push(line);
    }
}

/// The response says how many alerts a sweep raised; their details are in the log.
fn count<S: serde::Serializer>(alerts: &[Alert], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(alerts.len() as u64)
}
