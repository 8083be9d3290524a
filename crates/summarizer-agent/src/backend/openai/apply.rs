//! Folds a validated [`MemoryDraft`] into the state. The draft passed the
//! spec's checks, but the rules that decide which layer a statement may
//! enter are enforced again here, on the cited messages' roles: this is the
//! line prompt injection must not cross.

use super::spec::{DraftRequest, MemoryDraft};
use crate::{
    memory::{
        state::{EvictionReason, Field, Item, MemoryState, Speaker},
        temporal::{anchor, human_day, parse_day},
        tokens::clip_to_tokens,
    },
    tool::Role,
};

/// Longest statement kept from a model, in tokens: a model that writes an
/// essay into one fact cannot crowd out the rest of the memory.
const MAX_ITEM_TOKENS: u32 = 80;

/// Salience of model-extracted items: facts outrank summaries outrank guesses.
const FACT_SALIENCE: u32 = 8;
const SUMMARY_SALIENCE: u32 = 5;
const INFERENCE_SALIENCE: u32 = 4;

pub(super) fn apply(state: &mut MemoryState, request: &DraftRequest, draft: MemoryDraft) {
    let batch = state.batch;
    let day = request
        .messages
        .iter()
        .filter_map(|m| m.sent_at.as_deref())
        .find_map(parse_day);
    let item = |text: &str, field, salience, source_ids: Vec<String>, speaker| {
        let text = clip_to_tokens(text.trim(), MAX_ITEM_TOKENS);
        Item {
            text: day.map_or_else(|| text.clone(), |d| anchor(&text, d)),
            field,
            salience,
            source_ids,
            first_batch: batch,
            last_seen_batch: batch,
            date: day.map(human_day),
            speaker,
        }
    };

    for key in &draft.corrected_keys {
        let Some(known) = request.known(key) else {
            continue;
        };
        if let Some(n) = state
            .items
            .iter()
            .position(|i| i.field == Field::UserConfirmed && i.text == known.text)
        {
            let old = state.items.remove(n);
            state.record_eviction(
                old.field,
                old.text,
                old.source_ids,
                EvictionReason::Corrected,
            );
        }
    }
    for confirmation in &draft.confirmed {
        let confirms = request.cites(std::slice::from_ref(&confirmation.message_id), Role::User);
        if let (true, Some(known)) = (confirms, request.known(&confirmation.key)) {
            let text = clip_to_tokens(confirmation.text.trim(), MAX_ITEM_TOKENS);
            state.confirm(&known.text, text, &confirmation.message_id);
        }
    }
    for fact in &draft.user_facts {
        if request.cites(&fact.message_ids, Role::User) {
            let sources = fact.message_ids.clone();
            state.absorb(item(
                &fact.text,
                Field::UserConfirmed,
                FACT_SALIENCE,
                sources,
                Speaker::User,
            ));
        }
    }
    for guess in &draft.assistant_inferences {
        if request.cites(&guess.message_ids, Role::Assistant) {
            let sources = guess.message_ids.clone();
            let guess = item(
                &guess.text,
                Field::LlmInferred,
                INFERENCE_SALIENCE,
                sources,
                Speaker::Assistant,
            );
            state.absorb(guess);
        }
    }
    if !draft.summary.trim().is_empty() {
        let sources = request.messages.iter().map(|m| m.id.clone()).collect();
        let line = item(
            &draft.summary,
            Field::GeneralSummary,
            SUMMARY_SALIENCE,
            sources,
            Speaker::Narrator,
        );
        state.absorb(line);
    }
}
