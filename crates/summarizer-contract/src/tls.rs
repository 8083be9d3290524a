//! TLS for `https://` endpoints reached with reqwest (the agent's `openai`
//! backend, the worker's agent client), behind the `https` feature (on by
//! default). With it,
//! reqwest has rustls but no default crypto provider (the default would be
//! aws-lc, a slow C build), and building a client before a provider is
//! installed panics, even for plain HTTP. Everything here that builds a
//! client calls [`install_ring_provider`] first; without the feature it does
//! nothing.

/// Whether this build can reach `https://` endpoints.
pub const HTTPS: bool = cfg!(feature = "https");

/// Installs ring as the process-wide rustls provider, once. Harmless when
/// another part of the process installed one first, and a no-op in builds
/// without the `https` feature.
pub fn install_ring_provider() {
    #[cfg(feature = "https")]
    {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            // Err means a provider is already installed: exactly what we need.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
    }
}
