//! A software WebAuthn authenticator for tests and the benchmark: one P-256
//! key (ring), "none" attestation, user presence and verification flags,
//! a signature counter. It answers the options authgate sends exactly as
//! a browser would pass them on (the JSON of a `PublicKeyCredential`), and
//! can be told to lie (another origin, another RP id, a bad signature, an
//! old counter) for the refusal cases. The CBOR is written by hand: the
//! few shapes WebAuthn needs.
#![allow(dead_code)]

use base64::Engine;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

/// CBOR: a head of major type `major` with argument `n`.
fn head(major: u8, n: usize, out: &mut Vec<u8>) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=255 => out.extend([m | 24, n as u8]),
        _ => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
    }
}

fn cbor_bytes(b: &[u8], out: &mut Vec<u8>) {
    head(2, b.len(), out);
    out.extend(b);
}

fn cbor_text(s: &str, out: &mut Vec<u8>) {
    head(3, s.len(), out);
    out.extend(s.as_bytes());
}

/// A small CBOR integer (-24..=23).
fn cbor_int(i: i8, out: &mut Vec<u8>) {
    if i >= 0 {
        head(0, i as usize, out);
    } else {
        head(1, (-1 - i as i16) as usize, out);
    }
}

/// What the authenticator says in an answer.
#[derive(Debug, Clone)]
pub struct Lie {
    /// The origin the "browser" reports in clientDataJSON.
    pub origin: String,
    /// The RP id whose hash starts authenticatorData.
    pub rp_id: String,
    /// Flip a bit of the signature.
    pub bad_signature: bool,
    /// Use this counter instead of the next one.
    pub counter: Option<u32>,
}

pub struct SoftAuthenticator {
    key: EcdsaKeyPair,
    pub credential_id: Vec<u8>,
    pub user_handle: Option<Vec<u8>>,
    pub counter: u32,
    pub origin: String,
    pub rp_id: String,
}

impl SoftAuthenticator {
    pub fn new(origin: &str, rp_id: &str) -> SoftAuthenticator {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        SoftAuthenticator {
            key,
            credential_id: ring::rand::generate::<[u8; 32]>(&rng)
                .unwrap()
                .expose()
                .to_vec(),
            user_handle: None,
            counter: 0,
            origin: origin.to_string(),
            rp_id: rp_id.to_string(),
        }
    }

    /// The truth: this authenticator's own origin and RP id.
    pub fn honest(&self) -> Lie {
        Lie {
            origin: self.origin.clone(),
            rp_id: self.rp_id.clone(),
            bad_signature: false,
            counter: None,
        }
    }

    fn cose_key(&self) -> Vec<u8> {
        let public = self.key.public_key().as_ref(); // 0x04 | x | y
        let mut out = Vec::new();
        head(5, 5, &mut out);
        cbor_int(1, &mut out);
        cbor_int(2, &mut out); // kty: EC2
        cbor_int(3, &mut out);
        cbor_int(-7, &mut out); // alg: ES256
        cbor_int(-1, &mut out);
        cbor_int(1, &mut out); // crv: P-256
        cbor_int(-2, &mut out);
        cbor_bytes(&public[1..33], &mut out);
        cbor_int(-3, &mut out);
        cbor_bytes(&public[33..65], &mut out);
        out
    }

    fn client_data(kind: &str, options: &Value, origin: &str) -> Vec<u8> {
        json!({
            "type": kind,
            "challenge": options["publicKey"]["challenge"],
            "origin": origin,
            "crossOrigin": false,
        })
        .to_string()
        .into_bytes()
    }

    /// Answer `navigator.credentials.create()` with authgate's options:
    /// the `PublicKeyCredential` JSON the browser would post.
    pub fn register(&mut self, options: &Value) -> Value {
        let user = options["publicKey"]["user"]["id"].as_str().unwrap();
        self.user_handle = Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(user)
                .unwrap(),
        );
        let client_data = Self::client_data("webauthn.create", options, &self.origin);
        let mut auth = sha256(self.rp_id.as_bytes());
        auth.push(0x01 | 0x04 | 0x40); // UP, UV, attested credential data
        auth.extend(self.counter.to_be_bytes());
        auth.extend([0u8; 16]); // AAGUID
        auth.extend((self.credential_id.len() as u16).to_be_bytes());
        auth.extend(&self.credential_id);
        auth.extend(self.cose_key());
        let mut attestation = Vec::new();
        head(5, 3, &mut attestation);
        cbor_text("fmt", &mut attestation);
        cbor_text("none", &mut attestation);
        cbor_text("attStmt", &mut attestation);
        head(5, 0, &mut attestation);
        cbor_text("authData", &mut attestation);
        cbor_bytes(&auth, &mut attestation);
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "attestationObject": b64(&attestation),
                "clientDataJSON": b64(&client_data),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        })
    }

    /// Answer `navigator.credentials.get()` (a discoverable credential: the
    /// user handle included), saying what `lie` says.
    pub fn assert(&mut self, options: &Value, lie: &Lie) -> Value {
        self.counter += 1;
        let counter = lie.counter.unwrap_or(self.counter);
        let client_data = Self::client_data("webauthn.get", options, &lie.origin);
        let mut auth = sha256(lie.rp_id.as_bytes());
        auth.push(0x01 | 0x04); // UP, UV
        auth.extend(counter.to_be_bytes());
        let mut signed = auth.clone();
        signed.extend(sha256(&client_data));
        let rng = ring::rand::SystemRandom::new();
        let mut signature = self.key.sign(&rng, &signed).unwrap().as_ref().to_vec();
        if lie.bad_signature {
            let last = signature.len() - 1;
            signature[last] ^= 0x01;
        }
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth),
                "clientDataJSON": b64(&client_data),
                "signature": b64(&signature),
                "userHandle": self.user_handle.as_deref().map(b64),
            },
            "clientExtensionResults": {},
        })
    }
}
