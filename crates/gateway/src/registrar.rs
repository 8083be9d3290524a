//! Registrations of accepted jobs (`RecordAccepted`), gathered.
//!
//! An acceptance that arrives while registrations are in flight waits for the
//! next free call and goes with every other one waiting then, in one
//! `RecordAcceptedBatch` call (one memory-store request, one Postgres
//! transaction). A lone acceptance goes at once, as a batch of one: gathering
//! adds no wait of its own, it uses the wait there already is. Under a burst
//! this turns hundreds of calls into a few.
//!
//! Each job still gets its own answer ([`Registration`]), and a failed call is
//! the failure of every registration in it: as before, the acceptance stands
//! and the worker registers the job when it runs it.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};

use chat_memory_proto::store::{RecordAcceptedRequest, RecordAcceptedResult};
use service_kit::settings::SettingsError;

/// What memory-store made of a published job's registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Registered now, or known already. `earlier_acceptance`: the job id was
    /// accepted before as another stream message (a request repeated beyond
    /// JetStream's duplicate window).
    Recorded { earlier_acceptance: bool },
    /// The job id is known with other messages: its idempotency key was
    /// reused for a different request.
    KeyReused,
}

/// The `[registration]` settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationSettings {
    /// Most registrations in one call.
    pub max_batch: usize,
    /// Registration calls in flight at once per gateway; acceptances that
    /// arrive while all are busy go together in the next.
    pub max_in_flight: usize,
}

impl Default for RegistrationSettings {
    fn default() -> Self {
        Self {
            max_batch: 128,
            max_in_flight: 4,
        }
    }
}

impl RegistrationSettings {
    /// # Errors
    /// [`SettingsError::Invalid`] naming the bad field.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.max_batch == 0 {
            return Err(SettingsError::invalid(
                "registration.max_batch",
                "must be at least 1",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(SettingsError::invalid(
                "registration.max_in_flight",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// One call registering several jobs: one result per request, in order.
pub type BatchCall = Arc<
    dyn Fn(
            Vec<RecordAcceptedRequest>,
        ) -> BoxFuture<'static, Result<Vec<RecordAcceptedResult>, tonic::Status>>
        + Send
        + Sync,
>;

struct Pending {
    request: RecordAcceptedRequest,
    answer: oneshot::Sender<Result<Registration, tonic::Status>>,
}

/// Gathers registrations into calls of `call`; cheap to clone.
#[derive(Clone)]
pub struct Registrar {
    tx: mpsc::Sender<Pending>,
}

impl Registrar {
    /// Starts gathering on the current runtime; stops when every clone is dropped.
    pub fn start(call: BatchCall, settings: &RegistrationSettings) -> Self {
        let max_batch = settings.max_batch.max(1);
        let in_flight = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        let (tx, rx) = mpsc::channel(max_batch.saturating_mul(4));
        tokio::spawn(gather(rx, call, max_batch, in_flight));
        Self { tx }
    }

    /// Registers one job; waits for the call it goes in.
    ///
    /// # Errors
    /// The call's status (every registration of a failed call gets it).
    pub async fn register(
        &self,
        request: RecordAcceptedRequest,
    ) -> Result<Registration, tonic::Status> {
        let (answer, answered) = oneshot::channel();
        self.tx
            .send(Pending { request, answer })
            .await
            .map_err(|_| tonic::Status::unavailable("registrations have stopped"))?;
        answered
            .await
            .map_err(|_| tonic::Status::internal("a registration call ended without an answer"))?
    }
}

async fn gather(
    mut rx: mpsc::Receiver<Pending>,
    call: BatchCall,
    max_batch: usize,
    in_flight: Arc<Semaphore>,
) {
    while let Some(first) = rx.recv().await {
        // Wait for a free call first: what arrives meanwhile goes with `first`.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let call = call.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (requests, answers): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.request, p.answer)).unzip();
            let n = requests.len();
            match call(requests).await {
                Ok(results) if results.len() == n => {
                    for (answer, result) in answers.into_iter().zip(results) {
                        let _ = answer.send(Ok(if result.key_reused {
                            Registration::KeyReused
                        } else {
                            Registration::Recorded {
                                earlier_acceptance: result.earlier_acceptance,
                            }
                        }));
                    }
                }
                Ok(results) => {
                    let status = tonic::Status::internal(format!(
                        "memory-store answered {} of {n} registrations",
                        results.len()
                    ));
                    for answer in answers {
                        let _ = answer.send(Err(status.clone()));
                    }
                }
                Err(status) => {
                    for answer in answers {
                        let _ = answer.send(Err(status.clone()));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::FutureExt;

    use super::*;

    fn request(job: &str) -> RecordAcceptedRequest {
        RecordAcceptedRequest {
            job_id: job.to_owned(),
            ..Default::default()
        }
    }

    /// A call that records the batches it got and answers once released; jobs
    /// named `reused*` come back as a reused key.
    fn recording_call(seen: Arc<Mutex<Vec<Vec<String>>>>, release: Arc<Semaphore>) -> BatchCall {
        Arc::new(move |requests: Vec<RecordAcceptedRequest>| {
            let seen = seen.clone();
            let release = release.clone();
            async move {
                seen.lock()
                    .expect("lock")
                    .push(requests.iter().map(|r| r.job_id.clone()).collect());
                release.acquire().await.expect("open").forget();
                Ok(requests
                    .iter()
                    .map(|r| RecordAcceptedResult {
                        inserted: true,
                        earlier_acceptance: false,
                        key_reused: r.job_id.starts_with("reused"),
                    })
                    .collect())
            }
            .boxed()
        })
    }

    #[tokio::test]
    async fn registrations_that_wait_for_a_busy_call_go_together_and_each_gets_its_answer() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Semaphore::new(0));
        let settings = RegistrationSettings {
            max_batch: 3,
            max_in_flight: 1,
        };
        let registrar = Registrar::start(recording_call(seen.clone(), release.clone()), &settings);

        let first = tokio::spawn({
            let r = registrar.clone();
            async move { r.register(request("a")).await }
        });
        // `a` is in its call (held) before the others arrive.
        while seen.lock().expect("lock").is_empty() {
            tokio::task::yield_now().await;
        }
        let later: Vec<_> = ["b", "reused-c", "d", "e"]
            .into_iter()
            .map(|job| {
                let r = registrar.clone();
                tokio::spawn(async move { r.register(request(job)).await })
            })
            .collect();
        // All four sent: three wait in the channel (the gathering task may
        // already hold the first of them while it waits for the busy call).
        while registrar.tx.max_capacity() - registrar.tx.capacity() < 3 {
            tokio::task::yield_now().await;
        }
        release.add_permits(10);

        assert_eq!(
            first.await.expect("joined").expect("registered"),
            Registration::Recorded {
                earlier_acceptance: false
            }
        );
        let mut answers = Vec::new();
        for handle in later {
            answers.push(handle.await.expect("joined").expect("registered"));
        }
        assert_eq!(answers[1], Registration::KeyReused, "{answers:?}");
        assert!(
            answers
                .iter()
                .enumerate()
                .all(|(i, a)| i == 1 || matches!(a, Registration::Recorded { .. })),
            "{answers:?}"
        );
        let batches = seen.lock().expect("lock").clone();
        assert_eq!(
            batches,
            vec![
                vec!["a".to_owned()],
                vec!["b".to_owned(), "reused-c".to_owned(), "d".to_owned()],
                vec!["e".to_owned()],
            ],
            "the three that waited went together (at most max_batch), the rest next"
        );
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_registration_in_it() {
        let call: BatchCall = Arc::new(|_requests: Vec<RecordAcceptedRequest>| {
            async { Err(tonic::Status::unavailable("memory-store down")) }.boxed()
        });
        let registrar = Registrar::start(call, &RegistrationSettings::default());
        let status = registrar
            .register(request("a"))
            .await
            .expect_err("the call failed");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let short: BatchCall =
            Arc::new(|_requests: Vec<RecordAcceptedRequest>| async { Ok(Vec::new()) }.boxed());
        let registrar = Registrar::start(short, &RegistrationSettings::default());
        let status = registrar
            .register(request("a"))
            .await
            .expect_err("no answer for the job");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status.message().contains("0 of 1"), "{}", status.message());
    }

    #[test]
    fn zero_batch_or_zero_calls_in_flight_is_refused_naming_the_setting() {
        let bad = RegistrationSettings {
            max_batch: 0,
            ..Default::default()
        };
        assert!(
            bad.validate()
                .expect_err("refused")
                .to_string()
                .contains("registration.max_batch")
        );
        let bad = RegistrationSettings {
            max_in_flight: 0,
            ..Default::default()
        };
        assert!(
            bad.validate()
                .expect_err("refused")
                .to_string()
                .contains("registration.max_in_flight")
        );
    }
}
