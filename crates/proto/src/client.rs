//! Dialing the public API from a command-line tool (`chat-memory`,
//! `chat-memory-bench`): plain HTTP/2 for an `http://` gateway, TLS trusting a
//! PEM CA file for an `https://` one.
//!
//! The build bundles no public root store, so an `https://` gateway needs the CA
//! that signed its certificate; [`connect`] says so instead of failing inside
//! tonic. [`error_chain`] prints an error with every cause under it: tonic's
//! transport errors read "transport error" on their own.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// How long to wait for the TCP connection and the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a channel to the gateway could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("--gateway {uri:?} is not a valid URI")]
    InvalidUri {
        uri: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "--gateway {uri} needs --ca-cert (CHAT_MEMORY_CA_CERT): the PEM file of the CA that signed the gateway's certificate"
    )]
    CaCertMissing { uri: String },
    /// A CA file with an `http://` gateway would silently go unused: the
    /// caller most likely meant `https://`.
    #[error(
        "--ca-cert is set but --gateway {uri} is not https://: the connection would not use TLS"
    )]
    CaCertWithoutTls { uri: String },
    #[error("--ca-cert {}: cannot read it", path.display())]
    CaCertUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--ca-cert {}: not a usable CA certificate", path.display())]
    CaCertInvalid {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot reach the gateway at {uri}")]
    Unreachable {
        uri: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Connects to the gateway at `uri`; over TLS trusting `ca_cert` when `uri` is
/// `https://` (the server name checked is the URI's host).
///
/// # Errors
/// [`ConnectError`]: a bad URI or CA file, a CA file missing for `https://` or
/// given for `http://`, or the connection or TLS handshake failing.
pub async fn connect(uri: &str, ca_cert: Option<&Path>) -> Result<Channel, ConnectError> {
    let mut endpoint =
        Endpoint::from_shared(uri.to_owned()).map_err(|source| ConnectError::InvalidUri {
            uri: uri.to_owned(),
            source,
        })?;
    let https = endpoint.uri().scheme_str() == Some("https");
    match (https, ca_cert) {
        (true, None) => {
            return Err(ConnectError::CaCertMissing {
                uri: uri.to_owned(),
            });
        }
        (false, Some(_)) => {
            return Err(ConnectError::CaCertWithoutTls {
                uri: uri.to_owned(),
            });
        }
        (true, Some(path)) => {
            let pem = std::fs::read(path).map_err(|source| ConnectError::CaCertUnreadable {
                path: path.to_owned(),
                source,
            })?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(|source| ConnectError::CaCertInvalid {
                    path: path.to_owned(),
                    source,
                })?;
        }
        (false, None) => {}
    }
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|source| ConnectError::Unreachable {
            uri: uri.to_owned(),
            source,
        })
}

/// The gateway flags both command-line tools take (feature `cli`).
#[cfg(feature = "cli")]
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Gateway address.
    #[arg(
        long,
        global = true,
        env = "CHAT_MEMORY_GATEWAY",
        default_value = "http://127.0.0.1:50051"
    )]
    pub gateway: String,
    /// PEM CA certificate to trust for an `https://` gateway (required for one:
    /// no system roots are bundled); `scripts/run-local.sh` makes `.local/tls/ca.crt`.
    #[arg(long, global = true, env = "CHAT_MEMORY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Bearer JWT presented to the gateway (scopes memory:read / write / admin;
    /// `scripts/run-local.sh` writes one to `.local/token`). Every call counts
    /// against its user's rate limit.
    #[arg(long, global = true, env = "CHAT_MEMORY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[cfg(feature = "cli")]
impl GatewayArgs {
    /// The gateway's client, with the bearer token on every call.
    ///
    /// # Errors
    /// Why the gateway could not be dialled, or the token is not a valid header.
    pub async fn client(&self) -> Result<GatewayClient, String> {
        let channel = connect(&self.gateway, self.ca_cert.as_deref())
            .await
            .map_err(|e| error_chain(&e))?;
        let bearer = Bearer::new(self.token.as_deref())?;
        Ok(
            crate::v1::memory_service_client::MemoryServiceClient::with_interceptor(
                channel, bearer,
            ),
        )
    }
}

/// The public API's client as the tools use it: the bearer token on every call.
pub type GatewayClient = crate::v1::memory_service_client::MemoryServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Bearer>,
>;

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// # Errors
    /// `--token: not a valid header value`.
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| "--token: not a valid header value".to_owned())
            })
            .transpose()
            .map(Self)
    }

    /// A raw `authorization` value (tests of malformed headers).
    ///
    /// # Errors
    /// When `value` is not a valid header value.
    pub fn raw(value: &str) -> Result<Self, String> {
        value
            .parse()
            .map(|v| Self(Some(v)))
            .map_err(|_| "authorization: not a valid header value".to_owned())
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.0 {
            request.metadata_mut().insert("authorization", h.clone());
        }
        Ok(request)
    }
}

/// `error` and each of its causes, joined by `": "`; a cause that only repeats
/// the text above it (tonic wraps errors that way) is printed once.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    let mut cause = error.source();
    while let Some(e) = cause {
        let line = e.to_string();
        if line != last {
            text.push_str(": ");
            text.push_str(&line);
            last = line;
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layers(texts: &[&'static str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |source, text| {
                Some(Layer {
                    text,
                    source: source.map(Box::new),
                })
            })
            .unwrap_or(Layer {
                text: "",
                source: None,
            })
    }

    #[test]
    fn the_error_chain_names_every_cause_once() {
        let cases: &[(&[&str], &str)] = &[
            (&["transport error"], "transport error"),
            (
                &["transport error", "invalid peer certificate: UnknownIssuer"],
                "transport error: invalid peer certificate: UnknownIssuer",
            ),
            (
                &["transport error", "deadline", "deadline", "io"],
                "transport error: deadline: io",
            ),
        ];
        for (texts, expected) in cases {
            assert_eq!(error_chain(&layers(texts)), *expected, "{texts:?}");
        }
    }

    #[tokio::test]
    async fn an_https_gateway_without_a_ca_file_is_refused_before_dialing() {
        let refused = connect("https://localhost:1", None).await;
        assert!(
            matches!(refused, Err(ConnectError::CaCertMissing { .. })),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_ca_file_with_a_plain_gateway_is_refused_before_dialing() {
        let refused = connect("http://localhost:1", Some(Path::new("ca.crt"))).await;
        assert!(
            matches!(refused, Err(ConnectError::CaCertWithoutTls { .. })),
            "{refused:?}"
        );
    }
}
