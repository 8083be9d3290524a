//! Folds one batch of messages into the memory state: user facts, assistant
//! guesses, and the user's yes/no to those guesses.

use super::{
    classify::{
        Reply, as_confirmed_fact, fact_salience, inference, reply_kind, strip_reply_opening,
    },
    state::{Field, Item, MemoryState},
    text::{sentences, words},
};
use crate::tool::{InputMessage, Role};

/// Salience of a guess with no other signal.
const BASE_INFERENCE_SALIENCE: u32 = 2;

/// Walks the messages in order. Only user messages produce user-confirmed
/// items; only assistant messages produce inferred ones; system and tool
/// messages produce nothing (they are not the user speaking).
pub(crate) fn fold_messages(state: &mut MemoryState, messages: &[InputMessage]) {
    let batch = state.batch;
    // Guesses of the latest assistant message, awaiting the user's yes or no.
    // Carried over from the previous batch when it ended on such a message.
    let mut open = std::mem::take(&mut state.open_inferences);
    for message in messages {
        let parts = sentences(&message.content);
        match message.role {
            Role::User => {
                let reply = parts
                    .first()
                    .map_or(Reply::Neither, |first| reply_kind(first));
                match reply {
                    Reply::Confirms => {
                        for guess in &open {
                            state.confirm(guess, as_confirmed_fact(guess), &message.id);
                        }
                    }
                    Reply::Denies => open.iter().for_each(|guess| state.refute(guess)),
                    Reply::Neither => {}
                }
                open.clear();
                for (i, sentence) in parts.iter().enumerate() {
                    let sentence = if i == 0 && reply != Reply::Neither {
                        strip_reply_opening(sentence)
                    } else {
                        sentence.clone()
                    };
                    if let Some(salience) = fact_salience(&sentence) {
                        state.absorb(new_item(
                            sentence,
                            Field::UserConfirmed,
                            salience,
                            message,
                            batch,
                        ));
                    }
                }
            }
            Role::Assistant => {
                open.clear();
                for guess in parts.iter().filter_map(|s| inference(s)) {
                    let salience = fact_salience(&guess).unwrap_or(BASE_INFERENCE_SALIENCE);
                    let absorbed = state.absorb(new_item(
                        guess,
                        Field::LlmInferred,
                        salience,
                        message,
                        batch,
                    ));
                    if let Some(item) = absorbed.and_then(|i| state.items.get(i))
                        && item.field == Field::LlmInferred
                        && !open.contains(&item.text)
                    {
                        open.push(item.text.clone());
                    }
                }
                // "…savings card. Would you like help with the form?": a "yes"
                // next answers the question, not the guess.
                if parts.last().is_some_and(|last| asks_something_else(last)) {
                    open.clear();
                }
            }
            // A tool result or system note between a guess and the user's reply
            // does not break the pairing, so `open` is left alone.
            Role::System | Role::Tool => {}
        }
    }
    state.open_inferences = open;
}

/// True for a closing question that is neither a guess with a tag ("…, is
/// that right?") nor a short request to confirm ("Is that correct?").
fn asks_something_else(sentence: &str) -> bool {
    sentence.trim_end().ends_with('?') && inference(sentence).is_none() && words(sentence).len() > 4
}

fn new_item(text: String, field: Field, salience: u32, message: &InputMessage, batch: u64) -> Item {
    Item {
        text,
        field,
        salience,
        source_ids: vec![message.id.clone()],
        first_batch: batch,
        last_seen_batch: batch,
    }
}
