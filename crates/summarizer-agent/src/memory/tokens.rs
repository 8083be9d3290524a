//! Token counting with `cl100k_base`, the budget unit of every memory layer.
//!
//! The tokenizer is `bpe-openai`'s: the same counts as OpenAI's `tiktoken`
//! (its vocabulary and pre-tokenization pattern) at about 2.5 times the speed
//! of `tiktoken-rs` (docs/benchmarks.md, fourteenth session). Its tables are
//! built at compile time and loaded once per process; [`warm_tokenizer`] lets
//! `main` pay for the load before serving.

use std::sync::OnceLock;

/// Appended to text shortened to fit a budget, so readers can tell.
const ELLIPSIS: &str = "…";

/// Builds the tokenizer now so the first request does not pay for it.
pub fn warm_tokenizer() {
    let _ = count_tokens("warm up");
}

/// Texts shorter than this are encoded every time (cheaper than a lookup).
const MEMO_MIN_BYTES: usize = 64;
/// Counts remembered: each call counts the prior memory's three layers (last
/// call's output) and its own output several times over while fitting budgets.
const MEMO_ENTRIES: usize = 65_536;

type Memo = std::sync::Mutex<std::collections::HashMap<(u64, usize), u32>>;

static MEMO: OnceLock<Memo> = OnceLock::new();

/// Number of `cl100k_base` tokens in `text` (special-token markers count as
/// ordinary text). Longer texts' counts are remembered by their hash and
/// length: BPE encoding is the agent's largest CPU cost per call, and the same
/// layers are counted again and again.
pub fn count_tokens(text: &str) -> u32 {
    if text.len() < MEMO_MIN_BYTES {
        return encode_count(text);
    }
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        (h.finish(), text.len())
    };
    let memo = MEMO.get_or_init(Memo::default);
    let lock = || {
        memo.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    if let Some(n) = lock().get(&key).copied() {
        return n;
    }
    let n = encode_count(text);
    let mut remembered = lock();
    if remembered.len() >= MEMO_ENTRIES {
        // Bounded: start again rather than track recency.
        remembered.clear();
    }
    remembered.insert(key, n);
    n
}

fn encode_count(text: &str) -> u32 {
    u32::try_from(bpe_openai::cl100k_base().count(text)).unwrap_or(u32::MAX)
}

/// Longest prefix of `text` (whole words when possible, ending in `…`) whose
/// token count is at most `max_tokens`; `text` itself when it already fits, and
/// an empty string when not even one character fits.
pub(crate) fn clip_to_tokens(text: &str, max_tokens: u32) -> String {
    if count_tokens(text) <= max_tokens {
        return text.to_owned();
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let by_words = longest_fitting(words.len(), max_tokens, |n| {
        format!("{}{ELLIPSIS}", words[..n].join(" "))
    });
    if let Some(clipped) = by_words {
        return clipped;
    }
    let chars: Vec<char> = text.chars().collect();
    longest_fitting(chars.len(), max_tokens, |n| {
        format!("{}{ELLIPSIS}", chars[..n].iter().collect::<String>())
    })
    .unwrap_or_default()
}

/// Binary search for the largest `n` in `1..=len` whose candidate fits. Token
/// counts grow (weakly) with the prefix length, which makes the search valid.
fn longest_fitting(
    len: usize,
    max_tokens: u32,
    candidate: impl Fn(usize) -> String,
) -> Option<String> {
    let (mut lo, mut hi) = (1usize, len);
    let mut best = None;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        let text = candidate(mid);
        if count_tokens(&text) <= max_tokens {
            best = Some(text);
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_count_equals_a_fresh_one() {
        let long = "My member ID is W123456789 and my deductible is $1,500. ".repeat(20);
        let fresh = encode_count(&long);
        assert_eq!(count_tokens(&long), fresh);
        assert_eq!(count_tokens(&long), fresh, "second count, from the memo");
        let other = format!("{long}x");
        assert_eq!(count_tokens(&other), encode_count(&other));
    }

    #[test]
    fn counting_matches_cl100k() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("hello world"), 2);
        // Counts from OpenAI's tiktoken (`tiktoken-rs` 0.12, `encode_ordinary`):
        // prices, contractions, symbols, runs of whitespace, emoji, accents.
        for (text, tiktoken) in [
            ("My deductible is $1,500 and I've met $312.40 of it.", 18),
            (
                "Prior authorization for Ozempic® was denied — appeal by 2026-12-31?",
                20,
            ),
            ("  multiple   spaces\n\n\nand newlines\t\ttabs  ", 12),
            ("emoji 🚀🏥 and ünïcödé", 15),
            ("'s 've 're LL 123456789", 10),
            // Whitespace alone and at the edges (the pattern's look-ahead).
            (" ", 1),
            ("   ", 1),
            (" \n ", 2),
            ("x  ", 2),
            ("\r\n\r\n", 1),
            ("\u{3000}\u{a0} x", 3),
            ("a\u{200b}b", 3),
            ("<|endoftext|>", 7),
        ] {
            assert_eq!(count_tokens(text), tiktoken, "{text:?}");
        }
    }

    #[test]
    fn clipping_respects_the_budget_and_keeps_short_text() {
        let text = "My member ID is XKH-448812 and my plan is the Aetna Choice POS II plan";
        assert_eq!(clip_to_tokens(text, 100), text);
        for budget in 0..12 {
            let clipped = clip_to_tokens(text, budget);
            assert!(count_tokens(&clipped) <= budget, "{budget}: {clipped}");
        }
        assert!(clip_to_tokens(text, 6).starts_with("My member"));
    }
}
