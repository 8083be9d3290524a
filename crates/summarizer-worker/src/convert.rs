//! Conversions around one job: the checks a job must pass, the agent's input
//! built from it, the agent's output as memory-store content, and the change
//! event of a commit. Kept apart
//! from [`crate::processor`] so the retry logic reads on its own.

use chat_memory_proto::jobs::v1::{MemoryChanged, UpdateJob};
use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::store::{CommitJobsResponse, MemoryContent};
use chat_memory_proto::v1::{Memory, Role as ProtoRole, TokenCounts};
use summarizer_contract::tool::{InputMessage, Role, SummarizeOutput};
use uuid::Uuid;

/// A job that cannot be processed at all (the gateway validated it, so this means
/// a foreign or corrupted message).
pub(crate) fn check_job(job: &UpdateJob) -> Result<(), String> {
    if Uuid::parse_str(&job.job_id).is_err() {
        return Err("job_id is not a UUID".into());
    }
    if job.chat_id.is_empty() {
        return Err("chat_id is empty".into());
    }
    // An owned job is checked against its tenant's namespace: without one
    // there would be no tenant to check it against.
    if !job.owner_user.is_empty()
        && let Err(e) = TenantChatId::parse(&job.chat_id)
    {
        return Err(format!("chat_id is not <tenant>/<chat>: {e}"));
    }
    if job.messages.is_empty() {
        return Err("job has no messages".into());
    }
    Ok(())
}

/// Messages for the agent; each carries an id for provenance: the client's own
/// message id, or `<job_id>#<index>`.
pub(crate) fn input_messages(job: &UpdateJob) -> Vec<InputMessage> {
    job.messages
        .iter()
        .enumerate()
        .map(|(i, m)| InputMessage {
            id: if m.client_message_id.is_empty() {
                format!("{}#{i}", job.job_id)
            } else {
                m.client_message_id.clone()
            },
            role: match ProtoRole::try_from(m.role) {
                Ok(ProtoRole::Assistant) => Role::Assistant,
                Ok(ProtoRole::System) => Role::System,
                Ok(ProtoRole::Tool) => Role::Tool,
                // The gateway admits only the four roles; anything else is treated as
                // the least trusted source rather than as the user.
                Ok(ProtoRole::User) => Role::User,
                Ok(ProtoRole::Unspecified) | Err(_) => Role::Tool,
            },
            content: m.content.clone(),
            // RFC 3339, so the agent can anchor "yesterday" to a date.
            sent_at: m.sent_at.as_ref().map(ToString::to_string),
        })
        .collect()
}

/// The messages of several jobs of one chat, in order, for one coalesced call.
/// A client's message id that repeats one of an earlier job in the batch is
/// replaced by `<job_id>#<index>`, so every id names one message.
pub(crate) fn batch_messages<'a>(jobs: impl Iterator<Item = &'a UpdateJob>) -> Vec<InputMessage> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for job in jobs {
        for (i, mut m) in input_messages(job).into_iter().enumerate() {
            if !seen.insert(m.id.clone()) {
                m.id = format!("{}#{i}", job.job_id);
                seen.insert(m.id.clone());
            }
            out.push(m);
        }
    }
    out
}

pub(crate) fn memory_content(out: SummarizeOutput) -> MemoryContent {
    MemoryContent {
        user_confirmed: out.user_confirmed,
        llm_inferred: out.llm_inferred,
        general_summary: out.general_summary,
        token_counts: Some(TokenCounts {
            user_confirmed: out.token_counts.user_confirmed,
            llm_inferred: out.token_counts.llm_inferred,
            general_summary: out.token_counts.general_summary,
            total: out.token_counts.total,
        }),
        state_json: out.state_json,
    }
}

/// The requester of a job, for memory-store's ownership check: the tenant of
/// the namespaced chat id ([`TenantChatId`]) and the owner. Jobs from before
/// issue 4 carry no owner and are applied as before; a job with an owner has a
/// namespaced chat id ([`check_job`]).
pub(crate) fn job_access(job: &UpdateJob) -> Option<chat_memory_proto::store::Access> {
    if job.owner_user.is_empty() {
        return None;
    }
    let chat = TenantChatId::parse(&job.chat_id).ok()?;
    Some(chat_memory_proto::store::Access {
        tenant: chat.tenant().to_owned(),
        user: job.owner_user.clone(),
        acts_for_tenant: job.acts_for_tenant,
    })
}

/// The change event of a committed batch: the memory as memory-store now
/// answers it, and the jobs it applied, in order.
pub(crate) fn applied_event(
    chat_id: &str,
    applied_job_ids: Vec<String>,
    content: MemoryContent,
    commit: &CommitJobsResponse,
) -> MemoryChanged {
    MemoryChanged {
        chat_id: chat_id.to_owned(),
        memory: Some(Memory {
            user_confirmed: content.user_confirmed,
            llm_inferred: content.llm_inferred,
            general_summary: content.general_summary,
            // memory-store answers the total as the sum of the three layers.
            token_counts: content.token_counts.map(|t| TokenCounts {
                total: t
                    .user_confirmed
                    .saturating_add(t.llm_inferred)
                    .saturating_add(t.general_summary),
                ..t
            }),
            version: commit.version,
            updated_at: commit.updated_at,
        }),
        last_applied_job_id: applied_job_ids.last().cloned().unwrap_or_default(),
        applied_job_ids,
        owner_user: commit.owner_user.clone(),
        pending_jobs: commit.pending_jobs,
        applied_through_seq: commit.applied_through_seq,
        pending_seqs: commit.pending_seqs.clone(),
        expires_at: commit.expires_at,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use chat_memory_proto::v1::ChatMessage;

    use super::*;

    fn job(messages: Vec<ChatMessage>) -> UpdateJob {
        UpdateJob {
            job_id: Uuid::nil().to_string(),
            chat_id: "c".into(),
            messages,
            ..Default::default()
        }
    }

    #[test]
    fn message_ids_prefer_the_clients_own() {
        let j = job(vec![
            ChatMessage {
                role: ProtoRole::User as i32,
                content: "a".into(),
                client_message_id: "m-1".into(),
                sent_at: None,
            },
            ChatMessage {
                role: ProtoRole::Assistant as i32,
                content: "b".into(),
                ..Default::default()
            },
        ]);
        let ids: Vec<_> = input_messages(&j).into_iter().map(|m| m.id).collect();
        assert_eq!(ids, vec!["m-1".to_owned(), format!("{}#1", Uuid::nil())]);
    }

    #[test]
    fn an_unknown_role_is_never_treated_as_the_user() {
        let j = job(vec![ChatMessage {
            role: 99,
            content: "x".into(),
            ..Default::default()
        }]);
        assert_eq!(input_messages(&j)[0].role, Role::Tool);
    }

    #[test]
    fn coalesced_messages_keep_job_order_and_unique_ids() {
        let message = |id: &str, content: &str| ChatMessage {
            role: ProtoRole::User as i32,
            content: content.into(),
            client_message_id: id.into(),
            sent_at: None,
        };
        let mut first = job(vec![message("m-1", "a"), message("m-2", "b")]);
        first.job_id = Uuid::from_u128(1).to_string();
        let mut second = job(vec![message("m-1", "c")]);
        second.job_id = Uuid::from_u128(2).to_string();
        let messages = batch_messages([&first, &second].into_iter());
        let contents: Vec<_> = messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["a", "b", "c"]);
        let ids: std::collections::HashSet<_> = messages.iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids.len(), 3, "ids must be unique: {messages:?}");
    }

    #[test]
    fn invalid_jobs_are_poison() {
        assert!(check_job(&job(vec![])).is_err());
        let mut j = job(vec![ChatMessage::default()]);
        j.job_id = "nope".into();
        assert!(check_job(&j).is_err());
    }

    #[test]
    fn an_owned_job_outside_any_tenant_namespace_is_poison() {
        let mut j = job(vec![ChatMessage::default()]);
        j.owner_user = "alice".into();
        for chat_id in ["c", "/c", "t/"] {
            j.chat_id = chat_id.into();
            assert!(check_job(&j).is_err(), "{chat_id:?}");
        }
        j.chat_id = "t/c".into();
        assert_eq!(check_job(&j), Ok(()));
        let access = job_access(&j).expect("an owned job has access");
        assert_eq!(
            (access.tenant.as_str(), access.user.as_str()),
            ("t", "alice")
        );
        j.owner_user.clear();
        assert_eq!(job_access(&j), None);
    }
}
