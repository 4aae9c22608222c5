//! ECR's API shapes as the backfill's domain types, both ways: an image as `DescribeImages`
//! lists it, tag mutability with its exclusion filters. No ECR call is made here.

use aws_sdk_ecr::types::{
    ImageDetail, ImageStatus, ImageTagMutability, ImageTagMutabilityExclusionFilter,
    ImageTagMutabilityExclusionFilterType,
};
use chrono::{DateTime, Utc};
use replwatch_core::backfill::inventory::{ImageRecord, TagMutability};
use replwatch_core::model::Digest;

/// An `aws_smithy_types::DateTime` as chrono's.
pub fn to_chrono(at: &aws_sdk_ecr::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.secs(), at.subsec_nanos())
}

pub fn image_record(detail: &ImageDetail) -> Result<ImageRecord, String> {
    let digest = Digest::parse(detail.image_digest().unwrap_or_default())
        .map_err(|e| format!("image without a valid digest: {e}"))?;
    Ok(ImageRecord {
        digest,
        tags: detail.image_tags().to_vec(),
        pushed_at: detail.image_pushed_at().and_then(to_chrono),
        media_type: detail.image_manifest_media_type().map(str::to_owned),
        size_bytes: detail
            .image_size_in_bytes()
            .and_then(|s| u64::try_from(s).ok()),
        // Read leniently: the tracking path reads images through here too and does not need it.
        subject: detail
            .subject_manifest_digest()
            .and_then(|d| Digest::parse(d).ok()),
        artifact_type: detail.artifact_media_type().map(str::to_owned),
        // Absent on images ECR never archived; anything but ACTIVE cannot be pulled.
        archived: detail
            .image_status()
            .is_some_and(|s| *s != ImageStatus::Active),
        children: Vec::new(),
    })
}

/// ECR's tag mutability (absent: `MUTABLE`, ECR's default) with its exclusion filters.
pub fn tag_mutability(
    mode: Option<&ImageTagMutability>,
    filters: &[ImageTagMutabilityExclusionFilter],
) -> Result<TagMutability, String> {
    let tags = || filters.iter().map(|f| f.filter().to_owned()).collect();
    match mode {
        None | Some(ImageTagMutability::Mutable) => Ok(TagMutability::Mutable),
        Some(ImageTagMutability::Immutable) => Ok(TagMutability::Immutable),
        Some(ImageTagMutability::ImmutableWithExclusion) => {
            Ok(TagMutability::ImmutableWithExclusion {
                mutable_tags: tags(),
            })
        }
        Some(ImageTagMutability::MutableWithExclusion) => Ok(TagMutability::MutableWithExclusion {
            immutable_tags: tags(),
        }),
        Some(other) => Err(format!(
            "imageTagMutability {} is not known to this build",
            other.as_str()
        )),
    }
}

/// The inverse of [`tag_mutability`]: the mode and the exclusion filters (wildcards).
pub fn sdk_tag_mutability(
    mutability: &TagMutability,
) -> Result<(ImageTagMutability, Vec<ImageTagMutabilityExclusionFilter>), String> {
    let filters = |tags: &[String]| {
        tags.iter()
            .map(|t| {
                ImageTagMutabilityExclusionFilter::builder()
                    .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                    .filter(t)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match mutability {
        TagMutability::Mutable => (ImageTagMutability::Mutable, Vec::new()),
        TagMutability::Immutable => (ImageTagMutability::Immutable, Vec::new()),
        TagMutability::ImmutableWithExclusion { mutable_tags } => (
            ImageTagMutability::ImmutableWithExclusion,
            filters(mutable_tags)?,
        ),
        TagMutability::MutableWithExclusion { immutable_tags } => (
            ImageTagMutability::MutableWithExclusion,
            filters(immutable_tags)?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_mutability_round_trips_with_its_filters() {
        for mutability in [
            TagMutability::Mutable,
            TagMutability::Immutable,
            TagMutability::ImmutableWithExclusion {
                mutable_tags: vec!["latest".into(), "dev-*".into()],
            },
            TagMutability::MutableWithExclusion {
                immutable_tags: vec!["v*".into()],
            },
        ] {
            let (mode, filters) = sdk_tag_mutability(&mutability).expect("sdk shape");
            assert_eq!(
                tag_mutability(Some(&mode), &filters).expect("back"),
                mutability
            );
        }
        assert_eq!(tag_mutability(None, &[]), Ok(TagMutability::Mutable));
        assert!(tag_mutability(Some(&ImageTagMutability::from("SOMETHING_NEW")), &[]).is_err());
    }
}
