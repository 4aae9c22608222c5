//! The pure core of replwatch.
//!
//! Everything here decides; nothing here calls AWS. The modules, from the outside in:
//! - [`events`]: the EventBridge events replwatch consumes, parsed and validated;
//! - [`rules`]: a registry's replication configuration and which destinations it selects;
//! - [`model`]: the validated identities (digest, account, Region, repository, destination);
//! - [`tracking`]: the per-(image, destination) state machine and its alert decisions;
//! - [`push`]: one push tracked to every destination with one item, checked at its deadline;
//! - [`incident`]: a tag that names another image in a destination than in the source, one
//!   incident until it converges;
//! - [`store`]: the port through which pushes and expectations are kept, with an in-memory version;
//! - [`tracker`]: the read–transition–conditional-write loop every handler shares;
//! - [`registry`]: the port through which ECR's authoritative answers are read;
//! - [`pipeline`]: what the functions do with an event or a sweep tick, over the ports;
//! - [`lost_pushes`]: the scheduled backstop that tracks pushes whose event was lost;
//! - [`alerts`]: what is told to a human, folded under storms, and the notifier port;
//! - [`outbox`]: alerts stored with the change that raised them until every sink took them;
//! - [`metrics`]: per-event metrics as CloudWatch EMF lines, and the gauge publisher port;
//! - [`audit`]: drift between a source and its destinations, for `replwatch audit`;
//! - [`doctor`]: the preflight of a replication setup, for `replwatch doctor`, with
//!   [`registry_policy`] deciding what a destination registry's policy allows and
//!   [`region_opt_in`] what an account's opt-in status of a Region allows;
//! - [`backfill`]: the plan and the digest-preserving copy that bring destinations up to date;
//! - [`clock`]: time (and waiting) as a dependency.

pub mod alerts;
pub mod audit;
pub mod backfill;
pub mod backoff;
pub mod clock;
pub mod doctor;
pub mod events;
pub mod incident;
pub mod lost_pushes;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod pipeline;
pub mod push;
pub mod region_opt_in;
pub mod registry;
pub mod registry_policy;
pub mod rules;
pub mod store;
pub mod tracker;
pub mod tracking;
pub mod unreadable;
pub mod wildcard;

#[cfg(test)]
mod test_events;

pub use backfill::{BackfillFilters, BackfillPlan, CopyJob, plan_backfill};
pub use clock::{Clock, ManualClock, ManualClockSleeper, OffsetClock, Sleeper, SystemClock};
pub use events::{EcrEvent, EventError, ParsedEvent, parse_event};
pub use incident::{Divergence, DivergenceCause, ResolutionReason, TagIncident, TagObservation};
pub use model::{
    AccountId, Destination, Digest, ExpectationKey, Region, RepositoryName, SourceImage, TagKey,
};
pub use outbox::{AlertOutbox, PendingAlert};
pub use rules::{ConfigurationError, ReplicationConfiguration};
pub use store::{ExpectationStore, InMemoryStore, StoreError};
pub use tracker::{Applied, Creation, Tracker, TrackerError};
pub use tracking::{
    AlertKind, ExpectationState, Observation, ReplicationExpectation, TagArrival, TrackingPolicy,
    Transition,
};
