//! Who may touch a chat: the tenant namespace and the owning user.
//!
//! The gateway namespaces every chat id as `<tenant>/<chat>` and passes the
//! caller as an [`Access`]. Here, under the chat's lock where it writes, the
//! store checks both: a chat id outside the caller's namespace, or a chat owned
//! by another user (unless the caller acts for the whole tenant), is answered
//! exactly like a chat that does not exist, so existence never leaks.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Statement};

pub use crate::domain::{Access, NAMESPACE_SEPARATOR};
use crate::{domain::ChatId, entity::chat_owners, error::StoreError};

/// Checks read/delete access to a chat; `what` names the entity for NOT_FOUND.
///
/// # Errors
/// [`StoreError::NotFound`] when the chat is outside the caller's namespace or
/// owned by another user.
pub async fn check<C: ConnectionTrait>(
    db: &C,
    chat_id: &str,
    access: Option<&Access>,
    what: &'static str,
) -> Result<(), StoreError> {
    let Some(access) = access else { return Ok(()) };
    if !access.in_namespace(chat_id) {
        return Err(StoreError::NotFound(what));
    }
    let owner = chat_owners::Entity::find_by_id(chat_id).one(db).await?;
    if access.may_use_owner(owner.as_ref().map(|o| o.owner_user.as_str())) {
        Ok(())
    } else {
        Err(StoreError::NotFound(what))
    }
}

/// Makes the caller the chat's owner when it has none, and records the write as
/// activity, under the chat's lock: one round trip (`chat_memory_claim_chat`,
/// migration m20261206_000002). Returns whether the caller became the owner now.
///
/// # Errors
/// [`StoreError::NotFound`] when another user owns the chat, or the chat is
/// outside the caller's namespace.
pub async fn claim(
    db: &DatabaseConnection,
    chat_id: &ChatId,
    access: &Access,
) -> Result<bool, StoreError> {
    if !access.in_namespace(chat_id.as_str()) {
        return Err(StoreError::NotFound("chat"));
    }
    match claim_one(db, chat_id, access).await? {
        Claim::Claimed => Ok(true),
        Claim::Owner => Ok(false),
        Claim::Denied => Err(StoreError::NotFound("chat")),
    }
}

/// One claim of a chat in the caller's namespace: `chat_memory_claim_chat`.
async fn claim_one(
    db: &DatabaseConnection,
    chat_id: &ChatId,
    access: &Access,
) -> Result<Claim, StoreError> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT chat_memory_claim_chat($1, $2, $3, $4) AS claim",
            [
                chat_id.as_str().into(),
                access.tenant.as_str().into(),
                access.user.as_str().into(),
                access.acts_for_tenant.into(),
            ],
        ))
        .await?
        .ok_or_else(|| StoreError::CorruptRow {
            table: "chat_owners",
            reason: "chat_memory_claim_chat returned no row".to_owned(),
        })?;
    let claim: String = row.try_get("", "claim")?;
    verdict(&claim)
}

/// What [`claim_many`] decided for one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller became the owner now.
    Claimed,
    /// The caller may write the chat (its owner, or acting for the tenant).
    Owner,
    /// Another user owns the chat, or it is outside the caller's namespace.
    Denied,
}

/// [`claim`] for several chats (a gateway's acceptances that arrived together)
/// in one round trip and one durable transaction (`chat_memory_claim_chats`,
/// which locks the chats in one order first): each claim's verdict, in order.
/// A lone claim takes the single function: the batch function's set-up (its
/// JSON, lock ordering and result set) cost as much as the claim itself.
///
/// # Errors
/// Database errors, for the whole batch.
pub async fn claim_many(
    db: &DatabaseConnection,
    claims: Vec<(ChatId, Access)>,
) -> Result<Vec<Claim>, StoreError> {
    let mut verdicts = vec![Claim::Denied; claims.len()];
    // Only chats in the caller's namespace go to Postgres; `asked[k]` is the
    // position of the k-th of them.
    let mut asked = Vec::with_capacity(claims.len());
    let mut batch = Vec::with_capacity(claims.len());
    for (i, (chat, access)) in claims.iter().enumerate() {
        if access.in_namespace(chat.as_str()) {
            asked.push(i);
            batch.push(serde_json::json!({
                "chat": chat.as_str(),
                "tenant": access.tenant,
                "user": access.user,
                "acts_for_tenant": access.acts_for_tenant,
            }));
        }
    }
    if batch.is_empty() {
        return Ok(verdicts);
    }
    if let [i] = asked[..] {
        if let (Some((chat, access)), Some(slot)) = (claims.get(i), verdicts.get_mut(i)) {
            *slot = claim_one(db, chat, access).await?;
        }
        return Ok(verdicts);
    }
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT idx, claim FROM chat_memory_claim_chats($1) ORDER BY idx",
            [serde_json::Value::Array(batch).into()],
        ))
        .await?;
    let rows =
        crate::rows::one_per_item(rows, asked.len(), "chat_owners", "chat_memory_claim_chats")?;
    for (row, i) in rows.iter().zip(asked) {
        let claim: String = row.try_get("", "claim")?;
        if let Some(slot) = verdicts.get_mut(i) {
            *slot = verdict(&claim)?;
        }
    }
    Ok(verdicts)
}

/// A verdict as `chat_memory_claim` words it.
fn verdict(claim: &str) -> Result<Claim, StoreError> {
    match claim {
        "claimed" => Ok(Claim::Claimed),
        "owner" => Ok(Claim::Owner),
        "denied" => Ok(Claim::Denied),
        other => Err(StoreError::CorruptRow {
            table: "chat_owners",
            reason: format!("chat_memory_claim returned {other:?}"),
        }),
    }
}
