//! `chat-memory dlq list|replay`: the dead-letter stream, read and replayed
//! straight through JetStream (an operator's tool, like `chat-memory queue`).
//!
//! A replay republishes the job to its chat's subject, chained like a new job;
//! the worker applies it only if no later job of the chat was applied
//! meanwhile, else records it superseded. See `job_queue::dlq`.

use clap::Subcommand;
use job_queue::QueueSettings;
use job_queue::dlq;

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Replay one dead letter by its sequence, or all of them.
    Replay {
        /// Sequence in the dead-letter stream (from `dlq list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        seq: Option<u64>,
        #[arg(long)]
        all: bool,
    },
}

/// Runs the command against the queue at `nats`, stream `stream` (the jobs
/// stream; its dead letters are in `<stream>_DLQ`).
///
/// # Errors
/// NATS unreachable, a missing dead letter, or a failed republish.
pub async fn run(
    nats: &str,
    stream: &str,
    subject_prefix: &str,
    command: &DlqCommand,
) -> Result<(), String> {
    let settings = QueueSettings {
        url: nats.to_owned(),
        stream: stream.to_owned(),
        subject_prefix: subject_prefix.to_owned(),
        ..QueueSettings::default()
    };
    let js = job_queue::connect(&settings, "chat-memory-cli")
        .await
        .map_err(|e| e.to_string())?;
    match command {
        DlqCommand::List { limit } => {
            let entries = dlq::list(&js, &settings, *limit)
                .await
                .map_err(|e| e.to_string())?;
            out!(
                "{:>8} {:>12} {:<36} {:<24} reason",
                "dlq_seq",
                "original_seq",
                "job_id",
                "chat_id"
            );
            for e in &entries {
                out!(
                    "{:>8} {:>12} {:<36} {:<24} {}",
                    e.dlq_seq,
                    e.original_seq,
                    e.job_id,
                    e.chat_id,
                    e.reason
                );
            }
            out!("{} dead letter(s)", entries.len());
        }
        DlqCommand::Replay { seq, all } => {
            let seqs: Vec<u64> = if *all {
                dlq::list(&js, &settings, usize::MAX)
                    .await
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|e| e.dlq_seq)
                    .collect()
            } else {
                seq.iter().copied().collect()
            };
            for s in &seqs {
                let r = dlq::replay(&js, &settings, *s)
                    .await
                    .map_err(|e| format!("replaying dead letter {s}: {e}"))?;
                out!(
                    "replayed dead letter {} as job message {}",
                    r.dlq_seq,
                    r.job_seq
                );
            }
            out!("{} replayed", seqs.len());
        }
    }
    Ok(())
}
