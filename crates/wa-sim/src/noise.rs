//! The server side of WhatsApp's Noise handshake (XX, IK and XXfallback) and
//! the encrypted frame layer that follows it.
//!
//! Built on `wacore-noise`'s symmetric state; only the responder's steps live
//! here. Errors are [`NoiseServerError`]; any of them ends that one connection.

use wacore_binary::consts::{NOISE_PATTERN_IK, NOISE_PATTERN_XX, NOISE_PATTERN_XXFALLBACK};
use wacore_libsignal::protocol::{KeyPair, PrivateKey};
use wacore_noise::{NoiseCipher, NoiseHandshake};
use waproto::buffa::Message as _;
use waproto::whatsapp::{self as wa, cert_chain::noise_certificate};

/// Why a handshake or frame was rejected.
#[derive(Debug, thiserror::Error)]
pub enum NoiseServerError {
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    #[error("protobuf decode: {0}")]
    Decode(#[from] waproto::buffa::DecodeError),
    #[error("noise: {0}")]
    Noise(#[from] wacore_noise::HandshakeError),
    #[error("frame cipher: {0}")]
    Cipher(#[from] wacore_noise::NoiseError),
}

type Result<T> = std::result::Result<T, NoiseServerError>;

/// The server's long-term Noise identity and the certificate chain naming it.
pub struct ServerIdentity {
    pub static_kp: KeyPair,
    pub cert_chain: Vec<u8>,
    /// The root the chain's intermediate is signed with: the simulator's stand-in for
    /// WhatsApp's `WhatsAppLongTerm1` key, which clients pin. A client that is told this
    /// public key (instead of WhatsApp's) checks the whole chain as it would WhatsApp's.
    pub root_public: [u8; 32],
}

impl ServerIdentity {
    /// Rebuilds the identity from the stored private keys (the static key and the root);
    /// the chain is made fresh each start so its validity window always covers "now".
    pub fn from_private(private: &[u8; 32], root_private: &[u8; 32]) -> anyhow::Result<Self> {
        let static_kp = key_pair(private)?;
        let root = key_pair(root_private)?;
        let cert_chain = build_cert_chain(&static_kp, &root)?;
        Ok(Self {
            static_kp,
            cert_chain,
            root_public: public_bytes(&root),
        })
    }

    pub fn generate_private() -> [u8; 32] {
        let kp = KeyPair::generate(&mut rand::rng());
        *kp.private_key.serialize()
    }

    pub fn static_pub(&self) -> [u8; 32] {
        public_bytes(&self.static_kp)
    }
}

fn key_pair(private: &[u8; 32]) -> anyhow::Result<KeyPair> {
    let private = PrivateKey::deserialize(private)?;
    let public = private.public_key()?;
    Ok(KeyPair::new(public, private))
}

fn public_bytes(kp: &KeyPair) -> [u8; 32] {
    kp.public_key
        .public_key_bytes()
        .try_into()
        .expect("X25519 public keys are 32 bytes")
}

/// The chain WhatsApp sends in its server hello: an intermediate (serial 1, issued by
/// serial 0, the root) signed by `root`, and a leaf for the server static key signed by
/// the intermediate, both with XEdDSA as WhatsApp signs them.
fn build_cert_chain(static_kp: &KeyPair, root: &KeyPair) -> anyhow::Result<Vec<u8>> {
    let mut rng = rand::rng();
    let intermediate_kp = KeyPair::generate(&mut rng);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let not_before = now.saturating_sub(86_400);
    // Long validity keeps clients on IK for resumed logins; the chain is
    // rebuilt at every start anyway.
    let not_after = now + 10 * 365 * 86_400;
    let intermediate_details = noise_certificate::Details {
        serial: Some(1),
        issuer_serial: Some(0),
        key: Some(intermediate_kp.public_key.public_key_bytes().to_vec()),
        not_before: Some(not_before),
        not_after: Some(not_after),
    }
    .encode_to_vec();
    let leaf_details = noise_certificate::Details {
        serial: Some(2),
        issuer_serial: Some(1),
        key: Some(static_kp.public_key.public_key_bytes().to_vec()),
        not_before: Some(not_before),
        not_after: Some(not_after),
    }
    .encode_to_vec();
    let leaf_signature = intermediate_kp
        .private_key
        .calculate_signature(&leaf_details, &mut rng)?;
    let intermediate_signature = root
        .private_key
        .calculate_signature(&intermediate_details, &mut rng)?;
    let chain = wa::CertChain {
        leaf: waproto::buffa::MessageField::some(wa::cert_chain::NoiseCertificate {
            details: Some(leaf_details),
            signature: Some(leaf_signature.to_vec()),
        }),
        intermediate: waproto::buffa::MessageField::some(wa::cert_chain::NoiseCertificate {
            details: Some(intermediate_details),
            signature: Some(intermediate_signature.to_vec()),
        }),
    };
    Ok(chain.encode_to_vec())
}

/// State between the server hello and the client finish (XX and XXfallback).
pub struct PendingXx {
    noise: NoiseHandshake,
    ephemeral: KeyPair,
}

/// A completed handshake: the client's static key, its payload and the
/// transport ciphers.
pub struct Established {
    pub client_static: [u8; 32],
    pub payload: Vec<u8>,
    pub write: NoiseCipher,
    pub read: NoiseCipher,
}

/// What the server does after reading the client hello.
pub enum HelloOutcome {
    /// Send `reply`, then wait for the client finish.
    Continue { reply: Vec<u8>, pending: PendingXx },
    /// IK accepted: send `reply`; the connection is established.
    Done {
        reply: Vec<u8>,
        established: Established,
    },
}

fn to_32(bytes: &[u8], what: &'static str) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| NoiseServerError::Malformed(what))
}

/// Answers a client hello. An IK hello whose static we cannot decrypt (the
/// client cached another server key) is answered with XXfallback.
pub fn respond_to_hello(
    id: &ServerIdentity,
    prologue: &[u8],
    hello_bytes: &[u8],
) -> Result<HelloOutcome> {
    let msg = wa::HandshakeMessage::decode_from_slice(hello_bytes)?;
    let hello = msg
        .client_hello
        .into_option()
        .ok_or(NoiseServerError::Malformed("no client hello"))?;
    let client_eph = to_32(
        hello
            .ephemeral
            .as_deref()
            .ok_or(NoiseServerError::Malformed("no ephemeral"))?,
        "ephemeral length",
    )?;
    if let (Some(enc_static), Some(enc_payload)) = (hello.r#static.as_ref(), hello.payload.as_ref())
    {
        if let Some(outcome) = try_ik(id, prologue, &client_eph, enc_static, enc_payload)? {
            return Ok(outcome);
        }
        return serve_xx(id, prologue, &client_eph, NOISE_PATTERN_XXFALLBACK);
    }
    serve_xx(id, prologue, &client_eph, NOISE_PATTERN_XX)
}

fn try_ik(
    id: &ServerIdentity,
    prologue: &[u8],
    client_eph: &[u8; 32],
    enc_static: &[u8],
    enc_payload: &[u8],
) -> Result<Option<HelloOutcome>> {
    let server_priv = id.static_kp.private_key.serialize();
    let mut noise = NoiseHandshake::new(NOISE_PATTERN_IK, prologue)?;
    noise.authenticate(&id.static_pub());
    noise.authenticate(client_eph);
    noise.mix_shared_secret(server_priv, client_eph)?;
    let Ok(client_static) = noise.decrypt(enc_static) else {
        // Wrong cached server key on the client side: fall back to XX.
        return Ok(None);
    };
    let client_static = to_32(&client_static, "client static length")?;
    noise.mix_shared_secret(server_priv, &client_static)?;
    let Ok(payload) = noise.decrypt(enc_payload) else {
        return Ok(None);
    };
    let eph = KeyPair::generate(&mut rand::rng());
    let eph_pub = eph.public_key.public_key_bytes().to_vec();
    noise.authenticate(&eph_pub);
    noise.mix_shared_secret(eph.private_key.serialize(), client_eph)?;
    noise.mix_shared_secret(eph.private_key.serialize(), &client_static)?;
    let enc_cert = noise.encrypt(&id.cert_chain)?;
    let reply = wa::HandshakeMessage {
        server_hello: waproto::buffa::MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(eph_pub),
            r#static: None,
            payload: Some(enc_cert),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    // The initiator's first key is its write key, so ours are swapped.
    let (client_write, client_read) = noise.finish()?;
    Ok(Some(HelloOutcome::Done {
        reply,
        established: Established {
            client_static,
            payload,
            write: client_read,
            read: client_write,
        },
    }))
}

fn serve_xx(
    id: &ServerIdentity,
    prologue: &[u8],
    client_eph: &[u8; 32],
    pattern: &str,
) -> Result<HelloOutcome> {
    let mut noise = NoiseHandshake::new(pattern, prologue)?;
    noise.authenticate(client_eph);
    let eph = KeyPair::generate(&mut rand::rng());
    let eph_pub = eph.public_key.public_key_bytes().to_vec();
    noise.authenticate(&eph_pub);
    noise.mix_shared_secret(eph.private_key.serialize(), client_eph)?;
    let enc_static = noise.encrypt(&id.static_pub())?;
    noise.mix_shared_secret(id.static_kp.private_key.serialize(), client_eph)?;
    let enc_cert = noise.encrypt(&id.cert_chain)?;
    let reply = wa::HandshakeMessage {
        server_hello: waproto::buffa::MessageField::some(wa::handshake_message::ServerHello {
            ephemeral: Some(eph_pub),
            r#static: Some(enc_static),
            payload: Some(enc_cert),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    Ok(HelloOutcome::Continue {
        reply,
        pending: PendingXx {
            noise,
            ephemeral: eph,
        },
    })
}

/// Reads the client finish of an XX (or XXfallback) handshake.
pub fn finish_xx(pending: PendingXx, finish_bytes: &[u8]) -> Result<Established> {
    let PendingXx {
        mut noise,
        ephemeral,
    } = pending;
    let msg = wa::HandshakeMessage::decode_from_slice(finish_bytes)?;
    let finish = msg
        .client_finish
        .into_option()
        .ok_or(NoiseServerError::Malformed("no client finish"))?;
    let enc_static = finish
        .r#static
        .ok_or(NoiseServerError::Malformed("no client static"))?;
    let enc_payload = finish
        .payload
        .ok_or(NoiseServerError::Malformed("no client payload"))?;
    let client_static = to_32(&noise.decrypt(&enc_static)?, "client static length")?;
    noise.mix_shared_secret(ephemeral.private_key.serialize(), &client_static)?;
    let payload = noise.decrypt(&enc_payload)?;
    let (client_write, client_read) = noise.finish()?;
    Ok(Established {
        client_static,
        payload,
        write: client_read,
        read: client_write,
    })
}

/// Transport encryption after the handshake: one counter per direction.
pub struct FrameCipher {
    write: NoiseCipher,
    read: NoiseCipher,
    write_counter: u32,
    read_counter: u32,
}

impl FrameCipher {
    pub fn new(write: NoiseCipher, read: NoiseCipher) -> Self {
        Self {
            write,
            read,
            write_counter: 0,
            read_counter: 0,
        }
    }

    /// Encrypts one plaintext and returns it framed (3-byte length prefix).
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let ct = self
            .write
            .encrypt_with_counter(self.write_counter, plaintext)?;
        self.write_counter = self.write_counter.wrapping_add(1);
        Ok(frame(&ct))
    }

    pub fn open(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = ciphertext.to_vec();
        self.read
            .decrypt_in_place_with_counter(self.read_counter, &mut buf)?;
        self.read_counter = self.read_counter.wrapping_add(1);
        Ok(buf)
    }
}

/// Prefixes a payload with its 3-byte big-endian length.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(3 + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
    out.extend_from_slice(payload);
    out
}

/// Splits a byte stream into 3-byte-length-prefixed frames.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

/// Frames larger than this are a protocol violation.
const MAX_FRAME: usize = 1 << 24;

impl FrameReader {
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        if self.buf.len() < 3 {
            return Ok(None);
        }
        let len = (usize::from(self.buf[0]) << 16)
            | (usize::from(self.buf[1]) << 8)
            | usize::from(self.buf[2]);
        if len >= MAX_FRAME {
            return Err(NoiseServerError::Malformed("frame too large"));
        }
        if self.buf.len() < 3 + len {
            return Ok(None);
        }
        let frame = self.buf[3..3 + len].to_vec();
        self.buf.drain(..3 + len);
        if self.buf.is_empty() && self.buf.capacity() > 16 << 10 {
            // Idle connections should not keep a large stanza's buffer.
            self.buf = Vec::new();
        }
        Ok(Some(frame))
    }

    /// Strips the connection header (optional edge-routing pre-intro, then
    /// `WA` + magic + dictionary version) from the first bytes of a
    /// connection. Returns the 4-byte prologue, `Ok(None)` if incomplete.
    pub fn take_header(&mut self) -> Result<Option<[u8; 4]>> {
        let mut start = 0;
        if self.buf.starts_with(b"ED\x00\x01") {
            if self.buf.len() < 7 {
                return Ok(None);
            }
            let len = (usize::from(self.buf[4]) << 16)
                | (usize::from(self.buf[5]) << 8)
                | usize::from(self.buf[6]);
            start = 7 + len;
        } else if self.buf.len() >= 2 && !self.buf.starts_with(b"WA") {
            return Err(NoiseServerError::Malformed("bad connection header"));
        }
        if self.buf.len() < start + 4 {
            return Ok(None);
        }
        let header: [u8; 4] = self.buf[start..start + 4]
            .try_into()
            .expect("slice of length 4");
        if &header[..2] != b"WA" || header != wacore_binary::consts::WA_CONN_HEADER {
            return Err(NoiseServerError::Malformed("bad connection header"));
        }
        self.buf.drain(..start + 4);
        Ok(Some(header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wacore_binary::consts::WA_CONN_HEADER;
    use wacore_noise::{IkHandshakeState, IkServerHelloOutcome, XxHandshakeState};

    fn server() -> ServerIdentity {
        ServerIdentity::from_private(
            &ServerIdentity::generate_private(),
            &ServerIdentity::generate_private(),
        )
        .unwrap()
    }

    fn roundtrip(est: &mut Established, client_write: &NoiseCipher, client_read: &NoiseCipher) {
        let ct = client_write.encrypt_with_counter(0, b"to server").unwrap();
        let mut buf = ct;
        est.read.decrypt_in_place_with_counter(0, &mut buf).unwrap();
        assert_eq!(buf, b"to server");
        let mut back = est.write.encrypt_with_counter(0, b"to client").unwrap();
        client_read
            .decrypt_in_place_with_counter(0, &mut back)
            .unwrap();
        assert_eq!(back, b"to client");
    }

    /// What a client that pins the root (as Baileys pins `WhatsAppLongTerm1`) checks: the
    /// intermediate is issued by serial 0 and signed by the root, the leaf names the static
    /// key and is signed by the intermediate.
    #[test]
    fn the_chain_verifies_against_the_root() {
        use wacore_libsignal::protocol::PublicKey;
        let id = server();
        let chain = wa::CertChain::decode_from_slice(&id.cert_chain).unwrap();
        let inter = chain.intermediate.into_option().unwrap();
        let leaf = chain.leaf.into_option().unwrap();
        let inter_details = inter.details.unwrap();
        let root = PublicKey::from_djb_public_key_bytes(&id.root_public).unwrap();
        assert!(root.verify_signature(&inter_details, inter.signature.as_ref().unwrap()));
        let details = noise_certificate::Details::decode_from_slice(&inter_details).unwrap();
        assert_eq!(details.issuer_serial, Some(0));
        let inter_key = PublicKey::from_djb_public_key_bytes(&details.key.unwrap()).unwrap();
        let leaf_details = leaf.details.unwrap();
        assert!(inter_key.verify_signature(&leaf_details, leaf.signature.as_ref().unwrap()));
        let leaf_key = noise_certificate::Details::decode_from_slice(&leaf_details)
            .unwrap()
            .key
            .unwrap();
        assert_eq!(leaf_key, id.static_pub());
        // Another root does not verify it.
        let other = server();
        let wrong = PublicKey::from_djb_public_key_bytes(&other.root_public).unwrap();
        assert!(!wrong.verify_signature(&inter_details, inter.signature.as_ref().unwrap()));
    }

    #[test]
    fn xx_handshake_with_the_client_state_machine() {
        let id = server();
        let client_static = KeyPair::generate(&mut rand::rng());
        let mut client =
            XxHandshakeState::new(client_static.clone(), b"payload".to_vec(), &WA_CONN_HEADER)
                .unwrap();
        let hello = client.build_client_hello().unwrap();
        let HelloOutcome::Continue { reply, pending } =
            respond_to_hello(&id, &WA_CONN_HEADER, &hello).unwrap()
        else {
            panic!("XX must wait for the client finish");
        };
        let finish = client
            .read_server_hello_and_build_client_finish(&reply)
            .unwrap();
        let outcome = client.finish().unwrap();
        assert_eq!(outcome.server_cert_chain.leaf_key, id.static_pub());
        let mut est = finish_xx(pending, &finish).unwrap();
        assert_eq!(est.payload, b"payload");
        assert_eq!(
            &est.client_static[..],
            client_static.public_key.public_key_bytes()
        );
        roundtrip(&mut est, &outcome.write_cipher, &outcome.read_cipher);
    }

    #[test]
    fn ik_resume_is_accepted_and_a_stale_server_key_falls_back_to_xx() {
        let id = server();
        let client_static = KeyPair::generate(&mut rand::rng());
        let mut ik = IkHandshakeState::new(
            client_static.clone(),
            id.static_pub(),
            b"login".to_vec(),
            &WA_CONN_HEADER,
        )
        .unwrap();
        let hello = ik.build_client_hello().unwrap();
        let HelloOutcome::Done {
            reply,
            mut established,
        } = respond_to_hello(&id, &WA_CONN_HEADER, &hello).unwrap()
        else {
            panic!("IK with the right server key completes in one round trip");
        };
        assert_eq!(established.payload, b"login");
        let IkServerHelloOutcome::Continue(out) = ik.read_server_hello(&reply).unwrap() else {
            panic!("client must accept the IK answer");
        };
        roundtrip(&mut established, &out.write_cipher, &out.read_cipher);

        // A client that cached another server's key gets XXfallback.
        let other = server();
        let mut ik = IkHandshakeState::new(
            client_static,
            other.static_pub(),
            b"login".to_vec(),
            &WA_CONN_HEADER,
        )
        .unwrap();
        let hello = ik.build_client_hello().unwrap();
        let HelloOutcome::Continue { reply, pending } =
            respond_to_hello(&id, &WA_CONN_HEADER, &hello).unwrap()
        else {
            panic!("stale key must fall back");
        };
        let IkServerHelloOutcome::Fallback(inputs) = ik.read_server_hello(&reply).unwrap() else {
            panic!("client must see the fallback");
        };
        let mut fb =
            wacore_noise::XxFallbackHandshakeState::from_ik_failure(*inputs, &WA_CONN_HEADER)
                .unwrap();
        let finish = fb.build_client_finish().unwrap();
        let outcome = fb.finish().unwrap();
        let mut est = finish_xx(pending, &finish).unwrap();
        assert_eq!(est.payload, b"login");
        roundtrip(&mut est, &outcome.write_cipher, &outcome.read_cipher);
    }

    #[test]
    fn garbage_headers_and_frames_are_rejected() {
        let mut r = FrameReader::default();
        r.feed(b"GET / HTTP/1.1");
        assert!(r.take_header().is_err());
        let mut r = FrameReader::default();
        r.feed(b"WA\x06\x02");
        assert!(r.take_header().is_err(), "wrong dictionary version");
        let id = server();
        assert!(respond_to_hello(&id, &WA_CONN_HEADER, b"\x01\x02garbage").is_err());
    }
}
