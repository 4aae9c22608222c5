//! The DynamoDB store passes the same contract as the in-memory one, against the local AWS
//! (`infra/local-aws/start`), through the real aws-sdk-dynamodb client. Each test gets its own
//! freshly created table.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use replwatch_aws::DynamoExpectationStore;
use replwatch_aws::local;

async fn fresh_store() -> DynamoExpectationStore {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let endpoint = local::endpoint_from_env().unwrap_or_else(|e| panic!("{e}"));
    let config = local::sdk_config(&endpoint, "us-west-2").await;
    let table = format!(
        "replwatch-contract-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let client = aws_sdk_dynamodb::Client::new(&config);
    replwatch_aws::provisioning::create_tracking_table(&client, &table)
        .await
        .expect("create table");
    DynamoExpectationStore::new(client, table)
}

replwatch_core::expectation_store_contract!(fresh_store());

/// Items an earlier version wrote (schema 1: one push item per image and tag, `PUSH#TAG#<tag>`,
/// and records without the push time in their key) are moved to their keys of today when the
/// sweep first reads them as due, and then written like any other: an open push and an overdue
/// record tracked before an upgrade reach their verdicts after it.
#[tokio::test]
async fn due_items_of_the_earlier_schema_move_to_their_keys_and_stay_writable() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use chrono::{DateTime, TimeDelta, Utc};
    use replwatch_core::push::PushOutcome;
    use replwatch_core::store::{ExpectationStore, SweepPart};
    use replwatch_core::tracking::{ExpectationState, Observation, TrackingPolicy};

    let store = fresh_store().await;
    let client = aws_sdk_dynamodb::Client::new(
        &local::sdk_config(
            &local::endpoint_from_env().unwrap_or_else(|e| panic!("{e}")),
            "us-west-2",
        )
        .await,
    );
    let pushed: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().expect("time");
    let stamp = |at: DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let digest = format!("sha256:{}", "ab".repeat(32));
    let pk = format!("IMG#us-west-2#111111111111#team-a/web@{digest}");
    let text = |s: &str| AttributeValue::S(s.to_owned());
    let common = |sk: &str| {
        std::collections::HashMap::from([
            ("pk".to_owned(), text(&pk)),
            ("sk".to_owned(), text(sk)),
            ("schema".to_owned(), text("1")),
            ("source_region".to_owned(), text("us-west-2")),
            ("source_account".to_owned(), text("111111111111")),
            ("repository".to_owned(), text("team-a/web")),
            ("digest".to_owned(), text(&digest)),
            ("tag".to_owned(), text("v1")),
            ("pushed_at".to_owned(), text(&stamp(pushed))),
            (
                "deadline".to_owned(),
                text(&stamp(pushed + TimeDelta::minutes(30))),
            ),
            ("due_shard".to_owned(), text("DUE#7")),
        ])
    };
    let mut push = common("PUSH#TAG#v1");
    for (name, value) in [
        ("outcome", text("OPEN")),
        ("dset", text("0011223344556677")),
        ("dests", text("222222222222:eu-west-1,us-east-1")),
        ("next_check", text(&stamp(pushed + TimeDelta::minutes(30)))),
        ("version", AttributeValue::N("1".into())),
    ] {
        push.insert(name.to_owned(), value);
    }
    let mut record = common("DST#ap-south-1#333333333333#TAG#v1");
    for (name, value) in [
        ("destination_region", text("ap-south-1")),
        ("destination_account", text("333333333333")),
        ("state", text("OVERDUE")),
        (
            "overdue_since",
            text(&stamp(pushed + TimeDelta::minutes(31))),
        ),
        (
            "last_checked_at",
            text(&stamp(pushed + TimeDelta::minutes(31))),
        ),
        ("next_check", text(&stamp(pushed + TimeDelta::minutes(46)))),
        ("alerts", AttributeValue::L(vec![text("OVERDUE")])),
        ("version", AttributeValue::N("2".into())),
    ] {
        record.insert(name.to_owned(), value);
    }
    for item in [push, record] {
        client
            .put_item()
            .table_name(store.table())
            .set_item(Some(item))
            .send()
            .await
            .expect("schema 1 item");
    }

    let due = store
        .due(pushed + TimeDelta::hours(1), 100, SweepPart::WHOLE)
        .await
        .expect("due");
    assert_eq!((due.pushes.len(), due.records.len()), (1, 1), "{due:?}");
    let mut push = due.pushes[0].clone();
    let mut record = due.records[0].clone();
    assert_eq!(push.pushed_at, pushed);
    assert_eq!(push.destinations.len(), 2);
    assert_eq!(record.key.occurrence, pushed, "the push it follows");
    assert_eq!(record.state, ExpectationState::Overdue);
    let keys: Vec<String> = client
        .query()
        .table_name(store.table())
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", text(&pk))
        .send()
        .await
        .expect("query")
        .items()
        .iter()
        .filter_map(|i| i.get("sk").and_then(|v| v.as_s().ok()).cloned())
        .collect();
    assert_eq!(
        keys,
        vec![
            format!("DST#ap-south-1#333333333333#TAG#v1#{}", pushed.timestamp()),
            format!("PUSH#TAG#v1#{}", pushed.timestamp())
        ],
        "moved, not copied"
    );
    // Written from the version read, like any item of today.
    let policy = TrackingPolicy::default();
    push.close(
        PushOutcome::Confirmed {
            at: pushed + TimeDelta::hours(1),
            closed: Vec::new(),
            recorded: vec![record.key.destination.clone()],
        },
        &policy,
    );
    store.save_push(&push).await.expect("the push closes");
    let arrived = record.apply(
        &Observation::Arrived {
            arrived_at: None,
            observed_at: pushed + TimeDelta::hours(1),
            tag: replwatch_core::tracking::TagArrival::Present,
        },
        &policy,
    );
    assert!(arrived.changed && arrived.raised.is_empty());
    store.save(&record, &[]).await.expect("the record closes");
    assert!(
        store
            .due(pushed + TimeDelta::days(1), 100, SweepPart::WHOLE)
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(
        store
            .latest_push(&push.image, Some("v1"), None)
            .await
            .expect("latest")
            .map(|p| p.outcome.clone()),
        Some(push.outcome.clone())
    );
}

/// A pending alert item garbled by hand does not block the others: the claim returns them,
/// sets the bad one aside under its key with the reason (no claim reads it again), and the
/// count the `SetAsideAlerts` alarm watches says so. No pending alert carries a TTL.
#[tokio::test]
async fn an_unreadable_pending_alert_is_set_aside_and_the_others_claimed() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use chrono::{DateTime, TimeDelta, Utc};
    use replwatch_core::alerts::Alert;
    use replwatch_core::model::{
        AccountId, Destination, Digest, ExpectationKey, Region, RepositoryName, SourceImage,
    };
    use replwatch_core::outbox::{AlertOutbox, CLAIM_LEASE, FIRST_RETRY_AFTER, PendingAlert};
    use replwatch_core::store::ExpectationStore;
    use replwatch_core::tracking::{
        AlertKind, Observation, ReplicationExpectation, TrackingPolicy,
    };

    let store = fresh_store().await;
    let client = aws_sdk_dynamodb::Client::new(
        &local::sdk_config(
            &local::endpoint_from_env().unwrap_or_else(|e| panic!("{e}")),
            "us-west-2",
        )
        .await,
    );
    let pushed: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().expect("time");
    let overdue_at = pushed + TimeDelta::minutes(31);
    let mut raised = Vec::new();
    for n in 1..=3u8 {
        let key = ExpectationKey {
            image: SourceImage {
                registry: Destination::new(
                    Region::parse("us-west-2").expect("region"),
                    AccountId::parse("111111111111").expect("account"),
                ),
                repository: RepositoryName::parse("team-a/web").expect("repository"),
                digest: Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32)))
                    .expect("digest"),
            },
            tag: Some("v1".to_owned()),
            destination: Destination::new(
                Region::parse("eu-west-1").expect("region"),
                AccountId::parse("222222222222").expect("account"),
            ),
            occurrence: pushed,
        };
        let mut record = ReplicationExpectation::new(key);
        record.apply(
            &Observation::Pushed { at: pushed },
            &TrackingPolicy::default(),
        );
        record.apply(
            &Observation::StillInProgress { at: overdue_at },
            &TrackingPolicy::default(),
        );
        let pending = PendingAlert::raised(Alert::new(AlertKind::Overdue, &record, overdue_at));
        store
            .save(&record, std::slice::from_ref(&pending))
            .await
            .expect("raise");
        raised.push(pending);
    }
    let bad_key = format!("ALERT#{}", raised[1].id);
    let stored = |pk: String| {
        let client = client.clone();
        let table = store.table().to_owned();
        async move {
            client
                .get_item()
                .table_name(table)
                .key("pk", AttributeValue::S(pk))
                .key("sk", AttributeValue::S("ALERT".to_owned()))
                .consistent_read(true)
                .send()
                .await
                .expect("get")
                .item
                .expect("the item is kept")
        }
    };
    for pending in &raised {
        let item = stored(format!("ALERT#{}", pending.id)).await;
        assert!(
            !item.contains_key(replwatch_aws::dynamodb::TTL_ATTRIBUTE),
            "a pending alert never expires: {item:?}"
        );
    }
    // By hand: the alert document of the second one garbled.
    client
        .update_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(bad_key.clone()))
        .key("sk", AttributeValue::S("ALERT".to_owned()))
        .update_expression("SET alert = :garbled")
        .expression_attribute_values(":garbled", AttributeValue::S("{\"kind\": 17".to_owned()))
        .send()
        .await
        .expect("corrupt by hand");

    let due = overdue_at + FIRST_RETRY_AFTER;
    let claimed = store
        .claim_due(due, 10)
        .await
        .expect("the claim goes through");
    let mut ids: Vec<&str> = claimed.alerts.iter().map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![raised[0].id.as_str(), raised[2].id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected, "the readable ones are claimed");
    assert_eq!(claimed.set_aside.len(), 1);
    assert_eq!(claimed.set_aside[0].key, format!("{bad_key} / ALERT"));
    assert!(
        claimed.set_aside[0].reason.contains("unreadable"),
        "{}",
        claimed.set_aside[0].reason
    );
    let aside = stored(bad_key.clone()).await;
    assert_eq!(
        aside.get("due_shard"),
        Some(&AttributeValue::S(
            replwatch_aws::alert_outbox::SET_ASIDE_SHARD.to_owned()
        ))
    );
    assert!(
        matches!(aside.get("set_aside_from"), Some(AttributeValue::S(s)) if s.starts_with("OUTBOX#"))
    );
    assert!(aside.contains_key("set_aside_reason"));
    assert_eq!(store.set_aside().await.expect("count"), 1);
    assert_eq!(store.undelivered().await.expect("count"), 2);

    // Past the lease, the two are claimed again and the bad one is not met again.
    let later = store
        .claim_due(due + CLAIM_LEASE + TimeDelta::minutes(1), 10)
        .await
        .expect("claim");
    assert_eq!(later.alerts.len(), 2);
    assert!(later.set_aside.is_empty());
    for pending in &later.alerts {
        store.delivered(&pending.id).await.expect("delivered");
    }
    assert_eq!(store.undelivered().await.expect("count"), 0);
    assert_eq!(store.set_aside().await.expect("count"), 1, "until repaired");
}
