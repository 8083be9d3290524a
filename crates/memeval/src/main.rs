//! `memeval-run`: writes the agent's final memories for the memory-quality
//! scorer (`run`), or measures the agent's per-call latency (`bench`).

use std::{fs::File, io::Write, path::PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use memeval::{
    budget::limits_for,
    dataset,
    drive::{Batching, drive, offline_agent},
};

#[derive(Debug, Parser)]
#[command(about = "Drive the summarizer agent through eval conversations")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One agent call per session; write `{conv_id, memory}` lines.
    Run {
        /// Conversations in the eval's neutral JSONL format.
        #[arg(long)]
        data: PathBuf,
        /// Where to write the memories (JSONL).
        #[arg(long)]
        out: PathBuf,
        /// Total token budget of the memory (cl100k_base).
        #[arg(long, default_value_t = 2000)]
        budget: u32,
    },
    /// Fixed-size batches; print per-call latency percentiles.
    Bench {
        #[arg(long)]
        data: PathBuf,
        /// Messages per call.
        #[arg(long, default_value_t = 20)]
        batch_size: usize,
        #[arg(long, default_value_t = 2000)]
        budget: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    summarizer_agent::warm_tokenizer();
    let agent = offline_agent()?;
    match Args::parse().command {
        Command::Run { data, out, budget } => {
            let mut file =
                File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            for conversation in dataset::read(&data)? {
                let driven = drive(
                    &agent,
                    &conversation,
                    limits_for(budget),
                    Batching::PerSession,
                )
                .await?;
                let m = &driven.memory;
                let line = serde_json::json!({
                    "conv_id": conversation.conv_id,
                    "memory": {
                        "user_confirmed": m.user_confirmed,
                        "llm_inferred": m.llm_inferred,
                        "general_summary": m.general_summary,
                    },
                });
                writeln!(file, "{line}")?;
                eprintln!(
                    "{}: {} calls, {} memory tokens",
                    conversation.conv_id,
                    driven.latencies.len(),
                    m.token_counts.total
                );
            }
        }
        Command::Bench {
            data,
            batch_size,
            budget,
        } => {
            let mut histogram = hdrhistogram::Histogram::<u64>::new(3)?;
            for conversation in dataset::read(&data)? {
                let driven = drive(
                    &agent,
                    &conversation,
                    limits_for(budget),
                    Batching::Fixed(batch_size),
                )
                .await?;
                for latency in driven.latencies {
                    histogram.record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX))?;
                }
            }
            let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "offline backend, {batch_size}-message batches, budget {budget}: {} calls, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                histogram.len(),
                ms(0.5),
                ms(0.99),
                histogram.max() as f64 / 1000.0
            );
        }
    }
    Ok(())
}
