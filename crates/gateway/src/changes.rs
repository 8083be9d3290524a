//! The gateway's feed of memory change events (`job_queue::changes`).
//!
//! One core-NATS subscription per gateway receives every chat's events; a
//! registry hands each event to the read-your-writes waits and watch streams
//! of its chat, and drops it when nobody here waits on that chat. Events are
//! hints, never answers on their own for a caller not yet checked: readers
//! confirm through memory-store (which checks tenant and owner), or through the
//! entry a commit's event installed in the cache (checked the same way), before they
//! answer, and re-check on a timer so a lost event only makes an answer later.
//!
//! The events the gateway itself causes (acceptances, deletions) go out
//! through [`ChangeAnnouncer`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use tokio::sync::broadcast;

pub use job_queue::changes::MemoryChanged;

use crate::cache::MemoryCache;
use crate::owners::OwnerCache;

/// Publishes the change events the gateway itself causes (acceptances and
/// deletions); best effort (see `job_queue::changes`), except a deletion's
/// announcement before it is made ([`ChangeAnnouncer::announce_before`]).
#[derive(Clone)]
pub struct ChangeAnnouncer {
    publisher: Arc<job_queue::changes::Publisher>,
    /// How long an announcement before a change may take (`nats.publish_timeout_ms`).
    timeout: std::time::Duration,
}

impl ChangeAnnouncer {
    pub fn new(publisher: job_queue::changes::Publisher, timeout: std::time::Duration) -> Self {
        Self {
            publisher: Arc::new(publisher),
            timeout,
        }
    }

    pub async fn announce(&self, event: MemoryChanged) {
        if let Err(e) = self.publisher.publish(event).await {
            tracing::warn!(error = %e, "change event not published; caches and watch streams catch up at their next check");
        }
    }

    /// Announces a change about to be made and waits until the event is on
    /// the connection to NATS ([`MemoryChanged::deleting`]), for at most the
    /// publish timeout.
    ///
    /// # Errors
    /// The reason it could not be announced: the change must not be made.
    pub async fn announce_before(&self, event: MemoryChanged) -> Result<(), String> {
        self.publisher.publish_flushed(event, self.timeout).await
    }
}

/// Follows this gateway's NATS connection: while it is down no change event
/// can arrive, and those published meanwhile are lost, so the read cache and
/// the owner cache drop everything when it goes down, when it is back, and
/// when the client dropped messages of a slow subscription.
pub async fn follow_connection(
    mut events: tokio::sync::mpsc::UnboundedReceiver<async_nats::Event>,
    cache: Arc<MemoryCache>,
    owners: Arc<OwnerCache>,
) {
    // The client reports its first connection too (before this task reads
    // it): nothing was cached before it, and nothing was missed.
    let mut down = false;
    while let Some(event) = events.recv().await {
        let connected = match event {
            async_nats::Event::Disconnected => {
                down = true;
                false
            }
            async_nats::Event::Connected if !down => continue,
            async_nats::Event::Connected => {
                down = false;
                true
            }
            async_nats::Event::SlowConsumer(_) => {
                tracing::warn!(
                    "NATS dropped messages of a slow subscription; the read cache is cleared"
                );
                crate::metrics::read_cache("cleared");
                cache.clear();
                owners.clear();
                continue;
            }
            _ => continue,
        };
        tracing::info!(
            connected,
            "NATS connection changed; the read cache is cleared"
        );
        crate::metrics::read_cache("cleared");
        cache.set_connected(connected);
        owners.clear();
    }
}

/// Every chat's change events on this gateway; cheap to clone.
#[derive(Clone)]
pub struct ChangeFeed {
    inner: Arc<Registry>,
}

struct Registry {
    /// Dropped entries for every event's chat, a commit's memory installed
    /// (and cleared on a gap).
    cache: Option<Arc<MemoryCache>>,
    /// Forgets a deleted chat's confirmed writer (the chat may get a new owner).
    owners: Option<Arc<OwnerCache>>,
    chats: Mutex<HashMap<String, broadcast::Sender<Arc<MemoryChanged>>>>,
    /// Events one chat's listener may fall behind by before it sees `Lagged`.
    capacity: usize,
}

/// A chat's events, for as long as this is alive.
pub struct ChatEvents {
    chat_id: String,
    rx: broadcast::Receiver<Arc<MemoryChanged>>,
    registry: Arc<Registry>,
}

/// What [`ChatEvents::next`] yields.
#[derive(Debug)]
pub enum Event {
    Changed(Arc<MemoryChanged>),
    /// This listener fell this many events behind and they were dropped.
    Lagged(u64),
    /// The feed stopped (the gateway is shutting down).
    Closed,
}

impl ChangeFeed {
    /// A feed nothing publishes into yet; [`ChangeFeed::subscribe_all`]
    /// fills it. Every event also drops its chat from `cache`, and every
    /// deletion makes `owners` forget the chat's confirmed writer.
    pub fn new(
        capacity: usize,
        cache: Option<Arc<MemoryCache>>,
        owners: Option<Arc<OwnerCache>>,
    ) -> Self {
        Self {
            inner: Arc::new(Registry {
                cache,
                owners,
                chats: Mutex::new(HashMap::new()),
                capacity: capacity.max(1),
            }),
        }
    }

    /// Subscribes to every chat's events and dispatches them until the
    /// subscription ends. Run it as a task.
    ///
    /// # Errors
    /// The subscription's error when NATS refuses it.
    pub async fn subscribe_all(
        &self,
        client: &async_nats::Client,
        subject_prefix: &str,
    ) -> Result<impl std::future::Future<Output = ()> + Send + 'static, async_nats::SubscribeError>
    {
        let mut subscription = client
            .subscribe(job_queue::changes::wildcard(subject_prefix))
            .await?;
        let feed = self.clone();
        let prefix = subject_prefix.to_owned();
        Ok(async move {
            while let Some(message) = subscription.next().await {
                match job_queue::changes::decode(&message.payload) {
                    // An event answers reads now: one whose chat is not its
                    // subject's is not ours (or is broken) and changes nothing.
                    Ok(event)
                        if message.subject.as_str()
                            != job_queue::changes::subject(&prefix, &event.chat_id) =>
                    {
                        tracing::warn!(subject = %message.subject, "change event for another chat's subject ignored");
                    }
                    Ok(event) => feed.dispatch(event),
                    Err(e) => {
                        tracing::warn!(subject = %message.subject, error = %e, "undecodable change event ignored")
                    }
                }
            }
            tracing::warn!("change-event subscription ended");
        })
    }

    /// Hands `event` to its chat's listeners, if any.
    pub fn dispatch(&self, event: MemoryChanged) {
        if (event.deleted || event.deleting)
            && let Some(owners) = &self.inner.owners
        {
            owners.forget(&event.chat_id);
        }
        if let Some(cache) = &self.inner.cache {
            if cache.note_sequence(&event.publisher, event.seq)
                && let Some(owners) = &self.inner.owners
            {
                // A missed event may have been a deletion.
                owners.clear();
            }
            cache.apply_event(&event);
        }
        let chats = self
            .inner
            .chats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = chats.get(&event.chat_id) {
            // No receiver left means its guard is being dropped right now.
            let _ = tx.send(Arc::new(event));
        }
    }

    /// Listens to `chat_id`'s events (namespaced id) from now on.
    pub fn listen(&self, chat_id: &str) -> ChatEvents {
        let mut chats = self
            .inner
            .chats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let rx = match chats.get(chat_id) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(self.inner.capacity);
                chats.insert(chat_id.to_owned(), tx);
                rx
            }
        };
        ChatEvents {
            chat_id: chat_id.to_owned(),
            rx,
            registry: self.inner.clone(),
        }
    }

    /// Chats with at least one listener here (for tests and metrics).
    pub fn chats_listened(&self) -> usize {
        self.inner
            .chats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl ChatEvents {
    /// The next event of this chat.
    pub async fn next(&mut self) -> Event {
        loop {
            match self.rx.recv().await {
                // Another chat whose key collides never reaches here (the
                // registry is keyed by chat id), but stay strict.
                Ok(event) if event.chat_id != self.chat_id => {}
                Ok(event) => return Event::Changed(event),
                Err(broadcast::error::RecvError::Lagged(n)) => return Event::Lagged(n),
                Err(broadcast::error::RecvError::Closed) => return Event::Closed,
            }
        }
    }
}

impl Drop for ChatEvents {
    fn drop(&mut self) {
        let mut chats = self
            .registry
            .chats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // This receiver still counts until it is dropped, after this body.
        if chats
            .get(&self.chat_id)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            chats.remove(&self.chat_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `follow_connection` over `events`, then reads back `t/c` as a
    /// settled chat: its lifetime in the cache, if it was kept.
    async fn after_events(events: &[async_nats::Event]) -> Option<std::time::Duration> {
        let cache = Arc::new(MemoryCache::new(&crate::cache::ReadCacheSettings {
            capacity: 10,
            ttl_ms: 1_000,
            settled_ttl_ms: 60_000,
            ..crate::cache::ReadCacheSettings::default()
        }));
        let owners = Arc::new(OwnerCache::new(
            &crate::owners::OwnershipCacheSettings::default(),
        ));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for e in events {
            tx.send(e.clone()).expect("listening");
        }
        drop(tx);
        follow_connection(rx, cache.clone(), owners).await;
        let read = chat_memory_proto::store::GetMemoryResponse {
            chat_id: "t/c".into(),
            memory: Some(chat_memory_proto::v1::Memory {
                version: 1,
                ..Default::default()
            }),
            freshness: Some(chat_memory_proto::v1::Freshness {
                last_applied_job_id: "j".into(),
                pending_jobs: 0,
            }),
            owner_user: "u".into(),
            expires_at: None,
        };
        cache.store_memory("t/c", cache.ticket(), &read);
        cache.lifetime_of("t/c")
    }

    #[tokio::test]
    async fn the_first_connection_changes_nothing_a_lost_one_stops_the_cache_a_new_one_unsettles_it()
     {
        use async_nats::Event::{Connected, Disconnected};
        assert_eq!(
            after_events(&[Connected]).await,
            Some(std::time::Duration::from_secs(60)),
            "the first connection is no reconnection"
        );
        assert_eq!(
            after_events(&[Connected, Disconnected]).await,
            None,
            "nothing kept while disconnected"
        );
        assert_eq!(
            after_events(&[Connected, Disconnected, Connected]).await,
            Some(std::time::Duration::from_secs(1)),
            "nothing settled right after a reconnection"
        );
    }

    fn version(chat: &str, v: i64) -> MemoryChanged {
        MemoryChanged {
            chat_id: chat.into(),
            memory: Some(chat_memory_proto::v1::Memory {
                version: v,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_listener_gets_its_chats_events_in_order_and_no_other_chats() {
        let feed = ChangeFeed::new(8, None, None);
        let mut a = feed.listen("t/a");
        feed.dispatch(version("t/b", 1));
        feed.dispatch(version("t/a", 1));
        feed.dispatch(version("t/a", 2));
        for want in [1, 2] {
            match a.next().await {
                Event::Changed(e) => {
                    assert_eq!(e.chat_id, "t/a");
                    assert_eq!(e.memory.as_ref().map(|m| m.version), Some(want));
                }
                other => panic!("expected version {want}, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn the_registry_forgets_a_chat_when_its_last_listener_goes() {
        let feed = ChangeFeed::new(8, None, None);
        let a1 = feed.listen("t/a");
        let a2 = feed.listen("t/a");
        assert_eq!(feed.chats_listened(), 1);
        drop(a1);
        assert_eq!(feed.chats_listened(), 1);
        drop(a2);
        assert_eq!(feed.chats_listened(), 0);
    }

    #[tokio::test]
    async fn a_listener_that_falls_behind_is_told_how_far() {
        let feed = ChangeFeed::new(2, None, None);
        let mut a = feed.listen("t/a");
        for v in 1..=5 {
            feed.dispatch(version("t/a", v));
        }
        match a.next().await {
            Event::Lagged(n) => assert_eq!(n, 3),
            other => panic!("expected Lagged, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_deletion_anywhere_forgets_the_chats_confirmed_writer() {
        let owners = Arc::new(OwnerCache::new(
            &crate::owners::OwnershipCacheSettings::default(),
        ));
        owners.remember("t/a", "alice");
        owners.remember("t/b", "bob");
        let feed = ChangeFeed::new(8, None, Some(owners.clone()));
        feed.dispatch(version("t/b", 3));
        feed.dispatch(MemoryChanged {
            chat_id: "t/a".into(),
            deleted: true,
            ..Default::default()
        });
        assert!(!owners.confirmed("t/a", "alice"));
        assert!(owners.confirmed("t/b", "bob"), "a commit keeps the writer");
    }

    #[tokio::test]
    async fn missed_events_forget_every_confirmed_writer() {
        let owners = Arc::new(OwnerCache::new(
            &crate::owners::OwnershipCacheSettings::default(),
        ));
        let cache = Arc::new(MemoryCache::new(&crate::cache::ReadCacheSettings::default()));
        owners.remember("t/a", "alice");
        let feed = ChangeFeed::new(8, Some(cache), Some(owners.clone()));
        let numbered = |seq| MemoryChanged {
            publisher: "gateway-2".into(),
            seq,
            ..version("t/b", 1)
        };
        feed.dispatch(numbered(1));
        feed.dispatch(numbered(2));
        assert!(owners.confirmed("t/a", "alice"), "no event missed yet");
        feed.dispatch(numbered(4));
        assert!(
            !owners.confirmed("t/a", "alice"),
            "event 3 may have deleted the chat"
        );
    }
}
