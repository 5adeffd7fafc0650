//! What a failed TLS handshake means for an S3 or WebDAV repository: final
//! at once, in one line.
//!
//! opendal marks every error of sending a request temporary, so a server
//! whose certificate is not trusted, or an `https://` URL for a server
//! that speaks plain HTTP, was retried for 13-25 s and then reported as
//! "send http request: error sending request: client error (Connect):
//! invalid peer certificate: UnknownIssuer (Unexpected, gave up after 7
//! attempts)". Waiting changes neither: a certificate does not become
//! trusted, a server does not start speaking TLS. [`restate`], applied
//! under the retry layer (remote/restate.rs), makes such an error final
//! and says what happened first. A connection refused, reset or timed out
//! stays temporary, as before.

use opendal::{Error, ErrorKind};

/// rustls's words for a handshake that cannot succeed however often it is
/// tried, and what arc says of each (rustls 0.23, as reqwest's transport
/// shows them: "invalid peer certificate: UnknownIssuer", "received
/// corrupt message of type InvalidContentType" when the server answers
/// in plain HTTP, "received fatal alert: HandshakeFailure").
const FINAL: [(&str, &str); 4] = [
    ("invalid peer certificate", "the server's TLS certificate is not trusted"),
    ("received corrupt message", "the server does not speak TLS at this address"),
    ("received fatal alert", "the server refused the TLS handshake"),
    ("peer is incompatible", "the server's TLS is incompatible"),
];

/// `e` as arc reports it: a TLS handshake that cannot succeed, final and
/// in one line; any other error unchanged.
pub(super) fn restate(e: Error) -> Error {
    if !e.is_temporary() {
        return e;
    }
    let mut causes = Vec::new();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        causes.push(s.to_string());
        src = s.source();
    }
    match judge(&causes) {
        Some(line) => Error::new(ErrorKind::Unexpected, line),
        None => e,
    }
}

/// The one line for a failed handshake among `causes` (an error's chain
/// of sources, outermost first), or `None` when none is one.
fn judge(causes: &[String]) -> Option<String> {
    causes.iter().rev().find_map(|cause| {
        FINAL.iter().find(|(words, _)| cause.contains(words)).map(|(words, what)| {
            // rustls's own phrase and what follows it, without reqwest's
            // and hyper's wrappers around it.
            let from = cause.find(words).unwrap_or(0);
            format!("{what} ({})", &cause[from..])
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chains reqwest 0.13 with rustls 0.23 gave on loopback: an
    /// https:// URL for s3s-fs (plain HTTP), and openssl s_server with a
    /// certificate of a CA the system does not trust.
    #[test]
    fn failed_handshakes_are_final_in_one_line_and_other_errors_are_left() {
        let chain = |inner: &str| {
            vec!["error sending request".to_string(), "client error (Connect)".to_string(), inner.to_string()]
        };
        assert_eq!(
            judge(&chain("received corrupt message of type InvalidContentType")).as_deref(),
            Some("the server does not speak TLS at this address (received corrupt message of type InvalidContentType)")
        );
        assert_eq!(
            judge(&chain("invalid peer certificate: UnknownIssuer")).as_deref(),
            Some("the server's TLS certificate is not trusted (invalid peer certificate: UnknownIssuer)")
        );
        assert_eq!(judge(&chain("tcp connect error: Connection refused (os error 111)")), None);
        assert_eq!(judge(&chain("connection closed before message completed")), None);

        let untrusted = Error::new(ErrorKind::Unexpected, "send http request")
            .set_temporary()
            .set_source(std::io::Error::other("invalid peer certificate: UnknownIssuer"));
        let restated = restate(untrusted);
        assert!(!restated.is_temporary(), "a certificate that is not trusted is final");
        assert!(restated.message().starts_with("the server's TLS certificate is not trusted"), "{restated}");

        let refused = Error::new(ErrorKind::Unexpected, "send http request")
            .set_temporary()
            .set_source(std::io::Error::other("tcp connect error: Connection refused (os error 111)"));
        assert!(restate(refused).is_temporary(), "an error without a TLS cause stays temporary");
    }
}
