//! A client of the local AWS test bed (`infra/local-aws/`), for end-to-end tests and local
//! runs: SDK clients per account and Region, images pushed the way `docker push` does it
//! (blobs through the layer-upload API, then the manifest), EventBridge rules delivering to
//! SQS queues, and the test bed's own control endpoint (replication delays, failures, flush).
//!
//! Account selection: the test bed reads a 12-digit access key id as "this account's own
//! credentials" (see `infra/local-aws/README.md`); reads in another account go through STS
//! `AssumeRole`, as replwatch does on AWS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecr::config::Credentials;
use aws_sdk_ecr::primitives::Blob;
use aws_sdk_ecr::types::{
    ReplicationConfiguration, ReplicationDestination, ReplicationRule, RepositoryFilter,
    RepositoryFilterType, SubjectIdentifier,
};
use aws_sdk_eventbridge::types::Target;
use replwatch_core::EcrEvent;
use replwatch_core::events::{ParsedEvent, parse_event};
use sha2::{Digest as _, Sha256};

pub mod bench;
pub mod deployment;
pub mod scenario;
pub mod slack_capture;
pub mod stack_templates;

pub use deployment::LocalDeployment;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// How long a control or IAM request to the test bed may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a replication flush may take (it answers once every job ran).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1800);

/// The local AWS at one endpoint.
#[derive(Debug, Clone)]
pub struct LocalAws {
    endpoint: String,
}

/// A role trust policy that lets any principal of `account` assume the role: what a test gives
/// a role whose trust is not under test (the central functions' roles, a partner's reader
/// role trusting someone else).
pub fn trusting_account(account: &str) -> String {
    serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": account}, "Action": "sts:AssumeRole"}]})
    .to_string()
}

/// A fresh twelve-digit account id, distinct for every call in this process and across
/// processes, so tests that share one test bed never share a registry (replication
/// configurations are per registry).
pub fn unique_account() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = u64::from(std::process::id()) % 100_000;
    format!("{:012}", 300_000_000_000 + pid * 10_000 + n)
}

/// A pushed image: what a test needs to find it again.
#[derive(Debug, Clone)]
pub struct PushedImage {
    pub repository: String,
    pub digest: String,
    pub tag: Option<String>,
    pub manifest: String,
    pub media_type: String,
    /// (digest, bytes) of every blob the manifest references.
    pub blobs: Vec<(String, Vec<u8>)>,
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl LocalAws {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into().trim_end_matches('/').to_owned(),
        }
    }

    /// The test bed named by `AWS_ENDPOINT_URL`, as `infra/local-aws/start` prints it.
    pub fn from_env() -> Result<Self, Error> {
        Ok(Self::new(replwatch_aws::local::endpoint_from_env()?))
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The test bed `AWS_ENDPOINT_URL` names, else the one `infra/local-aws/start` starts (or
    /// finds running): what the local runner and the benchmarks use.
    pub fn connect_or_start() -> Result<Self, Error> {
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
            return Ok(Self::new(endpoint));
        }
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/local-aws/start");
        println!(
            "starting the local AWS ({}; the first run installs it from PyPI, about a minute)",
            script.display()
        );
        let output = std::process::Command::new(&script)
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} failed:\n{}",
                script.display(),
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let endpoint = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export AWS_ENDPOINT_URL="))
            .ok_or("the start script printed no endpoint")?;
        Ok(Self::new(endpoint.trim()))
    }

    /// SDK configuration acting as `account`'s own credentials in `region`.
    pub async fn config(&self, account: &str, region: &str) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(region.to_owned()))
            .credentials_provider(Credentials::new(
                account,
                "local-secret",
                None,
                None,
                "local-aws",
            ))
            .load()
            .await
    }

    /// SDK configuration in `region` with credentials from STS `AssumeRole` on `role_arn`,
    /// called as `caller_account`: how replwatch reads a destination in another account.
    pub async fn assumed(
        &self,
        caller_account: &str,
        role_arn: &str,
        region: &str,
    ) -> Result<SdkConfig, Error> {
        let sts = aws_sdk_sts::Client::new(&self.config(caller_account, region).await);
        let output = sts
            .assume_role()
            .role_arn(role_arn)
            .role_session_name("replwatch-test")
            .send()
            .await?;
        let c = output
            .credentials()
            .ok_or("AssumeRole returned no credentials")?;
        Ok(aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(region.to_owned()))
            .credentials_provider(Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_owned()),
                None,
                "assumed-role",
            ))
            .load()
            .await)
    }

    pub async fn ecr(&self, account: &str, region: &str) -> aws_sdk_ecr::Client {
        aws_sdk_ecr::Client::new(&self.config(account, region).await)
    }

    /// Sets the registry's replication rules (`PutReplicationConfiguration`).
    pub async fn put_replication_configuration(
        &self,
        account: &str,
        region: &str,
        rules: &replwatch_core::ReplicationConfiguration,
    ) -> Result<(), Error> {
        let mut configuration = ReplicationConfiguration::builder();
        for rule in &rules.rules {
            let mut built = ReplicationRule::builder();
            for d in &rule.destinations {
                built = built.destinations(
                    ReplicationDestination::builder()
                        .region(d.region.as_str())
                        .registry_id(d.registry_id.as_str())
                        .build()?,
                );
            }
            for f in &rule.repository_filters {
                built = built.repository_filters(
                    RepositoryFilter::builder()
                        .filter(&f.filter)
                        .filter_type(RepositoryFilterType::from(f.filter_type.as_str()))
                        .build()?,
                );
            }
            configuration = configuration.rules(built.build()?);
        }
        self.ecr(account, region)
            .await
            .put_replication_configuration()
            .replication_configuration(configuration.build()?)
            .send()
            .await?;
        Ok(())
    }

    /// Lets `source_account` replicate into `dest_account`'s registry in `region`: the registry
    /// permissions policy a user must set in the destination for cross-account replication
    /// (ECR User Guide, "Granting registry permissions for cross account replication":
    /// `ecr:ReplicateImage`, and `ecr:CreateRepository` for the repositories it does not have
    /// yet, for the source account's root). Statements already in the policy stay; the test bed
    /// refuses a cross-account replication without it, as ECR does.
    pub async fn allow_replication_from(
        &self,
        dest_account: &str,
        region: &str,
        source_account: &str,
    ) -> Result<(), Error> {
        use aws_sdk_ecr::error::ProvideErrorMetadata as _;

        let ecr = self.ecr(dest_account, region).await;
        let mut policy = match ecr.get_registry_policy().send().await {
            Ok(current) => serde_json::from_str(current.policy_text().unwrap_or("{}"))?,
            Err(e) if e.code() == Some("RegistryPolicyNotFoundException") => {
                serde_json::json!({"Version": "2012-10-17"})
            }
            Err(e) => return Err(e.into()),
        };
        let mut statements = match policy["Statement"].take() {
            serde_json::Value::Array(statements) => statements,
            serde_json::Value::Null => Vec::new(),
            statement => vec![statement],
        };
        let sid = format!("ReplicationFrom{source_account}");
        if statements.iter().any(|s| s["Sid"] == sid.as_str()) {
            return Ok(());
        }
        statements.push(serde_json::json!({
            "Sid": sid,
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{source_account}:root")},
            "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
            "Resource": format!("arn:aws:ecr:{region}:{dest_account}:repository/*")
        }));
        policy["Statement"] = serde_json::Value::Array(statements);
        ecr.put_registry_policy()
            .policy_text(policy.to_string())
            .send()
            .await?;
        Ok(())
    }

    /// Sets the access policy of the SQS queue `queue_url` (its `Policy` attribute).
    pub async fn set_queue_policy(
        &self,
        account: &str,
        region: &str,
        queue_url: &str,
        policy: &serde_json::Value,
    ) -> Result<(), Error> {
        aws_sdk_sqs::Client::new(&self.config(account, region).await)
            .set_queue_attributes()
            .queue_url(queue_url)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::Policy,
                policy.to_string(),
            )
            .send()
            .await?;
        Ok(())
    }

    /// Uploads `bytes` as a blob of `repository` the way a registry client does: in parts of
    /// ECR's largest part size, 10 MiB.
    pub async fn upload_blob(
        &self,
        ecr: &aws_sdk_ecr::Client,
        repository: &str,
        bytes: &[u8],
    ) -> Result<String, Error> {
        const PART: usize = 10 * 1024 * 1024;
        let digest = sha256_digest(bytes);
        let upload = ecr
            .initiate_layer_upload()
            .repository_name(repository)
            .send()
            .await?;
        let upload_id = upload.upload_id().ok_or("no upload id")?;
        let mut offset = 0usize;
        // An empty blob is one empty part.
        let parts: Vec<&[u8]> = if bytes.is_empty() {
            vec![bytes]
        } else {
            bytes.chunks(PART).collect()
        };
        for part in parts {
            ecr.upload_layer_part()
                .repository_name(repository)
                .upload_id(upload_id)
                .part_first_byte(offset as i64)
                .part_last_byte((offset + part.len()).saturating_sub(1) as i64)
                .layer_part_blob(Blob::new(part.to_vec()))
                .send()
                .await?;
            offset += part.len();
        }
        ecr.complete_layer_upload()
            .repository_name(repository)
            .upload_id(upload_id)
            .layer_digests(&digest)
            .send()
            .await?;
        Ok(digest)
    }

    /// Pushes a single-architecture image whose content is derived from `seed` (so distinct
    /// seeds give distinct digests): a config blob, one layer, an OCI manifest.
    pub async fn push_image(
        &self,
        account: &str,
        region: &str,
        repository: &str,
        tag: Option<&str>,
        seed: &str,
    ) -> Result<PushedImage, Error> {
        let ecr = self.ecr(account, region).await;
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Labels": {"seed": seed}},
            "rootfs": {"type": "layers", "diff_ids": []}
        })
        .to_string()
        .into_bytes();
        let layer: Vec<u8> = format!("layer for {seed}\n").repeat(64).into_bytes();
        let config_digest = self.upload_blob(&ecr, repository, &config).await?;
        let layer_digest = self.upload_blob(&ecr, repository, &layer).await?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}]
        })
        .to_string();
        let mut put = ecr
            .put_image()
            .repository_name(repository)
            .image_manifest(&manifest)
            .image_manifest_media_type(MANIFEST_MEDIA_TYPE);
        if let Some(tag) = tag {
            put = put.image_tag(tag);
        }
        let output = put.send().await?;
        let digest = output
            .image()
            .and_then(|i| i.image_id())
            .and_then(|i| i.image_digest())
            .ok_or("PutImage returned no digest")?
            .to_owned();
        Ok(PushedImage {
            repository: repository.to_owned(),
            digest,
            tag: tag.map(str::to_owned),
            manifest,
            media_type: MANIFEST_MEDIA_TYPE.to_owned(),
            blobs: vec![(config_digest, config), (layer_digest, layer)],
        })
    }

    /// Pushes an OCI index of `children` (images already in `repository`, given as amd64 then
    /// arm64) tagged `tag`; returns its manifest and digest.
    pub async fn push_index(
        &self,
        account: &str,
        region: &str,
        repository: &str,
        tag: &str,
        children: &[&PushedImage],
    ) -> Result<(String, String), Error> {
        let manifests: Vec<serde_json::Value> = children
            .iter()
            .zip(["amd64", "arm64"].iter().cycle())
            .map(|(child, architecture)| {
                serde_json::json!({
                    "mediaType": child.media_type, "digest": child.digest,
                    "size": child.manifest.len(),
                    "platform": {"os": "linux", "architecture": architecture}
                })
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests
        })
        .to_string();
        let digest = sha256_digest(manifest.as_bytes());
        self.ecr(account, region)
            .await
            .put_image()
            .repository_name(repository)
            .image_manifest(&manifest)
            .image_manifest_media_type(INDEX_MEDIA_TYPE)
            .image_tag(tag)
            .send()
            .await?;
        Ok((manifest, digest))
    }

    /// Pushes an OCI 1.1 referrer of `subject` (digest, media type) in `repository`: an
    /// artifact manifest with `artifact_type`, an empty config, `content` as its one layer, and
    /// `subject` (a Notation or cosign signature, an SBOM, an attestation). Returns its digest.
    pub async fn push_referrer(
        &self,
        account: &str,
        region: &str,
        repository: &str,
        subject: (&str, &str),
        artifact_type: &str,
        content: &[u8],
    ) -> Result<String, Error> {
        let ecr = self.ecr(account, region).await;
        let mut digests = Vec::new();
        for blob in [&b"{}"[..], content] {
            let digest = sha256_digest(blob);
            let known = ecr
                .batch_check_layer_availability()
                .repository_name(repository)
                .layer_digests(&digest)
                .send()
                .await?;
            let there = known
                .layers()
                .iter()
                .any(|l| l.layer_availability().map(|a| a.as_str()) == Some("AVAILABLE"));
            if !there {
                self.upload_blob(&ecr, repository, blob).await?;
            }
            digests.push(digest);
        }
        let (subject_digest, subject_media_type) = subject;
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digests[0], "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": digests[1], "size": content.len()}],
            "subject": {"mediaType": subject_media_type, "digest": subject_digest, "size": 400}
        })
        .to_string();
        let digest = sha256_digest(manifest.as_bytes());
        ecr.put_image()
            .repository_name(repository)
            .image_manifest(&manifest)
            .image_manifest_media_type(MANIFEST_MEDIA_TYPE)
            .image_digest(&digest)
            .send()
            .await?;
        Ok(digest)
    }

    /// The digests `ListImageReferrers` gives for `subject` in `repository`, sorted.
    pub async fn referrers(
        &self,
        account: &str,
        region: &str,
        repository: &str,
        subject: &str,
    ) -> Result<Vec<String>, Error> {
        let listed = self
            .ecr(account, region)
            .await
            .list_image_referrers()
            .repository_name(repository)
            .subject_id(SubjectIdentifier::builder().image_digest(subject).build()?)
            .send()
            .await?;
        let mut digests: Vec<String> = listed
            .referrers()
            .iter()
            .map(|r| r.digest().to_owned())
            .collect();
        digests.sort();
        Ok(digests)
    }

    /// Creates the standard SQS queue `name` in `account`/`region` (or finds it, as SQS does
    /// for the same name and attributes); returns its URL.
    pub async fn create_queue(
        &self,
        account: &str,
        region: &str,
        name: &str,
    ) -> Result<String, Error> {
        Ok(
            aws_sdk_sqs::Client::new(&self.config(account, region).await)
                .create_queue()
                .queue_name(name)
                .send()
                .await?
                .queue_url()
                .ok_or("no queue url")?
                .to_owned(),
        )
    }

    /// Creates an SQS queue in `account`/`region` and an EventBridge rule on that account's
    /// default bus delivering events of `detail_type` from aws.ecr to it, with the queue policy
    /// that lets the rule deliver (EventBridge User Guide, "Using resource-based policies for
    /// Amazon EventBridge": EventBridge sends to a queue only as its policy allows). Returns the
    /// queue URL.
    pub async fn event_queue(
        &self,
        account: &str,
        region: &str,
        name: &str,
        detail_type: &str,
    ) -> Result<String, Error> {
        let url = self.create_queue(account, region, name).await?;
        let events = aws_sdk_eventbridge::Client::new(&self.config(account, region).await);
        let pattern = serde_json::json!({"source": ["aws.ecr"], "detail-type": [detail_type]});
        let rule_arn = events
            .put_rule()
            .name(name)
            .event_pattern(pattern.to_string())
            .send()
            .await?
            .rule_arn()
            .ok_or("PutRule returned no rule ARN")?
            .to_owned();
        let queue_arn = format!("arn:aws:sqs:{region}:{account}:{name}");
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "EventsOfTheRule",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}
            }]
        });
        self.set_queue_policy(account, region, &url, &policy)
            .await?;
        events
            .put_targets()
            .rule(name)
            .targets(Target::builder().id("queue").arn(queue_arn).build()?)
            .send()
            .await?;
        Ok(url)
    }

    /// Receives and deletes messages from `queue_url` until `count` events have been parsed
    /// or `timeout` passes; returns the parsed events (skipped ones too).
    pub async fn receive_events(
        &self,
        account: &str,
        region: &str,
        queue_url: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<EcrEvent>, Error> {
        let sqs = aws_sdk_sqs::Client::new(&self.config(account, region).await);
        let started = Instant::now();
        let mut events = Vec::new();
        while events.len() < count && started.elapsed() < timeout {
            let output = sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await?;
            for message in output.messages() {
                let body = message.body().ok_or("message without body")?;
                match parse_event(body.as_bytes())? {
                    ParsedEvent::Handled(event) => events.push(event),
                    ParsedEvent::Skipped(skipped) => {
                        return Err(format!("unexpected event: {skipped:?}").into());
                    }
                }
                if let Some(handle) = message.receipt_handle() {
                    sqs.delete_message()
                        .queue_url(queue_url)
                        .receipt_handle(handle)
                        .send()
                        .await?;
                }
            }
        }
        Ok(events)
    }

    /// Clears everything on the test bed (moto's reset, which also resets replwatch's
    /// replication settings, jobs and blobs).
    pub fn reset(&self) -> Result<(), Error> {
        self.http("POST", "/moto-api/reset", Some("{}"))?;
        Ok(())
    }

    /// Completes now every scheduled replication of images pushed in `source_account`, paused
    /// or not (the test bed's flush endpoint). Returns how many completed.
    pub fn flush_replication(&self, source_account: &str) -> Result<u64, Error> {
        let request = serde_json::json!({"source_account": source_account}).to_string();
        // The flush runs every job before it answers: tens of thousands take minutes.
        let answer = self.exchange(
            "POST",
            "/_localaws/replication/flush",
            "application/json",
            None,
            &request,
            FLUSH_TIMEOUT,
        )?;
        let body: serde_json::Value = serde_json::from_slice(&answer)?;
        body["completed"]
            .as_u64()
            .ok_or_else(|| "flush answered without a count".into())
    }

    /// Waits (up to 30 s) until every replication of `source_account` not held back by a
    /// paused destination has run.
    pub async fn settle_replication(&self, source_account: &str) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let pending = self.pending_replications(source_account)?;
            if pending.iter().all(|(_, paused)| *paused) {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("replication did not settle: {pending:?}").into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Scheduled replications of images pushed in `source_account`: (destination as
    /// `region/account`, paused).
    pub fn pending_replications(&self, source_account: &str) -> Result<Vec<(String, bool)>, Error> {
        let body: serde_json::Value =
            serde_json::from_slice(&self.http("GET", "/_localaws/replication", None)?)?;
        let prefix = format!("{source_account}/");
        Ok(body["pending"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|job| {
                job["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&prefix))
            })
            .map(|job| {
                (
                    job["destination"].as_str().unwrap_or_default().to_owned(),
                    job["paused"].as_bool().unwrap_or(false),
                )
            })
            .collect())
    }

    /// Merges replication settings (delays, failures, pauses, event loss) into the test bed.
    pub fn configure_replication(&self, settings: &serde_json::Value) -> Result<(), Error> {
        self.http(
            "POST",
            "/_localaws/replication",
            Some(&settings.to_string()),
        )?;
        Ok(())
    }

    /// GETs any URL on the test bed (for example a `GetDownloadUrlForLayer` URL).
    pub fn get(&self, url: &str) -> Result<Vec<u8>, Error> {
        let path = url
            .strip_prefix(&self.endpoint)
            .ok_or_else(|| format!("{url} is not on the local AWS at {}", self.endpoint))?;
        self.http("GET", path, None)
    }

    /// A minimal HTTP/1.1 exchange with the loopback test bed: enough for its JSON control
    /// endpoint and blob downloads, without pulling an HTTP client crate into the build.
    /// A call to one of the test bed's control endpoints (`/_localaws/faults`,
    /// `/_localaws/calls`, ...), its JSON answer parsed.
    pub fn control(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, Error> {
        let body = body.map(|b| b.to_string());
        let answer = self.http(method, path, body.as_deref())?;
        if answer.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_slice(&answer)?)
    }

    /// Creates the IAM role `name` in `account` with `trust_policy`. From then on the test bed
    /// checks trust policies when anyone assumes a role in that account (see
    /// `infra/local-aws/replwatch_localaws/trust.py`).
    pub fn create_role(&self, account: &str, name: &str, trust_policy: &str) -> Result<(), Error> {
        self.create_role_at(account, "/", name, trust_policy)
    }

    /// [`Self::create_role`] under the IAM path `path` (`/replwatch/`, ...): the role's ARN is
    /// `arn:aws:iam::<account>:role<path><name>`.
    pub fn create_role_at(
        &self,
        account: &str,
        path: &str,
        name: &str,
        trust_policy: &str,
    ) -> Result<(), Error> {
        self.iam_query(
            account,
            &format!(
                "Action=CreateRole&Version=2010-05-08&Path={}&RoleName={}&AssumeRolePolicyDocument={}",
                form_encode(path),
                form_encode(name),
                form_encode(trust_policy)
            ),
        )
    }

    /// One IAM Query request as `account`: the test build does not need the IAM SDK for it.
    fn iam_query(&self, account: &str, body: &str) -> Result<(), Error> {
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={account}/20260101/us-east-1/iam/aws4_request, \
             SignedHeaders=host, Signature=0"
        );
        self.exchange(
            "POST",
            "/",
            "application/x-www-form-urlencoded",
            Some(&authorization),
            body,
            ANSWER_TIMEOUT,
        )
        .map(|_| ())
    }

    /// Replaces the trust policy of the IAM role `name` in `account` (IAM
    /// `UpdateAssumeRolePolicy`): a role fixed, or changed, by its account's owner.
    pub fn update_role_trust(
        &self,
        account: &str,
        name: &str,
        trust_policy: &str,
    ) -> Result<(), Error> {
        self.iam_query(
            account,
            &format!(
                "Action=UpdateAssumeRolePolicy&Version=2010-05-08&RoleName={}&PolicyDocument={}",
                form_encode(name),
                form_encode(trust_policy)
            ),
        )
    }

    fn http(&self, method: &str, path: &str, body: Option<&str>) -> Result<Vec<u8>, Error> {
        self.exchange(
            method,
            path,
            "application/json",
            None,
            body.unwrap_or(""),
            ANSWER_TIMEOUT,
        )
    }

    fn exchange(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        authorization: Option<&str>,
        body: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        let authority = self
            .endpoint
            .strip_prefix("http://")
            .ok_or("the local AWS endpoint must be http://")?;
        let mut stream = TcpStream::connect(authority)?;
        stream.set_read_timeout(Some(timeout))?;
        let authorization = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {content_type}\r\n{authorization}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    format!("{method} {path}: no answer within {} s", timeout.as_secs())
                }
                _ => format!("{method} {path}: {e}"),
            })?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("malformed HTTP response")?;
        let head = String::from_utf8_lossy(&response[..split]).to_string();
        let status_ok = head
            .lines()
            .next()
            .is_some_and(|l| l.split(' ').nth(1) == Some("200"));
        let mut payload = response[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            payload = dechunk(&payload)?;
        }
        if !status_ok {
            return Err(format!(
                "{method} {path}: {head}: {}",
                String::from_utf8_lossy(&payload)
            )
            .into());
        }
        Ok(payload)
    }
}

/// `application/x-www-form-urlencoded` value encoding.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).ok_or("truncated chunk")?);
        data = data.get(size + 2..).ok_or("truncated chunk")?;
    }
}
