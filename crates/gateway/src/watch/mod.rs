//! `WatchMemory`: a stream of a chat's new versions and its deletion.
//!
//! A stream opens with a memory-store read (tenant and owner checked there,
//! NOT_FOUND for a chat the caller may not see, as for GetMemory) and listens to
//! the chat's change events from before that read. It forwards an event's
//! memory as is only when it is the very next version of a chat whose owner was
//! already confirmed for this caller; anything else (a gap, a version that did
//! not go up, the first version of a chat that did not exist at the open) is
//! confirmed by a fresh memory-store read first, and answered from that read.
//! Ownership changes only through a deletion, which ends the stream, so an event
//! never shows a caller a chat that is not theirs; nor does a deletion, which
//! ends only a stream whose chat was confirmed (an unconfirmed stream learns
//! nothing of a chat it may not see). A lost event delays the latest version
//! until the next version's event or a read every
//! [`WatchSettings::recheck_ms`] at the latest (events without a memory, such
//! as acceptances, do not postpone that read). A stream opened with a
//! `from_version` above the chat's current version (the client's copy is of a
//! chat deleted and started again since) gets the deletion and ends.
//!
//! Each stream holds a buffer of `buffer` events. A client that stops reading
//! fills it, and the stream then ends with RESOURCE_EXHAUSTED naming the last
//! version it received, to resume from. Streams per gateway are bounded by
//! `max_streams`, counted until tonic drops the client's stream (so the
//! buffers of clients that stopped reading are bounded too). The stream
//! writes one audit row when it opens (`watch`) and one when it ends
//! (`watch_end`, with the versions sent and why it ended).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::Stream;
use serde::{Deserialize, Serialize};
use service_kit::settings::SettingsError;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use chat_memory_proto::namespace::TenantChatId;
use chat_memory_proto::store::{self as store_pb, Access};
use chat_memory_proto::v1::{Freshness, WatchMemoryRequest, WatchMemoryResponse};

use crate::audit::{Action, AuditSink, Facts, Row};
use crate::changes::{ChatEvents, Event, MemoryChanged};
use crate::error::GatewayError;
use crate::gate::CallContext;
use crate::reads::Reads;
use crate::validation::{ChatId, FieldViolation, Limits};

/// The `[watch]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct WatchSettings {
    /// Open WatchMemory streams this gateway serves at once; more are refused
    /// with RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Events a stream buffers for a client that reads slowly; one that falls
    /// this far behind is ended with RESOURCE_EXHAUSTED.
    pub buffer: usize,
    /// Each stream re-reads its chat this often even without an event (catches
    /// an event lost on the way, and a chat that expired).
    pub recheck_ms: u64,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            max_streams: 10_000,
            buffer: 64,
            recheck_ms: 30_000,
        }
    }
}

impl WatchSettings {
    /// # Errors
    /// [`SettingsError::Invalid`] naming the bad field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.buffer == 0 {
            return Err(SettingsError::invalid("watch.buffer", "must be positive"));
        }
        if self.recheck_ms == 0 {
            return Err(SettingsError::invalid(
                "watch.recheck_ms",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// The stream type tonic serves.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchMemoryResponse, Status>> + Send>>;

/// Opens and runs watch streams; cheap to clone.
#[derive(Clone)]
pub struct Watches {
    reads: Reads,
    audit: AuditSink,
    limits: Limits,
    settings: WatchSettings,
    open: Arc<AtomicUsize>,
    /// Cancelled when the gateway shuts down: every stream then ends with
    /// UNAVAILABLE (so a graceful shutdown does not wait for streams forever).
    shutdown: CancellationToken,
}

/// Counts an open stream until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        let open = self.0.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::watch_streams(open.saturating_sub(1));
    }
}

impl std::ops::Deref for Slot {
    type Target = Arc<AtomicUsize>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Everything a stream's task needs once it is open.
pub struct Opened {
    /// Taken by the client's stream, which holds it until tonic drops the
    /// stream: the events buffered for a client that stopped reading count
    /// against `max_streams` until then.
    slot: Option<Slot>,
    /// The chat, namespaced; its public id is what the client sees.
    chat: TenantChatId,
    access: Access,
    events: ChatEvents,
    /// The last version the client has (or will have from `first`).
    last: i64,
    /// Whether a memory-store read confirmed this caller may see the chat.
    confirmed: bool,
    first: Option<WatchMemoryResponse>,
    /// The chat's current version is below `from_version`: the version the
    /// client has was of a deleted chat (started again since).
    superseded: bool,
    from_version: i64,
}

impl Watches {
    pub fn new(reads: Reads, audit: AuditSink, limits: Limits, settings: WatchSettings) -> Self {
        Self {
            reads,
            audit,
            limits,
            settings,
            open: Arc::default(),
            shutdown: CancellationToken::new(),
        }
    }

    /// Ends every open stream (UNAVAILABLE, naming the version to resume from)
    /// and refuses new ones.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
    }

    /// Open streams now.
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Checks the request and the caller's access, and takes a stream slot.
    ///
    /// # Errors
    /// INVALID_ARGUMENT naming the field; RESOURCE_EXHAUSTED at `max_streams`;
    /// NOT_FOUND when `from_version` > 0 names a chat the caller cannot see
    /// (deleted, or never theirs); memory-store errors.
    pub async fn open(
        &self,
        access: Access,
        facts: &mut Facts,
        req: WatchMemoryRequest,
    ) -> Result<Opened, GatewayError> {
        let chat = ChatId::parse(&req.chat_id, &self.limits)?;
        facts.chat_id = chat.as_str().to_owned();
        if req.from_version < 0 {
            return Err(GatewayError::Invalid(FieldViolation {
                field: "from_version".to_owned(),
                reason: "must not be negative".to_owned(),
            }));
        }
        if self.shutdown.is_cancelled() {
            return Err(GatewayError::ShuttingDown);
        }
        let slot = Slot(self.open.clone());
        let open = slot.fetch_add(1, Ordering::Relaxed);
        crate::metrics::watch_streams(open + 1);
        if open >= self.settings.max_streams {
            return Err(GatewayError::TooManyWatches(self.settings.max_streams));
        }
        let chat_id = chat.namespaced(&access.tenant)?;
        // Listen before reading: a version committed in between is not missed.
        let events = self.reads.feed().listen(chat_id.as_str());
        let (last, confirmed, first, superseded) =
            match self.reads.read_fresh(&access, &chat_id).await {
                Ok(current) => {
                    let version = current.memory.as_ref().map_or(0, |m| m.version);
                    let first =
                        (version > req.from_version).then(|| response(chat.as_str(), current));
                    (
                        version.max(req.from_version),
                        true,
                        first,
                        version < req.from_version,
                    )
                }
                // No memory yet (or none this caller may see): wait for one.
                Err(GatewayError::NotFound(_)) if req.from_version == 0 => (0, false, None, false),
                Err(e) => return Err(e),
            };
        facts.detail = format!("from_version={}", req.from_version);
        Ok(Opened {
            slot: Some(slot),
            chat: chat_id,
            access,
            events,
            last,
            confirmed,
            first,
            superseded,
            from_version: req.from_version,
        })
    }

    /// Runs an opened stream on its own task; the returned stream is the client's.
    pub fn serve(&self, ctx: CallContext, mut opened: Opened) -> WatchStream {
        // One slot more than the buffer: room for the status that ends the
        // stream when the client stops reading.
        let (tx, rx) = mpsc::channel(self.settings.buffer + 1);
        let mut task = StreamTask {
            reads: self.reads.clone(),
            recheck: Duration::from_millis(self.settings.recheck_ms),
            next_recheck: Instant::now() + Duration::from_millis(self.settings.recheck_ms),
            tx,
            sent: 0,
            queued: opened.from_version,
            shutdown: self.shutdown.clone(),
        };
        let slot = opened.slot.take();
        let audit = self.audit.clone();
        tokio::spawn(async move {
            let public_chat = opened.chat.chat().to_owned();
            let (sent, end) = task.run(opened).await;
            let row = Row {
                request_id: ctx.request_id,
                tenant: ctx.principal.tenant.clone(),
                user: ctx.principal.user.clone(),
                action: Action::WatchEnd,
                outcome: end.code(),
                facts: Facts {
                    chat_id: public_chat,
                    detail: format!("versions_sent={sent} ended={}", end.reason()),
                    ..Facts::default()
                },
            };
            // A lost row is logged and counted by the sink.
            let _ = audit.record(row).await;
            drop(task);
        });
        client_stream(rx, slot)
    }
}

/// The client's end of a stream: it holds the stream's slot until tonic drops
/// it, with whatever is still buffered for a client that stopped reading.
fn client_stream(
    mut rx: mpsc::Receiver<Result<WatchMemoryResponse, Status>>,
    slot: Option<Slot>,
) -> WatchStream {
    Box::pin(futures::stream::poll_fn(move |cx| {
        let _slot = &slot;
        rx.poll_recv(cx)
    }))
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ClientGone,
    Deleted,
    TooSlow,
    StoreFailed,
    Shutdown,
}

impl End {
    fn code(self) -> tonic::Code {
        match self {
            Self::ClientGone => tonic::Code::Cancelled,
            Self::Deleted => tonic::Code::Ok,
            Self::TooSlow => tonic::Code::ResourceExhausted,
            Self::StoreFailed | Self::Shutdown => tonic::Code::Unavailable,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::ClientGone => "client_gone",
            Self::Deleted => "deleted",
            Self::TooSlow => "client_too_slow",
            Self::StoreFailed => "store_unavailable",
            Self::Shutdown => "shutdown",
        }
    }
}

struct StreamTask {
    reads: Reads,
    recheck: Duration,
    /// When a read confirms the chat next if no event did meanwhile (events
    /// that carry no memory do not postpone it).
    next_recheck: Instant,
    tx: mpsc::Sender<Result<WatchMemoryResponse, Status>>,
    sent: u64,
    shutdown: CancellationToken,
    /// The last version queued for the client: where it resumes after an end.
    queued: i64,
}

impl StreamTask {
    /// Runs the stream until it ends. The caller keeps `self` (the client's
    /// sender) alive until the end is audited, so the client sees the end after.
    async fn run(&mut self, mut s: Opened) -> (u64, End) {
        if s.superseded {
            let end = self.deleted(&s);
            return (self.sent, end);
        }
        if let Some(first) = s.first.take()
            && let Err(end) = self.send(first)
        {
            return (self.sent, end);
        }
        loop {
            let event = tokio::select! {
                () = self.tx.closed() => return (self.sent, End::ClientGone),
                () = self.shutdown.cancelled() => return (self.sent, self.end(End::Shutdown)),
                event = tokio::time::timeout_at(self.next_recheck, s.events.next()) => event,
            };
            let step = match event {
                Ok(Event::Changed(change)) => self.on_change(&mut s, &change).await,
                // A lost event or a timer tick: confirm with a read.
                Ok(Event::Lagged(_)) | Err(_) => self.confirm(&mut s).await,
                Ok(Event::Closed) => Err(self.end(End::Shutdown)),
            };
            if let Err(end) = step {
                return (self.sent, end);
            }
        }
    }

    async fn on_change(&mut self, s: &mut Opened, change: &MemoryChanged) -> Result<(), End> {
        if change.deleted {
            if !s.confirmed {
                // Never confirmed as this caller's: it learns nothing of the chat.
                return Ok(());
            }
            return Err(self.deleted(s));
        }
        let Some(memory) = &change.memory else {
            return Ok(()); // a failed job: nothing changed
        };
        if s.confirmed && s.last.checked_add(1) == Some(memory.version) {
            s.last = memory.version;
            // The next version in order, from its commit: as good as a read.
            self.next_recheck = Instant::now() + self.recheck;
            let event = WatchMemoryResponse {
                chat_id: s.chat.chat().to_owned(),
                memory: Some(memory.clone()),
                last_applied_job_id: change.last_applied_job_id.clone(),
                deleted: false,
                // The commit's own count (unset from an older worker).
                freshness: change.pending_jobs.map(|pending_jobs| Freshness {
                    last_applied_job_id: change.last_applied_job_id.clone(),
                    pending_jobs,
                }),
            };
            return self.send(event);
        }
        // A gap, old news, or a chat not confirmed yet: the read tells.
        self.confirm(s).await
    }

    /// Reads the chat and sends what the client does not have yet.
    async fn confirm(&mut self, s: &mut Opened) -> Result<(), End> {
        self.next_recheck = Instant::now() + self.recheck;
        match self.reads.read_fresh(&s.access, &s.chat).await {
            Ok(current) => {
                let version = current.memory.as_ref().map_or(0, |m| m.version);
                if s.confirmed && version < s.last {
                    // Deleted and started again since: this stream's versions end here.
                    return Err(self.deleted(s));
                }
                s.confirmed = true;
                if version > s.last {
                    s.last = version;
                    return self.send(response(s.chat.chat(), current));
                }
                Ok(())
            }
            Err(GatewayError::NotFound(_)) => {
                if s.confirmed || s.last > 0 {
                    return Err(self.deleted(s));
                }
                Ok(()) // still no memory this caller may see
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch stream: memory-store read failed");
                Err(self.end(End::StoreFailed))
            }
        }
    }

    fn deleted(&mut self, s: &Opened) -> End {
        let event = WatchMemoryResponse {
            chat_id: s.chat.chat().to_owned(),
            memory: None,
            last_applied_job_id: String::new(),
            deleted: true,
            freshness: None,
        };
        match self.send(event) {
            Ok(()) => End::Deleted,
            Err(end) => end,
        }
    }

    fn send(&mut self, event: WatchMemoryResponse) -> Result<(), End> {
        // Keep the last slot for the status that ends a stream.
        if self.tx.capacity() <= 1 {
            return Err(self.end(End::TooSlow));
        }
        let version = event.memory.as_ref().map(|m| m.version);
        match self.tx.try_send(Ok(event)) {
            Ok(()) => {
                self.sent += 1;
                if let Some(v) = version {
                    self.queued = v;
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(End::ClientGone),
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.end(End::TooSlow)),
        }
    }

    /// Ends the stream with the status of `end`, naming the version to resume from.
    fn end(&mut self, end: End) -> End {
        let last = self.queued;
        let status = match end {
            End::TooSlow => crate::error::exhausted(
                crate::error::Reason::WatchClientTooSlow,
                &format!(
                    "watch stream closed: the client fell {} events behind; \
                     reconnect with from_version={last}",
                    self.tx.max_capacity() - 1
                ),
                None,
            ),
            End::StoreFailed => Status::unavailable(format!(
                "watch stream closed: memory-store unavailable; reconnect with from_version={last}"
            )),
            End::Shutdown => Status::unavailable(format!(
                "watch stream closed: the gateway is shutting down; reconnect with from_version={last}"
            )),
            End::ClientGone | End::Deleted => return end,
        };
        let _ = self.tx.try_send(Err(status));
        end
    }
}

fn response(public_chat: &str, current: store_pb::GetMemoryResponse) -> WatchMemoryResponse {
    WatchMemoryResponse {
        chat_id: public_chat.to_owned(),
        memory: current.memory,
        last_applied_job_id: current
            .freshness
            .as_ref()
            .map(|f| f.last_applied_job_id.clone())
            .unwrap_or_default(),
        deleted: false,
        freshness: current.freshness,
    }
}

#[cfg(test)]
mod tests;
