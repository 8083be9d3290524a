//! `chat-memory streams backup | restore`: the deployment's JetStream streams
//! (jobs, dead letters, audit outbox), each with its consumers, through
//! JetStream's own snapshot and restore API (what the `nats` CLI uses; it is
//! not packaged for Debian).
//!
//! A restored stream is the snapshot byte for byte: the same messages at the
//! same sequence numbers, and the consumers' delivery and acknowledgement
//! state. That matters here: memory-store orders a chat's jobs by their
//! stream sequence (`last_applied_seq`), so a stream rebuilt by publishing the
//! messages again would number them anew and every restored job would be
//! refused as superseded.
//!
//! On disk, per stream: `<stream>.json` (its configuration and state when the
//! snapshot began) and `<stream>.snapshot` (the server's archive, as sent).
//!
//! Protocol (NATS server 2.9): a request to `$JS.API.STREAM.SNAPSHOT.<name>`
//! names an inbox; the server sends the archive there in chunks, each with a
//! reply subject the client answers (flow control), and ends with an empty
//! message. A restore asks `$JS.API.STREAM.RESTORE.<name>` for an upload
//! subject, sends the chunks there as requests, and ends with an empty request
//! whose answer is the restored stream's info.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use job_queue::QueueSettings;

/// Bytes per chunk, both ways.
const CHUNK: usize = 128 * 1024;
/// Longest wait for the next chunk of a snapshot.
const CHUNK_WAIT: Duration = Duration::from_secs(30);

/// The streams of a deployment whose jobs stream is `stream`.
fn stream_names(stream: &str) -> Vec<String> {
    let settings = QueueSettings {
        stream: stream.to_owned(),
        ..QueueSettings::default()
    };
    vec![
        settings.stream.clone(),
        job_queue::dlq::dlq_stream_name(&settings),
        job_queue::audit_outbox::outbox_stream_name(&settings),
    ]
}

async fn connect(nats: &str) -> Result<Client, String> {
    let settings = QueueSettings {
        url: nats.to_owned(),
        ..QueueSettings::default()
    };
    job_queue::connect_client(&settings, "chat-memory-cli")
        .await
        .map_err(|e| e.to_string())
}

/// A JetStream API request; its answer's `error`, if any, is the error.
async fn api(client: &Client, subject: String, body: Bytes) -> Result<Value, String> {
    let answer = client
        .request(subject.clone(), body)
        .await
        .map_err(|e| format!("{subject}: {e}"))?;
    let value: Value = serde_json::from_slice(&answer.payload)
        .map_err(|e| format!("{subject}: not a JetStream answer: {e}"))?;
    if let Some(error) = value.get("error") {
        return Err(format!(
            "{subject}: {} (code {})",
            error["description"].as_str().unwrap_or("unknown error"),
            error["code"]
        ));
    }
    Ok(value)
}

async fn exists(client: &Client, name: &str) -> Result<bool, String> {
    let answer = client
        .request(format!("$JS.API.STREAM.INFO.{name}"), Bytes::new())
        .await
        .map_err(|e| format!("stream {name}: {e}"))?;
    let value: Value = serde_json::from_slice(&answer.payload)
        .map_err(|e| format!("stream {name}: not a JetStream answer: {e}"))?;
    match value.get("error") {
        None => Ok(true),
        Some(e) if e["code"] == 404 => Ok(false),
        Some(e) => Err(format!(
            "stream {name}: {}",
            e["description"].as_str().unwrap_or("unknown error")
        )),
    }
}

fn io(path: &Path, e: &std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// Writes every stream of the deployment into `dir` (created if missing).
///
/// # Errors
/// NATS unreachable, a stream missing, a snapshot cut short, or `dir` not writable.
pub async fn backup(nats: &str, stream: &str, dir: &Path) -> Result<(), String> {
    let client = connect(nats).await?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| io(dir, &e))?;
    for name in stream_names(stream) {
        let (messages, bytes) = snapshot(&client, &name, dir).await?;
        out!("{name}: {messages} messages, {bytes} bytes of snapshot");
    }
    Ok(())
}

async fn snapshot(client: &Client, name: &str, dir: &Path) -> Result<(u64, u64), String> {
    let inbox = client.new_inbox();
    // Listening before asking: the first chunk may come right after the answer.
    let mut chunks = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| format!("stream {name}: {e}"))?;
    let request = json!({
        "deliver_subject": inbox,
        "chunk_size": CHUNK,
        "no_consumers": false,
    });
    let started = api(
        client,
        format!("$JS.API.STREAM.SNAPSHOT.{name}"),
        Bytes::from(request.to_string()),
    )
    .await?;
    let meta_path = dir.join(format!("{name}.json"));
    let meta = json!({ "config": started["config"], "state": started["state"] });
    tokio::fs::write(&meta_path, meta.to_string())
        .await
        .map_err(|e| io(&meta_path, &e))?;
    let data_path = dir.join(format!("{name}.snapshot"));
    let mut file = tokio::fs::File::create(&data_path)
        .await
        .map_err(|e| io(&data_path, &e))?;
    let mut written = 0u64;
    loop {
        let chunk = tokio::time::timeout(CHUNK_WAIT, chunks.next())
            .await
            .map_err(|_| format!("stream {name}: no snapshot chunk for {CHUNK_WAIT:?}"))?
            .ok_or_else(|| format!("stream {name}: the connection closed mid-snapshot"))?;
        if chunk.payload.is_empty() {
            // The end; an error ends the same way, with a status.
            if let Some(description) = chunk.description.filter(|d| !d.is_empty()) {
                return Err(format!("stream {name}: snapshot failed: {description}"));
            }
            break;
        }
        file.write_all(&chunk.payload)
            .await
            .map_err(|e| io(&data_path, &e))?;
        written += chunk.payload.len() as u64;
        if let Some(reply) = chunk.reply {
            client
                .publish(reply, Bytes::new())
                .await
                .map_err(|e| format!("stream {name}: {e}"))?;
        }
    }
    file.sync_all().await.map_err(|e| io(&data_path, &e))?;
    let messages = started["state"]["messages"].as_u64().unwrap_or(0);
    Ok((messages, written))
}

/// Restores every stream found in `dir`. A stream that exists is an error,
/// unless `replace`: it is then deleted first (with whatever it holds).
///
/// # Errors
/// NATS unreachable, `dir` without a snapshot, a stream in the way, or the
/// server refusing the archive.
pub async fn restore(nats: &str, stream: &str, dir: &Path, replace: bool) -> Result<(), String> {
    let client = connect(nats).await?;
    let names: Vec<String> = stream_names(stream)
        .into_iter()
        .filter(|n| dir.join(format!("{n}.snapshot")).exists())
        .collect();
    if names.is_empty() {
        return Err(format!(
            "{}: no snapshot of stream {stream} or its companions",
            dir.display()
        ));
    }
    for name in &names {
        if exists(&client, name).await? {
            if !replace {
                return Err(format!(
                    "stream {name} exists; --replace deletes it (and what it holds) first"
                ));
            }
            api(
                &client,
                format!("$JS.API.STREAM.DELETE.{name}"),
                Bytes::new(),
            )
            .await?;
        }
    }
    for name in names {
        let messages = upload(&client, &name, dir).await?;
        out!("{name}: restored, {messages} messages");
    }
    Ok(())
}

async fn upload(client: &Client, name: &str, dir: &Path) -> Result<u64, String> {
    let meta_path: PathBuf = dir.join(format!("{name}.json"));
    let meta = tokio::fs::read(&meta_path)
        .await
        .map_err(|e| io(&meta_path, &e))?;
    let started = api(
        client,
        format!("$JS.API.STREAM.RESTORE.{name}"),
        Bytes::from(meta),
    )
    .await?;
    let upload = started["deliver_subject"]
        .as_str()
        .ok_or_else(|| format!("stream {name}: the restore answer names no upload subject"))?
        .to_owned();
    let data_path = dir.join(format!("{name}.snapshot"));
    let mut file = tokio::fs::File::open(&data_path)
        .await
        .map_err(|e| io(&data_path, &e))?;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = file
            .read(&mut buffer)
            .await
            .map_err(|e| io(&data_path, &e))?;
        if n == 0 {
            break;
        }
        client
            .request(upload.clone(), Bytes::copy_from_slice(&buffer[..n]))
            .await
            .map_err(|e| format!("stream {name}: uploading the snapshot: {e}"))?;
    }
    let done = api(client, upload, Bytes::new()).await?;
    Ok(done["state"]["messages"].as_u64().unwrap_or(0))
}
