//! Heuristics deciding what a sentence is: a fact the user states about
//! themselves, an assistant's guess about the user, or a reply confirming or
//! denying that guess. Tuned for health-insurance navigation chats (plans,
//! deductibles, member ids, claims, prescriptions, providers).

use super::lexicon::{
    AFFIRMATIONS, DENIALS, DOMAIN_WORDS, EVENT_VERBS, FILLERS, FIRST_PERSON, FUNCTION_WORDS,
    HEDGES, MONTHS, NOT_DENIALS, PLEASANTRIES, REQUEST_OPENINGS, STATIVE_VERBS, TIME_WORDS,
};
use crate::memory::text::words;

/// Minimum score for a user sentence to be remembered as a fact.
const FACT_THRESHOLD: u32 = 3;

/// How a user reply relates to the assistant message just before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    Confirms,
    Denies,
    Neither,
}

/// Salience of a user sentence as a fact about the user, or `None` when it
/// is not one (a question, a request, a pleasantry, too little signal).
pub(crate) fn fact_salience(sentence: &str) -> Option<u32> {
    let ws = words(sentence);
    let normalised = ws.join(" ");
    if ws.is_empty() || PLEASANTRIES.iter().any(|p| normalised == *p) {
        return None;
    }
    let has_id = sentence.split_whitespace().any(is_identifier);
    let has_digit = sentence.chars().any(|c| c.is_ascii_digit());
    let first_person = ws.iter().any(|w| FIRST_PERSON.contains(&w.as_str()));
    let stative = ws.windows(2).any(|p| {
        matches!(p[0].as_str(), "i" | "we")
            && (STATIVE_VERBS.contains(&p[1].as_str()) || EVENT_VERBS.contains(&p[1].as_str()))
    }) || ws
        .iter()
        .any(|w| matches!(w.as_str(), "i'm" | "i've" | "we're" | "we've"));
    let timed = ws.iter().any(|w| TIME_WORDS.contains(&w.as_str()));
    let content = ws
        .iter()
        .filter(|w| !FUNCTION_WORDS.contains(&w.as_str()))
        .count();
    let domain = ws
        .iter()
        .filter(|w| DOMAIN_WORDS.contains(&w.as_str()))
        .count();
    let dated = ws
        .iter()
        .any(|w| MONTHS.contains(&w.as_str()) && w != "may");

    let mut score = 0u32;
    score += if first_person { 2 } else { 0 };
    score += u32::from(stative);
    score += if has_digit { 2 } else { 0 };
    score += if has_id { 2 } else { 0 };
    score += u32::try_from(domain.min(3)).unwrap_or(3);
    score += u32::try_from(capitalised_entities(sentence).min(2)).unwrap_or(2);
    score += u32::from(dated);
    score += if timed { 2 } else { 0 };
    score += u32::from(content >= 6) + u32::from(content >= 10);

    let asks = sentence.trim_end().ends_with('?') || starts_with_any(&normalised, REQUEST_OPENINGS);
    if asks {
        // A question only tells us something when it names a concrete thing.
        score = score.saturating_sub(if has_id { 1 } else { 6 });
    }
    (score >= FACT_THRESHOLD && (ws.len() >= 3 || has_id)).then_some(score)
}

/// The inference stated by an assistant sentence (tag questions such as
/// ", is that right?" removed), or `None` when the sentence is not a guess
/// about the user's situation.
pub(crate) fn inference(sentence: &str) -> Option<String> {
    let normalised = words(sentence).join(" ");
    let hedged = HEDGES.iter().any(|h| contains_phrase(&normalised, h));
    if !hedged {
        return None;
    }
    let ws = words(sentence);
    let about_user = ws
        .iter()
        .any(|w| matches!(w.as_str(), "you" | "your" | "you're" | "you've"))
        || ws.iter().any(|w| DOMAIN_WORDS.contains(&w.as_str()))
        || sentence.chars().any(|c| c.is_ascii_digit());
    if !about_user {
        return None;
    }
    let trimmed = sentence.trim();
    if !trimmed.ends_with('?') {
        return Some(trimmed.to_owned());
    }
    // "It sounds like you have a PPO, is that right?" states a guess; a
    // question without such a tag ("Might you have a PPO?") does not.
    let (head, tag) = trimmed.rsplit_once(',')?;
    (words(tag).len() <= 4 && words(head).len() >= 3).then(|| format!("{}.", head.trim()))
}

/// `sentence` without leading interjections ("Wow, ", "Oh yeah! "): they
/// cost tokens and say nothing.
pub(crate) fn trim_filler(sentence: &str) -> String {
    let mut rest = sentence.trim();
    while let Some((first, tail)) = rest.split_once(' ') {
        let bare = first
            .trim_end_matches([',', '!', '.', '\u{2026}'])
            .to_lowercase();
        let punctuated = first.ends_with([',', '!', '.', '\u{2026}']);
        if !FILLERS.contains(&bare.as_str()) || !(punctuated || bare == "oh") {
            break;
        }
        rest = tail.trim_start();
    }
    capitalise(rest)
}

/// Classifies a user message as a reply to the preceding assistant message.
pub(crate) fn reply_kind(first_sentence: &str) -> Reply {
    let normalised = words(first_sentence).join(" ");
    if starts_with_any(&normalised, DENIALS) && !starts_with_any(&normalised, NOT_DENIALS) {
        Reply::Denies
    } else if starts_with_any(&normalised, AFFIRMATIONS) {
        Reply::Confirms
    } else {
        Reply::Neither
    }
}

/// `sentence` without a leading "Yes," / "Correct —" so the rest can stand as a fact.
pub(crate) fn strip_reply_opening(sentence: &str) -> String {
    let mut rest = sentence.trim();
    for opening in AFFIRMATIONS.iter().chain(DENIALS) {
        let n = opening.len();
        if rest.len() > n
            && rest.is_char_boundary(n)
            && rest[..n].eq_ignore_ascii_case(opening)
            && rest[n..].starts_with([',', '.', '!', ' ', ';', ':', '—'])
        {
            rest = rest[n..].trim_start_matches(|c: char| !c.is_alphanumeric());
            break;
        }
    }
    for conjunction in ["and ", "also ", "but "] {
        if rest.len() > conjunction.len()
            && rest.is_char_boundary(conjunction.len())
            && rest[..conjunction.len()].eq_ignore_ascii_case(conjunction)
        {
            rest = &rest[conjunction.len()..];
        }
    }
    capitalise(rest)
}

/// Turns a confirmed assistant guess into the user's own first-person fact:
/// "It sounds like your plan is probably a PPO." becomes "My plan is a PPO."
pub(crate) fn as_confirmed_fact(inference: &str) -> String {
    const LEADING: &[&str] = &[
        "it sounds like ",
        "sounds like ",
        "it seems like ",
        "it seems that ",
        "it seems ",
        "it looks like ",
        "it appears that ",
        "it appears ",
        "i think ",
        "i assume ",
        "i'm assuming ",
        "assuming ",
        "i suspect ",
        "i guess ",
        "presumably ",
        "perhaps ",
        "probably ",
        "likely ",
        "maybe ",
    ];
    let mut text = inference.trim();
    let mut stripped = true;
    while stripped {
        stripped = false;
        for lead in LEADING {
            if text.len() > lead.len()
                && text.is_char_boundary(lead.len())
                && text[..lead.len()].eq_ignore_ascii_case(lead)
            {
                text = text[lead.len()..].trim_start_matches([',', ' ']);
                stripped = true;
            }
        }
    }
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        let bare = token
            .trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
            .to_lowercase();
        let followed = i + 1 < tokens.len();
        let swap = match bare.as_str() {
            "probably" | "likely" | "perhaps" | "possibly" | "presumably" => Swap::Drop,
            "may" | "might" if followed && i > 0 => Swap::Drop,
            "your" => Swap::To("my"),
            "yours" => Swap::To("mine"),
            "you're" => Swap::To("I'm"),
            "you've" => Swap::To("I've"),
            "you'll" => Swap::To("I'll"),
            "you" if i == 0 || tokens.get(i + 1).is_some_and(|n| is_verb_after_you(n)) => {
                Swap::To("I")
            }
            "you" => Swap::To("me"),
            "are" if out.last().is_some_and(|p| p == "I") => Swap::To("am"),
            "were" if out.last().is_some_and(|p| p == "I") => Swap::To("was"),
            _ => Swap::Keep,
        };
        match swap {
            Swap::Drop => {}
            Swap::Keep => out.push((*token).to_owned()),
            Swap::To(word) => {
                // Keep trailing punctuation: "you." becomes "me.".
                let suffix: String = token
                    .chars()
                    .skip_while(|c| c.is_alphanumeric() || *c == '\'')
                    .collect();
                out.push(format!("{word}{suffix}"));
            }
        }
    }
    capitalise(&out.join(" "))
}

/// What happens to one word when a guess is restated as the user's fact.
enum Swap {
    Drop,
    Keep,
    To(&'static str),
}

fn is_verb_after_you(next: &str) -> bool {
    let next = next
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    matches!(
        next.as_str(),
        "are"
            | "were"
            | "have"
            | "had"
            | "take"
            | "use"
            | "need"
            | "pay"
            | "see"
            | "get"
            | "live"
            | "work"
            | "switched"
            | "moved"
            | "filed"
            | "called"
            | "already"
            | "still"
            | "also"
            | "may"
            | "might"
            | "probably"
            | "likely"
    )
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Ids and codes: a token mixing letters and digits ("XKH448812", "CLM-2024-0091")
/// or a run of at least four digits.
fn is_identifier(token: &str) -> bool {
    let core = token.trim_matches(|c: char| !c.is_alphanumeric());
    let digits = core.chars().filter(char::is_ascii_digit).count();
    let letters = core.chars().filter(|c| c.is_alphabetic()).count();
    (digits >= 2 && letters >= 1) || digits >= 4
}

/// Capitalised words that do not open the sentence and are not "I": names of
/// plans, drugs, providers and places.
fn capitalised_entities(sentence: &str) -> usize {
    sentence
        .split_whitespace()
        .skip(1)
        .map(|t| t.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|t| t.chars().next().is_some_and(char::is_uppercase))
        .filter(|t| !matches!(*t, "I" | "I'm" | "I've" | "I'd" | "I'll"))
        .count()
}

fn starts_with_any(normalised: &str, phrases: &[&str]) -> bool {
    phrases.iter().any(|p| {
        normalised
            .strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
    })
}

fn contains_phrase(normalised: &str, phrase: &str) -> bool {
    normalised == phrase
        || normalised.starts_with(&format!("{phrase} "))
        || normalised.ends_with(&format!(" {phrase}"))
        || normalised.contains(&format!(" {phrase} "))
}
