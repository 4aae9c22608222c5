//! The lost-push check: the sweep function, invoked by its own schedule with a
//! [`LostPushCheck`] input, looks for pushes of the source registry whose PUSH event never
//! reached track-push and tracks them ([`replwatch_core::lost_pushes`]); every one found is
//! logged and counted in the `UntrackedPushes` metric.

use chrono::{DateTime, TimeDelta, Utc};
use replwatch_core::Destination;
use replwatch_core::lost_pushes::{PushWindow, SourceImages, find_lost_pushes};
use replwatch_core::metrics::{UNTRACKED_PUSHES, function_counts_line};
use replwatch_core::pipeline::PipelineError;
use replwatch_core::registry::Registry;
use replwatch_core::store::RulesRecord;
use replwatch_core::{Clock, ExpectationStore};
use serde::{Deserialize, Serialize};

use crate::Tracking;

/// The `check` of a [`LostPushCheck`] input.
pub const LOST_PUSH_CHECK: &str = "lost-pushes";

/// The schedule's input: `{"check": "lost-pushes", "intervalMinutes": 15}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LostPushCheck {
    pub check: String,
    /// How often the schedule runs the check: each run looks at two intervals of pushes.
    #[serde(default = "default_interval")]
    pub interval_minutes: u32,
    /// How old a push must be before a missing event counts: the time its event may take
    /// through EventBridge and the push queue (whose age alarm fires at 5 minutes).
    #[serde(default = "default_margin")]
    pub margin_minutes: u32,
}

fn default_interval() -> u32 {
    15
}

fn default_margin() -> u32 {
    15
}

impl LostPushCheck {
    /// The check an invocation's payload asks for, if it is one.
    pub fn from_payload(payload: &serde_json::Value) -> Option<Self> {
        serde_json::from_value::<Self>(payload.clone())
            .ok()
            .filter(|c| c.check == LOST_PUSH_CHECK && c.interval_minutes > 0)
    }

    pub fn window(&self, now: DateTime<Utc>) -> PushWindow {
        PushWindow::scheduled(
            now,
            TimeDelta::minutes(i64::from(self.interval_minutes)),
            TimeDelta::minutes(i64::from(self.margin_minutes)),
        )
    }
}

/// What one check did; also the function's response.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LostPushSummary {
    pub repositories: usize,
    /// Images pushed in the window.
    pub images: usize,
    /// (image, tag) pushes found without a tracked push: their events were lost.
    pub untracked_pushes: usize,
    /// Of those, how many this check tracked (the others a concurrent run just did).
    pub tracked: usize,
    pub repositories_left: usize,
    /// Repositories or images that could not be read (each logged with its error).
    pub failures: usize,
    #[serde(skip)]
    pub emf: Vec<String>,
}

impl<S: ExpectationStore + RulesRecord, R: Registry, C: Clock> Tracking<S, R, C> {
    /// Looks for pushes of `source` whose event was lost and tracks them.
    pub async fn run_lost_push_check<L: SourceImages>(
        &self,
        lister: &L,
        source: &Destination,
        check: &LostPushCheck,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<LostPushSummary, PipelineError> {
        let pipeline = &self.pipeline;
        let window = check.window(pipeline.clock().now());
        let report = find_lost_pushes(pipeline, lister, source, window, deadline).await?;
        for failure in &report.failures {
            tracing::error!(error = %failure, "lost-push check: not read");
        }
        for lost in &report.lost {
            tracing::warn!(
                image = %lost.image,
                tag = lost.tag.as_deref(),
                pushed_at = %lost.pushed_at,
                tracked_at = %lost.tracked_at,
                written = lost.written,
                "push without its PUSH event: tracked now"
            );
        }
        let summary = LostPushSummary {
            repositories: report.repositories,
            images: report.images,
            untracked_pushes: report.lost.len(),
            tracked: report.lost.iter().filter(|l| l.written).count(),
            repositories_left: report.repositories_left,
            failures: report.failures.len(),
            emf: vec![function_counts_line(
                &self.namespace,
                pipeline.clock().now(),
                &self.function_name,
                &[(UNTRACKED_PUSHES, report.lost.len() as u64)],
            )],
        };
        if summary.repositories_left > 0 {
            tracing::warn!(
                repositories_left = summary.repositories_left,
                "lost-push check out of time; the next run starts with other repositories"
            );
        }
        tracing::info!(
            from = %window.from,
            until = %window.until,
            repositories = summary.repositories,
            images = summary.images,
            untracked_pushes = summary.untracked_pushes,
            tracked = summary.tracked,
            repositories_left = summary.repositories_left,
            failures = summary.failures,
            "lost-push check done"
        );
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_push_check_input_is_one() {
        let check = LostPushCheck::from_payload(&serde_json::json!({
            "check": "lost-pushes", "intervalMinutes": 30
        }))
        .expect("a check");
        assert_eq!((check.interval_minutes, check.margin_minutes), (30, 15));
        for other in [
            serde_json::json!({}),
            serde_json::json!({"check": "other"}),
            serde_json::json!({"check": "lost-pushes", "intervalMinutes": 0}),
            serde_json::json!({"Records": []}),
            serde_json::json!({"version": "0", "detail-type": "Scheduled Event", "detail": {}}),
        ] {
            assert_eq!(LostPushCheck::from_payload(&other), None, "{other}");
        }
    }
}
