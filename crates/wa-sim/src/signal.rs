//! The phones' Signal protocol state: key generation and pairwise
//! encrypt/decrypt over `wacore-libsignal`, with the stores backed by the
//! serializable [`PhoneSecrets`].
//!
//! libsignal wants each store as a separate `&mut dyn`, so the maps are moved
//! out of the secrets into small store structs for one operation and moved
//! back afterwards.

use std::collections::BTreeMap;

use async_trait::async_trait;
use wacore_libsignal::protocol::{
    self as sp, CiphertextMessage, Direction, GenericSignedPreKey, IdentityChange, IdentityKey,
    IdentityKeyPair, KeyPair, PreKeyBundle, PreKeyId, PreKeyRecord, PreKeySignalMessage,
    PrivateKey, ProtocolAddress, PublicKey, SessionRecord, SignalMessage, SignalProtocolError,
    SignedPreKeyId, SignedPreKeyRecord, Timestamp, UsePQRatchet,
};

use crate::state::{B64, DeviceRecord, PhoneSecrets, SignedPreKey};

/// Failures of the phone's Signal operations.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("signal: {0}")]
    Protocol(#[from] SignalProtocolError),
    #[error("key: {0}")]
    Curve(#[from] wacore_libsignal::protocol::CurveError),
    #[error("unknown ciphertext type {0}")]
    UnknownType(String),
    #[error("the device has no prekey bundle")]
    NoBundle,
}

type Result<T> = std::result::Result<T, SignalError>;

/// How many one-time prekeys a phone keeps published.
pub const PHONE_PREKEYS: u32 = 20;

/// How sessions and identities are keyed: `user.device`.
pub fn address_key(addr: &ProtocolAddress) -> String {
    format!("{}.{}", addr.name(), u32::from(addr.device_id()))
}

/// Creates a phone's secrets and the public device-0 record matching them.
pub fn generate_phone() -> Result<(PhoneSecrets, DeviceRecord)> {
    let mut rng = rand::rng();
    let identity = KeyPair::generate(&mut rng);
    let spk = KeyPair::generate(&mut rng);
    let spk_sig = identity
        .private_key
        .calculate_signature(&spk.public_key.serialize(), &mut rng)?;
    let registration_id = rand::random_range(1..16380u32);
    let mut secrets = PhoneSecrets {
        identity_private: B64(identity.private_key.serialize().to_vec()),
        identity_public: B64(identity.public_key.public_key_bytes().to_vec()),
        registration_id,
        signed_prekey_id: 1,
        signed_prekey_private: B64(spk.private_key.serialize().to_vec()),
        signed_prekey_public: B64(spk.public_key.public_key_bytes().to_vec()),
        signed_prekey_signature: B64(spk_sig.to_vec()),
        next_prekey_id: 1,
        app_state_key_id: B64(rand::random::<[u8; 6]>().to_vec()),
        app_state_key: B64(rand::random::<[u8; 32]>().to_vec()),
        ..Default::default()
    };
    let mut record = DeviceRecord {
        id: 0,
        noise_pub: None,
        key_index: 0,
        registration_id,
        identity: secrets.identity_public.clone(),
        signed_prekey: Some(SignedPreKey {
            id: 1,
            public: secrets.signed_prekey_public.clone(),
            signature: secrets.signed_prekey_signature.clone(),
        }),
        prekeys: BTreeMap::new(),
        device_identity: None,
        push_name: String::new(),
        platform: "android".into(),
        queue: Default::default(),
    };
    replenish_prekeys(&mut secrets, &mut record);
    Ok((secrets, record))
}

/// Tops the phone's published one-time prekeys back up to [`PHONE_PREKEYS`]; returns
/// whether any were added.
pub fn replenish_prekeys(secrets: &mut PhoneSecrets, record: &mut DeviceRecord) -> bool {
    let mut rng = rand::rng();
    let added = (record.prekeys.len() as u32) < PHONE_PREKEYS;
    while (record.prekeys.len() as u32) < PHONE_PREKEYS {
        let id = secrets.next_prekey_id;
        secrets.next_prekey_id = (id % 0xFF_FFFE) + 1;
        let kp = KeyPair::generate(&mut rng);
        secrets
            .prekeys
            .insert(id, B64(kp.private_key.serialize().to_vec()));
        record
            .prekeys
            .insert(id, B64(kp.public_key.public_key_bytes().to_vec()));
    }
    added
}

/// The account's identity key pair (the phone's), used for ADV signatures.
pub fn identity_pair(secrets: &PhoneSecrets) -> Result<KeyPair> {
    let private = PrivateKey::deserialize(&secrets.identity_private.0)?;
    let public = private.public_key()?;
    Ok(KeyPair::new(public, private))
}

/// A bundle for one device from its public record, taking one one-time prekey
/// out of it (the server hands each out once).
pub fn take_bundle(record: &mut DeviceRecord) -> Result<PreKeyBundle> {
    let spk = record.signed_prekey.as_ref().ok_or(SignalError::NoBundle)?;
    let one_time = record.prekeys.pop_first();
    let pre_key = match one_time {
        Some((id, key)) => Some((
            PreKeyId::from(id),
            PublicKey::from_djb_public_key_bytes(&key.0)?,
        )),
        None => None,
    };
    Ok(PreKeyBundle::new(
        record.registration_id,
        u32::from(record.id).into(),
        pre_key,
        SignedPreKeyId::from(spk.id),
        PublicKey::from_djb_public_key_bytes(&spk.public.0)?,
        spk.signature.0.clone(),
        IdentityKey::new(PublicKey::from_djb_public_key_bytes(&record.identity.0)?),
    )?)
}

struct Sessions(BTreeMap<String, B64>);
struct Identities {
    pair: IdentityKeyPair,
    registration_id: u32,
    known: BTreeMap<String, B64>,
}
struct PreKeys(BTreeMap<u32, B64>);
struct SignedPreKeys(SignedPreKeyRecord);

fn store_err(e: impl std::fmt::Display) -> SignalProtocolError {
    SignalProtocolError::InvalidArgument(e.to_string())
}

/// This process's mark on the session records it writes. libsignal leases sender-chain
/// counters in batches and, on loading a record it cannot prove it wrote in this same
/// process, skips past the whole lease (a crash may have lost sends under it). Records
/// are stored as bytes between operations, so without the mark every message would skip
/// a batch of counters, and the receiving side would keep a skipped message key for each
/// (2,000 of them, 340 KB per session, decoded and encoded again for every message).
/// After a restart the mark is new, so each session skips its lease once, as intended.
fn incarnation() -> &'static [u8; 16] {
    static MARK: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
    MARK.get_or_init(rand::random)
}

#[async_trait]
impl sp::SessionStore for Sessions {
    async fn load_session(
        &self,
        address: &ProtocolAddress,
    ) -> sp::error::Result<Option<SessionRecord>> {
        match self.0.get(&address_key(address)) {
            Some(bytes) => Ok(Some(SessionRecord::deserialize_for_store(
                &bytes.0,
                incarnation(),
            )?)),
            None => Ok(None),
        }
    }

    async fn has_session(&self, address: &ProtocolAddress) -> sp::error::Result<bool> {
        Ok(self.0.contains_key(&address_key(address)))
    }

    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: SessionRecord,
    ) -> sp::error::Result<()> {
        let mut bytes = Vec::new();
        record.serialize_into_for_store(&mut bytes, incarnation());
        self.0.insert(address_key(address), B64(bytes));
        Ok(())
    }
}

#[async_trait]
impl sp::IdentityKeyStore for Identities {
    async fn get_identity_key_pair(&self) -> sp::error::Result<IdentityKeyPair> {
        Ok(self.pair.clone())
    }

    async fn get_local_registration_id(&self) -> sp::error::Result<u32> {
        Ok(self.registration_id)
    }

    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> sp::error::Result<IdentityChange> {
        let new = B64(identity.serialize().to_vec());
        match self.known.insert(address_key(address), new.clone()) {
            Some(old) if old != new => Ok(IdentityChange::ReplacedExisting),
            _ => Ok(IdentityChange::NewOrUnchanged),
        }
    }

    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> sp::error::Result<bool> {
        // A phone trusts new identities (re-linked devices), like the app
        // does after showing a "security code changed" notice.
        Ok(true)
    }

    async fn get_identity(
        &self,
        address: &ProtocolAddress,
    ) -> sp::error::Result<Option<IdentityKey>> {
        match self.known.get(&address_key(address)) {
            Some(bytes) => Ok(Some(IdentityKey::decode(&bytes.0)?)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl sp::PreKeyStore for PreKeys {
    async fn get_pre_key(&self, prekey_id: PreKeyId) -> sp::error::Result<PreKeyRecord> {
        let id = u32::from(prekey_id);
        let private = self
            .0
            .get(&id)
            .ok_or(SignalProtocolError::InvalidPreKeyId)?;
        let private = PrivateKey::deserialize(&private.0).map_err(store_err)?;
        let public = private.public_key().map_err(store_err)?;
        Ok(PreKeyRecord::new(prekey_id, &KeyPair::new(public, private)))
    }

    async fn save_pre_key(
        &mut self,
        prekey_id: PreKeyId,
        record: &PreKeyRecord,
    ) -> sp::error::Result<()> {
        let private = record.private_key()?;
        self.0
            .insert(u32::from(prekey_id), B64(private.serialize().to_vec()));
        Ok(())
    }

    async fn remove_pre_key(&mut self, prekey_id: PreKeyId) -> sp::error::Result<()> {
        self.0.remove(&u32::from(prekey_id));
        Ok(())
    }
}

#[async_trait]
impl sp::SignedPreKeyStore for SignedPreKeys {
    async fn get_signed_pre_key(
        &self,
        _signed_prekey_id: SignedPreKeyId,
    ) -> sp::error::Result<SignedPreKeyRecord> {
        Ok(self.0.clone())
    }

    async fn save_signed_pre_key(
        &mut self,
        _signed_prekey_id: SignedPreKeyId,
        record: &SignedPreKeyRecord,
    ) -> sp::error::Result<()> {
        self.0 = record.clone();
        Ok(())
    }
}

/// The stored key pair, without deriving the public key again (a scalar
/// multiplication, which every message would otherwise pay for twice).
fn stored_pair(private: &B64, public: &B64) -> Result<KeyPair> {
    Ok(KeyPair::new(
        PublicKey::from_djb_public_key_bytes(&public.0)?,
        PrivateKey::deserialize(&private.0)?,
    ))
}

fn identities(secrets: &mut PhoneSecrets) -> Result<Identities> {
    let kp = stored_pair(&secrets.identity_private, &secrets.identity_public)?;
    Ok(Identities {
        pair: IdentityKeyPair::from(kp),
        registration_id: secrets.registration_id,
        known: std::mem::take(&mut secrets.identities),
    })
}

/// Whether the phone already has a session with `peer`.
pub fn has_session(secrets: &PhoneSecrets, peer: &ProtocolAddress) -> bool {
    secrets.sessions.contains_key(&address_key(peer))
}

/// Encrypts `plaintext` for `peer`; `bundle` must be given when there is no
/// session yet. Returns the wire type (`pkmsg`/`msg`) and ciphertext.
pub async fn encrypt(
    secrets: &mut PhoneSecrets,
    peer: &ProtocolAddress,
    bundle: Option<PreKeyBundle>,
    plaintext: &[u8],
) -> Result<(&'static str, Vec<u8>)> {
    let mut sessions = Sessions(std::mem::take(&mut secrets.sessions));
    let mut ids = identities(secrets)?;
    // A `Send` generator: the futures below cross await points in tasks.
    let mut rng = rand::make_rng::<rand::rngs::StdRng>();
    let result = async {
        if let Some(bundle) = bundle {
            sp::process_prekey_bundle(
                peer,
                &mut sessions,
                &mut ids,
                &bundle,
                &mut rng,
                UsePQRatchet::No,
            )
            .await?;
        }
        sp::message_encrypt(plaintext, peer, &mut sessions, &mut ids).await
    }
    .await;
    secrets.sessions = sessions.0;
    secrets.identities = ids.known;
    let message = result?;
    let kind = match message {
        CiphertextMessage::PreKeySignalMessage(_) => "pkmsg",
        _ => "msg",
    };
    Ok((kind, message.serialize().to_vec()))
}

/// Decrypts a `pkmsg`/`msg` from `peer`, consuming a one-time prekey if used.
pub async fn decrypt(
    secrets: &mut PhoneSecrets,
    peer: &ProtocolAddress,
    enc_type: &str,
    ciphertext: &[u8],
) -> Result<Vec<u8>> {
    let message = match enc_type {
        "pkmsg" => {
            CiphertextMessage::PreKeySignalMessage(PreKeySignalMessage::try_from(ciphertext)?)
        }
        "msg" => CiphertextMessage::SignalMessage(SignalMessage::try_from(ciphertext)?),
        other => return Err(SignalError::UnknownType(other.to_string())),
    };
    let spk = SignedPreKeyRecord::new(
        SignedPreKeyId::from(secrets.signed_prekey_id),
        Timestamp::from_epoch_millis(0),
        &stored_pair(
            &secrets.signed_prekey_private,
            &secrets.signed_prekey_public,
        )?,
        &secrets.signed_prekey_signature.0,
    );
    let mut sessions = Sessions(std::mem::take(&mut secrets.sessions));
    let mut ids = identities(secrets)?;
    let mut prekeys = PreKeys(std::mem::take(&mut secrets.prekeys));
    let signed = SignedPreKeys(spk);
    let mut rng = rand::make_rng::<rand::rngs::StdRng>();
    let result = sp::message_decrypt(
        &message,
        peer,
        &mut sessions,
        &mut ids,
        &mut prekeys,
        &signed,
        &mut rng,
        UsePQRatchet::No,
    )
    .await;
    secrets.sessions = sessions.0;
    secrets.identities = ids.known;
    secrets.prekeys = prekeys.0;
    let result = result?;
    if let Some(id) = result.consumed_prekey_id {
        secrets.prekeys.remove(&u32::from(id));
    }
    Ok(result.plaintext)
}

/// Sender keys by "group::user.device" (see [`sender_key_id`]).
struct SenderKeys(BTreeMap<String, B64>);

#[async_trait]
impl sp::SenderKeyStore for SenderKeys {
    async fn store_sender_key(
        &mut self,
        name: &sp::SenderKeyName,
        record: sp::SenderKeyRecord,
    ) -> sp::error::Result<()> {
        let bytes = record.serialize_for_store(incarnation())?;
        self.0.insert(name.cache_key().to_string(), B64(bytes));
        Ok(())
    }

    async fn load_sender_key(
        &self,
        name: &sp::SenderKeyName,
    ) -> sp::error::Result<Option<sp::SenderKeyRecord>> {
        match self.0.get(name.cache_key()) {
            Some(bytes) => Ok(Some(sp::SenderKeyRecord::deserialize_for_store(
                &bytes.0,
                incarnation(),
            )?)),
            None => Ok(None),
        }
    }
}

/// Where a phone keeps the sender key of `sender` ("user.device") in `group` (a group
/// JID): the key of [`PhoneSecrets::sender_keys`].
pub fn sender_key_id(group: &str, sender: &str) -> String {
    sp::SenderKeyName::from_parts(group, sender)
        .cache_key()
        .to_string()
}

fn sender_key_name(group: &str, sender: &str) -> sp::SenderKeyName {
    sp::SenderKeyName::from_parts(group, sender)
}

/// The phone's own sender key for `group` as a distribution message (made on first use):
/// what it sends each member device, pairwise encrypted, before its first group message.
pub async fn sender_key_distribution(
    secrets: &mut PhoneSecrets,
    group: &str,
    own: &str,
) -> Result<Vec<u8>> {
    let mut keys = SenderKeys(std::mem::take(&mut secrets.sender_keys));
    let mut rng = rand::make_rng::<rand::rngs::StdRng>();
    let result = sp::create_sender_key_distribution_message(
        &sender_key_name(group, own),
        &mut keys,
        &mut rng,
    )
    .await;
    secrets.sender_keys = keys.0;
    Ok(result?.serialized().to_vec())
}

/// Encrypts `plaintext` for everyone in `group` under the phone's own sender key (`skmsg`).
pub async fn group_encrypt(
    secrets: &mut PhoneSecrets,
    group: &str,
    own: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut keys = SenderKeys(std::mem::take(&mut secrets.sender_keys));
    let mut rng = rand::make_rng::<rand::rngs::StdRng>();
    let result =
        sp::group_encrypt(&mut keys, &sender_key_name(group, own), plaintext, &mut rng).await;
    secrets.sender_keys = keys.0;
    Ok(result?.into_serialized().to_vec())
}

/// Takes in the sender key `sender` distributed for `group`.
pub async fn process_distribution(
    secrets: &mut PhoneSecrets,
    group: &str,
    sender: &str,
    distribution: &[u8],
) -> Result<()> {
    let skdm = sp::SenderKeyDistributionMessage::try_from(distribution)?;
    let mut keys = SenderKeys(std::mem::take(&mut secrets.sender_keys));
    let result = sp::process_sender_key_distribution_message(
        &sender_key_name(group, sender),
        &skdm,
        &mut keys,
    )
    .await;
    secrets.sender_keys = keys.0;
    Ok(result?)
}

/// Decrypts a `skmsg` of `sender` in `group`.
pub async fn group_decrypt(
    secrets: &mut PhoneSecrets,
    group: &str,
    sender: &str,
    ciphertext: &[u8],
) -> Result<Vec<u8>> {
    let mut keys = SenderKeys(std::mem::take(&mut secrets.sender_keys));
    let result = sp::group_decrypt(ciphertext, &mut keys, &sender_key_name(group, sender)).await;
    secrets.sender_keys = keys.0;
    Ok(result?)
}
