//! `chat-memory queue`: the jobs queue per partition, read straight from JetStream
//! (an operator's view; it needs network access to NATS, not to the gateway).

use job_queue::QueueSettings;
use job_queue::consumer::durable_name;

/// Prints one line per partition and a total.
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
    out!(
        "{:>9} {:>9} {:>11} {:>12} {:>14}",
        "partition",
        "pending",
        "in_flight",
        "redelivered",
        "last_acked_seq"
    );
    let (mut pending, mut in_flight) = (0u64, 0u64);
    let mut p = 0u32;
    loop {
        let name = durable_name(durable_prefix, p);
        let Ok(mut consumer) = s
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
            .await
        else {
            break;
        };
        let c = consumer
            .info()
            .await
            .map_err(|e| format!("consumer {name}: {e}"))?;
        out!(
            "{:>9} {:>9} {:>11} {:>12} {:>14}",
            p,
            c.num_pending,
            c.num_ack_pending,
            c.num_redelivered,
            c.ack_floor.stream_sequence
        );
        pending += c.num_pending;
        in_flight += c.num_ack_pending as u64;
        p += 1;
    }
    if p == 0 {
        return Err(format!(
            "no consumers named {durable_prefix}-p<N> on stream {stream}"
        ));
    }
    out!("{:>9} {:>9} {:>11}", "total", pending, in_flight);
    Ok(())
}
