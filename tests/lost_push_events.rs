//! The backstop for lost push events, on the local AWS through the real handlers: two images
//! pushed into a source replicated to a healthy and a paused destination, the PUSH event of
//! one of them lost on its way to track-push. The scheduled lost-push check (with the input
//! `template.yaml` gives it) finds that push, tracks it at its push time and counts it in
//! `UntrackedPushes`; the normal sweep then reports its missing replication (OVERDUE in the
//! paused destination), as it does for the push whose event arrived; a later check, whose
//! window still holds both pushes, counts nothing: neither is tracked twice.

use std::sync::Arc;

use chrono::TimeDelta;
use replwatch_core::metrics::UNTRACKED_PUSHES;
use replwatch_core::{
    AccountId, AlertKind, Destination, Digest, ExpectationStore, OffsetClock, Region,
    RepositoryName, SourceImage,
};
use replwatch_runtime::lost_pushes::LostPushCheck;
use replwatch_runtime::services;
use replwatch_runtime::settings::Settings;
use testbed::deployment::Copies;
use testbed::stack_templates::lost_push_check_input;
use testbed::{LocalAws, LocalDeployment, unique_account};

const SOURCE_REGION: &str = "us-west-2";
const REPOSITORY: &str = "team-lost/web";

fn destination(region: &str, account: &str) -> Destination {
    Destination::new(
        Region::parse(region).expect("region"),
        AccountId::parse(account).expect("account"),
    )
}

/// The `UntrackedPushes` values of these EMF lines.
fn untracked_counts(lines: &[String]) -> Vec<f64> {
    lines
        .iter()
        .filter_map(|line| {
            let doc: serde_json::Value = serde_json::from_str(line).expect("EMF line is JSON");
            doc[UNTRACKED_PUSHES].as_f64()
        })
        .collect()
}

#[tokio::test]
async fn a_push_whose_event_was_lost_is_found_tracked_and_reported_by_the_sweep_once() {
    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let central = unique_account();
    let paused = destination("us-east-1", &central);
    let healthy = destination("eu-central-1", &central);
    let deployment = LocalDeployment::create(
        &aws,
        &central,
        SOURCE_REGION,
        &[paused.clone(), healthy.clone()],
    )
    .await
    .expect("deployment");
    aws.configure_replication(&serde_json::json!({"destinations": {
        paused.to_string(): {"paused": true},
        healthy.to_string(): {}
    }}))
    .expect("test bed");
    aws.ecr(&central, SOURCE_REGION)
        .await
        .create_repository()
        .repository_name(REPOSITORY)
        .send()
        .await
        .expect("repository");
    let rules = serde_json::from_value(serde_json::json!({"rules": [
        {"destinations": [paused, healthy],
         "repositoryFilters": [{"filter": "team-lost/", "filterType": "PREFIX_MATCH"}]}
    ]}))
    .expect("rules");
    aws.put_replication_configuration(&central, SOURCE_REGION, &rules)
        .await
        .expect("rules");
    let lost = aws
        .push_image(
            &central,
            SOURCE_REGION,
            REPOSITORY,
            Some("v1"),
            "event lost",
        )
        .await
        .expect("push");
    let delivered = aws
        .push_image(
            &central,
            SOURCE_REGION,
            REPOSITORY,
            Some("v2"),
            "event delivered",
        )
        .await
        .expect("push");
    aws.settle_replication(&central).await.expect("settle");

    let clock = Arc::new(OffsetClock::new());
    let tracking = deployment
        .tracking(Arc::clone(&clock), &[])
        .await
        .expect("tracking");
    let mut dropped = 0;
    deployment
        .pump(&tracking, &mut |m| {
            if m.queue == "push" && m.body.contains(&lost.digest) {
                dropped += 1;
                Copies::Drop
            } else {
                Copies::Once
            }
        })
        .await
        .expect("pump");
    assert_eq!(dropped, 1, "the lost image's PUSH event is dropped");

    let env = deployment.environment(&[("AWS_REGION", SOURCE_REGION)]);
    let settings = Settings::from_lookup(|name| env.get(name).cloned()).expect("settings");
    let sdk = aws.config(&central, SOURCE_REGION).await;
    let source_images = services::build_source_images(&sdk, &settings);
    let source = replwatch_runtime::backfill::this_registry(&settings.home_account, |name| {
        env.get(name).cloned()
    })
    .expect("source");
    let input: serde_json::Value =
        serde_json::from_str(&lost_push_check_input().expect("template input")).expect("json");
    let check = LostPushCheck::from_payload(&input).expect("the template's input is a check");

    // Past the check's margin: both pushes are in its window.
    clock.advance(TimeDelta::minutes(16));
    let found = tracking
        .run_lost_push_check(&source_images, &source, &check, None)
        .await
        .expect("check");
    assert_eq!(
        (found.images, found.untracked_pushes, found.tracked),
        (2, 1, 1)
    );
    assert_eq!(untracked_counts(&found.emf), vec![1.0]);
    let image = |digest: &str| SourceImage {
        registry: source.clone(),
        repository: RepositoryName::parse(REPOSITORY).expect("repository"),
        digest: Digest::parse(digest).expect("digest"),
    };
    let store = tracking.pipeline.store();
    let tracked = store
        .latest_push(&image(&lost.digest), Some("v1"), None)
        .await
        .expect("read")
        .expect("the lost push is tracked");
    assert_eq!(tracked.destinations.len(), 2);
    // The test bed stamps the push in real time; the check's clock runs 16 minutes ahead.
    let since_push = chrono::Utc::now() - tracked.pushed_at;
    assert!(
        since_push >= TimeDelta::zero() && since_push < TimeDelta::minutes(5),
        "tracked at its push time, not the check's: {}",
        tracked.pushed_at
    );

    // Past the SLA: the sweep checks both pushes in both destinations.
    clock.advance(TimeDelta::minutes(15));
    let swept = tracking.run_sweep(None).await.expect("sweep");
    assert_eq!(swept.unconfirmed_images, 0);
    let mut overdue: Vec<(String, Destination)> = swept
        .alerts
        .iter()
        .map(|a| {
            assert_eq!(a.kind, AlertKind::Overdue, "{a:?}");
            (a.key.image.digest.to_string(), a.key.destination.clone())
        })
        .collect();
    overdue.sort();
    let mut expected = vec![
        (lost.digest.clone(), paused.clone()),
        (delivered.digest.clone(), paused.clone()),
    ];
    expected.sort();
    assert_eq!(
        overdue, expected,
        "one OVERDUE per image, in the paused destination only"
    );
    let published = deployment.published_alerts().await.expect("alerts");
    assert!(
        published.iter().any(|a| a.message.contains(&lost.digest)),
        "the lost push's alert reached the topic"
    );

    // A later check still sees both pushes in its window and counts neither.
    let again = tracking
        .run_lost_push_check(&source_images, &source, &check, None)
        .await
        .expect("check");
    assert_eq!((again.images, again.untracked_pushes), (2, 0));
    assert_eq!(untracked_counts(&again.emf), vec![0.0]);
    assert_eq!(
        store
            .pushes_of(&image(&lost.digest))
            .await
            .expect("read")
            .len(),
        1,
        "tracked once"
    );
}
