//! The command line, as clap reads it. Every flag has its help here; the README shows the
//! `--help` of each command.

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::OutputFormat;

#[derive(Debug, Parser)]
#[command(
    name = "replwatch",
    version,
    about = "Watch and repair Amazon ECR private image replication",
    long_about = "Watch and repair Amazon ECR private image replication.\n\n\
        Uses the default AWS credential chain (environment, profile, SSO, instance role). \
        Exit codes: 0 done or in sync, 1 findings (drift, failed images, conflicts), 2 error."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalOptions {
    /// Named profile from the AWS config files.
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// The source Region (where images are pushed); default from the profile or environment.
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Send every AWS call to this endpoint (the local AWS test bed, for example).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// How results are printed on standard output.
    #[arg(long, short, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Role to assume in other accounts, by name (`arn:<partition>:iam::<account>:role/<name>`).
    #[arg(long, global = true, value_name = "NAME")]
    pub role_name: Option<String>,
    /// External id the role in other accounts requires.
    #[arg(long, global = true, value_name = "ID", requires = "role_name")]
    pub external_id: Option<String>,
    /// No progress bar, even on a terminal.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// More logs on standard error (-v info, -vv debug); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring destinations up to date with images pushed before replication reached them.
    ///
    /// Compares the source registry with every destination its replication rules select
    /// (plus any --destination) and plans the images that are missing or lost a tag. Shows the
    /// plan by default (--dry-run); --apply executes it: ECR's native replication backfill
    /// where it applies, a digest-preserving copy through the ECR API elsewhere. Interrupting
    /// (Ctrl-C) lets running copies finish; a rerun continues where it stopped.
    Backfill(BackfillArgs),
    /// Where one image is in its replication: every destination, its state, latency or age.
    ///
    /// Reads DescribeImageReplicationStatus in the source and DescribeImages in each
    /// destination (through --role-name in other accounts). NOT_REPLICATING is a destination
    /// the rules select that ECR is not replicating the image to (pushed before the rule: run
    /// `replwatch backfill`). Exit 0 when every destination is COMPLETE, 1 when one FAILED, is
    /// not replicating, or --wait gave up, 2 on error.
    Status(StatusArgs),
    /// Drift between the source and every destination its replication rules select.
    ///
    /// Missing images, images that arrived without a tag (tag lost), tags naming another image
    /// (tag mismatch), images still in a destination but deleted in the source (replication
    /// never deletes), and repository settings that differ (tag immutability, scan on push,
    /// encryption, lifecycle and repository policy present or not). Summary per destination
    /// first, then every finding. Exit 0 in sync, 1 drift found, 2 error.
    Audit(AuditArgs),
    /// Preflight of the replication setup: what will make images fail, arrive unseen, or
    /// arrive with other settings, each finding with a severity and the fix.
    ///
    /// Checks the source's rules (or a proposed --configuration) against ECR's limits and
    /// partitions; that a CloudTrail trail covering the source Region is logging write
    /// management events (without one, rule changes are noticed late and the rules-change
    /// backfill does not run); for every destination the
    /// rules name: a cross-account registry's permissions policy (ecr:ReplicateImage and
    /// ecr:CreateRepository for the source account), the destination's own rules that expect
    /// chained replication (ECR never replicates a replicated image again), repository creation
    /// templates for REPLICATION (or replicated repositories get ECR's defaults); with
    /// --central-bus, the rule forwarding ECR Replication Action events in each destination
    /// account and Region; with --reader-role, that the stack's reader role can be assumed in
    /// each destination account. Other accounts are read through --role-name. Exit 0 when
    /// nothing needs fixing, 1 on any error or warning, 2 when the source cannot be read.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check this replication configuration (a JSON file: `{"rules": [...]}`, as
    /// PutReplicationConfiguration takes it) instead of the registry's current one: a preflight
    /// before applying it.
    #[arg(long, value_name = "FILE")]
    pub configuration: Option<std::path::PathBuf>,
    /// The deployed stack's central event bus (output CentralBusArn): check that every
    /// destination account and Region forwards replication events to it.
    #[arg(long, value_name = "ARN", env = "REPLWATCH_CENTRAL_BUS")]
    pub central_bus: Option<String>,
    /// The deployed stack's reader role name (parameter ReaderRoleName): check that it can be
    /// assumed in every destination account.
    #[arg(long, value_name = "NAME")]
    pub reader_role: Option<String>,
    /// The external id the reader role requires (parameter ReaderExternalId).
    #[arg(long, value_name = "ID", requires = "reader_role")]
    pub reader_external_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only repositories whose name starts with this prefix (repeatable).
    #[arg(long = "repository-prefix", value_name = "PREFIX")]
    pub repository_prefixes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The image: REPOSITORY[:TAG] (default tag latest) or REPOSITORY@sha256:DIGEST.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Wait until every destination is COMPLETE or one FAILED.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (90s, 30m, 2h).
    #[arg(long, default_value = "30m", value_parser = crate::status::parse_duration, requires = "wait")]
    pub timeout: std::time::Duration,
    /// Time between two checks while waiting.
    #[arg(long, default_value = "10s", value_parser = crate::status::parse_duration)]
    pub interval: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyChoice {
    /// Native backfill for destinations in the replication configuration, copy elsewhere.
    Auto,
    /// Copy through the ECR API for every destination.
    Copy,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Only repositories whose name starts with this prefix (repeatable).
    #[arg(long = "repository-prefix", value_name = "PREFIX")]
    pub repository_prefixes: Vec<String>,
    /// Only images with a tag matching this pattern; `*` matches any run of characters
    /// (repeatable). Untagged images are left out when a pattern is given, but the signatures,
    /// SBOMs and attestations of the images selected always come with them.
    #[arg(long = "tag", value_name = "PATTERN")]
    pub tag_patterns: Vec<String>,
    /// Only images pushed at or after this date (YYYY-MM-DD or RFC 3339).
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub pushed_after: Option<DateTime<Utc>>,
    /// Only images pushed before this date (YYYY-MM-DD or RFC 3339).
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    pub pushed_before: Option<DateTime<Utc>>,
    /// Also copy to this destination, REGION or REGION/ACCOUNT, even if no rule names it
    /// (repeatable; always the copy strategy).
    #[arg(long = "destination", value_name = "REGION[/ACCOUNT]")]
    pub destinations: Vec<String>,
    /// Plan only for the destinations the replication rules gained since the last plan
    /// recorded in --table (what the deployed backfill-plan function does on a rules change).
    #[arg(long, requires = "table")]
    pub since_config_change: bool,
    /// The deployed stack's tracking table (output TrackingTableName): where the last plan's
    /// view of the rules is kept; --apply records the current rules there.
    #[arg(long, value_name = "NAME", env = "REPLWATCH_TABLE")]
    pub table: Option<String>,
    /// How to bring images over.
    #[arg(long, value_enum, default_value_t = StrategyChoice::Auto)]
    pub strategy: StrategyChoice,
    /// Show the plan and change nothing (the default).
    #[arg(long, conflicts_with = "apply")]
    pub dry_run: bool,
    /// Execute the plan.
    #[arg(long)]
    pub apply: bool,
    /// Images copied at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Seconds between two looks at a running native backfill (`ListReplicationBackfills`).
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub native_poll_seconds: u64,
}

fn parse_date(value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{value:?} is neither YYYY-MM-DD nor an RFC 3339 time"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn dates_take_a_day_or_a_full_time() {
        assert_eq!(
            parse_date("2026-11-01").map(|d| d.to_rfc3339()),
            Ok("2026-11-01T00:00:00+00:00".to_owned())
        );
        assert!(parse_date("2026-11-01T10:00:00+02:00").is_ok());
        assert!(parse_date("yesterday").is_err());
    }

    #[test]
    fn since_config_change_needs_the_table() {
        let parsed = Cli::try_parse_from(["replwatch", "backfill", "--since-config-change"]);
        assert!(parsed.is_err());
        let parsed = Cli::try_parse_from([
            "replwatch",
            "backfill",
            "--since-config-change",
            "--table",
            "replwatch-tracking",
        ]);
        assert!(parsed.is_ok());
    }

    #[test]
    fn dry_run_and_apply_exclude_each_other() {
        let parsed = Cli::try_parse_from(["replwatch", "backfill", "--dry-run", "--apply"]);
        assert!(parsed.is_err());
    }
}
