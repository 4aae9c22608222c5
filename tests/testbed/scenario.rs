//! The demonstration scenario: two source repositories replicated to three destinations, one
//! of them in another account, where one destination is slowed past the SLA, one fails every
//! replication, and one holds an immutable tag that the source pushes on another digest.
//!
//! | destination | what happens | expected verdict |
//! |---|---|---|
//! | `us-east-1` (same account) | paused until released, past the SLA | OVERDUE, then REPLICATED late |
//! | `ap-southeast-2` (same account) | every replication fails | FAILED (with its failure code) |
//! | `eu-west-1` (partner account) | healthy; `team-a/web:v1` is taken there | REPLICATED; that one TAG_LOST |

use std::collections::BTreeMap;

use aws_sdk_ecr::types::ImageTagMutability;
use replwatch_core::{AccountId, Destination, ExpectationState, Region, ReplicationConfiguration};

use crate::{Error, LocalAws, PushedImage};

pub const SOURCE_REGION: &str = "us-west-2";
pub const REPOSITORIES: [&str; 2] = ["team-a/web", "team-b/api"];
/// The tag the partner's immutable repository already holds on another digest.
pub const CONFLICTING_TAG: &str = "v1";
pub const FAILURE_CODE: &str = "ACCESS_DENIED";

/// One tracked item, by name: (repository, digest, tag, destination).
pub type ItemName = (String, String, Option<String>, Destination);

/// The verdict of every item.
pub type Verdicts = BTreeMap<ItemName, ExpectationState>;

/// One pushed image of the scenario.
#[derive(Debug, Clone)]
pub struct ScenarioPush {
    pub image: PushedImage,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub central: String,
    pub partner: String,
}

fn destination(region: &str, account: &str) -> Result<Destination, Error> {
    Ok(Destination::new(
        Region::parse(region)?,
        AccountId::parse(account)?,
    ))
}

impl Scenario {
    pub fn new(central: impl Into<String>, partner: impl Into<String>) -> Self {
        Self {
            central: central.into(),
            partner: partner.into(),
        }
    }

    pub fn slow(&self) -> Result<Destination, Error> {
        destination("us-east-1", &self.central)
    }

    pub fn failing(&self) -> Result<Destination, Error> {
        destination("ap-southeast-2", &self.central)
    }

    pub fn cross_account(&self) -> Result<Destination, Error> {
        destination("eu-west-1", &self.partner)
    }

    pub fn destinations(&self) -> Result<Vec<Destination>, Error> {
        Ok(vec![self.slow()?, self.failing()?, self.cross_account()?])
    }

    /// `team-a/` goes everywhere; `team-b/` skips the slow destination.
    pub fn rules(&self) -> Result<ReplicationConfiguration, Error> {
        let (slow, failing, cross) = (self.slow()?, self.failing()?, self.cross_account()?);
        Ok(serde_json::from_value(serde_json::json!({"rules": [
            {"destinations": [slow, failing, cross],
             "repositoryFilters": [{"filter": "team-a/", "filterType": "PREFIX_MATCH"}]},
            {"destinations": [cross, failing],
             "repositoryFilters": [{"filter": "team-b/", "filterType": "PREFIX_MATCH"}]}
        ]}))?)
    }

    /// Sets up the registries and the test bed's behaviour; call before any push.
    pub async fn prepare(&self, aws: &LocalAws) -> Result<(), Error> {
        let source = aws.ecr(&self.central, SOURCE_REGION).await;
        for repository in REPOSITORIES {
            source
                .create_repository()
                .repository_name(repository)
                .send()
                .await?;
        }
        // The partner keeps its own, immutable team-a/web with the tag already taken.
        let partner = aws.ecr(&self.partner, "eu-west-1").await;
        partner
            .create_repository()
            .repository_name(REPOSITORIES[0])
            .image_tag_mutability(ImageTagMutability::Immutable)
            .send()
            .await?;
        aws.push_image(
            &self.partner,
            "eu-west-1",
            REPOSITORIES[0],
            Some(CONFLICTING_TAG),
            "partner's own v1",
        )
        .await?;
        aws.configure_replication(&serde_json::json!({"destinations": {
            self.slow()?.to_string(): {"paused": true},
            self.failing()?.to_string(): {"fail": true, "failure_code": FAILURE_CODE},
            self.cross_account()?.to_string(): {}
        }}))?;
        aws.put_replication_configuration(&self.central, SOURCE_REGION, &self.rules()?)
            .await?;
        Ok(())
    }

    /// Pushes `count` images, alternating repositories; every fifth is untagged, and the
    /// first push to team-a/web carries the conflicting tag.
    pub async fn push(
        &self,
        aws: &LocalAws,
        count: usize,
        seed: &str,
    ) -> Result<Vec<ScenarioPush>, Error> {
        let mut pushes = Vec::with_capacity(count);
        for i in 0..count {
            let repository = REPOSITORIES[i % 2];
            let tag = if i % 5 == 4 {
                None
            } else {
                Some(format!("v{}", i / 2 + 1))
            };
            let image = aws
                .push_image(
                    &self.central,
                    SOURCE_REGION,
                    repository,
                    tag.as_deref(),
                    &format!("{seed}-{i}"),
                )
                .await?;
            pushes.push(ScenarioPush { image });
        }
        Ok(pushes)
    }

    /// Lets the slow destination catch up.
    pub fn release_slow(&self, aws: &LocalAws) -> Result<(), Error> {
        aws.configure_replication(
            &serde_json::json!({"destinations": {self.slow()?.to_string(): {"paused": false}}}),
        )
    }

    /// The final verdict of every (repository, digest, tag, destination) once the slow
    /// destination was released.
    pub fn expected(&self, pushes: &[ScenarioPush]) -> Result<Verdicts, Error> {
        let rules = self.rules()?;
        let source = destination(SOURCE_REGION, &self.central)?;
        let mut expected = BTreeMap::new();
        for push in pushes {
            let image = &push.image;
            let repository = replwatch_core::RepositoryName::parse(&image.repository)?;
            for d in rules.destinations_for(&source, &repository) {
                let verdict = if d == self.failing()? {
                    ExpectationState::Failed
                } else if d == self.cross_account()?
                    && image.repository == REPOSITORIES[0]
                    && image.tag.as_deref() == Some(CONFLICTING_TAG)
                {
                    ExpectationState::TagLost
                } else {
                    ExpectationState::Replicated
                };
                expected.insert(
                    (
                        image.repository.clone(),
                        image.digest.clone(),
                        image.tag.clone(),
                        d,
                    ),
                    verdict,
                );
            }
        }
        Ok(expected)
    }
}
