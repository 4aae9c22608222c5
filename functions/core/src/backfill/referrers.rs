//! What refers to an image in a repository: OCI 1.1 referrers (a manifest whose `subject`
//! names the image: cosign and Notation signatures, AWS Signer signatures, SBOMs,
//! attestations), and the legacy cosign scheme, where a signature, attestation or SBOM of
//! `sha256:<hex>` is an image tagged `sha256-<hex>.sig`, `.att` or `.sbom`.
//!
//! ECR stores each referrer as an image of the subject's repository and replication copies
//! them; a backfill and an audit must too, or a signed image arrives unsigned. The plan, the
//! audit and `status` read them here, from the inventory `DescribeImages` gives (its
//! `subjectManifestDigest`), so following referrers costs no call of its own.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::backfill::inventory::ImageRecord;
use crate::model::Digest;

/// The legacy cosign tag suffixes: signature, attestation, SBOM.
const LEGACY_COSIGN_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];

/// The digest a legacy cosign tag (`sha256-<64 hex>.sig|.att|.sbom`) names, if it is one.
pub fn legacy_cosign_subject(tag: &str) -> Option<Digest> {
    let stem = LEGACY_COSIGN_SUFFIXES
        .iter()
        .find_map(|suffix| tag.strip_suffix(suffix))?;
    let (algorithm, hex) = stem.split_once('-')?;
    Digest::parse(&format!("{algorithm}:{hex}")).ok()
}

/// The image `image` refers to: its OCI `subject`, else the digest a legacy cosign tag names.
pub fn subject_of(image: &ImageRecord) -> Option<Digest> {
    image
        .subject
        .clone()
        .or_else(|| image.tags.iter().find_map(|t| legacy_cosign_subject(t)))
}

/// The referrer relationships among the images of one repository.
pub struct Referrers<'a> {
    images: HashMap<&'a Digest, &'a ImageRecord>,
    by_subject: HashMap<Digest, Vec<&'a ImageRecord>>,
}

impl<'a> Referrers<'a> {
    pub fn of(images: &'a [ImageRecord]) -> Self {
        let mut by_subject: HashMap<Digest, Vec<&'a ImageRecord>> = HashMap::new();
        for image in images {
            if let Some(subject) = subject_of(image)
                && subject != image.digest
            {
                by_subject.entry(subject).or_default().push(image);
            }
        }
        for referrers in by_subject.values_mut() {
            referrers.sort_by(|a, b| (a.pushed_at, &a.digest).cmp(&(b.pushed_at, &b.digest)));
        }
        Self {
            images: images.iter().map(|i| (&i.digest, i)).collect(),
            by_subject,
        }
    }

    /// Whether any image of the repository refers to another.
    pub fn is_empty(&self) -> bool {
        self.by_subject.is_empty()
    }

    /// The images whose subject is `digest` (not their own referrers).
    pub fn direct(&self, digest: &Digest) -> &[&'a ImageRecord] {
        self.by_subject.get(digest).map_or(&[], Vec::as_slice)
    }

    /// Everything that refers to `roots` or to the child manifests of an index among them,
    /// recursively (a signature on an SBOM), each once, subjects before their referrers (the
    /// order a copy must keep), without the roots themselves.
    pub fn closure<'d>(&self, roots: impl IntoIterator<Item = &'d Digest>) -> Vec<&'a ImageRecord> {
        let mut seen: HashSet<Digest> = HashSet::new();
        let mut queue: VecDeque<Digest> = VecDeque::new();
        for root in roots {
            if seen.insert(root.clone()) {
                queue.push_back(root.clone());
            }
        }
        let mut out = Vec::new();
        while let Some(digest) = queue.pop_front() {
            let children = self
                .images
                .get(&digest)
                .map_or(&[][..], |image| image.children.as_slice());
            for child in children {
                if seen.insert(child.clone()) {
                    queue.push_back(child.clone());
                }
            }
            for referrer in self.direct(&digest) {
                if seen.insert(referrer.digest.clone()) {
                    out.push(*referrer);
                    queue.push_back(referrer.digest.clone());
                }
            }
        }
        out
    }
}

/// What kind of referrer `image` is, for people: from its artifact type, else its legacy tag.
pub fn referrer_kind(image: &ImageRecord) -> &'static str {
    let artifact = image.artifact_type.as_deref().unwrap_or_default();
    if artifact.contains("notary") || artifact.contains("sig") {
        return "signature";
    }
    if artifact.contains("spdx") || artifact.contains("cyclonedx") || artifact.contains("sbom") {
        return "SBOM";
    }
    if artifact.contains("in-toto") || artifact.contains("attestation") {
        return "attestation";
    }
    for tag in &image.tags {
        if legacy_cosign_subject(tag).is_some() {
            return match tag.rsplit('.').next() {
                Some("sig") => "signature",
                Some("att") => "attestation",
                _ => "SBOM",
            };
        }
    }
    "referrer"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).expect("digest")
    }

    fn image(n: u8, subject: Option<u8>, tags: &[&str], children: &[u8]) -> ImageRecord {
        ImageRecord {
            digest: digest(n),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            pushed_at: None,
            media_type: None,
            size_bytes: None,
            subject: subject.map(digest),
            artifact_type: None,
            archived: false,
            children: children.iter().copied().map(digest).collect(),
        }
    }

    #[test]
    fn legacy_cosign_tags_name_their_subject() {
        let hex = "ab".repeat(32);
        for suffix in ["sig", "att", "sbom"] {
            assert_eq!(
                legacy_cosign_subject(&format!("sha256-{hex}.{suffix}")),
                Some(Digest::parse(&format!("sha256:{hex}")).expect("digest"))
            );
        }
        for not_one in [
            "v1",
            "sha256-abc.sig",
            &format!("sha256-{hex}.txt"),
            &format!("sha256:{hex}.sig"),
        ] {
            assert_eq!(legacy_cosign_subject(not_one), None, "{not_one}");
        }
    }

    #[test]
    fn the_closure_follows_children_and_referrers_of_referrers_subjects_first() {
        // 1: an index of 2 and 3. 4 signs the index, 5 is an SBOM of 1, 6 signs the SBOM,
        // 7 attests child 3, 8 a legacy cosign signature of 1; 9 signs an unrelated image 10.
        let hex = format!("{:02x}", 1).repeat(32);
        let legacy = format!("sha256-{hex}.sig");
        let images = vec![
            image(1, None, &["v1"], &[2, 3]),
            image(2, None, &[], &[]),
            image(3, None, &[], &[]),
            image(4, Some(1), &[], &[]),
            image(5, Some(1), &[], &[]),
            image(6, Some(5), &[], &[]),
            image(7, Some(3), &[], &[]),
            image(8, None, &[&legacy], &[]),
            image(9, Some(10), &[], &[]),
            image(10, None, &["other"], &[]),
        ];
        let referrers = Referrers::of(&images);
        let closure: Vec<Digest> = referrers
            .closure([&digest(1)])
            .into_iter()
            .map(|i| i.digest.clone())
            .collect();
        let mut sorted = closure.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [4, 5, 6, 7, 8].into_iter().map(digest).collect::<Vec<_>>()
        );
        let position = |n: u8| closure.iter().position(|d| *d == digest(n));
        assert!(position(5) < position(6), "the SBOM before its signature");
        assert!(referrers.closure([&digest(2)]).is_empty());
        assert_eq!(referrers.direct(&digest(10)).len(), 1);
    }
}
