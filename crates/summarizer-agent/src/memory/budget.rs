//! Fits the state into the token budgets and renders the three layers,
//! evicting (and recording) what does not fit.
//!
//! Retention order: salience first, weighed against age (batches since the
//! item was last seen) and against its length, so many short specific facts
//! beat one long one. Kept items are rendered in the order they were first
//! seen, so each layer reads chronologically and stays stable across calls.
//! Budgets are filled in priority order (user facts, inferences, summary):
//! what one layer leaves unused of the total, the next may take, up to its
//! own limit.

use std::cmp::Reverse;

use super::{
    state::{EvictionReason, Field, Item, MemoryState, Speaker},
    tokens::{clip_to_tokens, count_tokens},
};
use crate::tool::TokenLimits;

/// How much one point of salience outweighs one batch of age.
const SALIENCE_WEIGHT: i64 = 24;

/// Tokens an item costs beyond its text: the line marker and break, and a
/// share of the date header it may need.
const ITEM_OVERHEAD: i64 = 6;

/// Marker that opens every rendered line.
pub(crate) const LINE_PREFIX: &str = "- ";

/// The three rendered layers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Layers {
    pub user_confirmed: String,
    pub llm_inferred: String,
    pub general_summary: String,
}

/// Renders every layer within its limit and all of them within `limits.total`.
pub(crate) fn fit_memory(state: &mut MemoryState, limits: TokenLimits) -> Layers {
    let mut left = limits.total;
    let mut fit = |state: &mut MemoryState, field: Field, own: u32| {
        let rendered = fit_field(state, field, own.min(left));
        left = left.saturating_sub(count_tokens(&rendered));
        rendered
    };
    let user_confirmed = fit(state, Field::UserConfirmed, limits.user_confirmed);
    let llm_inferred = fit(state, Field::LlmInferred, limits.llm_inferred);
    let general_summary = fit(state, Field::GeneralSummary, limits.general_summary);
    Layers {
        user_confirmed,
        llm_inferred,
        general_summary,
    }
}

/// Renders the items of `field` within `limit` tokens and removes from the
/// state (recording the eviction) every item of that field that did not fit.
pub(crate) fn fit_field(state: &mut MemoryState, field: Field, limit: u32) -> String {
    let batch = state.batch;
    let members: Vec<usize> = (0..state.items.len())
        .filter(|&n| state.items[n].field == field)
        .collect();
    let costs: Vec<(usize, i64)> = members
        .iter()
        .map(|&n| {
            (
                n,
                i64::from(count_tokens(&state.items[n].text)) + ITEM_OVERHEAD,
            )
        })
        .collect();
    let mut by_retention = costs.clone();
    by_retention.sort_by_key(|&(n, cost)| {
        let item = &state.items[n];
        Reverse((retention(item, batch, cost), item.last_seen_batch, n))
    });

    // Greedy by retention with estimated costs; the exact check below settles it.
    let mut kept = Vec::new();
    let mut used = 0i64;
    for &(n, cost) in &by_retention {
        if used + cost <= i64::from(limit) {
            kept.push(n);
            used += cost;
        }
    }
    let mut rendered = render(state, field, &kept);
    while count_tokens(&rendered) > limit {
        kept.pop();
        rendered = render(state, field, &kept);
    }
    // Nothing fits whole: show the item most worth keeping shortened rather
    // than an empty layer. The state keeps its full text.
    if kept.is_empty()
        && let Some(&(top, _)) = by_retention.first()
    {
        let clipped = clip_line(&state.items[top].text, limit);
        if !clipped.is_empty() {
            kept.push(top);
            rendered = clipped;
        }
    }
    evict_unkept(state, &members, &kept, field);
    rendered
}

/// Worth of keeping `item` per token it costs, scaled to stay integral.
fn retention(item: &Item, batch: u64, cost: i64) -> i64 {
    let age = i64::try_from(batch.saturating_sub(item.last_seen_batch)).unwrap_or(i64::MAX);
    let worth = i64::from(item.salience)
        .saturating_mul(SALIENCE_WEIGHT)
        .saturating_sub(age)
        .max(1);
    // Square-root length discount: long items pay for their length, but not
    // fully, or only fragments would survive.
    let length = (cost.max(1) as f64).sqrt();
    // Bounded by the salience cap times the weight: far inside f64's range.
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let scaled = (worth as f64 * 1000.0 / length) as i64;
    scaled
}

/// `text` as one rendered line shortened to `limit` tokens, or empty when not
/// even a word fits.
pub(crate) fn clip_line(text: &str, limit: u32) -> String {
    let room = limit.saturating_sub(count_tokens(LINE_PREFIX));
    let clipped = clip_to_tokens(text, room);
    if clipped.is_empty() {
        return String::new();
    }
    let line = format!("{LINE_PREFIX}{clipped}");
    if count_tokens(&line) <= limit {
        line
    } else {
        String::new()
    }
}

/// The kept items of one field in their first-seen order, as the layer text.
fn render(state: &MemoryState, field: Field, kept: &[usize]) -> String {
    let mut in_order = kept.to_vec();
    in_order.sort_unstable();
    let items = in_order.iter().map(|&n| &state.items[n]);
    match field {
        Field::UserConfirmed | Field::LlmInferred => render_items(items),
        Field::GeneralSummary => render_summary(items),
    }
}

/// One `- ` line per item; a `[date]` header opens the first item of each day.
fn render_items<'a>(items: impl Iterator<Item = &'a Item>) -> String {
    let mut lines = Vec::new();
    let mut previous_date: Option<&str> = None;
    for item in items {
        let date = item.date.as_deref();
        match date {
            Some(day) if date != previous_date => {
                lines.push(format!("{LINE_PREFIX}[{day}] {}", item.text));
            }
            _ => lines.push(format!("{LINE_PREFIX}{}", item.text)),
        }
        previous_date = date.or(previous_date);
    }
    lines.join("\n")
}

/// One line per batch: its date (or number), then what each side said.
fn render_summary<'a>(items: impl Iterator<Item = &'a Item>) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut current: Option<(u64, Speaker)> = None;
    for item in items {
        let same_batch = current.is_some_and(|(b, _)| b == item.first_batch);
        if !same_batch {
            let head = match &item.date {
                Some(day) => format!("{LINE_PREFIX}[{day}]"),
                None => format!("{LINE_PREFIX}Batch {}:", item.first_batch),
            };
            lines.push(head);
        }
        let Some(line) = lines.last_mut() else {
            continue;
        };
        if !same_batch || current.is_some_and(|(_, s)| s != item.speaker) {
            line.push_str(match item.speaker {
                Speaker::User => " User:",
                Speaker::Assistant => " Assistant:",
                Speaker::Narrator => "",
            });
        }
        line.push(' ');
        line.push_str(&item.text);
        current = Some((item.first_batch, item.speaker));
    }
    lines.join("\n")
}

fn evict_unkept(state: &mut MemoryState, members: &[usize], kept: &[usize], field: Field) {
    let mut evicted: Vec<usize> = members
        .iter()
        .copied()
        .filter(|n| !kept.contains(n))
        .collect();
    // Remove from the back so the remaining indices stay valid.
    evicted.sort_unstable_by(|a, b| b.cmp(a));
    let mut removed = Vec::with_capacity(evicted.len());
    for n in evicted {
        removed.push(state.items.remove(n));
    }
    // Record oldest first so the eviction log reads chronologically.
    for item in removed.into_iter().rev() {
        state.open_inferences.retain(|t| t != &item.text);
        state.record_eviction(field, item.text, item.source_ids, EvictionReason::Budget);
    }
}
