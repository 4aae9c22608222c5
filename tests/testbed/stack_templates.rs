//! The stacks' templates as the test bed deploys them: what a resource of `infra/*.yaml` says
//! for given parameters, read from the template itself so that the local deployment runs the
//! shipped pattern, not a copy of it.
//!
//! Resolves the intrinsic functions these values use (`Ref` of a parameter, of
//! `AWS::NoValue` (the key or item is left out) or of a pseudo parameter given as a parameter,
//! `Fn::Sub` of those, `Fn::GetAtt` of a resource the caller names, `Fn::If` on a condition,
//! and in conditions `Fn::Equals`, `Fn::Not`, `Fn::Join`), as CloudFormation would; anything
//! else is an error, so a template change the test bed cannot follow fails
//! the tests instead of passing them with a stale pattern.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;
use serde_norway::Value as Yaml;

use crate::Error;

/// Parameter values of one stack: strings, and lists for `CommaDelimitedList` parameters.
pub type Parameters = HashMap<&'static str, Json>;

/// `infra/destination-region.yaml`'s forwarding rule's event pattern for `parameters`
/// (missing ones take their defaults).
pub fn forwarding_pattern(parameters: &Parameters) -> Result<Json, Error> {
    let template = read("infra/destination-region.yaml")?;
    let stack = Stack::new(&template, parameters, HashMap::new())?;
    let pattern = &template["Resources"]["ForwardReplicationActions"]["Properties"]["EventPattern"];
    stack.value(pattern)
}

/// The parameters of one `infra/destination-account.yaml` stack (with `BackfillWriter=true`)
/// that its roles' trust policies read.
#[derive(Debug, Clone, Copy)]
pub struct AccountStack<'a> {
    /// `CentralAccountId`.
    pub central: &'a str,
    /// `CentralStackName` (`None`: its default).
    pub central_stack: Option<&'a str>,
    /// `ExternalId`: the central stack's `ReaderExternalId`.
    pub external_id: &'a str,
    /// `BackfillExternalId`: the central stack's.
    pub backfill_external_id: &'a str,
    /// `OperatorRoleArns` (empty: its default, none).
    pub operator_roles: &'a [&'a str],
    /// `PreviousExternalId`, while the reader's id is rotated (`None`: its default, empty).
    pub previous_external_id: Option<&'a str>,
}

impl AccountStack<'_> {
    /// The reader role's trust policy.
    pub fn reader_trust_policy(&self) -> Result<Json, Error> {
        self.trust_policy("ReaderRole")
    }

    /// The backfill role's trust policy.
    pub fn backfill_trust_policy(&self) -> Result<Json, Error> {
        self.trust_policy("BackfillRole")
    }

    fn trust_policy(&self, role: &str) -> Result<Json, Error> {
        let template = read("infra/destination-account.yaml")?;
        let mut parameters = HashMap::from([
            ("CentralAccountId", Json::from(self.central)),
            ("ExternalId", Json::from(self.external_id)),
            ("BackfillWriter", Json::from("true")),
            ("BackfillExternalId", Json::from(self.backfill_external_id)),
            ("OperatorRoleArns", Json::from(self.operator_roles.to_vec())),
            ("AWS::Partition", Json::from("aws")),
        ]);
        if let Some(name) = self.central_stack {
            parameters.insert("CentralStackName", Json::from(name));
        }
        if let Some(previous) = self.previous_external_id {
            parameters.insert("PreviousExternalId", Json::from(previous));
        }
        let stack = Stack::new(&template, &parameters, HashMap::new())?;
        stack.value(&template["Resources"][role]["Properties"]["AssumeRolePolicyDocument"])
    }
}

/// The external id `template.yaml` gives the functions that assume the backfill role
/// (`BACKFILL_EXTERNAL_ID` of `backfill-plan` and `backfill-copy`), for its
/// `ReaderExternalId` and `BackfillExternalId`. An error if the two functions were given
/// different ones.
pub fn central_backfill_external_id(
    reader_external_id: &str,
    backfill_external_id: &str,
) -> Result<String, Error> {
    let template = read("template.yaml")?;
    let parameters = HashMap::from([
        ("ReaderExternalId", Json::from(reader_external_id)),
        ("BackfillExternalId", Json::from(backfill_external_id)),
    ]);
    let stack = Stack::new(&template, &parameters, HashMap::new())?;
    let mut given = Vec::new();
    for function in ["BackfillPlanFunction", "BackfillCopyFunction"] {
        let variables = &template["Resources"][function]["Properties"]["Environment"]["Variables"];
        match stack.value(&variables["BACKFILL_EXTERNAL_ID"])? {
            Json::String(id) => given.push(id),
            other => return Err(format!("{function}: BACKFILL_EXTERNAL_ID is {other}").into()),
        }
    }
    match given.as_slice() {
        [plan, copy] if plan == copy => Ok(plan.clone()),
        _ => Err(format!("the backfill functions get different external ids: {given:?}").into()),
    }
}

/// The ARN of the role `template.yaml` gives `function` (`SweepFunction`, ...) in the central
/// stack `stack` of `account`: its `Path` and `RoleName`.
pub fn central_function_role_arn(
    account: &str,
    stack: &str,
    function: &str,
) -> Result<String, Error> {
    let template = read("template.yaml")?;
    let parameters = HashMap::from([("AWS::StackName", Json::from(stack))]);
    let stack = Stack::new(&template, &parameters, HashMap::new())?;
    let role = match &template["Resources"][function]["Properties"]["Role"] {
        Yaml::Tagged(tagged) if tagged.tag == "GetAtt" => tagged.value.as_str(),
        _ => None,
    }
    .and_then(|attribute| attribute.strip_suffix(".Arn"))
    .ok_or(format!("{function} names no role of the stack"))?;
    let properties = &template["Resources"][role]["Properties"];
    match (
        stack.value(&properties["Path"])?,
        stack.value(&properties["RoleName"])?,
    ) {
        (Json::String(path), Json::String(name)) => {
            Ok(format!("arn:aws:iam::{account}:role{path}{name}"))
        }
        other => Err(format!("{role}: path and name are {other:?}").into()),
    }
}

/// What `template.yaml`'s scheduled rules check sends `backfill-plan` (its target's `Input`),
/// with the stack's defaults; an error if the default leaves the rules check out.
pub fn rules_check_input() -> Result<String, Error> {
    scheduled_input("RulesCheckRule")
}

/// What `template.yaml`'s scheduled lost-push check sends the sweep (its target's `Input`),
/// with the stack's defaults; an error if the default leaves the check out.
pub fn lost_push_check_input() -> Result<String, Error> {
    scheduled_input("LostPushCheckRule")
}

/// The `Input` of the first target of the scheduled rule `name`, with the stack's defaults.
fn scheduled_input(name: &str) -> Result<String, Error> {
    let template = read("template.yaml")?;
    let stack = Stack::new(&template, &HashMap::new(), HashMap::new())?;
    let rule = &template["Resources"][name];
    if !stack.condition(
        rule["Condition"]
            .as_str()
            .ok_or(format!("{name} has no condition"))?,
    )? {
        return Err(format!("{name} is off by default").into());
    }
    match stack.value(&rule["Properties"]["Targets"][0]["Input"])? {
        Json::String(input) => Ok(input),
        other => Err(format!("{name}'s input is {other}").into()),
    }
}

/// `template.yaml`'s event pattern of its rule `rule` (`ReplicationActionRule`, ...) for the
/// central stack in `account` and `region`.
pub fn central_rule_pattern(rule: &str, account: &str, region: &str) -> Result<Json, Error> {
    let template = read("template.yaml")?;
    let parameters = HashMap::from([
        ("AWS::AccountId", Json::from(account)),
        ("AWS::Region", Json::from(region)),
    ]);
    let stack = Stack::new(&template, &parameters, HashMap::new())?;
    stack.value(&template["Resources"][rule]["Properties"]["EventPattern"])
}

/// `template.yaml`'s central bus policy for these destination accounts, as one policy
/// document: the statement of `CentralBusAccountsPolicy` on the bus `bus_arn`.
pub fn central_bus_policy(destination_accounts: &[&str], bus_arn: &str) -> Result<Json, Error> {
    let template = read("template.yaml")?;
    let parameters = HashMap::from([(
        "DestinationAccountIds",
        Json::from(destination_accounts.to_vec()),
    )]);
    let attributes = HashMap::from([("CentralBus.Arn".to_owned(), Json::from(bus_arn))]);
    let stack = Stack::new(&template, &parameters, attributes)?;
    let properties = &template["Resources"]["CentralBusAccountsPolicy"]["Properties"];
    let mut statement = stack.value(&properties["Statement"])?;
    // EventBridge makes the resource's StatementId the statement's Sid.
    statement["Sid"] = stack.value(&properties["StatementId"])?;
    Ok(serde_json::json!({"Version": "2012-10-17", "Statement": [statement]}))
}

fn read(path: &str) -> Result<Yaml, Error> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    let text = std::fs::read_to_string(&full).map_err(|e| format!("{}: {e}", full.display()))?;
    Ok(serde_norway::from_str(&text)?)
}

struct Stack<'t> {
    template: &'t Yaml,
    /// Given values (pseudo parameters too) and defaults; a parameter with neither is an error
    /// only when used.
    parameters: HashMap<String, Json>,
    /// `Resource.Attribute` -> value, for `Fn::GetAtt`.
    attributes: HashMap<String, Json>,
}

impl<'t> Stack<'t> {
    fn new(
        template: &'t Yaml,
        given: &Parameters,
        attributes: HashMap<String, Json>,
    ) -> Result<Self, Error> {
        let mut parameters: HashMap<String, Json> = given
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        let declared = template["Parameters"]
            .as_mapping()
            .ok_or("template without Parameters")?;
        for (name, declaration) in declared {
            let name = name.as_str().ok_or("parameter name")?;
            if parameters.contains_key(name) {
                continue;
            }
            // A number's default is written as a YAML number; CloudFormation passes it as text.
            let default = match (
                declaration["Default"].as_str(),
                declaration["Default"].as_u64(),
            ) {
                (Some(text), _) => text.to_owned(),
                (None, Some(number)) => number.to_string(),
                (None, None) => continue,
            };
            let default = default.as_str();
            let value = if declaration["Type"].as_str() == Some("CommaDelimitedList") {
                Json::Array(
                    default
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| Json::String(s.to_owned()))
                        .collect(),
                )
            } else {
                Json::String(default.to_owned())
            };
            parameters.insert(name.to_owned(), value);
        }
        Ok(Self {
            template,
            parameters,
            attributes,
        })
    }

    /// `value` resolved; `AWS::NoValue` in its place is an error.
    fn value(&self, value: &Yaml) -> Result<Json, Error> {
        self.resolve(value)?
            .ok_or_else(|| "AWS::NoValue where a value is needed".into())
    }

    fn condition(&self, name: &str) -> Result<bool, Error> {
        match self.value(&self.template["Conditions"][name])? {
            Json::Bool(b) => Ok(b),
            other => Err(format!("condition {name} is {other}").into()),
        }
    }

    /// `None`: `AWS::NoValue`, left out of the mapping or list that holds it.
    fn resolve(&self, value: &Yaml) -> Result<Option<Json>, Error> {
        Ok(Some(match value {
            Yaml::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                return self.function(tag.trim_start_matches('!'), &tagged.value);
            }
            Yaml::Mapping(map) => {
                if let Some((key, argument)) = map.iter().next().filter(|_| map.len() == 1) {
                    if let Some(name) = key.as_str() {
                        if name == "Ref" || name.starts_with("Fn::") {
                            return self.function(name.trim_start_matches("Fn::"), argument);
                        }
                    }
                }
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    let key = k.as_str().ok_or("non-string key")?;
                    if let Some(v) = self.resolve(v)? {
                        out.insert(key.to_owned(), v);
                    }
                }
                Json::Object(out)
            }
            Yaml::Sequence(items) => {
                let mut out = Vec::new();
                for item in items {
                    out.extend(self.resolve(item)?);
                }
                Json::Array(out)
            }
            Yaml::String(s) => Json::String(s.clone()),
            Yaml::Bool(b) => Json::Bool(*b),
            Yaml::Number(n) => serde_json::to_value(n)?,
            Yaml::Null => Json::Null,
        }))
    }

    fn parameter(&self, name: &str) -> Result<Json, Error> {
        self.parameters
            .get(name)
            .cloned()
            .ok_or_else(|| format!("Ref {name}: no value given and no default").into())
    }

    fn function(&self, name: &str, argument: &Yaml) -> Result<Option<Json>, Error> {
        let arguments = || argument.as_sequence().ok_or(format!("{name}: not a list"));
        Ok(Some(match name {
            "Ref" => match argument.as_str().ok_or("Ref of a non-string")? {
                "AWS::NoValue" => return Ok(None),
                parameter => self.parameter(parameter)?,
            },
            "Sub" => {
                let text = argument.as_str().ok_or("Sub: only its one-string form")?;
                let mut out = String::new();
                let mut rest = text;
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let end = rest[start..].find('}').ok_or("Sub: unclosed ${")? + start;
                    match self.parameter(&rest[start + 2..end])? {
                        Json::String(value) => out.push_str(&value),
                        other => return Err(format!("Sub of {other}").into()),
                    }
                    rest = &rest[end + 1..];
                }
                out.push_str(rest);
                Json::String(out)
            }
            "GetAtt" => {
                let path = match argument {
                    Yaml::String(path) => path.clone(),
                    Yaml::Sequence(parts) => parts
                        .iter()
                        .filter_map(Yaml::as_str)
                        .collect::<Vec<_>>()
                        .join("."),
                    _ => return Err("GetAtt of neither a string nor a list".into()),
                };
                self.attributes
                    .get(&path)
                    .cloned()
                    .ok_or_else(|| format!("GetAtt {path}: not given"))?
            }
            "If" => {
                let [condition, then, otherwise] = arguments()?.as_slice() else {
                    return Err("If takes three arguments".into());
                };
                let condition = condition.as_str().ok_or("If: condition name")?;
                let chosen = if self.condition(condition)? {
                    then
                } else {
                    otherwise
                };
                return self.resolve(chosen);
            }
            "Equals" => {
                let [a, b] = arguments()?.as_slice() else {
                    return Err("Equals takes two arguments".into());
                };
                Json::Bool(self.value(a)? == self.value(b)?)
            }
            "Not" => {
                let [inner] = arguments()?.as_slice() else {
                    return Err("Not takes one argument".into());
                };
                match self.value(inner)? {
                    Json::Bool(b) => Json::Bool(!b),
                    other => return Err(format!("Not of {other}").into()),
                }
            }
            "Join" => {
                let [separator, list] = arguments()?.as_slice() else {
                    return Err("Join takes two arguments".into());
                };
                let separator = separator.as_str().ok_or("Join: separator")?;
                let Json::Array(items) = self.value(list)? else {
                    return Err("Join of a non-list".into());
                };
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned).ok_or("Join of a non-string"))
                    .collect::<Result<_, _>>()?;
                Json::String(parts.join(separator))
            }
            "Split" => {
                let [separator, text] = arguments()?.as_slice() else {
                    return Err("Split takes two arguments".into());
                };
                let separator = separator.as_str().ok_or("Split: separator")?;
                let Json::String(text) = self.value(text)? else {
                    return Err("Split of a non-string".into());
                };
                Json::Array(text.split(separator).map(Json::from).collect())
            }
            other => {
                return Err(
                    format!("intrinsic function {other} is not resolved by the test bed").into(),
                );
            }
        }))
    }
}

/// The policy document of the `AWS::SQS::QueuePolicy` resource `resource` of the template
/// `template` (`"template.yaml"`, `"infra/destination-region.yaml"`) as CloudFormation would
/// deploy it: its parameters from `parameters` (missing ones take their defaults), its
/// `Fn::GetAtt`s from `attributes` (`("PushQueue.Arn", <the local queue's ARN>)`,
/// `("ImageActionRule.Arn", <the local rule's ARN>)`, ...). So the local deployment sets the
/// queue policies the stacks ship, not copies of them.
pub fn queue_policy(
    template: &str,
    resource: &str,
    parameters: &Parameters,
    attributes: &[(&str, &str)],
) -> Result<Json, Error> {
    resource_policy(
        template,
        resource,
        "AWS::SQS::QueuePolicy",
        parameters,
        attributes,
    )
}

/// [`queue_policy`] for the `AWS::SNS::TopicPolicy` resource `resource`; a `Ref` of the topic
/// (or of a pseudo parameter) is given in `parameters` (`("AlertTopic", <its ARN>)`).
pub fn topic_policy(
    template: &str,
    resource: &str,
    parameters: &Parameters,
    attributes: &[(&str, &str)],
) -> Result<Json, Error> {
    resource_policy(
        template,
        resource,
        "AWS::SNS::TopicPolicy",
        parameters,
        attributes,
    )
}

fn resource_policy(
    template: &str,
    resource: &str,
    kind: &str,
    parameters: &Parameters,
    attributes: &[(&str, &str)],
) -> Result<Json, Error> {
    let document = read(template)?;
    let declared = &document["Resources"][resource];
    if declared["Type"].as_str() != Some(kind) {
        return Err(format!("{template}: {resource} is no {kind}").into());
    }
    let attributes = attributes
        .iter()
        .map(|(name, value)| ((*name).to_owned(), Json::from(*value)))
        .collect();
    let stack = Stack::new(&document, parameters, attributes)?;
    stack.value(&declared["Properties"]["PolicyDocument"])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters(forward: &str, regions: &[&str]) -> Parameters {
        HashMap::from([
            (
                "CentralBusArn",
                Json::String(
                    "arn:aws:events:us-west-2:111111111111:event-bus/replwatch-central".into(),
                ),
            ),
            ("SourceAccountIds", serde_json::json!(["111111111111"])),
            ("SourceRegions", serde_json::json!(regions)),
            ("Forward", Json::String(forward.into())),
        ])
    }

    #[test]
    fn the_account_s_roles_trust_the_central_functions_roles_by_exact_arn() {
        let stack = AccountStack {
            central: "111111111111",
            central_stack: Some("rw"),
            external_id: "reader-1",
            backfill_external_id: "backfill-1",
            operator_roles: &[],
            previous_external_id: None,
        };
        let trust = |policy: Json| {
            let statement = &policy["Statement"][0];
            (
                statement["Condition"]["StringEquals"]["sts:ExternalId"].clone(),
                statement["Condition"]["ArnEquals"]["aws:PrincipalArn"].clone(),
                policy["Statement"].as_array().map(Vec::len),
            )
        };
        let arn =
            |function| central_function_role_arn("111111111111", "rw", function).expect("arn");
        assert_eq!(
            trust(stack.reader_trust_policy().expect("policy")),
            (
                Json::from("reader-1"),
                Json::from(vec![
                    arn("TrackPushFunction"),
                    arn("TrackReplicationFunction"),
                    arn("SweepFunction")
                ]),
                Some(1)
            )
        );
        assert_eq!(
            trust(stack.backfill_trust_policy().expect("policy")),
            (
                Json::from("backfill-1"),
                Json::from(vec![
                    arn("BackfillPlanFunction"),
                    arn("BackfillCopyFunction")
                ]),
                Some(1)
            )
        );
        assert_eq!(
            arn("SweepFunction"),
            "arn:aws:iam::111111111111:role/replwatch/rw-sweep"
        );
        let operator = "arn:aws:iam::111111111111:role/ops";
        let with_operator = AccountStack {
            operator_roles: &[operator],
            ..stack
        };
        let reader = with_operator.reader_trust_policy().expect("policy");
        assert_eq!(
            reader["Statement"][1]["Condition"]["ArnEquals"]["aws:PrincipalArn"],
            Json::from(vec![operator])
        );
        let backfill = with_operator.backfill_trust_policy().expect("policy");
        assert_eq!(backfill["Statement"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            central_backfill_external_id("reader-1", "backfill-1").expect("id"),
            "backfill-1"
        );
    }

    #[test]
    fn the_central_replication_rule_takes_only_the_watched_registry_s_results() {
        let pattern = central_rule_pattern("ReplicationActionRule", "111111111111", "us-west-2")
            .expect("pattern");
        assert_eq!(
            pattern["detail"],
            serde_json::json!({
                "source-account": ["111111111111"],
                "source-region": ["us-west-2"]
            })
        );
        assert_eq!(
            pattern["detail-type"],
            serde_json::json!(["ECR Replication Action"])
        );
    }

    #[test]
    fn the_forwarding_pattern_takes_the_watched_sources_and_the_mode() {
        let event = forwarding_pattern(&parameters("ALL", &["us-west-2"])).expect("pattern");
        assert_eq!(
            event["detail"],
            serde_json::json!({
                "source-account": ["111111111111"],
                "source-region": ["us-west-2"],
                "result": [{"exists": true}]
            })
        );
        let lean = forwarding_pattern(&parameters("FAILED", &[])).expect("pattern");
        assert_eq!(lean["detail"]["result"], serde_json::json!(["FAILED"]));
        assert_eq!(
            lean["detail"]["source-region"],
            serde_json::json!([{"exists": true}])
        );
        assert_eq!(
            lean["detail-type"],
            serde_json::json!(["ECR Replication Action"])
        );
    }
}
