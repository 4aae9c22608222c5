//! Whether a destination registry's permissions policy lets a source account replicate into it.
//!
//! Cross-account replication works only when the destination registry's policy
//! (`PutRegistryPolicy`) allows the source account `ecr:ReplicateImage` (and
//! `ecr:CreateRepository`, for repositories replication has to create) on
//! `arn:<partition>:ecr:<region>:<destination>:repository/…`. This is the small part of IAM
//! policy evaluation that question needs: `Allow` and `Deny` statements, `Action` with `*` and
//! `?` wildcards (case-insensitive, as IAM compares actions), `Resource` with wildcards,
//! `Principal` as `"*"`, `{"AWS": …}` with an account id, an account root ARN or `"*"`.
//! `NotAction`, `NotResource`, `NotPrincipal` and conditions are not evaluated: a statement that
//! has them is taken to apply as written without them, and [`PolicyVerdict::conditional`] says
//! so, because a condition (an organization id, say) may still refuse at run time.

use serde_json::Value;

use crate::wildcard::{self, Wildcards};

/// What a policy says about one action for one principal on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyVerdict {
    pub allowed: bool,
    /// An allowing statement has conditions this evaluation did not check.
    pub conditional: bool,
}

/// A registry permissions policy document.
#[derive(Debug, Clone)]
pub struct RegistryPolicy {
    statements: Vec<Value>,
}

/// The policy text is not a JSON policy document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the registry policy is not a JSON policy document: {0}")]
pub struct PolicyParseError(String);

impl RegistryPolicy {
    pub fn parse(text: &str) -> Result<Self, PolicyParseError> {
        let document: Value =
            serde_json::from_str(text).map_err(|e| PolicyParseError(e.to_string()))?;
        let statements = match document.get("Statement") {
            Some(Value::Array(list)) => list.clone(),
            Some(one @ Value::Object(_)) => vec![one.clone()],
            _ => return Err(PolicyParseError("no Statement".into())),
        };
        Ok(Self { statements })
    }

    /// Whether `account` may call `action` on `resource`: some `Allow` statement covers it and
    /// no `Deny` statement does.
    pub fn evaluate(&self, account: &str, action: &str, resource: &str) -> PolicyVerdict {
        let mut verdict = PolicyVerdict {
            allowed: false,
            conditional: false,
        };
        for statement in &self.statements {
            if !applies(statement, account, action, resource) {
                continue;
            }
            match statement.get("Effect").and_then(Value::as_str) {
                Some("Deny") if statement.get("Condition").is_none() => {
                    return PolicyVerdict {
                        allowed: false,
                        conditional: false,
                    };
                }
                Some("Allow") => {
                    let conditional = statement.get("Condition").is_some();
                    // An unconditional allow is the stronger answer.
                    if !verdict.allowed || verdict.conditional {
                        verdict = PolicyVerdict {
                            allowed: true,
                            conditional,
                        };
                    }
                }
                _ => {}
            }
        }
        verdict
    }
}

fn applies(statement: &Value, account: &str, action: &str, resource: &str) -> bool {
    let actions = strings(statement.get("Action"));
    let resources = strings(statement.get("Resource"));
    actions.iter().any(|pattern| {
        wildcard::matches(
            &pattern.to_ascii_lowercase(),
            &action.to_ascii_lowercase(),
            Wildcards::StarAndQuestion,
        )
    }) && (resources.is_empty()
        || resources
            .iter()
            .any(|p| wildcard::matches(p, resource, Wildcards::StarAndQuestion)))
        && principal_covers(statement.get("Principal"), account)
}

fn principal_covers(principal: Option<&Value>, account: &str) -> bool {
    match principal {
        Some(Value::String(any)) => any == "*",
        Some(Value::Object(map)) => strings(map.get("AWS")).iter().any(|p| {
            p == "*"
                || p == account
                || p.strip_suffix(":root")
                    .is_some_and(|arn| arn.ends_with(&format!(":iam::{account}")))
        }),
        _ => false,
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOURCE: &str = "arn:aws:ecr:eu-west-1:222222222222:repository/team-a/";

    fn policy(statements: &str) -> RegistryPolicy {
        RegistryPolicy::parse(&format!(
            r#"{{"Version":"2012-10-17","Statement":{statements}}}"#
        ))
        .expect("test policy")
    }

    #[test]
    fn the_documented_replication_policy_allows_both_actions() {
        // The registry policy of the ECR user guide's cross-account replication example.
        let p = policy(
            r#"[{"Sid":"ReplicationAccessCrossAccount","Effect":"Allow",
                "Principal":{"AWS":"arn:aws:iam::111111111111:root"},
                "Action":["ecr:CreateRepository","ecr:ReplicateImage"],
                "Resource":"arn:aws:ecr:eu-west-1:222222222222:repository/*"}]"#,
        );
        for action in ["ecr:ReplicateImage", "ecr:CreateRepository"] {
            assert!(
                p.evaluate("111111111111", action, RESOURCE).allowed,
                "{action}"
            );
        }
        assert!(
            !p.evaluate("333333333333", "ecr:ReplicateImage", RESOURCE)
                .allowed
        );
    }

    #[test]
    fn wildcards_denies_and_conditions() {
        let p = policy(
            r#"[{"Effect":"Allow","Principal":"*","Action":"ecr:*","Resource":"*",
                 "Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-1"}}},
                {"Effect":"Deny","Principal":{"AWS":"111111111111"},"Action":"ecr:Create*",
                 "Resource":"*"}]"#,
        );
        let replicate = p.evaluate("111111111111", "ecr:ReplicateImage", RESOURCE);
        assert!(replicate.allowed && replicate.conditional);
        assert!(
            !p.evaluate("111111111111", "ecr:CreateRepository", RESOURCE)
                .allowed
        );
    }

    #[test]
    fn a_resource_narrower_than_the_repositories_does_not_cover_them() {
        let p = policy(
            r#"{"Effect":"Allow","Principal":{"AWS":["111111111111"]},
                "Action":"ecr:ReplicateImage",
                "Resource":"arn:aws:ecr:eu-west-1:222222222222:repository/team-b/*"}"#,
        );
        assert!(
            !p.evaluate("111111111111", "ecr:ReplicateImage", RESOURCE)
                .allowed
        );
    }
}
