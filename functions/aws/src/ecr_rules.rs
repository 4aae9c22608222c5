//! The replication rules of a registry (`DescribeRegistry`), as the core reads them: what the
//! tracking functions expect pushes to reach, and what a backfill plans for.

use aws_sdk_ecr::Client;
use replwatch_core::model::{AccountId, Destination, Region};
use replwatch_core::registry::RegistryError;
use replwatch_core::rules::{ReplicationConfiguration, ReplicationRule, RepositoryFilter};

use crate::ecr_clients::{invalid, registry_error};

/// The replication configuration of `registry`, read with `client` (one for that account and
/// Region); empty when replication was never configured.
pub async fn replication_configuration(
    client: &Client,
    registry: &Destination,
) -> Result<ReplicationConfiguration, RegistryError> {
    const OP: &str = "DescribeRegistry";
    let resource = registry.to_string();
    let output = client
        .describe_registry()
        .send()
        .await
        .map_err(|e| registry_error(OP, resource.clone(), e))?;
    let Some(configuration) = output.replication_configuration() else {
        return Ok(ReplicationConfiguration::default());
    };
    let mut rules = Vec::new();
    for rule in configuration.rules() {
        let mut destinations = Vec::new();
        for d in rule.destinations() {
            destinations.push(Destination::new(
                Region::parse(d.region())
                    .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?,
                AccountId::parse(d.registry_id())
                    .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?,
            ));
        }
        let repository_filters = rule
            .repository_filters()
            .iter()
            .map(|f| RepositoryFilter {
                filter: f.filter().to_owned(),
                filter_type: f.filter_type().as_str().to_owned(),
            })
            .collect();
        rules.push(ReplicationRule {
            destinations,
            repository_filters,
        });
    }
    Ok(ReplicationConfiguration { rules })
}
