//! `replwatch-local`: the whole tracking pipeline on one machine.
//!
//! Starts the local AWS test bed if it is not running, resets it, deploys replwatch on it the
//! way `template.yaml` wires it (EventBridge rules → SQS queues → the same handlers the Lambda
//! functions run, DynamoDB, SNS), and plays the demonstration scenario of
//! `testbed::scenario`: pushes into two repositories replicated to three destinations, one
//! slowed past the SLA, one failing, one with an immutable tag conflict. It prints a live table
//! of every image × destination and each alert as it fires, and exits 0 once every expected
//! verdict is reached (1 if not within the time limit).
//!
//! The SLA is 20 seconds here (`SLA_SECONDS`), the sweep runs every 2 seconds.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use replwatch_core::alerts::{Alert, human_duration};
use replwatch_core::store::expectations_of;
use replwatch_core::{
    AccountId, Destination, Digest, ExpectationState, Region, RepositoryName, SourceImage,
    SystemClock,
};
use replwatch_runtime::logging;
use replwatch_runtime::services::AwsTracking;
use testbed::deployment::Copies;
use testbed::scenario::{SOURCE_REGION, Scenario, ScenarioPush};
use testbed::{Error, LocalAws, LocalDeployment};

const CENTRAL: &str = "111111111111";
const PARTNER: &str = "222222222222";
const SLA_SECONDS: u64 = 20;
const PUSHES: usize = 6;
const TIME_LIMIT: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> ExitCode {
    logging::init_with_default("warn");
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("replwatch-local: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run() -> Result<bool, Error> {
    let aws = LocalAws::connect_or_start()?;
    println!("local AWS at {} (reset for this run)", aws.endpoint());
    aws.reset()?;
    let scenario = Scenario::new(CENTRAL, PARTNER);
    let deployment =
        LocalDeployment::create(&aws, CENTRAL, SOURCE_REGION, &scenario.destinations()?).await?;
    scenario.prepare(&aws).await?;
    let sla = SLA_SECONDS.to_string();
    let tracking = deployment
        .tracking(
            SystemClock,
            &[("SLA_SECONDS", sla.as_str()), ("RECHECK_SECONDS", "2")],
        )
        .await?;
    println!(
        "deployed: table {}, queues replwatch-push and replwatch-replication, topic replwatch-alerts; SLA {SLA_SECONDS}s\n",
        deployment.table
    );
    println!(
        "destinations: {} slowed past the SLA, {} failing, {} (other account) with team-a/web:v1 taken\n",
        scenario.slow()?,
        scenario.failing()?,
        scenario.cross_account()?
    );

    let pushes = scenario.push(&aws, PUSHES, "demo").await?;
    let expected = scenario.expected(&pushes)?;
    let started = Instant::now();
    let mut released = false;
    let mut last_table = String::new();
    let mut alerts: Vec<Alert> = Vec::new();
    while started.elapsed() < TIME_LIMIT {
        let report = deployment.pump(&tracking, &mut |_| Copies::Once).await?;
        let mut fired: Vec<Alert> = report
            .batches
            .iter()
            .flat_map(|b| b.alerts.iter().cloned())
            .collect();
        let summary = tracking.run_sweep(None).await?;
        fired.extend(summary.alerts.iter().cloned());
        for alert in &fired {
            println!(
                "  ALERT {:<9} {} -> {}{}",
                alert.kind.as_str(),
                alert.image_reference(),
                alert.key.destination,
                alert
                    .failure_code
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            );
        }
        alerts.extend(fired);

        let states = states(&tracking, &scenario, &pushes).await?;
        let table = render(&scenario, &pushes, &states)?;
        if table != last_table {
            println!("\n[{:>5.1}s]\n{table}", started.elapsed().as_secs_f64());
            last_table = table;
        }
        let slow = scenario.slow()?;
        let slow_overdue = states
            .iter()
            .filter(|((_, _, d), _)| *d == slow)
            .all(|(_, (state, _))| *state == ExpectationState::Overdue);
        if !released && slow_overdue {
            println!("  every image is overdue in {slow}: releasing it");
            scenario.release_slow(&aws)?;
            released = true;
        }
        let reached = expected.iter().all(|((repo, digest, tag, d), verdict)| {
            states
                .get(&(repo.clone(), (digest.clone(), tag.clone()), d.clone()))
                .map(|(s, _)| s)
                == Some(verdict)
        });
        if reached {
            println!(
                "\nevery expected verdict reached in {:.1}s with {} alerts",
                started.elapsed().as_secs_f64(),
                alerts.len()
            );
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!("\ntime limit reached before every verdict; see the table above");
    Ok(false)
}

type States = BTreeMap<(String, (String, Option<String>), Destination), (ExpectationState, String)>;

async fn states(
    tracking: &AwsTracking<SystemClock>,
    scenario: &Scenario,
    pushes: &[ScenarioPush],
) -> Result<States, Error> {
    let mut out = States::new();
    for push in pushes {
        let image = SourceImage {
            registry: Destination::new(
                Region::parse(SOURCE_REGION)?,
                AccountId::parse(&scenario.central)?,
            ),
            repository: RepositoryName::parse(&push.image.repository)?,
            digest: Digest::parse(&push.image.digest)?,
        };
        let pipeline = &tracking.pipeline;
        let records =
            expectations_of(pipeline.store(), &image, &pipeline.settings().policy).await?;
        for record in records {
            let detail = match record.state {
                ExpectationState::Replicated | ExpectationState::TagLost => record
                    .latency()
                    .map(|l| {
                        format!(
                            "{}{}",
                            human_duration(l),
                            if record.arrived_late() { " late" } else { "" }
                        )
                    })
                    // On time: its event gave only the latency metric, the check confirmed it.
                    .unwrap_or_else(|| "confirmed".into()),
                ExpectationState::Failed => record.failure_code.clone().unwrap_or_default(),
                _ => String::new(),
            };
            out.insert(
                (
                    push.image.repository.clone(),
                    (push.image.digest.clone(), record.key.tag.clone()),
                    record.key.destination.clone(),
                ),
                (record.state, detail),
            );
        }
    }
    Ok(out)
}

fn render(scenario: &Scenario, pushes: &[ScenarioPush], states: &States) -> Result<String, Error> {
    let destinations = scenario.destinations()?;
    let mut out = format!("{:<36}", "image");
    for d in &destinations {
        out.push_str(&format!(" {:<28}", d.to_string()));
    }
    out.push('\n');
    for push in pushes {
        let image = &push.image;
        let name = match &image.tag {
            Some(tag) => format!("{}:{tag}", image.repository),
            None => match Digest::parse(&image.digest) {
                Ok(digest) => format!("{}@{}", image.repository, digest.short()),
                Err(_) => format!("{}@{}", image.repository, image.digest),
            },
        };
        out.push_str(&format!("{name:<36}"));
        for d in &destinations {
            let cell = states
                .get(&(
                    image.repository.clone(),
                    (image.digest.clone(), image.tag.clone()),
                    d.clone(),
                ))
                .map(|(s, detail)| format!("{} {detail}", s.as_str()))
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(" {cell:<28}"));
        }
        out.push('\n');
    }
    Ok(out)
}
