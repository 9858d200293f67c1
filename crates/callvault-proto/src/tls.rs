//! Transport security for every gRPC listener and channel of one process.
//!
//! A node with `[tls]` configured serves TLS only and reaches its peers over TLS only, checking
//! their certificates against the configured CA; a process without it speaks plaintext HTTP/2.
//! The choice is process-wide and made once, at start-up, before any channel is built
//! ([`install`]): every channel comes from [`endpoint`], so no code path can open a plaintext
//! channel because it forgot to ask.

use std::sync::OnceLock;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// This process's certificates: the CA that peers' certificates must chain to and, for a node,
/// the certificate and key it serves with.
#[derive(Clone, Debug)]
pub struct TransportSecurity {
    client: ClientTlsConfig,
    server: Option<ServerTlsConfig>,
}

/// Why transport security could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM does not hold what was asked for.
    #[error("{what}: {reason}")]
    Pem {
        /// Which file or role.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// [`install`] was called twice with different settings.
    #[error("transport security is already installed for this process")]
    AlreadyInstalled,
}

static INSTALLED: OnceLock<TransportSecurity> = OnceLock::new();

impl TransportSecurity {
    /// Client side only (a CLI): trust servers whose certificates chain to `ca_pem`, reached at
    /// the name of the address dialed, or at `server_name` when given (a port-forward dialing
    /// 127.0.0.1 of a certificate issued for the pod's DNS name).
    pub fn client(ca_pem: &[u8], server_name: Option<&str>) -> Result<Self, TlsError> {
        check_ca(ca_pem)?;
        let mut client = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        if let Some(name) = server_name {
            client = client.domain_name(name);
        }
        // tonic parses the PEM only when a channel is built: build one now, so a bad file is an
        // error at start-up rather than on the first call.
        Endpoint::from_static("https://127.0.0.1:1")
            .tls_config(client.clone())
            .map_err(|e| TlsError::Pem {
                what: "ca",
                reason: error_chain(&e),
            })?;
        Ok(TransportSecurity {
            client,
            server: None,
        })
    }

    /// A node: [`TransportSecurity::client`], and serving with `cert_pem` (its chain) and
    /// `key_pem`. The same certificate is the node's client certificate towards its peers: its
    /// subject names the node's roles (see [`crate::identity`]). Servers ask every client for a
    /// certificate from the CA but do not require one: public clients authenticate with tokens.
    pub fn node(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let mut security = Self::client(ca_pem, None)?;
        security.client = security
            .client
            .identity(Identity::from_pem(cert_pem, key_pem));
        let server = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert_pem, key_pem))
            .client_ca_root(Certificate::from_pem(ca_pem))
            .client_auth_optional(true);
        tonic::transport::Server::builder()
            .tls_config(server.clone())
            .map_err(|e| TlsError::Pem {
                what: "cert and key",
                reason: error_chain(&e),
            })?;
        security.server = Some(server);
        Ok(security)
    }
}

/// Makes `security` this process's transport security. Call once, before the first channel or
/// listener; calling it again with any settings is an error.
pub fn install(security: TransportSecurity) -> Result<(), TlsError> {
    INSTALLED
        .set(security)
        .map_err(|_| TlsError::AlreadyInstalled)
}

/// True when [`install`] was called: channels use TLS and listeners serve it.
pub fn is_installed() -> bool {
    INSTALLED.get().is_some()
}

/// The endpoint of the gRPC server at `addr` (`host:port`): `https://` with the installed
/// client settings, or `http://` when none were installed.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    match INSTALLED.get() {
        Some(security) => {
            Endpoint::from_shared(format!("https://{addr}"))?.tls_config(security.client.clone())
        }
        None => Endpoint::from_shared(format!("http://{addr}")),
    }
}

/// The server settings a listener of this process serves with, if it serves TLS.
pub fn server_config() -> Option<ServerTlsConfig> {
    INSTALLED.get().and_then(|s| s.server.clone())
}

/// Every certificate in `ca_pem` is one a trust anchor can be made of, and there is one.
/// tonic skips certificates it cannot parse, which would leave a node trusting nothing.
fn check_ca(ca_pem: &[u8]) -> Result<(), TlsError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bad = |reason: String| TlsError::Pem { what: "ca", reason };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| bad(format!("certificate {}: {e}", count + 1)))?;
        webpki::anchor_from_trusted_cert(&cert)
            .map_err(|e| bad(format!("certificate {}: {e}", count + 1)))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(())
}

/// `e` with its sources, which is where rustls says what is wrong with a certificate.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_certificate_is_refused_at_once() {
        let err = TransportSecurity::client(b"not a certificate", None).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn a_damaged_certificate_is_refused_at_once() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(TransportSecurity::client(pem, None).is_err());
    }
}
