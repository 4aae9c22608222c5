//! Function settings, read once from the environment at cold start.
//!
//! Every variable has a production default except the ones that name resources
//! (`TRACKING_TABLE`, `REPLWATCH_HOME_ACCOUNT`); a value that does not parse is an error that
//! names the variable, so a misconfigured stack fails at start-up instead of misbehaving.

use chrono::TimeDelta;
use replwatch_core::model::{AccountId, Destination, Region};
use replwatch_core::pipeline::PipelineSettings;
use replwatch_core::tracking::TrackingPolicy;

/// How alerts are formatted on the SNS topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    /// Readable text, for e-mail subscriptions.
    Text,
    /// The chat-notification JSON of Amazon Q Developer in chat applications.
    Chat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub table: String,
    pub home_account: AccountId,
    pub reader_role_name: Option<String>,
    pub reader_external_id: Option<String>,
    pub pipeline: PipelineSettings,
    pub metric_namespace: String,
    pub alert_topic_arn: Option<String>,
    pub alert_format: AlertFormat,
    /// Secrets Manager ARN or SSM parameter holding the Slack webhook URL.
    pub slack_webhook: Option<String>,
    /// More alerts than this in one batch are folded into one summary.
    pub storm_threshold: usize,
    pub dead_letter_queue_url: Option<String>,
    /// Into how many parts the sweep splits the due work (`SWEEP_PARTS`, 1 to 64), and the
    /// FIFO queue that carries the parts it does not check itself (`SWEEP_QUEUE_URL`).
    pub sweep_parts: u32,
    /// At most so many ECR calls a second per Region from one container: this function's
    /// share of the stack's budget ([`ecr_call_cap`]), or `ECR_CALLS_PER_SECOND` when set;
    /// neither: no cap but the SDK's adaptive retry.
    pub ecr_calls_per_second: Option<f64>,
    pub sweep_queue_url: Option<String>,
    /// The function's name, as a metric dimension.
    pub function_name: String,
    /// `AWS_REGION` (Lambda sets it): with the home account, the watched registry.
    pub region: Option<Region>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("environment variable {variable}: {message}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub message: String,
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The registry the stack watches: the home account in this Region (`None` without
    /// `AWS_REGION`).
    pub fn watched_registry(&self) -> Option<Destination> {
        self.region
            .clone()
            .map(|region| Destination::new(region, self.home_account.clone()))
    }

    /// Reads the settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |variable: &'static str| {
            get(variable).ok_or(SettingsError {
                variable,
                message: "must be set".into(),
            })
        };
        let number = |variable: &'static str, default: f64| -> Result<f64, SettingsError> {
            get(variable).map_or(Ok(default), |v| positive_number(variable, &v))
        };
        // Counts are whole: `SWEEP_BATCH=0.5` is refused, not truncated to nothing.
        let count = |variable: &'static str, default: u64| -> Result<u64, SettingsError> {
            get(variable).map_or(Ok(default), |v| {
                whole_number(variable, &v, 1..=u64::from(u32::MAX))
            })
        };
        // SLA_SECONDS exists for local runs and demos, where thirty minutes is too long to wait.
        let sla = match get("SLA_SECONDS") {
            Some(_) => seconds(number("SLA_SECONDS", 1800.0)?),
            None => seconds(number("SLA_MINUTES", 30.0)? * 60.0),
        };
        let recheck = match get("RECHECK_SECONDS") {
            Some(_) => seconds(number("RECHECK_SECONDS", 900.0)?),
            None => seconds(number("RECHECK_MINUTES", 15.0)? * 60.0),
        };
        let retention = seconds(number("RETENTION_DAYS", 14.0)? * 86_400.0);
        let configuration_ttl = seconds(number("CONFIGURATION_TTL_MINUTES", 5.0)? * 60.0);
        let rules_check_interval = seconds(number("RULES_CHECK_SECONDS", 10.0)?);
        let sweep_batch = count("SWEEP_BATCH", 250)? as usize;
        let sweep_concurrency = count("SWEEP_CONCURRENCY", 64)? as usize;
        let sweep_parts = count("SWEEP_PARTS", 1)? as u32;
        if !(1..=64).contains(&sweep_parts) {
            return Err(SettingsError {
                variable: "SWEEP_PARTS",
                message: format!("{sweep_parts} is not between 1 and 64 (the due index's shards)"),
            });
        }
        let sweep_queue_url = get("SWEEP_QUEUE_URL");
        let ecr_calls_per_second = match get("ECR_CALLS_PER_SECOND") {
            Some(_) => Some(number("ECR_CALLS_PER_SECOND", 1.0)?),
            None => ecr_call_cap(&get)?.map(|cap| cap as f64),
        };
        if sweep_parts > 1 && sweep_queue_url.is_none() {
            return Err(SettingsError {
                variable: "SWEEP_QUEUE_URL",
                message: format!("required to split the sweep in {sweep_parts} parts"),
            });
        }
        let storm_threshold = count("STORM_THRESHOLD", 10)? as usize;
        let home_account = required("REPLWATCH_HOME_ACCOUNT")?;
        let home_account = AccountId::parse(&home_account).map_err(|e| SettingsError {
            variable: "REPLWATCH_HOME_ACCOUNT",
            message: e.to_string(),
        })?;
        let alert_format = match get("ALERT_FORMAT")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("text") => AlertFormat::Text,
            Some("chat") => AlertFormat::Chat,
            Some(other) => {
                return Err(SettingsError {
                    variable: "ALERT_FORMAT",
                    message: format!("{other:?} is neither `text` nor `chat`"),
                });
            }
        };
        let region = aws_region(&lookup)?;
        Ok(Self {
            table: required("TRACKING_TABLE")?,
            region,
            home_account,
            reader_role_name: get("READER_ROLE_NAME"),
            reader_external_id: get("READER_EXTERNAL_ID"),
            pipeline: PipelineSettings {
                policy: TrackingPolicy {
                    sla,
                    recheck_interval: recheck,
                    retention,
                },
                configuration_ttl,
                rules_check_interval,
                sweep_batch,
                sweep_concurrency,
                ..PipelineSettings::default()
            },
            metric_namespace: get("METRIC_NAMESPACE").unwrap_or_else(|| "replwatch".into()),
            alert_topic_arn: get("ALERT_TOPIC_ARN"),
            alert_format,
            slack_webhook: get("SLACK_WEBHOOK_SECRET"),
            storm_threshold,
            dead_letter_queue_url: get("DEAD_LETTER_QUEUE_URL"),
            sweep_parts,
            sweep_queue_url,
            ecr_calls_per_second,
            function_name: get("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "replwatch".into()),
        })
    }
}

/// `AWS_REGION` (Lambda sets it), if set: with the home account, the registry this stack
/// watches.
pub fn aws_region(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Region>, SettingsError> {
    lookup("AWS_REGION")
        .filter(|v| !v.trim().is_empty())
        .map(|region| {
            Region::parse(&region).map_err(|e| SettingsError {
                variable: "AWS_REGION",
                message: e.to_string(),
            })
        })
        .transpose()
}

/// `value` of `variable` as a whole number within `range`: how every count of the settings is
/// read (the tracking functions' and the backfill's).
pub fn whole_number(
    variable: &'static str,
    value: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, SettingsError> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or(SettingsError {
            variable,
            message: format!(
                "{value:?} is not a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        })
}

/// `value` of `variable` as a positive, finite number (durations, which may be fractions).
pub fn positive_number(variable: &'static str, value: &str) -> Result<f64, SettingsError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0)
        .ok_or(SettingsError {
            variable,
            message: format!("{value:?} is not a positive number"),
        })
}

/// This function's cap on ECR calls a second per Region and container, derived from the
/// stack's budget so that the budget holds for the account and Region whatever the number of
/// containers: `ECR_CALL_BUDGET_PER_SECOND` (all of replwatch's ECR calls a second in one
/// account and Region), `ECR_CALL_BUDGET_SHARE` (the percent of it this function may use) and
/// `ECR_CALL_CONTAINERS` (the most containers of this function that run at once: its event
/// source's maximum concurrency, or its reserved concurrency). The cap is the share divided
/// among the containers, rounded down to whole calls, so containers × cap never exceeds the
/// share. `None` without a budget; an error when the budget is set without the other two, or
/// leaves a container less than one call a second (nothing could keep up with that: raise the
/// budget or lower the concurrency, as the error says).
pub fn ecr_call_cap(get: &impl Fn(&str) -> Option<String>) -> Result<Option<u64>, SettingsError> {
    let whole = |variable: &'static str, range: std::ops::RangeInclusive<u64>| {
        let value = get(variable).ok_or(SettingsError {
            variable,
            message: "must be set with ECR_CALL_BUDGET_PER_SECOND".into(),
        })?;
        whole_number(variable, &value, range)
    };
    if get("ECR_CALL_BUDGET_PER_SECOND").is_none() {
        return Ok(None);
    }
    let budget = whole("ECR_CALL_BUDGET_PER_SECOND", 1..=u64::from(u32::MAX))?;
    let share = whole("ECR_CALL_BUDGET_SHARE", 1..=100)?;
    let containers = whole("ECR_CALL_CONTAINERS", 1..=u64::from(u32::MAX))?;
    let cap = budget * share / (100 * containers);
    if cap == 0 {
        let least = (100 * containers).div_ceil(share);
        return Err(SettingsError {
            variable: "ECR_CALL_BUDGET_PER_SECOND",
            message: format!(
                "{share}% of {budget} calls a second shared by {containers} containers is less \
                 than one call a second each: raise the budget (EcrCallBudgetPerSecond) to at \
                 least {least}, or lower this function's maximum concurrency"
            ),
        });
    }
    Ok(Some(cap))
}

fn seconds(value: f64) -> TimeDelta {
    TimeDelta::milliseconds((value * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    const BASE: [(&str, &str); 2] = [
        ("TRACKING_TABLE", "t"),
        ("REPLWATCH_HOME_ACCOUNT", "111111111111"),
    ];

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = from(&BASE).expect("settings");
        assert_eq!(s.pipeline.policy.sla, TimeDelta::minutes(30));
        assert_eq!(s.pipeline.policy.recheck_interval, TimeDelta::minutes(15));
        assert_eq!(s.pipeline.configuration_ttl, TimeDelta::minutes(5));
        assert_eq!(s.pipeline.rules_check_interval, TimeDelta::seconds(10));
        assert_eq!(s.pipeline.sweep_batch, 250);
        assert_eq!(s.metric_namespace, "replwatch");
        assert_eq!(s.alert_format, AlertFormat::Text);
        assert_eq!(s.storm_threshold, 10);
        assert_eq!(s.alert_topic_arn, None);
    }

    #[test]
    fn the_sla_is_configurable_in_minutes_or_seconds() {
        let mut pairs = BASE.to_vec();
        pairs.push(("SLA_MINUTES", "45"));
        assert_eq!(
            from(&pairs).expect("settings").pipeline.policy.sla,
            TimeDelta::minutes(45)
        );
        pairs.push(("SLA_SECONDS", "20"));
        assert_eq!(
            from(&pairs).expect("settings").pipeline.policy.sla,
            TimeDelta::seconds(20)
        );
    }

    fn cap_with(pairs: &[(&str, &str)]) -> Result<Option<f64>, SettingsError> {
        let mut all = BASE.to_vec();
        all.extend_from_slice(pairs);
        from(&all).map(|s| s.ecr_calls_per_second)
    }

    /// The cap of a function given `share` percent of `budget` over `containers`.
    fn budget_cap(budget: u64, share: u64, containers: u64) -> Result<Option<f64>, SettingsError> {
        let (budget, share, containers) = (
            budget.to_string(),
            share.to_string(),
            containers.to_string(),
        );
        cap_with(&[
            ("ECR_CALL_BUDGET_PER_SECOND", &budget),
            ("ECR_CALL_BUDGET_SHARE", &share),
            ("ECR_CALL_CONTAINERS", &containers),
        ])
    }

    #[test]
    fn the_ecr_budget_is_divided_among_the_containers_that_can_run_at_once() {
        // The whole budget to one function of 4 containers: 50 calls a second each.
        assert_eq!(budget_cap(200, 100, 4), Ok(Some(50.0)));
        // The template's defaults: the sweep's 60% of 2,000 over SweepParts 4 + 2 containers,
        // track-replication's 30% over its 64 (9.4 a second, rounded down: 64 × 9 = 576 stays
        // within its 600).
        assert_eq!(budget_cap(2000, 60, 6), Ok(Some(200.0)));
        assert_eq!(budget_cap(2000, 30, 64), Ok(Some(9.0)));
        // Rounded down: 40% of 1,000 over 3 containers is 133.3 a second, and 3 × 133 = 399
        // stays within the 400.
        assert_eq!(budget_cap(1000, 40, 3), Ok(Some(133.0)));
        // Never more than the share, whatever the numbers.
        for budget in [1_u64, 7, 99, 100, 999, 2000, 4321] {
            for share in [1_u64, 5, 33, 40, 50, 100] {
                for containers in [1_u64, 2, 3, 6, 7, 60, 1000] {
                    if let Ok(Some(cap)) = budget_cap(budget, share, containers) {
                        assert!(cap >= 1.0);
                        assert!(
                            cap * (containers * 100) as f64 <= (budget * share) as f64,
                            "{share}% of {budget} over {containers}: {cap} each"
                        );
                    }
                }
            }
        }
        // No budget: no cap (local runs), unless one is given.
        assert_eq!(cap_with(&[]), Ok(None));
        assert_eq!(cap_with(&[("ECR_CALLS_PER_SECOND", "4")]), Ok(Some(4.0)));
    }

    #[test]
    fn an_explicit_ecr_cap_overrides_the_budget() {
        assert_eq!(
            cap_with(&[
                ("ECR_CALL_BUDGET_PER_SECOND", "2000"),
                ("ECR_CALL_BUDGET_SHARE", "40"),
                ("ECR_CALL_CONTAINERS", "60"),
                ("ECR_CALLS_PER_SECOND", "4"),
            ]),
            Ok(Some(4.0))
        );
    }

    #[test]
    fn a_budget_too_small_for_one_call_a_second_per_container_fails_at_start_and_says_what_would_do()
     {
        // backfill-copy's 5% of 100 over its 10 containers: half a call a second each.
        let err = budget_cap(100, 5, 10).expect_err("too small");
        assert_eq!(err.variable, "ECR_CALL_BUDGET_PER_SECOND");
        let message = err.to_string();
        assert!(message.contains("less than one call a second"), "{message}");
        assert!(message.contains("at least 200"), "{message}");
        // At that least, one call a second each.
        assert_eq!(budget_cap(200, 5, 10), Ok(Some(1.0)));
    }

    #[test]
    fn a_budget_without_its_share_or_containers_names_what_is_missing() {
        let err = cap_with(&[
            ("ECR_CALL_BUDGET_PER_SECOND", "2000"),
            ("ECR_CALL_CONTAINERS", "6"),
        ])
        .expect_err("no share");
        assert_eq!(err.variable, "ECR_CALL_BUDGET_SHARE");
        let err = cap_with(&[
            ("ECR_CALL_BUDGET_PER_SECOND", "2000"),
            ("ECR_CALL_BUDGET_SHARE", "50"),
        ])
        .expect_err("no containers");
        assert_eq!(err.variable, "ECR_CALL_CONTAINERS");
        let err = cap_with(&[
            ("ECR_CALL_BUDGET_PER_SECOND", "2000"),
            ("ECR_CALL_BUDGET_SHARE", "150"),
            ("ECR_CALL_CONTAINERS", "6"),
        ])
        .expect_err("share over 100");
        assert_eq!(err.variable, "ECR_CALL_BUDGET_SHARE");
        let err = cap_with(&[
            ("ECR_CALL_BUDGET_PER_SECOND", "lots"),
            ("ECR_CALL_BUDGET_SHARE", "50"),
            ("ECR_CALL_CONTAINERS", "6"),
        ])
        .expect_err("not a number");
        assert_eq!(err.variable, "ECR_CALL_BUDGET_PER_SECOND");
    }

    #[test]
    fn missing_or_malformed_values_name_the_variable() {
        let err = from(&[("TRACKING_TABLE", "t")]).expect_err("no account");
        assert_eq!(err.variable, "REPLWATCH_HOME_ACCOUNT");
        let mut pairs = BASE.to_vec();
        pairs.push(("SLA_MINUTES", "soon"));
        let err = from(&pairs).expect_err("bad sla");
        assert_eq!(err.variable, "SLA_MINUTES");
        assert!(err.to_string().contains("soon"));
        let mut pairs = BASE.to_vec();
        pairs.push(("ALERT_FORMAT", "html"));
        assert_eq!(
            from(&pairs).expect_err("bad format").variable,
            "ALERT_FORMAT"
        );
    }

    #[test]
    fn counts_are_whole_numbers_never_truncated() {
        for (variable, value) in [
            ("SWEEP_BATCH", "0.5"),
            ("SWEEP_CONCURRENCY", "64.9"),
            ("STORM_THRESHOLD", "0"),
            ("SWEEP_PARTS", "-1"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push((variable, value));
            let err = from(&pairs).expect_err(value);
            assert_eq!(err.variable, variable);
            assert!(err.to_string().contains("whole number"), "{err}");
        }
        let mut pairs = BASE.to_vec();
        pairs.push(("SWEEP_BATCH", " 100 "));
        assert_eq!(from(&pairs).expect("settings").pipeline.sweep_batch, 100);
    }
}
