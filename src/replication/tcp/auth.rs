//! The TCP handshake: mutual proof of the cluster secret, and the session
//! key every frame is authenticated with.
//!
//! Messages, all fixed-size so nothing is allocated from a length the peer
//! chose before it has proved anything:
//!
//! ```text
//! 1. follower -> leader   MAGIC (8) | nonce_f (32)
//! 2. leader -> follower   MAGIC (8) | nonce_l (32) | proof_l (32)
//! 3. follower -> leader   verdict (1) | proof_f (32)   (zeros if verdict is 0)
//! 4. leader -> follower   verdict (1)
//!
//! proof_l     = HMAC-SHA256(secret, "tidal-leader-proof-v1"   | nonce_l | nonce_f)
//! proof_f     = HMAC-SHA256(secret, "tidal-follower-proof-v1" | nonce_f | nonce_l)
//! session key = HMAC-SHA256(secret, "tidal-session-v1"        | nonce_l | nonce_f)
//! verdict     = 1 if the peer's proof verified, 0 if not
//! ```
//!
//! Each side's proof covers its own fresh nonce and the peer's, so a proof
//! cannot be replayed into another session; the role labels differ, so a
//! leader's proof reflected back as a follower's fails. The secret itself
//! never travels. Verdicts exist so that a wrong secret is reported as
//! [`TidalError::AuthFailed`] on both sides, not as a bare EOF on one;
//! a forged verdict can only make a handshake fail, never succeed, because
//! frames are then tagged with the session key only secret holders can derive.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Result, TidalError};
use crate::replication::transport::transport_err;

/// HMAC-SHA256, the only MAC used on the wire.
pub(super) type HmacSha256 = Hmac<Sha256>;

/// Identifies the TidalDb replication transport and its version, so a
/// stray client (or an incompatible release) fails at once and clearly.
pub(super) const MAGIC: [u8; 8] = *b"TIDALRT1";
/// Bytes in each side's nonce: 256 random bits, so a nonce never repeats.
pub(super) const NONCE_BYTES: usize = 32;
/// Bytes in a proof, a session key and a frame tag (full HMAC-SHA256).
pub(super) const MAC_BYTES: usize = 32;

const LEADER_PROOF_LABEL: &[u8] = b"tidal-leader-proof-v1";
const FOLLOWER_PROOF_LABEL: &[u8] = b"tidal-follower-proof-v1";
const SESSION_LABEL: &[u8] = b"tidal-session-v1";
const VERDICT_REFUSED: u8 = 0;
const VERDICT_ACCEPTED: u8 = 1;

/// What a successful handshake yields: the key both sides tag frames with.
pub(super) struct SessionKey(pub(super) [u8; MAC_BYTES]);

/// An HMAC-SHA256 keyed with `key`, fed `parts` in order.
pub(super) fn keyed_mac(key: &[u8], parts: &[&[u8]]) -> Result<HmacSha256> {
    // HMAC accepts keys of any length; the error arm exists only because
    // the generic `KeyInit` API is fallible.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).map_err(|_| TidalError::InvalidConfig {
            field: "secret",
            reason: "rejected as an HMAC key".to_string(),
        })?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac)
}

fn mac_bytes(key: &[u8], parts: &[&[u8]]) -> Result<[u8; MAC_BYTES]> {
    Ok(keyed_mac(key, parts)?.finalize().into_bytes().into())
}

fn fresh_nonce(peer: &str) -> Result<[u8; NONCE_BYTES]> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce)
        .map_err(|e| transport_err(peer, format!("no OS randomness for a nonce: {e}")))?;
    Ok(nonce)
}

fn session_key(
    secret: &[u8],
    nonce_l: &[u8; NONCE_BYTES],
    nonce_f: &[u8; NONCE_BYTES],
) -> Result<SessionKey> {
    Ok(SessionKey(mac_bytes(
        secret,
        &[SESSION_LABEL, nonce_l, nonce_f],
    )?))
}

fn auth_failed(peer: &str, reason: &str) -> TidalError {
    TidalError::AuthFailed {
        peer: peer.to_string(),
        reason: reason.to_string(),
    }
}

/// Maps an I/O error during the handshake; EOF means the peer hung up.
fn handshake_io(peer: &str, step: &str, e: std::io::Error) -> TidalError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        transport_err(peer, format!("closed during the handshake ({step})"))
    } else {
        transport_err(peer, format!("handshake {step}: {e}"))
    }
}

fn check_magic(peer: &str, got: &[u8]) -> Result<()> {
    if got == MAGIC {
        Ok(())
    } else {
        Err(transport_err(
            peer,
            "not a TidalDb replication peer, or another transport version (bad magic)",
        ))
    }
}

/// The leader's side of the handshake, on a freshly accepted stream. The
/// caller bounds it with a timeout.
pub(super) async fn leader_handshake(
    stream: &mut TcpStream,
    secret: &[u8],
    peer: &str,
) -> Result<SessionKey> {
    let mut hello = [0u8; MAGIC.len() + NONCE_BYTES];
    stream
        .read_exact(&mut hello)
        .await
        .map_err(|e| handshake_io(peer, "reading hello", e))?;
    check_magic(peer, &hello[..MAGIC.len()])?;
    let mut nonce_f = [0u8; NONCE_BYTES];
    nonce_f.copy_from_slice(&hello[MAGIC.len()..]);

    let nonce_l = fresh_nonce(peer)?;
    let proof_l = mac_bytes(secret, &[LEADER_PROOF_LABEL, &nonce_l, &nonce_f])?;
    let mut challenge = [0u8; MAGIC.len() + NONCE_BYTES + MAC_BYTES];
    challenge[..MAGIC.len()].copy_from_slice(&MAGIC);
    challenge[MAGIC.len()..MAGIC.len() + NONCE_BYTES].copy_from_slice(&nonce_l);
    challenge[MAGIC.len() + NONCE_BYTES..].copy_from_slice(&proof_l);
    stream
        .write_all(&challenge)
        .await
        .map_err(|e| handshake_io(peer, "writing challenge", e))?;

    let mut answer = [0u8; 1 + MAC_BYTES];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(|e| handshake_io(peer, "reading proof", e))?;
    if answer[0] != VERDICT_ACCEPTED {
        return Err(auth_failed(
            peer,
            "the follower refused this leader's proof: the cluster secrets differ",
        ));
    }
    let verified = keyed_mac(secret, &[FOLLOWER_PROOF_LABEL, &nonce_f, &nonce_l])?
        .verify_slice(&answer[1..])
        .is_ok();
    let verdict = if verified {
        VERDICT_ACCEPTED
    } else {
        VERDICT_REFUSED
    };
    // Best effort when refusing: the peer may already be gone, and the
    // refusal is reported here either way.
    let sent = stream.write_all(&[verdict]).await;
    if !verified {
        return Err(auth_failed(
            peer,
            "the follower did not prove the cluster secret",
        ));
    }
    sent.map_err(|e| handshake_io(peer, "writing verdict", e))?;
    session_key(secret, &nonce_l, &nonce_f)
}

/// The follower's side of the handshake, on a freshly connected stream.
/// The caller bounds it with a timeout.
pub(super) async fn follower_handshake(
    stream: &mut TcpStream,
    secret: &[u8],
    peer: &str,
) -> Result<SessionKey> {
    let nonce_f = fresh_nonce(peer)?;
    let mut hello = [0u8; MAGIC.len() + NONCE_BYTES];
    hello[..MAGIC.len()].copy_from_slice(&MAGIC);
    hello[MAGIC.len()..].copy_from_slice(&nonce_f);
    stream
        .write_all(&hello)
        .await
        .map_err(|e| handshake_io(peer, "writing hello", e))?;

    let mut challenge = [0u8; MAGIC.len() + NONCE_BYTES + MAC_BYTES];
    stream
        .read_exact(&mut challenge)
        .await
        .map_err(|e| handshake_io(peer, "reading challenge", e))?;
    check_magic(peer, &challenge[..MAGIC.len()])?;
    let mut nonce_l = [0u8; NONCE_BYTES];
    nonce_l.copy_from_slice(&challenge[MAGIC.len()..MAGIC.len() + NONCE_BYTES]);
    let leader_ok = keyed_mac(secret, &[LEADER_PROOF_LABEL, &nonce_l, &nonce_f])?
        .verify_slice(&challenge[MAGIC.len() + NONCE_BYTES..])
        .is_ok();

    let mut answer = [0u8; 1 + MAC_BYTES];
    if leader_ok {
        answer[0] = VERDICT_ACCEPTED;
        answer[1..].copy_from_slice(&mac_bytes(
            secret,
            &[FOLLOWER_PROOF_LABEL, &nonce_f, &nonce_l],
        )?);
    }
    // Our own proof is sent only to a leader that proved the secret.
    let sent = stream.write_all(&answer).await;
    if !leader_ok {
        return Err(auth_failed(
            peer,
            "the leader did not prove the cluster secret",
        ));
    }
    sent.map_err(|e| handshake_io(peer, "writing proof", e))?;

    let mut verdict = [0u8; 1];
    stream
        .read_exact(&mut verdict)
        .await
        .map_err(|e| handshake_io(peer, "reading verdict", e))?;
    if verdict[0] != VERDICT_ACCEPTED {
        return Err(auth_failed(
            peer,
            "the leader refused this follower's proof: the cluster secrets differ",
        ));
    }
    session_key(secret, &nonce_l, &nonce_f)
}
