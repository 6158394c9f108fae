//! Throw-away credentials for one local cluster: a CA, the apiserver's serving certificate, the
//! service-account signing key, and bearer tokens for each identity.

use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

pub struct Pki {
    pub ca_cert_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub service_account_key_pem: String,
    pub service_account_public_pem: String,
    /// The apiserver's client certificate towards kubelets (logs, exec), in `system:masters`.
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
}

/// Names the serving certificate must cover: clients on this machine dial 127.0.0.1 (or the real node's
/// IP, where a real node runs), and in-cluster clients use the `kubernetes` Service (first IP of
/// 10.0.0.0/24).
const SERVING_NAMES: [&str; 7] = [
    "127.0.0.1",
    crate::real_node::NODE_IP,
    "localhost",
    "10.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
];

impl Pki {
    pub fn generate() -> Result<Self> {
        let pki = |what: &'static str| move |source: rcgen::Error| Error::Pki { what, source };

        let ca_key = rcgen::KeyPair::generate().map_err(pki("CA key"))?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(pki("CA params"))?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "outlayer-e2e-ca");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)
            .map_err(pki("CA certificate"))?;

        let serving_key = rcgen::KeyPair::generate().map_err(pki("serving key"))?;
        let mut serving_params = rcgen::CertificateParams::new(
            SERVING_NAMES
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )
        .map_err(pki("serving params"))?;
        serving_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        serving_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving_params
            .signed_by(&serving_key, &ca)
            .map_err(pki("serving certificate"))?;

        // ES256 service-account tokens: kube-apiserver accepts PKCS#8 EC keys for signing.
        let sa_key = rcgen::KeyPair::generate().map_err(pki("service-account key"))?;

        let client_key = rcgen::KeyPair::generate().map_err(pki("kubelet client key"))?;
        let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(pki("kubelet client params"))?;
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        client_params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params
            .signed_by(&client_key, &ca)
            .map_err(pki("kubelet client certificate"))?;

        Ok(Pki {
            kubelet_client_cert_pem: client_cert.pem(),
            kubelet_client_key_pem: client_key.serialize_pem(),
            ca_cert_pem: ca.pem(),
            serving_cert_pem: serving_cert.pem(),
            serving_key_pem: serving_key.serialize_pem(),
            service_account_key_pem: sa_key.serialize_pem(),
            service_account_public_pem: sa_key.public_key_pem(),
        })
    }
}

/// A random bearer token (256 bits, hex).
pub fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Random)?;
    Ok(hex::encode(bytes))
}
