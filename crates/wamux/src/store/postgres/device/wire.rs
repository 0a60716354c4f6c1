//! The protobuf encodings of the byte columns that hold structured values: the server
//! certificate chain, app-state sync keys and app-state hash states.
//!
//! Rows must be byte-compatible with the SQLite device store so they can be copied between
//! the backends column by column, so this follows its `wire.proto` (field numbers, proto3
//! implicit presence: scalar fields equal to their default are left out, sub-messages and
//! map entries always carry both of their fields). The messages are few and small, which is
//! why this is a hand-written codec rather than generated code. Map entries are written in
//! key order so that equal states always encode to equal bytes.

use wacore::appstate::hash::HashState;
use wacore::store::device::{CachedNoiseCert, CachedServerCertChain};
use wacore::store::error::StoreError;
use wacore::store::traits::AppStateSyncKey;

/// X25519 public key length of a cached Noise certificate.
const NOISE_KEY_LEN: usize = 32;
/// Length of an app-state ltHash.
const HASH_STATE_LEN: usize = 128;
/// Length of an app-state master key; anything else is not a usable key.
const APP_STATE_KEY_LEN: usize = 32;

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

#[derive(Debug, thiserror::Error)]
pub(super) enum WireError {
    #[error("truncated protobuf value")]
    Truncated,
    #[error("varint longer than ten bytes")]
    VarintTooLong,
    #[error("unsupported wire type {0}")]
    WireType(u8),
    #[error("field {field} has wire type {got}, expected {expected}")]
    UnexpectedWireType { field: u32, got: u8, expected: u8 },
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{field}: expected {expected} bytes, got {got}")]
    Length {
        field: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("map key is not UTF-8")]
    Utf8,
}

impl From<WireError> for StoreError {
    fn from(e: WireError) -> Self {
        StoreError::Serialization(Box::new(e))
    }
}

// --- encoding ---

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

/// An int64/uint64 field; proto3 leaves zero out.
fn put_u64_field(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_tag(out, field, VARINT);
        put_varint(out, v);
    }
}

fn put_i64_field(out: &mut Vec<u8>, field: u32, v: i64) {
    // Negative int64 values are sign-extended to ten bytes on the wire, as protobuf does.
    put_u64_field(out, field, v as u64);
}

/// A length-delimited value written even when empty (sub-messages, map entry fields).
fn put_len_always(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A bytes/string field; proto3 leaves an empty one out.
fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_len_always(out, field, bytes);
    }
}

fn encode_noise_cert(c: &CachedNoiseCert) -> Vec<u8> {
    let mut out = Vec::with_capacity(NOISE_KEY_LEN + 24);
    put_bytes_field(&mut out, 1, &c.key);
    put_i64_field(&mut out, 2, c.not_before);
    put_i64_field(&mut out, 3, c.not_after);
    out
}

pub(super) fn encode_server_cert_chain(c: &CachedServerCertChain) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * (NOISE_KEY_LEN + 26));
    put_len_always(&mut out, 1, &encode_noise_cert(&c.intermediate));
    put_len_always(&mut out, 2, &encode_noise_cert(&c.leaf));
    out
}

pub(super) fn encode_app_state_sync_key(k: &AppStateSyncKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(k.key_data.len() + k.fingerprint.len() + 16);
    put_bytes_field(&mut out, 1, &k.key_data);
    put_bytes_field(&mut out, 2, &k.fingerprint);
    put_i64_field(&mut out, 3, k.timestamp);
    out
}

pub(super) fn encode_hash_state(s: &HashState) -> Vec<u8> {
    let mut out = Vec::with_capacity(HASH_STATE_LEN + 16);
    put_u64_field(&mut out, 1, s.version);
    put_bytes_field(&mut out, 2, &s.hash);
    let mut entries: Vec<(&String, &Vec<u8>)> = s.index_value_map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut entry = Vec::new();
    for (key, value) in entries {
        entry.clear();
        put_len_always(&mut entry, 1, key.as_bytes());
        put_len_always(&mut entry, 2, value);
        put_len_always(&mut out, 3, &entry);
    }
    if s.mac_mismatch_fatal {
        put_tag(&mut out, 4, VARINT);
        put_varint(&mut out, 1);
    }
    out
}

// --- decoding ---

/// One decoded field: its number and value. Unknown fields are skipped by the callers, so
/// rows written by a newer encoder still decode.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(WireError::Truncated)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::VarintTooLong)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn next_field(&mut self) -> Result<Option<(u32, u8, Value<'a>)>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = (tag >> 3) as u32;
        let wire_type = (tag & 0x7) as u8;
        let value = match wire_type {
            VARINT => Value::Varint(self.varint()?),
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
                Value::Bytes(self.take(len)?)
            }
            I64 => {
                self.take(8)?;
                Value::Fixed
            }
            I32 => {
                self.take(4)?;
                Value::Fixed
            }
            other => return Err(WireError::WireType(other)),
        };
        Ok(Some((field, wire_type, value)))
    }
}

fn expect_varint(field: u32, wire_type: u8, v: Value<'_>) -> Result<u64, WireError> {
    match v {
        Value::Varint(v) => Ok(v),
        _ => Err(WireError::UnexpectedWireType {
            field,
            got: wire_type,
            expected: VARINT,
        }),
    }
}

fn expect_bytes<'a>(field: u32, wire_type: u8, v: Value<'a>) -> Result<&'a [u8], WireError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(WireError::UnexpectedWireType {
            field,
            got: wire_type,
            expected: LEN,
        }),
    }
}

fn fixed<const N: usize>(field: &'static str, bytes: &[u8]) -> Result<[u8; N], WireError> {
    bytes.try_into().map_err(|_| WireError::Length {
        field,
        expected: N,
        got: bytes.len(),
    })
}

fn decode_noise_cert(bytes: &[u8]) -> Result<CachedNoiseCert, WireError> {
    let (mut key, mut not_before, mut not_after) = (&[][..], 0i64, 0i64);
    let mut r = Reader::new(bytes);
    while let Some((field, wt, v)) = r.next_field()? {
        match field {
            1 => key = expect_bytes(field, wt, v)?,
            2 => not_before = expect_varint(field, wt, v)? as i64,
            3 => not_after = expect_varint(field, wt, v)? as i64,
            _ => {}
        }
    }
    Ok(CachedNoiseCert {
        key: fixed::<NOISE_KEY_LEN>("noise_cert.key", key)?,
        not_before,
        not_after,
    })
}

pub(super) fn decode_server_cert_chain(bytes: &[u8]) -> Result<CachedServerCertChain, WireError> {
    let (mut intermediate, mut leaf) = (None, None);
    let mut r = Reader::new(bytes);
    while let Some((field, wt, v)) = r.next_field()? {
        match field {
            1 => intermediate = Some(decode_noise_cert(expect_bytes(field, wt, v)?)?),
            2 => leaf = Some(decode_noise_cert(expect_bytes(field, wt, v)?)?),
            _ => {}
        }
    }
    Ok(CachedServerCertChain {
        intermediate: intermediate.ok_or(WireError::Missing("server_cert_chain.intermediate"))?,
        leaf: leaf.ok_or(WireError::Missing("server_cert_chain.leaf"))?,
    })
}

pub(super) fn decode_app_state_sync_key(bytes: &[u8]) -> Result<AppStateSyncKey, WireError> {
    let mut key = AppStateSyncKey::default();
    let mut r = Reader::new(bytes);
    while let Some((field, wt, v)) = r.next_field()? {
        match field {
            1 => key.key_data = expect_bytes(field, wt, v)?.to_vec(),
            2 => key.fingerprint = expect_bytes(field, wt, v)?.to_vec(),
            3 => key.timestamp = expect_varint(field, wt, v)? as i64,
            _ => {}
        }
    }
    // A corrupt blob can still parse; only a 32-byte master key is usable, and treating
    // anything else as absent makes the caller re-request the key instead of deriving bad
    // sub-keys from it.
    if key.key_data.len() != APP_STATE_KEY_LEN {
        return Err(WireError::Length {
            field: "app_state_sync_key.key_data",
            expected: APP_STATE_KEY_LEN,
            got: key.key_data.len(),
        });
    }
    Ok(key)
}

fn decode_map_entry(bytes: &[u8]) -> Result<(String, Vec<u8>), WireError> {
    let (mut key, mut value) = (&[][..], &[][..]);
    let mut r = Reader::new(bytes);
    while let Some((field, wt, v)) = r.next_field()? {
        match field {
            1 => key = expect_bytes(field, wt, v)?,
            2 => value = expect_bytes(field, wt, v)?,
            _ => {}
        }
    }
    let key = std::str::from_utf8(key).map_err(|_| WireError::Utf8)?;
    Ok((key.to_owned(), value.to_vec()))
}

pub(super) fn decode_hash_state(bytes: &[u8]) -> Result<HashState, WireError> {
    let mut state = HashState::default();
    let mut hash = &[][..];
    let mut r = Reader::new(bytes);
    while let Some((field, wt, v)) = r.next_field()? {
        match field {
            1 => state.version = expect_varint(field, wt, v)?,
            2 => hash = expect_bytes(field, wt, v)?,
            3 => {
                let (key, value) = decode_map_entry(expect_bytes(field, wt, v)?)?;
                state.index_value_map.insert(key, value);
            }
            4 => state.mac_mismatch_fatal = expect_varint(field, wt, v)? != 0,
            _ => {}
        }
    }
    state.hash = fixed::<HASH_STATE_LEN>("hash_state.hash", hash)?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn chain() -> CachedServerCertChain {
        CachedServerCertChain {
            intermediate: CachedNoiseCert {
                key: [0xAB; 32],
                not_before: 1_700_000_000,
                not_after: 1_900_000_000,
            },
            leaf: CachedNoiseCert {
                key: [0xCD; 32],
                not_before: -5,
                not_after: 0,
            },
        }
    }

    #[test]
    fn server_cert_chain_round_trips() {
        let c = chain();
        assert_eq!(
            decode_server_cert_chain(&encode_server_cert_chain(&c)).unwrap(),
            c
        );
    }

    /// Bytes as protobuf writes them for this chain, worked out by hand from the schema: a
    /// zero `not_after` is left out, a negative one takes ten bytes.
    #[test]
    fn server_cert_chain_bytes_are_canonical_protobuf() {
        let c = CachedServerCertChain {
            intermediate: CachedNoiseCert {
                key: [1; 32],
                not_before: 1,
                not_after: 300,
            },
            leaf: CachedNoiseCert {
                key: [2; 32],
                not_before: -1,
                not_after: 0,
            },
        };
        let mut want = vec![0x0a, 39, 0x0a, 32];
        want.extend([1u8; 32]);
        want.extend([0x10, 1, 0x18, 0xac, 0x02]);
        want.extend([0x12, 45, 0x0a, 32]);
        want.extend([2u8; 32]);
        want.extend([
            0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        assert_eq!(encode_server_cert_chain(&c), want);
    }

    #[test]
    fn server_cert_chain_rejects_short_key_and_missing_leaf() {
        let mut bad = vec![0x0a, 7, 0x0a, 5];
        bad.extend([0u8; 5]);
        assert!(decode_server_cert_chain(&bad).is_err());
        let only_intermediate = &encode_server_cert_chain(&chain())[..36 + 2 + 10];
        assert!(decode_server_cert_chain(only_intermediate).is_err());
    }

    #[test]
    fn app_state_sync_key_round_trips_and_checks_length() {
        let key = AppStateSyncKey {
            key_data: vec![7; 32],
            fingerprint: vec![9, 8, 7],
            timestamp: 1_700_000_123,
        };
        let back = decode_app_state_sync_key(&encode_app_state_sync_key(&key)).unwrap();
        assert_eq!(
            (back.key_data, back.fingerprint, back.timestamp),
            (key.key_data, key.fingerprint, key.timestamp)
        );
        let short = AppStateSyncKey {
            key_data: vec![0; 16],
            ..Default::default()
        };
        assert!(decode_app_state_sync_key(&encode_app_state_sync_key(&short)).is_err());
    }

    #[test]
    fn hash_state_round_trips_and_is_deterministic() {
        let mut index_value_map = HashMap::new();
        for i in 0..20 {
            index_value_map.insert(format!("idx-{i}"), vec![i; 3]);
        }
        index_value_map.insert("empty".into(), vec![]);
        let mut hash = [0u8; 128];
        hash[0] = 0xff;
        hash[127] = 0x11;
        let state = HashState {
            version: 42,
            hash,
            index_value_map,
            mac_mismatch_fatal: true,
        };
        let bytes = encode_hash_state(&state);
        let back = decode_hash_state(&bytes).unwrap();
        assert_eq!(back.version, 42);
        assert_eq!(back.hash, hash);
        assert_eq!(back.index_value_map, state.index_value_map);
        assert!(back.mac_mismatch_fatal);
        assert_eq!(encode_hash_state(&back), bytes);
    }

    #[test]
    fn default_hash_state_keeps_the_zero_hash() {
        // The all-zero hash is not a default-valued bytes field, so it is written.
        let bytes = encode_hash_state(&HashState::default());
        assert_eq!(bytes.len(), 3 + 128);
        let back = decode_hash_state(&bytes).unwrap();
        assert_eq!(back.version, 0);
        assert!(!back.mac_mismatch_fatal);
        assert!(decode_hash_state(&[0x08, 1]).is_err());
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = encode_app_state_sync_key(&AppStateSyncKey {
            key_data: vec![1; 32],
            fingerprint: vec![],
            timestamp: 0,
        });
        bytes.extend([0x48, 5, 0x52, 1, 0, 0x59, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(decode_app_state_sync_key(&bytes).is_ok());
    }
}
