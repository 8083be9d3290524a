//! The lease logic against an in-memory store that counts its reads and writes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::FutureExt;
use tokio::sync::RwLock;

use super::*;

const SECOND: u64 = 1_000_000_000;
const START: u64 = 1_700_000_000 * SECOND;

/// A compare-and-set store in memory, with counters and an off switch.
#[derive(Default)]
struct MemoryBudget {
    values: Mutex<HashMap<String, Versioned>>,
    last_revision: AtomicU64,
    reads: AtomicU64,
    writes: AtomicU64,
    conflicts: AtomicU64,
    down: AtomicBool,
    /// Held for writing by a test, it stalls every store call.
    stall: RwLock<()>,
}

impl MemoryBudget {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Versioned>> {
        self.values.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failure(&self) -> Option<BoxError> {
        self.down
            .load(Ordering::SeqCst)
            .then(|| "the store is down".into())
    }

    fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Every call the store answered or refused.
    fn traffic(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
            + self.writes.load(Ordering::SeqCst)
            + self.conflicts.load(Ordering::SeqCst)
    }
}

impl SharedBudget for Arc<MemoryBudget> {
    async fn read(&self, key: &str) -> Result<Option<Versioned>, BudgetError> {
        let _open = self.stall.read().await;
        self.reads.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.failure() {
            return Err(BudgetError::Read(e));
        }
        Ok(self.map().get(key).copied())
    }

    async fn write(
        &self,
        key: &str,
        tat: u64,
        expected: Option<u64>,
    ) -> Result<Written, BudgetError> {
        let _open = self.stall.read().await;
        if let Some(e) = self.failure() {
            self.writes.fetch_add(1, Ordering::SeqCst);
            return Err(BudgetError::Write(e));
        }
        let mut map = self.map();
        if map.get(key).map(|v| v.revision) != expected {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
            return Ok(Written::Conflict);
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        let revision = self.last_revision.fetch_add(1, Ordering::SeqCst) + 1;
        let tat = Some(tat);
        map.insert(key.to_owned(), Versioned { revision, tat });
        Ok(Written::Stored(revision))
    }
}

/// A clock that moves only when the test moves it.
fn frozen_clock() -> (Clock, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(START));
    let reading = Arc::clone(&now);
    (Arc::new(move || reading.load(Ordering::SeqCst)), now)
}

fn limiter(store: &Arc<MemoryBudget>, clock: &Clock) -> Arc<LeasedLimiter<Arc<MemoryBudget>>> {
    Arc::new(LeasedLimiter::new(Arc::clone(store), 20, Arc::clone(clock)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_limiters_sharing_one_bucket_serve_exactly_its_budget_between_them() {
    const LIMIT: u32 = 1000;
    let store = Arc::new(MemoryBudget::default());
    let (clock, _) = frozen_clock();
    let replicas = [limiter(&store, &clock), limiter(&store, &clock)];

    // Four callers per replica, each calling until it is refused.
    let mut callers = Vec::new();
    for replica in &replicas {
        for _ in 0..4 {
            let replica = Arc::clone(replica);
            callers.push(tokio::spawn(async move {
                let mut allowed = 0u32;
                loop {
                    match replica.check("user", LIMIT).await {
                        Ok(()) => allowed += 1,
                        Err(wait) => return (allowed, wait),
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
    }
    let mut allowed = 0;
    let mut waits = Vec::new();
    for caller in callers {
        let (n, wait) = caller.await.expect("a caller panicked");
        allowed += n;
        waits.push(wait);
    }

    // Time stands still, so the budget is one burst: every token leased was served.
    assert_eq!(allowed, LIMIT);
    let interval = Duration::from_secs(60) / LIMIT;
    assert!(
        waits.iter().all(|w| *w > Duration::ZERO && *w <= interval),
        "{waits:?}"
    );
    // Leases of 20 tokens (2%), refilled at half: at most one write per 10 calls.
    let writes = store.writes();
    println!("two replicas, {allowed} calls allowed: {writes} KV writes");
    assert!(writes <= u64::from(LIMIT) / 10 + 2, "{writes} writes");
}

#[tokio::test(flavor = "current_thread")]
async fn a_lease_is_taken_once_per_many_calls() {
    const LIMIT: u32 = 60_000;
    const CALLS: u64 = 6_000;
    let store = Arc::new(MemoryBudget::default());
    let (clock, _) = frozen_clock();
    let replica = limiter(&store, &clock);
    let lease = u64::from(LIMIT) * 20 / 1000;

    for _ in 0..CALLS {
        assert_eq!(replica.check("service", LIMIT).await, Ok(()));
        // Other requests run in between, and so does the background refill.
        tokio::task::yield_now().await;
    }

    let writes = store.writes();
    println!(
        "{CALLS} calls with leases of {lease}: {writes} KV writes ({:.4} per call), {} reads",
        writes as f64 / CALLS as f64,
        store.reads.load(Ordering::SeqCst)
    );
    // Each refill tops the lease up from below half: between lease/2 and lease tokens a write.
    assert!(writes >= CALLS / lease, "{writes} writes");
    assert!(writes <= CALLS / (lease / 2) + 1, "{writes} writes");
    // One read for the first lease; after that this replica's view is current.
    assert_eq!(store.reads.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn calls_served_from_a_lease_never_wait_for_the_store() {
    const LIMIT: u32 = 1000;
    let store = Arc::new(MemoryBudget::default());
    let (clock, _) = frozen_clock();
    let replica = limiter(&store, &clock);
    // The first call of a key waits for its first lease (20 tokens).
    assert_eq!(replica.check("user", LIMIT).await, Ok(()));

    let stalled = store.stall.write().await;
    for call in 1..20 {
        let answer = replica.check("user", LIMIT).now_or_never();
        assert_eq!(answer, Some(Ok(())), "call {call} waited");
        tokio::task::yield_now().await;
    }
    drop(stalled);

    // The refill started below half a lease lands without anyone waiting for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while replica.check("user", LIMIT).now_or_never() != Some(Ok(())) {
        assert!(tokio::time::Instant::now() < deadline, "no refill");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_spent_budget_is_refused_locally_until_its_next_token_is_due() {
    const LIMIT: u32 = 60;
    let store = Arc::new(MemoryBudget::default());
    let (clock, now) = frozen_clock();
    let replica = limiter(&store, &clock);
    for _ in 0..LIMIT {
        assert_eq!(replica.check("user", LIMIT).await, Ok(()));
    }
    assert_eq!(
        replica.check("user", LIMIT).await,
        Err(Duration::from_secs(1))
    );

    let traffic = store.traffic();
    now.fetch_add(SECOND / 2, Ordering::SeqCst);
    for _ in 0..10 {
        let answer = replica.check("user", LIMIT).now_or_never();
        assert_eq!(answer, Some(Err(Duration::from_millis(500))));
    }
    assert_eq!(store.traffic(), traffic, "a refused call asked the store");

    now.fetch_add(SECOND / 2, Ordering::SeqCst);
    assert_eq!(replica.check("user", LIMIT).await, Ok(()));
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_store_lets_calls_through_without_asking_it_on_every_call() {
    const LIMIT: u32 = 60;
    let store = Arc::new(MemoryBudget::default());
    store.down.store(true, Ordering::SeqCst);
    let (clock, now) = frozen_clock();
    let replica = limiter(&store, &clock);

    for _ in 0..(LIMIT * 2) {
        assert_eq!(replica.check("user", LIMIT).await, Ok(()));
    }
    assert_eq!(store.traffic(), 1, "one failed lease, then open");

    // After the open period one call probes in the background; none waits.
    now.fetch_add(nanos(FAIL_OPEN_FOR) + 1, Ordering::SeqCst);
    store.down.store(false, Ordering::SeqCst);
    assert_eq!(replica.check("user", LIMIT).now_or_never(), Some(Ok(())));

    // Once the probe got an answer, the limit holds again: exactly one budget.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while is_failing(&replica, "user") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the probe never landed"
        );
        tokio::task::yield_now().await;
    }
    let mut allowed = 0;
    while replica.check("user", LIMIT).await.is_ok() {
        allowed += 1;
        assert!(allowed <= 2 * LIMIT, "never limited again");
    }
    assert_eq!(allowed, LIMIT);
}

fn is_failing(replica: &LeasedLimiter<Arc<MemoryBudget>>, key: &str) -> bool {
    replica
        .inner
        .slots()
        .iter()
        .any(|((k, _), s)| k == key && s.failing)
}

/// One user's tokens of two shapes (budgets of 60 and 30 calls a minute) share
/// one key: a call of the smaller costs two of the larger's, and the minute
/// spent by one is spent for the other, on any replica.
#[tokio::test(flavor = "current_thread")]
async fn budgets_of_two_sizes_on_one_key_draw_on_one_minute() {
    let store = Arc::new(MemoryBudget::default());
    let (clock, now) = frozen_clock();
    let (first, second) = (limiter(&store, &clock), limiter(&store, &clock));
    for _ in 0..60 {
        assert_eq!(first.check("user", 60).await, Ok(()));
    }
    assert_eq!(
        second.check("user", 30).await,
        Err(Duration::from_secs(2)),
        "the larger budget spent the minute"
    );
    assert_eq!(first.check("user", 60).await, Err(Duration::from_secs(1)));

    // Half a minute later, on the replica that served the larger: 15 calls of
    // the smaller (its tokens are not the larger's), then the minute is spent.
    now.fetch_add(30 * SECOND, Ordering::SeqCst);
    let mut allowed = 0;
    while first.check("user", 30).await.is_ok() {
        allowed += 1;
        assert!(
            allowed <= 15,
            "more than half a minute of the smaller budget"
        );
    }
    assert_eq!(allowed, 15);
    assert!(second.check("user", 60).await.is_err());
}
