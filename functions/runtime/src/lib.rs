//! What every replwatch function shares.
//!
//! - [`settings`]: configuration from the environment, checked at cold start;
//! - [`Tracking`]: the pipeline with its sinks, assembled once per container
//!   ([`services`] builds it on AWS);
//! - [`batch`]: an SQS batch of events through the pipeline (track-push, track-replication);
//! - [`sweep`]: the scheduled sweep;
//! - [`lost_pushes`]: the scheduled check for pushes whose event was lost;
//! - [`backfill`]: the backfill's plan and copy functions;
//! - [`delivery`]: alert sinks;
//! - [`logging`]: structured JSON logs.
//!
//! Each function's `main.rs` only picks one of these and hands it to `lambda_runtime`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use replwatch_aws::cloudwatch::CloudWatchGauges;
use replwatch_aws::dead_letter::DeadLetterQueue;
use replwatch_aws::sweep_queue::SweepPartQueue;
use replwatch_core::Destination;
use replwatch_core::pipeline::Pipeline;

pub mod backfill;
pub mod batch;
pub mod delivery;
pub mod logging;
pub mod lost_pushes;
pub mod services;
pub mod settings;
pub mod sweep;

pub use delivery::Delivery;

/// The pipeline and everything around it that one function container needs.
pub struct Tracking<S, R, C> {
    pub pipeline: Pipeline<S, R, C>,
    pub delivery: Delivery,
    pub gauges: Option<CloudWatchGauges>,
    pub dead_letters: Option<DeadLetterQueue>,
    /// Where the sweep sends the parts of the due work it does not check itself, and into
    /// how many parts it splits it (1: no split).
    pub sweep_parts: Option<(SweepPartQueue, u32)>,
    pub namespace: String,
    pub function_name: String,
    pub storm_threshold: usize,
    /// The registry the stack watches (this account, in this Region): events about another
    /// are dropped and counted ([`replwatch_core::metrics::EVENTS_NOT_WATCHED`]). `None`:
    /// every event is taken (no `AWS_REGION`, as only a local run has).
    pub watched: Option<Destination>,
    known_destinations: Mutex<BTreeSet<Destination>>,
    /// When this container last counted the gauges.
    gauges_at: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

impl<S, R, C> Tracking<S, R, C> {
    pub fn new(
        pipeline: Pipeline<S, R, C>,
        delivery: Delivery,
        namespace: impl Into<String>,
        function_name: impl Into<String>,
        storm_threshold: usize,
    ) -> Self {
        Self {
            pipeline,
            delivery,
            gauges: None,
            dead_letters: None,
            sweep_parts: None,
            namespace: namespace.into(),
            function_name: function_name.into(),
            storm_threshold,
            watched: None,
            known_destinations: Mutex::new(BTreeSet::new()),
            gauges_at: Mutex::new(None),
        }
    }
}
