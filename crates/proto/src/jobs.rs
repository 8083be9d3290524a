//! The update-job payload on the JetStream jobs stream, published by the
//! gateway and consumed by summarizer-worker. Where jobs go on the stream (the
//! subject layout) is job-queue's business, not the wire contract's.

pub mod v1 {
    //! `chatmemory.jobs.v1`: the job payload.
    tonic::include_proto!("chatmemory.jobs.v1");
}
