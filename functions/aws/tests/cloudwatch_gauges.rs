//! The CloudWatch gauge publisher against the local AWS (`infra/local-aws/start`), through the
//! real aws-sdk-cloudwatch client: what is published is read back with `ListMetrics` and
//! `GetMetricData`, names, dimensions and values. The server is shared with other tests, so
//! each test uses its own namespace and its own destination accounts (from the process id).
//!
//! aws-sdk-cloudwatch speaks only Smithy RPCv2 CBOR (gzip-compressing large `PutMetricData`
//! bodies); the test bed answers it (`infra/local-aws/replwatch_localaws/cloudwatch_cbor.py`),
//! so the plain SDK client is used, as in production.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime as AwsDateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use replwatch_aws::cloudwatch::{CloudWatchGauges, MAX_DATUMS_PER_CALL};
use replwatch_aws::local;
use replwatch_core::metrics::{Gauge, GaugeName, GaugePublisher};
use replwatch_core::model::{AccountId, Destination, Region};

/// A fresh namespace, and a prefix making this test's account ids its own.
struct Fixture {
    client: Client,
    namespace: String,
    account_prefix: String,
}

async fn fixture() -> Fixture {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let endpoint = local::endpoint_from_env().unwrap_or_else(|e| panic!("{e}"));
    let config = local::sdk_config(&endpoint, "us-west-2").await;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 10_000_000;
    Fixture {
        client: Client::new(&config),
        namespace: format!("replwatch-test/gauges-{pid}-{n}"),
        account_prefix: format!("{pid:07}{n:01}"),
    }
}

impl Fixture {
    /// A destination whose account no other test uses: `prefix` + `k` in twelve digits.
    fn destination(&self, region: &str, k: u32) -> Destination {
        Destination::new(
            Region::parse(region).expect("region"),
            AccountId::parse(&format!("{}{k:04}", self.account_prefix)).expect("account"),
        )
    }

    async fn list(&self) -> Vec<Metric> {
        let mut pages = self
            .client
            .list_metrics()
            .namespace(&self.namespace)
            .into_paginator()
            .send();
        let mut metrics = Vec::new();
        while let Some(page) = pages.next().await {
            metrics.extend(page.expect("ListMetrics").metrics.unwrap_or_default());
        }
        metrics
    }

    /// The maximum of each gauge around `at`, read with one `GetMetricData`.
    async fn read(&self, at: DateTime<Utc>, gauges: &[Gauge]) -> Vec<Option<f64>> {
        let queries: Vec<MetricDataQuery> = gauges
            .iter()
            .enumerate()
            .map(|(i, g)| {
                MetricDataQuery::builder()
                    .id(format!("q{i}"))
                    .metric_stat(
                        MetricStat::builder()
                            .metric(
                                Metric::builder()
                                    .namespace(&self.namespace)
                                    .metric_name(g.name.as_str())
                                    .dimensions(dim(
                                        "DestinationRegion",
                                        g.destination.region.as_str(),
                                    ))
                                    .dimensions(dim(
                                        "DestinationAccount",
                                        g.destination.registry_id.as_str(),
                                    ))
                                    .build(),
                            )
                            .period(60)
                            .stat("Maximum")
                            .build(),
                    )
                    .build()
            })
            .collect();
        let out = self
            .client
            .get_metric_data()
            .set_metric_data_queries(Some(queries))
            .start_time(AwsDateTime::from_secs(
                (at - TimeDelta::minutes(5)).timestamp(),
            ))
            .end_time(AwsDateTime::from_secs(
                (at + TimeDelta::minutes(5)).timestamp(),
            ))
            .send()
            .await
            .expect("GetMetricData");
        let by_id: BTreeMap<String, Vec<f64>> = out
            .metric_data_results()
            .iter()
            .map(|r| (r.id().unwrap_or_default().to_owned(), r.values().to_vec()))
            .collect();
        (0..gauges.len())
            .map(|i| {
                let values = by_id.get(&format!("q{i}"))?;
                values.iter().copied().reduce(f64::max)
            })
            .collect()
    }
}

fn dim(name: &str, value: &str) -> Dimension {
    Dimension::builder().name(name).value(value).build()
}

/// (name, region, account) of a listed metric, with its dimensions checked to be exactly the
/// two destination dimensions.
fn series(metric: &Metric) -> (String, String, String) {
    let dims: BTreeMap<&str, &str> = metric
        .dimensions()
        .iter()
        .map(|d| (d.name().unwrap_or_default(), d.value().unwrap_or_default()))
        .collect();
    assert_eq!(
        dims.keys().copied().collect::<Vec<_>>(),
        ["DestinationAccount", "DestinationRegion"],
        "exactly the destination dimensions: {metric:?}"
    );
    (
        metric.metric_name().unwrap_or_default().to_owned(),
        dims["DestinationRegion"].to_owned(),
        dims["DestinationAccount"].to_owned(),
    )
}

fn key(g: &Gauge) -> (String, String, String) {
    (
        g.name.as_str().to_owned(),
        g.destination.region.to_string(),
        g.destination.registry_id.to_string(),
    )
}

#[tokio::test]
async fn gauges_of_two_destinations_read_back_with_their_dimensions_and_values() {
    let f = fixture().await;
    let at = Utc::now().trunc_subsecs(0);
    let east = f.destination("us-east-1", 1);
    let europe = f.destination("eu-west-1", 2);
    let gauges = vec![
        Gauge {
            name: GaugeName::PendingImages,
            destination: east.clone(),
            value: 7.0,
        },
        Gauge {
            name: GaugeName::OverdueImages,
            destination: east,
            value: 2.0,
        },
        Gauge {
            name: GaugeName::PendingImages,
            destination: europe.clone(),
            value: 0.0,
        },
        Gauge {
            name: GaugeName::OverdueImages,
            destination: europe,
            value: 13.0,
        },
    ];
    let publisher = CloudWatchGauges::new(f.client.clone(), f.namespace.clone());
    publisher.publish(at, &gauges).await.expect("published");

    let mut listed: Vec<_> = f.list().await.iter().map(series).collect();
    listed.sort();
    let mut expected: Vec<_> = gauges.iter().map(key).collect();
    expected.sort();
    assert_eq!(listed, expected);

    assert_eq!(
        f.read(at, &gauges).await,
        [Some(7.0), Some(2.0), Some(0.0), Some(13.0)],
        "each destination's own values"
    );
}

#[tokio::test]
async fn more_gauges_than_one_call_takes_all_arrive() {
    let f = fixture().await;
    let at = Utc::now().trunc_subsecs(0);
    let destinations = MAX_DATUMS_PER_CALL as u32 / 2 + 101; // 1,202 gauges: two calls
    let gauges: Vec<Gauge> = (0..destinations)
        .flat_map(|k| {
            let d = f.destination("eu-central-1", k);
            [
                Gauge {
                    name: GaugeName::PendingImages,
                    destination: d.clone(),
                    value: f64::from(k),
                },
                Gauge {
                    name: GaugeName::OverdueImages,
                    destination: d,
                    value: f64::from(k % 3),
                },
            ]
        })
        .collect();
    assert!(gauges.len() > MAX_DATUMS_PER_CALL);
    CloudWatchGauges::new(f.client.clone(), f.namespace.clone())
        .publish(at, &gauges)
        .await
        .expect("published in batches");

    let mut listed: Vec<_> = f.list().await.iter().map(series).collect();
    listed.sort();
    let mut expected: Vec<_> = gauges.iter().map(key).collect();
    expected.sort();
    assert_eq!(
        listed.len(),
        gauges.len(),
        "every datum of every batch arrived"
    );
    assert_eq!(listed, expected);

    // Values from both sides of the batch boundary.
    let sample: Vec<Gauge> = [
        0,
        MAX_DATUMS_PER_CALL - 1,
        MAX_DATUMS_PER_CALL,
        gauges.len() - 1,
    ]
    .iter()
    .map(|&i| gauges[i].clone())
    .collect();
    let expected: Vec<Option<f64>> = sample.iter().map(|g| Some(g.value)).collect();
    assert_eq!(f.read(at, &sample).await, expected);
}

#[tokio::test]
async fn nothing_to_publish_makes_no_metric() {
    let f = fixture().await;
    CloudWatchGauges::new(f.client.clone(), f.namespace.clone())
        .publish(Utc::now(), &[])
        .await
        .expect("nothing to do");
    assert!(f.list().await.is_empty());
}
