//! Whether an account may use a Region: its opt-in status, and what that means for replication.
//!
//! "Regions launched before March 20, 2019 are enabled by default ... Regions launched after
//! March 20, 2019 are disabled by default and referred to as opt-in Regions"
//! (<https://docs.aws.amazon.com/accounts/latest/reference/manage-acct-regions.html>), and the
//! status is per account, read with AWS Account Management's `GetRegionOptStatus`
//! (<https://docs.aws.amazon.com/accounts/latest/reference/API_GetRegionOptStatus.html>). ECR
//! replicates to such a Region only when both accounts opted in beforehand: "For cross-Region
//! replication to occur, both the source and destination accounts must be opted-in to the
//! Region prior to any replication actions occurring within or to that Region"
//! (<https://docs.aws.amazon.com/AmazonECR/latest/userguide/replication.html>, considerations).

use std::fmt;

use serde::Serialize;

use crate::model::{AccountId, Region};

/// The IAM action that reads an account's opt-in status (`GetRegionOptStatus`), to be granted
/// in the account asked about.
pub const READ_PERMISSION: &str = "account:GetRegionOptStatus";

/// `RegionOptStatus` of one Region for one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum OptInStatus {
    /// An opt-in Region the account enabled.
    Enabled,
    /// Being enabled: "You cannot use the Region until this process is complete" (minutes,
    /// sometimes hours; `EnableRegion` in the API reference).
    Enabling,
    /// Being disabled.
    Disabling,
    /// An opt-in Region the account has not enabled.
    Disabled,
    /// A Region every account has ("Default Regions cannot be enabled or disabled").
    EnabledByDefault,
    /// A status this version does not know, as the service spelled it.
    Unknown(String),
}

impl OptInStatus {
    /// The status as the API spells it (`ENABLED_BY_DEFAULT`, ...).
    pub fn parse(value: &str) -> Self {
        match value {
            "ENABLED" => Self::Enabled,
            "ENABLING" => Self::Enabling,
            "DISABLING" => Self::Disabling,
            "DISABLED" => Self::Disabled,
            "ENABLED_BY_DEFAULT" => Self::EnabledByDefault,
            other => Self::Unknown(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Enabled => "ENABLED",
            Self::Enabling => "ENABLING",
            Self::Disabling => "DISABLING",
            Self::Disabled => "DISABLED",
            Self::EnabledByDefault => "ENABLED_BY_DEFAULT",
            Self::Unknown(other) => other,
        }
    }

    /// Whether the account can take part in replication to or from the Region now: the Region
    /// is enabled (by the account, or by default). `ENABLING` is not yet.
    pub fn allows_replication(&self) -> bool {
        matches!(self, Self::Enabled | Self::EnabledByDefault)
    }
}

impl fmt::Display for OptInStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<OptInStatus> for String {
    fn from(value: OptInStatus) -> Self {
        value.as_str().to_owned()
    }
}

/// Why a backfill to `region` is refused while `account` has it in `status`, with the fix.
pub fn refusal(region: &Region, account: &AccountId, status: &OptInStatus) -> String {
    format!(
        "Region {region} is {status} in account {account}: ECR replicates to a Region only once \
         both accounts opted in to it, and nothing can be copied there before; enable it (`aws \
         account enable-region --region-name {region}`, with `--account-id {account}` from the \
         organization's management account) and run the backfill again once it is ENABLED"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_enabled_region_allows_replication() {
        for (text, allows) in [
            ("ENABLED", true),
            ("ENABLED_BY_DEFAULT", true),
            ("ENABLING", false),
            ("DISABLING", false),
            ("DISABLED", false),
            ("SOMETHING_NEW", false),
        ] {
            let status = OptInStatus::parse(text);
            assert_eq!(status.as_str(), text);
            assert_eq!(status.allows_replication(), allows, "{text}");
        }
        assert_eq!(
            OptInStatus::parse("SOMETHING_NEW"),
            OptInStatus::Unknown("SOMETHING_NEW".into())
        );
    }
}
