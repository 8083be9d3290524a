//! The rolling general summary: one compact line per batch (the most salient
//! thing the user said and what the assistant answered), oldest lines evicted
//! first when the layer is over budget.

use super::{
    budget::{clip_line, render_lines},
    classify::fact_salience,
    state::{Field, MemoryState, SummaryLine},
    text::{sentences, words},
    tokens::{clip_to_tokens, count_tokens},
};
use crate::tool::{InputMessage, Role};

/// Budget of each half (user / assistant) of a batch line.
const PART_TOKENS: u32 = 40;

/// Appends this batch's line, when the batch has user or assistant content.
pub(crate) fn push_batch_line(state: &mut MemoryState, messages: &[InputMessage]) {
    let user = salient_user_sentence(messages);
    let assistant = assistant_answer(messages);
    let mut text = format!("Batch {}:", state.batch);
    let mut source_ids = Vec::new();
    for (label, part) in [("User", user), ("Assistant", assistant)] {
        if let Some((id, sentence)) = part {
            text.push_str(&format!(
                " {label}: {}",
                clip_to_tokens(&sentence, PART_TOKENS)
            ));
            source_ids.push(id);
        }
    }
    if !source_ids.is_empty() {
        state.summary.push(SummaryLine {
            text,
            batch: state.batch,
            source_ids,
        });
    }
}

/// Renders the newest summary lines that fit in `limit` tokens; older lines
/// are evicted from the state.
pub(crate) fn fit_summary(state: &mut MemoryState, limit: u32) -> String {
    let lines = &state.summary;
    // Estimate newest-first with per-line counts, then settle exactly.
    let mut keep = 0usize;
    let mut used = 0u32;
    for line in lines.iter().rev() {
        let cost = count_tokens(&render_lines([line.text.as_str()])).saturating_add(1);
        if used.saturating_add(cost) > limit {
            break;
        }
        used = used.saturating_add(cost);
        keep += 1;
    }
    let render =
        |keep: usize| render_lines(lines[lines.len() - keep..].iter().map(|l| l.text.as_str()));
    let mut rendered = render(keep);
    while keep > 0 && count_tokens(&rendered) > limit {
        keep -= 1;
        rendered = render(keep);
    }
    if keep == 0
        && let Some(newest) = lines.last()
    {
        rendered = clip_line(&newest.text, limit);
        if !rendered.is_empty() {
            keep = 1;
        }
    }
    let evict = state.summary.len() - keep;
    let evicted: Vec<SummaryLine> = state.summary.drain(..evict).collect();
    for line in evicted {
        state.record_eviction(Field::GeneralSummary, line.text, line.source_ids);
    }
    rendered
}

/// The user sentence most worth remembering: the highest-scoring fact, else
/// the first sentence with some substance (often the user's question).
fn salient_user_sentence(messages: &[InputMessage]) -> Option<(String, String)> {
    let user_sentences = || {
        messages
            .iter()
            .filter(|m| m.role == Role::User)
            .flat_map(|m| sentences(&m.content).into_iter().map(|s| (m.id.clone(), s)))
    };
    let mut best: Option<(u32, (String, String))> = None;
    for (id, sentence) in user_sentences() {
        if let Some(score) = fact_salience(&sentence)
            && best.as_ref().is_none_or(|(top, _)| score > *top)
        {
            best = Some((score, (id, sentence)));
        }
    }
    best.map(|(_, found)| found)
        .or_else(|| user_sentences().find(|(_, s)| words(s).len() >= 3))
}

/// What the assistant answered: the first statement of its last message.
fn assistant_answer(messages: &[InputMessage]) -> Option<(String, String)> {
    let last = messages.iter().rev().find(|m| m.role == Role::Assistant)?;
    let parts = sentences(&last.content);
    let statement = parts
        .iter()
        .find(|s| !s.trim_end().ends_with('?') && words(s).len() >= 3)
        .or_else(|| parts.first())?;
    Some((last.id.clone(), statement.clone()))
}
