//! The isolation checks: another tenant and another user of the same tenant
//! read and write the owner's public chat id.

use std::time::Duration;

use chat_memory_proto::v1::{ChatMessage, GetMemoryRequest, Role, UpdateMemoryRequest};
use test_support::GatewayClient;
use test_support::auth::{self, Bearer};
use test_support::processes::ProcessStack;

use test_support::requests::get;

/// What the isolation checks found.
#[derive(Default)]
pub(super) struct Isolation {
    checks: usize,
    pub(super) failures: Vec<String>,
}

impl Isolation {
    fn check(&mut self, what: &str, ok: bool, detail: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.failures.push(format!("{what}: {}", detail()));
        }
    }

    pub(super) fn summary(&self) -> String {
        if self.failures.is_empty() {
            format!(
                "{} of {} checks hold: another tenant and another user of the same tenant get NOT_FOUND (the same answer as for a chat that does not exist) for an existing chat; another tenant's update of the same public chat id lands in its own namespace and leaves the owner's memory unchanged",
                self.checks, self.checks
            )
        } else {
            format!(
                "{} of {} checks failed: {}",
                self.failures.len(),
                self.checks,
                self.failures.join("; ")
            )
        }
    }
}

fn client_as(stack: &ProcessStack, tenant: &str, user: &str) -> Result<GatewayClient, String> {
    let token = auth::mint(tenant, user, &["memory:read", "memory:write"]);
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", stack.gateway_addr()))
            .map_err(|e| e.to_string())?
            .timeout(Duration::from_secs(10))
            .connect_lazy();
    Ok(
        chat_memory_proto::v1::memory_service_client::MemoryServiceClient::with_interceptor(
            channel,
            Bearer::new(&token),
        ),
    )
}

pub(super) async fn isolation(stack: &ProcessStack, owner: &GatewayClient, tag: &str) -> Isolation {
    let mut found = Isolation::default();
    let chat = format!("read-{tag}-0");
    let absent = format!("read-{tag}-never-written");
    let mut owner = owner.clone();
    let before = owner.get_memory(get(&chat)).await;
    let before = match before {
        Ok(r) => r.into_inner().memory,
        Err(s) => {
            found.check("the owner reads its chat", false, || {
                format!("{:?}", s.code())
            });
            return found;
        }
    };
    found.check("the owner reads its chat", before.is_some(), || {
        "no memory".to_owned()
    });
    let absent_answer = owner.get_memory(get(&absent)).await.err();
    let strangers = [
        ("tenant-readiness-other", auth::USER),
        (auth::TENANT, "user-readiness-other"),
    ];
    for (tenant, user) in strangers {
        let who = format!("{tenant}/{user}");
        let mut client = match client_as(stack, tenant, user) {
            Ok(c) => c,
            Err(e) => {
                found.check(&who, false, || e);
                continue;
            }
        };
        let read = client.get_memory(get(&chat)).await;
        found.check(
            &format!("{who} reads the owner's chat"),
            matches!(&read, Err(s) if s.code() == tonic::Code::NotFound),
            || {
                format!(
                    "{:?}",
                    read.as_ref().map(|_| "an answer").map_err(|s| s.code())
                )
            },
        );
        if let (Err(theirs), Some(missing)) = (&read, &absent_answer) {
            found.check(
                &format!("{who}'s NOT_FOUND is the one a missing chat gets"),
                theirs.message() == missing.message(),
                || format!("{:?} vs {:?}", theirs.message(), missing.message()),
            );
        }
    }
    // Another tenant writes the same public chat id: its own namespace.
    match client_as(stack, "tenant-readiness-other", auth::USER) {
        Ok(mut other) => {
            let update = UpdateMemoryRequest {
                chat_id: chat.clone(),
                messages: vec![ChatMessage {
                    role: Role::User as i32,
                    content: "My plan is Kaiser Bronze 60 HMO.".to_owned(),
                    ..Default::default()
                }],
                idempotency_key: format!("readiness-{tag}-other"),
            };
            match other.update_memory(update).await {
                Ok(accepted) => {
                    let job = accepted.into_inner().job_id;
                    let theirs = other
                        .get_memory(GetMemoryRequest {
                            chat_id: chat.clone(),
                            after_job_id: job,
                            // The gateway's longest wait (validation.max_read_wait_ms).
                            wait_ms: 10_000,
                            ..Default::default()
                        })
                        .await;
                    found.check(
                        "the other tenant's update builds its own memory",
                        matches!(&theirs, Ok(r) if r.get_ref().memory.as_ref().is_some_and(|m| m.version == 1)),
                        || format!("{:?}", theirs.as_ref().map(|r| r.get_ref().memory.as_ref().map(|m| m.version)).map_err(|s| format!("{:?}: {}", s.code(), s.message()))),
                    );
                }
                Err(s) => found.check("the other tenant's update is accepted", false, || {
                    format!("{:?}: {}", s.code(), s.message())
                }),
            }
        }
        Err(e) => found.check("the other tenant's client", false, || e),
    }
    let after = owner
        .get_memory(get(&chat))
        .await
        .ok()
        .and_then(|r| r.into_inner().memory);
    found.check(
        "the owner's memory is unchanged by the other tenant's update",
        after.is_some() && after == before,
        || {
            format!(
                "version {:?} → {:?}",
                before.as_ref().map(|m| m.version),
                after.as_ref().map(|m| m.version)
            )
        },
    );
    found
}
