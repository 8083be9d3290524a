//! Budget leased to replicas: each replica takes several tokens of a key's
//! shared budget in one compare-and-set, and serves calls from that local lease
//! without touching the shared store until it runs low.
//!
//! Per key and budget size, a replica keeps a [`Slot`] (one user's tokens of
//! different shapes draw on one key with their own sizes, see [`gcra`]'s
//! horizon; a slot's tokens are of one size):
//! - `tokens`: leased and not used yet. A call takes one under a mutex, with no
//!   I/O (the hot path);
//! - when `tokens` falls below half a lease, one background task
//!   ([`refill_task`]) takes `lease - tokens` more, so a steady caller never
//!   waits for the store. It only tops up to one lease, so a replica never
//!   holds more than one lease of a key and size;
//! - a denial from the shared state is remembered until the next token is due:
//!   refused calls answer locally with that retry delay;
//! - a store failure (or a lease slower than [`LEASE_TIMEOUT`]) lets the key's
//!   calls through, logged: the waiting ones at once, later ones without
//!   waiting, while the store is probed in the background at most once every
//!   [`FAIL_OPEN_FOR`] (fail open).
//!
//! A call waits for the store only when its replica holds nothing for the key and size:
//! the first call of a key, or a burst that outruns the background refill; and
//! then at most twice [`LEASE_TIMEOUT`] before it is let through.
//!
//! Why the error is bounded: a token is taken from the shared GCRA state before
//! it is used, so calls served = tokens leased - tokens still held. Tokens held
//! by the replicas at the start of any window can be served beyond the window's
//! GCRA allowance (at most `replicas × lease` extra), and tokens held at its end
//! were taken but not served (at most `replicas × lease` short). With leases of
//! 2% of the budget and two replicas, both stay within 4%. A user calling with
//! tokens of several budget sizes at once holds a lease per size on each
//! replica, so the bound grows with the sizes in use (two: 4% of each).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::gcra::{Gcra, Taken};

/// How long a lease may take before the key is opened (fail open).
pub const LEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a key stays open after the store failed, before a new lease is tried.
pub const FAIL_OPEN_FOR: Duration = Duration::from_secs(5);

/// Compare-and-set rounds of one lease before it gives up (fail open).
const MAX_CAS_ATTEMPTS: usize = 16;

/// Keys tracked before idle ones are forgotten.
const MAX_SLOTS: usize = 100_000;

/// A key unused for this long may be forgotten (its leftover tokens with it).
const IDLE_NANOS: u64 = 60_000_000_000;

/// Nanoseconds since the UNIX epoch; replaceable so tests can stop time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A stored TAT and the revision to compare against when replacing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned {
    pub revision: u64,
    /// `None` when the key holds no usable value (deleted or unreadable).
    pub tat: Option<u64>,
}

/// The answer to a compare-and-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored under this new revision.
    Stored(u64),
    /// Another replica wrote first.
    Conflict,
}

/// The boxed cause of a store failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a lease could not be taken (the key then fails open).
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("reading the shared rate-limit state failed")]
    Read(#[source] BoxError),
    #[error("writing the shared rate-limit state failed")]
    Write(#[source] BoxError),
    #[error("{0} compare-and-set rounds lost to other replicas")]
    Contention(usize),
}

/// The shared per-key state: one TAT per key, replaced by compare-and-set.
pub trait SharedBudget: Send + Sync + 'static {
    /// The key's current value, `None` when absent.
    fn read(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Versioned>, BudgetError>> + Send;

    /// Stores `tat` if the key is still at `expected` (`None`: still absent).
    fn write(
        &self,
        key: &str,
        tat: u64,
        expected: Option<u64>,
    ) -> impl Future<Output = Result<Written, BudgetError>> + Send;
}

/// Takes up to `want` tokens of `key` in one successful compare-and-set.
///
/// `known` is this replica's last view of the key: it is tried first, so an
/// uncontended lease costs one write and no read. A stale view only looks
/// *fuller* than the truth (the TAT never moves back), so a denial computed from
/// it is sound, and a grant from it fails the compare and is recomputed.
async fn take_lease<S: SharedBudget>(
    store: &S,
    key: &str,
    gcra: Gcra,
    want: u32,
    known: Option<Versioned>,
    clock: &Clock,
) -> Result<(Taken, Option<Versioned>), BudgetError> {
    let mut current = match known {
        Some(v) => Some(v),
        None => store.read(key).await?,
    };
    for _ in 0..MAX_CAS_ATTEMPTS {
        let taken = gcra.take(current.and_then(|v| v.tat), clock(), want);
        let Taken::Granted { tat, .. } = taken else {
            return Ok((taken, current));
        };
        match store.write(key, tat, current.map(|v| v.revision)).await? {
            Written::Stored(revision) => {
                let tat = Some(tat);
                return Ok((taken, Some(Versioned { revision, tat })));
            }
            Written::Conflict => current = store.read(key).await?,
        }
    }
    Err(BudgetError::Contention(MAX_CAS_ATTEMPTS))
}

/// This replica's share of one key's budget.
struct Slot {
    gcra: Gcra,
    /// Tokens per lease (at least 1).
    lease: u32,
    /// Leased and not used yet.
    tokens: u32,
    /// Refused locally until then (epoch ns): the shared state said no.
    denied_until: u64,
    /// Calls pass unchecked until then (epoch ns): the store failed.
    open_until: u64,
    /// The last lease failed: while it does, calls pass without waiting for
    /// the next attempt (at most one every [`FAIL_OPEN_FOR`]).
    failing: bool,
    /// A [`refill_task`] is running; at most one per key and size.
    refilling: bool,
    /// Our last view of the stored value (see [`take_lease`]).
    known: Option<Versioned>,
    /// Bumped after every refill, so waiting calls look again.
    refilled: watch::Sender<u64>,
    last_used: u64,
}

/// What a call may do, decided under the lock.
enum Admit {
    Yes,
    No(Duration),
    /// Wait for the running refill, then ask again.
    Wait(watch::Receiver<u64>),
}

impl Slot {
    fn new(per_minute: u32, lease_per_mille: u32) -> Self {
        let lease = u64::from(per_minute) * u64::from(lease_per_mille) / 1000;
        Self {
            gcra: Gcra::per_minute(per_minute),
            lease: u32::try_from(lease).unwrap_or(u32::MAX).max(1),
            tokens: 0,
            denied_until: 0,
            open_until: 0,
            failing: false,
            refilling: false,
            known: None,
            refilled: watch::Sender::new(0),
            last_used: 0,
        }
    }

    /// Decides one call at `now`; `Some(want)` in the second place asks the
    /// caller to start a refill of `want` tokens (`refilling` is already set).
    fn admit(&mut self, now: u64) -> (Admit, Option<u32>) {
        self.last_used = now;
        if self.tokens > 0 {
            self.tokens -= 1;
            return (Admit::Yes, self.start_refill(now, false));
        }
        if self.denied_until > now {
            return (
                Admit::No(Duration::from_nanos(self.denied_until - now)),
                None,
            );
        }
        if self.open_until > now {
            return (Admit::Yes, None);
        }
        let refill = self.start_refill(now, true);
        if self.failing {
            // The store is down as far as we know: probe it in the background.
            return (Admit::Yes, refill);
        }
        (Admit::Wait(self.refilled.subscribe()), refill)
    }

    /// Lets calls through until the store answers again.
    fn fail_open(&mut self, now: u64) {
        self.open_until = now.saturating_add(nanos(FAIL_OPEN_FOR));
        self.failing = true;
        self.known = None;
    }

    /// Starts a refill when the lease is below half (or `empty`, for a waiting call).
    fn start_refill(&mut self, now: u64, empty: bool) -> Option<u32> {
        let low = self.tokens < self.lease.div_ceil(2);
        let useful = self.denied_until <= now && self.open_until <= now;
        if self.refilling || !(low || empty) || !useful {
            return None;
        }
        self.refilling = true;
        Some(self.lease.saturating_sub(self.tokens).max(1))
    }
}

/// Per-key budgets leased from a [`SharedBudget`].
pub struct LeasedLimiter<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    store: S,
    clock: Clock,
    /// Tokens per lease, in thousandths of the per-minute budget.
    lease_per_mille: u32,
    /// Locked only for counter updates, never across an await.
    slots: Mutex<HashMap<SlotKey, Slot>>,
}

/// A slot's key: the shared key and the size its tokens were leased at.
type SlotKey = (String, u32);

impl<S> Inner<S> {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<SlotKey, Slot>> {
        // A panic under this lock leaves plain counters behind: still usable.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: SharedBudget> LeasedLimiter<S> {
    pub fn new(store: S, lease_per_mille: u32, clock: Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                clock,
                lease_per_mille,
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// `Ok` when `key` (a budget of `per_minute` calls a minute) may make one
    /// more call; else how long until it may.
    ///
    /// Waits for the store only when this replica holds no token of the key,
    /// and at most [`LEASE_TIMEOUT`] (then the call passes: fail open).
    ///
    /// # Errors
    /// The retry delay when the key's budget is spent.
    pub async fn check(&self, key: &str, per_minute: u32) -> Result<(), Duration> {
        let deadline = tokio::time::Instant::now() + LEASE_TIMEOUT + LEASE_TIMEOUT;
        loop {
            let mut refilled = {
                let now = (self.inner.clock)();
                let slot_key: SlotKey = (key.to_owned(), per_minute);
                let mut slots = self.inner.slots();
                if slots.len() >= MAX_SLOTS && !slots.contains_key(&slot_key) {
                    slots
                        .retain(|_, s| s.refilling || now.saturating_sub(s.last_used) < IDLE_NANOS);
                }
                let slot = slots
                    .entry(slot_key)
                    .or_insert_with(|| Slot::new(per_minute, self.inner.lease_per_mille));
                let (admit, refill) = slot.admit(now);
                if let Some(want) = refill {
                    let (gcra, known) = (slot.gcra, slot.known);
                    tokio::spawn(refill_task(
                        Arc::clone(&self.inner),
                        (key.to_owned(), per_minute),
                        gcra,
                        want,
                        known,
                    ));
                }
                match admit {
                    Admit::Yes => return Ok(()),
                    Admit::No(wait) => return Err(wait),
                    Admit::Wait(rx) => rx,
                }
            };
            if tokio::time::timeout_at(deadline, refilled.changed())
                .await
                .is_err()
            {
                // The refill has its own timeout; this is only a safety net.
                tracing::warn!("rate-limit lease overdue; allowing the call");
                return Ok(());
            }
        }
    }
}

/// Takes `want` more tokens of the slot's key and hands them to the slot; on
/// failure opens the slot for [`FAIL_OPEN_FOR`]. Runs as its own task, so a
/// caller that goes away cannot leave a refill half done.
async fn refill_task<S: SharedBudget>(
    inner: Arc<Inner<S>>,
    slot_key: SlotKey,
    gcra: Gcra,
    want: u32,
    known: Option<Versioned>,
) {
    let taken = tokio::time::timeout(
        LEASE_TIMEOUT,
        take_lease(&inner.store, &slot_key.0, gcra, want, known, &inner.clock),
    )
    .await;
    let now = (inner.clock)();
    let mut slots = inner.slots();
    // A refilling slot is never forgotten, so this always finds it.
    let Some(slot) = slots.get_mut(&slot_key) else {
        return;
    };
    match taken {
        Ok(Ok((Taken::Granted { tokens, .. }, known))) => {
            slot.tokens = slot.tokens.saturating_add(tokens);
            slot.known = known;
            slot.failing = false;
        }
        Ok(Ok((Taken::Denied { wait }, known))) => {
            slot.denied_until = now.saturating_add(nanos(wait));
            slot.known = known;
            slot.failing = false;
        }
        Ok(Err(error)) => {
            tracing::warn!(
                error = %error,
                cause = ?std::error::Error::source(&error),
                "rate-limit state unavailable; allowing calls"
            );
            crate::metrics::rate_limit_fail_open("unavailable");
            slot.fail_open(now);
        }
        Err(_elapsed) => {
            tracing::warn!("rate-limit lease took over {LEASE_TIMEOUT:?}; allowing calls");
            crate::metrics::rate_limit_fail_open("timeout");
            slot.fail_open(now);
        }
    }
    slot.refilling = false;
    slot.refilled
        .send_modify(|generation| *generation = generation.wrapping_add(1));
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
