//! HTTPS without a proxy: the certificate and key of `[server] tls_cert`
//! and `tls_key`, read at start and again on each SIGHUP. tiny_http asks
//! `Certificates` for the certificate at every handshake (codex patch 17),
//! so a reload serves new connections the new certificate while open ones
//! keep the session they have.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::ServerConfig;
use crate::error::TlsError;

/// Mode bits that must not be set on the key file: any access by others.
/// Group read is allowed, for a key owned `root:codex` with mode 0640.
const OTHERS: u32 = 0o007;

/// The certificate in force and where it is read from.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads the pair `server` names; `None` when TLS is not configured
    /// (the configuration guarantees both keys or neither).
    pub fn from_config(server: &ServerConfig) -> Result<Option<Arc<Certificates>>, TlsError> {
        let (Some(cert), Some(key)) = (&server.tls_cert, &server.tls_key) else {
            return Ok(None);
        };
        let current = RwLock::new(Arc::new(load(cert, key)?));
        Ok(Some(Arc::new(Certificates {
            cert: cert.clone(),
            key: key.clone(),
            current,
        })))
    }

    /// Reads the files again; the certificate in force is kept unless the
    /// new pair is whole and valid. Installing it is `install`, so that a
    /// reload refused for another reason installs nothing.
    pub fn reread(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        load(&self.cert, &self.key).map(Arc::new)
    }

    /// Serves `key` to every handshake from now on.
    pub fn install(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = key;
    }

    /// The certificate file, as the configuration names it.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The rustls configuration tiny_http serves with: HTTP/1.1 only, the
    /// certificate asked of `certificates` at each handshake.
    pub fn server_config(certificates: Arc<Certificates>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(certificates);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key: the key file must not
/// be open to others, and must be the certificate's key.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    check_key_mode(key)?;
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError::Certificate {
            path: cert.to_path_buf(),
            reason: error.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert.to_path_buf(),
            reason: "no CERTIFICATE block in the file".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|error| TlsError::Key {
        path: key.to_path_buf(),
        reason: error.to_string(),
    })?;
    let certified = CertifiedKey::from_der(chain, private, &provider()).map_err(|error| {
        TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: error.to_string(),
        }
    })?;
    Ok(certified)
}

/// Refuses a key file that others may read (or write).
fn check_key_mode(key: &Path) -> Result<(), TlsError> {
    let metadata = std::fs::metadata(key).map_err(|error| TlsError::Key {
        path: key.to_path_buf(),
        reason: error.to_string(),
    })?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & OTHERS != 0 {
        return Err(TlsError::KeyMode {
            path: key.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_open_to_others_is_refused_and_group_read_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "not read").unwrap();
        for (mode, refused) in [(0o600, false), (0o640, false), (0o644, true), (0o602, true)] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let result = check_key_mode(&key);
            assert_eq!(result.is_err(), refused, "mode {mode:o}");
            if let Err(error) = result {
                let text = error.to_string();
                assert!(
                    text.contains("chmod 600") && text.contains("key.pem"),
                    "{text}"
                );
            }
        }
    }
}
