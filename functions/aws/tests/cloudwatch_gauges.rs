//! The CloudWatch gauge publisher against the local AWS (`infra/local-aws/start`), through the
//! real aws-sdk-cloudwatch client: what is published is read back with `ListMetrics` and
//! `GetMetricData`, names, dimensions and values. The server is shared with other tests, so
//! each test uses its own namespace and its own destination accounts (from the process id).
//!
//! aws-sdk-cloudwatch speaks only Smithy RPCv2 CBOR, which moto 5.2.5 does not route (it
//! answers 404); moto does speak CloudWatch's JSON protocol (what boto3 picks). So the client
//! here goes through [`cbor_json_bridge`], an HTTP client that re-encodes each CBOR request as
//! the equivalent JSON request and each JSON answer as CBOR. The SDK's own serialization and
//! moto's CloudWatch behaviour are both exercised; only the wire encoding is translated.

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
    let config = aws_sdk_cloudwatch::config::Builder::from(&config)
        .http_client(cbor_json_bridge::Bridge::new())
        // Large PutMetricData bodies are gzipped by the SDK; the bridge reads plain CBOR.
        .disable_request_compression(true)
        .build();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 10_000_000;
    Fixture {
        client: Client::from_conf(config),
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

/// An HTTP client that lets the RPCv2 CBOR SDK talk to a server that speaks only the AWS JSON
/// 1.0 protocol of the same service: `POST /service/{S}/operation/{Op}` with a CBOR body
/// becomes `POST /` with `X-Amz-Target: {S}.{Op}` and the same document as JSON; the JSON
/// answer (result or `__type` error, status kept) becomes CBOR again. Epoch-second timestamps
/// are CBOR tag 1 on one side and plain numbers on the other, so answer members named
/// `Timestamp(s)` are tagged; members named `Value(s)` are doubles in the model and are encoded
/// as floats even when JSON wrote an integer.
mod cbor_json_bridge {
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
        SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::byte_stream::ByteStream;
    use minicbor::data::{Tag, Type};
    use minicbor::{Decoder, Encoder};
    use serde_json::{Map, Value};

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    #[derive(Debug, Clone)]
    pub struct Bridge {
        inner: SharedHttpClient,
    }

    impl Bridge {
        pub fn new() -> Self {
            Self {
                inner: aws_smithy_http_client::Builder::new().build_http(),
            }
        }
    }

    impl HttpClient for Bridge {
        fn http_connector(
            &self,
            settings: &HttpConnectorSettings,
            components: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(Connector {
                inner: self.inner.http_connector(settings, components),
            })
        }
    }

    #[derive(Debug)]
    struct Connector {
        inner: SharedHttpConnector,
    }

    impl HttpConnector for Connector {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let inner = self.inner.clone();
            HttpConnectorFuture::new(async move {
                let request = to_json(request).map_err(|e| ConnectorError::other(e, None))?;
                let response = inner.call(request).await?;
                to_cbor(response)
                    .await
                    .map_err(|e| ConnectorError::other(e, None))
            })
        }
    }

    fn to_json(mut request: HttpRequest) -> Result<HttpRequest, BoxError> {
        let uri = request.uri().to_owned();
        let Some(at) = uri.find("/service/") else {
            return Ok(request);
        };
        let (service, operation) = uri[at + "/service/".len()..]
            .split_once("/operation/")
            .ok_or_else(|| format!("not an RPCv2 path: {uri}"))?;
        let target = format!("{service}.{operation}");
        let cbor = request
            .body()
            .bytes()
            .ok_or("a streaming request body cannot be translated")?;
        let json = if cbor.is_empty() {
            b"{}".to_vec()
        } else {
            serde_json::to_vec(&decode(&mut Decoder::new(cbor))?)?
        };
        request.set_uri(format!("{}/", &uri[..at]))?;
        let headers = request.headers_mut();
        headers.remove("smithy-protocol");
        headers.remove("accept");
        headers.insert("content-type", "application/x-amz-json-1.0");
        headers.insert("x-amz-target", target);
        headers.insert("content-length", json.len().to_string());
        *request.body_mut() = SdkBody::from(json);
        Ok(request)
    }

    async fn to_cbor(response: HttpResponse) -> Result<HttpResponse, BoxError> {
        let status = response.status();
        let mut headers = response.headers().clone();
        let body = ByteStream::new(response.into_body())
            .collect()
            .await?
            .into_bytes();
        let json: Value = if body.is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(&body)?
        };
        let mut encoder = Encoder::new(Vec::new());
        encode(&mut encoder, &json, None)?;
        let cbor = encoder.into_writer();
        headers.insert("content-type", "application/cbor");
        headers.insert("smithy-protocol", "rpc-v2-cbor");
        headers.insert("content-length", cbor.len().to_string());
        let mut out = HttpResponse::new(status, SdkBody::from(cbor));
        *out.headers_mut() = headers;
        Ok(out)
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Value, BoxError> {
        Ok(match d.datatype()? {
            Type::Bool => Value::from(d.bool()?),
            Type::Null | Type::Undefined => {
                d.skip()?;
                Value::Null
            }
            Type::U8 | Type::U16 | Type::U32 | Type::U64 => Value::from(d.u64()?),
            Type::I8 | Type::I16 | Type::I32 | Type::I64 => Value::from(d.i64()?),
            Type::F16 | Type::F32 | Type::F64 => Value::from(d.f64()?),
            Type::String => Value::from(d.str()?),
            Type::StringIndef => {
                let mut s = String::new();
                for part in d.str_iter()? {
                    s.push_str(part?);
                }
                Value::from(s)
            }
            // Timestamps (tag 1) are epoch seconds in JSON too: drop the tag.
            Type::Tag => {
                d.tag()?;
                decode(d)?
            }
            Type::Array | Type::ArrayIndef => {
                let len = d.array()?;
                let mut items = Vec::new();
                while more(d, len, items.len())? {
                    items.push(decode(d)?);
                }
                Value::Array(items)
            }
            Type::Map | Type::MapIndef => {
                let len = d.map()?;
                let mut map = Map::new();
                while more(d, len, map.len())? {
                    let key = d.str()?.to_owned();
                    map.insert(key, decode(d)?);
                }
                Value::Object(map)
            }
            other => return Err(format!("CBOR {other} has no JSON form here").into()),
        })
    }

    /// Whether a definite (`len`) or indefinite container has another item; consumes the
    /// break of an indefinite one.
    fn more(d: &mut Decoder<'_>, len: Option<u64>, seen: usize) -> Result<bool, BoxError> {
        match len {
            Some(n) => Ok((seen as u64) < n),
            None if d.datatype()? == Type::Break => {
                d.skip()?;
                Ok(false)
            }
            None => Ok(true),
        }
    }

    fn encode(e: &mut Encoder<Vec<u8>>, value: &Value, key: Option<&str>) -> Result<(), BoxError> {
        let timestamp = matches!(key, Some("Timestamp" | "Timestamps"));
        let double = matches!(key, Some("Value" | "Values"));
        match value {
            Value::Null => {
                e.null()?;
            }
            Value::Bool(b) => {
                e.bool(*b)?;
            }
            Value::Number(n) if timestamp => {
                e.tag(Tag::new(1))?
                    .f64(n.as_f64().ok_or("bad timestamp")?)?;
            }
            Value::String(s) if timestamp => {
                let at = chrono::DateTime::parse_from_rfc3339(s)?;
                e.tag(Tag::new(1))?
                    .f64(at.timestamp_millis() as f64 / 1000.0)?;
            }
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) if !double => {
                    e.u64(u)?;
                }
                (None, Some(i), _) if !double => {
                    e.i64(i)?;
                }
                (_, _, Some(f)) => {
                    e.f64(f)?;
                }
                _ => return Err(format!("number {n} has no CBOR form here").into()),
            },
            Value::String(s) => {
                e.str(s)?;
            }
            Value::Array(items) => {
                e.array(items.len() as u64)?;
                for item in items {
                    encode(e, item, key)?;
                }
            }
            Value::Object(map) => {
                e.map(map.len() as u64)?;
                for (k, v) in map {
                    e.str(k)?;
                    encode(e, v, Some(k))?;
                }
            }
        }
        Ok(())
    }
}
