//! The phone's side of the ephemeral-identity handshake that follows an accepted
//! assertion: pure functions over the wire bytes, derived from the primitives and
//! waproto's messages (see the parent module for why not with the client's helpers).
//!
//! Errors are [`Broken`]: the request does not open, decode or match.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wacore_libsignal::protocol::{KeyPair, PublicKey};
use waproto::buffa::{Enumeration as _, Message as _};
use waproto::whatsapp as wa;

const HANDOFF_INFO: &[u8] = b"shortcake-passkey-handoff-v1";
const PAIRING_KEY_INFO: &[u8] = b"Pairing Information Encryption Key";
/// WhatsApp's Crockford base32: no 0, I, O or U.
const CODE_ALPHABET: &[u8; 32] = b"123456789ABCDEFGHJKLMNPQRSTVWXYZ";

/// Why a companion's handshake request is refused.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error("{0}")]
    Malformed(String),
    #[error("the pairing handoff proof does not verify")]
    HandoffProof,
    #[error("the companion nonce does not open the commitment")]
    Commitment,
    #[error("the pairing request does not decrypt under the shared key")]
    Decrypt,
}

fn malformed(why: impl Into<String>) -> Broken {
    Broken::Malformed(why.into())
}

/// The companion's `ProloguePayload`, opened.
pub struct Prologue {
    /// `CompanionEphemeralIdentity` as sent: the commitment covers these bytes.
    pub identity: Vec<u8>,
    pub commitment: [u8; 32],
    pub companion_public: [u8; 32],
    /// `DeviceProps.PlatformType` as a number, as the key derivation's salt names it.
    pub device_type: i32,
    pub pairing_ref: String,
}

/// Decodes `ProloguePayload{companion_ephemeral_identity, commitment{hash}}` and the
/// `CompanionEphemeralIdentity{public_key, device_type, ref}` inside.
pub fn open_prologue(bytes: &[u8]) -> Result<Prologue, Broken> {
    let payload = wa::ProloguePayload::decode_from_slice(bytes)
        .map_err(|e| malformed(format!("prologue_payload does not decode: {e}")))?;
    let identity = payload
        .companion_ephemeral_identity
        .ok_or_else(|| malformed("the prologue has no companion identity"))?;
    let commitment = payload
        .commitment
        .as_option()
        .and_then(|c| c.hash.as_deref())
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| malformed("the prologue's commitment is not 32 bytes"))?;
    let inner = wa::CompanionEphemeralIdentity::decode_from_slice(&identity)
        .map_err(|e| malformed(format!("the companion identity does not decode: {e}")))?;
    let companion_public = inner
        .public_key
        .as_deref()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| malformed("the companion's ephemeral key is not 32 bytes"))?;
    let device_type = inner
        .device_type
        .map(|t| t.to_i32())
        .ok_or_else(|| malformed("the companion identity has no device type"))?;
    let pairing_ref = inner
        .r#ref
        .ok_or_else(|| malformed("the companion identity has no ref"))?;
    Ok(Prologue {
        identity,
        commitment,
        companion_public,
        device_type,
        pairing_ref,
    })
}

fn hkdf(ikm: &[u8], salt: Option<&[u8]>, info: &[u8]) -> Result<[u8; 32], Broken> {
    let mut key = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(ikm, salt, info, &mut key)
        .map_err(|e| malformed(format!("HKDF: {e}")))?;
    Ok(key)
}

/// `proof == HMAC-SHA256(HKDF-SHA256(adv_secret, no salt, "shortcake-passkey-handoff-v1"),
/// prologue_payload)`: the companion held the ADV secret of the QR or pairing code the
/// phone took, so the user need not compare codes.
pub fn check_handoff_proof(
    adv_secret: &[u8; 32],
    prologue_payload: &[u8],
    proof: &[u8],
) -> Result<(), Broken> {
    let key = hkdf(adv_secret, None, HANDOFF_INFO)?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(prologue_payload);
    mac.verify_slice(proof).map_err(|_| Broken::HandoffProof)
}

/// The phone's `PrimaryEphemeralIdentity{public_key, nonce}`.
pub fn primary_identity(primary: &KeyPair, nonce: &[u8; 32]) -> Vec<u8> {
    wa::PrimaryEphemeralIdentity {
        public_key: Some(primary.public_key.public_key_bytes().to_vec()),
        nonce: Some(nonce.to_vec()),
    }
    .encode_to_vec()
}

/// The commitment is `SHA-256(companion identity bytes || companion nonce)`.
pub fn check_commitment(prologue: &Prologue, companion_nonce: &[u8]) -> Result<(), Broken> {
    let opened = Sha256::new()
        .chain_update(&prologue.identity)
        .chain_update(companion_nonce)
        .finalize();
    if opened[..] == prologue.commitment {
        Ok(())
    } else {
        Err(Broken::Commitment)
    }
}

/// The code both sides show, `XXXX-XXXX`: the first 5 bytes of
/// `primary_nonce XOR SHA-256(companion_nonce || primary_public)`, 5 bits a character.
pub fn verification_code(
    companion_nonce: &[u8],
    primary_public: &[u8],
    primary_nonce: &[u8; 32],
) -> String {
    let digest = Sha256::new()
        .chain_update(companion_nonce)
        .chain_update(primary_public)
        .finalize();
    let bits = (0..5).fold(0u64, |acc, i| {
        (acc << 8) | u64::from(primary_nonce[i] ^ digest[i])
    });
    let chars: String = (0..8)
        .rev()
        .map(|i| CODE_ALPHABET[((bits >> (i * 5)) & 0x1f) as usize] as char)
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// The pairing request's key: HKDF-SHA256 over X25519(phone, companion), salt
/// `"Companion Pairing {device_type} with ref {ref}"`, info
/// `"Pairing Information Encryption Key"`.
pub fn pairing_key(primary: &KeyPair, prologue: &Prologue) -> Result<[u8; 32], Broken> {
    let companion = PublicKey::from_djb_public_key_bytes(&prologue.companion_public)
        .map_err(|e| malformed(format!("the companion's ephemeral key: {e}")))?;
    let shared = primary
        .private_key
        .calculate_agreement(&companion)
        .map_err(|e| malformed(format!("X25519: {e}")))?;
    let salt = format!(
        "Companion Pairing {} with ref {}",
        prologue.device_type, prologue.pairing_ref
    );
    hkdf(&shared, Some(salt.as_bytes()), PAIRING_KEY_INFO)
}

/// What the companion's `PairingRequest` says.
pub struct PairingRequest {
    pub noise_public: Vec<u8>,
    pub identity_public: Vec<u8>,
    pub adv_secret: [u8; 32],
}

/// Opens `EncryptedPairingRequest{encrypted_payload, iv}`: AES-256-GCM, no associated data.
pub fn open_pairing_request(key: &[u8; 32], wrapped: &[u8]) -> Result<PairingRequest, Broken> {
    let sealed = wa::EncryptedPairingRequest::decode_from_slice(wrapped)
        .map_err(|e| malformed(format!("the pairing request does not decode: {e}")))?;
    let iv: [u8; 12] = sealed
        .iv
        .as_deref()
        .and_then(|iv| iv.try_into().ok())
        .ok_or_else(|| malformed("the pairing request's IV is not 12 bytes"))?;
    let ciphertext = sealed
        .encrypted_payload
        .ok_or_else(|| malformed("the pairing request has no payload"))?;
    let mut plain = Vec::with_capacity(ciphertext.len());
    wacore_libsignal::crypto::aes_256_gcm_decrypt(key, &iv, b"", &ciphertext, &mut plain)
        .map_err(|_| Broken::Decrypt)?;
    let inner = wa::PairingRequest::decode_from_slice(&plain)
        .map_err(|e| malformed(format!("the pairing request does not decode: {e}")))?;
    Ok(PairingRequest {
        noise_public: inner.companion_public_key.unwrap_or_default(),
        identity_public: inner.companion_identity_key.unwrap_or_default(),
        adv_secret: inner
            .adv_secret
            .as_deref()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| malformed("the new ADV secret is not 32 bytes"))?,
    })
}

/// The client library's own derivations serve as the other side here: what it makes,
/// ours must open.
#[cfg(test)]
mod tests {
    use super::*;
    use wa::device_props::PlatformType;
    use wacore::shortcake::ShortcakeUtils;

    fn companion_prologue(companion: &KeyPair, nonce: &[u8; 32]) -> Vec<u8> {
        let public: [u8; 32] = companion.public_key.public_key_bytes().try_into().unwrap();
        let identity =
            ShortcakeUtils::build_companion_ephemeral_identity(&public, PlatformType::CHROME, "R");
        let commitment = ShortcakeUtils::commitment_hash(&identity, nonce);
        ShortcakeUtils::build_prologue_payload(&identity, &commitment)
    }

    #[test]
    fn the_handshake_opens_what_the_client_makes() {
        let companion = KeyPair::generate(&mut rand::rng());
        let companion_nonce = [4u8; 32];
        let payload = companion_prologue(&companion, &companion_nonce);
        let prologue = open_prologue(&payload).unwrap();
        assert_eq!(
            (prologue.device_type, prologue.pairing_ref.as_str()),
            (1, "R")
        );
        check_commitment(&prologue, &companion_nonce).unwrap();
        assert!(matches!(
            check_commitment(&prologue, &[5; 32]),
            Err(Broken::Commitment)
        ));

        let key = ShortcakeUtils::derive_pairing_handoff_hmac_key(&[9; 32]).unwrap();
        let proof = ShortcakeUtils::compute_pairing_handoff_proof(&key, &payload);
        check_handoff_proof(&[9; 32], &payload, &proof).unwrap();
        assert!(check_handoff_proof(&[8; 32], &payload, &proof).is_err());

        let primary = KeyPair::generate(&mut rand::rng());
        let primary_nonce = [6u8; 32];
        let theirs = ShortcakeUtils::parse_primary_ephemeral_identity(&primary_identity(
            &primary,
            &primary_nonce,
        ))
        .unwrap();
        let bare = ShortcakeUtils::derive_verification_code(
            &companion_nonce,
            &theirs.public_key,
            &theirs.nonce,
        );
        assert_eq!(
            verification_code(
                &companion_nonce,
                primary.public_key.public_key_bytes(),
                &primary_nonce
            ),
            format!("{}-{}", &bare[..4], &bare[4..])
        );

        let their_key = ShortcakeUtils::derive_encryption_key(
            &companion,
            &theirs.public_key,
            PlatformType::CHROME,
            "R",
        )
        .unwrap();
        let our_key = pairing_key(&primary, &prologue).unwrap();
        assert_eq!(our_key, their_key);
        let plain = ShortcakeUtils::build_pairing_request(&[1; 32], &[2; 32], &[3; 32]);
        let sealed = ShortcakeUtils::encrypt_pairing_request(&plain, &their_key).unwrap();
        let wrapped = ShortcakeUtils::build_encrypted_pairing_request(&sealed);
        let request = open_pairing_request(&our_key, &wrapped).unwrap();
        assert_eq!(
            (
                request.noise_public,
                request.identity_public,
                request.adv_secret
            ),
            (vec![1; 32], vec![2; 32], [3; 32])
        );
        assert!(matches!(
            open_pairing_request(&[0; 32], &wrapped),
            Err(Broken::Decrypt)
        ));
    }
}
