//! The read cache's unit tests.

use super::*;
use chat_memory_proto::v1::Memory;

fn settings() -> ReadCacheSettings {
    ReadCacheSettings {
        capacity: 100,
        ttl_ms: 60_000,
        ..ReadCacheSettings::default()
    }
}

fn memory(chat: &str, owner: &str, version: i64) -> store_pb::GetMemoryResponse {
    store_pb::GetMemoryResponse {
        chat_id: chat.into(),
        memory: Some(Memory {
            version,
            ..Default::default()
        }),
        freshness: None,
        owner_user: owner.into(),
        expires_at: None,
    }
}

fn id(namespaced: &str) -> TenantChatId {
    TenantChatId::parse(namespaced).expect("a namespaced test id")
}

fn access(tenant: &str, user: &str, acts_for_tenant: bool) -> Access {
    Access {
        tenant: tenant.into(),
        user: user.into(),
        acts_for_tenant,
    }
}

#[test]
fn a_cached_memory_is_answered_only_to_who_memory_store_would_answer() {
    let cache = MemoryCache::new(&settings());
    cache.store_memory("t/c", cache.ticket(), &memory("t/c", "alice", 3));
    let hit = Hit::Memory(Arc::new(memory("t/c", "alice", 3)));
    assert_eq!(
        cache.get(&id("t/c"), &access("t", "alice", false)),
        Some(hit.clone())
    );
    assert_eq!(cache.get(&id("t/c"), &access("t", "svc", true)), Some(hit));
    assert_eq!(
        cache.get(&id("t/c"), &access("t", "bob", false)),
        Some(Hit::NotFound)
    );
    // Another tenant (whose namespace never holds this key anyway).
    assert_eq!(
        cache.get(&id("t/c"), &access("u", "alice", true)),
        Some(Hit::NotFound)
    );
    assert_eq!(
        cache.get(&id("t/other"), &access("t", "alice", false)),
        None
    );
}

#[test]
fn no_memory_store_call_in_flight_is_refused_naming_the_field() {
    let none = ReadCacheSettings {
        store_calls_in_flight: 0,
        ..ReadCacheSettings::default()
    };
    let refused = none.validate().err().map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("read_cache.store_calls_in_flight")),
        "{refused:?}"
    );
    assert!(ReadCacheSettings::default().validate().is_ok());
}

#[test]
fn a_change_drops_the_entry_and_a_read_begun_before_it_stores_nothing() {
    let cache = MemoryCache::new(&settings());
    let before = cache.ticket();
    cache.drop_chat("t/c"); // a commit's event arrives while the read is on its way
    cache.store_memory("t/c", before, &memory("t/c", "alice", 1));
    assert_eq!(cache.get(&id("t/c"), &access("t", "alice", false)), None);
    // A read begun after the drop is stored.
    cache.store_memory("t/c", cache.ticket(), &memory("t/c", "alice", 2));
    assert!(
        cache
            .get(&id("t/c"), &access("t", "alice", false))
            .is_some()
    );
    cache.drop_chat("t/c");
    assert_eq!(cache.get(&id("t/c"), &access("t", "alice", false)), None);
}

/// A commit's event for `chat` at `version`, committed now, the memory
/// applied through stream sequence `applied` with the jobs at `pending`
/// still pending.
fn commit(chat: &str, version: i64, applied: u64, pending: &[u64]) -> MemoryChanged {
    MemoryChanged {
        chat_id: chat.into(),
        memory: Some(Memory {
            version,
            general_summary: format!("v{version}"),
            updated_at: Some(chat_memory_proto::time::to_timestamp(chrono::Utc::now())),
            ..Default::default()
        }),
        last_applied_job_id: format!("job-{version}"),
        applied_job_ids: vec![format!("job-{version}")],
        owner_user: "alice".into(),
        pending_jobs: Some(u32::try_from(pending.len()).unwrap_or(u32::MAX)),
        applied_through_seq: applied,
        pending_seqs: pending.to_vec(),
        ..Default::default()
    }
}

fn accepted(chat: &str, seq: u64) -> MemoryChanged {
    MemoryChanged {
        chat_id: chat.into(),
        accepted_job_ids: vec![format!("job-at-{seq}")],
        accepted_through_seq: seq,
        ..Default::default()
    }
}

fn failed(chat: &str, seq: u64) -> MemoryChanged {
    MemoryChanged {
        chat_id: chat.into(),
        failed_job_ids: vec![format!("job-at-{seq}")],
        failed_job_seqs: vec![seq],
        ..Default::default()
    }
}

fn version_cached(cache: &MemoryCache, chat: &str) -> Option<(i64, u32)> {
    match cache.get(&id(chat), &access("t", "alice", false))? {
        Hit::Memory(m) => Some((
            m.memory.as_ref().map_or(0, |m| m.version),
            m.freshness.as_ref().map_or(u32::MAX, |f| f.pending_jobs),
        )),
        Hit::NotFound => None,
    }
}

#[test]
fn a_commits_event_installs_its_memory_for_its_owner_only() {
    let cache = MemoryCache::new(&settings());
    cache.apply_event(&commit("t/c", 1, 10, &[]));
    let Some(Hit::Memory(m)) = cache.get(&id("t/c"), &access("t", "alice", false)) else {
        panic!("the commit's memory was not installed");
    };
    assert_eq!(m.chat_id, "t/c");
    assert_eq!(m.owner_user, "alice");
    assert_eq!(
        m.memory.as_ref().map(|m| m.general_summary.as_str()),
        Some("v1")
    );
    let freshness = m.freshness.clone().expect("freshness");
    assert_eq!(
        (
            freshness.last_applied_job_id.as_str(),
            freshness.pending_jobs
        ),
        ("job-1", 0)
    );
    assert_eq!(
        cache.get(&id("t/c"), &access("t", "bob", false)),
        Some(Hit::NotFound)
    );
    // A read begun before the install stores nothing over it.
    let before = cache.ticket();
    cache.apply_event(&commit("t/c", 2, 11, &[]));
    cache.store_memory("t/c", before, &memory("t/c", "alice", 1));
    assert_eq!(version_cached(&cache, "t/c"), Some((2, 0)));
}

#[test]
fn an_acceptance_the_commit_did_not_count_keeps_it_out_in_either_order() {
    let cache = MemoryCache::new(&settings());
    // Announced first: the commit (applied through 10, nothing pending)
    // did not count 11.
    cache.apply_event(&accepted("t/a", 11));
    cache.apply_event(&commit("t/a", 1, 10, &[]));
    assert_eq!(version_cached(&cache, "t/a"), None);
    // Announced after the commit: it drops the installed entry.
    cache.apply_event(&commit("t/b", 1, 10, &[]));
    assert_eq!(version_cached(&cache, "t/b"), Some((1, 0)));
    cache.apply_event(&accepted("t/b", 11));
    assert_eq!(version_cached(&cache, "t/b"), None);
    // Acceptances the commit counted (applied, or pending) do not keep it out.
    cache.apply_event(&accepted("t/c", 10));
    cache.apply_event(&accepted("t/c", 12));
    cache.apply_event(&commit("t/c", 1, 10, &[12]));
    assert_eq!(version_cached(&cache, "t/c"), Some((1, 1)));
    // Registrations out of stream order: 12 was registered before the
    // commit, 11 after; the commit counts 12 only, so 11 keeps it out
    // although a higher sequence was counted.
    cache.apply_event(&accepted("t/d", 11));
    cache.apply_event(&commit("t/d", 1, 10, &[12]));
    assert_eq!(version_cached(&cache, "t/d"), None);
    // An acceptance announced by an older release (no sequence) keeps
    // every commit out for the TTL.
    cache.apply_event(&MemoryChanged {
        accepted_through_seq: 0,
        ..accepted("t/e", 11)
    });
    cache.apply_event(&commit("t/e", 1, 20, &[]));
    assert_eq!(version_cached(&cache, "t/e"), None);
}

#[test]
fn a_failure_the_commit_still_counts_as_pending_keeps_it_out() {
    let cache = MemoryCache::new(&settings());
    // The job at 12 failed after the commit counted it pending; the
    // failure's event came first.
    cache.apply_event(&accepted("t/a", 12));
    cache.apply_event(&failed("t/a", 12));
    cache.apply_event(&commit("t/a", 1, 10, &[12]));
    assert_eq!(version_cached(&cache, "t/a"), None);
    // A commit after the failure no longer counts it.
    cache.apply_event(&commit("t/a", 2, 10, &[]));
    assert_eq!(version_cached(&cache, "t/a"), Some((2, 0)));
    // An older release's failure (no sequence) keeps commits out for the TTL.
    cache.apply_event(&MemoryChanged {
        failed_job_seqs: Vec::new(),
        ..failed("t/b", 12)
    });
    cache.apply_event(&commit("t/b", 1, 20, &[]));
    assert_eq!(version_cached(&cache, "t/b"), None);
}

#[test]
fn a_late_event_deletions_and_events_without_a_pending_count_install_nothing() {
    let cache = MemoryCache::new(&settings());
    cache.apply_event(&commit("t/a", 2, 20, &[]));
    cache.apply_event(&commit("t/a", 1, 10, &[]));
    assert_eq!(
        version_cached(&cache, "t/a"),
        None,
        "version 2 was announced before"
    );
    cache.apply_event(&commit("t/a", 3, 30, &[]));
    assert_eq!(version_cached(&cache, "t/a"), Some((3, 0)));
    // A read stored version 5 before version 4's event arrived: the
    // event does not put the older version back.
    cache.drop_chat("t/r");
    cache.store_memory("t/r", cache.ticket(), &memory("t/r", "alice", 5));
    cache.apply_event(&commit("t/r", 4, 40, &[]));
    assert_eq!(version_cached(&cache, "t/r"), None);
    // A commit older than the TTL (an event held up on its way).
    let short = MemoryCache::new(&ReadCacheSettings {
        ttl_ms: 1_000,
        ..settings()
    });
    let mut old = commit("t/o", 1, 10, &[]);
    if let Some(m) = old.memory.as_mut() {
        m.updated_at = Some(chat_memory_proto::time::to_timestamp(
            chrono::Utc::now() - chrono::Duration::seconds(5),
        ));
    }
    short.apply_event(&old);
    assert_eq!(version_cached(&short, "t/o"), None);
    // A deletion, announced or made here: versions start over, so no
    // event installs the chat any more.
    cache.apply_event(&MemoryChanged {
        chat_id: "t/a".into(),
        deleted: true,
        ..Default::default()
    });
    cache.apply_event(&commit("t/a", 4, 40, &[]));
    assert_eq!(version_cached(&cache, "t/a"), None);
    cache.apply_event(&commit("t/b", 1, 10, &[]));
    cache.drop_deleted("t/b");
    cache.apply_event(&commit("t/b", 2, 20, &[]));
    assert_eq!(version_cached(&cache, "t/b"), None);
    // An older worker's event (no pending count) only drops.
    cache.apply_event(&MemoryChanged {
        pending_jobs: None,
        ..commit("t/c", 1, 10, &[])
    });
    assert_eq!(version_cached(&cache, "t/c"), None);
    // Installing turned off.
    let off = MemoryCache::new(&ReadCacheSettings {
        install_commits: false,
        ..settings()
    });
    off.apply_event(&commit("t/d", 1, 10, &[]));
    assert_eq!(version_cached(&off, "t/d"), None);
}

#[test]
fn an_absent_chat_is_not_found_for_everyone_until_it_changes() {
    let cache = MemoryCache::new(&settings());
    cache.store_absent("t/new", cache.ticket());
    assert_eq!(
        cache.get(&id("t/new"), &access("t", "anyone", false)),
        Some(Hit::NotFound)
    );
    cache.drop_chat("t/new");
    assert_eq!(cache.get(&id("t/new"), &access("t", "anyone", false)), None);
}

#[test]
fn a_skipped_event_number_clears_everything_and_old_reads_store_nothing() {
    let cache = MemoryCache::new(&settings());
    let old = cache.ticket();
    cache.store_memory("t/a", cache.ticket(), &memory("t/a", "u", 1));
    assert!(!cache.note_sequence("w1", 1));
    assert!(!cache.note_sequence("w1", 2));
    assert!(cache.get(&id("t/a"), &access("t", "u", false)).is_some());
    assert!(cache.note_sequence("w1", 4), "3 was skipped");
    assert!(cache.is_empty());
    cache.store_memory("t/b", old, &memory("t/b", "u", 1));
    assert_eq!(cache.get(&id("t/b"), &access("t", "u", false)), None);
    // Another publisher's first number is not a gap.
    assert!(!cache.note_sequence("w2", 57));
}

#[test]
fn no_entry_is_used_once_the_expiry_sweep_may_have_purged_its_chat() {
    let cache = MemoryCache::new(&settings());
    let at = |secs: i64| {
        Some(chat_memory_proto::time::to_timestamp(
            chrono::Utc::now() + chrono::Duration::seconds(secs),
        ))
    };
    let read = |chat: &str, expires_at| store_pb::GetMemoryResponse {
        expires_at,
        ..memory(chat, "alice", 1)
    };
    cache.store_memory("t/later", cache.ticket(), &read("t/later", at(60)));
    cache.store_memory("t/past", cache.ticket(), &read("t/past", at(-1)));
    assert_eq!(version_cached(&cache, "t/later").map(|v| v.0), Some(1));
    assert_eq!(version_cached(&cache, "t/past"), None);
    cache.apply_event(&MemoryChanged {
        expires_at: at(-1),
        ..commit("t/event", 1, 10, &[])
    });
    assert_eq!(version_cached(&cache, "t/event"), None);
    cache.apply_event(&MemoryChanged {
        expires_at: at(60),
        ..commit("t/event", 2, 20, &[])
    });
    assert_eq!(version_cached(&cache, "t/event"), Some((2, 0)));
}

#[test]
fn an_entry_older_than_the_ttl_is_not_used_and_capacity_zero_caches_nothing() {
    let cache = MemoryCache::new(&ReadCacheSettings {
        capacity: 100,
        ttl_ms: 1,
        ..ReadCacheSettings::default()
    });
    cache.store_memory("t/c", cache.ticket(), &memory("t/c", "u", 1));
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(cache.get(&id("t/c"), &access("t", "u", false)), None);
    assert!(cache.is_empty(), "an expired entry gives up its place");
    let off = MemoryCache::new(&ReadCacheSettings {
        capacity: 0,
        ttl_ms: 0,
        ..ReadCacheSettings::default()
    });
    off.store_memory("t/c", off.ticket(), &memory("t/c", "u", 1));
    assert_eq!(off.get(&id("t/c"), &access("t", "u", false)), None);
}

/// A read's answer for `chat` at `version` with `pending` jobs pending.
fn read_with_pending(chat: &str, version: i64, pending: u32) -> store_pb::GetMemoryResponse {
    store_pb::GetMemoryResponse {
        freshness: Some(Freshness {
            last_applied_job_id: format!("job-{version}"),
            pending_jobs: pending,
        }),
        ..memory(chat, "alice", version)
    }
}

fn deleting(chat: &str) -> MemoryChanged {
    MemoryChanged {
        chat_id: chat.into(),
        deleting: true,
        ..Default::default()
    }
}

#[test]
fn a_settled_chat_is_kept_for_the_settled_ttl_and_one_with_a_change_under_way_for_the_short_one() {
    let short = Duration::from_secs(1);
    let settled = Duration::from_secs(60);
    let cache = MemoryCache::new(&ReadCacheSettings {
        capacity: 100,
        ttl_ms: 1_000,
        settled_ttl_ms: 60_000,
        ..ReadCacheSettings::default()
    });
    // Reads: a memory with no job pending is settled; a pending job, an
    // answer that does not say, or no memory at all (NOT_FOUND does not say
    // whether the first job is queued) is not.
    cache.store_memory("t/idle", cache.ticket(), &read_with_pending("t/idle", 3, 0));
    cache.store_memory("t/busy", cache.ticket(), &read_with_pending("t/busy", 3, 1));
    cache.store_memory("t/old", cache.ticket(), &memory("t/old", "alice", 3));
    cache.store_absent("t/none", cache.ticket());
    assert_eq!(cache.lifetime_of("t/idle"), Some(settled));
    assert_eq!(cache.lifetime_of("t/busy"), Some(short));
    assert_eq!(cache.lifetime_of("t/old"), Some(short));
    assert_eq!(cache.lifetime_of("t/none"), Some(short));
    // Commits' installs alike.
    cache.apply_event(&commit("t/done", 1, 10, &[]));
    cache.apply_event(&commit("t/more", 1, 10, &[11]));
    assert_eq!(cache.lifetime_of("t/done"), Some(settled));
    assert_eq!(cache.lifetime_of("t/more"), Some(short));
    // A deletion announced as coming drops the chat, and for the short TTL
    // from then nothing stored of it is settled, read or installed (the
    // deleting gateway may die before announcing the deletion itself).
    cache.apply_event(&deleting("t/idle"));
    assert_eq!(version_cached(&cache, "t/idle"), None);
    cache.store_memory("t/idle", cache.ticket(), &read_with_pending("t/idle", 3, 0));
    assert_eq!(version_cached(&cache, "t/idle"), Some((3, 0)));
    assert_eq!(cache.lifetime_of("t/idle"), Some(short));
    // An acceptance announced: what a read stores of the chat for the short
    // TTL from then is not settled either, even if its answer does not count
    // the job yet (a gateway whose registration failed leaves it to the
    // worker); a commit that accounts for the acceptance is.
    cache.apply_event(&accepted("t/accepted", 12));
    cache.store_memory(
        "t/accepted",
        cache.ticket(),
        &read_with_pending("t/accepted", 1, 0),
    );
    assert_eq!(cache.lifetime_of("t/accepted"), Some(short));
    cache.apply_event(&commit("t/accepted", 2, 12, &[]));
    assert_eq!(version_cached(&cache, "t/accepted"), Some((2, 0)));
    assert_eq!(cache.lifetime_of("t/accepted"), Some(settled));
    cache.apply_event(&deleting("t/done"));
    cache.apply_event(&commit("t/done", 2, 20, &[]));
    assert_eq!(version_cached(&cache, "t/done"), Some((2, 0)));
    assert_eq!(cache.lifetime_of("t/done"), Some(short));
    // A chat nobody announced anything of is settled as before.
    cache.store_memory(
        "t/other",
        cache.ticket(),
        &read_with_pending("t/other", 1, 0),
    );
    assert_eq!(cache.lifetime_of("t/other"), Some(settled));
}

#[test]
fn a_settled_entry_outlives_the_short_ttl_and_one_with_a_pending_job_does_not() {
    let cache = MemoryCache::new(&ReadCacheSettings {
        capacity: 100,
        ttl_ms: 1,
        settled_ttl_ms: 60_000,
        ..ReadCacheSettings::default()
    });
    cache.store_memory("t/idle", cache.ticket(), &read_with_pending("t/idle", 3, 0));
    cache.store_memory("t/busy", cache.ticket(), &read_with_pending("t/busy", 3, 1));
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(version_cached(&cache, "t/idle"), Some((3, 0)));
    assert_eq!(version_cached(&cache, "t/busy"), None);
}

#[test]
fn a_settled_ttl_below_the_short_one_means_the_short_one() {
    // An older configuration with a long `ttl_ms` keeps working.
    let cache = MemoryCache::new(&ReadCacheSettings {
        capacity: 100,
        ttl_ms: 120_000,
        settled_ttl_ms: 60_000,
        ..ReadCacheSettings::default()
    });
    cache.store_memory("t/idle", cache.ticket(), &read_with_pending("t/idle", 3, 0));
    assert_eq!(cache.lifetime_of("t/idle"), Some(Duration::from_secs(120)));
}

#[test]
fn while_nats_is_down_nothing_is_answered_or_kept_and_everything_is_dropped_both_ways() {
    let cache = MemoryCache::new(&settings());
    cache.store_memory("t/a", cache.ticket(), &read_with_pending("t/a", 1, 0));
    let before = cache.ticket();
    cache.set_connected(false);
    assert!(cache.is_empty());
    cache.store_memory("t/a", cache.ticket(), &read_with_pending("t/a", 1, 0));
    assert_eq!(
        version_cached(&cache, "t/a"),
        None,
        "kept while disconnected"
    );
    cache.set_connected(true);
    // A read that began before the connection came back stores nothing: an
    // event it should have seen may be lost.
    cache.store_memory("t/a", before, &read_with_pending("t/a", 1, 0));
    assert_eq!(version_cached(&cache, "t/a"), None);
    cache.store_memory("t/a", cache.ticket(), &read_with_pending("t/a", 1, 0));
    assert_eq!(version_cached(&cache, "t/a"), Some((1, 0)));
    // For the short TTL after it came back nothing is settled: the change
    // subscription is renewed just after the client reports the connection.
    let settled = MemoryCache::new(&ReadCacheSettings {
        capacity: 100,
        ttl_ms: 1_000,
        settled_ttl_ms: 60_000,
        ..ReadCacheSettings::default()
    });
    settled.set_connected(false);
    settled.set_connected(true);
    settled.store_memory("t/a", settled.ticket(), &read_with_pending("t/a", 1, 0));
    assert_eq!(settled.lifetime_of("t/a"), Some(Duration::from_secs(1)));
}

#[test]
fn a_deletions_mark_outlives_capacity_newer_marks_once_the_marks_are_full() {
    let cache = MemoryCache::new(&settings()); // 100 entries, 400 marks
    // A gateway that has run a while: the marks' room is full.
    for i in 0..1_000 {
        cache.apply_event(&commit(&format!("t/old-{i}"), 1, 10, &[]));
    }
    cache.apply_event(&MemoryChanged {
        chat_id: "t/x".into(),
        deleted: true,
        ..Default::default()
    });
    // As many other chats change after the deletion as the cache holds.
    for i in 0..100 {
        cache.apply_event(&commit(&format!("t/new-{i}"), 1, 10, &[]));
    }
    // A commit of the deleted chat's, from before its deletion, arrives late.
    cache.apply_event(&commit("t/x", 7, 70, &[]));
    assert_eq!(version_cached(&cache, "t/x"), None);
}
