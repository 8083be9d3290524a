//! Fits the item layers into their token budgets, evicting what does not fit.
//!
//! Retention order: salience first, weighed against age (batches since the item
//! was last seen), then recency. Kept items are rendered in the order they were
//! first seen, so the layer reads chronologically and stays stable across calls.

use std::cmp::Reverse;

use super::{
    state::{Field, MemoryState},
    tokens::{clip_to_tokens, count_tokens},
};

/// How much one point of salience outweighs one batch of age.
const SALIENCE_WEIGHT: i64 = 4;

/// Marker that opens every rendered line.
pub(crate) const LINE_PREFIX: &str = "- ";

/// Renders `texts` as the layer format: one `- ` item per line.
pub(crate) fn render_lines<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    texts
        .into_iter()
        .map(|t| format!("{LINE_PREFIX}{t}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Renders the items of `field` within `limit` tokens and removes from the
/// state (recording the eviction) every item of that field that did not fit.
pub(crate) fn fit_items(state: &mut MemoryState, field: Field, limit: u32) -> String {
    let batch = state.batch;
    let members: Vec<usize> = (0..state.items.len())
        .filter(|&n| state.items[n].field == field)
        .collect();
    let mut by_retention = members.clone();
    by_retention.sort_by_key(|&n| {
        let item = &state.items[n];
        let age = i64::try_from(batch.saturating_sub(item.last_seen_batch)).unwrap_or(i64::MAX);
        let score = i64::from(item.salience)
            .saturating_mul(SALIENCE_WEIGHT)
            .saturating_sub(age);
        Reverse((score, item.last_seen_batch, n))
    });

    // Greedy by retention order, with each line's own count (+1 for the line
    // break) as a cheap estimate; the exact check below settles it.
    let mut kept = Vec::new();
    let mut used = 0u32;
    for &n in &by_retention {
        let cost = count_tokens(&render_lines([state.items[n].text.as_str()])).saturating_add(1);
        if used.saturating_add(cost) <= limit {
            kept.push(n);
            used = used.saturating_add(cost);
        }
    }
    let mut rendered = render_kept(state, &kept);
    while count_tokens(&rendered) > limit {
        kept.pop();
        rendered = render_kept(state, &kept);
    }
    // Nothing fits whole: show the most worth keeping item shortened rather
    // than an empty layer. The state keeps its full text.
    if kept.is_empty()
        && let Some(&top) = by_retention.first()
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

/// `text` as one rendered line shortened to `limit` tokens, or empty when not
/// even a word fits.
pub(crate) fn clip_line(text: &str, limit: u32) -> String {
    let room = limit.saturating_sub(count_tokens(LINE_PREFIX));
    let clipped = clip_to_tokens(text, room);
    if clipped.is_empty() {
        return String::new();
    }
    let line = render_lines([clipped.as_str()]);
    if count_tokens(&line) <= limit {
        line
    } else {
        String::new()
    }
}

fn render_kept(state: &MemoryState, kept: &[usize]) -> String {
    let mut in_order = kept.to_vec();
    in_order.sort_unstable();
    render_lines(in_order.iter().map(|&n| state.items[n].text.as_str()))
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
        state.record_eviction(field, item.text, item.source_ids);
    }
}
