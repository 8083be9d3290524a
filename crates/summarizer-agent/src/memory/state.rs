//! The structured memory behind the three text layers, serialised as the
//! opaque `state_json` the worker stores and hands back. Every backend folds
//! its findings into this state, and the layers are rendered from it.
//!
//! Only `Vec`s and structs: serialisation order is insertion order, so the
//! same input always yields byte-identical JSON.

use serde::{Deserialize, Serialize};

use super::text::{Wording, clauses, supersedes};
use crate::tool::PriorMemory;

/// Bumped when the state layout changes incompatibly; older state is then
/// re-seeded from the text layers instead of misread.
pub(crate) const STATE_VERSION: u32 = 2;

/// Most message ids kept per item: enough provenance, bounded state size.
const MAX_SOURCE_IDS: usize = 8;

/// Most evicted items remembered, newest last.
const MAX_RECENT_EVICTIONS: usize = 16;

/// Salience given to items recovered from text without structured state.
const SEEDED_SALIENCE: u32 = 4;

/// Salience added when an item is seen again or confirmed.
const REINFORCEMENT: u32 = 1;

/// Salience never grows beyond this, so an old item cannot become unevictable.
const MAX_SALIENCE: u32 = 16;

/// Which layer an item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Field {
    UserConfirmed,
    LlmInferred,
    GeneralSummary,
}

/// Who said the statement an item came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Speaker {
    #[default]
    User,
    Assistant,
    /// A model's summary of a batch: no one said it verbatim.
    Narrator,
}

/// One remembered statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub text: String,
    pub field: Field,
    /// How worth keeping the item is; the lowest goes first when over budget.
    pub salience: u32,
    /// Ids of the messages this item came from, oldest first (provenance).
    pub source_ids: Vec<String>,
    pub first_batch: u64,
    pub last_seen_batch: u64,
    /// Calendar day of the batch it came from ("8 May 2023"), when the
    /// messages carried timestamps: facts keep their place in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default)]
    pub speaker: Speaker,
}

/// Why an item left the memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EvictionReason {
    /// It did not fit the token budget.
    Budget,
    /// The user said something newer that replaces it.
    Corrected,
}

/// Something dropped from the memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Eviction {
    pub field: Field,
    pub text: String,
    pub source_ids: Vec<String>,
    pub batch: u64,
    pub reason: EvictionReason,
}

/// Eviction counters per layer plus the most recent evictions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Evictions {
    pub user_confirmed: u64,
    pub llm_inferred: u64,
    pub general_summary: u64,
    pub recent: Vec<Eviction>,
}

/// Everything remembered about one chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemoryState {
    pub version: u32,
    /// Number of batches folded in so far; the current batch's number while one is processed.
    pub batch: u64,
    /// All items, in the order they were first seen.
    pub items: Vec<Item>,
    /// Texts of the inferred items of the last assistant message, when a batch
    /// ended with it: a "yes" at the start of the next batch confirms them.
    #[serde(default)]
    pub open_inferences: Vec<String>,
    #[serde(default)]
    pub evictions: Evictions,
}

impl MemoryState {
    fn empty() -> Self {
        Self {
            version: STATE_VERSION,
            batch: 0,
            items: Vec::new(),
            open_inferences: Vec::new(),
            evictions: Evictions::default(),
        }
    }

    /// The state to continue from: the prior structured state when it parses,
    /// otherwise items re-seeded line by line from the prior text layers.
    pub(crate) fn load(prior: Option<&PriorMemory>) -> Self {
        let Some(prior) = prior else {
            return Self::empty();
        };
        let parsed = prior
            .state_json
            .as_deref()
            .and_then(|json| serde_json::from_str::<Self>(json).ok())
            .filter(|state| state.version == STATE_VERSION);
        match parsed {
            Some(state) => state,
            None => {
                if prior.state_json.is_some() {
                    tracing::warn!("prior state_json unreadable, re-seeding from text layers");
                }
                Self::seed(prior)
            }
        }
    }

    fn seed(prior: &PriorMemory) -> Self {
        let mut state = Self::empty();
        for (layer, field) in [
            (&prior.user_confirmed, Field::UserConfirmed),
            (&prior.llm_inferred, Field::LlmInferred),
            (&prior.general_summary, Field::GeneralSummary),
        ] {
            for line in layer_lines(layer) {
                let seeded = SeededLine::parse(&line, field);
                state.batch = state.batch.max(seeded.batch);
                let item = Item {
                    text: seeded.text,
                    field,
                    salience: SEEDED_SALIENCE,
                    source_ids: Vec::new(),
                    first_batch: seeded.batch,
                    last_seen_batch: seeded.batch,
                    date: seeded.date,
                    speaker: seeded.speaker,
                };
                // Summary lines may restate facts on purpose: never merged away.
                if field == Field::GeneralSummary {
                    state.items.push(item);
                } else {
                    state.absorb(item);
                }
            }
        }
        state
    }

    /// Adds `candidate`, or folds it into an existing item saying the same
    /// thing. A user fact replaces older user facts it corrects. Returns the
    /// index of the item that now holds it, or `None` when the candidate was
    /// redundant (a guess about an already confirmed fact).
    pub(crate) fn absorb(&mut self, candidate: Item) -> Option<usize> {
        if candidate.field == Field::UserConfirmed {
            self.drop_corrected_by(&candidate);
        }
        let wording = Wording::of(&candidate.text);
        let Some(index) = self
            .items
            .iter()
            .position(|i| Wording::of(&i.text).near_duplicate(&wording))
        else {
            self.items.push(candidate);
            return Some(self.items.len() - 1);
        };
        let existing = &mut self.items[index];
        existing.last_seen_batch = existing.last_seen_batch.max(candidate.last_seen_batch);
        match (existing.field, candidate.field) {
            (Field::UserConfirmed, Field::LlmInferred) => None,
            (Field::LlmInferred | Field::GeneralSummary, Field::UserConfirmed) => {
                // The user said it themselves: keep their words, now confirmed.
                merge_sources(&mut existing.source_ids, &candidate.source_ids);
                existing.field = Field::UserConfirmed;
                existing.speaker = Speaker::User;
                existing.text = candidate.text;
                existing.salience = existing.salience.max(candidate.salience);
                Some(index)
            }
            (Field::UserConfirmed | Field::LlmInferred, Field::GeneralSummary) => {
                // The other side repeating a fact adds no evidence about the user.
                Some(index)
            }
            _ => {
                merge_sources(&mut existing.source_ids, &candidate.source_ids);
                existing.salience =
                    (existing.salience.max(candidate.salience) + REINFORCEMENT).min(MAX_SALIENCE);
                Some(index)
            }
        }
    }

    /// Removes from user facts what `newer` corrects ("my deductible is
    /// $2,000" replaces "my deductible is $1,500"): the whole item, or only
    /// the corrected clause of a compound one. Records what went and why.
    fn drop_corrected_by(&mut self, newer: &Item) {
        let mut n = 0;
        while n < self.items.len() {
            let old = &self.items[n];
            if old.field != Field::UserConfirmed {
                n += 1;
                continue;
            }
            let parts = clauses(&old.text);
            let (gone, kept): (Vec<String>, Vec<String>) =
                parts.into_iter().partition(|c| supersedes(&newer.text, c));
            if gone.is_empty() {
                n += 1;
                continue;
            }
            let sources = old.source_ids.clone();
            if kept.is_empty() {
                let old = self.items.remove(n);
                self.record_eviction(old.field, old.text, sources, EvictionReason::Corrected);
            } else {
                let rest = kept.join(" and ");
                let mut chars = rest.chars();
                let first: String = chars
                    .next()
                    .map(|c| c.to_uppercase().collect())
                    .unwrap_or_default();
                self.items[n].text = format!("{first}{}.", chars.as_str());
                let removed = gone.join(" and ");
                self.record_eviction(
                    Field::UserConfirmed,
                    removed,
                    sources,
                    EvictionReason::Corrected,
                );
                n += 1;
            }
        }
    }

    /// Turns the inferred item worded `inferred` into a user-confirmed fact
    /// worded `confirmed_text`, crediting the confirming message.
    pub(crate) fn confirm(&mut self, inferred: &str, confirmed_text: String, confirming_id: &str) {
        let Some(index) = self.find_inferred(inferred) else {
            return;
        };
        let mut confirmed = self.items.remove(index);
        confirmed.field = Field::UserConfirmed;
        confirmed.speaker = Speaker::User;
        confirmed.text = confirmed_text;
        confirmed.salience = (confirmed.salience + REINFORCEMENT).min(MAX_SALIENCE);
        confirmed.last_seen_batch = self.batch;
        merge_sources(&mut confirmed.source_ids, &[confirming_id.to_owned()]);
        // Re-absorb: the confirmed wording may duplicate a fact already stated.
        self.absorb(confirmed);
    }

    /// Drops the inferred item worded `inferred`: the user said it is wrong.
    pub(crate) fn refute(&mut self, inferred: &str) {
        if let Some(index) = self.find_inferred(inferred) {
            self.items.remove(index);
        }
    }

    fn find_inferred(&self, text: &str) -> Option<usize> {
        self.items
            .iter()
            .position(|i| i.field == Field::LlmInferred && i.text == text)
    }

    /// Records that `text` left `field`, and why.
    pub(crate) fn record_eviction(
        &mut self,
        field: Field,
        text: String,
        source_ids: Vec<String>,
        reason: EvictionReason,
    ) {
        let counter = match field {
            Field::UserConfirmed => &mut self.evictions.user_confirmed,
            Field::LlmInferred => &mut self.evictions.llm_inferred,
            Field::GeneralSummary => &mut self.evictions.general_summary,
        };
        *counter += 1;
        let recent = &mut self.evictions.recent;
        recent.push(Eviction {
            field,
            text,
            source_ids,
            batch: self.batch,
            reason,
        });
        if recent.len() > MAX_RECENT_EVICTIONS {
            let excess = recent.len() - MAX_RECENT_EVICTIONS;
            recent.drain(..excess);
        }
    }
}

/// Appends ids not yet present, keeping only the newest [`MAX_SOURCE_IDS`].
pub(crate) fn merge_sources(into: &mut Vec<String>, from: &[String]) {
    for id in from {
        if !into.contains(id) {
            into.push(id.clone());
        }
    }
    if into.len() > MAX_SOURCE_IDS {
        let excess = into.len() - MAX_SOURCE_IDS;
        into.drain(..excess);
    }
}

/// A rendered line taken apart again: `[8 May 2023]` or `Batch 3:` headers
/// and `User:` / `Assistant:` labels become fields, so re-rendering does not
/// stack them.
struct SeededLine {
    text: String,
    batch: u64,
    date: Option<String>,
    speaker: Speaker,
}

impl SeededLine {
    fn parse(line: &str, field: Field) -> Self {
        let mut rest = line.trim();
        let mut batch = 0;
        let mut date = None;
        if let Some(after) = rest.strip_prefix('[')
            && let Some((day, tail)) = after.split_once(']')
        {
            date = Some(day.trim().to_owned());
            rest = tail.trim_start();
        } else if let Some(after) = rest.strip_prefix("Batch ")
            && let Some((number, tail)) = after.split_once(':')
            && let Ok(n) = number.trim().parse::<u64>()
        {
            batch = n;
            rest = tail.trim_start();
        }
        let mut speaker = match field {
            Field::UserConfirmed => Speaker::User,
            Field::LlmInferred => Speaker::Assistant,
            Field::GeneralSummary => Speaker::Narrator,
        };
        if field == Field::GeneralSummary {
            if let Some(tail) = rest.strip_prefix("User:") {
                speaker = Speaker::User;
                rest = tail.trim_start();
            } else if let Some(tail) = rest.strip_prefix("Assistant:") {
                speaker = Speaker::Assistant;
                rest = tail.trim_start();
            }
        }
        Self {
            text: rest.to_owned(),
            batch,
            date,
            speaker,
        }
    }
}

/// The items of a rendered layer: one per non-empty line, list marker removed.
pub(crate) fn layer_lines(layer: &str) -> Vec<String> {
    layer
        .lines()
        .map(|l| l.trim())
        .map(|l| {
            l.strip_prefix("- ")
                .or_else(|| l.strip_prefix("* "))
                .unwrap_or(l)
                .trim()
        })
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}
