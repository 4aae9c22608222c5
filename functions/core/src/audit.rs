//! Drift between a source registry and the destinations its replication rules select, from
//! inventories (what `replwatch audit` prints): what replication would have brought and did
//! not (a referrer, such as a signature, counted on its own), what it brought without its tag,
//! tags that name another image, images the source deleted (replication never deletes), and
//! repository settings replication never copies.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::alerts::{cause_sentence, tag_fix};
use crate::backfill::inventory::{
    CreationTemplate, DestinationInventory, ImageRecord, RepositoryInventory, RepositorySettings,
};
use crate::backfill::referrers::{referrer_kind, subject_of};
use crate::incident::DivergenceCause;
use crate::model::{Destination, Digest, RepositoryName};
use crate::rules::ReplicationConfiguration;

/// What kind of drift a finding is; the order is the order of the summary columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// The image is not in the destination repository (or the repository is missing).
    Missing,
    /// A referrer of an image (signature, SBOM, attestation, legacy cosign tag) is not in the
    /// destination: the image may be there, but a verifier there finds it unsigned.
    ReferrerMissing,
    /// The image is there without a tag it has in the source.
    TagLost,
    /// A tag of the source image names another image in the destination.
    TagMismatch,
    /// In the destination, no longer in the source.
    NotInSource,
    /// A repository setting differs (tag immutability, scan on push, encryption, lifecycle
    /// or repository policy present or not).
    SettingsDiffer,
}

impl FindingKind {
    pub const ALL: [FindingKind; 6] = [
        FindingKind::Missing,
        FindingKind::ReferrerMissing,
        FindingKind::TagLost,
        FindingKind::TagMismatch,
        FindingKind::NotInSource,
        FindingKind::SettingsDiffer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Missing => "missing",
            FindingKind::ReferrerMissing => "referrer missing",
            FindingKind::TagLost => "tag lost",
            FindingKind::TagMismatch => "tag mismatch",
            FindingKind::NotInSource => "not in source",
            FindingKind::SettingsDiffer => "settings differ",
        }
    }
}

/// One drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub kind: FindingKind,
    pub repository: RepositoryName,
    pub digest: Option<Digest>,
    pub tag: Option<String>,
    pub detail: String,
}

/// One destination's audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationAudit {
    pub destination: Destination,
    pub repositories: usize,
    /// Source images the rules send here.
    pub images: usize,
    pub counts: BTreeMap<FindingKind, usize>,
    pub findings: Vec<Finding>,
}

impl DestinationAudit {
    pub fn count(&self, kind: FindingKind) -> usize {
        self.counts.get(&kind).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    pub source: Destination,
    pub destinations: Vec<DestinationAudit>,
}

impl AuditReport {
    pub fn in_sync(&self) -> bool {
        self.destinations.iter().all(|d| d.findings.is_empty())
    }
}

/// Audits every destination of `destination_inventories` against `source_inventory`, for the
/// repositories the rules of `configuration` send to it.
pub fn audit(
    source: &Destination,
    configuration: &ReplicationConfiguration,
    source_inventory: &[RepositoryInventory],
    destination_inventories: &[DestinationInventory],
) -> AuditReport {
    let destinations = destination_inventories
        .iter()
        .map(|inventory| audit_destination(source, configuration, source_inventory, inventory))
        .collect();
    AuditReport {
        source: source.clone(),
        destinations,
    }
}

fn audit_destination(
    source: &Destination,
    configuration: &ReplicationConfiguration,
    source_inventory: &[RepositoryInventory],
    inventory: &DestinationInventory,
) -> DestinationAudit {
    let destination = &inventory.destination;
    let held: HashMap<&RepositoryName, &RepositoryInventory> = inventory
        .repositories
        .iter()
        .map(|r| (&r.name, r))
        .collect();
    let mut findings = Vec::new();
    let mut repositories = 0;
    let mut images = 0;
    for repository in source_inventory.iter().filter(|r| {
        configuration
            .destinations_for(source, &r.name)
            .contains(destination)
    }) {
        repositories += 1;
        images += repository.images.len();
        let Some(replica) = held.get(&repository.name) else {
            for image in &repository.images {
                findings.push(missing(
                    &repository.name,
                    image,
                    "the repository does not exist here",
                ));
            }
            continue;
        };
        // What replication would have given the repository it created: the destination's
        // creation template's settings where one applies, else (as a backfill creates it) the
        // source's.
        let (expected, origin) =
            match CreationTemplate::for_replicated(&inventory.creation_templates, &repository.name)
            {
                Some(template) => (
                    &template.settings,
                    format!("in creation template {}", template.prefix),
                ),
                None => (&repository.settings, "in the source".to_owned()),
            };
        for difference in settings_differences(expected, &replica.settings, &origin) {
            findings.push(Finding {
                kind: FindingKind::SettingsDiffer,
                repository: repository.name.clone(),
                digest: None,
                tag: None,
                detail: difference,
            });
        }
        let tags_here: HashMap<&str, &Digest> = replica
            .images
            .iter()
            .flat_map(|i| i.tags.iter().map(move |t| (t.as_str(), &i.digest)))
            .collect();
        for image in &repository.images {
            let present = replica.image(&image.digest).is_some();
            if !present {
                let here = match image.tags.len() {
                    0 => "not here".to_owned(),
                    _ => format!("not here (tags {})", image.tags.join(", ")),
                };
                findings.push(missing(&repository.name, image, &here));
            }
            for tag in &image.tags {
                match tags_here.get(tag.as_str()) {
                    Some(digest) if **digest == image.digest => {}
                    Some(other) => {
                        let cause =
                            mismatch_cause(repository, &replica.settings, image, tag, other);
                        findings.push(Finding {
                            kind: FindingKind::TagMismatch,
                            repository: repository.name.clone(),
                            digest: Some(image.digest.clone()),
                            tag: Some(tag.clone()),
                            detail: format!(
                                "names {other} here: {} ({}). {}",
                                cause_sentence(cause),
                                cause.alert().as_str(),
                                tag_fix(cause, destination, &repository.name, tag, &image.digest)
                            ),
                        });
                    }
                    None if present => findings.push(Finding {
                        kind: FindingKind::TagLost,
                        repository: repository.name.clone(),
                        digest: Some(image.digest.clone()),
                        tag: Some(tag.clone()),
                        detail: "the image is here without this tag".into(),
                    }),
                    None => {}
                }
            }
        }
        for image in &replica.images {
            if repository.image(&image.digest).is_none() {
                findings.push(Finding {
                    kind: FindingKind::NotInSource,
                    repository: repository.name.clone(),
                    digest: Some(image.digest.clone()),
                    tag: image.tags.first().cloned(),
                    detail: "not in the source (deleted there, or pushed here directly): replication never deletes".into(),
                });
            }
        }
    }
    let mut counts: BTreeMap<FindingKind, usize> =
        FindingKind::ALL.iter().map(|k| (*k, 0)).collect();
    for finding in &findings {
        *counts.entry(finding.kind).or_default() += 1;
    }
    DestinationAudit {
        destination: destination.clone(),
        repositories,
        images,
        counts,
        findings,
    }
}

/// Why `tag` names `other` in a destination whose repository has `settings`, while the source
/// puts it on `image`: the cause a tag incident would name.
fn mismatch_cause(
    source: &RepositoryInventory,
    settings: &RepositorySettings,
    image: &ImageRecord,
    tag: &str,
    other: &Digest,
) -> DivergenceCause {
    if settings.tag_mutability.is_immutable(tag) {
        return DivergenceCause::ImmutableHeld;
    }
    let older = source.image(other).is_some_and(
        |held| matches!((held.pushed_at, image.pushed_at), (Some(held), Some(ours)) if held < ours),
    );
    if older {
        DivergenceCause::OlderReplicationLast
    } else {
        DivergenceCause::ChangedInDestination
    }
}

/// An image of the source not in the destination: a referrer says what it is and of what;
/// an archived one, that it must be restored to come.
fn missing(repository: &RepositoryName, image: &ImageRecord, why: &str) -> Finding {
    let (kind, what) = match subject_of(image) {
        Some(subject) => (
            FindingKind::ReferrerMissing,
            format!("{} of {subject}: ", referrer_kind(image)),
        ),
        None if image.tags.is_empty() => (FindingKind::Missing, "untagged image: ".to_owned()),
        None => (FindingKind::Missing, String::new()),
    };
    let archived = if image.archived {
        "; archived in the source, restore it to let it through"
    } else {
        ""
    };
    Finding {
        kind,
        repository: repository.clone(),
        digest: Some(image.digest.clone()),
        tag: image.tags.first().cloned(),
        detail: format!("{what}{why}{archived}"),
    }
}

/// The settings replication does not copy, compared; policies by presence (their texts may
/// name account-specific principals).
fn settings_differences(
    source: &RepositorySettings,
    here: &RepositorySettings,
    origin: &str,
) -> Vec<String> {
    let mut differences = Vec::new();
    if source.tag_mutability != here.tag_mutability {
        differences.push(format!(
            "tag mutability: {:?} {origin}, {:?} here",
            source.tag_mutability, here.tag_mutability
        ));
    }
    if source.scan_on_push != here.scan_on_push {
        differences.push(format!(
            "scan on push: {} {origin}, {} here",
            source.scan_on_push, here.scan_on_push
        ));
    }
    if source.encryption.encryption_type != here.encryption.encryption_type {
        differences.push(format!(
            "encryption: {} {origin}, {} here",
            source.encryption.encryption_type, here.encryption.encryption_type
        ));
    }
    let presence = |p: &Option<String>| if p.is_some() { "set" } else { "none" };
    if source.lifecycle_policy.is_some() != here.lifecycle_policy.is_some() {
        differences.push(format!(
            "lifecycle policy: {} {origin}, {} here",
            presence(&source.lifecycle_policy),
            presence(&here.lifecycle_policy)
        ));
    }
    if source.repository_policy.is_some() != here.repository_policy.is_some() {
        differences.push(format!(
            "repository policy: {} {origin}, {} here",
            presence(&source.repository_policy),
            presence(&here.repository_policy)
        ));
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backfill::inventory::{Encryption, TagMutability};
    use crate::model::{AccountId, Region};
    use crate::rules::{PREFIX_MATCH, ReplicationRule, RepositoryFilter};

    fn dest(region: &str, account: &str) -> Destination {
        Destination::new(
            Region::parse(region).expect("region"),
            AccountId::parse(account).expect("account"),
        )
    }

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).expect("digest")
    }

    fn image(n: u8, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            digest: digest(n),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            pushed_at: None,
            media_type: None,
            size_bytes: None,
            subject: None,
            artifact_type: None,
            archived: false,
            children: Vec::new(),
        }
    }

    fn settings() -> RepositorySettings {
        RepositorySettings {
            tag_mutability: TagMutability::Mutable,
            scan_on_push: false,
            encryption: Encryption {
                encryption_type: "AES256".into(),
                kms_key: None,
            },
            lifecycle_policy: None,
            repository_policy: None,
            resource_tags: Vec::new(),
        }
    }

    fn repository(
        name: &str,
        settings: RepositorySettings,
        images: Vec<ImageRecord>,
    ) -> RepositoryInventory {
        RepositoryInventory {
            name: RepositoryName::parse(name).expect("name"),
            settings,
            images,
        }
    }

    fn configuration(destination: &Destination) -> ReplicationConfiguration {
        ReplicationConfiguration {
            rules: vec![ReplicationRule {
                destinations: vec![destination.clone()],
                repository_filters: vec![RepositoryFilter {
                    filter: "team-a/".into(),
                    filter_type: PREFIX_MATCH.into(),
                }],
            }],
        }
    }

    #[test]
    fn every_kind_of_drift_is_found_and_counted() {
        let source = dest("us-west-2", "111111111111");
        let target = dest("eu-west-1", "222222222222");
        // A Notation signature of image 1 and a legacy cosign SBOM of image 2, neither here.
        let mut signature = image(11, &[]);
        signature.subject = Some(digest(1));
        signature.artifact_type = Some("application/vnd.cncf.notary.signature".into());
        let legacy_tag = format!("sha256-{}.sbom", "02".repeat(32));
        let legacy_sbom = image(12, &[&legacy_tag]);
        let mut immutable = settings();
        immutable.tag_mutability = TagMutability::Immutable;
        immutable.lifecycle_policy = Some("{}".into());
        let source_inventory = vec![
            repository(
                "team-a/api",
                immutable,
                vec![
                    image(1, &["v1"]),
                    image(2, &["v2", "latest"]),
                    image(3, &["v3"]),
                    signature,
                    legacy_sbom,
                ],
            ),
            repository("team-a/web", settings(), vec![image(7, &["v1"])]),
            // Not selected by the rules: never reported.
            repository("team-b/other", settings(), vec![image(9, &["v1"])]),
        ];
        let destination_inventory = DestinationInventory {
            destination: target.clone(),
            repositories: vec![repository(
                "team-a/api",
                settings(),
                vec![
                    image(1, &["v1"]),
                    image(2, &["v2"]),  // lost `latest`
                    image(4, &["v3"]),  // v3 names another image; 3 missing
                    image(5, &["old"]), // deleted in the source
                ],
            )],
            creation_templates: Vec::new(),
        };
        let report = audit(
            &source,
            &configuration(&target),
            &source_inventory,
            &[destination_inventory],
        );
        assert!(!report.in_sync());
        let d = &report.destinations[0];
        assert_eq!((d.repositories, d.images), (2, 6));
        let counts: Vec<usize> = FindingKind::ALL.iter().map(|k| d.count(*k)).collect();
        // missing: image 3 and team-a/web's image 7; referrers missing: the signature and the
        // SBOM; tag lost: latest; mismatch: v3; not in source: 4 (which v3 names) and 5;
        // settings: mutability and lifecycle policy.
        assert_eq!(counts, [2, 2, 1, 1, 2, 2]);
        let referrers: Vec<&str> = d
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::ReferrerMissing)
            .map(|f| f.detail.as_str())
            .collect();
        assert_eq!(referrers.len(), 2);
        assert!(referrers[0].starts_with(&format!("signature of {}", digest(1))));
        assert!(referrers[1].starts_with(&format!("SBOM of {}", digest(2))));
        let lost = d
            .findings
            .iter()
            .find(|f| f.kind == FindingKind::TagLost)
            .expect("tag lost");
        assert_eq!(lost.tag.as_deref(), Some("latest"));
        assert!(
            d.findings
                .iter()
                .all(|f| f.repository.as_str() != "team-b/other")
        );
    }

    #[test]
    fn a_tag_naming_another_image_says_why_as_its_incident_would_and_how_to_fix_it() {
        let source = dest("us-west-2", "111111111111");
        let target = dest("eu-west-1", "222222222222");
        let at = |minutes: i64| {
            chrono::DateTime::from_timestamp(1_790_000_000 + minutes * 60, 0).expect("time")
        };
        let mut older = image(1, &[]);
        older.pushed_at = Some(at(0));
        let mut newer = image(2, &["latest"]);
        newer.pushed_at = Some(at(10));
        let source_inventory = [repository("team-a/api", settings(), vec![older, newer])];
        let detail = |tag_mutability: TagMutability, held_by: u8| {
            let mut here = settings();
            here.tag_mutability = tag_mutability;
            let report = audit(
                &source,
                &configuration(&target),
                &source_inventory,
                &[DestinationInventory {
                    destination: target.clone(),
                    repositories: vec![repository(
                        "team-a/api",
                        here,
                        vec![image(held_by, &["latest"]), image(2, &[])],
                    )],
                    creation_templates: Vec::new(),
                }],
            );
            let d = &report.destinations[0];
            assert_eq!(d.count(FindingKind::TagMismatch), 1, "{d:?}");
            d.findings
                .iter()
                .find(|f| f.kind == FindingKind::TagMismatch)
                .map(|f| f.detail.clone())
                .expect("mismatch")
        };
        let older_last = detail(TagMutability::Mutable, 1);
        assert!(
            older_last.contains("an older push of the tag finished replicating"),
            "{older_last}"
        );
        assert!(older_last.contains("(TAG_DIVERGED)"), "{older_last}");
        assert!(
            older_last.contains("aws ecr put-image --region eu-west-1 --registry-id 222222222222 --repository-name team-a/api --image-tag latest"),
            "{older_last}"
        );
        let by_hand = detail(TagMutability::Mutable, 9);
        assert!(
            by_hand.contains("the tag was changed in the destination"),
            "{by_hand}"
        );
        let held = detail(TagMutability::Immutable, 9);
        assert!(held.contains("immutable"), "{held}");
        assert!(held.contains("(TAG_LOST)"), "{held}");
    }

    #[test]
    fn a_destination_holding_everything_is_in_sync() {
        let source = dest("us-west-2", "111111111111");
        let target = dest("us-east-1", "111111111111");
        let images = vec![image(1, &["v1"]), image(2, &[])];
        let report = audit(
            &source,
            &configuration(&target),
            &[repository("team-a/api", settings(), images.clone())],
            &[DestinationInventory {
                destination: target.clone(),
                repositories: vec![repository("team-a/api", settings(), images)],
                creation_templates: Vec::new(),
            }],
        );
        assert!(report.in_sync(), "{report:?}");
        assert_eq!(report.destinations[0].images, 2);
    }

    #[test]
    fn settings_are_held_to_the_creation_template_replication_would_apply() {
        let source = dest("us-west-2", "111111111111");
        let target = dest("us-east-1", "111111111111");
        let mut kms = settings();
        kms.encryption = Encryption {
            encryption_type: "KMS".into(),
            kms_key: Some("arn:aws:kms:us-east-1:111111111111:key/k".into()),
        };
        let images = vec![image(1, &["v1"])];
        let run = |templates: Vec<CreationTemplate>| {
            audit(
                &source,
                &configuration(&target),
                &[repository("team-a/api", settings(), images.clone())],
                &[DestinationInventory {
                    destination: target.clone(),
                    repositories: vec![repository("team-a/api", kms.clone(), images.clone())],
                    creation_templates: templates,
                }],
            )
        };
        let template = |prefix: &str| CreationTemplate {
            prefix: prefix.into(),
            applied_for: vec!["REPLICATION".into()],
            settings: kms.clone(),
        };
        assert!(run(vec![template("team-a")]).in_sync());
        // Not the template of this namespace: held to the source's settings.
        let report = run(vec![template("team-b")]);
        let d = &report.destinations[0];
        assert_eq!(d.count(FindingKind::SettingsDiffer), 1);
        assert_eq!(
            d.findings[0].detail,
            "encryption: AES256 in the source, KMS here"
        );
    }
}
