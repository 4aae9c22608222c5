//! The gauge publisher port on CloudWatch `PutMetricData`.
//!
//! Why an API call here when per-event metrics go out as EMF log lines: gauges are published
//! by the sweep once per tick, a handful of datums (two per destination), so one call costs
//! nothing, and a call fails loudly where a log line would be lost silently. Each gauge becomes
//! one datum with the dimensions `DestinationRegion` and `DestinationAccount` (the same as the
//! EMF metrics, so one dashboard filter serves both), unit `Count`, stamped with the sweep's
//! time. `PutMetricData` takes at most 1,000 datums per call; larger sets go out in several
//! calls, in order.

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
use aws_sdk_cloudwatch::primitives::DateTime as AwsDateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use chrono::{DateTime, Utc};
use replwatch_core::metrics::{
    DIMENSION_ACCOUNT, DIMENSION_REGION, Gauge, GaugePublisher, MetricsError, check_finite,
};

/// The most datums `PutMetricData` accepts in one call.
pub const MAX_DATUMS_PER_CALL: usize = 1000;

/// [`GaugePublisher`] on CloudWatch, into one namespace.
#[derive(Debug, Clone)]
pub struct CloudWatchGauges {
    client: Client,
    namespace: String,
}

impl CloudWatchGauges {
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

impl GaugePublisher for CloudWatchGauges {
    async fn publish(&self, at: DateTime<Utc>, gauges: &[Gauge]) -> Result<(), MetricsError> {
        for batch in datum_batches(at, gauges)? {
            self.client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(batch))
                .send()
                .await
                .map_err(|e| backend("PutMetricData", e))?;
        }
        Ok(())
    }
}

/// The datums of `gauges` stamped `at`, in calls of at most [`MAX_DATUMS_PER_CALL`]; nothing
/// when there is nothing to publish, and an error before any call if a value is not finite.
pub fn datum_batches(
    at: DateTime<Utc>,
    gauges: &[Gauge],
) -> Result<Vec<Vec<MetricDatum>>, MetricsError> {
    check_finite(gauges)?;
    let timestamp = AwsDateTime::from_millis(at.timestamp_millis());
    Ok(gauges
        .chunks(MAX_DATUMS_PER_CALL)
        .map(|chunk| {
            chunk
                .iter()
                .map(|gauge| {
                    MetricDatum::builder()
                        .metric_name(gauge.name.as_str())
                        .dimensions(dimension(
                            DIMENSION_REGION,
                            gauge.destination.region.as_str(),
                        ))
                        .dimensions(dimension(
                            DIMENSION_ACCOUNT,
                            gauge.destination.registry_id.as_str(),
                        ))
                        .value(gauge.value)
                        .unit(StandardUnit::from(gauge.name.unit().as_str()))
                        .timestamp(timestamp)
                        .build()
                })
                .collect()
        })
        .collect())
}

fn dimension(name: &str, value: &str) -> Dimension {
    Dimension::builder().name(name).value(value).build()
}

fn backend(
    operation: &'static str,
    error: impl std::error::Error + ProvideErrorMetadata,
) -> MetricsError {
    let message = crate::service_error::describe(&error);
    MetricsError::Backend { operation, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use replwatch_core::metrics::GaugeName;
    use replwatch_core::model::{AccountId, Destination, Region};

    fn gauge(i: usize, value: f64) -> Gauge {
        Gauge {
            name: if i % 2 == 0 {
                GaugeName::PendingImages
            } else {
                GaugeName::OverdueImages
            },
            destination: Destination::new(
                Region::parse("eu-west-1").expect("region"),
                AccountId::parse(&format!("{:012}", i)).expect("account"),
            ),
            value,
        }
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn batches_stop_at_the_api_limit_and_keep_every_gauge_in_order() {
        let gauges: Vec<Gauge> = (0..2500).map(|i| gauge(i, i as f64)).collect();
        let batches = datum_batches(at(), &gauges).expect("finite");
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        let values: Vec<f64> = batches.iter().flatten().filter_map(|d| d.value).collect();
        assert_eq!(values, (0..2500).map(|i| i as f64).collect::<Vec<_>>());
        assert!(datum_batches(at(), &[]).expect("empty").is_empty());
    }

    #[test]
    fn a_datum_carries_name_dimensions_unit_and_time() {
        let batches = datum_batches(at(), &[gauge(7, 3.0)]).expect("finite");
        let datum = &batches[0][0];
        assert_eq!(datum.metric_name(), Some("OverdueImages"));
        let dims: Vec<(&str, &str)> = datum
            .dimensions()
            .iter()
            .map(|d| (d.name().unwrap_or(""), d.value().unwrap_or("")))
            .collect();
        assert_eq!(
            dims,
            [
                ("DestinationRegion", "eu-west-1"),
                ("DestinationAccount", "000000000007")
            ]
        );
        assert_eq!(datum.unit(), Some(&StandardUnit::Count));
        assert_eq!(
            datum.timestamp().map(|t| t.to_millis().ok()),
            Some(Some(at().timestamp_millis()))
        );
    }

    #[test]
    fn a_non_finite_value_is_refused_before_any_call() {
        let err = datum_batches(at(), &[gauge(0, 1.0), gauge(1, f64::INFINITY)])
            .expect_err("infinite refused");
        assert!(matches!(err, MetricsError::NotFinite { .. }), "{err}");
    }
}
