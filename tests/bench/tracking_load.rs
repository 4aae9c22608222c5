//! `tracking_load`: what tracking costs, counted on the local AWS through the real handlers,
//! and priced.
//!
//! ```sh
//! cargo bench -p replwatch-e2e --bench tracking_load                # 10,000 pushes, 5 destinations
//! cargo bench -p replwatch-e2e --bench tracking_load -- --pushes 2000 --destinations 3
//! cargo bench -p replwatch-e2e --bench tracking_load -- --pushes 300 --destinations 25
//! cargo bench -p replwatch-e2e --bench tracking_load -- --pushes 2000 --destinations 3 \
//!     --mode lean --ecr-latency-ms 100                                # the sweep at 100 ms
//! cargo bench -p replwatch-e2e --bench tracking_load -- --pushes 1000 --destinations 25 \
//!     --long-names --region-latency --mode event                      # the README's worst case
//! ```
//!
//! Options: `--pushes` (10,000), `--destinations` (5; 1 to 25, ECR's most unique destinations
//! in a registry's replication configuration: a count outside is brought to the nearest end),
//! `--repositories` (100), `--mode event|lean` (both when absent), `--ecr-latency-ms` (50),
//! `--long-names` (repository names and tags of ECR's maximum length, [`MAX_REPOSITORY_NAME`]
//! and [`MAX_TAG`], so items, events and metric lines are their largest), `--region-latency`
//! (each ECR call waits the modelled round trip from the central Region to the Region it
//! calls, [`ROUND_TRIP_MS`], instead of `--ecr-latency-ms`).
//!
//! Each mode (event: every replication event forwarded; lean: only failures) is one run on
//! fresh accounts of the local AWS (started if `AWS_ENDPOINT_URL` is not set; never reset):
//! the source repositories (in `us-west-2`) replicated to the destinations, the pushes (one
//! `PutImage` each), the test bed's replication, then the functions as Lambda would run them,
//! each phase metered by
//! the test bed's request meter (`/_localaws/meter`, which sizes DynamoDB items and index
//! entries by the Developer Guide's rules: the local AWS reports no consumed capacity):
//!
//! 1. the push queue through `track-push`'s batch handler;
//! 2. the replication queue through `track-replication`'s, losing 20% of the events and
//!    delivering 10% twice;
//! 3. past the deadline, the sweep until nothing is due, as invocations of at most 60 s.
//!
//! The destinations are the first `--destinations` of [`REGIONS`], one Region each, all in
//! the source account but the last, which is in a second account (with two or more). Past the
//! sixteenth they are opt-in Regions, which ECR replicates to only when both accounts opted in:
//! the bench enables them in both first (Account Management's `EnableRegion` on the test bed).
//!
//! ECR calls take a modelled 50 ms (the test bed's network model; `--ecr-latency-ms`) so that handler times
//! include the round trips that dominate them; DynamoDB and SQS answer in about a
//! millisecond here, so the billed time is a lower bound there. It then checks every verdict
//! against the truth (everything arrived, so every destination REPLICATED and no alert; any
//! other verdict is listed, and an alert a handler raises stops the run with the alerts), and
//! prints per push: DynamoDB read and write units (with the index), SQS requests, EventBridge
//! events, Lambda invocations and billed milliseconds, log bytes (the handlers' JSON log lines
//! and their metric lines, EMF, each a log event), metric calls, inter-Region bytes; then the
//! cost per million pushes at 3 and 25 destinations in both modes, from the price table below.
//! Last, one scheduled sweep with nothing due (what every minute costs, whatever the volume).
//!
//! Log bytes are counted as `PutLogEvents` sizes a batch (CloudWatch Logs API reference,
//! `PutLogEvents`: "the sum of all event messages in UTF-8, plus 26 bytes for each log
//! event"), each line a log event. Inter-Region bytes are the test bed's `transfer` meter (HTTP
//! messages of every call signed for a Region other than the central one, both ways) and the
//! forwarded replication events' JSON: AWS bills data leaving a Region for another at the
//! source Region's rate (AWS Data Exports user guide, "Understanding data transfer charges";
//! EventBridge pricing: cross-Region events may incur "additional data transfer charges");
//! TLS and TCP framing are not counted.
//!
//! What is modelled rather than counted, and why: the Lambda event source mapping's own SQS
//! calls (a `ReceiveMessage` and a `DeleteMessageBatch` per batch of ten: the bench's pump
//! deletes one message at a time), Lambda's platform log lines (`START`, `END`, `REPORT`:
//! [`PLATFORM_LOG_BYTES`] per invocation), and the billed duration (the measured handler time,
//! rounded up to the millisecond per invocation).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use replwatch_core::alerts::Alert;
use replwatch_core::store::expectations_of;
use replwatch_core::{
    AccountId, Clock, Destination, Digest, ExpectationState, OffsetClock, Region,
    ReplicationConfiguration, RepositoryName, SourceImage,
};
use replwatch_runtime::logging;
use replwatch_runtime::services::AwsTracking;
use serde_json::Value;
use testbed::deployment::{Copies, Forward, PumpReport, QueuedMessage};
use testbed::scenario::SOURCE_REGION;
use testbed::{Error, LocalAws, LocalDeployment, unique_account};

/// Lambda's own lines per invocation (`START`, `END`, `REPORT` with its metrics), as they
/// appear in CloudWatch Logs: about this many bytes.
const PLATFORM_LOG_BYTES: f64 = 330.0;
/// Messages per `ReceiveMessage` and per `DeleteMessageBatch` of an event source mapping.
const SQS_BATCH: f64 = 10.0;
/// Messages per invocation of track-push (template.yaml's `BatchSize`).
const PUSH_BATCH: usize = 100;
/// Messages per invocation of track-replication (template.yaml's `BatchSize`).
const REPLICATION_BATCH: usize = 250;
/// The memory of the functions (template.yaml): track-push and track-replication, sweep.
const TRACKING_MEMORY_GB: f64 = 0.25;
const SWEEP_MEMORY_GB: f64 = 0.5;
/// The sweep invocation's timeout (template.yaml's Globals).
const SWEEP_TIMEOUT: TimeDelta = TimeDelta::seconds(60);
/// ECR's most unique destinations in a registry's replication configuration (the test bed
/// refuses more, as ECR does).
const MAX_DESTINATIONS: usize = 25;
/// Wrong verdicts and alerts listed one by one; past that, only counted.
const LISTED: usize = 10;

/// What a cost is paid to, in the order of [`Phase::by_service`].
const SERVICES: [&str; 7] = [
    "DynamoDB",
    "EventBridge",
    "SQS",
    "Lambda",
    "CloudWatch Logs",
    "PutMetricData",
    "inter-Region transfer",
];
type Costs = [f64; 7];

/// `costs` per million of `per`, one `service $x` each, and the metric lines' share of the logs.
fn describe_costs(costs: &Costs, metric_lines: f64, per: f64) -> String {
    let million = 1e6 / per;
    let mut parts: Vec<String> = SERVICES
        .iter()
        .zip(costs)
        .map(|(name, usd)| format!("{name} ${:.3}", usd * million))
        .collect();
    parts.push(format!(
        "(of the logs, metric lines ${:.3})",
        metric_lines * million
    ));
    parts.join(", ")
}

/// A list price, where it was read, and when.
struct Price {
    what: &'static str,
    usd: f64,
    source: &'static str,
}

/// us-east-1 list prices as of 2026-12-03 (on-demand, arm64, no free tier). Re-check before
/// relying on them: the figures below scale linearly with each.
const PRICES: [Price; 9] = [
    Price {
        what: "DynamoDB on-demand, per write request unit",
        usd: 0.625e-6,
        source: "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    },
    Price {
        what: "DynamoDB on-demand, per read request unit",
        usd: 0.125e-6,
        source: "https://aws.amazon.com/dynamodb/pricing/on-demand/",
    },
    Price {
        what: "EventBridge, per event put or forwarded to another bus (64 KB)",
        usd: 1.0e-6,
        source: "https://aws.amazon.com/eventbridge/pricing/",
    },
    Price {
        what: "SQS standard, per request (64 KB)",
        usd: 0.40e-6,
        source: "https://aws.amazon.com/sqs/pricing/",
    },
    Price {
        what: "Lambda arm64, per GB-second",
        usd: 0.000_013_333_4,
        source: "https://aws.amazon.com/lambda/pricing/",
    },
    Price {
        what: "Lambda, per request",
        usd: 0.20e-6,
        source: "https://aws.amazon.com/lambda/pricing/",
    },
    Price {
        what: "CloudWatch Logs, per GB ingested",
        usd: 0.50,
        source: "https://aws.amazon.com/cloudwatch/pricing/",
    },
    Price {
        what: "CloudWatch PutMetricData, per request",
        usd: 0.01e-3,
        source: "https://aws.amazon.com/cloudwatch/pricing/",
    },
    Price {
        what: "Data transfer to another Region, per GB (from US Regions)",
        usd: 0.02,
        source: "https://aws.amazon.com/ec2/pricing/on-demand/ (Data Transfer), https://aws.amazon.com/lambda/pricing/",
    },
];

fn price(index: usize) -> f64 {
    PRICES[index].usd
}

/// CloudWatch Logs' size of a log event beyond its message (`PutLogEvents`' batch size).
const LOG_EVENT_OVERHEAD: u64 = 26;

/// What the functions log, counted instead of printed: their JSON log lines (the tracing
/// subscriber's writer) and their metric lines (EMF: the sweep's writer, the batch handlers'
/// outcomes), one log event per line.
#[derive(Clone, Default)]
struct LogCounter(Arc<LogCounts>);

#[derive(Default)]
struct LogCounts {
    /// Bytes written, newlines included.
    bytes: AtomicU64,
    /// Lines written: log events.
    lines: AtomicU64,
    /// Bytes of the metric lines among them (newlines included), and their number.
    metric_bytes: AtomicU64,
    metric_lines: AtomicU64,
}

impl LogCounter {
    fn metric_line(&self, line: &str) {
        let bytes = line.len() as u64 + 1;
        self.0.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.0.lines.fetch_add(1, Ordering::Relaxed);
        self.0.metric_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.0.metric_lines.fetch_add(1, Ordering::Relaxed);
    }

    /// What CloudWatch Logs ingests (messages without their newline, plus
    /// [`LOG_EVENT_OVERHEAD`] each): of every line, of the metric lines.
    fn ingested(&self) -> (u64, u64) {
        let ingested = |bytes: &AtomicU64, lines: &AtomicU64| {
            let lines = lines.load(Ordering::Relaxed);
            bytes.load(Ordering::Relaxed) - lines + lines * LOG_EVENT_OVERHEAD
        };
        (
            ingested(&self.0.bytes, &self.0.lines),
            ingested(&self.0.metric_bytes, &self.0.metric_lines),
        )
    }
}

impl Write for LogCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        let lines = buf.iter().filter(|b| **b == b'\n').count() as u64;
        self.0.lines.fetch_add(lines, Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What one phase cost.
#[derive(Debug, Default, Clone)]
struct Phase {
    write_units: f64,
    index_write_units: f64,
    read_units: f64,
    /// SQS requests replwatch's code made (the pump's own receives and deletes are not).
    sqs_sent: f64,
    eventbridge_deliveries: f64,
    events_forwarded: f64,
    metric_calls: f64,
    ecr_calls: f64,
    invocations: f64,
    /// Billed milliseconds times GB.
    gb_ms: f64,
    billed_ms: f64,
    /// What CloudWatch Logs ingests of the handlers' lines (without Lambda's own lines).
    log_bytes: f64,
    /// The metric lines' share of `log_bytes`.
    metric_log_bytes: f64,
    /// Bytes crossing Regions: calls signed for another Region than the central one (both
    /// ways), and forwarded events.
    inter_region_bytes: f64,
    /// Messages handed to the handlers (events with their duplicates).
    messages: f64,
    operations: BTreeMap<String, f64>,
    /// DynamoDB write units (with the index's) by operation.
    write_units_by_operation: BTreeMap<String, f64>,
}

impl Phase {
    fn from_meter(meter: &Value) -> Self {
        let number = |v: &Value| v.as_f64().unwrap_or_default();
        let mut operations = BTreeMap::new();
        for (service, ops) in meter["requests"].as_object().into_iter().flatten() {
            for (operation, n) in ops.as_object().into_iter().flatten() {
                operations.insert(format!("{service}:{operation}"), number(n));
            }
        }
        let op = |name: &str| operations.get(name).copied().unwrap_or_default();
        let ecr_calls = operations
            .iter()
            .filter(|(k, _)| k.starts_with("ecr:") && *k != "ecr:PutImage")
            .map(|(_, n)| n)
            .sum::<f64>()
            + 0.0; // an empty sum is -0.0
        let calls_to_other_regions: f64 = meter["transfer"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(_, regions)| regions.as_object().into_iter().flatten())
            .filter(|(region, _)| *region != SOURCE_REGION && *region != "unsigned")
            .map(|(_, n)| number(&n["request_bytes"]) + number(&n["response_bytes"]))
            .sum();
        let write_units_by_operation = meter["dynamodb"]["by_operation"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(operation, units)| {
                let units = number(&units["write_units"]) + number(&units["index_write_units"]);
                (operation.clone(), units)
            })
            .filter(|(_, units)| *units > 0.0)
            .collect();
        Phase {
            write_units_by_operation,
            inter_region_bytes: calls_to_other_regions
                + number(&meter["events"]["forwarded_bytes"]),
            write_units: number(&meter["dynamodb"]["write_units"]),
            index_write_units: number(&meter["dynamodb"]["index_write_units"]),
            read_units: number(&meter["dynamodb"]["read_units"]),
            sqs_sent: op("sqs:SendMessage") + op("sqs:SendMessageBatch"),
            eventbridge_deliveries: number(&meter["sqs"]["eventbridge_deliveries"]),
            events_forwarded: number(&meter["events"]["forwarded"]),
            metric_calls: op("monitoring:PutMetricData"),
            ecr_calls,
            operations,
            ..Phase::default()
        }
    }

    /// What the phase cost, in dollars, by [`SERVICES`].
    fn by_service(&self) -> Costs {
        [
            (self.write_units + self.index_write_units) * price(0) + self.read_units * price(1),
            self.events_forwarded * price(2),
            (self.sqs_sent + self.eventbridge_deliveries + 2.0 * self.messages / SQS_BATCH)
                * price(3),
            self.gb_ms / 1000.0 * price(4) + self.invocations * price(5),
            (self.log_bytes + self.invocations * PLATFORM_LOG_BYTES) / 1e9 * price(6),
            self.metric_calls * price(7),
            self.inter_region_bytes / 1e9 * price(8),
        ]
    }

    /// The metric lines' share of the CloudWatch Logs cost, in dollars.
    fn metric_lines_cost(&self) -> f64 {
        self.metric_log_bytes / 1e9 * price(6)
    }

    fn cost(&self, per: f64) -> f64 {
        self.by_service().iter().sum::<f64>() / per
    }
}

/// One mode's run, per phase.
struct Run {
    forward: Forward,
    pushes: usize,
    destinations: usize,
    /// The test bed's events: push deliveries and forwarded replication events.
    delivery: Phase,
    push: Phase,
    replication: Phase,
    sweep: Phase,
    /// One scheduled sweep once nothing was due.
    idle_tick: Phase,
    alerts: usize,
    /// The first [`LISTED`] alerts published, by subject.
    alert_subjects: Vec<String>,
    /// Every destination of a pushed image whose verdict is not REPLICATED, described.
    wrong_verdicts: Vec<String>,
}

struct Options {
    pushes: usize,
    destinations: usize,
    /// Repositories the pushes are spread over, as in a fleet.
    repositories: usize,
    lean: bool,
    event: bool,
    /// The modelled ECR round trip.
    ecr_latency_ms: usize,
    /// Repository names and tags of ECR's maximum length.
    long_names: bool,
    /// Each ECR call waits [`ROUND_TRIP_MS`] of its Region.
    region_latency: bool,
}

fn options() -> Options {
    let arg = |name: &str| {
        std::env::args()
            .skip_while(|a| a != name)
            .nth(1)
            .and_then(|n| n.parse::<usize>().ok())
    };
    let only = std::env::args()
        .skip_while(|a| a != "--mode")
        .nth(1)
        .unwrap_or_default();
    Options {
        pushes: arg("--pushes").unwrap_or(10_000),
        destinations: arg("--destinations")
            .unwrap_or(5)
            .clamp(1, MAX_DESTINATIONS),
        repositories: arg("--repositories").unwrap_or(100).max(1),
        ecr_latency_ms: arg("--ecr-latency-ms").unwrap_or(50),
        event: only != "lean",
        lean: only != "event",
        long_names: std::env::args().any(|a| a == "--long-names"),
        region_latency: std::env::args().any(|a| a == "--region-latency"),
    }
}

/// ECR's longest repository name and tag (ECR API Reference: `Image`, `repositoryName`,
/// "Length Constraints: Minimum length of 2. Maximum length of 256",
/// https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_Image.html; `ImageIdentifier`,
/// `imageTag`, "Minimum length of 1. Maximum length of 300",
/// https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_ImageIdentifier.html).
const MAX_REPOSITORY_NAME: usize = 256;
const MAX_TAG: usize = 300;

/// Repository `r`: `load/app-<r>`, or with `long`, nested namespaces and a name of exactly
/// [`MAX_REPOSITORY_NAME`] characters (ECR's pattern: lowercase segments joined by `/`).
fn repository_name(r: usize, long: bool) -> String {
    let name = format!("load/app-{r:03}");
    if !long {
        return name;
    }
    let namespace = "platform-engineering/build-services/";
    let mut long_name = String::new();
    while long_name.len() + namespace.len() + name.len() < MAX_REPOSITORY_NAME {
        long_name.push_str(namespace);
    }
    long_name.push_str(&name);
    let padding = MAX_REPOSITORY_NAME - long_name.len();
    long_name.push_str(&"x".repeat(padding));
    long_name
}

/// The tag of push `i`: `build-<i>`, or with `long`, padded to [`MAX_TAG`] characters.
fn tag_of(i: usize, long: bool) -> String {
    let tag = format!("build-{i}-");
    if !long {
        return tag.trim_end_matches('-').to_owned();
    }
    let padding = MAX_TAG - tag.len();
    tag + &"x".repeat(padding)
}

/// Modelled round trips (ms) from the central Region (us-west-2, the bench's source and
/// central Region) to ECR in each Region: approximate public inter-Region ping times, rounded;
/// a model, not measured here. Only the sweep's and the events' waits depend on them.
const ROUND_TRIP_MS: [(&str, u32); 26] = [
    ("us-west-2", 5),
    ("us-east-1", 70),
    ("eu-west-1", 125),
    ("ap-southeast-2", 140),
    ("eu-central-1", 145),
    ("ap-northeast-1", 100),
    ("sa-east-1", 180),
    ("ca-central-1", 60),
    ("ap-south-1", 220),
    ("us-east-2", 50),
    ("us-west-1", 22),
    ("eu-west-2", 135),
    ("eu-west-3", 140),
    ("eu-north-1", 160),
    ("ap-northeast-2", 125),
    ("ap-northeast-3", 105),
    ("ap-southeast-1", 165),
    ("eu-south-1", 160),
    ("ap-east-1", 145),
    ("me-south-1", 250),
    ("af-south-1", 275),
    ("il-central-1", 220),
    ("mx-central-1", 60),
    ("ap-southeast-3", 180),
    ("eu-central-2", 150),
    ("ap-south-2", 230),
];

#[tokio::main]
async fn main() -> Result<(), Error> {
    let options = options();
    let logs = LogCounter::default();
    let writer = logs.clone();
    logging::init_with_writer("info", move || writer.clone());
    let metric_lines = logs.clone();
    logging::set_metric_writer(move |line| metric_lines.metric_line(line));
    let aws = LocalAws::connect_or_start()?;
    println!(
        "local AWS at {}; {} pushes to {} destinations per mode, {}; {}",
        aws.endpoint(),
        options.pushes,
        options.destinations,
        if options.region_latency {
            "ECR calls wait the modelled round trip to their Region (ROUND_TRIP_MS)".to_owned()
        } else {
            format!("{} ms per ECR call", options.ecr_latency_ms)
        },
        if options.long_names {
            format!(
                "repository names of {MAX_REPOSITORY_NAME} characters, tags of {MAX_TAG} (ECR's maximum)"
            )
        } else {
            "repositories load/app-<n>, tags build-<n>".to_owned()
        }
    );
    let by_region: serde_json::Map<String, Value> = if options.region_latency {
        ROUND_TRIP_MS
            .iter()
            .map(|(region, ms)| ((*region).to_owned(), Value::from(*ms)))
            .collect()
    } else {
        serde_json::Map::new()
    };
    aws.control(
        "POST",
        "/_localaws/network",
        Some(&serde_json::json!({
            "latency_ms": options.ecr_latency_ms,
            "latency_ms_by_region": by_region,
        })),
    )?;
    let mut runs = Vec::new();
    let modes = [
        (Forward::All, options.event),
        (Forward::FailedOnly, options.lean),
    ];
    for (forward, wanted) in modes {
        if wanted {
            runs.push(run(&aws, &logs, &options, forward).await);
        }
    }
    aws.control("DELETE", "/_localaws/network", None)?;
    let runs = runs.into_iter().collect::<Result<Vec<_>, _>>()?;
    for run in &runs {
        report(run);
    }
    price_per_million(&runs);
    Ok(())
}

/// The destinations' Regions, in the order the bench takes them: real Regions of the `aws`
/// partition, none of them the source's (`SOURCE_REGION`, us-west-2: ECR refuses the source
/// registry as a destination, and every destination but the last is in the source account).
/// The first eight are the bench's Regions from before it went past eight, so runs of up to
/// eight destinations measure the same destinations as before; then the other Regions enabled
/// by default; the last nine are [`OPT_IN_REGIONS`].
const REGIONS: [&str; MAX_DESTINATIONS] = [
    "us-east-1",
    "eu-west-1",
    "ap-southeast-2",
    "eu-central-1",
    "ap-northeast-1",
    "sa-east-1",
    "ca-central-1",
    "ap-south-1",
    "us-east-2",
    "us-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-north-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "eu-south-1",
    "ap-east-1",
    "me-south-1",
    "af-south-1",
    "il-central-1",
    "mx-central-1",
    "ap-southeast-3",
    "eu-central-2",
    "ap-south-2",
];

/// The Regions of [`REGIONS`] launched after March 20, 2019: disabled in an account until it
/// opts in ("Enable or disable AWS Regions in your account"), and ECR replicates to one only
/// when "both the source and destination accounts" did (ECR User Guide, private image
/// replication, considerations). The test bed's list is
/// `infra/local-aws/replwatch_localaws/region_opt_in.py`'s `OPT_IN_REGIONS`.
const OPT_IN_REGIONS: &[&str] = REGIONS.split_at(MAX_DESTINATIONS - 9).1;

/// Opts `account` in to `region` (Account Management's `EnableRegion`) and checks that the test
/// bed then answers `ENABLED`: the transition is a job of its replication engine, which a flush
/// of `account` completes.
fn enable_region(aws: &LocalAws, account: &str, region: &str) -> Result<(), Error> {
    account_management(aws, account, "enableRegion", region)?;
    aws.flush_replication(account)?;
    let answer = account_management(aws, account, "getRegionOptStatus", region)?;
    if answer["RegionOptStatus"] != "ENABLED" {
        return Err(format!("{region} in {account} after EnableRegion: {answer}").into());
    }
    Ok(())
}

/// One Account Management request (REST-JSON, `POST /<operation>` with `RegionName`) as
/// `account`: the test bed reads a 12-digit access key id in the credential scope as that
/// account's own credentials. A plain HTTP request, so the bench does not need the Account SDK
/// for two calls.
fn account_management(
    aws: &LocalAws,
    account: &str,
    operation: &str,
    region: &str,
) -> Result<Value, Error> {
    let authority = aws
        .endpoint()
        .strip_prefix("http://")
        .ok_or("the local AWS endpoint must be http://")?;
    let body = serde_json::json!({ "RegionName": region }).to_string();
    let mut stream = TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST /{operation} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={account}/20260101/us-east-1/account/aws4_request, \
         SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, payload) = response
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let status = head.lines().next().and_then(|l| l.split(' ').nth(1));
    if status != Some("200") {
        return Err(format!("{operation} {region} as {account}: {head}\n{payload}").into());
    }
    if payload.trim().is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_str(payload)?)
}

async fn run(
    aws: &LocalAws,
    logs: &LogCounter,
    options: &Options,
    forward: Forward,
) -> Result<Run, Error> {
    let started = Instant::now();
    let central = unique_account();
    let partner = unique_account();
    // The last destination is in another account, as in most fleets.
    let destinations: Vec<Destination> = (0..options.destinations)
        .map(|i| {
            let account = if i + 1 == options.destinations && i > 0 {
                &partner
            } else {
                &central
            };
            Ok::<_, Error>(Destination::new(
                Region::parse(REGIONS[i])?,
                AccountId::parse(account)?,
            ))
        })
        .collect::<Result<_, _>>()?;
    for region in REGIONS[..destinations.len()]
        .iter()
        .filter(|r| OPT_IN_REGIONS.contains(r))
    {
        for account in [&central, &partner] {
            enable_region(aws, account, region)?;
        }
    }
    let deployment =
        LocalDeployment::create_with(aws, &central, SOURCE_REGION, &destinations, forward).await?;
    let repositories: Vec<String> = (0..options.repositories)
        .map(|r| repository_name(r, options.long_names))
        .collect();
    let source = aws.ecr(&central, SOURCE_REGION).await;
    for repository in &repositories {
        source
            .create_repository()
            .repository_name(repository)
            .send()
            .await?;
    }
    let rules: ReplicationConfiguration =
        serde_json::from_value(serde_json::json!({"rules": [{"destinations": destinations}]}))?;
    aws.put_replication_configuration(&central, SOURCE_REGION, &rules)
        .await?;
    let clock = Arc::new(OffsetClock::new());
    let tracking = deployment
        .tracking(
            Arc::clone(&clock),
            &[("ECR_CALLS_PER_SECOND", "200"), ("SWEEP_PARTS", "1")],
        )
        .await?;
    // Each repository's blobs once; every push is then one PutImage of a manifest of its own.
    let mut firsts = Vec::new();
    for (r, repository) in repositories.iter().enumerate() {
        let seed = format!("load-{r}");
        firsts.push(
            aws.push_image(
                &central,
                SOURCE_REGION,
                repository,
                Some(&tag_of(0, options.long_names)),
                &seed,
            )
            .await?,
        );
    }

    // The pushes, their events and the test bed's replication.
    reset_meter(aws)?;
    let mut images: Vec<(String, String)> = firsts
        .iter()
        .map(|f| (f.repository.clone(), f.digest.clone()))
        .collect();
    for i in images.len()..options.pushes {
        let first = &firsts[i % firsts.len()];
        let mut manifest: Value = serde_json::from_str(&first.manifest)?;
        manifest["annotations"] = serde_json::json!({"build": i.to_string()});
        let output = source
            .put_image()
            .repository_name(&first.repository)
            .image_manifest(manifest.to_string())
            .image_manifest_media_type(&first.media_type)
            .image_tag(tag_of(i, options.long_names))
            .send()
            .await?;
        let digest = output
            .image()
            .and_then(|i| i.image_id())
            .and_then(|i| i.image_digest())
            .ok_or("PutImage returned no digest")?;
        images.push((first.repository.clone(), digest.to_owned()));
    }
    aws.flush_replication(&central)?;
    let delivery = Phase::from_meter(&read_meter(aws)?);

    // 1. track-push.
    let push = phase(aws, logs, || async {
        let report = deployment
            .pump_queue(&tracking, "push", PUSH_BATCH, &mut |_| Copies::Once)
            .await?;
        Ok(handled(report, logs))
    })
    .await?;

    // 2. track-replication, with a fifth of the events lost and a tenth delivered twice.
    let mut seen = 0usize;
    let mut lossy = |_: &QueuedMessage| {
        seen += 1;
        match seen % 10 {
            0 | 5 => Copies::Drop,
            3 => Copies::Twice,
            _ => Copies::Once,
        }
    };
    let replication = phase(aws, logs, || async {
        let report = deployment
            .pump_queue(&tracking, "replication", REPLICATION_BATCH, &mut lossy)
            .await?;
        Ok(handled(report, logs))
    })
    .await?;

    // 3. The sweep, once every deadline has passed, in invocations of at most 60 s.
    clock.advance(TimeDelta::minutes(31));
    let sweep = phase(aws, logs, || async {
        let mut times = Vec::new();
        let mut alerts = Vec::new();
        loop {
            let begun = Instant::now();
            let summary = tracking
                .run_sweep(Some(clock.now() + SWEEP_TIMEOUT))
                .await?;
            times.push(begun.elapsed());
            alerts.extend(summary.alerts.iter().map(describe_alert));
            if summary.unconfirmed_images > 0 {
                println!(
                    "sweep invocation {}: {} images not confirmed (left due)",
                    times.len(),
                    summary.unconfirmed_images
                );
            }
            if !summary.stopped_early {
                break;
            }
        }
        Ok((times.len(), 0, times, alerts))
    })
    .await?;
    let mut sweep = sweep;
    sweep.gb_ms = sweep.billed_ms * SWEEP_MEMORY_GB;

    // 4. A scheduled sweep with nothing due: what every tick costs at any volume.
    clock.advance(TimeDelta::minutes(1));
    let mut idle_tick = phase(aws, logs, || async {
        let begun = Instant::now();
        let summary = tracking
            .run_sweep(Some(clock.now() + SWEEP_TIMEOUT))
            .await?;
        let alerts = summary.alerts.iter().map(describe_alert).collect();
        Ok((1, 0, vec![begun.elapsed()], alerts))
    })
    .await?;
    idle_tick.gb_ms = idle_tick.billed_ms * SWEEP_MEMORY_GB;

    let wrong_verdicts = wrong_verdicts(&tracking, &central, &images, &destinations).await?;
    let published = deployment.published_alerts().await?;
    let alerts = published.len();
    let alert_subjects = published
        .into_iter()
        .take(LISTED)
        .map(|a| a.subject)
        .collect();
    println!(
        "{:?} mode: {} pushes to {} destinations measured in {:.0} s",
        forward,
        options.pushes,
        destinations.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Run {
        forward,
        pushes: options.pushes,
        destinations: destinations.len(),
        delivery,
        push,
        replication,
        sweep,
        idle_tick,
        alerts,
        alert_subjects,
        wrong_verdicts,
    })
}

/// Runs `work` (invocations, messages, each invocation's handler time, alerts raised,
/// described) between two meter readings, counting the log bytes it writes. An alert stops
/// the run: nothing went wrong, so any is a wrong verdict; the error lists them.
async fn phase<F, Fut>(aws: &LocalAws, logs: &LogCounter, work: F) -> Result<Phase, Error>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(usize, usize, Vec<Duration>, Vec<String>), Error>>,
{
    reset_meter(aws)?;
    let (logged, metric_logged) = logs.ingested();
    let (invocations, messages, times, alerts) = work().await?;
    let mut phase = Phase::from_meter(&read_meter(aws)?);
    if !alerts.is_empty() {
        return Err(format!(
            "{} alerts raised where nothing went wrong:\n{}",
            alerts.len(),
            listing(&alerts)
        )
        .into());
    }
    phase.invocations = invocations as f64;
    phase.messages = messages as f64;
    phase.billed_ms = times
        .iter()
        .map(|t| (t.as_secs_f64() * 1000.0).ceil())
        .sum::<f64>()
        + 0.0; // an empty sum is -0.0
    phase.gb_ms = phase.billed_ms * TRACKING_MEMORY_GB;
    let (logged_after, metric_logged_after) = logs.ingested();
    phase.log_bytes = (logged_after - logged) as f64;
    phase.metric_log_bytes = (metric_logged_after - metric_logged) as f64;
    Ok(phase)
}

/// What [`phase`] needs of a pump: invocations, messages, each invocation's handler time,
/// alerts raised. The batches' metric lines are counted in `logs`, as Lambda would ingest
/// them (the functions' `main` writes them to standard output).
fn handled(report: PumpReport, logs: &LogCounter) -> (usize, usize, Vec<Duration>, Vec<String>) {
    for line in report.emf() {
        logs.metric_line(line);
    }
    let alerts = report
        .batches
        .iter()
        .flat_map(|b| b.alerts.iter().map(describe_alert))
        .collect();
    (
        report.batches.len(),
        report.delivered,
        report.batch_time,
        alerts,
    )
}

fn reset_meter(aws: &LocalAws) -> Result<(), Error> {
    aws.control("DELETE", "/_localaws/meter", None)?;
    Ok(())
}

fn read_meter(aws: &LocalAws) -> Result<Value, Error> {
    aws.control("GET", "/_localaws/meter", None)
}

/// An alert in one line: its kind, the push and the destination.
fn describe_alert(alert: &Alert) -> String {
    let key = &alert.key;
    format!(
        "{:?} {}:{} ({}) -> {}{}",
        alert.kind,
        key.image.repository,
        key.tag.as_deref().unwrap_or("-"),
        key.image.digest,
        key.destination,
        alert
            .failure_code
            .as_deref()
            .map(|c| format!(", failure code {c}"))
            .unwrap_or_default()
    )
}

/// How many of each kind (the first word of each line), then the first [`LISTED`] lines.
fn listing(lines: &[String]) -> String {
    let mut kinds = BTreeMap::<&str, usize>::new();
    for line in lines {
        *kinds
            .entry(line.split(' ').next().unwrap_or_default())
            .or_default() += 1;
    }
    let mut out: Vec<String> = kinds.iter().map(|(k, n)| format!("  {k}: {n}")).collect();
    out.extend(lines.iter().take(LISTED).map(|l| format!("    {l}")));
    if lines.len() > LISTED {
        out.push(format!("    ... and {} more", lines.len() - LISTED));
    }
    out.join("\n")
}

/// Destinations of the pushed images whose verdict is not REPLICATED, one line each (the
/// state first): a record in another state, or a destination with no record at all.
async fn wrong_verdicts(
    tracking: &AwsTracking<Arc<OffsetClock>>,
    central: &str,
    images: &[(String, String)],
    destinations: &[Destination],
) -> Result<Vec<String>, Error> {
    let pipeline = &tracking.pipeline;
    let mut wrong = Vec::new();
    for (repository, digest) in images {
        let image = SourceImage {
            registry: Destination::new(Region::parse(SOURCE_REGION)?, AccountId::parse(central)?),
            repository: RepositoryName::parse(repository)?,
            digest: Digest::parse(digest)?,
        };
        let records =
            expectations_of(pipeline.store(), &image, &pipeline.settings().policy).await?;
        for record in records
            .iter()
            .filter(|r| r.state != ExpectationState::Replicated)
        {
            wrong.push(format!(
                "{:?} {repository}@{digest} -> {}{}",
                record.state,
                record.key.destination,
                record
                    .failure_code
                    .as_deref()
                    .map(|c| format!(", failure code {c}"))
                    .unwrap_or_default()
            ));
        }
        for destination in destinations {
            if !records.iter().any(|r| &r.key.destination == destination) {
                wrong.push(format!("NoRecord {repository}@{digest} -> {destination}"));
            }
        }
    }
    Ok(wrong)
}

fn report(run: &Run) {
    let pushes = run.pushes as f64;
    println!(
        "\n{:?} mode, {} pushes to {} destinations: verdicts wrong {}, alerts published {}",
        run.forward,
        run.pushes,
        run.destinations,
        run.wrong_verdicts.len(),
        run.alerts
    );
    if !run.wrong_verdicts.is_empty() {
        println!("wrong verdicts:\n{}", listing(&run.wrong_verdicts));
    }
    for subject in &run.alert_subjects {
        println!("  alert published: {subject}");
    }
    println!(
        "{:<14} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8} {:>7} {:>10}",
        "per push",
        "WRU",
        "WRU idx",
        "RRU",
        "SQS",
        "EB events",
        "Lambda",
        "billed ms",
        "log bytes",
        "of it EMF",
        "metrics",
        "ECR",
        "x-Region B"
    );
    let delivery = &run.delivery;
    for (name, phase) in [
        ("events", delivery),
        ("track-push", &run.push),
        ("track-repl.", &run.replication),
        ("sweep", &run.sweep),
    ] {
        println!(
            "{:<14} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>8.3} {:>9.2} {:>9.0} {:>9.0} {:>8.4} {:>7.2} {:>10.0}",
            name,
            phase.write_units / pushes,
            phase.index_write_units / pushes,
            phase.read_units / pushes,
            (phase.sqs_sent + phase.eventbridge_deliveries + 2.0 * phase.messages / SQS_BATCH)
                / pushes,
            phase.events_forwarded / pushes,
            phase.invocations / pushes,
            phase.billed_ms / pushes,
            (phase.log_bytes + phase.invocations * PLATFORM_LOG_BYTES) / pushes,
            phase.metric_log_bytes / pushes,
            phase.metric_calls / pushes,
            phase.ecr_calls / pushes,
            phase.inter_region_bytes / pushes,
        );
    }
    let happy_path_writes = (run.push.write_units
        + run.push.index_write_units
        + run.sweep.write_units
        + run.sweep.index_write_units)
        / pushes;
    let by_operation = |phase: &Phase| {
        phase
            .write_units_by_operation
            .iter()
            .map(|(operation, units)| format!("{operation} {:.3}", units / pushes))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "DynamoDB write units per push on the happy path (push + check): {happy_path_writes:.2} (track-push: {}; sweep: {})",
        by_operation(&run.push),
        by_operation(&run.sweep)
    );
    // Every push is an image of its own: the sweep confirms one image per push.
    let sweep_seconds = run.sweep.billed_ms / 1000.0;
    let requests: f64 = run.sweep.operations.values().sum();
    println!(
        "sweep: {} images confirmed in {sweep_seconds:.1} s of handler time ({} invocations): {:.1} images/s per invocation; {requests:.0} requests to the local AWS ({:.1} per image), {:.0}/s",
        run.pushes,
        run.sweep.invocations,
        pushes / sweep_seconds.max(f64::EPSILON),
        requests / pushes,
        requests / sweep_seconds.max(f64::EPSILON)
    );
    let idle = &run.idle_tick;
    let ticks_a_month = 43_200.0;
    println!(
        "one scheduled sweep with nothing due: {:.1} RRU, {:.0} billed ms, {:.0} log bytes (+{PLATFORM_LOG_BYTES} Lambda's), {} requests, ${:.6}; a month of ticks (one a minute): ${:.2}",
        idle.read_units,
        idle.billed_ms,
        idle.log_bytes,
        idle.operations.values().sum::<f64>(),
        idle.cost(1.0),
        idle.cost(1.0) * ticks_a_month
    );
    for (name, phase) in [
        ("track-push", &run.push),
        ("track-repl.", &run.replication),
        ("sweep", &run.sweep),
        ("idle tick", &run.idle_tick),
    ] {
        let calls: Vec<String> = phase
            .operations
            .iter()
            .filter(|(k, _)| {
                !k.starts_with("sqs:Receive")
                    && !k.starts_with("sqs:Delete")
                    && *k != "sqs:GetQueueUrl"
            })
            .map(|(k, n)| format!("{k} {:.2}", n / pushes))
            .collect();
        println!("  {name} calls per push: {}", calls.join(", "));
    }
}

/// The cost per million pushes at 3 and 25 destinations in each mode: the push and the sweep
/// per push as measured (the sweep less its invocations' tick work, which the monthly costs
/// price), the replication events per destination (per event measured, times one event per
/// destination: no loss, no duplicate, as on a normal day).
fn price_per_million(runs: &[Run]) {
    println!("\nprices (us-east-1, 2026-12-03):");
    for p in &PRICES {
        println!("  {:<62} ${:<14} {}", p.what, p.usd, p.source);
    }
    for run in runs {
        let pushes = run.pushes as f64;
        let measured =
            run.delivery_fixed().cost(pushes) + run.push.cost(pushes) + run.sweep.cost(pushes);
        // Each sweep invocation also did what a tick with nothing due does (the due index's
        // empty reads, the alert counts), which the fixed monthly costs price once a minute
        // at any volume: counted per push too, it would be paid twice, and 300 pushes an
        // invocation here (about 12,000 at 10 million a day) would make it look per push.
        let tick_work = run.sweep.invocations * run.idle_tick.cost(1.0) / pushes;
        let fixed = (measured - tick_work).max(0.0);
        let per_destination = run.per_destination();
        println!(
            "{:?} mode, as measured ({} destinations): ${:.2} per million pushes, of which ${:.2} the {} sweep invocations' tick work (priced per month)",
            run.forward,
            run.destinations,
            (measured + run.destinations as f64 * per_destination) * 1e6,
            tick_work * 1e6,
            run.sweep.invocations
        );
        // Where it goes: the push's phases per push, then each destination's event.
        let mut total: Costs = [0.0; 7];
        for phase in [&run.delivery_fixed(), &run.push, &run.sweep] {
            for (sum, usd) in total.iter_mut().zip(phase.by_service()) {
                *sum += usd / pushes;
            }
        }
        for (sum, usd) in total.iter_mut().zip(run.per_destination_by_service()) {
            *sum += run.destinations as f64 * usd;
        }
        let metric_lines = (run.push.metric_lines_cost() + run.sweep.metric_lines_cost()) / pushes
            + if run.replication.messages > 0.0 {
                run.destinations as f64 * run.replication.metric_lines_cost()
                    / run.replication.messages
            } else {
                0.0
            };
        println!(
            "  by service: {}",
            describe_costs(&total, metric_lines, 1.0)
        );
        for (name, phase) in [("track-push", &run.push), ("sweep", &run.sweep)] {
            println!(
                "  {name}, per push: {}",
                describe_costs(&phase.by_service(), phase.metric_lines_cost(), pushes)
            );
        }
        if run.replication.messages > 0.0 {
            let phase = &run.replication;
            println!(
                "  track-replication, per event handled: {}",
                describe_costs(
                    &phase.by_service(),
                    phase.metric_lines_cost(),
                    phase.messages
                )
            );
        }
        for n in [3.0, 25.0] {
            let total = (fixed + n * per_destination) * 1e6;
            println!(
                "{:?} mode, {n} destinations: ${total:.2} per million pushes, the ticks' work taken out (per push ${:.2}/M fixed, ${:.2}/M per destination)",
                run.forward,
                fixed * 1e6,
                per_destination * 1e6
            );
        }
    }
}

impl Run {
    /// The push event's delivery to the push queue: one SQS message per push.
    fn delivery_fixed(&self) -> Phase {
        Phase {
            eventbridge_deliveries: self.pushes as f64,
            ..Phase::default()
        }
    }

    /// What one destination adds per push in this mode, by [`SERVICES`]: its replication
    /// event forwarded to the central bus (from the destination's Region), delivered to the
    /// replication queue, and handled (none in lean mode on a day without failures).
    fn per_destination_by_service(&self) -> Costs {
        let events = self.replication.messages;
        if events == 0.0 || self.delivery.events_forwarded == 0.0 {
            return [0.0; 7];
        }
        let forwarded_bytes = self.delivery.inter_region_bytes / self.delivery.events_forwarded;
        let mut costs = self.replication.by_service().map(|usd| usd / events);
        costs[1] += price(2);
        costs[2] += price(3);
        costs[6] += forwarded_bytes / 1e9 * price(8);
        costs
    }

    fn per_destination(&self) -> f64 {
        self.per_destination_by_service().iter().sum()
    }
}
