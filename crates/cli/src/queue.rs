//! `chat-memory queue`: the jobs queue and the workers' consumer, read straight
//! from JetStream (an operator's view; it needs network access to NATS, not to
//! the gateway).

use job_queue::QueueSettings;
use job_queue::consumer::durable_name;

/// Prints the stream's backlog and the consumer's state.
///
/// # Errors
/// NATS unreachable, or the stream or a consumer missing.
pub async fn print(nats: &str, stream: &str, durable_prefix: &str) -> Result<(), String> {
    let settings = QueueSettings {
        url: nats.to_owned(),
        stream: stream.to_owned(),
        ..QueueSettings::default()
    };
    let js = job_queue::connect(&settings, "chat-memory-cli")
        .await
        .map_err(|e| e.to_string())?;
    let mut s = js
        .get_stream(stream)
        .await
        .map_err(|e| format!("stream {stream}: {e}"))?;
    let info = s
        .info()
        .await
        .map_err(|e| format!("stream {stream}: {e}"))?;
    out!(
        "stream {stream}: {} jobs stored, {} bytes, sequences {}..{}",
        info.state.messages,
        info.state.bytes,
        info.state.first_sequence,
        info.state.last_sequence
    );
    let name = durable_name(durable_prefix);
    let mut consumer = s
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
        .await
        .map_err(|e| format!("consumer {name} on stream {stream}: {e}"))?;
    let c = consumer
        .info()
        .await
        .map_err(|e| format!("consumer {name}: {e}"))?;
    out!(
        "{:<20} {:>9} {:>11} {:>12} {:>14}",
        "consumer",
        "pending",
        "in_flight",
        "redelivered",
        "last_acked_seq"
    );
    out!(
        "{:<20} {:>9} {:>11} {:>12} {:>14}",
        name,
        c.num_pending,
        c.num_ack_pending,
        c.num_redelivered,
        c.ack_floor.stream_sequence
    );
    Ok(())
}
