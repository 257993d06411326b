//! ID-token signing keys: made here (RSA with the `rsa` crate, which ring
//! cannot do; P-256 and Ed25519 with ring), kept as PKCS#8 sealed by the
//! vault, and used to sign with ring (fast, constant-time). The public
//! halves are published as a JWKS.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::core::Error;

/// The JWS algorithm ID tokens are signed with (`oidc.signing_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SigningAlg {
    #[default]
    RS256,
    ES256,
    EdDSA,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::RS256 => "RS256",
            SigningAlg::ES256 => "ES256",
            SigningAlg::EdDSA => "EdDSA",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(SigningAlg::RS256),
            "ES256" => Some(SigningAlg::ES256),
            "EdDSA" => Some(SigningAlg::EdDSA),
            _ => None,
        }
    }

    /// The left half of this digest of an access token is its `at_hash`
    /// (OpenID Connect Core 3.1.3.6; SHA-512 for Ed25519).
    pub fn at_hash(self, token: &str) -> String {
        use sha2::Digest;
        let digest: Vec<u8> = match self {
            SigningAlg::RS256 | SigningAlg::ES256 => sha2::Sha256::digest(token).to_vec(),
            SigningAlg::EdDSA => sha2::Sha512::digest(token).to_vec(),
        };
        B64.encode(&digest[..digest.len() / 2])
    }
}

/// A new key pair: its PKCS#8 DER (to be sealed) and its public JWK.
pub fn generate(alg: SigningAlg, kid: &str) -> Result<(Vec<u8>, Value), Error> {
    let rng = SystemRandom::new();
    let broken = |what: &str| Error::Internal(format!("cannot make a signing key: {what}"));
    let (der, public) = match alg {
        SigningAlg::RS256 => {
            use rsa::pkcs8::EncodePrivateKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                .map_err(|e| broken(&e.to_string()))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| broken(&e.to_string()))?
                .as_bytes()
                .to_vec();
            let public = json!({
                "kty": "RSA",
                "n": B64.encode(key.n().to_bytes_be()),
                "e": B64.encode(key.e().to_bytes_be()),
            });
            (der, public)
        }
        SigningAlg::ES256 => {
            let doc =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| broken("P-256"))?;
            let pair = EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                doc.as_ref(),
                &rng,
            )
            .map_err(|e| broken(&e.to_string()))?;
            // An uncompressed point: 0x04 ‖ x ‖ y.
            let point = pair.public_key().as_ref();
            let public = json!({
                "kty": "EC",
                "crv": "P-256",
                "x": B64.encode(&point[1..33]),
                "y": B64.encode(&point[33..65]),
            });
            (doc.as_ref().to_vec(), public)
        }
        SigningAlg::EdDSA => {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| broken("Ed25519"))?;
            let pair =
                Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|e| broken(&e.to_string()))?;
            let public = json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": B64.encode(pair.public_key().as_ref()),
            });
            (doc.as_ref().to_vec(), public)
        }
    };
    let mut jwk = public;
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!(alg.as_str());
    jwk["use"] = json!("sig");
    Ok((der, jwk))
}

/// A key ready to sign: parsed once, kept in memory.
/// Sign `claims` as a JWS of type `typ`. An RSA signature takes about a
/// millisecond of CPU: off the async workers, so that they go on answering
/// (and give back the SQLite writer) meanwhile. ES256 and EdDSA take tens
/// of microseconds: right here (a hand-off would cost more).
pub async fn sign(
    signer: std::sync::Arc<Signer>,
    typ: &'static str,
    claims: Value,
) -> Result<String, Error> {
    if signer.alg != SigningAlg::RS256 {
        return signer.sign(typ, &claims);
    }
    tokio::task::spawn_blocking(move || signer.sign(typ, &claims))
        .await
        .map_err(|e| Error::Internal(format!("signing task: {e}")))?
}

pub struct Signer {
    pub kid: String,
    pub alg: SigningAlg,
    pair: Pair,
    rng: SystemRandom,
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl Signer {
    pub fn from_pkcs8(kid: String, alg: SigningAlg, der: &[u8]) -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let bad = |e: ring::error::KeyRejected| {
            Error::Internal(format!("signing key {kid} does not load: {e}"))
        };
        let pair = match alg {
            SigningAlg::RS256 => Pair::Rsa(RsaKeyPair::from_pkcs8(der).map_err(bad)?),
            SigningAlg::ES256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                    .map_err(bad)?,
            ),
            SigningAlg::EdDSA => Pair::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(bad)?),
        };
        Ok(Signer {
            kid,
            alg,
            pair,
            rng,
        })
    }

    /// A compact JWS of `claims` (`typ` as given: `JWT`, `at+jwt`, ...).
    pub fn sign(&self, typ: &str, claims: &Value) -> Result<String, Error> {
        let header = json!({ "alg": self.alg.as_str(), "kid": self.kid, "typ": typ });
        let mut jws = B64.encode(header.to_string());
        jws.push('.');
        jws.push_str(&B64.encode(claims.to_string()));
        let failed = || Error::Internal("signing failed".into());
        let sig = match &self.pair {
            Pair::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    jws.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| failed())?;
                sig
            }
            Pair::Ec(pair) => pair
                .sign(&self.rng, jws.as_bytes())
                .map_err(|_| failed())?
                .as_ref()
                .to_vec(),
            Pair::Ed(pair) => pair.sign(jws.as_bytes()).as_ref().to_vec(),
        };
        jws.push('.');
        jws.push_str(&B64.encode(sig));
        Ok(jws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each algorithm's token verifies with its published JWK (jsonwebtoken,
    /// not this module, checks it).
    #[test]
    fn signed_tokens_verify_with_the_published_key() {
        for alg in [SigningAlg::ES256, SigningAlg::EdDSA, SigningAlg::RS256] {
            let (der, jwk) = generate(alg, "k1").expect("key");
            let signer = Signer::from_pkcs8("k1".into(), alg, &der).expect("signer");
            let claims = json!({ "sub": "u", "aud": "c", "exp": 4_000_000_000u64 });
            let token = signer.sign("JWT", &claims).expect("sign");
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).expect("jwk");
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
            let jalg = match alg {
                SigningAlg::RS256 => jsonwebtoken::Algorithm::RS256,
                SigningAlg::ES256 => jsonwebtoken::Algorithm::ES256,
                SigningAlg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            };
            let mut v = jsonwebtoken::Validation::new(jalg);
            v.set_audience(&["c"]);
            let data = jsonwebtoken::decode::<Value>(&token, &key, &v).expect("verifies");
            assert_eq!(data.claims["sub"], "u");
            assert_eq!(data.header.kid.as_deref(), Some("k1"));
            let mut tampered = token.clone();
            tampered.insert(tampered.find('.').unwrap_or(0) + 2, 'x');
            assert!(jsonwebtoken::decode::<Value>(&tampered, &key, &v).is_err());
        }
    }
}
