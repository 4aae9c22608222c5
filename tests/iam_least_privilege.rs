//! Least privilege, checked: for each function of `template.yaml`, the AWS operations its code
//! can call must be exactly the actions its role grants, beyond what the Lambda service itself
//! needs (logs, polling its SQS event source, its on-failure destination) and what a granted
//! call needs on the service side (KMS on the alert topic's key for `sns:Publish`, on the
//! repositories' keys for `ecr:CreateRepository`).
//!
//! What the code calls is read from the source, not declared by hand:
//! 1. a function's `main.rs` names the builders of `replwatch_runtime::services` it calls;
//! 2. each builder's body names the adapters of `replwatch-aws` it constructs;
//! 3. an adapter module calls SDK operations as `.operation_name()` on a client of the
//!    `aws_sdk_*` crates it imports; an operation name is one of the crate's own operations
//!    (read from the crate's `src/operation/` through `cargo metadata`, so the list is the
//!    SDK's, at the locked version); an `AssumeRoleProvider` is `sts:AssumeRole`; modules an
//!    adapter uses (`crate::x`) are followed.
//!
//! Granularity is the adapter module: a function that constructs an adapter may call every
//! operation of it. Code that only tests and the local runner call (creating the table) lives
//! in modules no builder reaches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The source of a module without its `#[cfg(test)]` part (tests sit at the end of a module).
fn production_source(path: &Path) -> String {
    let text = read(path);
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// `describe_images` -> `DescribeImages`.
fn pascal_case(snake: &str) -> String {
    snake
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The IAM actions that authorize one SDK operation. Most are the operation's name; batch
/// sends are authorized by the single-message action, and a DynamoDB transaction by the
/// actions of the writes it holds (`Put::builder()` -> `dynamodb:PutItem`).
fn iam_actions(service: &str, operation: &str, module_text: &str) -> Vec<String> {
    match (service, operation) {
        ("sqs", "send_message_batch") => vec!["sqs:SendMessage".to_owned()],
        ("sqs", "delete_message_batch") => vec!["sqs:DeleteMessage".to_owned()],
        ("dynamodb", "transact_write_items") => [
            ("Put", "PutItem"),
            ("Update", "UpdateItem"),
            ("Delete", "DeleteItem"),
            ("ConditionCheck", "ConditionCheckItem"),
        ]
        .into_iter()
        .filter(|(write, _)| module_text.contains(&format!("{write}::builder()")))
        .map(|(_, action)| format!("dynamodb:{action}"))
        .collect(),
        _ => vec![format!("{service}:{}", pascal_case(operation))],
    }
}

/// The operations of every `aws-sdk-*` crate in the workspace, by IAM service prefix.
fn sdk_operations() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let mut operations = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().unwrap_or_default();
        let Some(service) = name.strip_prefix("aws-sdk-") else {
            continue;
        };
        let manifest = PathBuf::from(package["manifest_path"].as_str().expect("manifest path"));
        let operation_dir = manifest.parent().expect("crate dir").join("src/operation");
        let names: BTreeSet<String> = std::fs::read_dir(&operation_dir)
            .unwrap_or_else(|e| panic!("{}: {e}", operation_dir.display()))
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
            .collect();
        assert!(!names.is_empty(), "{name} has no operations?");
        operations.insert(service.to_owned(), names);
    }
    operations
}

/// Whether `text` calls `.name(` (a method call, not a longer identifier).
fn calls_method(text: &str, name: &str) -> bool {
    let needle = format!(".{name}(");
    text.match_indices(&needle).next().is_some()
}

/// The identifiers that follow `prefix` in `text` (`crate::` -> module names).
fn paths_after<'a>(text: &'a str, prefix: &str) -> BTreeSet<&'a str> {
    text.match_indices(prefix)
        .filter_map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (end > 0).then(|| &rest[..end])
        })
        .collect()
}

struct AdapterCrate {
    src: PathBuf,
    operations: BTreeMap<String, BTreeSet<String>>,
    /// Item name re-exported at the crate root -> module (`DynamoExpectationStore` -> `dynamodb`).
    reexports: BTreeMap<String, String>,
}

impl AdapterCrate {
    fn load() -> Self {
        let src = repo_root().join("functions/aws/src");
        let lib = production_source(&src.join("lib.rs"));
        let mut reexports = BTreeMap::new();
        for line in lib.lines().filter(|l| l.starts_with("pub use ")) {
            let path = line
                .trim_start_matches("pub use ")
                .trim_end_matches(';')
                .trim();
            if let Some((module, items)) = path.split_once("::") {
                for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
                    let item = item.trim().rsplit("::").next().unwrap_or_default();
                    if !item.is_empty() {
                        reexports.insert(item.to_owned(), module.to_owned());
                    }
                }
            }
        }
        Self {
            src,
            operations: sdk_operations(),
            reexports,
        }
    }

    /// `service:Action` for every SDK operation `module` (and what it uses) can call.
    fn actions_of_module(&self, module: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut pending = vec![module.to_owned()];
        let mut actions = BTreeSet::new();
        while let Some(module) = pending.pop() {
            if !seen.insert(module.clone()) {
                continue;
            }
            let path = self.src.join(format!("{module}.rs"));
            let text = production_source(&path);
            for service in paths_after(&text, "aws_sdk_") {
                let operations = self.operations.get(service).unwrap_or_else(|| {
                    panic!("{module}.rs uses aws_sdk_{service}: not a dependency")
                });
                for operation in operations {
                    if calls_method(&text, operation) {
                        actions.extend(iam_actions(service, operation, &text));
                    }
                }
            }
            if text.contains("AssumeRoleProvider") {
                actions.insert("sts:AssumeRole".to_owned());
            }
            for used in paths_after(&text, "crate::") {
                if self.src.join(format!("{used}.rs")).exists() {
                    pending.push(used.to_owned());
                } else if let Some(module) = self.reexports.get(used) {
                    pending.push(module.clone());
                }
            }
        }
        actions
    }
}

/// The body of `fn name` in `text`: from its signature to the matching closing brace.
fn function_body<'a>(text: &'a str, name: &str) -> &'a str {
    let signature = [format!("fn {name}("), format!("fn {name}<")]
        .into_iter()
        .find_map(|s| text.find(&s))
        .unwrap_or_else(|| panic!("no fn {name}"));
    let open = signature + text[signature..].find('{').expect("fn body");
    let mut depth = 0usize;
    for (offset, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &text[signature..open + offset + 1];
                }
            }
            _ => {}
        }
    }
    panic!("fn {name}: unbalanced braces")
}

/// The adapter modules a function's builders construct.
fn adapter_modules_of_function(binary: &str, adapters: &AdapterCrate) -> BTreeSet<String> {
    let main = production_source(&repo_root().join(format!("functions/{binary}/src/main.rs")));
    let services = production_source(&repo_root().join("functions/runtime/src/services.rs"));
    // `use replwatch_aws::cloudwatch::CloudWatchGauges;` -> CloudWatchGauges is in cloudwatch.
    let mut module_of_item: BTreeMap<String, String> = adapters.reexports.clone();
    for line in services
        .lines()
        .filter(|l| l.starts_with("use replwatch_aws::"))
    {
        let path = line
            .trim_start_matches("use replwatch_aws::")
            .trim_end_matches(';');
        if let Some((module, items)) = path.split_once("::") {
            for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
                module_of_item.insert(item.trim().to_owned(), module.to_owned());
            }
        }
    }
    // A builder's own helpers in services.rs (`delivery(sdk, settings)`) count as its body.
    let local_fns: BTreeSet<&str> = paths_after(&services, "fn ");
    let mut bodies: Vec<&str> = Vec::new();
    let mut pending: Vec<&str> = paths_after(&main, "services::").into_iter().collect();
    let mut seen = BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name) {
            continue;
        }
        let body = function_body(&services, name);
        for called in &local_fns {
            if *called != name && body.contains(&format!("{called}(")) {
                pending.push(called);
            }
        }
        bodies.push(body);
    }
    let mut modules = BTreeSet::new();
    for body in bodies {
        for (item, module) in &module_of_item {
            if body.contains(item.as_str()) {
                modules.insert(module.clone());
            }
        }
    }
    // main.rs may use an adapter directly too.
    for module in paths_after(&main, "replwatch_aws::") {
        modules.insert(
            adapters
                .reexports
                .get(module)
                .cloned()
                .unwrap_or(module.to_owned()),
        );
    }
    modules
}

fn code_actions(binary: &str, adapters: &AdapterCrate) -> BTreeSet<String> {
    adapter_modules_of_function(binary, adapters)
        .iter()
        .flat_map(|module| adapters.actions_of_module(module))
        .collect()
}

// ------------------------------------------------------------------------- the template

fn template() -> Value {
    serde_norway::from_str(&read(&repo_root().join("template.yaml"))).expect("template parses")
}

/// `!GetAtt X.Arn` / `!Ref X` -> `X`.
fn referenced_resource(value: &Value) -> Option<String> {
    let Value::Tagged(tagged) = value else {
        return None;
    };
    let name = tagged.value.as_str()?;
    Some(name.split('.').next().unwrap_or(name).to_owned())
}

/// The statements of a policy document, with `!If [condition, statement, AWS::NoValue]`
/// taken as granted (the condition only depends on parameters).
fn statements(document: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for statement in document["Statement"].as_sequence().into_iter().flatten() {
        match statement {
            Value::Tagged(tagged) if tagged.tag == "If" => {
                if let Some(branches) = tagged.value.as_sequence() {
                    out.extend(branches.iter().skip(1).filter(|b| b.is_mapping()).cloned());
                }
            }
            other => out.push(other.clone()),
        }
    }
    out
}

fn as_strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items.iter().flat_map(as_strings).collect(),
        _ => Vec::new(),
    }
}

fn resources_named(statement: &Value) -> BTreeSet<String> {
    let resource = &statement["Resource"];
    let items: Vec<&Value> = match resource {
        Value::Sequence(items) => items.iter().collect(),
        other => vec![other],
    };
    items.into_iter().filter_map(referenced_resource).collect()
}

struct FunctionGrants {
    /// Granted for the code, statement by statement.
    for_code: BTreeSet<String>,
    /// KMS actions granted on the alert topic's key.
    topic_key: BTreeSet<String>,
    /// KMS actions on the Slack webhook's key (`SlackWebhookKeyArn`), which Secrets Manager or
    /// SSM use on the function's behalf when it reads the webhook.
    slack_key: BTreeSet<String>,
    /// KMS actions on the keys of the repositories it creates (`RepositoryKmsKeyArns`), which
    /// ECR uses on the function's behalf when `CreateRepository` encrypts with a customer
    /// managed key (Amazon ECR User Guide, "Encryption at rest": the creator needs
    /// `kms:CreateGrant`, `kms:RetireGrant` and `kms:DescribeKey`).
    repository_keys: BTreeSet<String>,
    /// Anything granted that is neither for the code nor for the Lambda service.
    unexplained: Vec<String>,
}

fn grants_of(template: &Value, function: &str) -> FunctionGrants {
    let resources = &template["Resources"];
    let properties = &resources[function]["Properties"];
    let role = referenced_resource(&properties["Role"])
        .unwrap_or_else(|| panic!("{function}: Role must be !GetAtt <Role>.Arn"));

    // Queues the function is fed from: its SAM SQS events and the event source mappings
    // declared on their own (those can carry a condition).
    let mut event_queues: BTreeSet<String> = properties["Events"]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter(|(_, event)| event["Type"].as_str() == Some("SQS"))
        .filter_map(|(_, event)| referenced_resource(&event["Properties"]["Queue"]))
        .collect();
    event_queues.extend(
        resources
            .as_mapping()
            .into_iter()
            .flatten()
            .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Lambda::EventSourceMapping"))
            .filter(|(_, r)| {
                referenced_resource(&r["Properties"]["FunctionName"]).as_deref() == Some(function)
            })
            .filter_map(|(_, r)| referenced_resource(&r["Properties"]["EventSourceArn"])),
    );
    let on_failure = referenced_resource(
        &properties["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]["Destination"],
    );
    let alert_key = resources["AlertTopic"]["Properties"]["KmsMasterKeyId"].clone();
    let alert_key = referenced_resource(&alert_key);

    let mut documents: Vec<Value> = resources[role.as_str()]["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|policy| policy["PolicyDocument"].clone())
        .collect();
    for (name, resource) in resources.as_mapping().into_iter().flatten() {
        if resource["Type"].as_str() != Some("AWS::IAM::ManagedPolicy") {
            continue;
        }
        let attached = resource["Properties"]["Roles"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(referenced_resource)
            .any(|r| r == role);
        if attached {
            documents.push(resource["Properties"]["PolicyDocument"].clone());
        }
        let _ = name;
    }

    let mut grants = FunctionGrants {
        for_code: BTreeSet::new(),
        topic_key: BTreeSet::new(),
        slack_key: BTreeSet::new(),
        repository_keys: BTreeSet::new(),
        unexplained: Vec::new(),
    };
    const POLL: [&str; 4] = [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
    ];
    for document in &documents {
        for statement in statements(document) {
            // A Deny narrows what is granted and grants nothing (the template tests check each).
            if statement["Effect"].as_str() == Some("Deny") {
                continue;
            }
            assert_eq!(
                statement["Effect"].as_str(),
                Some("Allow"),
                "{function}: only Allow and Deny statements are expected"
            );
            let actions = as_strings(&statement["Action"]);
            let on = resources_named(&statement);
            for action in actions {
                assert!(
                    !action.contains('*'),
                    "{function}: wildcard action {action}"
                );
                let lambda_service = action.starts_with("logs:")
                    || (POLL.contains(&action.as_str())
                        && on.iter().all(|r| event_queues.contains(r))
                        && !on.is_empty())
                    || (action == "sqs:SendMessage"
                        && on_failure
                            .as_ref()
                            .is_some_and(|q| on.len() == 1 && on.contains(q)));
                if lambda_service {
                    continue;
                }
                if action.starts_with("kms:") {
                    if alert_key
                        .as_ref()
                        .is_some_and(|k| on.len() == 1 && on.contains(k))
                    {
                        grants.topic_key.insert(action);
                    } else if on.len() == 1 && on.contains("SlackWebhookKeyArn") {
                        grants.slack_key.insert(action);
                    } else if on.len() == 1 && on.contains("RepositoryKmsKeyArns") {
                        grants.repository_keys.insert(action);
                    } else {
                        grants.unexplained.push(action);
                    }
                    continue;
                }
                grants.for_code.insert(action);
            }
        }
    }
    grants
}

/// (logical id, binary) of every function in the template.
fn functions(template: &Value) -> Vec<(String, String)> {
    template["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(name, r)| {
            let binary = r["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap_or_else(|| panic!("{name:?}: Metadata.BuildProperties.Binary"));
            (
                name.as_str().expect("logical id").to_owned(),
                binary.to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_function_is_granted_exactly_what_its_code_calls() {
    let adapters = AdapterCrate::load();
    let template = template();
    let functions = functions(&template);
    assert!(functions.len() >= 3, "functions found: {functions:?}");
    let mut problems = Vec::new();
    for (function, binary) in &functions {
        let needed = code_actions(binary, &adapters);
        let grants = grants_of(&template, function);
        for missing in needed.difference(&grants.for_code) {
            problems.push(format!(
                "{function} ({binary}): code calls {missing}, not granted"
            ));
        }
        for unused in grants.for_code.difference(&needed) {
            problems.push(format!(
                "{function} ({binary}): grants {unused}, no code calls it"
            ));
        }
        let publishes = needed.contains("sns:Publish");
        let key_actions: BTreeSet<String> = ["kms:GenerateDataKey", "kms:Decrypt"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        if publishes && grants.topic_key != key_actions {
            problems.push(format!(
                "{function}: publishes to the KMS-encrypted topic but the key grants are {:?}",
                grants.topic_key
            ));
        }
        if !publishes && !grants.topic_key.is_empty() {
            problems.push(format!(
                "{function}: KMS on the topic key without sns:Publish"
            ));
        }
        let reads_webhook =
            needed.contains("secretsmanager:GetSecretValue") || needed.contains("ssm:GetParameter");
        if !grants.slack_key.is_empty() && !reads_webhook {
            problems.push(format!(
                "{function}: KMS on the Slack webhook's key without reading the webhook"
            ));
        }
        if reads_webhook && grants.slack_key != BTreeSet::from(["kms:Decrypt".to_owned()]) {
            problems.push(format!(
                "{function}: reads the Slack webhook but its key grants are {:?}",
                grants.slack_key
            ));
        }
        let creates_repositories = needed.contains("ecr:CreateRepository");
        let repository_key_actions: BTreeSet<String> =
            ["kms:CreateGrant", "kms:RetireGrant", "kms:DescribeKey"]
                .into_iter()
                .map(str::to_owned)
                .collect();
        if creates_repositories && grants.repository_keys != repository_key_actions {
            problems.push(format!(
                "{function}: creates repositories but its grants on their keys are {:?}",
                grants.repository_keys
            ));
        }
        if !creates_repositories && !grants.repository_keys.is_empty() {
            problems.push(format!(
                "{function}: KMS on the repositories' keys without ecr:CreateRepository"
            ));
        }
        for action in &grants.unexplained {
            problems.push(format!("{function}: {action} granted for no reason found"));
        }
    }
    assert!(problems.is_empty(), "IAM drift:\n{}", problems.join("\n"));
}

#[test]
fn the_scan_sees_what_each_adapter_calls() {
    // The scanner itself, on modules whose calls are known: if it stopped seeing calls, the
    // test above would pass vacuously on an empty set.
    let adapters = AdapterCrate::load();
    let ecr = adapters.actions_of_module("ecr");
    for action in [
        "ecr:DescribeImages",
        "ecr:DescribeImageReplicationStatus",
        "ecr:DescribeRegistry",
        "sts:AssumeRole",
    ] {
        assert!(ecr.contains(action), "ecr.rs: {action} not seen in {ecr:?}");
    }
    assert_eq!(
        adapters.actions_of_module("cloudwatch"),
        BTreeSet::from(["cloudwatch:PutMetricData".to_owned()])
    );
    let provisioning = adapters.actions_of_module("provisioning");
    assert!(
        provisioning.contains("dynamodb:CreateTable"),
        "{provisioning:?}"
    );
    let sweep = adapter_modules_of_function("sweep", &adapters);
    assert!(
        sweep.contains("cloudwatch") && !sweep.contains("dead_letter"),
        "{sweep:?}"
    );
    assert!(!sweep.contains("provisioning"), "{sweep:?}");
}
