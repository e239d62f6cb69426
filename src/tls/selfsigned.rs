//! `roomgate tls selfsigned`: a development certificate authority and a server certificate it signed (rcgen),
//! so HTTPS and RTMPS work on a machine without a public name; trusting the CA makes browsers accept the
//! certificate (getUserMedia, and so WHIP publishing from the console, needs a secure context). Each run makes a
//! new CA (its key is not kept), so a new pair must be trusted again.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// A development CA and a server certificate for some host names, as PEM.
pub struct SelfSigned {
    /// The CA certificate (what clients trust).
    pub ca_pem: String,
    /// The server certificate followed by the CA's (the chain `tls.cert_file` takes).
    pub chain_pem: String,
    /// The server's private key (PKCS#8; `tls.key_file`).
    pub key_pem: String,
}

/// A CA named "roomgate development CA" and a server certificate for `hosts` (DNS names or IP addresses) signed
/// by it, valid for a year.
pub fn self_signed(hosts: &[String]) -> Result<SelfSigned, rcgen::Error> {
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let mut ca = CertificateParams::new(Vec::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "roomgate development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - day;
    ca.not_after = now + 365 * day;
    let ca_key = KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key)?;

    let mut server = CertificateParams::new(hosts.to_vec())?;
    server
        .distinguished_name
        .push(DnType::CommonName, hosts.first().cloned().unwrap_or_default());
    server.not_before = now - day;
    server.not_after = now + 365 * day;
    server.use_authority_key_identifier_extension = true;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &ca)?;
    Ok(SelfSigned {
        ca_pem: ca.pem(),
        chain_pem: format!("{}{}", cert.pem(), ca.pem()),
        key_pem: key.serialize_pem(),
    })
}
