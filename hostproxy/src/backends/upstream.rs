//! The daemon's HTTPS client to upstreams (SPEC.md 13): the host's roots plus a configured
//! private CA, connections pooled (HTTP/1.1 keep-alive, HTTP/2 where the upstream offers it by
//! ALPN), connect timeout 10 s. The TLS is rustls with ring on Linux (the static musl daemon
//! builds it with `cc`), the system's own elsewhere (`tls` below). Only the host side speaks
//! TLS; the container tools stay TLS-free.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The pooled HTTPS client.
type HttpsClient = Client<tls::Connector, Body>;

/// The real upstream: one pooled client per CA file, built at first use (the host's roots
/// take a moment to load).
#[derive(Default)]
pub struct HttpsUpstream {
    clients: std::sync::Mutex<std::collections::HashMap<Option<std::path::PathBuf>, HttpsClient>>,
}

impl std::fmt::Debug for HttpsUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpsUpstream")
    }
}

impl super::Upstream for HttpsUpstream {
    fn send<'a>(
        &'a self,
        req: http::Request<Body>,
        ca_file: Option<&'a Path>,
    ) -> futures_util::future::BoxFuture<'a, Result<http::Response<Body>, String>> {
        Box::pin(async move {
            let key = ca_file.map(Path::to_path_buf);
            let client = {
                let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
                match clients.get(&key) {
                    Some(c) => c.clone(),
                    None => {
                        let c = client(ca_file)?;
                        clients.insert(key, c.clone());
                        c
                    }
                }
            };
            match client.request(req).await {
                Ok(r) => Ok(r.map(Body::new)),
                Err(e) => {
                    use std::error::Error;
                    let mut msg = e.to_string();
                    let mut src = e.source();
                    while let Some(s) = src {
                        msg = format!("{msg}: {s}");
                        src = s.source();
                    }
                    Err(msg)
                }
            }
        })
    }
}

/// Builds the client: the host's trusted roots, plus the certificates of `ca_file` (PEM).
/// The client: TCP with a connect timeout, this platform's TLS over it, pooled.
fn client(ca_file: Option<&Path>) -> Result<HttpsClient, String> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    // An upstream that does not answer is an error within this, not a request left hanging.
    tcp.set_connect_timeout(Some(Duration::from_secs(10)));
    tcp.set_nodelay(true);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(tls::connector(tcp, ca_file)?))
}

/// Linux: rustls with ring, the host's roots (`rustls-native-certs`, which follows
/// `SSL_CERT_FILE`) and the CA file.
#[cfg(target_os = "linux")]
mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use hyper_util::client::legacy::connect::HttpConnector;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

    pub fn connector(tcp: HttpConnector, ca_file: Option<&Path>) -> Result<Connector, String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "the CA file {} holds no PEM certificate",
                    path.display()
                ));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("a certificate of {} is unusable: {e}", path.display()))?;
            }
        } else if added == 0 {
            return Err(
                "the host has no trusted root certificates (install ca-certificates), and no ca_file is set"
                    .into(),
            );
        }
        // ring, not aws-lc-rs: it builds for static musl with nothing but `cc` (no cmake, no
        // Go), where the release daemon is made. Its only lack is post-quantum key exchange,
        // hence the deprecation (README "Decisions").
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp))
    }
}

/// macOS and Windows: the system's TLS and trust store (Security.framework, SChannel), plus
/// the CA file; ALPN offers h2.
#[cfg(not(target_os = "linux"))]
mod tls {
    use std::path::Path;

    use hyper_util::client::legacy::connect::HttpConnector;

    pub type Connector = hyper_tls::HttpsConnector<HttpConnector>;

    pub fn connector(tcp: HttpConnector, ca_file: Option<&Path>) -> Result<Connector, String> {
        let mut b = native_tls::TlsConnector::builder();
        b.request_alpns(&["h2", "http/1.1"]);
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
            let certs = native_tls::Certificate::stack_from_pem(&pem)
                .map_err(|e| format!("the CA file {} is not PEM: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "the CA file {} holds no PEM certificate",
                    path.display()
                ));
            }
            for c in certs {
                b.add_root_certificate(c);
            }
        }
        let tls = b.build().map_err(|e| format!("tls: {e}"))?;
        let mut c =
            hyper_tls::HttpsConnector::from((tcp, tokio_native_tls::TlsConnector::from(tls)));
        c.https_only(true);
        Ok(c)
    }
}
