//! Proof, at startup, that this build verifies WhatsApp's certificate chain.
//!
//! whatsapp-rust can be built with `danger-skip-cert-chain-verify` (the simulator needs it)
//! and Cargo unifies features across a build, so a binary can end up with it without anyone
//! asking. We run the very verification the client runs on a chain built here with zero
//! signatures: a production build must reject it.

use whatsapp_rust::buffa::{Message as _, MessageField};
use whatsapp_rust::waproto::whatsapp as wa;

/// `Ok(true)`: unsigned chains are rejected (safe). `Ok(false)`: they are accepted (only
/// acceptable in a sandbox build).
pub fn unsigned_chain_rejected() -> bool {
    let leaf_key = [7u8; 32];
    let details = |serial: u32, issuer: u32, key: Vec<u8>| {
        wa::cert_chain::noise_certificate::Details {
            serial: Some(serial),
            issuer_serial: Some(issuer),
            key: Some(key),
            not_before: Some(0),
            not_after: Some(u64::MAX / 2),
        }
        .encode_to_vec()
    };
    let chain = wa::CertChain {
        intermediate: MessageField::some(wa::cert_chain::NoiseCertificate {
            details: Some(details(1, 0, vec![9u8; 32])),
            signature: Some(vec![0u8; 64]),
        }),
        leaf: MessageField::some(wa::cert_chain::NoiseCertificate {
            details: Some(details(2, 1, leaf_key.to_vec())),
            signature: Some(vec![0u8; 64]),
        }),
    }
    .encode_to_vec();
    wacore_noise::HandshakeUtils::verify_server_cert(&chain, &leaf_key).is_err()
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_build() {
        // Tests run with the `sandbox` feature or without; the check must agree with it.
        assert_eq!(super::unsigned_chain_rejected(), !cfg!(feature = "sandbox"));
    }
}
