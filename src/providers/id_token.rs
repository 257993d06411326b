//! ID-token validation (OpenID Connect Core 3.1.3.7), completely:
//! signature against the provider's JWKS with an allow-list of asymmetric
//! algorithms (never `none`, never HMAC: a public key is no secret), `iss`
//! (exact, or Microsoft's per-tenant issuer), `aud` contains the client,
//! `azp` is the client when present or when there are several audiences,
//! `exp`/`iat`/`nbf` against the core's clock with a small leeway, `nonce`.
use std::str::FromStr;

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::http::Http;
use super::jwks::JwksCache;
use crate::core::ProviderError;

/// Microsoft's tenant of personal accounts.
pub const MSA_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// Longest an ID token may have been issued before it is presented.
const MAX_IAT_AGE_SECS: i64 = 600;

/// The asymmetric algorithms allowed by default.
pub const DEFAULT_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Parse configured algorithm names, keeping only asymmetric ones.
pub fn algorithms(names: Option<&[String]>) -> Vec<Algorithm> {
    match names {
        None => DEFAULT_ALGORITHMS.to_vec(),
        Some(names) => names
            .iter()
            .filter_map(|n| Algorithm::from_str(n).ok())
            .filter(|a| DEFAULT_ALGORITHMS.contains(a))
            .collect(),
    }
}

/// Who may have issued the token.
#[derive(Debug, Clone)]
pub enum IssuerRule {
    /// One of these exact strings.
    Exact(Vec<String>),
    /// Microsoft: `iss` must be `{authority}/{tid}/v2.0` for the token's own
    /// `tid`, and the tenant must be admitted.
    Microsoft {
        authority: String,
        tenant: TenantRule,
        allowed: Vec<String>,
    },
}

/// Which Microsoft tenants the configured `tenant` admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRule {
    /// `common`: work and personal accounts.
    Any,
    /// `organizations`: any tenant but the personal-accounts one.
    Organizations,
    /// `consumers`: personal accounts only.
    Consumers,
    /// One tenant id.
    Single(String),
}

impl IssuerRule {
    /// Could `iss` be this provider's issuer? (For Microsoft: the issuer of
    /// an admitted tenant.)
    pub fn names(&self, iss: &str) -> bool {
        match self {
            IssuerRule::Exact(list) => list.iter().any(|a| a == iss),
            IssuerRule::Microsoft {
                authority,
                tenant,
                allowed,
            } => iss
                .strip_prefix(authority.trim_end_matches('/'))
                .and_then(|rest| rest.strip_prefix('/'))
                .and_then(|rest| rest.strip_suffix("/v2.0"))
                .is_some_and(|tid| {
                    !tid.contains('/')
                        && tenant.admits(tid)
                        && (allowed.is_empty()
                            || allowed.iter().any(|a| a.eq_ignore_ascii_case(tid)))
                }),
        }
    }
}

impl TenantRule {
    pub fn from_config(tenant: &str) -> Self {
        match tenant.to_ascii_lowercase().as_str() {
            "common" => TenantRule::Any,
            "organizations" => TenantRule::Organizations,
            "consumers" => TenantRule::Consumers,
            t => TenantRule::Single(t.to_string()),
        }
    }

    fn admits(&self, tid: &str) -> bool {
        match self {
            TenantRule::Any => true,
            TenantRule::Organizations => tid != MSA_TENANT,
            TenantRule::Consumers => tid == MSA_TENANT,
            TenantRule::Single(t) => t.eq_ignore_ascii_case(tid),
        }
    }
}

pub struct Expectations<'a> {
    pub issuer: &'a IssuerRule,
    pub client_id: &'a str,
    /// Audiences besides the client an ID token may name.
    pub trusted_audiences: &'a [String],
    /// The flow's nonce; `None` only for codes whose authorize step
    /// authgate did not start.
    pub nonce: Option<&'a str>,
    pub algorithms: &'a [Algorithm],
    pub now: i64,
    pub leeway: i64,
}

fn invalid(why: impl Into<String>) -> ProviderError {
    ProviderError::Invalid(format!("ID token: {}", why.into()))
}

/// Validate an ID token and return its claims.
pub async fn validate(
    token: &str,
    jwks: &JwksCache,
    http: &Http,
    expect: &Expectations<'_>,
) -> Result<Map<String, Value>, ProviderError> {
    // The header names an algorithm jsonwebtoken knows (`none` is not one).
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| invalid("malformed or unsupported algorithm"))?;
    if !expect.algorithms.contains(&header.alg) {
        return Err(invalid(format!(
            "algorithm {:?} is not allowed",
            header.alg
        )));
    }
    let candidates = jwks.candidates(http, header.kid.as_deref()).await?;
    let usable: Vec<&Jwk> = candidates
        .iter()
        .filter(|k| usable_for(k, header.alg))
        .collect();
    if usable.is_empty() {
        return Err(invalid("signed with a key the provider does not publish"));
    }
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    // Times are checked below against the core's clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims = ["iss", "sub", "aud"]
        .into_iter()
        .map(String::from)
        .collect();
    validation.set_audience(&[expect.client_id]);
    let mut last = invalid("bad signature");
    let mut claims = None;
    for key in usable {
        let Ok(decoding) = DecodingKey::from_jwk(key) else {
            continue;
        };
        match jsonwebtoken::decode::<Map<String, Value>>(token, &decoding, &validation) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind as K;
                last = match e.kind() {
                    K::InvalidAudience => invalid("audience is not this client"),
                    K::MissingRequiredClaim(c) => invalid(format!("no {c} claim")),
                    K::InvalidSignature | K::InvalidAlgorithm => invalid("bad signature"),
                    _ => invalid("malformed"),
                };
                // A wrong audience or a missing claim is the same under any
                // key: stop at the first verdict that is not about the key.
                if !matches!(
                    e.kind(),
                    K::InvalidSignature | K::InvalidAlgorithm | K::InvalidKeyFormat
                ) {
                    return Err(last);
                }
            }
        }
    }
    let claims = claims.ok_or(last)?;
    check_claims(&claims, expect)?;
    Ok(claims)
}

/// Can this JWK verify a signature of this algorithm?
fn usable_for(key: &Jwk, alg: Algorithm) -> bool {
    if matches!(key.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return false;
    }
    if let Some(ka) = key.common.key_algorithm
        && Algorithm::from_str(&format!("{ka:?}")).ok() != Some(alg)
    {
        return false;
    }
    // HMAC keys are never accepted, whatever the header says.
    !matches!(
        key.algorithm,
        jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
    )
}

fn number(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, ProviderError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| invalid(format!("{name} is not a number"))),
    }
}

pub fn str_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}

fn check_claims(
    claims: &Map<String, Value>,
    expect: &Expectations<'_>,
) -> Result<(), ProviderError> {
    let now = expect.now;
    let leeway = expect.leeway;
    let exp = number(claims, "exp")?.ok_or_else(|| invalid("no exp claim"))?;
    if exp + leeway <= now {
        return Err(invalid("expired"));
    }
    let iat = number(claims, "iat")?.ok_or_else(|| invalid("no iat claim"))?;
    if iat > now + leeway {
        return Err(invalid("issued in the future"));
    }
    if iat < now - MAX_IAT_AGE_SECS - leeway {
        return Err(invalid("issued too long ago"));
    }
    if let Some(nbf) = number(claims, "nbf")?
        && nbf > now + leeway
    {
        return Err(invalid("not yet valid"));
    }
    let audiences = match claims.get("aud") {
        Some(Value::Array(a)) => {
            // Every audience is this client or one trusted by config.
            let trusted = |v: &Value| {
                v.as_str().is_some_and(|a| {
                    a == expect.client_id || expect.trusted_audiences.iter().any(|t| t == a)
                })
            };
            if !a.iter().all(trusted) {
                return Err(invalid("names an audience that is not trusted"));
            }
            a.len()
        }
        _ => 1,
    };
    match str_claim(claims, "azp") {
        Some(azp) if azp != expect.client_id => {
            return Err(invalid("authorized party is another client"));
        }
        None if audiences > 1 => {
            return Err(invalid("several audiences and no authorized party"));
        }
        _ => {}
    }
    let iss = str_claim(claims, "iss").ok_or_else(|| invalid("no iss claim"))?;
    match expect.issuer {
        IssuerRule::Exact(allowed) => {
            if !allowed.iter().any(|a| a == iss) {
                return Err(invalid("issuer is not the configured provider"));
            }
        }
        IssuerRule::Microsoft {
            authority,
            tenant,
            allowed,
        } => {
            let tid = str_claim(claims, "tid").ok_or_else(|| invalid("no tid claim"))?;
            if tid.is_empty() || !tid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(invalid("malformed tid"));
            }
            if iss != format!("{}/{tid}/v2.0", authority.trim_end_matches('/')) {
                return Err(invalid("issuer does not match the token's tenant"));
            }
            if !tenant.admits(tid)
                || (!allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(tid)))
            {
                return Err(invalid("tenant is not allowed"));
            }
        }
    }
    if let Some(expected) = expect.nonce {
        let got = str_claim(claims, "nonce").ok_or_else(|| invalid("no nonce"))?;
        if !bool::from(got.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(invalid("nonce does not match the flow"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn expect<'a>(rule: &'a IssuerRule, nonce: Option<&'a str>) -> Expectations<'a> {
        Expectations {
            issuer: rule,
            client_id: "client",
            trusted_audiences: &[],
            nonce,
            algorithms: &DEFAULT_ALGORITHMS,
            now: 1_000_000,
            leeway: 60,
        }
    }

    fn base() -> Value {
        json!({"iss": "https://idp", "sub": "s", "aud": "client", "exp": 1_000_300, "iat": 999_990, "nonce": "n"})
    }

    #[test]
    fn times_azp_and_nonce_are_checked() {
        let rule = IssuerRule::Exact(vec!["https://idp".into()]);
        assert!(check_claims(&claims(base()), &expect(&rule, Some("n"))).is_ok());
        let with = |k: &str, v: Value| {
            let mut c = claims(base());
            c.insert(k.into(), v);
            check_claims(&c, &expect(&rule, Some("n")))
                .unwrap_err()
                .to_string()
        };
        assert!(with("exp", json!(999_900)).contains("expired"));
        // Within the leeway is still fine.
        let mut c = claims(base());
        c.insert("exp".into(), json!(999_950));
        assert!(check_claims(&c, &expect(&rule, Some("n"))).is_ok());
        assert!(with("iat", json!(1_000_100)).contains("future"));
        assert!(with("iat", json!(990_000)).contains("too long ago"));
        assert!(with("nbf", json!(1_000_500)).contains("not yet"));
        assert!(with("azp", json!("other")).contains("authorized party"));
        assert!(with("aud", json!(["client", "other"])).contains("not trusted"));
        // An extra audience with a matching azp: still refused unless trusted.
        let mut c = claims(base());
        c.insert("aud".into(), json!(["client", "other"]));
        c.insert("azp".into(), json!("client"));
        let err = check_claims(&c, &expect(&rule, Some("n"))).unwrap_err();
        assert!(err.to_string().contains("not trusted"), "{err}");
        let trusted = ["other".to_string()];
        let mut e = expect(&rule, Some("n"));
        e.trusted_audiences = &trusted;
        assert!(check_claims(&c, &e).is_ok());
        c.remove("azp");
        assert!(
            check_claims(&c, &e)
                .unwrap_err()
                .to_string()
                .contains("several audiences")
        );
        assert!(with("nonce", json!("m")).contains("nonce"));
        assert!(with("iss", json!("https://evil")).contains("issuer"));
        let mut c = claims(base());
        c.remove("nonce");
        assert!(check_claims(&c, &expect(&rule, Some("n"))).is_err());
        // No flow nonce (legacy code exchange): a token nonce is not required.
        assert!(check_claims(&c, &expect(&rule, None)).is_ok());
    }

    #[test]
    fn microsoft_issuer_must_be_the_tokens_own_tenant() {
        let ms = |tenant: &str, allowed: &[&str]| IssuerRule::Microsoft {
            authority: "https://login.example/".into(),
            tenant: TenantRule::from_config(tenant),
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
        };
        let token = |iss: &str, tid: &str| {
            let mut c = claims(base());
            c.insert("iss".into(), json!(iss));
            c.insert("tid".into(), json!(tid));
            c
        };
        let good = token("https://login.example/t1/v2.0", "t1");
        assert!(check_claims(&good, &expect(&ms("common", &[]), Some("n"))).is_ok());
        assert!(check_claims(&good, &expect(&ms("organizations", &[]), Some("n"))).is_ok());
        assert!(check_claims(&good, &expect(&ms("T1", &[]), Some("n"))).is_ok());
        assert!(check_claims(&good, &expect(&ms("t2", &[]), Some("n"))).is_err());
        assert!(check_claims(&good, &expect(&ms("consumers", &[]), Some("n"))).is_err());
        assert!(check_claims(&good, &expect(&ms("common", &["t2"]), Some("n"))).is_err());
        assert!(check_claims(&good, &expect(&ms("common", &["t1"]), Some("n"))).is_ok());
        // Another tenant's issuer with this tid (or the reverse) is refused.
        let forged = token("https://login.example/t2/v2.0", "t1");
        assert!(check_claims(&forged, &expect(&ms("common", &[]), Some("n"))).is_err());
        let msa = token(
            &format!("https://login.example/{MSA_TENANT}/v2.0"),
            MSA_TENANT,
        );
        assert!(check_claims(&msa, &expect(&ms("organizations", &[]), Some("n"))).is_err());
        assert!(check_claims(&msa, &expect(&ms("consumers", &[]), Some("n"))).is_ok());
    }

    #[test]
    fn only_asymmetric_algorithms_can_be_configured() {
        let names = vec!["HS256".to_string(), "RS256".to_string(), "none".to_string()];
        assert_eq!(algorithms(Some(&names)), vec![Algorithm::RS256]);
        assert_eq!(algorithms(None).len(), 9);
    }
}
