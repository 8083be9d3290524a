//! The scheduler: takes jobs from the shared consumer and runs every chat's
//! jobs one batch at a time, in acceptance order, while different chats run in
//! parallel up to the worker's summarizer concurrency.
//!
//! # The model
//! ```text
//!  JetStream consumer ──fetch (while there is room)──▶ chats: subject ─▶ waiting jobs
//!                                                        │ one task per chat with jobs
//!                                                        ▼
//!                       gate: has the first job's predecessor left the stream?
//!                         yes ─▶ batch = first + the chained jobs behind it (coalescing)
//!                                 ─▶ Processor (BeginJobs ─▶ agent ─▶ CommitJobs) ─▶ ack each
//!                         no  ─▶ hand the chat's jobs back (NAK with a delay)
//! ```
//! - A job runs only once its chain link ([`job_queue::headers::PREV_SEQ`]) is
//!   gone from the stream: acknowledged by this worker (known locally) or by
//!   another (looked up). Acks happen after memory-store committed, so a job
//!   always builds on its predecessor's memory, and never runs beside it.
//! - Jobs of a chat that arrive while its task runs wait in its queue; the next
//!   batch folds the ones chained behind each other into one summarizer call.
//! - Every held job, running or waiting, gets progress acks, so only a dead
//!   worker's jobs are redelivered (after `ack_wait`).
//! - Capacity: at most `agent.max_concurrent_calls + PREFETCH_CHATS` chat tasks
//!   exist at once (so a worker never hoards chats another worker could run),
//!   and at most `consumer.max_held_jobs` jobs are held.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::jetstream::{
    AckKind, Message,
    consumer::{Consumer, pull},
    stream::{RawMessageErrorKind, Stream},
};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use chat_memory_proto::store::SkipReason;
use chat_memory_proto::time::from_timestamp;

use self::message::{batch_span, decode, estimated_tokens, nak, outcome_label};
use crate::dead_letters::DeadLetters;
use crate::metrics;
use crate::processor::{Delivery, Disposition, Outcome, Processor};
use crate::settings::{CoalesceSettings, ConsumerSettings};

mod message;

/// How long one pull request waits on the server for jobs.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// At shutdown, how long the jobs of the current pull still on their way are
/// waited for, each, to be handed back.
const SHUTDOWN_HAND_BACK: Duration = Duration::from_millis(50);
/// Most jobs asked for in one pull: small enough that the server spreads a burst
/// over every worker's pull requests instead of filling one worker's.
const FETCH_MAX: usize = 64;
/// Chat tasks beyond the summarizer slots: ready to start the moment a slot frees.
const PREFETCH_CHATS: usize = 8;
/// Sequences of its own acknowledged jobs a chat remembers, to pass its chain
/// gate without a lookup.
const REMEMBERED_ACKS: usize = 64;
/// Delay before a job left for redelivery (memory-store unavailable) comes back.
const ABANDON_DELAY: Duration = Duration::from_secs(1);

/// A job this worker holds: its message (and so its ack), and its slot.
struct Held {
    message: Message,
    delivery: Delivery,
    /// The chat's previous job still in the stream at acceptance (0: none).
    prev_seq: u64,
    _slot: OwnedSemaphorePermit,
}

impl Held {
    fn seq(&self) -> u64 {
        self.delivery.message_seq
    }
}

/// The first waiting job of a chat, as its gate sees it.
struct Front {
    /// Its stream sequence.
    seq: u64,
    /// Its chain link.
    prev: u64,
    /// Whether the link is known to have left the stream.
    known_gone: bool,
}

/// The jobs of one chat (one subject) held by this worker.
#[derive(Default)]
struct Chat {
    /// Waiting jobs, by stream sequence.
    waiting: VecDeque<Held>,
    /// This chat's jobs this worker acknowledged, newest last.
    removed: VecDeque<u64>,
}

struct Inner {
    chats: Mutex<HashMap<String, Chat>>,
    processor: Processor,
    dead_letters: DeadLetters,
    /// The jobs stream, to see whether a predecessor is still in it.
    stream: Stream,
    settings: ConsumerSettings,
    coalesce: CoalesceSettings,
    /// Chat tasks that may exist at once.
    chat_slots: Arc<Semaphore>,
    /// Jobs that may be held at once.
    job_slots: Arc<Semaphore>,
    cancel: CancellationToken,
    /// Fires when [`Scheduler::run`]'s future is dropped unfinished (the worker
    /// is torn down as a crash would): chat tasks stop at once, acking and
    /// handing back nothing, so their jobs are redelivered after `ack_wait`.
    killed: CancellationToken,
    tasks: TaskTracker,
}

/// Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    pub fn new(
        processor: Processor,
        dead_letters: DeadLetters,
        stream: Stream,
        settings: ConsumerSettings,
        coalesce: CoalesceSettings,
        max_concurrent_calls: u32,
        cancel: CancellationToken,
    ) -> Self {
        let chat_slots = max_concurrent_calls as usize + PREFETCH_CHATS;
        let job_slots = settings.max_held_jobs as usize;
        Self {
            inner: Arc::new(Inner {
                chats: Mutex::default(),
                processor,
                dead_letters,
                stream,
                settings,
                coalesce,
                chat_slots: Arc::new(Semaphore::new(chat_slots)),
                job_slots: Arc::new(Semaphore::new(job_slots)),
                cancel,
                killed: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Takes jobs from `consumer` until cancelled, then waits until every chat
    /// task has finished or handed its jobs back.
    pub async fn run(&self, consumer: Consumer<pull::Config>) {
        let _killed_when_dropped = self.inner.killed.clone().drop_guard();
        self.fetch(consumer).await;
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    async fn fetch(&self, consumer: Consumer<pull::Config>) {
        let inner = &self.inner;
        let mut puller = job_queue::pull::Puller::new(consumer, PULL_EXPIRES, "jobs");
        while !inner.cancel.is_cancelled() {
            // Room for at least one more chat and one more job, then as much as is free.
            let Some((mut chat_slots, mut job_slots)) = self.room().await else {
                return;
            };
            let n = chat_slots.num_permits().min(job_slots.num_permits());
            let Some(mut batch) = puller.next_batch(n, &inner.cancel).await else {
                return;
            };
            loop {
                let next = tokio::select! {
                    biased;
                    () = inner.cancel.cancelled() => {
                        // Jobs of this pull already on their way are handed
                        // back at once, not left waiting for their ack_wait.
                        while let Ok(Some(Ok(message))) =
                            tokio::time::timeout(SHUTDOWN_HAND_BACK, batch.next()).await
                        {
                            nak(&message, Duration::ZERO).await;
                        }
                        return;
                    }
                    next = batch.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        puller.delivered();
                        let (Some(chat_slot), Some(job_slot)) =
                            (chat_slots.split(1), job_slots.split(1))
                        else {
                            // The server never sends more than asked; if it did,
                            // the job is redelivered after its ack_wait.
                            tracing::warn!("more jobs than pulled; leaving one for redelivery");
                            continue;
                        };
                        self.accept(message, chat_slot, job_slot).await;
                    }
                    Some(Err(e)) => {
                        puller.after_batch_error(e, &inner.cancel).await;
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    /// Waits for at least one chat slot and one job slot; takes up to
    /// [`FETCH_MAX`] of each that are free. `None` when cancelled.
    async fn room(&self) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let inner = &self.inner;
        let take = |sem: &Arc<Semaphore>| {
            let sem = sem.clone();
            async move {
                let mut permit = sem.clone().acquire_owned().await.ok()?;
                let more = sem.available_permits().min(FETCH_MAX - 1);
                if more > 0
                    && let Ok(extra) = sem.try_acquire_many_owned(u32::try_from(more).ok()?)
                {
                    permit.merge(extra);
                }
                Some(permit)
            }
        };
        tokio::select! {
            () = inner.cancel.cancelled() => None,
            slots = async {
                let chats = take(&inner.chat_slots).await?;
                let jobs = take(&inner.job_slots).await?;
                Some((chats, jobs))
            } => slots,
        }
    }

    /// Decodes a delivered message and queues it behind its chat's jobs,
    /// starting the chat's task if it has none.
    async fn accept(
        &self,
        message: Message,
        chat_slot: OwnedSemaphorePermit,
        job_slot: OwnedSemaphorePermit,
    ) {
        let Some((delivery, prev_seq)) = decode(&message).await else {
            return;
        };
        if delivery.delivered > 1 {
            metrics::get().redelivery();
        }
        let held = Held {
            prev_seq,
            delivery,
            message,
            _slot: job_slot,
        };
        let subject = held.message.subject.to_string();
        let mut chats = self.chats();
        match chats.get_mut(&subject) {
            Some(chat) => {
                // The chat's task is running and takes it in turn; the chat slot
                // goes back (dropped).
                let at = chat.waiting.partition_point(|h| h.seq() < held.seq());
                chat.waiting.insert(at, held);
            }
            None => {
                let mut chat = Chat::default();
                chat.waiting.push_back(held);
                chats.insert(subject.clone(), chat);
                let this = self.clone();
                let killed = self.inner.killed.clone();
                self.inner.tasks.spawn(async move {
                    tokio::select! {
                        () = killed.cancelled() => {}
                        () = this.run_chat(subject) => {}
                    }
                    drop(chat_slot);
                });
            }
        }
        metrics::get().set_held(self.held_count());
    }

    fn held_count(&self) -> u64 {
        let inner = &self.inner;
        (inner.settings.max_held_jobs as usize).saturating_sub(inner.job_slots.available_permits())
            as u64
    }

    fn chats(&self) -> MutexGuard<'_, HashMap<String, Chat>> {
        // A panic while holding the lock cannot leave the map half-changed in a
        // way that matters more than stopping the worker would: keep going.
        self.inner
            .chats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one chat's jobs until it has none left (or they are handed back).
    async fn run_chat(&self, subject: String) {
        loop {
            if self.inner.cancel.is_cancelled() {
                self.hand_back(&subject, Duration::ZERO).await;
                return;
            }
            let Some(Front {
                seq,
                prev,
                known_gone,
            }) = self.front(&subject)
            else {
                return;
            };
            if !known_gone && !self.gone_from_stream(prev).await {
                // Its predecessor is held by another worker (or waits for its
                // redelivery): hand this chat's jobs back, to come after it.
                let delay = Duration::from_millis(self.inner.settings.blocked_retry_ms);
                self.hand_back(&subject, delay).await;
                return;
            }
            // Empty when another job went in front meanwhile: gate that one first.
            let batch = self.take_batch(&subject, seq);
            if batch.is_empty() {
                continue;
            }
            if !self.run_batch(&subject, batch).await {
                // A job was left for redelivery: its chat's later jobs must wait for it.
                self.hand_back(&subject, ABANDON_DELAY).await;
                return;
            }
        }
    }

    /// The first waiting job: its sequence, its chain link, and whether that
    /// link is known to be gone already (none, or acknowledged here). `None`
    /// (and the chat removed) when nothing waits: the task ends.
    fn front(&self, subject: &str) -> Option<Front> {
        let mut chats = self.chats();
        let chat = chats.get_mut(subject)?;
        match chat.waiting.front() {
            Some(first) => {
                let prev = first.prev_seq;
                Some(Front {
                    seq: first.seq(),
                    prev,
                    known_gone: prev == 0 || chat.removed.contains(&prev),
                })
            }
            None => {
                chats.remove(subject);
                None
            }
        }
    }

    /// Whether the job at `seq` has left the jobs stream (acknowledged, or ended).
    /// A lookup that fails counts as "still there": waiting is always safe.
    async fn gone_from_stream(&self, seq: u64) -> bool {
        match self.inner.stream.get_raw_message(seq).await {
            Ok(_) => false,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => true,
            Err(e) => {
                tracing::warn!(seq, error = %e, "cannot look up a job's predecessor; waiting");
                false
            }
        }
    }

    /// The first waiting job (if it is still `gated`, the one whose link was
    /// checked) and the jobs chained right behind it, within the coalescing bounds. A replay always runs alone: its order is judged by
    /// its original sequence.
    fn take_batch(&self, subject: &str, gated: u64) -> Vec<Held> {
        let limits = &self.inner.coalesce;
        let mut chats = self.chats();
        let Some(chat) = chats.get_mut(subject) else {
            return Vec::new();
        };
        if chat.waiting.front().map(Held::seq) != Some(gated) {
            return Vec::new();
        }
        let mut batch: Vec<Held> = Vec::new();
        let (mut messages, mut tokens) = (0usize, 0usize);
        while let Some(next) = chat.waiting.front() {
            if let Some(last) = batch.last() {
                let chained = next.prev_seq == last.seq()
                    || next.prev_seq == 0
                    || chat.removed.contains(&next.prev_seq);
                let job = &next.delivery.job;
                let fits = batch.len() < limits.max_jobs as usize
                    && messages + job.messages.len() <= limits.max_messages as usize
                    && tokens + estimated_tokens(job) <= limits.max_input_tokens as usize;
                // A second message of a job id (a repeat, or a reuse of its key,
                // published past the duplicate window) waits until the first
                // is committed: BeginJobs then tells which it is.
                let again = batch.iter().any(|h| h.delivery.job.job_id == job.job_id);
                if !chained || !fits || again || next.delivery.replay || last.delivery.replay {
                    break;
                }
            }
            let Some(held) = chat.waiting.pop_front() else {
                break;
            };
            messages += held.delivery.job.messages.len();
            tokens += estimated_tokens(&held.delivery.job);
            batch.push(held);
        }
        batch
    }

    /// Runs one batch with progress acks for everything the chat holds, then
    /// acknowledges its jobs in order. False when a job was left for redelivery.
    async fn run_batch(&self, subject: &str, batch: Vec<Held>) -> bool {
        let m = metrics::get();
        for held in &batch {
            if let Some(accepted) = held
                .delivery
                .job
                .accepted_at
                .as_ref()
                .and_then(from_timestamp)
            {
                m.queue_wait((chrono::Utc::now() - accepted).to_std().unwrap_or_default());
            }
        }
        let span = batch_span(&batch);
        let deliveries: Vec<Delivery> = batch.iter().map(|h| h.delivery.clone()).collect();
        let started = Instant::now();
        let inner = &self.inner;
        let work = inner
            .processor
            .handle_batch(&deliveries)
            .instrument(span.clone());
        tokio::pin!(work);
        let mut progress =
            tokio::time::interval(Duration::from_millis(inner.settings.progress_interval_ms));
        progress.tick().await;
        let grace = Duration::from_millis(inner.settings.shutdown_grace_ms);
        let deadline = async {
            inner.cancel.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(deadline);
        let dispositions = loop {
            tokio::select! {
                dispositions = &mut work => break dispositions,
                _ = progress.tick() => self.progress(subject, &batch).await,
                () = &mut deadline => {
                    tracing::warn!(jobs = batch.len(), "shutdown grace over; handing the jobs back");
                    for held in &batch {
                        nak(&held.message, Duration::ZERO).await;
                    }
                    return false;
                }
            }
        };
        let took = started.elapsed();
        let mut kept = true;
        for (held, disposition) in batch.into_iter().zip(
            dispositions
                .into_iter()
                .chain(std::iter::repeat(Disposition::Abandon)),
        ) {
            let disposition = if kept {
                self.dead_letter(&held, disposition).await
            } else {
                Disposition::Abandon
            };
            m.job(outcome_label(&disposition), took);
            match disposition {
                Disposition::Ack(outcome) => {
                    self.finish(subject, held, outcome)
                        .instrument(span.clone())
                        .await;
                }
                Disposition::Abandon => {
                    kept = false;
                    nak(&held.message, ABANDON_DELAY).await;
                }
            }
        }
        metrics::get().set_held(self.held_count());
        kept
    }

    /// Progress acks for the running batch and the chat's waiting jobs.
    async fn progress(&self, subject: &str, batch: &[Held]) {
        let waiting: Vec<Message> = self
            .chats()
            .get(subject)
            .map(|c| c.waiting.iter().map(|h| h.message.clone()).collect())
            .unwrap_or_default();
        for message in batch.iter().map(|h| &h.message).chain(waiting.iter()) {
            if let Err(e) = message.ack_with(AckKind::Progress).await {
                tracing::debug!(error = %e, "progress ack failed");
            }
        }
    }

    /// Hands every waiting job of the chat back to JetStream (redelivered after
    /// `delay`, to any worker) and forgets the chat.
    async fn hand_back(&self, subject: &str, delay: Duration) {
        let waiting: Vec<Held> = self
            .chats()
            .remove(subject)
            .map(|c| c.waiting.into_iter().collect())
            .unwrap_or_default();
        for held in &waiting {
            nak(&held.message, delay).await;
        }
        drop(waiting);
        metrics::get().set_held(self.held_count());
    }

    /// Dead-letters a job that failed (or, on a redelivery, had already failed)
    /// before its ack; when that publish fails the job is not acknowledged.
    async fn dead_letter(&self, held: &Held, disposition: Disposition) -> Disposition {
        let reason = match &disposition {
            Disposition::Ack(Outcome::Failed(reason)) => reason.clone(),
            Disposition::Ack(Outcome::Skipped(SkipReason::AlreadyFailed))
                if !held.delivery.replay =>
            {
                "the job had already failed (dead-lettered on redelivery)".to_owned()
            }
            Disposition::Ack(Outcome::Skipped(SkipReason::KeyReused)) => {
                tracing::error!(
                    job_id = %held.delivery.job.job_id,
                    "a message reuses the idempotency key of a job registered with other messages; not applied, dead-lettered"
                );
                "the idempotency key (the job id) was used before for other messages; not applied \
                 (its caller was refused INVALID_ARGUMENT unless memory-store was down when it \
                 sent them): send these messages again with a new key"
                    .to_owned()
            }
            Disposition::Ack(_) | Disposition::Abandon => return disposition,
        };
        if self
            .inner
            .dead_letters
            .publish(&held.delivery, held.message.payload.clone(), &reason)
            .await
        {
            disposition
        } else {
            Disposition::Abandon
        }
    }

    /// Acknowledges a finished job, and remembers that it left the stream.
    async fn finish(&self, subject: &str, held: Held, outcome: Outcome) {
        let job_id = held.delivery.job.job_id.as_str();
        metrics::get().update(outcome_label(&Disposition::Ack(outcome.clone())));
        match &outcome {
            Outcome::Applied { version } => tracing::info!(job_id, version, "job applied"),
            Outcome::Skipped(reason) => tracing::info!(job_id, reason = ?reason, "job skipped"),
            Outcome::Failed(reason) => {
                tracing::warn!(job_id, reason = %reason, "job ended failed")
            }
            Outcome::Poison(reason) => {
                tracing::error!(job_id, reason = %reason, "poison job dropped")
            }
        }
        // A plain ack: the job is committed, so a lost ack costs a redelivery that
        // memory-store skips as already applied (a confirmed ack would cost a
        // server reply per job). Only an ack that could not be sent is not
        // remembered: the chat's next job then looks its predecessor up.
        match held.message.ack().await {
            Ok(()) => {
                if let Some(chat) = self.chats().get_mut(subject) {
                    chat.removed.push_back(held.seq());
                    if chat.removed.len() > REMEMBERED_ACKS {
                        chat.removed.pop_front();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(job_id, error = %e, "ack not sent; a redelivery will be skipped")
            }
        }
    }
}
