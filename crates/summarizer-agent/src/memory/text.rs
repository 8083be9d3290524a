//! Text plumbing for the offline backend: sentence segmentation, word
//! splitting and near-duplicate detection. Pure functions, no allocation
//! order surprises: everything here is deterministic.

use std::collections::BTreeSet;

/// Abbreviations whose trailing dot does not end a sentence ("Dr. Patel").
const ABBREVIATIONS: &[&str] = &[
    "dr", "mr", "mrs", "ms", "st", "vs", "etc", "e.g", "i.e", "no", "approx", "inc", "jr", "sr",
];

/// Words too common to say anything about whether two sentences are the same.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "for", "is", "are", "was", "be",
    "it", "that", "this", "with", "so", "just",
];

/// Jaccard overlap of content words above which two sentences count as the same item.
const NEAR_DUPLICATE_OVERLAP: f64 = 0.8;

/// Splits message content into trimmed sentences. Line breaks always end a
/// sentence; `.`, `!` and `?` end one when followed by whitespace, except after
/// common abbreviations. List markers (`- `, `* `, `1. `) are dropped.
pub(crate) fn sentences(content: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in content.lines() {
        let line = strip_list_marker(line.trim());
        let mut current = String::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            current.push(c);
            let at_boundary = matches!(c, '.' | '!' | '?')
                && chars.peek().is_none_or(|next| next.is_whitespace());
            if at_boundary && !(c == '.' && ends_with_abbreviation(&current)) {
                push_sentence(&mut out, &current);
                current.clear();
            }
        }
        push_sentence(&mut out, &current);
    }
    out
}

fn push_sentence(out: &mut Vec<String>, raw: &str) {
    let collapsed = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().any(char::is_alphanumeric) {
        out.push(collapsed);
    }
}

fn strip_list_marker(line: &str) -> &str {
    for marker in ["- ", "* ", "• "] {
        if let Some(rest) = line.strip_prefix(marker) {
            return rest.trim_start();
        }
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if digits > 0
        && digits <= 2
        && let Some(rest) = line[digits..].strip_prefix(". ")
    {
        return rest.trim_start();
    }
    line
}

fn ends_with_abbreviation(sentence: &str) -> bool {
    let without_dot = sentence.trim_end_matches('.');
    let last = without_dot
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    let last = last.to_lowercase();
    // A single letter ("J. Smith") is an initial, not the end of a sentence.
    (last.chars().count() == 1 && last.chars().all(char::is_alphabetic))
        || ABBREVIATIONS.contains(&last.as_str())
}

/// Lower-cased words: runs of alphanumerics and apostrophes. Punctuation inside
/// numbers is dropped ("$1,500" becomes "1500") so amounts compare equal.
pub(crate) fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let joins_number = matches!(c, ',' | '.')
            && current.chars().last().is_some_and(|p| p.is_ascii_digit())
            && chars.peek().is_some_and(char::is_ascii_digit);
        if c.is_alphanumeric() || ((c == '\'' || c == '’') && !current.is_empty()) {
            current.extend(c.to_lowercase().map(|l| if l == '’' { '\'' } else { l }));
        } else if !joins_number && !current.is_empty() {
            out.push(
                std::mem::take(&mut current)
                    .trim_end_matches('\'')
                    .to_owned(),
            );
        }
    }
    if !current.is_empty() {
        out.push(current.trim_end_matches('\'').to_owned());
    }
    out
}

/// What two texts' near-duplicate check compares, each split into words once
/// (its canonical form, for exact duplicates, and its content words): a
/// text compared with many (a candidate against every item of a memory) is
/// split once instead of twice per comparison.
pub(crate) struct Wording {
    normalised: String,
    content: BTreeSet<String>,
}

impl Wording {
    pub(crate) fn of(text: &str) -> Self {
        let words = words(text);
        let normalised = words.join(" ");
        let content = words
            .into_iter()
            .filter(|w| !STOPWORDS.contains(&w.as_str()))
            .collect();
        Self {
            normalised,
            content,
        }
    }

    /// True when the two texts say the same thing: equal once normalised, or
    /// sharing most of their content words.
    pub(crate) fn near_duplicate(&self, other: &Self) -> bool {
        if self.normalised == other.normalised {
            return true;
        }
        let (wa, wb) = (&self.content, &other.content);
        if wa.len() < 3 || wb.len() < 3 {
            return false;
        }
        let shared = wa.intersection(wb).count();
        let union = wa.len() + wb.len() - shared;
        // Counts of words in one sentence: far below f64's exact-integer range.
        #[allow(clippy::cast_precision_loss)]
        let overlap = shared as f64 / union as f64;
        overlap >= NEAR_DUPLICATE_OVERLAP
    }
}

/// Openings that announce a correction and say nothing themselves.
const CORRECTION_OPENERS: &[&str] = &["actually", "sorry", "correction", "oh", "wait", "update"];

/// True when `newer` restates the subject of `older` with a different,
/// specific value: "Actually my deductible is $2,000." corrects "My
/// deductible is $1,500.". Only "my/our <1-3 words> is/are/was <value>" with
/// a number or a name in both values counts, so chatty statements about the
/// same subject ("my kids are excited") never replace facts.
pub(crate) fn supersedes(newer: &str, older: &str) -> bool {
    match (subject_value(newer), subject_value(older)) {
        (Some((subject_new, value_new)), Some((subject_old, value_old))) => {
            subject_new == subject_old && value_new != value_old
        }
        _ => false,
    }
}

fn subject_value(text: &str) -> Option<(String, String)> {
    // One normalised word per raw token, so both views stay aligned.
    let raw: Vec<&str> = text.split_whitespace().collect();
    let lowered: Vec<String> = raw.iter().map(|t| words(t).join("")).collect();
    let start = lowered
        .iter()
        .take_while(|w| CORRECTION_OPENERS.contains(&w.as_str()))
        .count();
    if !matches!(lowered.get(start).map(String::as_str), Some("my" | "our")) {
        return None;
    }
    let copula = lowered
        .iter()
        .skip(start + 2)
        .take(3)
        .position(|w| matches!(w.as_str(), "is" | "are" | "was"))
        .map(|p| p + start + 2)?;
    let value_raw = &raw[copula + 1..];
    let specific = value_raw.iter().any(|t| {
        t.chars().any(|c| c.is_ascii_digit())
            || t.chars().next().is_some_and(char::is_uppercase) && *t != "I"
    });
    if !specific {
        return None;
    }
    Some((
        lowered[start..copula].join(" "),
        lowered[copula + 1..].join(" "),
    ))
}

/// The clauses of a compound statement ("My deductible is $1,500 and my
/// out-of-pocket maximum is $6,000."), so a correction replaces only the
/// clause it corrects.
pub(crate) fn clauses(text: &str) -> Vec<String> {
    text.trim_end_matches(['.', '!'])
        .split(" and ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near_duplicate(a: &str, b: &str) -> bool {
        Wording::of(a).near_duplicate(&Wording::of(b))
    }

    #[test]
    fn sentences_split_on_terminators_and_lines_but_not_abbreviations() {
        let got = sentences(
            "My doctor is Dr. Patel at St. Mary's. I pay $1,500.50 a year!\n- Is that a lot?",
        );
        assert_eq!(
            got,
            vec![
                "My doctor is Dr. Patel at St. Mary's.",
                "I pay $1,500.50 a year!",
                "Is that a lot?"
            ]
        );
    }

    #[test]
    fn words_keep_amounts_and_contractions_together() {
        assert_eq!(
            words("I'm paying $1,500.00, OK?"),
            vec!["i'm", "paying", "150000", "ok"]
        );
    }

    #[test]
    fn near_duplicates_are_detected_by_normalisation_and_overlap() {
        assert!(near_duplicate(
            "My deductible is $1,500.",
            "my deductible is 1500"
        ));
        assert!(near_duplicate(
            "My plan is the Blue Shield Silver PPO",
            "My plan is the Blue Shield Silver PPO plan"
        ));
        assert!(!near_duplicate(
            "My deductible is $1,500.",
            "My deductible is $2,000."
        ));
    }

    #[test]
    fn a_new_value_for_the_same_subject_supersedes_the_old_one() {
        assert!(supersedes(
            "Actually, my deductible is $2,000.",
            "My deductible is $1,500."
        ));
        assert!(!supersedes(
            "My deductible is $1,500.",
            "My deductible is $1,500."
        ));
        assert!(!supersedes(
            "My kids are excited about summer.",
            "My kids are 5 and 7."
        ));
        assert!(!supersedes("My copay is $30.", "My deductible is $1,500."));
        assert!(supersedes(
            "Actually, my out-of-pocket maximum is $7,000.",
            "my out-of-pocket maximum is $6,000"
        ));
    }
}
