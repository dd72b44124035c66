//! rustls errors told as sentences an operator can act on, from the side
//! that saw them: the dialling side (a node calling a peer, `raftlb ctl`)
//! or the answering side (a node's Raft and admin port).

use rustls::{AlertDescription, CertificateError, Error};

/// What is wrong with a certificate that did not verify.
pub fn certificate_error(error: &Error) -> String {
    let Error::InvalidCertificate(problem) = error else {
        return error.to_string();
    };
    match problem {
        CertificateError::UnknownIssuer => {
            "it is not signed by a CA of the cluster's CA bundle (a certificate of another cluster's CA?)"
                .to_string()
        }
        CertificateError::Expired => "it has expired".to_string(),
        CertificateError::ExpiredContext { not_after, .. } => format!(
            "it expired on {}; renew it (raftlb certs node|client)",
            super::material::utc(i64::try_from(not_after.as_secs()).unwrap_or(i64::MAX))
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet (its start date is in the future: check the clocks)".to_string()
        }
        CertificateError::BadSignature => "its signature does not verify against the CA bundle's CA of that \
                                           name (signed by another CA made for the same cluster?)"
            .to_string(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "it is not made for this use (a person's client certificate where a node's is needed?)"
                .to_string()
        }
        CertificateError::BadEncoding => "it is not a well-formed X.509 certificate".to_string(),
        CertificateError::Other(other) => other.0.to_string(),
        other => format!("it is refused ({other:?})"),
    }
}

/// Why the other side (`who`, with `whose`) ended a handshake with
/// `alert`: what it found wrong with `ours`.
fn alert_received(alert: &AlertDescription, who: &str, whose: &str, ours: &str) -> String {
    match alert {
        AlertDescription::UnknownCA | AlertDescription::BadCertificate => format!(
            "{who} does not trust {ours}: it is not signed by a CA in {whose} CA bundle (another cluster's CA?)"
        ),
        AlertDescription::DecryptError => format!(
            "{who} refused {ours}: its signature does not verify against {whose} CA bundle \
             (signed by another CA made for the same cluster?)"
        ),
        AlertDescription::CertificateExpired => {
            format!("{who} refused {ours}: it has expired; renew it (raftlb certs node|client)")
        }
        AlertDescription::CertificateRequired => format!(
            "{who} requires a client certificate: give --cert and --key (make one with `raftlb certs client`)"
        ),
        AlertDescription::UnsupportedCertificate => {
            format!("{who} refused {ours}: it is not made for this use")
        }
        other => format!("{who} ended the TLS handshake ({other:?})"),
    }
}

/// Why a handshake this side started with a node failed.
pub fn dialling(error: &Error) -> String {
    match error {
        Error::InvalidCertificate(_) => format!("the node's certificate: {}", certificate_error(error)),
        Error::AlertReceived(alert) => alert_received(alert, "the node", "the node's", "our certificate"),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            "the node does not speak TLS here (a cluster with insecure_cleartext = true? then leave out --ca, --cert and --key)"
                .to_string()
        }
        other => format!("TLS: {other}"),
    }
}

/// Why a handshake a client started with this node failed.
pub fn answering(error: &Error) -> String {
    match error {
        Error::InvalidCertificate(_) => format!("its certificate: {}", certificate_error(error)),
        Error::NoCertificatesPresented => "it sent no client certificate".to_string(),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            "it does not speak TLS (a cleartext client, or a node with insecure_cleartext = true?)"
                .to_string()
        }
        Error::AlertReceived(alert) => alert_received(alert, "it", "its", "this node's certificate"),
        other => format!("TLS: {other}"),
    }
}

/// The rustls error inside an I/O error from tokio-rustls, if there is one.
pub fn tls_error(error: &std::io::Error) -> Option<&Error> {
    error.get_ref().and_then(|inner| inner.downcast_ref::<Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_own_sentence() {
        let sentences = [
            dialling(&Error::InvalidCertificate(CertificateError::UnknownIssuer)),
            dialling(&Error::AlertReceived(AlertDescription::UnknownCA)),
            dialling(&Error::AlertReceived(AlertDescription::CertificateExpired)),
            dialling(&Error::AlertReceived(AlertDescription::CertificateRequired)),
            dialling(&Error::AlertReceived(AlertDescription::DecryptError)),
            dialling(&Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)),
            answering(&Error::NoCertificatesPresented),
            answering(&Error::InvalidCertificate(CertificateError::Expired)),
            answering(&Error::AlertReceived(AlertDescription::UnknownCA)),
        ];
        let distinct: std::collections::HashSet<&String> = sentences.iter().collect();
        assert_eq!(distinct.len(), sentences.len(), "{sentences:#?}");
        assert!(sentences[0].contains("another cluster's CA"), "{}", sentences[0]);
        assert_eq!(
            sentences[1],
            "the node does not trust our certificate: it is not signed by a CA in the node's CA bundle (another cluster's CA?)"
        );
        assert!(sentences[3].contains("--cert"), "{}", sentences[3]);
        assert!(
            sentences[8].starts_with("it does not trust this node's certificate"),
            "{}",
            sentences[8]
        );
    }
}
