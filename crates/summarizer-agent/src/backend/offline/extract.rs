//! Folds one batch of messages into the memory state, sentence by sentence:
//! user facts, assistant guesses, the user's yes/no to those guesses, and the
//! concrete statements and questions the rolling summary keeps.

use chrono::NaiveDate;

use super::classify::{
    Reply, as_confirmed_fact, fact_salience, inference, reply_kind, strip_reply_opening,
    trim_filler,
};
use crate::{
    memory::{
        state::{Field, Item, MemoryState, Speaker},
        temporal::{anchor, human_day, parse_day},
        text::{sentences, words},
    },
    tool::{InputMessage, Role},
};

/// Salience of a guess with no other signal.
const BASE_INFERENCE_SALIENCE: u32 = 2;

/// Salience of the user's question that opens a batch's summary line: kept
/// when there is room, evicted before any concrete statement.
const TOPIC_SALIENCE: u32 = 2;

/// Where the batch happens in time, for anchoring relative dates.
#[derive(Clone, Copy)]
struct When {
    day: Option<NaiveDate>,
}

impl When {
    fn of(messages: &[InputMessage]) -> Self {
        let day = messages
            .iter()
            .filter_map(|m| m.sent_at.as_deref())
            .find_map(parse_day);
        Self { day }
    }

    fn anchored(self, sentence: &str) -> String {
        match self.day {
            Some(day) => anchor(sentence, day),
            None => sentence.to_owned(),
        }
    }

    fn label(self) -> Option<String> {
        self.day.map(human_day)
    }
}

/// Walks the messages in order. Only user messages produce user-confirmed
/// items; only assistant messages produce inferred ones; system and tool
/// messages produce nothing (they are not the user speaking).
pub(crate) fn fold_messages(state: &mut MemoryState, messages: &[InputMessage]) {
    let batch = state.batch;
    let when = When::of(messages);
    let item = |text: String, field, salience, message: &InputMessage, speaker| Item {
        text: when.anchored(&text),
        field,
        salience,
        source_ids: vec![message.id.clone()],
        first_batch: batch,
        last_seen_batch: batch,
        date: when.label(),
        speaker,
    };
    // Guesses of the latest assistant message, awaiting the user's yes or no.
    // Carried over from the previous batch when it ended on such a message.
    let mut open = std::mem::take(&mut state.open_inferences);
    let mut topic: Option<Item> = None;
    // The assistant's answer, for batches where it said nothing salient: the
    // rolling summary still records what the batch was about.
    let mut answer: Option<Item> = None;
    let mut said_something = false;
    let mut first_fact: Option<Item> = None;
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
                        trim_filler(sentence)
                    };
                    if let Some(salience) = fact_salience(&sentence) {
                        let fact = item(
                            sentence,
                            Field::UserConfirmed,
                            salience,
                            message,
                            Speaker::User,
                        );
                        if first_fact.is_none() {
                            first_fact = Some(Item {
                                field: Field::GeneralSummary,
                                salience: TOPIC_SALIENCE,
                                ..fact.clone()
                            });
                        }
                        state.absorb(fact);
                    } else if topic.is_none() && is_topic_question(&sentence) {
                        topic = Some(item(
                            sentence,
                            Field::GeneralSummary,
                            TOPIC_SALIENCE,
                            message,
                            Speaker::User,
                        ));
                    }
                }
            }
            Role::Assistant => {
                open.clear();
                for sentence in &parts {
                    if let Some(guess) = inference(sentence) {
                        let salience = fact_salience(&guess).unwrap_or(BASE_INFERENCE_SALIENCE);
                        let guess = item(
                            guess,
                            Field::LlmInferred,
                            salience,
                            message,
                            Speaker::Assistant,
                        );
                        let absorbed = state.absorb(guess);
                        if let Some(held) = absorbed.and_then(|i| state.items.get(i))
                            && held.field == Field::LlmInferred
                            && !open.contains(&held.text)
                        {
                            open.push(held.text.clone());
                        }
                    } else {
                        let statement = trim_filler(sentence);
                        if let Some(salience) = fact_salience(&statement) {
                            let said = item(
                                statement,
                                Field::GeneralSummary,
                                salience,
                                message,
                                Speaker::Assistant,
                            );
                            state.absorb(said);
                            said_something = true;
                        } else if answer.is_none() && is_answer(&statement) {
                            answer = Some(item(
                                statement,
                                Field::GeneralSummary,
                                TOPIC_SALIENCE,
                                message,
                                Speaker::Assistant,
                            ));
                        }
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
    let topic_taken = topic.is_some();
    if let Some(topic) = topic {
        state.absorb(topic);
    }
    let summarised = said_something || topic_taken;
    match (answer, first_fact) {
        (Some(answer), _) if !summarised => {
            state.absorb(answer);
        }
        // Nothing else to say what the batch was about: its first fact,
        // pushed as is (it restates a user fact, so merging would drop it).
        (None, Some(fact)) if !summarised => state.items.push(fact),
        _ => {}
    }
    state.open_inferences = open;
}

/// A user question with enough substance to say what the batch was about.
fn is_topic_question(sentence: &str) -> bool {
    sentence.trim_end().ends_with('?') && words(sentence).len() >= 5
}

/// A plain statement long enough to say something.
fn is_answer(sentence: &str) -> bool {
    !sentence.trim_end().ends_with('?') && words(sentence).len() >= 4
}

/// True for a closing question that is neither a guess with a tag ("…, is
/// that right?") nor a short request to confirm ("Is that correct?").
fn asks_something_else(sentence: &str) -> bool {
    sentence.trim_end().ends_with('?') && inference(sentence).is_none() && words(sentence).len() > 4
}
