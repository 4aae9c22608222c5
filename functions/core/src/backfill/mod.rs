//! Backfill: bring destinations up to date with images pushed before replication reached them.
//!
//! ECR replicates only what is pushed after a rule exists. A backfill compares inventories
//! (what the source holds, what each destination holds) and plans the (image, destination)
//! pairs that are missing or lost a tag, then brings them over with one of two strategies:
//! - `native`: ECR's own `StartReplicationBackfill`, for destinations in the configuration;
//! - `copy`: a digest-preserving copy through the ECR API, for everything else.
//!
//! The modules:
//! - [`inventory`]: what a registry holds (repositories, their settings, images), as read;
//! - [`manifest`]: what a manifest or image index references (blobs, child manifests);
//! - [`plan`]: the pure plan: which pairs, which strategy, which conflicts;
//! - [`copy`]: the copy of one image over the [`port`] traits, children before the index,
//!   each blob once per destination repository;
//! - [`port`]: the ECR operations a copy needs, and the blob claims that make concurrent
//!   copies upload a shared blob once;
//! - [`run`]: a run's shared record on AWS: progress counted once per job, completion once.

pub mod copy;
pub mod inventory;
pub mod manifest;
pub mod plan;
pub mod port;
pub mod run;
