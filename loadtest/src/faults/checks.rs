//! The suite's promises, checked per chat from what the gateway reports: each
//! accepted job's end (`state`, `resulting_version`, `applied_in_call`) in
//! acceptance order, and the chat's final memory version.
//!
//! Under coalescing one summarizer call applies several waiting jobs of a chat
//! in one commit: they all report the same `resulting_version` and the same
//! `applied_in_call`, and the memory version counts calls, not jobs. So:
//! - *out of order*: in acceptance order, a succeeded job's version is below
//!   the previous succeeded job's, or equal to it while another call applied
//!   it, or above it while the same call applied it (one call, one version),
//!   or its call's jobs are not contiguous (another job, succeeded or not,
//!   lies between two jobs of one call);
//! - *applied twice*: the memory version exceeds the number of distinct calls
//!   that applied the chat's succeeded jobs (each call makes exactly one
//!   version);
//! - *bad versions*: a version in `1..=memory version` made by no call or by
//!   more than one, or a call whose version lies outside that range;
//! - *lost*: accepted, but neither succeeded nor failed by the deadline.

use std::collections::{BTreeMap, BTreeSet};

use chat_memory_proto::v1::JobState;

use super::load::Ended;

/// One chat's figures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChatCheck {
    pub accepted: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub lost: usize,
    pub out_of_order: usize,
    pub twice: usize,
    pub bad_versions: usize,
    /// Distinct summarizer calls that applied the chat's succeeded jobs.
    pub calls: usize,
    /// Of those, calls that applied more than one job.
    pub coalesced_calls: usize,
    /// The update indexes each call applied, calls in order of their first
    /// update: two runs whose chat was grouped alike fed the offline agent
    /// the same inputs, so must end with the same memory.
    pub grouping: Vec<Vec<usize>>,
}

/// The call that applied a succeeded job. A job without a call id (it should
/// not happen: every commit records one) counts as a call of its own, so the
/// version checks stay as strict as before coalescing for it.
fn call_of(index: usize, end: &Ended) -> String {
    if end.applied_in_call.is_empty() {
        format!("(no call id: update {index})")
    } else {
        end.applied_in_call.clone()
    }
}

/// Checks one chat: `ends` holds, by update index, `None` for an update never
/// accepted, `Some(None)` for an accepted job that did not end, and
/// `Some(Some(end))` for one that did; `memory_version` is the chat's final
/// memory version (`None`: no memory).
pub fn check_chat(ends: &[Option<Option<&Ended>>], memory_version: Option<i64>) -> ChatCheck {
    let mut c = ChatCheck::default();
    // Version and call of the previous succeeded job.
    let mut previous: Option<(i64, String)> = None;
    // The call of the job just before in acceptance order, if it succeeded.
    let mut adjacent_call: Option<String> = None;
    let mut calls_seen: BTreeSet<String> = BTreeSet::new();
    let mut jobs_per_call: BTreeMap<String, usize> = BTreeMap::new();
    let mut version_of_call: BTreeMap<String, i64> = BTreeMap::new();
    let mut updates_of_call: Vec<(String, Vec<usize>)> = Vec::new();
    for (index, accepted) in ends.iter().enumerate() {
        let Some(end) = accepted else { continue };
        c.accepted += 1;
        let end = match end {
            Some(e) if e.state == JobState::Succeeded => e,
            Some(_) => {
                c.failed += 1;
                adjacent_call = None;
                continue;
            }
            None => {
                c.lost += 1;
                adjacent_call = None;
                continue;
            }
        };
        c.succeeded += 1;
        let version = end.resulting_version.unwrap_or(0);
        let call = call_of(index, end);
        let in_order = match &previous {
            None => true,
            Some((v, prev_call)) if *prev_call == call => version == *v,
            Some((v, _)) => version > *v,
        };
        let contiguous = adjacent_call.as_ref() == Some(&call) || !calls_seen.contains(&call);
        if !in_order || !contiguous {
            c.out_of_order += 1;
        }
        *jobs_per_call.entry(call.clone()).or_default() += 1;
        match updates_of_call.iter_mut().find(|(c, _)| *c == call) {
            Some((_, updates)) => updates.push(index),
            None => updates_of_call.push((call.clone(), vec![index])),
        }
        // A call reporting two versions is caught above (same call, other version).
        version_of_call.entry(call.clone()).or_insert(version);
        calls_seen.insert(call.clone());
        adjacent_call = Some(call.clone());
        previous = Some((version, call));
    }
    c.calls = jobs_per_call.len();
    c.coalesced_calls = jobs_per_call.values().filter(|&&n| n > 1).count();
    c.grouping = updates_of_call.into_iter().map(|(_, u)| u).collect();

    let memory = memory_version.unwrap_or(0);
    let calls = i64::try_from(c.calls).unwrap_or(i64::MAX);
    c.twice = usize::try_from((memory - calls).max(0)).unwrap_or(usize::MAX);
    let mut makers: BTreeMap<i64, usize> = BTreeMap::new();
    for v in version_of_call.values() {
        *makers.entry(*v).or_default() += 1;
    }
    let outside = makers
        .iter()
        .filter(|(v, _)| !(1..=memory).contains(*v))
        .map(|(_, n)| n)
        .sum::<usize>();
    let not_one = (1..=memory)
        .filter(|v| makers.get(v).copied().unwrap_or(0) != 1)
        .count();
    c.bad_versions = outside + not_one;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(version: i64, call: &str) -> Ended {
        Ended {
            state: JobState::Succeeded,
            resulting_version: Some(version),
            applied_in_call: call.to_owned(),
            error: String::new(),
        }
    }

    fn failed() -> Ended {
        Ended {
            state: JobState::Failed,
            resulting_version: None,
            applied_in_call: String::new(),
            error: "agent rejected the input".to_owned(),
        }
    }

    fn check(ends: &[Ended], memory: i64) -> ChatCheck {
        let ends: Vec<Option<Option<&Ended>>> = ends.iter().map(|e| Some(Some(e))).collect();
        check_chat(&ends, Some(memory))
    }

    #[test]
    fn jobs_coalesced_into_calls_in_order_pass_every_check() {
        let c = check(
            &[ok(1, "a"), ok(2, "b"), ok(2, "b"), ok(2, "b"), ok(3, "c")],
            3,
        );
        assert_eq!(
            c,
            ChatCheck {
                accepted: 5,
                succeeded: 5,
                calls: 3,
                coalesced_calls: 1,
                grouping: vec![vec![0], vec![1, 2, 3], vec![4]],
                ..ChatCheck::default()
            }
        );
    }

    /// A chat's jobs in acceptance order, its memory version, and the
    /// expected (out of order, twice, bad versions).
    struct Case {
        name: &'static str,
        jobs: Vec<Ended>,
        memory: i64,
        expected: (usize, usize, usize),
    }

    #[test]
    fn each_broken_promise_is_counted_where_it_belongs() {
        let case = |name, jobs, memory, expected| Case {
            name,
            jobs,
            memory,
            expected,
        };
        let cases = [
            case(
                "a lower version than the previous job",
                vec![ok(2, "a"), ok(1, "b")],
                2,
                (1, 0, 0),
            ),
            case(
                "the same version from another call",
                vec![ok(1, "a"), ok(1, "b")],
                1,
                (1, 0, 1),
            ),
            case(
                "one call reporting two versions",
                vec![ok(1, "a"), ok(2, "a")],
                2,
                (1, 1, 1),
            ),
            case(
                "a call whose jobs are not contiguous",
                vec![ok(1, "a"), ok(2, "b"), ok(1, "a")],
                2,
                (1, 0, 0),
            ),
            case(
                "a call split by a failed job",
                vec![ok(1, "a"), failed(), ok(1, "a")],
                1,
                (1, 0, 0),
            ),
            case(
                "a memory version above the calls (a second effect)",
                vec![ok(1, "a"), ok(2, "b")],
                3,
                (0, 1, 1),
            ),
            case(
                "a version skipped by the calls",
                vec![ok(1, "a"), ok(3, "b")],
                3,
                (0, 1, 1),
            ),
            case(
                "a call's version above the memory's",
                vec![ok(1, "a"), ok(2, "b")],
                1,
                (0, 0, 1),
            ),
        ];
        for Case {
            name,
            jobs,
            memory,
            expected,
        } in cases
        {
            let c = check(&jobs, memory);
            assert_eq!(
                (c.out_of_order, c.twice, c.bad_versions),
                expected,
                "{name}: {c:?}"
            );
        }
    }

    #[test]
    fn the_grouping_lists_each_calls_updates_in_acceptance_order() {
        let c = check(
            &[ok(1, "a"), ok(2, "b"), ok(2, "b"), failed(), ok(3, "c")],
            3,
        );
        assert_eq!(c.grouping, vec![vec![0], vec![1, 2], vec![4]]);
    }

    #[test]
    fn succeeded_jobs_without_a_call_id_are_checked_as_calls_of_their_own() {
        let c = check(&[ok(1, ""), ok(1, "")], 1);
        assert_eq!(
            (c.out_of_order, c.calls, c.bad_versions),
            (1, 2, 1),
            "{c:?}"
        );
    }

    #[test]
    fn an_accepted_job_that_never_ended_is_lost_and_a_refused_one_is_not_counted() {
        let first = ok(1, "a");
        let c = check_chat(&[Some(Some(&first)), Some(None), None], Some(1));
        assert_eq!(
            (c.accepted, c.succeeded, c.lost, c.out_of_order),
            (2, 1, 1, 0)
        );
    }
}
