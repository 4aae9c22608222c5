//! Domain identities: what an image is, where it must go, and how one tracking item is named.
//!
//! Every value here is validated on construction so the rest of the core can trust it: a
//! [`Digest`] is always `sha256:` followed by 64 lowercase hex characters, an account id is
//! always twelve digits. Those checks are the first line of defence against malformed events,
//! which must be rejected with a clear error rather than written to the tracking table.
//!
//! The text inside is shared (`Arc<str>`): records are cloned on every read and write of the
//! store, and their names need not be copied each time.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a value taken from outside (an event, a configuration, a table row) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("digest {0:?} is not `sha256:` followed by 64 lowercase hex characters")]
    Digest(String),
    #[error("account id {0:?} is not 12 digits")]
    AccountId(String),
    #[error("region {0:?} is not an AWS Region name")]
    Region(String),
    #[error("repository name {0:?} is not a valid ECR repository name")]
    RepositoryName(String),
}

/// A content digest of an image manifest or blob, as ECR reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(Arc<str>);

impl Digest {
    /// `sha256:3b1f1c2e4d5a`: enough of a digest to recognise it by eye (alerts, tables); JSON
    /// and logs carry the whole digest.
    pub fn short(&self) -> &str {
        self.0.get(..19).unwrap_or(&self.0)
    }

    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let hex = value
            .strip_prefix("sha256:")
            .ok_or_else(|| InvalidValue::Digest(value.to_owned()))?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(Self(Arc::from(value)))
        } else {
            Err(InvalidValue::Digest(value.to_owned()))
        }
    }

    /// The digest of a SHA-256 hash: what a manifest's bytes hash to.
    pub fn from_sha256(hash: &[u8; 32]) -> Self {
        Self(Arc::from(format!("sha256:{}", hex::encode(hash))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Digest {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Digest> for String {
    fn from(value: Digest) -> Self {
        value.0.as_ref().to_owned()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A twelve-digit AWS account id; in ECR it is also the registry id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(Arc<str>);

impl AccountId {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(Arc::from(value)))
        } else {
            Err(InvalidValue::AccountId(value.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountId {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<AccountId> for String {
    fn from(value: AccountId) -> Self {
        value.0.as_ref().to_owned()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An AWS Region name such as `us-west-2` or `us-gov-east-1`.
///
/// Only the shape is checked (lowercase words and a trailing number), so new Regions work
/// without a release of this tool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(Arc<str>);

impl Region {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let mut parts = value.split('-');
        let last = parts.next_back().unwrap_or_default();
        let mut leading = 0;
        let words = parts.all(|p| {
            leading += 1;
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase())
        });
        let shaped =
            leading >= 2 && words && !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
        if shaped {
            Ok(Self(Arc::from(value)))
        } else {
            Err(InvalidValue::Region(value.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The AWS partition the Region belongs to, told by its name: replication and credentials
    /// do not cross partitions, so a destination in another one can only be copied to.
    pub fn partition(&self) -> &'static str {
        const PARTITIONS: [(&str, &str); 7] = [
            ("cn-", "aws-cn"),
            ("us-gov-", "aws-us-gov"),
            ("us-iso-", "aws-iso"),
            ("us-isob-", "aws-iso-b"),
            ("eu-isoe-", "aws-iso-e"),
            ("us-isof-", "aws-iso-f"),
            ("eusc-", "aws-eusc"),
        ];
        PARTITIONS
            .iter()
            .find(|(prefix, _)| self.0.starts_with(prefix))
            .map_or("aws", |(_, partition)| partition)
    }
}

impl TryFrom<String> for Region {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Region> for String {
    fn from(value: Region) -> Self {
        value.0.as_ref().to_owned()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ECR repository name (`team-a/web`): 2–256 characters of lowercase letters, digits and
/// the separators `.`, `_`, `-`, `/`, as the ECR API allows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepositoryName(Arc<str>);

impl RepositoryName {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let charset = value
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/'));
        let edges = value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && value
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if (2..=256).contains(&value.len()) && charset && edges {
            Ok(Self(Arc::from(value)))
        } else {
            Err(InvalidValue::RepositoryName(value.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RepositoryName {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<RepositoryName> for String {
    fn from(value: RepositoryName) -> Self {
        value.0.as_ref().to_owned()
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registry in one Region: where images are pushed from, or where they must arrive.
///
/// ECR replication destinations are exactly this pair (`region`, `registryId`), so the field
/// names follow the ECR API.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    pub region: Region,
    pub registry_id: AccountId,
}

impl Destination {
    pub fn new(region: Region, registry_id: AccountId) -> Self {
        Self {
            region,
            registry_id,
        }
    }

    /// `REGION/ACCOUNT` as [`Destination`]'s `Display` writes it, or `REGION` alone for one in
    /// `home`: how operators name a destination (the CLI's `--destination`, the stack's
    /// `BackfillAllowedDestinations`).
    pub fn parse_in(value: &str, home: &AccountId) -> Result<Self, InvalidValue> {
        let (region, account) = match value.split_once('/') {
            Some((region, account)) => (region, AccountId::parse(account)?),
            None => (value, home.clone()),
        };
        Ok(Self::new(Region::parse(region)?, account))
    }

    /// Whether this destination is in another account than `account` (reads then go through
    /// the destination account's read-only role).
    pub fn is_cross_account(&self, account: &AccountId) -> bool {
        &self.registry_id != account
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.region, self.registry_id)
    }
}

/// One pushed image in its source registry, named by content.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceImage {
    pub registry: Destination,
    pub repository: RepositoryName,
    pub digest: Digest,
}

impl fmt::Display for SourceImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.dkr.ecr.{}/{}@{}",
            self.registry.registry_id, self.registry.region, self.repository, self.digest
        )
    }
}

/// The name of one tracking item: this image, pushed with this tag (or untagged) at this
/// time, must arrive in this destination.
///
/// The tag is part of the name because ECR replicates per push: pushing a second tag onto an
/// existing digest replicates again and emits its own events, and each tag can be lost on its
/// own (immutable tag conflicts). The push time is part of it because the same digest and tag
/// can be pushed again (a rollback, a re-push after a delete, a restore): ECR replicates each
/// push on its own, so each is tracked on its own, with its own deadline and verdicts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExpectationKey {
    pub image: SourceImage,
    pub tag: Option<String>,
    pub destination: Destination,
    /// The push this item follows, named by its time (the `time` of its `ECR Image Action`).
    /// Alerts stored before pushes had occurrences read back with the epoch here.
    #[serde(default)]
    pub occurrence: DateTime<Utc>,
}

/// Hashes what tells keys apart (the digest, the destination, the tag, the push) and skips
/// what rarely does (source registry, repository): equal keys still hash equally, and a
/// lookup hashes half the bytes.
impl std::hash::Hash for ExpectationKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.image.digest.hash(state);
        self.destination.hash(state);
        self.tag.hash(state);
        self.occurrence.hash(state);
    }
}

impl fmt::Display for ExpectationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pushed = self.occurrence.to_rfc3339();
        match &self.tag {
            Some(tag) => write!(
                f,
                "{} (tag {tag}, pushed {pushed}) -> {}",
                self.image, self.destination
            ),
            None => write!(
                f,
                "{} (untagged, pushed {pushed}) -> {}",
                self.image, self.destination
            ),
        }
    }
}

/// One tag of one repository in one destination: what must name the same image there as in
/// the source, once the source's newest push of the tag is past its deadline.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TagKey {
    /// The source registry.
    pub registry: Destination,
    pub repository: RepositoryName,
    pub tag: String,
    pub destination: Destination,
}

impl fmt::Display for TagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} from {} in {}",
            self.repository, self.tag, self.registry, self.destination
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_accepts_only_sha256_with_64_lowercase_hex() {
        let good = format!("sha256:{}", "a1".repeat(32));
        assert!(Digest::parse(&good).is_ok());
        assert!(Digest::parse(&good.to_uppercase()).is_err());
        assert!(Digest::parse("md5:../../etc/passwd").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "a".repeat(63))).is_err());
        assert!(Digest::parse(&format!("sha256:{}", "g".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(64))).is_err());
    }

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(AccountId::parse("111111111111").is_ok());
        assert!(AccountId::parse("11111111111").is_err());
        assert!(AccountId::parse("11111111111a").is_err());
    }

    #[test]
    fn regions_have_the_aws_shape() {
        for ok in [
            "us-west-2",
            "ap-southeast-2",
            "us-gov-east-1",
            "eu-central-1",
        ] {
            assert!(Region::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "us", "us-west", "US-WEST-2", "us-west-x", "us--2"] {
            assert!(Region::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regions_know_their_partition() {
        for (region, partition) in [
            ("us-east-1", "aws"),
            ("eu-west-1", "aws"),
            ("cn-north-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
            ("eusc-de-east-1", "aws-eusc"),
        ] {
            let parsed = Region::parse(region).expect("region");
            assert_eq!(parsed.partition(), partition, "{region}");
        }
    }

    #[test]
    fn a_digest_from_a_hash_is_a_valid_digest() {
        let digest = Digest::from_sha256(&[0xab; 32]);
        assert_eq!(
            digest,
            Digest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest")
        );
    }

    #[test]
    fn repository_names_follow_ecr_rules() {
        assert!(RepositoryName::parse("team-a/web").is_ok());
        assert!(RepositoryName::parse("a").is_err());
        assert!(RepositoryName::parse("Team/web").is_err());
        assert!(RepositoryName::parse("/web").is_err());
        assert!(RepositoryName::parse("web/").is_err());
    }
}
