//! Secrets: CSPRNG tokens, their one-way hashes, constant-time comparison.
//!
//! Every bearer secret authgate hands out (session ids, flow states, login
//! tokens) is stored only as its SHA-256, so a copy of the database does not
//! let anyone sign in.
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Error;

/// The longest token authgate will even hash; anything longer is not ours.
pub const MAX_TOKEN_LEN: usize = 256;

/// How a new opaque token is spelled on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    /// 32 random bytes (256 bits), base64url without padding: 43 characters.
    /// The default for everything authgate mints.
    UrlSafe32,
    /// 16 random bytes (128 bits), standard base64 with padding: 24
    /// characters ending in `==`, for API surfaces whose clients expect it.
    Base64x16,
    /// 32 characters of `[0-9a-zA-Z]` (about 190 bits), the e-mail code
    /// surface's token format.
    Alnum32,
    /// 20 lower-case letters (about 94 bits): FreeSewing's `validation`.
    Lower20,
}

/// Fill a buffer from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)
        .map_err(|e| Error::Internal(format!("OS random source failed: {e}")))?;
    Ok(buf)
}

/// A fresh random token in the given format.
pub fn new_token(format: TokenFormat) -> Result<String, Error> {
    Ok(match format {
        TokenFormat::UrlSafe32 => URL_SAFE_NO_PAD.encode(random_bytes::<32>()?),
        TokenFormat::Base64x16 => STANDARD.encode(random_bytes::<16>()?),
        TokenFormat::Alnum32 => random_string(
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
            32,
        )?,
        TokenFormat::Lower20 => random_string(b"abcdefghijklmnopqrstuvwxyz", 20)?,
    })
}

/// `len` characters drawn uniformly from `alphabet`.
fn random_string(alphabet: &[u8], len: usize) -> Result<String, Error> {
    let mut out = String::with_capacity(len);
    for _ in 0..len {
        out.push(char::from(
            alphabet[random_below(alphabet.len() as u32)? as usize],
        ));
    }
    Ok(out)
}

/// A uniformly random number in `0..n` (rejection sampling, no modulo bias).
pub fn random_below(n: u32) -> Result<u32, Error> {
    if n == 0 {
        return Err(Error::Internal("random_below(0)".into()));
    }
    let zone = u32::MAX - (u32::MAX % n);
    loop {
        let v = u32::from_le_bytes(random_bytes::<4>()?);
        if v < zone {
            return Ok(v % n);
        }
    }
}

/// The SHA-256 of a token: what the database stores and looks up by.
///
/// Tokens carry at least 128 random bits, so a plain (unsalted, fast) hash is
/// the right tool: there is nothing to brute-force, and lookups stay one
/// indexed equality match.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compare two secrets without leaking where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_formats_have_their_documented_shape() {
        let a = new_token(TokenFormat::UrlSafe32).unwrap();
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        let b = new_token(TokenFormat::Base64x16).unwrap();
        assert_eq!(b.len(), 24);
        assert!(b.ends_with("=="));
        assert_eq!(STANDARD.decode(&b).unwrap().len(), 16);
        assert_ne!(new_token(TokenFormat::UrlSafe32).unwrap(), a);
        let c = new_token(TokenFormat::Alnum32).unwrap();
        assert_eq!(c.len(), 32);
        assert!(c.chars().all(|ch| ch.is_ascii_alphanumeric()));
        let d = new_token(TokenFormat::Lower20).unwrap();
        assert_eq!(d.len(), 20);
        assert!(d.chars().all(|ch| ch.is_ascii_lowercase()));
    }

    #[test]
    fn hashes_differ_and_compare_in_constant_time() {
        let h1 = hash_token("a");
        let h2 = hash_token("b");
        assert!(ct_eq(&h1, &hash_token("a")));
        assert!(!ct_eq(&h1, &h2));
        assert!(!ct_eq(&h1, &h1[..31]));
    }
}
