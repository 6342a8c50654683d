//! Certificates made with rcgen (a CA, intermediates, leaves with chosen names and
//! dates) and a TLS-terminating proxy that presents them in front of a real
//! server's plaintext port, so a check sees exactly that certificate while the
//! rest of the conversation is real.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

/// Longest a proxied connection lives; most connections one proxy accepts.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
const MAX_CONNECTIONS: usize = 200;

// ------------------------------------------------------------ certificates

/// A CA (root or intermediate) that signs leaves.
pub struct TestCa {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub pem: String,
    pub der: CertificateDer<'static>,
}

/// A root CA for these tests.
pub fn test_ca() -> TestCa {
    ca_named("mailprobe inspection test CA", None)
}

/// A CA called `name`, self-signed (a root) or signed by `parent` (an intermediate).
pub fn ca_named(name: &str, parent: Option<&TestCa>) -> TestCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(60);
    params.not_after = now + time::Duration::days(365);
    let cert = match parent {
        None => params.self_signed(&key).unwrap(),
        Some(p) => params
            .signed_by(&key, &Issuer::from_params(&p.params, &p.key))
            .unwrap(),
    };
    TestCa {
        params,
        key,
        pem: cert.pem(),
        der: cert.der().clone(),
    }
}

/// A self-signed server certificate marked `CA:TRUE`, the way `openssl req
/// -x509` makes one: the certificate and its PEM.
pub fn self_signed_ca_true(
    names: &[&str],
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    let cert = params.self_signed(&key).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        cert.pem(),
    )
}

/// A server certificate for `names`, valid from `from_days` to `to_days` from now.
pub fn leaf(
    ca: &TestCa,
    names: &[&str],
    from_days: i64,
    to_days: i64,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    // Plus an hour, so "3 days" is not 2 by the time the probe looks.
    params.not_after = now + time::Duration::days(to_days) + time::Duration::hours(1);
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

// ------------------------------------------------------------ the TLS proxy

/// Terminates TLS with a given certificate on 127.0.0.1 and forwards plaintext to
/// `upstream`. Owns its runtime; dropping it stops everything.
pub struct TlsProxy {
    pub port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsProxy {
    pub fn start(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        upstream: SocketAddr,
    ) -> TlsProxy {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((tcp, _)) = listener.accept().await else {
                    break;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CONNECTION_LIFETIME, async move {
                        // A client that rejects the certificate ends here.
                        let mut tls = acceptor.accept(tcp).await.ok()?;
                        let mut plain = TcpStream::connect(upstream).await.ok()?;
                        tokio::io::copy_bidirectional(&mut tls, &mut plain)
                            .await
                            .ok()
                    })
                    .await;
                });
            }
        });
        TlsProxy {
            port,
            runtime: Some(runtime),
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
