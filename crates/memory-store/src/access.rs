//! Who may touch a chat: the tenant namespace and the owning user.
//!
//! The gateway namespaces every chat id as `<tenant>/<chat>` and passes the
//! caller as an [`Access`]. Here, under the chat's lock where it writes, the
//! store checks both: a chat id outside the caller's namespace, or a chat owned
//! by another user (unless the caller acts for the whole tenant), is answered
//! exactly like a chat that does not exist, so existence never leaks.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection, EntityTrait,
};

use crate::{domain::ChatId, entity::chat_owners, error::StoreError, jobs::begin_chat};

/// Separator between the tenant and the public chat id.
pub const NAMESPACE_SEPARATOR: char = '/';

/// On whose behalf a call runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub tenant: String,
    pub user: String,
    /// A service/admin token acting for every user of the tenant.
    pub acts_for_tenant: bool,
}

impl Access {
    /// `None` for a call without access information (the worker's internal calls).
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] when the tenant or user is empty.
    pub fn parse(
        raw: Option<chat_memory_proto::store::Access>,
    ) -> Result<Option<Self>, StoreError> {
        let Some(raw) = raw else { return Ok(None) };
        if raw.tenant.is_empty() || raw.tenant.contains(NAMESPACE_SEPARATOR) {
            return Err(StoreError::invalid(
                "access.tenant",
                "must be a non-empty tenant id",
            ));
        }
        if raw.user.is_empty() {
            return Err(StoreError::invalid("access.user", "must not be empty"));
        }
        Ok(Some(Self {
            tenant: raw.tenant,
            user: raw.user,
            acts_for_tenant: raw.acts_for_tenant,
        }))
    }

    /// Whether the chat id lies in this tenant's namespace.
    pub(crate) fn in_namespace(&self, chat_id: &str) -> bool {
        chat_id
            .strip_prefix(self.tenant.as_str())
            .and_then(|rest| rest.strip_prefix(NAMESPACE_SEPARATOR))
            .is_some_and(|public| !public.is_empty())
    }

    fn may_use(&self, owner: Option<&chat_owners::Model>) -> bool {
        self.may_use_owner(owner.map(|o| o.owner_user.as_str()))
    }

    /// Whether the caller may use a chat owned by `owner` (`None`: no owner yet).
    pub(crate) fn may_use_owner(&self, owner: Option<&str>) -> bool {
        owner.is_none_or(|o| self.acts_for_tenant || o == self.user)
    }
}

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
    if access.may_use(owner.as_ref()) {
        Ok(())
    } else {
        Err(StoreError::NotFound(what))
    }
}

/// Makes the caller the chat's owner when it has none, and records the write as
/// activity. Returns whether the caller became the owner now.
///
/// # Errors
/// [`StoreError::NotFound`] when another user owns the chat, or the chat is
/// outside the caller's namespace.
pub async fn claim(
    db: &DatabaseConnection,
    chat_id: &ChatId,
    access: &Access,
) -> Result<bool, StoreError> {
    let txn = begin_chat(db, chat_id).await?;
    let claimed = claim_in(&txn, chat_id, access).await?;
    txn.commit().await?;
    Ok(claimed)
}

/// [`claim`] inside a transaction that already holds the chat's lock.
pub(crate) async fn claim_in<C: ConnectionTrait>(
    txn: &C,
    chat_id: &ChatId,
    access: &Access,
) -> Result<bool, StoreError> {
    if !access.in_namespace(chat_id.as_str()) {
        return Err(StoreError::NotFound("chat"));
    }
    let now = Utc::now();
    match chat_owners::Entity::find_by_id(chat_id.as_str())
        .one(txn)
        .await?
    {
        Some(owner) if !access.may_use(Some(&owner)) => Err(StoreError::NotFound("chat")),
        Some(owner) => {
            let mut row: chat_owners::ActiveModel = owner.into();
            row.last_activity_at = Set(now);
            row.update(txn).await?;
            Ok(false)
        }
        None => {
            let row = chat_owners::ActiveModel {
                chat_id: Set(chat_id.as_str().to_owned()),
                tenant: Set(access.tenant.clone()),
                owner_user: Set(access.user.clone()),
                created_at: Set(now),
                last_activity_at: Set(now),
            };
            chat_owners::Entity::insert(row)
                .exec_without_returning(txn)
                .await?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(tenant: &str) -> Access {
        Access {
            tenant: tenant.into(),
            user: "u".into(),
            acts_for_tenant: false,
        }
    }

    #[test]
    fn a_chat_is_in_a_namespace_only_with_the_exact_tenant_prefix() {
        assert!(access("acme").in_namespace("acme/c1"));
        assert!(!access("acme").in_namespace("acme2/c1"));
        assert!(!access("acm").in_namespace("acme/c1"));
        assert!(!access("acme").in_namespace("acme/"));
        assert!(!access("acme").in_namespace("acme"));
    }
}
