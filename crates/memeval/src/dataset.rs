//! The neutral format of `/work/shared/eval` (one conversation per JSON
//! line). Only what a memory service would be given is read: roles,
//! contents, timestamps and turn ids. The `qa` field is ignored on purpose.

use std::{fs, path::Path};

use anyhow::Context;
use serde::Deserialize;

/// One conversation.
#[derive(Debug, Clone, Deserialize)]
pub struct Conversation {
    pub conv_id: String,
    pub sessions: Vec<Session>,
}

/// One session: a batch for the agent.
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    pub session_id: serde_json::Value,
    #[serde(default)]
    pub ts: Option<String>,
    pub messages: Vec<Message>,
}

/// One message.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
    #[serde(default)]
    pub ts: Option<String>,
    #[serde(default)]
    pub turn_id: Option<String>,
}

/// Reads every conversation of a JSONL file.
///
/// # Errors
/// When the file cannot be read or a line is not a conversation.
pub fn read(path: &Path) -> anyhow::Result<Vec<Conversation>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), n + 1))
        })
        .collect()
}
