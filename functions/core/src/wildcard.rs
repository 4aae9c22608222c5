//! Wildcard patterns as AWS writes them, matched in one place. ECR's tag filters (lifecycle
//! `tagPatternList`, tag mutability exclusion filters, replwatch's `--tag`) know `*` alone;
//! IAM policies (`Action`, `Resource`) know `*` and `?`. Both are one matcher with the
//! [`Wildcards`] a caller's syntax has.

/// Which characters of a pattern are wildcards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wildcards {
    /// `*`: any run of characters, none included (ECR's tag filters). `?` matches itself.
    Star,
    /// `*`, and `?` for any one character (IAM).
    StarAndQuestion,
}

/// Whether `text` matches `pattern`. Linear in practice: on a mismatch, only the last `*` is
/// retried one character further.
pub fn matches(pattern: &str, text: &str, wildcards: Wildcards) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), text.chars().collect());
    let any_one = |c: char| c == '?' && wildcards == Wildcards::StarAndQuestion;
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '*' {
            last_star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && (any_one(pattern[p]) || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if let Some((star, matched)) = last_star {
            p = star + 1;
            t = matched + 1;
            last_star = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_wildcards() {
        let iam = |p, t| matches(p, t, Wildcards::StarAndQuestion);
        assert!(iam("ecr:replicate*", "ecr:replicateimage"));
        assert!(iam("a?c*", "abcdef"));
        assert!(iam("*", ""));
        assert!(!iam("a?c", "ac"));
        assert!(!iam("ecr:put*", "ecr:replicateimage"));
    }

    #[test]
    fn ecr_tag_wildcards_take_a_question_mark_literally() {
        let ecr = |p, t| matches(p, t, Wildcards::Star);
        assert!(ecr("a*b*c", "aXbYbZc"));
        assert!(!ecr("a*b*c", "aXbYcZ"));
        assert!(!ecr("v?", "v1"));
        assert!(ecr("v?", "v?"));
    }
}
