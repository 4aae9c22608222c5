//! The stacks' templates as the test bed deploys them: what a resource of `infra/*.yaml` says
//! for given parameters, read from the template itself so that the local deployment runs the
//! shipped pattern, not a copy of it.
//!
//! Resolves the intrinsic functions these values use (`Ref` of a parameter, `Fn::If` on a
//! condition, and in conditions `Fn::Equals`, `Fn::Not`, `Fn::Join`), as CloudFormation
//! would; anything else is an error, so a template change the test bed cannot follow fails
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
    let stack = Stack::new(&template, parameters)?;
    let pattern = &template["Resources"]["ForwardReplicationActions"]["Properties"]["EventPattern"];
    stack.resolve(pattern)
}

fn read(path: &str) -> Result<Yaml, Error> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    let text = std::fs::read_to_string(&full).map_err(|e| format!("{}: {e}", full.display()))?;
    Ok(serde_norway::from_str(&text)?)
}

struct Stack<'t> {
    template: &'t Yaml,
    parameters: HashMap<String, Json>,
}

impl<'t> Stack<'t> {
    fn new(template: &'t Yaml, given: &Parameters) -> Result<Self, Error> {
        let mut parameters = HashMap::new();
        let declared = template["Parameters"]
            .as_mapping()
            .ok_or("template without Parameters")?;
        for (name, declaration) in declared {
            let name = name.as_str().ok_or("parameter name")?;
            let list = declaration["Type"].as_str() == Some("CommaDelimitedList");
            let value = match given.get(name) {
                Some(value) => value.clone(),
                None => {
                    let default = declaration["Default"]
                        .as_str()
                        .ok_or_else(|| format!("parameter {name} has no value and no default"))?;
                    if list {
                        let items: Vec<Json> = default
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(|s| Json::String(s.to_owned()))
                            .collect();
                        Json::Array(items)
                    } else {
                        Json::String(default.to_owned())
                    }
                }
            };
            parameters.insert(name.to_owned(), value);
        }
        Ok(Self {
            template,
            parameters,
        })
    }

    fn condition(&self, name: &str) -> Result<bool, Error> {
        let expression = &self.template["Conditions"][name];
        match self.resolve(expression)? {
            Json::Bool(b) => Ok(b),
            other => Err(format!("condition {name} is {other}").into()),
        }
    }

    fn resolve(&self, value: &Yaml) -> Result<Json, Error> {
        Ok(match value {
            Yaml::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                let function = tag.trim_start_matches('!');
                self.function(function, &tagged.value)?
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
                    out.insert(key.to_owned(), self.resolve(v)?);
                }
                Json::Object(out)
            }
            Yaml::Sequence(items) => Json::Array(
                items
                    .iter()
                    .map(|i| self.resolve(i))
                    .collect::<Result<_, _>>()?,
            ),
            Yaml::String(s) => Json::String(s.clone()),
            Yaml::Bool(b) => Json::Bool(*b),
            Yaml::Number(n) => serde_json::to_value(n)?,
            Yaml::Null => Json::Null,
        })
    }

    fn function(&self, name: &str, argument: &Yaml) -> Result<Json, Error> {
        let arguments = || argument.as_sequence().ok_or(format!("{name}: not a list"));
        match name {
            "Ref" => {
                let parameter = argument.as_str().ok_or("Ref of a non-string")?;
                self.parameters
                    .get(parameter)
                    .cloned()
                    .ok_or_else(|| format!("Ref {parameter}: not a parameter").into())
            }
            "If" => {
                let [condition, then, otherwise] = arguments()?.as_slice() else {
                    return Err("If takes three arguments".into());
                };
                let condition = condition.as_str().ok_or("If: condition name")?;
                if self.condition(condition)? {
                    self.resolve(then)
                } else {
                    self.resolve(otherwise)
                }
            }
            "Equals" => {
                let [a, b] = arguments()?.as_slice() else {
                    return Err("Equals takes two arguments".into());
                };
                Ok(Json::Bool(self.resolve(a)? == self.resolve(b)?))
            }
            "Not" => {
                let [inner] = arguments()?.as_slice() else {
                    return Err("Not takes one argument".into());
                };
                match self.resolve(inner)? {
                    Json::Bool(b) => Ok(Json::Bool(!b)),
                    other => Err(format!("Not of {other}").into()),
                }
            }
            "Join" => {
                let [separator, list] = arguments()?.as_slice() else {
                    return Err("Join takes two arguments".into());
                };
                let separator = separator.as_str().ok_or("Join: separator")?;
                let Json::Array(items) = self.resolve(list)? else {
                    return Err("Join of a non-list".into());
                };
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned).ok_or("Join of a non-string"))
                    .collect::<Result<_, _>>()?;
                Ok(Json::String(parts.join(separator)))
            }
            other => {
                Err(format!("intrinsic function {other} is not resolved by the test bed").into())
            }
        }
    }
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
