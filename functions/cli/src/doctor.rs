//! `replwatch doctor`: reads what the core's `doctor` checks need from the source registry, the
//! source account's CloudTrail trails, every destination its rules name, and each destination
//! Region's opt-in status in the source and the destination account, all at once, and
//! prints the findings worst first. A read that fails becomes a warning naming the AWS call, the
//! registry and the error; it never stops the other checks. Exit 0 when nothing needs fixing, 1
//! otherwise, 2 when the source itself cannot be read.

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_ecr::config::SharedCredentialsProvider;
use aws_sdk_ecr::error::ProvideErrorMetadata;
use futures_util::future::join_all;
use replwatch_aws::ecr_clients::EcrClients;
use replwatch_aws::ecr_inventory::CreationTemplatesError;
use replwatch_aws::ecr_rules::replication_configuration;
use replwatch_aws::region_opt_in::RegionOptIn;
use replwatch_aws::service_error::describe;
use replwatch_core::backfill::inventory::CreationTemplate;
use replwatch_core::doctor::{
    AdvancedEventSelector, BasicEventSelector, CloudTrailReadError, DestinationFacts, DoctorReport,
    EventSelectors, Fact, FieldSelector, Forwarded, ForwardingRule, RegionOptInFacts, Severity,
    Trail, Trails, diagnose,
};
use replwatch_core::model::{AccountId, Destination};
use replwatch_core::region_opt_in::OptInStatus;
use replwatch_core::registry::RegistryError;
use replwatch_core::rules::ReplicationConfiguration;

use crate::Outcome;
use crate::args::{DoctorArgs, GlobalOptions};
use crate::aws::{AwsSetupError, cross_account_access, home_registry, sdk_config};
use crate::output::{OutputFormat, Table, paint};

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error(transparent)]
    Setup(#[from] AwsSetupError),
    #[error("{0}")]
    Aws(#[from] RegistryError),
    #[error("--configuration {0}")]
    Configuration(String),
}

pub async fn run(global: &GlobalOptions, args: &DoctorArgs) -> Result<Outcome, DoctorError> {
    let base = sdk_config(global).await?;
    let source = home_registry(&base).await?;
    let source_ecr = aws_sdk_ecr::Client::new(&base);
    let configuration = match &args.configuration {
        Some(path) => std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|json| ReplicationConfiguration::from_json(&json).map_err(|e| e.to_string()))
            .map_err(|e| DoctorError::Configuration(format!("{}: {e}", path.display())))?,
        None => replication_configuration(&source_ecr, &source).await?,
    };
    // Each account's opt-in status is read with its own credentials: the caller's here, the
    // `--role-name` role in another account.
    let opt_in = RegionOptIn::new(
        base.clone(),
        source.registry_id.clone(),
        cross_account_access(global),
    );
    let reader = Reader {
        base: &base,
        source: &source,
        global,
        args,
        opt_in: &opt_in,
    };
    let destinations: Vec<Destination> = configuration
        .all_destinations()
        .into_iter()
        .filter(|d| *d != source)
        .collect();
    let (trails, facts) = tokio::join!(
        trails(&base, &source),
        join_all(destinations.iter().map(|d| reader.facts(d)))
    );
    let report = diagnose(&source, &trails, &configuration, &facts);
    print_report(&report, global.output);
    Ok(if report.healthy() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

struct Reader<'a> {
    base: &'a SdkConfig,
    source: &'a Destination,
    global: &'a GlobalOptions,
    args: &'a DoctorArgs,
    opt_in: &'a RegionOptIn,
}

impl Reader<'_> {
    async fn facts(&self, destination: &Destination) -> DestinationFacts {
        let cross_account = destination.registry_id != self.source.registry_id;
        let (reader_role, region_opt_in) = tokio::join!(
            self.reader_role(destination, cross_account),
            self.region_opt_in(destination, cross_account),
        );
        let config = match self.config_for(destination, cross_account).await {
            Ok(config) => config,
            Err(not_checked) => {
                return DestinationFacts {
                    destination: destination.clone(),
                    registry_policy: Fact::NotChecked(not_checked.clone()),
                    replication_configuration: Fact::NotChecked(not_checked.clone()),
                    creation_templates: Fact::NotChecked(not_checked.clone()),
                    forwarding_rules: Fact::NotChecked(not_checked),
                    reader_role,
                    region_opt_in,
                };
            }
        };
        let ecr = aws_sdk_ecr::Client::new(&config);
        let (registry_policy, rules, templates, forwarding) = tokio::join!(
            async {
                if cross_account {
                    registry_policy(&ecr, destination).await
                } else {
                    Fact::Read(None)
                }
            },
            async {
                match replication_configuration(&ecr, destination).await {
                    Ok(rules) => Fact::Read(rules),
                    Err(e) => Fact::Unreadable(format!("ecr:{e}")),
                }
            },
            creation_templates(&ecr, destination),
            self.forwarding_rules(&config, destination),
        );
        DestinationFacts {
            destination: destination.clone(),
            registry_policy,
            replication_configuration: rules,
            creation_templates: templates,
            forwarding_rules: forwarding,
            reader_role,
            region_opt_in,
        }
    }

    /// The destination Region's opt-in status in the source account and, for a cross-account
    /// destination, in the destination account (through `--role-name`; without it, not checked).
    async fn region_opt_in(
        &self,
        destination: &Destination,
        cross_account: bool,
    ) -> RegionOptInFacts {
        let source_account = self.opt_in_status(&self.source.registry_id, destination);
        let destination_account = async {
            if !cross_account {
                Fact::NotChecked("the source account, read once".into())
            } else if self.global.role_name.is_none() {
                Fact::NotChecked(format!(
                    "{} is another account: pass --role-name, a role there that may call \
                     account:GetRegionOptStatus",
                    destination.registry_id
                ))
            } else {
                self.opt_in_status(&destination.registry_id, destination)
                    .await
            }
        };
        let (source_account, destination_account) =
            tokio::join!(source_account, destination_account);
        RegionOptInFacts {
            source_account,
            destination_account,
        }
    }

    async fn opt_in_status(
        &self,
        account: &AccountId,
        destination: &Destination,
    ) -> Fact<OptInStatus> {
        match self.opt_in.status(account, &destination.region).await {
            Ok(status) => Fact::Read(status),
            Err(e) => Fact::Unreadable(opt_in_error(&e)),
        }
    }

    /// The SDK configuration that reads `destination`: the caller's own credentials in its
    /// account, the `--role-name` role in any other.
    async fn config_for(
        &self,
        destination: &Destination,
        cross_account: bool,
    ) -> Result<SdkConfig, String> {
        let mut builder = self
            .base
            .to_builder()
            .region(aws_config::Region::new(destination.region.to_string()));
        if cross_account {
            let Some(role_name) = &self.global.role_name else {
                return Err(format!(
                    "{} is another account: pass --role-name, a role there that may read ECR \
                     registry settings and EventBridge rules",
                    destination.registry_id
                ));
            };
            let arn =
                EcrClients::role_arn(role_name, &destination.registry_id, &destination.region);
            let mut provider = AssumeRoleProvider::builder(arn)
                .configure(self.base)
                .session_name("replwatch-doctor");
            if let Some(external_id) = &self.global.external_id {
                provider = provider.external_id(external_id);
            }
            builder = builder
                .credentials_provider(SharedCredentialsProvider::new(provider.build().await));
        }
        Ok(builder.build())
    }

    async fn reader_role(&self, destination: &Destination, cross_account: bool) -> Fact<()> {
        if !cross_account {
            return Fact::Read(());
        }
        let Some(role_name) = &self.args.reader_role else {
            return Fact::NotChecked(
                "pass --reader-role (the stack's ReaderRoleName) and --reader-external-id to \
                 check the role the stack reads other accounts with"
                    .into(),
            );
        };
        let arn = EcrClients::role_arn(role_name, &destination.registry_id, &destination.region);
        let sts = aws_sdk_sts::Client::new(self.base);
        let mut request = sts
            .assume_role()
            .role_arn(&arn)
            .role_session_name("replwatch-doctor");
        if let Some(external_id) = &self.args.reader_external_id {
            request = request.external_id(external_id);
        }
        match request.send().await {
            Ok(_) => Fact::Read(()),
            Err(e) => Fact::Unreadable(format!("sts:AssumeRole {arn}: {}", describe(&e))),
        }
    }

    async fn forwarding_rules(
        &self,
        config: &SdkConfig,
        destination: &Destination,
    ) -> Fact<Vec<ForwardingRule>> {
        let Some(bus) = &self.args.central_bus else {
            return Fact::NotChecked(
                "pass --central-bus (the stack's CentralBusArn output) to check that every \
                 destination Region forwards replication events"
                    .into(),
            );
        };
        let events = aws_sdk_eventbridge::Client::new(config);
        let unreadable = |call: &str, e: String| {
            Fact::Unreadable(format!("events:{call} in {destination}: {e}"))
        };
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = events
                .list_rule_names_by_target()
                .target_arn(bus)
                .set_next_token(token)
                .send()
                .await;
            match page {
                Ok(page) => {
                    names.extend(page.rule_names().iter().cloned());
                    token = page.next_token().map(str::to_owned);
                    if token.is_none() {
                        break;
                    }
                }
                Err(e) => return unreadable("ListRuleNamesByTarget", describe(&e)),
            }
        }
        let mut rules = Vec::new();
        for name in names {
            match events.describe_rule().name(&name).send().await {
                Ok(rule) => {
                    let pattern = rule.event_pattern().unwrap_or_default();
                    rules.push(ForwardingRule {
                        enabled: rule.state().is_some_and(|s| s.as_str() == "ENABLED"),
                        forwards: Forwarded::of_pattern(pattern, self.source),
                        forwards_other_sources: Forwarded::admits_other_sources(
                            pattern,
                            self.source,
                        ),
                        name,
                    });
                }
                Err(e) => return unreadable(&format!("DescribeRule {name}"), describe(&e)),
            }
        }
        Fact::Read(rules)
    }
}

/// A failed opt-in read as the report shows it: the IAM action, what it was about, the error.
fn opt_in_error(error: &RegistryError) -> String {
    let action = if error.operation == "GetRegionOptStatus" {
        replwatch_aws::region_opt_in::READ_PERMISSION.to_owned()
    } else {
        format!("sts:{}", error.operation)
    };
    format!("{action} {}: {}", error.resource, error.message)
}

async fn registry_policy(
    ecr: &aws_sdk_ecr::Client,
    destination: &Destination,
) -> Fact<Option<String>> {
    match ecr.get_registry_policy().send().await {
        Ok(policy) => Fact::Read(policy.policy_text().map(str::to_owned)),
        Err(e) if e.code() == Some("RegistryPolicyNotFoundException") => Fact::Read(None),
        Err(e) => Fact::Unreadable(format!(
            "ecr:GetRegistryPolicy {destination}: {}",
            describe(&e)
        )),
    }
}

async fn creation_templates(
    ecr: &aws_sdk_ecr::Client,
    destination: &Destination,
) -> Fact<Vec<CreationTemplate>> {
    match replwatch_aws::ecr_inventory::creation_templates(ecr, destination, 100).await {
        Ok(templates) => Fact::Read(templates),
        Err(CreationTemplatesError::Unreadable(e) | CreationTemplatesError::Failed(e)) => {
            Fact::Unreadable(format!(
                "ecr:DescribeRepositoryCreationTemplates {destination}: {}",
                e.message
            ))
        }
    }
}

/// The trails CloudTrail lists in the source account and Region, with each one's status and
/// event selectors, for the core's `cloudtrail` check. `DescribeTrails` in a Region lists the
/// trails created there and the shadow copies of multi-Region and organization trails created
/// elsewhere; each trail's status and selectors are asked of its home Region, by ARN, since
/// `GetTrailStatus` "returns trail status from a single Region" and a shadow trail's must be
/// asked for by ARN (CloudTrail API reference).
async fn trails(base: &SdkConfig, source: &Destination) -> Trails {
    let listed = aws_sdk_cloudtrail::Client::new(base)
        .describe_trails()
        .include_shadow_trails(true)
        .send()
        .await
        .map_err(|e| {
            read_error(
                "cloudtrail:DescribeTrails",
                &format!("in {}", source.region),
                &e,
            )
        })?;
    let region = source.region.to_string();
    Ok(join_all(
        listed
            .trail_list()
            .iter()
            .map(|summary| trail(base, summary, &region)),
    )
    .await)
}

async fn trail(
    base: &SdkConfig,
    summary: &aws_sdk_cloudtrail::types::Trail,
    region: &str,
) -> Trail {
    let arn = summary.trail_arn().or(summary.name()).unwrap_or_default();
    let name = summary.name().unwrap_or(arn).to_owned();
    // A trail listed without its home Region can only be one of this Region's own.
    let home_region = summary.home_region().unwrap_or(region).to_owned();
    let home = base
        .to_builder()
        .region(aws_config::Region::new(home_region.clone()))
        .build();
    let cloudtrail = aws_sdk_cloudtrail::Client::new(&home);
    let about = format!("trail {name} in {home_region}");
    let (status, selectors) = tokio::join!(
        cloudtrail.get_trail_status().name(arn).send(),
        cloudtrail.get_event_selectors().trail_name(arn).send(),
    );
    let logging = match status {
        Ok(status) => status.is_logging().ok_or_else(|| CloudTrailReadError {
            action: "cloudtrail:GetTrailStatus".into(),
            access_denied: false,
            error: format!("cloudtrail:GetTrailStatus {about}: the answer has no IsLogging"),
        }),
        Err(e) => Err(read_error("cloudtrail:GetTrailStatus", &about, &e)),
    };
    let selectors = selectors
        .map(|found| EventSelectors {
            custom: summary.has_custom_event_selectors().unwrap_or(false),
            basic: found
                .event_selectors()
                .iter()
                .map(|s| BasicEventSelector {
                    read_write_type: s.read_write_type().map(|t| t.as_str().to_owned()),
                    include_management_events: s.include_management_events(),
                    exclude_management_event_sources: s.exclude_management_event_sources().to_vec(),
                })
                .collect(),
            advanced: found
                .advanced_event_selectors()
                .iter()
                .map(|s| AdvancedEventSelector {
                    name: s.name().map(str::to_owned),
                    field_selectors: s
                        .field_selectors()
                        .iter()
                        .map(|f| FieldSelector {
                            field: f.field().to_owned(),
                            equals: f.equals().to_vec(),
                            starts_with: f.starts_with().to_vec(),
                            ends_with: f.ends_with().to_vec(),
                            not_equals: f.not_equals().to_vec(),
                            not_starts_with: f.not_starts_with().to_vec(),
                            not_ends_with: f.not_ends_with().to_vec(),
                        })
                        .collect(),
                })
                .collect(),
        })
        .map_err(|e| read_error("cloudtrail:GetEventSelectors", &about, &e));
    Trail {
        name,
        home_region,
        multi_region: summary.is_multi_region_trail().unwrap_or(false),
        logging,
        selectors,
    }
}

/// A failed CloudTrail call as the core reports it: a refusal (IAM's `AccessDeniedException`)
/// names the permission to grant; anything else is worth another try.
fn read_error<E: std::error::Error + ProvideErrorMetadata>(
    action: &str,
    about: &str,
    error: &E,
) -> CloudTrailReadError {
    CloudTrailReadError {
        action: action.to_owned(),
        access_denied: error.code().is_some_and(|c| c.starts_with("AccessDenied")),
        error: format!("{action} {about}: {}", describe(error)),
    }
}

/// Whether an EventBridge pattern lets `ECR Replication Action` events from `aws.ecr` through:
/// each of `source` and `detail-type`, when present, must list the value (exact-match patterns,
/// which is what the forwarding stack writes).
fn print_report(report: &DoctorReport, format: OutputFormat) {
    match format {
        OutputFormat::Json => match serde_json::to_string_pretty(report) {
            Ok(json) => outln!("{json}"),
            Err(e) => eprintln!("replwatch: cannot write JSON: {e}"),
        },
        OutputFormat::Markdown => {
            let mut table = Table::new(&["severity", "check", "subject", "finding", "fix"]);
            for f in &report.findings {
                table.push(vec![
                    f.severity.as_str().to_owned(),
                    f.check.as_str().to_owned(),
                    f.subject.clone(),
                    f.problem.clone(),
                    f.fix.clone(),
                ]);
            }
            outln!("{}\n", summary(report));
            out!("{}", table.to_markdown());
        }
        OutputFormat::Table => {
            outln!("{}\n", summary(report));
            let width = report
                .findings
                .iter()
                .map(|f| f.check.as_str().len())
                .max()
                .unwrap_or(0);
            for f in &report.findings {
                let label = format!("{:<7}", f.severity.as_str().to_uppercase());
                let label = match f.severity {
                    Severity::Error => paint(&label, "31"),
                    Severity::Warning => paint(&label, "33"),
                    Severity::Ok => paint(&label, "32"),
                    Severity::Info => label,
                };
                outln!("{label}  {:<width$}  {}", f.check.as_str(), f.subject);
                outln!("         {}", f.problem);
                if !f.fix.is_empty() {
                    outln!("         fix: {}", f.fix);
                }
            }
        }
    }
}

fn summary(report: &DoctorReport) -> String {
    format!(
        "Replication doctor for source {}: {} errors, {} warnings, {} notes, {} checks passed",
        report.source,
        report.count(Severity::Error),
        report.count(Severity::Warning),
        report.count(Severity::Info),
        report.count(Severity::Ok),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_opt_in_read_names_the_action_it_needed() {
        let refused = RegistryError {
            operation: "GetRegionOptStatus",
            resource: "eu-south-1 in account 111111111111".into(),
            message: "AccessDeniedException: User: arn:aws:iam::111111111111:user/ops is not \
                      authorized to perform: account:GetRegionOptStatus"
                .into(),
            retryable: false,
        };
        assert!(
            opt_in_error(&refused).starts_with(
                "account:GetRegionOptStatus eu-south-1 in account 111111111111: \
                 AccessDeniedException: User:"
            ),
            "{}",
            opt_in_error(&refused)
        );
        let no_role = RegistryError {
            operation: "AssumeRole",
            resource: "account 222222222222".into(),
            message: "no cross-account role is configured".into(),
            retryable: false,
        };
        assert_eq!(
            opt_in_error(&no_role),
            "sts:AssumeRole account 222222222222: no cross-account role is configured"
        );
    }

    #[test]
    fn a_refused_cloudtrail_read_names_the_permission() {
        use aws_sdk_cloudtrail::error::ErrorMetadata;
        use aws_sdk_cloudtrail::operation::describe_trails::DescribeTrailsError;

        let refused = DescribeTrailsError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message(
                    "User: arn:aws:iam::111111111111:user/ops is not authorized to perform: \
                     cloudtrail:DescribeTrails",
                )
                .build(),
        );
        let error = read_error("cloudtrail:DescribeTrails", "in us-west-2", &refused);
        assert!(error.access_denied);
        assert_eq!(error.action, "cloudtrail:DescribeTrails");
        assert!(
            error.error.starts_with(
                "cloudtrail:DescribeTrails in us-west-2: AccessDeniedException: User:"
            ),
            "{}",
            error.error
        );

        let throttled = DescribeTrailsError::generic(
            ErrorMetadata::builder().code("ThrottlingException").build(),
        );
        assert!(!read_error("cloudtrail:DescribeTrails", "in us-west-2", &throttled).access_denied);
    }
}
