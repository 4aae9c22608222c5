//! Destination repositories' tag mutability, as this container last read it.
//!
//! A replication event of an open push is looked at in its destination only to raise TAG_LOST
//! at once (the push's deadline check looks there anyway), and ECR drops a tag on replication
//! only in a repository whose tags are immutable. So the event path asks this cache first and
//! skips the look (a `DescribeImages` across Regions, the largest part of an event's cost at
//! 25 destinations) when the tag is mutable there.
//!
//! A setting changed to immutable within [`super::PipelineSettings::repository_settings_ttl`]
//! only delays the alert to the push's deadline check; a setting changed to mutable costs one
//! look, and [`crate::registry::missing_tag`] reads the setting again before any alert.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};

use crate::backfill::inventory::TagMutability;
use crate::model::{Destination, RepositoryName};

/// The most (destination, repository) settings one container remembers, about 5 MB: beyond
/// it, settings read before the TTL are dropped, then all of them. At 25 destinations that is
/// every repository of a registry that pushes to up to 1,300 of them within the TTL; past
/// that, some settings are read again before their TTL.
const MAX_ENTRIES: usize = 32_768;

/// A repository's setting and when it was read.
type ReadSetting = (TagMutability, DateTime<Utc>);

#[derive(Debug, Default)]
pub(super) struct TagMutabilityCache {
    entries: Mutex<HashMap<(Destination, RepositoryName), ReadSetting>>,
}

impl TagMutabilityCache {
    /// The setting of `repository` in `registry` read less than `ttl` before `now`.
    pub(super) fn fresh(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Option<TagMutability> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&(registry.clone(), repository.clone()))
            .filter(|(_, read_at)| now - *read_at < ttl)
            .map(|(mutability, _)| mutability.clone())
    }

    /// Keeps `mutability`, read at `now`, as the setting of `repository` in `registry`.
    pub(super) fn keep(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        mutability: TagMutability,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, read_at)| now - *read_at < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert((registry.clone(), repository.clone()), (mutability, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Region};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_000_000 + seconds, 0).expect("time")
    }

    fn destination() -> Destination {
        Destination::new(
            Region::parse("eu-west-1").expect("region"),
            AccountId::parse("222222222222").expect("account"),
        )
    }

    fn repository(n: usize) -> RepositoryName {
        RepositoryName::parse(&format!("team-a/web-{n}")).expect("repository")
    }

    #[test]
    fn a_setting_is_trusted_for_the_ttl_only() {
        let cache = TagMutabilityCache::default();
        let ttl = TimeDelta::minutes(5);
        cache.keep(
            &destination(),
            &repository(0),
            TagMutability::Mutable,
            at(0),
            ttl,
        );
        assert_eq!(
            cache.fresh(&destination(), &repository(0), at(299), ttl),
            Some(TagMutability::Mutable)
        );
        assert_eq!(
            cache.fresh(&destination(), &repository(0), at(300), ttl),
            None
        );
        assert_eq!(
            cache.fresh(&destination(), &repository(1), at(1), ttl),
            None
        );
    }

    #[test]
    fn many_repositories_keep_the_memory_bounded() {
        let cache = TagMutabilityCache::default();
        let ttl = TimeDelta::minutes(5);
        for n in 0..3 * MAX_ENTRIES {
            cache.keep(
                &destination(),
                &repository(n),
                TagMutability::Mutable,
                at(0),
                ttl,
            );
        }
        let kept = cache.entries.lock().expect("lock").len();
        assert!(kept <= MAX_ENTRIES, "{kept} entries kept");
        let last = repository(3 * MAX_ENTRIES - 1);
        assert!(cache.fresh(&destination(), &last, at(1), ttl).is_some());
    }
}
