//! Temporal anchoring: a fact said on 8 May 2023 about "yesterday" means
//! 7 May 2023 forever after. Memory outlives the conversation's "now", so
//! relative expressions are annotated with the calendar date they meant.

use chrono::{Datelike, Days, Months, NaiveDate, NaiveDateTime, Weekday};

/// The calendar day of a message timestamp: RFC 3339, or a naive
/// `YYYY-MM-DDTHH:MM:SS` / `YYYY-MM-DD` (treated as local to the chat).
pub(crate) fn parse_day(timestamp: &str) -> Option<NaiveDate> {
    let ts = timestamp.trim();
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|d| d.date_naive())
        .or_else(|_| NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S").map(|d| d.date()))
        .or_else(|_| NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.f").map(|d| d.date()))
        .or_else(|_| NaiveDate::parse_from_str(ts, "%Y-%m-%d"))
        .ok()
}

/// "8 May 2023": short, unambiguous, and how people write dates in answers.
pub(crate) fn human_day(day: NaiveDate) -> String {
    format!("{} {}", day.day(), day.format("%B %Y"))
}

/// `sentence` with the first relative time expression followed by the date
/// it refers to, e.g. "I went yesterday" -> "I went yesterday (7 May 2023)".
pub(crate) fn anchor(sentence: &str, day: NaiveDate) -> String {
    let lower = sentence.to_lowercase();
    // Byte offsets of `lower` equal those of `sentence` only for ASCII-only
    // lowercasing; skip anything else rather than split a character.
    if lower.len() != sentence.len() {
        return sentence.to_owned();
    }
    let mut best: Option<(usize, usize, String)> = None;
    for (phrase, meaning) in expressions(day) {
        if let Some(at) = find_phrase(&lower, &phrase)
            && best.as_ref().is_none_or(|(b, _, _)| at < *b)
        {
            best = Some((at, phrase.len(), meaning));
        }
    }
    match best {
        Some((at, len, meaning)) => {
            let end = at + len;
            format!("{} ({meaning}){}", &sentence[..end], &sentence[end..])
        }
        None => sentence.to_owned(),
    }
}

/// Relative expressions and what they mean on `day`, longest first so
/// "last weekend" wins over "last week".
fn expressions(day: NaiveDate) -> Vec<(String, String)> {
    let shift = |n: u64, back: bool| {
        if back {
            day.checked_sub_days(Days::new(n))
        } else {
            day.checked_add_days(Days::new(n))
        }
    };
    let fmt = |d: Option<NaiveDate>| d.map(human_day).unwrap_or_default();
    let month = |back: bool| {
        let m = if back {
            day.checked_sub_months(Months::new(1))
        } else {
            day.checked_add_months(Months::new(1))
        };
        m.map(|m| m.format("%B %Y").to_string()).unwrap_or_default()
    };
    let today = human_day(day);
    let mut out = vec![
        ("last weekend".into(), format!("the weekend before {today}")),
        ("this weekend".into(), format!("the weekend of {today}")),
        ("next weekend".into(), format!("the weekend after {today}")),
        ("last week".into(), format!("the week before {today}")),
        ("next week".into(), format!("the week after {today}")),
        ("this week".into(), format!("the week of {today}")),
        ("last month".into(), month(true)),
        ("next month".into(), month(false)),
        ("this month".into(), day.format("%B %Y").to_string()),
        ("last year".into(), (day.year() - 1).to_string()),
        ("next year".into(), (day.year() + 1).to_string()),
        ("this year".into(), day.year().to_string()),
        ("yesterday".into(), fmt(shift(1, true))),
        ("tomorrow".into(), fmt(shift(1, false))),
        ("tonight".into(), today.clone()),
        ("today".into(), today.clone()),
        ("this morning".into(), today.clone()),
        ("few days ago".into(), format!("a few days before {today}")),
        (
            "couple of days ago".into(),
            format!("a few days before {today}"),
        ),
        ("two days ago".into(), fmt(shift(2, true))),
        ("three days ago".into(), fmt(shift(3, true))),
    ];
    for weekday in [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ] {
        let name = weekday_name(weekday);
        out.push((
            format!("last {}", name.to_lowercase()),
            format!("the {name} before {today}"),
        ));
        out.push((
            format!("next {}", name.to_lowercase()),
            format!("the {name} after {today}"),
        ));
    }
    for (short, weekday) in [
        ("mon", Weekday::Mon),
        ("tues", Weekday::Tue),
        ("tue", Weekday::Tue),
        ("wed", Weekday::Wed),
        ("thurs", Weekday::Thu),
        ("thu", Weekday::Thu),
        ("fri", Weekday::Fri),
        ("sat", Weekday::Sat),
        ("sun", Weekday::Sun),
    ] {
        let name = weekday_name(weekday);
        out.push((
            format!("last {short}"),
            format!("the {name} before {today}"),
        ));
    }
    out.retain(|(_, meaning)| !meaning.is_empty());
    out
}

fn weekday_name(weekday: Weekday) -> &'static str {
    match weekday {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// Byte offset of `phrase` in `haystack` at word boundaries.
fn find_phrase(haystack: &str, phrase: &str) -> Option<usize> {
    let bytes = haystack.as_bytes();
    let mut from = 0;
    while let Some(rel) = haystack.get(from..)?.find(phrase) {
        let at = from + rel;
        let end = at + phrase.len();
        let before_ok = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
        let after_ok = end >= bytes.len() || !bytes[end].is_ascii_alphanumeric();
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn may_8() -> NaiveDate {
        NaiveDate::from_ymd_opt(2023, 5, 8).unwrap_or_default()
    }

    #[test]
    fn timestamps_with_and_without_offsets_parse_to_their_day() {
        assert_eq!(parse_day("2023-05-08T13:56:00"), Some(may_8()));
        assert_eq!(parse_day("2023-05-08T13:56:00Z"), Some(may_8()));
        assert_eq!(parse_day("2023-05-08"), Some(may_8()));
        assert_eq!(parse_day("last tuesday"), None);
    }

    #[test]
    fn relative_expressions_are_anchored_to_the_calendar() {
        let cases = [
            (
                "I went to a support group yesterday.",
                "I went to a support group yesterday (7 May 2023).",
            ),
            (
                "We moved last weekend!",
                "We moved last weekend (the weekend before 8 May 2023)!",
            ),
            (
                "I got married last year.",
                "I got married last year (2022).",
            ),
            (
                "Ran a charity race last Sunday",
                "Ran a charity race last Sunday (the Sunday before 8 May 2023)",
            ),
            ("Nothing relative here.", "Nothing relative here."),
            ("Yesterdays are gone.", "Yesterdays are gone."),
        ];
        for (input, want) in cases {
            assert_eq!(anchor(input, may_8()), want);
        }
    }
}
