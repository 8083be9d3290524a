//! A throwaway PKI for TLS tests: a CA, a server certificate for `localhost`
//! and `127.0.0.1`, and a client certificate, generated with rcgen into a
//! temporary directory (removed on drop); and [`LocalTls`], the certificates
//! `scripts/local-tls.sh` makes for a local run.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use service_kit::tls::{ClientTls, ServerTls};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The files of a test PKI.
pub struct TestPki {
    dir: PathBuf,
}

impl TestPki {
    /// Generates a CA, a server and a client certificate.
    ///
    /// # Panics
    /// When generation or writing the files fails.
    pub fn generate() -> Self {
        let dir = std::env::temp_dir().join(format!("chat-memory-pki-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("pki dir: {e}"));

        let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("ca key: {e}"));
        let mut ca = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("ca params: {e}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "chat-memory test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_cert = ca
            .self_signed(&ca_key)
            .unwrap_or_else(|e| panic!("ca cert: {e}"));
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |names: Vec<String>, purpose: ExtendedKeyUsagePurpose, stem: &str| {
            let key = KeyPair::generate().unwrap_or_else(|e| panic!("{stem} key: {e}"));
            let mut params =
                CertificateParams::new(names).unwrap_or_else(|e| panic!("{stem} params: {e}"));
            params.distinguished_name.push(DnType::CommonName, stem);
            params.extended_key_usages = vec![purpose];
            let cert = params
                .signed_by(&key, &issuer)
                .unwrap_or_else(|e| panic!("{stem} cert: {e}"));
            write(&dir, &format!("{stem}.crt"), &cert.pem());
            write(&dir, &format!("{stem}.key"), &key.serialize_pem());
        };
        leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "server",
        );
        leaf(
            vec!["chat-memory-client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "client",
        );
        write(&dir, "ca.crt", &ca_cert.pem());
        Self { dir }
    }

    /// Path of one of the files (`ca.crt`, `server.crt`, `server.key`, `client.crt`, `client.key`).
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    /// A listener's TLS; with `mtls`, clients must present a certificate of the CA.
    pub fn server_tls(&self, mtls: bool) -> ServerTls {
        ServerTls {
            cert_path: self.path("server.crt"),
            key_path: self.path("server.key"),
            client_ca_path: if mtls {
                self.path("ca.crt")
            } else {
                String::new()
            },
        }
    }

    /// A client's TLS trusting the CA, presenting the client certificate.
    pub fn client_tls(&self) -> ClientTls {
        ClientTls {
            ca_path: self.path("ca.crt"),
            cert_path: self.path("client.crt"),
            key_path: self.path("client.key"),
            domain: "localhost".into(),
        }
    }

    /// A TLS channel to `addr` trusting the CA; with `client_cert`, presenting
    /// the client certificate.
    ///
    /// # Errors
    /// The transport error when the handshake or connection fails.
    pub async fn channel(
        &self,
        addr: std::net::SocketAddr,
        client_cert: bool,
    ) -> Result<Channel, tonic::transport::Error> {
        let read = |f: &str| std::fs::read(self.path(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.crt")))
            .domain_name("localhost");
        if client_cert {
            tls = tls.identity(Identity::from_pem(read("client.crt"), read("client.key")));
        }
        Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .connect_timeout(std::time::Duration::from_secs(2))
            .connect()
            .await
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// TLS on the gateway's listener only, from certificate files made outside
/// [`TestPki`]: what an outside client, such as the `chat-memory` binary, dials.
#[derive(Debug, Clone)]
pub struct GatewayTls {
    /// The gateway's certificate and key.
    pub server: ServerTls,
    /// The CA a client trusts, and the server name it checks.
    pub client: ClientTls,
}

/// The certificates `scripts/local-tls.sh` makes, which `scripts/run-local.sh`
/// serves with `CHAT_MEMORY_TLS=1`, in a temporary directory removed on drop:
/// tests of the README's TLS try-out use exactly these files.
pub struct LocalTls {
    dir: PathBuf,
}

impl LocalTls {
    /// The script, found from this crate's directory.
    const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/local-tls.sh");

    /// Runs `scripts/local-tls.sh` into a fresh directory.
    ///
    /// # Panics
    /// When the script (or the `openssl` it runs) fails.
    pub fn generate() -> Self {
        let dir =
            std::env::temp_dir().join(format!("chat-memory-local-tls-{}", crate::unique_suffix()));
        let out = std::process::Command::new(Self::SCRIPT)
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", Self::SCRIPT));
        assert!(
            out.status.success(),
            "{} failed: {}",
            Self::SCRIPT,
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    /// Path of one of the files (`ca.crt`, `gateway.crt`, `gateway.key`).
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    /// The gateway serving `gateway.crt`; clients trusting `ca.crt` for `localhost`.
    pub fn gateway_tls(&self) -> GatewayTls {
        GatewayTls {
            server: ServerTls {
                cert_path: self.path("gateway.crt"),
                key_path: self.path("gateway.key"),
                client_ca_path: String::new(),
            },
            client: ClientTls {
                ca_path: self.path("ca.crt"),
                domain: "localhost".into(),
                ..ClientTls::default()
            },
        }
    }
}

impl Drop for LocalTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS channel to `addr` with `tls`'s CA and server name, or `None` when the
/// connection or handshake fails (for waiting loops).
pub async fn try_tls_channel(addr: std::net::SocketAddr, tls: &ClientTls) -> Option<Channel> {
    Endpoint::from_shared(format!("https://{addr}"))
        .ok()?
        .tls_config(tls.client_config().ok()?)
        .ok()?
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await
        .ok()
}
