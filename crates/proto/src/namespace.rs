//! The tenant namespace of chat ids: `<tenant>/<chat>`.
//!
//! Clients name a chat by its public id; the gateway puts it in the caller's
//! tenant namespace before anything downstream sees it, so two tenants using
//! the same chat id get two different chats. memory-store, the job payload,
//! the queue's subjects and change events all carry the namespaced form.
//! [`TenantChatId`] is the one place that parses and formats it.

use std::fmt;
use std::str::FromStr;

/// Separator between the tenant and the public chat id. A tenant id never
/// contains it (the gateway's public chat ids do not either).
pub const SEPARATOR: char = '/';

/// A chat id in its tenant's namespace: `<tenant>/<chat>`, both parts non-empty.
///
/// The tenant is everything before the first [`SEPARATOR`], so it never
/// contains one; the chat is the rest. Formatting and parsing round-trip:
/// `TenantChatId::parse(id.as_str()) == Ok(id)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantChatId {
    /// The whole namespaced id, as it travels on the wire.
    full: String,
    /// Byte offset of the separator in `full`.
    split: usize,
}

/// Why a string or a pair is not a namespaced chat id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    #[error("a namespaced chat id is <tenant>/<chat>: no '/' found")]
    NoSeparator,
    #[error("the tenant must not be empty")]
    EmptyTenant,
    #[error("the tenant must not contain '/'")]
    SeparatorInTenant,
    #[error("the chat id must not be empty")]
    EmptyChat,
}

impl TenantChatId {
    /// `chat` in `tenant`'s namespace.
    ///
    /// # Errors
    /// [`NamespaceError`] for an empty tenant or chat, or a tenant holding the separator.
    pub fn new(tenant: &str, chat: &str) -> Result<Self, NamespaceError> {
        if tenant.is_empty() {
            return Err(NamespaceError::EmptyTenant);
        }
        if tenant.contains(SEPARATOR) {
            return Err(NamespaceError::SeparatorInTenant);
        }
        if chat.is_empty() {
            return Err(NamespaceError::EmptyChat);
        }
        Ok(Self {
            full: format!("{tenant}{SEPARATOR}{chat}"),
            split: tenant.len(),
        })
    }

    /// Parses a namespaced id as it travels on the wire.
    ///
    /// # Errors
    /// [`NamespaceError`] when there is no separator, or the tenant or chat is empty.
    pub fn parse(namespaced: &str) -> Result<Self, NamespaceError> {
        let (tenant, chat) = namespaced
            .split_once(SEPARATOR)
            .ok_or(NamespaceError::NoSeparator)?;
        Self::new(tenant, chat)
    }

    /// Parses `namespaced` only if it lies in `tenant`'s namespace: the tenant
    /// part must equal `tenant` exactly (`acm` is not a prefix of `acme/chat`).
    pub fn parse_in(tenant: &str, namespaced: &str) -> Option<Self> {
        Self::parse(namespaced)
            .ok()
            .filter(|id| id.in_tenant(tenant))
    }

    pub fn tenant(&self) -> &str {
        &self.full[..self.split]
    }

    /// The public chat id (what the tenant's clients call the chat).
    pub fn chat(&self) -> &str {
        &self.full[self.split + SEPARATOR.len_utf8()..]
    }

    /// Whether this chat lies in `tenant`'s namespace (exact tenant match).
    pub fn in_tenant(&self, tenant: &str) -> bool {
        self.tenant() == tenant
    }

    /// The namespaced id, `<tenant>/<chat>`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn into_string(self) -> String {
        self.full
    }
}

impl fmt::Display for TenantChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl FromStr for TenantChatId {
    type Err = NamespaceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for TenantChatId {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

impl From<TenantChatId> for String {
    fn from(id: TenantChatId) -> Self {
        id.full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespaced_id_formats_and_parses_back_to_the_same_parts() {
        for (tenant, chat) in [
            ("acme", "chat-1"),
            ("t", "c"),
            ("a.b-c", "x:y@z"),
            ("t", "a/b"),
        ] {
            let id = TenantChatId::new(tenant, chat).expect("valid");
            assert_eq!(id.as_str(), format!("{tenant}/{chat}"));
            assert_eq!(id.to_string(), id.as_str());
            assert_eq!((id.tenant(), id.chat()), (tenant, chat));
            assert_eq!(TenantChatId::parse(id.as_str()), Ok(id.clone()));
            assert_eq!(id.as_str().parse::<TenantChatId>(), Ok(id));
        }
    }

    #[test]
    fn the_tenant_is_everything_before_the_first_separator() {
        let id = TenantChatId::parse("t/a/b").expect("valid");
        assert_eq!((id.tenant(), id.chat()), ("t", "a/b"));
    }

    #[test]
    fn empty_parts_and_missing_separators_are_refused() {
        let cases = [
            ("", NamespaceError::NoSeparator),
            ("chat-1", NamespaceError::NoSeparator),
            ("/chat-1", NamespaceError::EmptyTenant),
            ("acme/", NamespaceError::EmptyChat),
            ("/", NamespaceError::EmptyTenant),
        ];
        for (raw, expected) in cases {
            assert_eq!(TenantChatId::parse(raw), Err(expected), "{raw:?}");
        }
        assert_eq!(TenantChatId::new("", "c"), Err(NamespaceError::EmptyTenant));
        assert_eq!(TenantChatId::new("t", ""), Err(NamespaceError::EmptyChat));
        assert_eq!(
            TenantChatId::new("a/b", "c"),
            Err(NamespaceError::SeparatorInTenant)
        );
    }

    #[test]
    fn an_id_lies_only_in_the_namespace_of_exactly_its_tenant() {
        let id = TenantChatId::new("acme", "chat-1").expect("valid");
        assert!(id.in_tenant("acme"));
        for other in ["acm", "acme/", "acmecorp", "other", ""] {
            assert!(!id.in_tenant(other), "{other:?}");
        }
        assert_eq!(TenantChatId::parse_in("acme", "acme/chat-1"), Some(id));
        assert_eq!(TenantChatId::parse_in("acm", "acme/chat-1"), None);
        assert_eq!(TenantChatId::parse_in("acme", "acmecorp/chat-1"), None);
        assert_eq!(TenantChatId::parse_in("acme", "acme/"), None);
        assert_eq!(TenantChatId::parse_in("acme", "chat-1"), None);
    }
}
