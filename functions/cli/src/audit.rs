//! `replwatch audit`: the source inventory against every destination the rules select, with
//! the core's `audit` deciding what is drift. Summary counts per destination first, then the
//! details; exit 0 in sync, 1 drift, 2 error, so it can gate a pipeline.

use std::time::Instant;

use replwatch_aws::ecr_inventory::EcrInventoryReader;
use replwatch_core::audit::{AuditReport, FindingKind, audit};
use replwatch_core::backfill::port::InventoryReader;
use replwatch_core::registry::RegistryError;

use crate::Outcome;
use crate::args::{AuditArgs, GlobalOptions};
use crate::aws::{AwsSetupError, cross_account_access, home_registry, sdk_config};
use crate::backfill::read_inventories;
use crate::output::{OutputFormat, Table};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Setup(#[from] AwsSetupError),
    #[error("{0}")]
    Aws(#[from] RegistryError),
}

pub async fn run(global: &GlobalOptions, args: &AuditArgs) -> Result<Outcome, AuditError> {
    let config = sdk_config(global).await?;
    let source = home_registry(&config).await?;
    let access = cross_account_access(global);
    let reader = EcrInventoryReader::new(config, source.registry_id.clone(), access);
    let configuration = reader.replication_configuration(&source).await?;
    let destinations: Vec<_> = configuration
        .all_destinations()
        .into_iter()
        .filter(|d| *d != source)
        .collect();
    let started = Instant::now();
    let (source_inventory, destination_inventories) =
        read_inventories(&reader, &source, &destinations, &args.repository_prefixes).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "inventories read"
    );
    let report = audit(
        &source,
        &configuration,
        &source_inventory,
        &destination_inventories,
    );
    print_report(&report, global.output);
    Ok(if report.in_sync() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

fn print_report(report: &AuditReport, format: OutputFormat) {
    if format == OutputFormat::Json {
        match serde_json::to_string_pretty(report) {
            Ok(json) => outln!("{json}"),
            Err(e) => eprintln!("replwatch: cannot write JSON: {e}"),
        }
        return;
    }
    let render = |table: &Table| match format {
        OutputFormat::Markdown => table.to_markdown(),
        _ => table.to_text(),
    };
    let mut header = vec!["destination", "repositories", "images"];
    header.extend(FindingKind::ALL.iter().map(|k| k.as_str()));
    let mut summary = Table::new(&header);
    for d in &report.destinations {
        let mut row = vec![
            d.destination.to_string(),
            d.repositories.to_string(),
            d.images.to_string(),
        ];
        row.extend(FindingKind::ALL.iter().map(|k| d.count(*k).to_string()));
        summary.push(row);
    }
    outln!("Replication audit of source {}\n", report.source);
    out!("{}", render(&summary));
    if report.destinations.is_empty() {
        outln!("\n(no destination: the registry has no replication rules)");
    }
    if report.in_sync() {
        outln!("\nIn sync: every destination holds every image with its tags and settings.");
        return;
    }
    let mut details = Table::new(&[
        "destination",
        "kind",
        "repository",
        "image",
        "tag",
        "detail",
    ]);
    for d in &report.destinations {
        for f in &d.findings {
            details.push(vec![
                d.destination.to_string(),
                f.kind.as_str().to_owned(),
                f.repository.to_string(),
                f.digest
                    .as_ref()
                    .map_or("-".into(), |d| d.short().to_owned()),
                f.tag.clone().unwrap_or_else(|| "-".into()),
                f.detail.clone(),
            ]);
        }
    }
    outln!("\nFindings\n");
    out!("{}", render(&details));
}
