//! The update-job queue layout on JetStream, shared by the gateway (publisher)
//! and summarizer-worker (consumer).
//!
//! Jobs are spread over a fixed number of partitions; a chat always maps to the
//! same partition, so one partition's subject carries all of a chat's jobs in
//! acceptance order. Changing the partition count re-maps chats and must be done
//! as a drained migration (see docs/architecture.md).

pub mod v1 {
    //! `chatmemory.jobs.v1`: the job payload.
    tonic::include_proto!("chatmemory.jobs.v1");
}

/// The partition a chat's jobs go to: FNV-1a 64 of the chat id, modulo `partitions`.
///
/// FNV-1a is fixed by its definition, so every release and every process maps a
/// chat to the same partition (unlike `std`'s `DefaultHasher`).
pub fn partition_for(chat_id: &str, partitions: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = chat_id
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    let partitions = u64::from(partitions.max(1));
    // The remainder is < partitions <= u32::MAX.
    u32::try_from(hash % partitions).unwrap_or(0)
}

/// The subject of one partition: `<prefix>.jobs.<partition>`.
pub fn partition_subject(subject_prefix: &str, partition: u32) -> String {
    format!("{subject_prefix}.jobs.{partition}")
}

/// The wildcard subject the jobs stream binds: `<prefix>.jobs.*`.
pub fn stream_subjects(subject_prefix: &str) -> String {
    format!("{subject_prefix}.jobs.*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_always_maps_to_the_same_partition() {
        assert_eq!(partition_for("chat-42", 32), partition_for("chat-42", 32));
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c; pinning it guards against a silent change.
        assert_eq!(
            partition_for("a", 1_000_003),
            (0xaf63_dc4c_8601_ec8c_u64 % 1_000_003) as u32
        );
    }

    #[test]
    fn chats_spread_over_all_partitions() {
        let mut seen = [0u32; 16];
        for i in 0..1600 {
            seen[partition_for(&format!("chat-{i}"), 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "uneven spread: {seen:?}");
    }

    #[test]
    fn zero_partitions_is_treated_as_one() {
        assert_eq!(partition_for("x", 0), 0);
    }
}
