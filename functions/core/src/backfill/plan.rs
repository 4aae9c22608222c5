//! The backfill plan: which images each destination lacks, how they get there, and what
//! cannot be done. Pure: it compares inventories already read and decides.
//!
//! For every destination (those of the replication configuration, optionally only the ones a
//! configuration change added, plus extra destinations named by the operator):
//! - the repositories concerned are those whose images the rules send there (all repositories
//!   passing the prefix filter, for an extra destination);
//! - each source image passing the filters is planned as a `copy` when the destination
//!   repository lacks it, or a `retag` when it holds the image but not all its tags;
//! - a tag that points at another image in the destination moves, as replicating the push
//!   would have moved it, unless the destination repository holds it immutable: then it is a
//!   [`TagConflict`], reported and never overwritten;
//! - a missing destination repository is created first, with the settings ECR replication
//!   would have given it (a `REPLICATION` creation template of the destination), else the
//!   source repository's;
//! - the strategy is `native` (ECR's `StartReplicationBackfill`) when ECR can do exactly this
//!   job: the destination is in the configuration and in the source's partition, and no
//!   filter narrows the set (a native backfill takes no filter: it sends everything the rules
//!   select). Otherwise `copy`, with the reason.
//!
//! The plan is ordered (destination, repository, push date, digest) so two runs over the same
//! inventories print the same plan, and a run after a complete backfill plans nothing.

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backfill::copy::CopyJob;
use crate::backfill::inventory::{
    CreationTemplate, DestinationInventory, ImageRecord, RepositoryInventory, RepositorySettings,
};
use crate::backfill::manifest::is_index_media_type;
use crate::backfill::referrers::{Referrers, referrer_kind, subject_of};
use crate::model::{Destination, Digest, RepositoryName};
use crate::rules::ReplicationConfiguration;
use crate::wildcard::{self, Wildcards};

/// The longest tag ECR accepts, and so the longest pattern worth writing.
pub const MAX_TAG_PATTERN_LENGTH: usize = 128;

/// An ECR-style tag wildcard: `*` matches any run of characters (including none); every other
/// character matches itself. ECR's tag filters (lifecycle `tagPatternList`, tag mutability
/// exclusion filters) know no other wildcard, so `?` and the rest are refused rather than
/// silently matched literally.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TagPattern(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagPatternError {
    #[error("an empty tag pattern")]
    Empty,
    #[error("tag pattern of {length} characters; tags have at most {MAX_TAG_PATTERN_LENGTH}")]
    TooLong { length: usize },
    #[error(
        "tag pattern {pattern:?}: {character:?} cannot appear in a tag (letters, digits, `.`, `_`, `-`; `*` is the only wildcard)"
    )]
    InvalidCharacter { pattern: String, character: char },
}

impl TagPattern {
    pub fn parse(pattern: &str) -> Result<Self, TagPatternError> {
        if pattern.is_empty() {
            return Err(TagPatternError::Empty);
        }
        let length = pattern.chars().count();
        if length > MAX_TAG_PATTERN_LENGTH {
            return Err(TagPatternError::TooLong { length });
        }
        if let Some(character) = pattern
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*')))
        {
            return Err(TagPatternError::InvalidCharacter {
                pattern: pattern.to_owned(),
                character,
            });
        }
        Ok(Self(pattern.to_owned()))
    }

    pub fn matches(&self, tag: &str) -> bool {
        wildcard::matches(&self.0, tag, Wildcards::Star)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TagPattern {
    type Error = TagPatternError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TagPattern> for String {
    fn from(value: TagPattern) -> Self {
        value.0
    }
}

impl fmt::Display for TagPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which source images a backfill considers. Empty lists and absent dates select everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackfillFilters {
    /// Repository name prefixes (plain prefixes, as replication's `PREFIX_MATCH`).
    #[serde(default)]
    pub repository_prefixes: Vec<String>,
    /// An image passes when any of its tags matches one; untagged images pass only when there
    /// is no tag pattern.
    #[serde(default)]
    pub tag_patterns: Vec<TagPattern>,
    /// Pushed at or after this instant.
    #[serde(default)]
    pub pushed_after: Option<DateTime<Utc>>,
    /// Pushed strictly before this instant (so consecutive windows neither overlap nor leave
    /// a gap).
    #[serde(default)]
    pub pushed_before: Option<DateTime<Utc>>,
}

impl BackfillFilters {
    pub fn selects_repository(&self, repository: &RepositoryName) -> bool {
        self.repository_prefixes.is_empty()
            || self
                .repository_prefixes
                .iter()
                .any(|p| repository.as_str().starts_with(p.as_str()))
    }

    /// Whether `image` passes the tag and date filters. An image without a push date fails a
    /// date filter: nothing says it is inside the window.
    pub fn selects_image(&self, image: &ImageRecord) -> bool {
        let tags = self.tag_patterns.is_empty()
            || image
                .tags
                .iter()
                .any(|tag| self.tag_patterns.iter().any(|p| p.matches(tag)));
        let after = self
            .pushed_after
            .is_none_or(|after| image.pushed_at.is_some_and(|at| at >= after));
        let before = self
            .pushed_before
            .is_none_or(|before| image.pushed_at.is_some_and(|at| at < before));
        tags && after && before
    }

    /// Whether a native backfill to `destination`, which sends every image of every
    /// repository the rules select, would send something these filters leave out.
    fn narrower_than_native(
        &self,
        configuration: &ReplicationConfiguration,
        destination: &Destination,
    ) -> bool {
        if !self.tag_patterns.is_empty()
            || self.pushed_after.is_some()
            || self.pushed_before.is_some()
        {
            return true;
        }
        if self.repository_prefixes.is_empty()
            || self.repository_prefixes.iter().any(|p| p.is_empty())
        {
            return false;
        }
        // The prefixes cover the rules when every repository a rule selects for this
        // destination starts with one of them: each rule filter starts with a prefix. A rule
        // without filters selects every repository, which no non-empty prefix covers.
        !configuration
            .rules
            .iter()
            .filter(|rule| rule.destinations.contains(destination))
            .all(|rule| {
                !rule.repository_filters.is_empty()
                    && rule.repository_filters.iter().all(|filter| {
                        self.repository_prefixes
                            .iter()
                            .any(|p| filter.filter.starts_with(p.as_str()))
                    })
            })
    }
}

/// What bringing one image to a destination repository takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyAction {
    /// The image is absent: its blobs, manifest (and children) and tags are copied.
    Copy,
    /// The image is there without some of its tags: only the tags are put.
    Retag,
}

/// A tag that will move from another image in the destination to this one, as replicating
/// the push would have moved it (the tag is mutable there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagMove {
    pub tag: String,
    pub from_digest: Digest,
}

/// One image to bring to one destination repository (named as in the source: replication
/// keeps repository names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedImage {
    pub repository: RepositoryName,
    pub digest: Digest,
    pub action: CopyAction,
    /// The tags to put: every tag for a copy (none for an untagged image), the missing ones
    /// for a retag. Tags held immutable by another image are left out (see the conflicts).
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<TagMove>,
    pub pushed_at: Option<DateTime<Utc>>,
    pub size_bytes: Option<u64>,
    pub media_type: Option<String>,
    /// For a referrer (signature, SBOM, attestation, legacy cosign tag): the image it refers
    /// to, which a copy brings first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
}

/// A source image the plan would bring but cannot: it is archived (or being restored), and
/// archived images cannot be pulled. Restoring it lets the next backfill through (and
/// replication copies a restored image by itself).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedImage {
    pub repository: RepositoryName,
    pub digest: Digest,
    /// Set for a referrer: the image it refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    /// What it is, for people (`signature`, `SBOM`, ..., or `image`).
    pub kind: String,
}

impl ArchivedImage {
    /// The command that restores it.
    pub fn restore_command(&self, source: &Destination) -> String {
        format!(
            "aws ecr update-image-storage-class --region {} --registry-id {} \
             --repository-name {} --image-id imageDigest={} --target-storage-class STANDARD",
            source.region, source.registry_id, self.repository, self.digest
        )
    }
}

/// A source tag the destination holds, immutable, on another image: never overwritten.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagConflict {
    pub repository: RepositoryName,
    pub tag: String,
    pub source_digest: Digest,
    pub destination_digest: Digest,
}

/// Where the settings of a repository the backfill creates come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum SettingsSource {
    /// The source repository's settings.
    Source,
    /// The destination's repository creation template for replication with this prefix:
    /// what ECR replication itself would have applied.
    Template { prefix: String },
}

/// A destination repository to create before anything is copied into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryCreation {
    pub name: RepositoryName,
    pub settings: RepositorySettings,
    pub settings_from: SettingsSource,
}

/// How a destination is brought up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// ECR's `StartReplicationBackfill`, then a copy pass for whatever it did not bring
    /// (failures, and the retags).
    Native,
    /// Digest-preserving copies through the ECR API.
    Copy,
}

/// Why a destination got its strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyReason {
    /// In the configuration, same partition, nothing filtered out: ECR can do it.
    InConfiguration,
    /// Not a destination of the replication configuration: ECR will not backfill it.
    NotInConfiguration,
    /// In another partition than the source (aws, aws-cn, aws-us-gov...): replication and
    /// native backfill do not cross partitions.
    OtherPartition,
    /// The operator asked for copies.
    Forced,
    /// A filter leaves out images a native backfill would send.
    FiltersNarrowerThanNative,
    /// Refused: the destination cannot take images now (its Region is not enabled in the
    /// source or the destination account); [`DestinationPlan::refused`] says why.
    Refused,
}

impl fmt::Display for StrategyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StrategyReason::InConfiguration => "in the replication configuration",
            StrategyReason::NotInConfiguration => "not in the replication configuration",
            StrategyReason::OtherPartition => "in another partition than the source",
            StrategyReason::Forced => "copy forced",
            StrategyReason::FiltersNarrowerThanNative => "filters narrower than a native backfill",
            StrategyReason::Refused => "refused",
        })
    }
}

/// Counts of a plan or of one destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanTotals {
    pub images: usize,
    pub copies: usize,
    pub retags: usize,
    /// The bytes the copies move at most: ECR's image sizes summed (blobs shared between
    /// images count once per image, though they cross once). An index counts only when its
    /// children are not planned on their own, since ECR reports it as their sum.
    pub bytes_estimate: u64,
    pub repositories_to_create: usize,
    pub conflicts: usize,
    /// Of `images`, the referrers (signatures, SBOMs, attestations, legacy cosign tags).
    #[serde(default)]
    pub referrers: usize,
    /// Images that would be brought but are archived in the source.
    #[serde(default)]
    pub archived: usize,
}

impl PlanTotals {
    fn add(&mut self, other: &PlanTotals) {
        self.images += other.images;
        self.copies += other.copies;
        self.retags += other.retags;
        self.bytes_estimate += other.bytes_estimate;
        self.repositories_to_create += other.repositories_to_create;
        self.conflicts += other.conflicts;
        self.referrers += other.referrers;
        self.archived += other.archived;
    }
}

/// Everything planned for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationPlan {
    pub destination: Destination,
    pub strategy: Strategy,
    pub reason: StrategyReason,
    /// Created before either strategy runs, so a native backfill finds them with these
    /// settings rather than ECR's defaults.
    pub repositories_to_create: Vec<RepositoryCreation>,
    pub items: Vec<PlannedImage>,
    pub conflicts: Vec<TagConflict>,
    /// Images (referrers among them) that would be brought but are archived in the source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archived: Vec<ArchivedImage>,
    /// Why nothing is planned for this destination, when it was refused (a Region not enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// What the operator should know (a KMS key that could not be reused...).
    pub notes: Vec<String>,
    pub totals: PlanTotals,
}

impl DestinationPlan {
    /// Nothing to create or copy (conflicts may remain: they are reported, not acted on).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.repositories_to_create.is_empty()
    }

    /// One copy job per planned image (a retag is a copy that finds the blobs there).
    pub fn copy_jobs(&self, source: &Destination) -> Vec<CopyJob> {
        self.items
            .iter()
            .map(|item| self.copy_job(source, item))
            .collect()
    }

    pub(crate) fn copy_job(&self, source: &Destination, item: &PlannedImage) -> CopyJob {
        CopyJob {
            source: source.clone(),
            source_repository: item.repository.clone(),
            destination: self.destination.clone(),
            destination_repository: item.repository.clone(),
            digest: item.digest.clone(),
            tags: item.tags.clone(),
            subject: item.subject.clone(),
        }
    }
}

/// The whole plan, as printed by `--output json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackfillPlan {
    pub source: Destination,
    pub filters: BackfillFilters,
    pub destinations: Vec<DestinationPlan>,
    /// What concerns the whole plan (a destination asked for that could not be planned...).
    pub notes: Vec<String>,
    pub totals: PlanTotals,
}

impl BackfillPlan {
    /// Nothing to do anywhere: what a second run after a complete backfill plans.
    pub fn is_empty(&self) -> bool {
        self.destinations.iter().all(DestinationPlan::is_empty)
    }
}

/// What a plan is made from.
#[derive(Debug, Clone, Copy)]
pub struct PlanRequest<'a> {
    /// The source registry.
    pub source: &'a Destination,
    pub configuration: &'a ReplicationConfiguration,
    /// The source's repositories and images (at least those passing the prefix filter).
    pub source_inventory: &'a [RepositoryInventory],
    /// One inventory per destination planned.
    pub destination_inventories: &'a [DestinationInventory],
    /// Destinations outside the configuration to copy every selected repository to.
    pub extra_destinations: &'a [Destination],
    pub filters: &'a BackfillFilters,
    /// Copy even where a native backfill would do.
    pub force_copy: bool,
    /// Restricts the configuration's destinations to these (what `--since-config-change`
    /// passes: the destinations the last change added). Extra destinations are kept.
    pub only_destinations: Option<&'a [Destination]>,
    /// Destinations that cannot take images now, with why (a Region either account has not
    /// enabled): planned as refused, and their inventories are not needed.
    pub refused: &'a [(Destination, String)],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no inventory of destination {0} was read: cannot tell what it lacks")]
    MissingDestinationInventory(Destination),
}

/// Plans the backfill of every destination `request` names.
pub fn plan_backfill(request: &PlanRequest<'_>) -> Result<BackfillPlan, PlanError> {
    let mut notes = Vec::new();
    let mut targets: Vec<(Destination, bool)> = Vec::new();
    for destination in request.configuration.all_destinations() {
        let wanted = request
            .only_destinations
            .is_none_or(|only| only.contains(&destination));
        if destination != *request.source && wanted {
            targets.push((destination, true));
        }
    }
    for destination in request.only_destinations.unwrap_or_default() {
        if !targets.iter().any(|(d, _)| d == destination)
            && !request.extra_destinations.contains(destination)
        {
            notes.push(format!(
                "{destination} is not a destination of the replication configuration: nothing \
                 planned for it (name it as an extra destination to copy to it)"
            ));
        }
    }
    for destination in request.extra_destinations {
        if destination == request.source {
            notes.push(format!(
                "{destination} is the source registry itself: not a destination"
            ));
        } else if let Some(target) = targets.iter_mut().find(|(d, _)| d == destination) {
            // Named twice; it is in the configuration, so native rules apply.
            target.1 = true;
        } else {
            let configured = request
                .configuration
                .all_destinations()
                .contains(destination);
            targets.push((destination.clone(), configured));
        }
    }
    targets.sort();
    targets.dedup();

    let mut destinations = Vec::with_capacity(targets.len());
    for (destination, configured) in targets {
        if let Some((_, why)) = request.refused.iter().find(|(d, _)| *d == destination) {
            destinations.push(DestinationPlan {
                destination,
                strategy: Strategy::Copy,
                reason: StrategyReason::Refused,
                repositories_to_create: Vec::new(),
                items: Vec::new(),
                conflicts: Vec::new(),
                archived: Vec::new(),
                refused: Some(why.clone()),
                notes: Vec::new(),
                totals: PlanTotals::default(),
            });
            continue;
        }
        let inventory = request
            .destination_inventories
            .iter()
            .find(|i| i.destination == destination)
            .ok_or_else(|| PlanError::MissingDestinationInventory(destination.clone()))?;
        destinations.push(plan_destination(
            request,
            &destination,
            configured,
            inventory,
        ));
    }
    let mut totals = PlanTotals::default();
    for plan in &destinations {
        totals.add(&plan.totals);
    }
    Ok(BackfillPlan {
        source: request.source.clone(),
        filters: request.filters.clone(),
        destinations,
        notes,
        totals,
    })
}

fn plan_destination(
    request: &PlanRequest<'_>,
    destination: &Destination,
    configured: bool,
    inventory: &DestinationInventory,
) -> DestinationPlan {
    let (strategy, reason) = choose_strategy(request, destination, configured);
    let existing: HashMap<&RepositoryName, &RepositoryInventory> = inventory
        .repositories
        .iter()
        .map(|r| (&r.name, r))
        .collect();
    let mut plan = DestinationPlan {
        destination: destination.clone(),
        strategy,
        reason,
        repositories_to_create: Vec::new(),
        items: Vec::new(),
        conflicts: Vec::new(),
        archived: Vec::new(),
        refused: None,
        notes: Vec::new(),
        totals: PlanTotals::default(),
    };
    for source_repository in request.source_inventory {
        let name = &source_repository.name;
        let concerned = request.filters.selects_repository(name)
            && (!configured
                || request
                    .configuration
                    .destinations_for(request.source, name)
                    .contains(destination));
        if !concerned {
            continue;
        }
        // The images the filters select, then everything that refers to them (or to the
        // children of an index among them), whatever the filters say: a signed image arrives
        // with its signatures, SBOMs and attestations, as replication brings them.
        let selected: Vec<&ImageRecord> = source_repository
            .images
            .iter()
            .filter(|image| request.filters.selects_image(image))
            .collect();
        let referrers = Referrers::of(&source_repository.images);
        let chosen: HashSet<&Digest> = selected.iter().map(|i| &i.digest).collect();
        let followed: Vec<&ImageRecord> = referrers
            .closure(chosen.iter().copied())
            .into_iter()
            .filter(|r| !chosen.contains(&r.digest))
            .collect();
        let mut images = Vec::with_capacity(selected.len() + followed.len());
        for image in selected.into_iter().chain(followed) {
            if !image.archived {
                images.push(image);
                continue;
            }
            // Archived in the source and already here (replicated before it was archived):
            // nothing to bring, nothing to report.
            let here = existing
                .get(name)
                .is_some_and(|r| r.image(&image.digest).is_some());
            if !here {
                let subject = subject_of(image);
                plan.archived.push(ArchivedImage {
                    repository: name.clone(),
                    digest: image.digest.clone(),
                    kind: match subject {
                        Some(_) => referrer_kind(image).to_owned(),
                        None => "image".to_owned(),
                    },
                    subject,
                });
            }
        }
        let images = images.into_iter();
        match existing.get(name) {
            Some(destination_repository) => {
                for image in images {
                    plan_image(image, name, destination_repository, &mut plan);
                }
            }
            None => {
                let before = plan.items.len();
                plan.items
                    .extend(images.map(|image| planned(image, name, CopyAction::Copy)));
                if plan.items.len() > before {
                    let creation = repository_creation(
                        destination,
                        source_repository,
                        &inventory.creation_templates,
                        &mut plan.notes,
                    );
                    plan.repositories_to_create.push(creation);
                }
            }
        }
    }
    plan.items.sort_by(|a, b| {
        (&a.repository, a.pushed_at, &a.digest).cmp(&(&b.repository, b.pushed_at, &b.digest))
    });
    plan.conflicts.sort();
    plan.archived.sort();
    plan.repositories_to_create
        .sort_by(|a, b| a.name.cmp(&b.name));
    plan.totals = totals_of(&plan, request.filters);
    plan
}

fn choose_strategy(
    request: &PlanRequest<'_>,
    destination: &Destination,
    configured: bool,
) -> (Strategy, StrategyReason) {
    let reason = if destination.region.partition() != request.source.region.partition() {
        StrategyReason::OtherPartition
    } else if !configured {
        StrategyReason::NotInConfiguration
    } else if request.force_copy {
        StrategyReason::Forced
    } else if request
        .filters
        .narrower_than_native(request.configuration, destination)
    {
        StrategyReason::FiltersNarrowerThanNative
    } else {
        return (Strategy::Native, StrategyReason::InConfiguration);
    };
    (Strategy::Copy, reason)
}

fn planned(image: &ImageRecord, repository: &RepositoryName, action: CopyAction) -> PlannedImage {
    PlannedImage {
        repository: repository.clone(),
        digest: image.digest.clone(),
        action,
        tags: image.tags.clone(),
        moves: Vec::new(),
        pushed_at: image.pushed_at,
        size_bytes: image.size_bytes,
        media_type: image.media_type.clone(),
        subject: subject_of(image),
    }
}

/// Plans one source image against an existing destination repository.
fn plan_image(
    image: &ImageRecord,
    repository: &RepositoryName,
    destination_repository: &RepositoryInventory,
    plan: &mut DestinationPlan,
) {
    let present = destination_repository.image(&image.digest);
    let missing_tags = image
        .tags
        .iter()
        .filter(|tag| present.is_none_or(|p| !p.tags.contains(tag)));
    let mut tags = Vec::new();
    let mut moves = Vec::new();
    for tag in missing_tags {
        let holder = destination_repository
            .images
            .iter()
            .find(|other| other.digest != image.digest && other.tags.contains(tag));
        match holder {
            Some(other)
                if destination_repository
                    .settings
                    .tag_mutability
                    .is_immutable(tag) =>
            {
                plan.conflicts.push(TagConflict {
                    repository: repository.clone(),
                    tag: tag.clone(),
                    source_digest: image.digest.clone(),
                    destination_digest: other.digest.clone(),
                });
            }
            Some(other) => {
                tags.push(tag.clone());
                moves.push(TagMove {
                    tag: tag.clone(),
                    from_digest: other.digest.clone(),
                });
            }
            None => tags.push(tag.clone()),
        }
    }
    let action = match present {
        Some(_) if tags.is_empty() => return,
        Some(_) => CopyAction::Retag,
        // Every tag conflicts: an untagged copy would only be an orphan for the lifecycle
        // policy to expire; the conflicts say what to fix.
        None if tags.is_empty() && !image.tags.is_empty() => return,
        None => CopyAction::Copy,
    };
    let mut item = planned(image, repository, action);
    item.tags = tags;
    item.moves = moves;
    plan.items.push(item);
}

/// The creation of a missing destination repository: what ECR replication would have applied
/// (the most specific `REPLICATION` template of the destination), else the source's settings.
fn repository_creation(
    destination: &Destination,
    source_repository: &RepositoryInventory,
    templates: &[CreationTemplate],
    notes: &mut Vec<String>,
) -> RepositoryCreation {
    let name = &source_repository.name;
    if let Some(template) = CreationTemplate::for_replicated(templates, name) {
        return RepositoryCreation {
            name: name.clone(),
            settings: template.settings.clone(),
            settings_from: SettingsSource::Template {
                prefix: template.prefix.clone(),
            },
        };
    }
    let mut settings = source_repository.settings.clone();
    if let Some(key) = &settings.encryption.kms_key
        && !kms_key_usable_in(key, destination)
    {
        notes.push(format!(
            "{name}: the source's KMS key {key} is not in {destination} and cannot encrypt \
             there; the repository is created with the AWS managed key (aws/ecr). Create it \
             beforehand with a key of {destination} to use your own."
        ));
        settings.encryption.kms_key = None;
    }
    RepositoryCreation {
        name: name.clone(),
        settings,
        settings_from: SettingsSource::Source,
    }
}

/// Whether a KMS key of the source can encrypt a repository in `destination`: only a key ARN
/// of the destination's own Region and account. A bare key id or alias names a key of the
/// source's Region and account, which is never the destination's.
fn kms_key_usable_in(key: &str, destination: &Destination) -> bool {
    let mut parts = key.split(':');
    let (Some("arn"), Some(_partition), Some("kms"), Some(region), Some(account)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    region == destination.region.as_str() && account == destination.registry_id.as_str()
}

fn totals_of(plan: &DestinationPlan, filters: &BackfillFilters) -> PlanTotals {
    // Without a tag pattern, an index's children (untagged) are planned on their own and
    // already count; ECR reports the index's size as their sum.
    let children_planned = filters.tag_patterns.is_empty();
    let copies: Vec<&PlannedImage> = plan
        .items
        .iter()
        .filter(|i| i.action == CopyAction::Copy)
        .collect();
    let bytes_estimate = copies
        .iter()
        .filter(|i| !(children_planned && i.media_type.as_deref().is_some_and(is_index_media_type)))
        .filter_map(|i| i.size_bytes)
        .sum();
    PlanTotals {
        images: plan.items.len(),
        copies: copies.len(),
        retags: plan.items.len() - copies.len(),
        bytes_estimate,
        repositories_to_create: plan.repositories_to_create.len(),
        conflicts: plan.conflicts.len(),
        referrers: plan.items.iter().filter(|i| i.subject.is_some()).count(),
        archived: plan.archived.len(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;
    use crate::backfill::inventory::{Encryption, TagMutability};
    use crate::backfill::manifest::{DOCKER_MANIFEST, OCI_INDEX};
    use crate::model::{AccountId, Region};
    use crate::rules::{PREFIX_MATCH, ReplicationRule, RepositoryFilter};

    fn dest(region: &str, account: &str) -> Destination {
        Destination::new(
            Region::parse(region).expect("region"),
            AccountId::parse(account).expect("account"),
        )
    }

    fn source() -> Destination {
        dest("us-west-2", "111111111111")
    }

    fn east() -> Destination {
        dest("us-east-1", "111111111111")
    }

    fn europe() -> Destination {
        dest("eu-west-1", "222222222222")
    }

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).expect("repository")
    }

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).expect("digest")
    }

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("time")
            + TimeDelta::minutes(minutes)
    }

    fn image(n: u8, tags: &[&str], pushed_minute: i64) -> ImageRecord {
        ImageRecord {
            digest: digest(n),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            pushed_at: Some(at(pushed_minute)),
            media_type: Some(DOCKER_MANIFEST.to_owned()),
            size_bytes: Some(1_000 * u64::from(n)),
            subject: None,
            artifact_type: None,
            archived: false,
            children: Vec::new(),
        }
    }

    fn settings(tag_mutability: TagMutability) -> RepositorySettings {
        RepositorySettings {
            tag_mutability,
            scan_on_push: true,
            encryption: Encryption {
                encryption_type: "AES256".into(),
                kms_key: None,
            },
            lifecycle_policy: Some(r#"{"rules":[]}"#.into()),
            repository_policy: None,
            resource_tags: Vec::new(),
        }
    }

    fn repository(name: &str, images: Vec<ImageRecord>) -> RepositoryInventory {
        RepositoryInventory {
            name: repo(name),
            settings: settings(TagMutability::Mutable),
            images,
        }
    }

    fn immutable(
        mut repository: RepositoryInventory,
        mutability: TagMutability,
    ) -> RepositoryInventory {
        repository.settings.tag_mutability = mutability;
        repository
    }

    fn rule(destinations: &[Destination], filters: &[&str]) -> ReplicationRule {
        ReplicationRule {
            destinations: destinations.to_vec(),
            repository_filters: filters
                .iter()
                .map(|f| RepositoryFilter {
                    filter: (*f).to_owned(),
                    filter_type: PREFIX_MATCH.to_owned(),
                })
                .collect(),
        }
    }

    /// team-a/* goes to us-east-1 and eu-west-1; everything goes to us-east-1.
    fn configuration() -> ReplicationConfiguration {
        ReplicationConfiguration {
            rules: vec![
                rule(&[east(), europe()], &["team-a/"]),
                rule(&[east()], &[]),
            ],
        }
    }

    fn empty_inventory(destination: Destination) -> DestinationInventory {
        DestinationInventory {
            destination,
            repositories: Vec::new(),
            creation_templates: Vec::new(),
        }
    }

    struct Case {
        configuration: ReplicationConfiguration,
        source_inventory: Vec<RepositoryInventory>,
        destinations: Vec<DestinationInventory>,
        extra: Vec<Destination>,
        filters: BackfillFilters,
        force_copy: bool,
        only: Option<Vec<Destination>>,
    }

    impl Case {
        fn new(source_inventory: Vec<RepositoryInventory>) -> Self {
            Self {
                configuration: configuration(),
                source_inventory,
                destinations: vec![empty_inventory(east()), empty_inventory(europe())],
                extra: Vec::new(),
                filters: BackfillFilters::default(),
                force_copy: false,
                only: None,
            }
        }

        fn destination_holds(
            mut self,
            destination: &Destination,
            repositories: Vec<RepositoryInventory>,
        ) -> Self {
            let inventory = self
                .destinations
                .iter_mut()
                .find(|i| &i.destination == destination)
                .expect("destination inventory");
            inventory.repositories = repositories;
            self
        }

        fn plan(&self) -> BackfillPlan {
            plan_backfill(&PlanRequest {
                source: &source(),
                configuration: &self.configuration,
                source_inventory: &self.source_inventory,
                destination_inventories: &self.destinations,
                extra_destinations: &self.extra,
                filters: &self.filters,
                force_copy: self.force_copy,
                only_destinations: self.only.as_deref(),
                refused: &[],
            })
            .expect("plans")
        }
    }

    fn for_destination<'p>(
        plan: &'p BackfillPlan,
        destination: &Destination,
    ) -> &'p DestinationPlan {
        plan.destinations
            .iter()
            .find(|d| &d.destination == destination)
            .expect("destination planned")
    }

    /// (repository, digest byte, action, tags) of each item, in plan order.
    fn summary(plan: &DestinationPlan) -> Vec<(String, Digest, CopyAction, Vec<String>)> {
        plan.items
            .iter()
            .map(|i| {
                (
                    i.repository.to_string(),
                    i.digest.clone(),
                    i.action,
                    i.tags.clone(),
                )
            })
            .collect()
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn each_destination_gets_the_images_its_rules_select_that_it_lacks() {
        let case = Case::new(vec![
            repository(
                "team-a/web",
                vec![image(1, &["v1"], 1), image(2, &["v2", "latest"], 2)],
            ),
            repository("team-b/api", vec![image(3, &["v1"], 3)]),
        ])
        .destination_holds(
            &east(),
            vec![repository("team-a/web", vec![image(1, &["v1"], 1)])],
        );
        let plan = case.plan();

        let east_plan = for_destination(&plan, &east());
        assert_eq!(
            summary(east_plan),
            vec![
                (
                    "team-a/web".into(),
                    digest(2),
                    CopyAction::Copy,
                    tags(&["v2", "latest"])
                ),
                (
                    "team-b/api".into(),
                    digest(3),
                    CopyAction::Copy,
                    tags(&["v1"])
                ),
            ]
        );
        // team-a/web exists in us-east-1; team-b/api does not.
        let created: Vec<&str> = east_plan
            .repositories_to_create
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(created, vec!["team-b/api"]);

        // eu-west-1 receives team-a/ only.
        let europe_plan = for_destination(&plan, &europe());
        assert_eq!(
            summary(europe_plan),
            vec![
                (
                    "team-a/web".into(),
                    digest(1),
                    CopyAction::Copy,
                    tags(&["v1"])
                ),
                (
                    "team-a/web".into(),
                    digest(2),
                    CopyAction::Copy,
                    tags(&["v2", "latest"])
                ),
            ]
        );
        assert_eq!(plan.totals.images, 4);
        assert_eq!(plan.totals.bytes_estimate, 2_000 + 3_000 + 1_000 + 2_000);
        assert_eq!(plan.totals.repositories_to_create, 2);
    }

    #[test]
    fn an_archived_image_is_reported_with_its_restore_where_it_is_missing_and_not_copied() {
        let mut archived = image(2, &[], 2);
        archived.archived = true;
        archived.subject = Some(digest(1));
        archived.artifact_type = Some("application/spdx+json".into());
        let case = Case::new(vec![repository(
            "team-a/web",
            vec![image(1, &["v1"], 1), archived.clone()],
        )])
        // east already holds both (replicated before the SBOM was archived).
        .destination_holds(
            &east(),
            vec![repository(
                "team-a/web",
                vec![image(1, &["v1"], 1), image(2, &[], 2)],
            )],
        );
        let plan = case.plan();
        let east_plan = for_destination(&plan, &east());
        assert!(east_plan.is_empty() && east_plan.archived.is_empty());
        let europe_plan = for_destination(&plan, &europe());
        assert_eq!(
            summary(europe_plan),
            vec![(
                "team-a/web".into(),
                digest(1),
                CopyAction::Copy,
                tags(&["v1"])
            )]
        );
        assert_eq!(
            europe_plan.archived,
            [ArchivedImage {
                repository: RepositoryName::parse("team-a/web").expect("name"),
                digest: digest(2),
                subject: Some(digest(1)),
                kind: "SBOM".into(),
            }]
        );
        assert_eq!(europe_plan.totals.archived, 1);
        assert!(
            europe_plan.archived[0]
                .restore_command(&source())
                .ends_with(&format!(
                    "--image-id imageDigest={} --target-storage-class STANDARD",
                    digest(2)
                ))
        );
    }

    #[test]
    fn an_image_present_without_some_tags_is_retagged_with_the_missing_ones_only() {
        let case = Case::new(vec![repository(
            "team-a/web",
            vec![image(1, &["v1", "stable"], 1)],
        )])
        .destination_holds(
            &east(),
            vec![repository("team-a/web", vec![image(1, &["v1"], 1)])],
        );
        let plan = case.plan();
        let east_plan = for_destination(&plan, &east());
        assert_eq!(
            summary(east_plan),
            vec![(
                "team-a/web".into(),
                digest(1),
                CopyAction::Retag,
                tags(&["stable"])
            )]
        );
        assert_eq!(east_plan.totals.retags, 1);
        assert_eq!(east_plan.totals.bytes_estimate, 0, "a retag moves no blob");
    }

    #[test]
    fn a_tag_on_another_image_moves_when_mutable_and_conflicts_when_immutable() {
        let source_repo = repository("team-a/web", vec![image(1, &["latest", "v1"], 1)]);
        let destination_repo = repository("team-a/web", vec![image(9, &["latest", "v1"], 0)]);

        let mutable = Case::new(vec![source_repo.clone()])
            .destination_holds(&east(), vec![destination_repo.clone()])
            .plan();
        let east_plan = for_destination(&mutable, &east());
        assert_eq!(
            summary(east_plan),
            vec![(
                "team-a/web".into(),
                digest(1),
                CopyAction::Copy,
                tags(&["latest", "v1"])
            )]
        );
        assert_eq!(east_plan.items[0].moves.len(), 2);
        assert_eq!(east_plan.items[0].moves[0].from_digest, digest(9));
        assert!(east_plan.conflicts.is_empty());

        // Immutable except `latest`: v1 conflicts, latest moves.
        let excluded = immutable(
            destination_repo.clone(),
            TagMutability::ImmutableWithExclusion {
                mutable_tags: vec!["lat*".into()],
            },
        );
        let plan = Case::new(vec![source_repo.clone()])
            .destination_holds(&east(), vec![excluded])
            .plan();
        let east_plan = for_destination(&plan, &east());
        assert_eq!(
            summary(east_plan),
            vec![(
                "team-a/web".into(),
                digest(1),
                CopyAction::Copy,
                tags(&["latest"])
            )]
        );
        assert_eq!(
            east_plan.conflicts,
            vec![TagConflict {
                repository: repo("team-a/web"),
                tag: "v1".into(),
                source_digest: digest(1),
                destination_digest: digest(9),
            }]
        );

        // Mutable except v*: same outcome through the other exclusion variant.
        let excluded = immutable(
            destination_repo.clone(),
            TagMutability::MutableWithExclusion {
                immutable_tags: vec!["v*".into()],
            },
        );
        let plan = Case::new(vec![source_repo.clone()])
            .destination_holds(&east(), vec![excluded])
            .plan();
        assert_eq!(
            for_destination(&plan, &east()).items[0].tags,
            tags(&["latest"])
        );
        assert_eq!(for_destination(&plan, &east()).conflicts.len(), 1);

        // Fully immutable: every tag conflicts and the image is not copied untagged.
        let plan = Case::new(vec![source_repo])
            .destination_holds(
                &east(),
                vec![immutable(destination_repo, TagMutability::Immutable)],
            )
            .plan();
        let east_plan = for_destination(&plan, &east());
        assert!(east_plan.items.is_empty());
        assert_eq!(east_plan.conflicts.len(), 2);
        assert!(east_plan.is_empty(), "conflicts are reported, not acted on");
    }

    #[test]
    fn untagged_images_are_copied_untagged_and_pass_only_without_tag_patterns() {
        let source_inventory = vec![repository(
            "team-a/web",
            vec![
                image(1, &[], 1),
                image(2, &["v2.0"], 2),
                image(3, &["dev"], 3),
            ],
        )];
        let plan = Case::new(source_inventory.clone()).plan();
        let east_plan = for_destination(&plan, &east());
        assert_eq!(east_plan.items.len(), 3);
        assert_eq!(east_plan.items[0].tags, Vec::<String>::new());

        let mut filtered = Case::new(source_inventory);
        filtered.filters.tag_patterns = vec![TagPattern::parse("v*").expect("pattern")];
        let plan = filtered.plan();
        let digests: Vec<Digest> = for_destination(&plan, &east())
            .items
            .iter()
            .map(|i| i.digest.clone())
            .collect();
        assert_eq!(digests, vec![digest(2)]);
    }

    #[test]
    fn date_and_prefix_filters_select_a_half_open_window_of_chosen_repositories() {
        let mut case = Case::new(vec![
            repository(
                "team-a/web",
                vec![
                    image(1, &["a"], 10),
                    image(2, &["b"], 20),
                    image(3, &["c"], 30),
                ],
            ),
            repository("team-b/api", vec![image(4, &["d"], 20)]),
        ]);
        case.filters.pushed_after = Some(at(20));
        case.filters.pushed_before = Some(at(30));
        case.filters.repository_prefixes = vec!["team-a/".into()];
        let plan = case.plan();
        assert_eq!(
            summary(for_destination(&plan, &east())),
            vec![(
                "team-a/web".into(),
                digest(2),
                CopyAction::Copy,
                tags(&["b"])
            )]
        );

        let mut undated = image(5, &["e"], 0);
        undated.pushed_at = None;
        assert!(!case.filters.selects_image(&undated));
    }

    #[test]
    fn native_only_when_ecr_would_do_exactly_this_job() {
        let images = vec![repository("team-a/web", vec![image(1, &["v1"], 1)])];
        let plan = Case::new(images.clone()).plan();
        for destination in &plan.destinations {
            assert_eq!(destination.strategy, Strategy::Native);
            assert_eq!(destination.reason, StrategyReason::InConfiguration);
        }

        let mut forced = Case::new(images.clone());
        forced.force_copy = true;
        let plan = forced.plan();
        assert_eq!(
            for_destination(&plan, &east()).reason,
            StrategyReason::Forced
        );
        assert_eq!(for_destination(&plan, &east()).strategy, Strategy::Copy);

        let mut tagged = Case::new(images.clone());
        tagged.filters.tag_patterns = vec![TagPattern::parse("v1").expect("pattern")];
        assert_eq!(
            for_destination(&tagged.plan(), &east()).reason,
            StrategyReason::FiltersNarrowerThanNative
        );

        let mut dated = Case::new(images.clone());
        dated.filters.pushed_before = Some(at(100));
        assert_eq!(
            for_destination(&dated.plan(), &europe()).reason,
            StrategyReason::FiltersNarrowerThanNative
        );

        // A prefix covering every rule filter for eu-west-1 leaves nothing out there; us-east-1
        // has a filterless rule, which the prefix narrows.
        let mut prefixed = Case::new(images);
        prefixed.filters.repository_prefixes = vec!["team-".into()];
        let plan = prefixed.plan();
        assert_eq!(for_destination(&plan, &europe()).strategy, Strategy::Native);
        assert_eq!(
            for_destination(&plan, &east()).reason,
            StrategyReason::FiltersNarrowerThanNative
        );
    }

    #[test]
    fn extra_destinations_are_copied_every_selected_repository_and_other_partitions_too() {
        let china = dest("cn-north-1", "333333333333");
        let gov = dest("us-gov-west-1", "444444444444");
        let other_account = dest("us-west-2", "555555555555");
        let mut case = Case::new(vec![
            repository("team-a/web", vec![image(1, &["v1"], 1)]),
            repository("team-b/api", vec![image(2, &["v1"], 2)]),
        ]);
        case.extra = vec![china.clone(), other_account.clone(), source()];
        case.destinations.push(empty_inventory(china.clone()));
        case.destinations
            .push(empty_inventory(other_account.clone()));
        // A configured destination in another partition (ECR would refuse to replicate there).
        case.configuration
            .rules
            .push(rule(std::slice::from_ref(&gov), &["team-b/"]));
        case.destinations.push(empty_inventory(gov.clone()));
        let plan = case.plan();

        let china_plan = for_destination(&plan, &china);
        assert_eq!(
            (china_plan.strategy, china_plan.reason),
            (Strategy::Copy, StrategyReason::OtherPartition)
        );
        assert_eq!(
            china_plan.items.len(),
            2,
            "every repository, no rule needed"
        );
        let other_plan = for_destination(&plan, &other_account);
        assert_eq!(other_plan.reason, StrategyReason::NotInConfiguration);
        assert_eq!(other_plan.items.len(), 2);
        let gov_plan = for_destination(&plan, &gov);
        assert_eq!(gov_plan.reason, StrategyReason::OtherPartition);
        assert_eq!(
            summary(gov_plan).len(),
            1,
            "the rule still selects team-b/ only"
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("source registry itself")),
            "{:?}",
            plan.notes
        );
        assert!(!plan.destinations.iter().any(|d| d.destination == source()));
    }

    #[test]
    fn since_config_change_plans_only_the_added_destinations() {
        let previous = ReplicationConfiguration {
            rules: vec![rule(&[east()], &[])],
        };
        let added = configuration().added_since(&previous);
        assert_eq!(added, vec![europe()]);
        let mut case = Case::new(vec![repository("team-a/web", vec![image(1, &["v1"], 1)])]);
        case.only = Some(added);
        // No inventory of us-east-1 is needed when it is not planned.
        case.destinations.retain(|i| i.destination == europe());
        let plan = case.plan();
        let planned: Vec<&Destination> = plan.destinations.iter().map(|d| &d.destination).collect();
        assert_eq!(planned, vec![&europe()]);
        assert_eq!(plan.destinations[0].strategy, Strategy::Native);
    }

    #[test]
    fn a_missing_destination_inventory_is_an_error_not_an_empty_registry() {
        let mut case = Case::new(vec![repository("team-a/web", vec![image(1, &["v1"], 1)])]);
        case.destinations.retain(|i| i.destination == europe());
        let err = plan_backfill(&PlanRequest {
            source: &source(),
            configuration: &case.configuration,
            source_inventory: &case.source_inventory,
            destination_inventories: &case.destinations,
            extra_destinations: &[],
            filters: &case.filters,
            force_copy: false,
            only_destinations: None,
            refused: &[],
        })
        .expect_err("us-east-1 was not read");
        assert_eq!(err, PlanError::MissingDestinationInventory(east()));
    }

    fn template(prefix: &str, applied_for: &[&str], marker: &str) -> CreationTemplate {
        let mut template_settings = settings(TagMutability::Immutable);
        template_settings.lifecycle_policy = Some(marker.to_owned());
        CreationTemplate {
            prefix: prefix.into(),
            applied_for: applied_for.iter().map(|a| (*a).to_owned()).collect(),
            settings: template_settings,
        }
    }

    #[test]
    fn new_repositories_take_the_most_specific_replication_template_else_the_source_settings() {
        let mut case = Case::new(vec![
            repository("team-a/web", vec![image(1, &["v1"], 1)]),
            repository("team-a/jobs/nightly", vec![image(2, &["v1"], 2)]),
            repository("team-b/api", vec![image(3, &["v1"], 3)]),
        ]);
        case.destinations[0].creation_templates = vec![
            template("ROOT", &["REPLICATION"], "root"),
            template("team-a", &["REPLICATION"], "team-a"),
            template("team-a/jobs", &["REPLICATION"], "jobs"),
            template("team-b", &["PULL_THROUGH_CACHE"], "cache"),
        ];
        case.destinations[1].creation_templates =
            vec![template("team-b", &["PULL_THROUGH_CACHE"], "cache")];
        let plan = case.plan();

        let east_created: Vec<(&str, &SettingsSource, Option<&str>)> =
            for_destination(&plan, &east())
                .repositories_to_create
                .iter()
                .map(|c| {
                    (
                        c.name.as_str(),
                        &c.settings_from,
                        c.settings.lifecycle_policy.as_deref(),
                    )
                })
                .collect();
        let from = |prefix: &str| SettingsSource::Template {
            prefix: prefix.to_owned(),
        };
        assert_eq!(
            east_created,
            vec![
                ("team-a/jobs/nightly", &from("team-a/jobs"), Some("jobs")),
                ("team-a/web", &from("team-a"), Some("team-a")),
                // The pull-through-cache template does not apply; ROOT does.
                ("team-b/api", &from("ROOT"), Some("root")),
            ]
        );

        let europe_plan = for_destination(&plan, &europe());
        for creation in &europe_plan.repositories_to_create {
            assert_eq!(creation.settings_from, SettingsSource::Source);
            assert_eq!(creation.settings, settings(TagMutability::Mutable));
        }
    }

    #[test]
    fn a_source_kms_key_of_another_region_falls_back_to_the_aws_managed_key_with_a_note() {
        let mut encrypted = repository("team-a/web", vec![image(1, &["v1"], 1)]);
        encrypted.settings.encryption = Encryption {
            encryption_type: "KMS".into(),
            kms_key: Some(
                "arn:aws:kms:us-west-2:111111111111:key/1234abcd-12ab-34cd-56ef-1234567890ab"
                    .into(),
            ),
        };
        let plan = Case::new(vec![encrypted]).plan();
        let east_plan = for_destination(&plan, &east());
        let created = &east_plan.repositories_to_create[0];
        assert_eq!(created.settings.encryption.encryption_type, "KMS");
        assert_eq!(created.settings.encryption.kms_key, None);
        assert!(
            east_plan
                .notes
                .iter()
                .any(|n| n.contains("team-a/web") && n.contains("aws/ecr")),
            "{:?}",
            east_plan.notes
        );

        // A key of the destination's own Region and account is kept.
        let mine = "arn:aws:kms:us-east-1:111111111111:key/abcd";
        assert!(kms_key_usable_in(mine, &east()));
        assert!(!kms_key_usable_in(mine, &europe()));
        assert!(!kms_key_usable_in("alias/ecr", &east()));
        assert!(!kms_key_usable_in(
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            &east()
        ));
    }

    #[test]
    fn the_plan_is_ordered_whatever_the_order_of_the_inventories() {
        let images = vec![
            image(3, &["c"], 5),
            image(1, &["a"], 9),
            image(2, &["b"], 5),
        ];
        let mut reversed = images.clone();
        reversed.reverse();
        let forward = Case::new(vec![
            repository("team-b/api", images.clone()),
            repository("team-a/web", images),
        ])
        .plan();
        let mut backward_case = Case::new(vec![
            repository("team-a/web", reversed.clone()),
            repository("team-b/api", reversed),
        ]);
        backward_case.destinations.reverse();
        let backward = backward_case.plan();
        assert_eq!(forward, backward);

        let order: Vec<(String, Digest)> = for_destination(&forward, &east())
            .items
            .iter()
            .map(|i| (i.repository.to_string(), i.digest.clone()))
            .collect();
        assert_eq!(
            order,
            vec![
                ("team-a/web".into(), digest(2)),
                ("team-a/web".into(), digest(3)),
                ("team-a/web".into(), digest(1)),
                ("team-b/api".into(), digest(2)),
                ("team-b/api".into(), digest(3)),
                ("team-b/api".into(), digest(1)),
            ]
        );
        let destinations: Vec<&Destination> = forward
            .destinations
            .iter()
            .map(|d| &d.destination)
            .collect();
        assert_eq!(destinations, vec![&europe(), &east()]);
    }

    #[test]
    fn a_second_plan_after_a_complete_backfill_is_empty() {
        let source_inventory = vec![
            repository(
                "team-a/web",
                vec![image(1, &["v1", "latest"], 1), image(2, &[], 2)],
            ),
            repository("team-b/api", vec![image(3, &["v1"], 3)]),
        ];
        let first = Case::new(source_inventory.clone()).plan();
        assert!(!first.is_empty());

        // What the destinations hold once every planned item is done.
        let mut after = Case::new(source_inventory.clone());
        for destination_plan in &first.destinations {
            let mut repositories: Vec<RepositoryInventory> = Vec::new();
            for item in &destination_plan.items {
                let source_image = source_inventory
                    .iter()
                    .flat_map(|r| r.images.iter())
                    .find(|i| i.digest == item.digest)
                    .expect("source image");
                match repositories.iter_mut().find(|r| r.name == item.repository) {
                    Some(r) => r.images.push(source_image.clone()),
                    None => repositories.push(repository(
                        item.repository.as_str(),
                        vec![source_image.clone()],
                    )),
                }
            }
            after = after.destination_holds(&destination_plan.destination, repositories);
        }
        let second = after.plan();
        assert!(second.is_empty(), "{second:#?}");
        assert_eq!(second.totals, PlanTotals::default());
    }

    #[test]
    fn an_index_counts_in_the_estimate_only_when_its_children_are_not_planned_alone() {
        let mut index = image(5, &["v1"], 1);
        index.media_type = Some(OCI_INDEX.to_owned());
        index.size_bytes = Some(3_000);
        let children = vec![image(1, &[], 1), image(2, &[], 1)];
        let mut all = children.clone();
        all.push(index);
        let plan = Case::new(vec![repository("team-a/web", all.clone())]).plan();
        assert_eq!(for_destination(&plan, &east()).totals.bytes_estimate, 3_000);

        let mut tagged = Case::new(vec![repository("team-a/web", all)]);
        tagged.filters.tag_patterns = vec![TagPattern::parse("v*").expect("pattern")];
        let plan = tagged.plan();
        assert_eq!(for_destination(&plan, &east()).totals.images, 1);
        assert_eq!(for_destination(&plan, &east()).totals.bytes_estimate, 3_000);
    }

    #[test]
    fn tag_patterns_are_ecr_wildcards() {
        let pattern = |p: &str| TagPattern::parse(p).expect("pattern");
        assert!(pattern("v1.*").matches("v1.2.3"));
        assert!(pattern("v1.*").matches("v1."));
        assert!(!pattern("v1.*").matches("v10"));
        assert!(pattern("*-rc*").matches("2.0-rc1"));
        assert!(!pattern("*-rc*").matches("2.0"));
        assert!(pattern("release").matches("release"));
        assert!(!pattern("release").matches("release-1"));
        assert!(pattern("*").matches("anything"));
        assert!(pattern("a*b*c").matches("abc"));
        assert!(pattern("a*b*c").matches("aXbYbZc"));
        assert!(!pattern("a*b*c").matches("aXbYcZ"));

        assert_eq!(TagPattern::parse(""), Err(TagPatternError::Empty));
        assert_eq!(
            TagPattern::parse(&"a".repeat(129)),
            Err(TagPatternError::TooLong { length: 129 })
        );
        assert!(TagPattern::parse(&"a".repeat(128)).is_ok());
        let err = TagPattern::parse("v1.?").expect_err("? is no wildcard in ECR");
        assert!(
            err.to_string().contains("`*` is the only wildcard"),
            "{err}"
        );
    }

    #[test]
    fn the_json_plan_has_stable_field_names() {
        let mut case = Case::new(vec![repository("team-a/web", vec![image(1, &["v1"], 1)])]);
        case.filters.tag_patterns = vec![TagPattern::parse("v*").expect("pattern")];
        let plan = case.plan();
        let json = serde_json::to_value(&plan).expect("serializes");
        let first = &json["destinations"][0];
        assert_eq!(first["destination"]["region"], "eu-west-1");
        assert_eq!(first["strategy"], "copy");
        assert_eq!(first["reason"], "filters-narrower-than-native");
        assert_eq!(
            first["repositoriesToCreate"][0]["settingsFrom"]["from"],
            "source"
        );
        assert_eq!(first["items"][0]["action"], "copy");
        assert_eq!(first["items"][0]["tags"][0], "v1");
        assert_eq!(json["filters"]["tagPatterns"][0], "v*");
        assert_eq!(json["totals"]["bytesEstimate"], 2_000);
        let back: BackfillPlan = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, plan);
    }
}
