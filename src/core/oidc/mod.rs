//! authgate as an OpenID Provider: the rules of the authorization code
//! flow (with PKCE), the token endpoint's grants, the tokens and their
//! claims, and the signing keys. The HTTP surface (`http::oidc`) only reads
//! and writes the wire format.
//!
//! What is stored: grants (what a client holds for a person, or for itself),
//! authorization codes and tokens by their SHA-256 only, and signing keys
//! sealed by the vault. A code is single use; presenting it again revokes
//! its grant and with it every token it gave. A refresh token is rotated on
//! every use; presenting a used one revokes its whole family.
use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Digest;
use uuid::Uuid;

use super::secret::{self, MAX_TOKEN_LEN, TokenFormat, ct_eq};
use super::{ClientMeta, Core, Error, SessionCheck, Timestamp, User};

pub mod backchannel;
pub(crate) mod cache;
pub mod clients;
pub mod keys;
pub use clients::{
    AccessTokenFormat, ClientSettings, ClientSource, ClientView, StoredClient, SubjectType,
};
pub use keys::SigningAlg;

/// The core's name for this surface (parked requests, audit).
pub const SURFACE: &str = "oidc";

/// The scopes authgate knows (a client may be limited to fewer).
pub const SCOPES: [&str; 4] = ["openid", "email", "profile", "offline_access"];

/// The `acr` of a sign-in with one factor (NIST AAL1).
pub const ACR_SINGLE_FACTOR: &str = "aal1";
/// The `acr` of a sign-in with a second factor (NIST AAL2).
pub const ACR_MULTI_FACTOR: &str = "aal2";

/// A grant's `amr` values (RFC 8176; the session's methods, space
/// separated) and the `acr` they make.
fn amr_and_acr(amr: &str) -> (Vec<&str>, &'static str) {
    let values: Vec<&str> = amr.split_whitespace().collect();
    let acr = if values.contains(&super::mfa::AMR_MFA) {
        ACR_MULTI_FACTOR
    } else {
        ACR_SINGLE_FACTOR
    };
    (values, acr)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

impl GrantType {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
        }
    }
}

/// A registered relying party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    /// The name the consent page shows.
    pub name: Option<String>,
    /// SHA-256 of the client secret; `None`: a public client (PKCE, no
    /// secret).
    pub secret_hash: Option<[u8; 32]>,
    /// Exact matches only.
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    /// The scopes it may ask for.
    pub scopes: Vec<String>,
    pub access_token_ttl: i64,
    pub id_token_ttl: i64,
    /// The lifetime of a refresh-token family, from the sign-in.
    pub refresh_token_ttl: i64,
    /// The public keys of a `private_key_jwt` client (then it has no
    /// secret and authenticates by a signed assertion, RFC 7523).
    pub jwks: Option<jsonwebtoken::jwk::JwkSet>,
    /// Pairwise subjects: the sector (the host of its redirect URIs) its
    /// `sub` values are computed for; `None`: authgate's user id.
    pub pairwise_sector: Option<String>,
    /// Asked for consent (not the operator's own application).
    pub third_party: bool,
    /// Access tokens are JWTs (RFC 9068) rather than opaque.
    pub jwt_access_tokens: bool,
    /// OpenID Connect Back-Channel Logout: where logout tokens go.
    pub backchannel_logout_uri: Option<String>,
}

impl Client {
    /// No secret and no keys: it cannot authenticate (PKCE only).
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none() && self.jwks.is_none()
    }

    pub fn allows(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }
}

/// The provider's settings (`[oidc]` and `[clients.*]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcPolicy {
    /// `server.public_url` without a trailing slash.
    pub issuer: String,
    pub clients: BTreeMap<String, Arc<Client>>,
    /// Seconds the clients stored by the CLI are kept in memory before
    /// they are read again.
    pub client_cache_secs: i64,
    /// Seconds an authorization code lives.
    pub code_ttl: i64,
    /// The algorithm new signing keys are made for.
    pub signing_alg: SigningAlg,
    /// Seconds the signing keys are kept in memory before they are read
    /// again (so a rotation by the CLI or another instance is seen).
    pub key_cache_secs: i64,
    /// Seconds a rotated-in key is published before it signs.
    pub rotation_lead: i64,
    /// The salt of pairwise subjects (`oidc.pairwise_secret`).
    pub pairwise_secret: Option<Salt>,
    /// Seconds a userinfo answer may be served from memory (SQLite only;
    /// 0: never).
    pub userinfo_cache_secs: i64,
}

/// A secret salt: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Salt(pub String);

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("********")
    }
}

impl Default for OidcPolicy {
    fn default() -> Self {
        OidcPolicy {
            issuer: String::new(),
            clients: BTreeMap::new(),
            client_cache_secs: 5,
            code_ttl: 60,
            signing_alg: SigningAlg::RS256,
            key_cache_secs: 5,
            rotation_lead: 300,
            pairwise_secret: None,
            userinfo_cache_secs: 5,
        }
    }
}

// ---------------------------------------------------------------- stored

/// A signing key as stored: the private half sealed by the vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: Uuid,
    pub alg: String,
    pub private_key: Vec<u8>,
    pub public_jwk: String,
    pub created_at: Timestamp,
    /// Signs from then on (published before, so relying parties' key
    /// caches hold it when the first token it signed arrives).
    pub signs_from: Timestamp,
    /// No longer signs from then on.
    pub retired_at: Option<Timestamp>,
    /// Leaves the JWKS then (a retired key).
    pub published_until: Option<Timestamp>,
}

/// What a client holds: for a person (a sign-in), or for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: Uuid,
    pub client_id: String,
    pub user_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub scope: String,
    pub auth_time: Option<Timestamp>,
    pub amr: String,
    pub nonce: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl Grant {
    fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}

/// An authorization code as stored (its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    pub code_hash: Vec<u8>,
    pub grant_id: Uuid,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => "access",
            TokenKind::Refresh => "refresh",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "access" => Some(TokenKind::Access),
            "refresh" => Some(TokenKind::Refresh),
            _ => None,
        }
    }
}

/// An access or refresh token as stored (its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token_hash: Vec<u8>,
    pub grant_id: Uuid,
    pub kind: TokenKind,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// A refresh token that was rotated (spent).
    pub used_at: Option<Timestamp>,
}

/// Spending a single-use credential (a code, a refresh token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spend<T> {
    /// Spent now, by this client.
    Spent(T),
    /// Spent before: the grant it belongs to.
    Reused(Uuid),
    /// Unknown, expired, or another client's.
    Unknown,
}

// ---------------------------------------------------------------- authorize

/// An authorization request's parameters, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub response_mode: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub prompt: Option<String>,
    pub max_age: Option<String>,
    pub login_hint: Option<String>,
    pub ui_locales: Option<String>,
    pub request: Option<String>,
    pub request_uri: Option<String>,
}

/// A checked authorization request, kept server-side while the person
/// signs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt: Vec<String>,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    pub ui_locales: Option<String>,
    pub requested_at: Timestamp,
    /// Kept while the person signs in ([`Core::park_authorization`]).
    #[serde(default)]
    pub parked: bool,
    /// The session the browser had when the request was parked: a sign-in
    /// asked for (`prompt=login`) is one that replaced it.
    #[serde(default)]
    pub stale_session: Option<Uuid>,
    /// The person of this session allowed the (third-party) client the
    /// scope on the consent page, for this request.
    #[serde(default)]
    pub consented_in: Option<Uuid>,
}

impl Authorization {
    fn prompts(&self, p: &str) -> bool {
        self.prompt.iter().any(|x| x == p)
    }

    /// The browser's redirect back to the client with an OAuth error.
    pub fn error_redirect(&self, issuer: &str, error: &str, description: &str) -> String {
        error_redirect(
            &self.redirect_uri,
            self.state.as_deref(),
            issuer,
            error,
            description,
        )
    }
}

/// Why an authorization request is refused.
#[derive(Debug)]
pub enum AuthorizeError {
    /// An unknown client or an unregistered redirect URI: said on a page,
    /// never redirected (the redirect could lead anywhere).
    NoRedirect(&'static str),
    /// Any other fault: the browser goes back to the client with it.
    Redirect(String),
    /// The clients could not be read.
    Failed(Error),
}

/// What happens with a checked request and the browser's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Go back to the client: with a code, or with an error.
    Redirect(String),
    /// The person must sign in (again, with `reauth`: a session exists but
    /// is too old or `prompt=login` asked for a new sign-in).
    SignIn { reauth: bool },
    /// A third-party client: the person is asked whether it may have
    /// `scopes` (the consent page), as `client` (its name, else its id).
    Consent { client: String, scopes: Vec<String> },
}

fn error_redirect(
    redirect_uri: &str,
    state: Option<&str>,
    issuer: &str,
    error: &str,
    description: &str,
) -> String {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", issuer));
    with_query(redirect_uri, &params)
}

/// `uri` with `params` added to its query (the redirect URI may have one).
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(params);
            url.to_string()
        }
        // Registered URIs are checked as URLs at start: never reached.
        Err(_) => uri.to_string(),
    }
}

/// Longest access token looked up (a JWT access token is some 1,000
/// characters; an opaque one 43).
const MAX_BEARER_LEN: usize = 4096;

/// Longest `state`, `nonce`, `login_hint` accepted.
const MAX_PARAM: usize = 1024;

impl Core {
    pub fn oidc_policy(&self) -> &OidcPolicy {
        &self.inner.oidc
    }

    /// Check an authorization request (OpenID Connect Core 3.1.2.1 with
    /// RFC 9700's rules: code flow only, PKCE S256, exact redirect URIs).
    pub async fn check_authorization(
        &self,
        req: &AuthorizationRequest,
    ) -> Result<Authorization, AuthorizeError> {
        let client = match req.client_id.as_deref() {
            Some(id) => self.oidc_client(id).await.map_err(AuthorizeError::Failed)?,
            None => None,
        }
        .ok_or(AuthorizeError::NoRedirect("unknown_client"))?;
        let redirect_uri = req
            .redirect_uri
            .as_deref()
            .filter(|r| client.redirect_uris.iter().any(|u| u == r))
            .ok_or(AuthorizeError::NoRedirect("unknown_redirect_uri"))?;
        let issuer = &self.inner.oidc.issuer;
        let state = req.state.as_deref().filter(|s| !s.is_empty());
        let refuse = |error: &str, description: &str| {
            AuthorizeError::Redirect(error_redirect(
                redirect_uri,
                state.filter(|s| s.len() <= MAX_PARAM),
                issuer,
                error,
                description,
            ))
        };
        if req.request.is_some() {
            return Err(refuse(
                "request_not_supported",
                "request objects are not supported",
            ));
        }
        if req.request_uri.is_some() {
            return Err(refuse(
                "request_uri_not_supported",
                "request_uri is not supported",
            ));
        }
        match req.response_type.as_deref() {
            Some("code") => {}
            None | Some("") => return Err(refuse("invalid_request", "response_type is missing")),
            Some(_) => {
                return Err(refuse(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                ));
            }
        }
        if req.response_mode.as_deref().is_some_and(|m| m != "query") {
            return Err(refuse(
                "invalid_request",
                "only response_mode=query is supported",
            ));
        }
        if !client.allows(GrantType::AuthorizationCode) {
            return Err(refuse(
                "unauthorized_client",
                "this client may not use the authorization code flow",
            ));
        }
        for (name, value) in [
            ("state", &req.state),
            ("nonce", &req.nonce),
            ("login_hint", &req.login_hint),
            ("ui_locales", &req.ui_locales),
        ] {
            if value.as_deref().is_some_and(|v| v.len() > MAX_PARAM) {
                return Err(refuse("invalid_request", &format!("{name} is too long")));
            }
        }
        let scopes: Vec<&str> = req
            .scope
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .collect();
        if !scopes.contains(&"openid") {
            return Err(refuse("invalid_scope", "scope must include openid"));
        }
        if let Some(s) = scopes
            .iter()
            .find(|s| !client.scopes.iter().any(|c| c == *s))
        {
            return Err(refuse(
                "invalid_scope",
                &format!("scope {s} is not allowed for this client"),
            ));
        }
        let code_challenge = match (
            req.code_challenge.as_deref(),
            req.code_challenge_method.as_deref(),
        ) {
            (None, None) if client.is_public() => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge is required (PKCE with S256)",
                ));
            }
            (None, None) => None,
            (Some(c), Some("S256")) if is_s256_challenge(c) => Some(c.to_string()),
            (Some(_), Some("S256")) => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge must be 43 base64url characters",
                ));
            }
            (Some(_), None) | (Some(_), Some("plain")) => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge_method must be S256",
                ));
            }
            _ => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge_method must be S256, with a code_challenge",
                ));
            }
        };
        let prompt: Vec<String> = req
            .prompt
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if let Some(p) = prompt
            .iter()
            .find(|p| !["none", "login", "consent", "select_account"].contains(&p.as_str()))
        {
            return Err(refuse("invalid_request", &format!("unknown prompt {p}")));
        }
        if prompt.len() > 1 && prompt.iter().any(|p| p == "none") {
            return Err(refuse(
                "invalid_request",
                "prompt=none cannot be combined with other values",
            ));
        }
        let max_age = match req.max_age.as_deref() {
            None | Some("") => None,
            Some(m) => match m.parse::<i64>() {
                Ok(n) if n >= 0 => Some(n),
                _ => {
                    return Err(refuse(
                        "invalid_request",
                        "max_age must be a number of seconds",
                    ));
                }
            },
        };
        let mut scope: Vec<&str> = Vec::new();
        for s in scopes {
            if !scope.contains(&s) {
                scope.push(s);
            }
        }
        Ok(Authorization {
            client_id: client.id.clone(),
            redirect_uri: redirect_uri.to_string(),
            scope: scope.join(" "),
            state: state.map(str::to_string),
            nonce: req.nonce.clone().filter(|n| !n.is_empty()),
            code_challenge,
            prompt,
            max_age,
            login_hint: req.login_hint.clone().filter(|h| !h.is_empty()),
            ui_locales: req.ui_locales.clone().filter(|l| !l.is_empty()),
            requested_at: self.now(),
            parked: false,
            stale_session: None,
            consented_in: None,
        })
    }

    /// What a checked request needs given the browser's session: a code at
    /// once, a (new) sign-in first, or `login_required` with `prompt=none`.
    pub async fn authorization_next(
        &self,
        a: &Authorization,
        session: Option<&SessionCheck>,
        meta: &ClientMeta,
    ) -> Result<Next, Error> {
        let issuer = &self.inner.oidc.issuer;
        let relogin = a.prompts("login") || a.prompts("select_account");
        let fresh = session.map(|s| {
            // Asked for a new sign-in: one since the request was parked
            // (every sign-in makes a new session).
            let signed_in_since = a.parked && a.stale_session != Some(s.session.id);
            (!relogin || signed_in_since)
                && a.max_age
                    .is_none_or(|m| self.now() - s.session.created_at <= m)
        });
        match fresh {
            Some(true) => {}
            Some(false) | None if a.prompts("none") => {
                return Ok(Next::Redirect(a.error_redirect(
                    issuer,
                    "login_required",
                    "the person is not signed in (prompt=none)",
                )));
            }
            Some(false) => return Ok(Next::SignIn { reauth: true }),
            None => return Ok(Next::SignIn { reauth: false }),
        }
        let Some(s) = session else {
            return Ok(Next::SignIn { reauth: false });
        };
        if let Some(next) = self.consent_needed(a, s).await? {
            return Ok(next);
        }
        let code = self.issue_code(a, s, meta).await?;
        let mut params = vec![("code", code.as_str())];
        if let Some(state) = &a.state {
            params.push(("state", state));
        }
        params.push(("iss", issuer));
        Ok(Next::Redirect(with_query(&a.redirect_uri, &params)))
    }

    /// A third-party client's request that needs the person's consent
    /// first: never asked, asked for less, or `prompt=consent`. With
    /// `prompt=none`, `consent_required` goes back to the client.
    async fn consent_needed(
        &self,
        a: &Authorization,
        s: &SessionCheck,
    ) -> Result<Option<Next>, Error> {
        let Some(client) = self.oidc_client(&a.client_id).await? else {
            return Err(Error::Forbidden("unknown client"));
        };
        if !client.third_party || a.consented_in == Some(s.session.id) {
            return Ok(None);
        }
        let granted = self.store().oidc_consent(s.user.id, &client.id).await?;
        let covered = granted.as_deref().is_some_and(|g| {
            a.scope
                .split(' ')
                .all(|want| g.split(' ').any(|had| had == want))
        });
        if covered && !a.prompts("consent") {
            return Ok(None);
        }
        if a.prompts("none") {
            return Ok(Some(Next::Redirect(a.error_redirect(
                &self.inner.oidc.issuer,
                "consent_required",
                "the person has not allowed this client (prompt=none)",
            ))));
        }
        Ok(Some(Next::Consent {
            client: client.name.clone().unwrap_or_else(|| client.id.clone()),
            scopes: a.scope.split(' ').map(str::to_string).collect(),
        }))
    }

    /// The person answered the consent page for `a`, signed in as `s`:
    /// allowed, the consent is kept (widened to this scope) and the request
    /// goes on as consented in this session; denied, the client hears
    /// `access_denied`. Returns the request to go on with, or the redirect.
    pub async fn answer_consent(
        &self,
        a: &Authorization,
        s: &SessionCheck,
        allow: bool,
        meta: &ClientMeta,
    ) -> Result<Result<Authorization, String>, Error> {
        let detail = json!({ "client_id": a.client_id, "scope": a.scope });
        if !allow {
            self.audit("oidc.consent_denied", Some(s.user.id), meta, Some(detail))
                .await;
            return Ok(Err(a.error_redirect(
                &self.inner.oidc.issuer,
                "access_denied",
                "the person did not allow this client",
            )));
        }
        let mut scope: Vec<String> = self
            .store()
            .oidc_consent(s.user.id, &a.client_id)
            .await?
            .unwrap_or_default()
            .split(' ')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect();
        for want in a.scope.split(' ') {
            if !scope.iter().any(|x| x == want) {
                scope.push(want.to_string());
            }
        }
        self.store()
            .put_oidc_consent(s.user.id, &a.client_id, &scope.join(" "), self.now())
            .await?;
        self.audit("oidc.consent_granted", Some(s.user.id), meta, Some(detail))
            .await;
        Ok(Ok(Authorization {
            consented_in: Some(s.session.id),
            ..a.clone()
        }))
    }

    /// Keep a checked request while the person signs in (replacing
    /// `session`, the browser's current one, if any); returns its key (for
    /// the resume URL), counted as a flow start of this client.
    pub async fn park_authorization(
        &self,
        a: &Authorization,
        session: Option<&SessionCheck>,
        ip: Option<&str>,
    ) -> Result<String, Error> {
        let parked = Authorization {
            parked: true,
            stale_session: session.map(|s| s.session.id),
            ..a.clone()
        };
        let data = serde_json::to_string(&parked).map_err(|e| Error::Internal(e.to_string()))?;
        self.remember_flow(SURFACE, None, Some(data), ip).await
    }

    /// A parked request (not spent: the person may come back to it).
    pub async fn parked_authorization(&self, key: &str) -> Result<Option<Authorization>, Error> {
        match self.peek_flow(key, SURFACE).await {
            Ok(flow) => Ok(flow.data.and_then(|d| serde_json::from_str(&d).ok())),
            Err(Error::Unauthorized) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Spend a parked request (its code is being issued).
    pub async fn forget_authorization(&self, key: &str) -> Result<(), Error> {
        match self.take_flow(key, Some(""), SURFACE).await {
            Ok(_) | Err(Error::Unauthorized) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn issue_code(
        &self,
        a: &Authorization,
        s: &SessionCheck,
        meta: &ClientMeta,
    ) -> Result<String, Error> {
        let client = self
            .oidc_client(&a.client_id)
            .await?
            .ok_or(Error::Forbidden("unknown client"))?;
        let now = self.now();
        let grant = Grant {
            id: Uuid::now_v7(),
            client_id: client.id.clone(),
            user_id: Some(s.user.id),
            session_id: Some(s.session.id),
            scope: a.scope.clone(),
            auth_time: Some(s.session.created_at),
            amr: s.session.method.clone(),
            nonce: a.nonce.clone(),
            created_at: now,
            expires_at: now.saturating_add(client.refresh_token_ttl.max(client.access_token_ttl)),
            revoked_at: None,
        };
        let code = secret::new_token(TokenFormat::UrlSafe32)?;
        let stored = AuthCode {
            code_hash: secret::hash_token(&code).to_vec(),
            grant_id: grant.id,
            redirect_uri: a.redirect_uri.clone(),
            code_challenge: a.code_challenge.clone(),
            created_at: now,
            expires_at: now + self.inner.oidc.code_ttl,
        };
        self.store()
            .insert_oidc_grant(&grant, Some(&stored), &[])
            .await?;
        self.audit(
            "oidc.authorized",
            Some(s.user.id),
            meta,
            Some(json!({ "client": client.id, "scope": a.scope, "session": s.session.id })),
        )
        .await;
        Ok(code)
    }
}

/// An S256 code challenge: base64url of 32 bytes (43 characters).
fn is_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 4.1: 43 to 128 unreserved characters.
fn is_code_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

// ---------------------------------------------------------------- token

/// How a client authenticated at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub client_id: String,
    /// `client_secret_basic` or `client_secret_post`; `None`: a public client.
    pub secret: Option<String>,
    /// `private_key_jwt`: the signed client assertion.
    pub assertion: Option<String>,
}

/// RFC 7523's `client_assertion_type`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The algorithms a client assertion may be signed with (asymmetric only).
const ASSERTION_ALGS: [jsonwebtoken::Algorithm; 9] = [
    jsonwebtoken::Algorithm::RS256,
    jsonwebtoken::Algorithm::RS384,
    jsonwebtoken::Algorithm::RS512,
    jsonwebtoken::Algorithm::PS256,
    jsonwebtoken::Algorithm::PS384,
    jsonwebtoken::Algorithm::PS512,
    jsonwebtoken::Algorithm::ES256,
    jsonwebtoken::Algorithm::ES384,
    jsonwebtoken::Algorithm::EdDSA,
];

/// Longest-lived client assertion accepted (seconds from now to `exp`).
const MAX_ASSERTION_LIFETIME: i64 = 600;

/// A token request's parameters, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// An OAuth 2 error (RFC 6749 5.2): the code and a description safe to show.
#[derive(Debug)]
pub enum OAuthError {
    InvalidRequest(String),
    InvalidClient(&'static str),
    InvalidGrant(&'static str),
    UnauthorizedClient(&'static str),
    UnsupportedGrantType,
    InvalidScope(String),
    /// A bearer token that is missing, unknown, expired or revoked (RFC 6750).
    InvalidToken,
    Server(Error),
}

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType => "unsupported_grant_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::InvalidToken => "invalid_token",
            OAuthError::Server(e) if e.is_outage() => "temporarily_unavailable",
            OAuthError::Server(_) => "server_error",
        }
    }

    pub fn description(&self) -> String {
        match self {
            OAuthError::InvalidRequest(d) | OAuthError::InvalidScope(d) => d.clone(),
            OAuthError::InvalidClient(d)
            | OAuthError::InvalidGrant(d)
            | OAuthError::UnauthorizedClient(d) => d.to_string(),
            OAuthError::UnsupportedGrantType => {
                "grant_type must be authorization_code, refresh_token or client_credentials".into()
            }
            OAuthError::InvalidToken => "the access token is not valid".into(),
            OAuthError::Server(e) if e.is_outage() => "the database is unavailable".into(),
            OAuthError::Server(_) => "the request could not be completed".into(),
        }
    }
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        OAuthError::Server(e)
    }
}

impl From<super::ports::storage::StoreError> for OAuthError {
    fn from(e: super::ports::storage::StoreError) -> Self {
        OAuthError::Server(e.into())
    }
}

enum AssertionFault {
    /// Why it is refused (for the log; the client hears `invalid_client`).
    Bad(&'static str),
    Store(super::ports::storage::StoreError),
}

fn sha256(s: &str) -> [u8; 32] {
    sha2::Sha256::digest(s.as_bytes()).into()
}

/// A client secret's stored form.
pub fn hash_client_secret(secret: &str) -> [u8; 32] {
    sha256(secret)
}

impl Core {
    /// Authenticate a client at the token endpoint: a confidential client
    /// by its secret (compared as hashes, in constant time), a public one by
    /// its id alone.
    pub async fn authenticate_client(&self, auth: &ClientAuth) -> Result<Arc<Client>, OAuthError> {
        const BAD: &str = "client authentication failed";
        let client = self
            .oidc_client(&auth.client_id)
            .await
            .map_err(OAuthError::Server)?
            .ok_or(OAuthError::InvalidClient(BAD))?;
        match (&client.jwks, &auth.assertion) {
            (Some(jwks), Some(a)) if auth.secret.is_none() => {
                return match self.check_assertion(&client, jwks, a).await {
                    Ok(()) => Ok(client),
                    Err(AssertionFault::Store(e)) => Err(OAuthError::Server(e.into())),
                    Err(AssertionFault::Bad(why)) => {
                        tracing::info!(client = %client.id, reason = why, "client assertion refused");
                        Err(OAuthError::InvalidClient(BAD))
                    }
                };
            }
            (Some(_), _) | (None, Some(_)) => return Err(OAuthError::InvalidClient(BAD)),
            (None, None) => {}
        }
        match (&client.secret_hash, &auth.secret) {
            (Some(hash), Some(given)) if ct_eq(hash, &sha256(given)) => Ok(client),
            (None, None) => Ok(client),
            _ => Err(OAuthError::InvalidClient(BAD)),
        }
    }

    /// A `private_key_jwt` assertion (RFC 7523 3): signed by one of the
    /// client's keys with an asymmetric algorithm, `iss` and `sub` the
    /// client, `aud` the issuer or the token endpoint, not expired and not
    /// long-lived, and a `jti` never seen before.
    async fn check_assertion(
        &self,
        client: &Client,
        jwks: &jsonwebtoken::jwk::JwkSet,
        assertion: &str,
    ) -> Result<(), AssertionFault> {
        use AssertionFault::Bad;
        if assertion.len() > 16 * 1024 {
            return Err(Bad("too long"));
        }
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| Bad("malformed"))?;
        if !ASSERTION_ALGS.contains(&header.alg) {
            return Err(Bad("algorithm not allowed"));
        }
        let jwk = match header.kid.as_deref() {
            Some(kid) => jwks.find(kid),
            None if jwks.keys.len() == 1 => jwks.keys.first(),
            None => None,
        }
        .ok_or(Bad("no such key"))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|_| Bad("unusable key"))?;
        let issuer = &self.inner.oidc.issuer;
        let mut v = jsonwebtoken::Validation::new(header.alg);
        // Times are checked below, on the core's clock.
        v.validate_exp = false;
        v.required_spec_claims = ["iss", "sub", "aud", "exp"]
            .into_iter()
            .map(str::to_string)
            .collect();
        v.set_issuer(&[&client.id]);
        v.set_audience(&[issuer.clone(), format!("{issuer}/oauth2/token")]);
        let claims = jsonwebtoken::decode::<Value>(assertion, &key, &v)
            .map_err(|_| Bad("signature or claims"))?
            .claims;
        if claims["sub"].as_str() != Some(client.id.as_str()) {
            return Err(Bad("sub is not the client"));
        }
        let now = self.now();
        let exp = claims["exp"].as_i64().ok_or(Bad("exp"))?;
        if exp + 30 <= now {
            return Err(Bad("expired"));
        }
        if exp - now > MAX_ASSERTION_LIFETIME {
            return Err(Bad("lives too long"));
        }
        if claims["nbf"].as_i64().is_some_and(|nbf| nbf > now + 30) {
            return Err(Bad("not yet valid"));
        }
        let jti = claims["jti"]
            .as_str()
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or(Bad("jti"))?;
        let seen = sha256(&format!("{}\n{jti}", client.id));
        match self.store().insert_oidc_assertion(&seen, exp + 30).await {
            Ok(()) => Ok(()),
            Err(super::ports::storage::StoreError::Conflict(_)) => Err(Bad("replayed")),
            Err(e) => Err(AssertionFault::Store(e)),
        }
    }

    /// The token endpoint, for an authenticated client.
    pub async fn token(
        &self,
        client: &Client,
        req: &TokenRequest,
        meta: &ClientMeta,
    ) -> Result<TokenResponse, OAuthError> {
        match req.grant_type.as_deref() {
            Some("authorization_code") => self.redeem_authorization_code(client, req, meta).await,
            Some("refresh_token") => self.refresh(client, req, meta).await,
            Some("client_credentials") => self.client_credentials(client, req).await,
            None | Some("") => Err(OAuthError::InvalidRequest("grant_type is missing".into())),
            Some(_) => Err(OAuthError::UnsupportedGrantType),
        }
    }

    async fn redeem_authorization_code(
        &self,
        client: &Client,
        req: &TokenRequest,
        meta: &ClientMeta,
    ) -> Result<TokenResponse, OAuthError> {
        if !client.allows(GrantType::AuthorizationCode) {
            return Err(OAuthError::UnauthorizedClient(
                "this client may not use authorization codes",
            ));
        }
        let code = req
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OAuthError::InvalidRequest("code is missing".into()))?;
        let redirect_uri = req
            .redirect_uri
            .as_deref()
            .ok_or_else(|| OAuthError::InvalidRequest("redirect_uri is missing".into()))?;
        const BAD: &str = "the code is invalid, expired, used or another client's";
        if code.len() > MAX_TOKEN_LEN {
            return Err(OAuthError::InvalidGrant(BAD));
        }
        let now = self.now();
        let (stored, grant, person) = match self
            .store()
            .redeem_oidc_code(&secret::hash_token(code), &client.id, now)
            .await?
        {
            Spend::Spent(x) => x,
            Spend::Reused(grant_id) => {
                // A code seen twice was stolen or replayed: end what the
                // first redemption gave (RFC 9700 4.5, OAuth 2.1 4.1.3).
                self.revoke_grant(grant_id).await?;
                self.audit(
                    "oidc.code_reused",
                    None,
                    meta,
                    Some(json!({ "client": client.id, "grant": grant_id })),
                )
                .await;
                return Err(OAuthError::InvalidGrant(BAD));
            }
            Spend::Unknown => return Err(OAuthError::InvalidGrant(BAD)),
        };
        if stored.redirect_uri != redirect_uri {
            return Err(OAuthError::InvalidGrant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        match (&stored.code_challenge, req.code_verifier.as_deref()) {
            (Some(challenge), Some(v)) if is_code_verifier(v) => {
                let computed = B64.encode(sha256(v));
                if !ct_eq(computed.as_bytes(), challenge.as_bytes()) {
                    return Err(OAuthError::InvalidGrant(
                        "code_verifier does not match the code_challenge",
                    ));
                }
            }
            (Some(_), Some(_)) => {
                return Err(OAuthError::InvalidGrant("code_verifier is malformed"));
            }
            (Some(_), None) => return Err(OAuthError::InvalidGrant("code_verifier is missing")),
            // A verifier without a challenge: a downgrade attempt.
            (None, Some(_)) => {
                return Err(OAuthError::InvalidGrant(
                    "code_verifier given, but the authorization request had no code_challenge",
                ));
            }
            (None, None) => {}
        }
        let user = match (grant.user_id, person) {
            (None, _) => None,
            (Some(_), Some(u)) if !u.disabled => Some(u),
            (Some(_), _) => {
                return Err(OAuthError::InvalidGrant(
                    "the account is disabled or deleted",
                ));
            }
        };
        self.issue_tokens(client, &grant, user.as_ref(), grant.nonce.as_deref(), true)
            .await
    }

    async fn refresh(
        &self,
        client: &Client,
        req: &TokenRequest,
        meta: &ClientMeta,
    ) -> Result<TokenResponse, OAuthError> {
        if !client.allows(GrantType::RefreshToken) {
            return Err(OAuthError::UnauthorizedClient(
                "this client may not use refresh tokens",
            ));
        }
        let token = req
            .refresh_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is missing".into()))?;
        const BAD: &str = "the refresh token is invalid, expired, used or revoked";
        if token.len() > MAX_TOKEN_LEN {
            return Err(OAuthError::InvalidGrant(BAD));
        }
        let now = self.now();
        let grant = match self
            .store()
            .use_refresh_token(&secret::hash_token(token), &client.id, now)
            .await?
        {
            Spend::Spent(grant) => grant,
            Spend::Reused(grant_id) => {
                self.revoke_grant(grant_id).await?;
                self.audit(
                    "oidc.refresh_reused",
                    None,
                    meta,
                    Some(json!({ "client": client.id, "grant": grant_id })),
                )
                .await;
                return Err(OAuthError::InvalidGrant(BAD));
            }
            Spend::Unknown => return Err(OAuthError::InvalidGrant(BAD)),
        };
        if grant.revoked_at.is_some() || grant.expires_at <= now {
            return Err(OAuthError::InvalidGrant(BAD));
        }
        if let Some(asked) = req.scope.as_deref().filter(|s| !s.is_empty())
            && let Some(s) = asked
                .split(' ')
                .find(|s| !s.is_empty() && !grant.has_scope(s))
        {
            return Err(OAuthError::InvalidScope(format!(
                "scope {s} was not granted"
            )));
        }
        let user = self.grant_user(&grant).await?;
        self.issue_tokens(client, &grant, user.as_ref(), None, true)
            .await
    }

    async fn client_credentials(
        &self,
        client: &Client,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        if !client.allows(GrantType::ClientCredentials) || client.is_public() {
            return Err(OAuthError::UnauthorizedClient(
                "this client may not use client_credentials",
            ));
        }
        let asked = req.scope.as_deref().unwrap_or_default();
        let mut scope: Vec<&str> = Vec::new();
        for s in asked.split(' ').filter(|s| !s.is_empty()) {
            if SCOPES.contains(&s) || !client.scopes.iter().any(|c| c == s) {
                return Err(OAuthError::InvalidScope(format!(
                    "scope {s} is not allowed for client_credentials"
                )));
            }
            if !scope.contains(&s) {
                scope.push(s);
            }
        }
        let now = self.now();
        let grant = Grant {
            id: Uuid::now_v7(),
            client_id: client.id.clone(),
            user_id: None,
            session_id: None,
            scope: scope.join(" "),
            auth_time: None,
            amr: String::new(),
            nonce: None,
            created_at: now,
            expires_at: now + client.access_token_ttl,
            revoked_at: None,
        };
        let access = self.new_access_token(client, &grant, None).await?;
        let stored = self.stored_token(&access, &grant, TokenKind::Access, client);
        self.store()
            .insert_oidc_grant(&grant, None, &[stored])
            .await?;
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: client.access_token_ttl,
            scope: grant.scope,
            id_token: None,
            refresh_token: None,
        })
    }

    /// The person a grant is for, if still there and enabled.
    async fn grant_user(&self, grant: &Grant) -> Result<Option<User>, OAuthError> {
        let Some(id) = grant.user_id else {
            return Ok(None);
        };
        match self.store().user_by_id(id).await? {
            Some(u) if !u.disabled => Ok(Some(u)),
            _ => Err(OAuthError::InvalidGrant(
                "the account is disabled or deleted",
            )),
        }
    }

    fn stored_token(
        &self,
        token: &str,
        grant: &Grant,
        kind: TokenKind,
        client: &Client,
    ) -> IssuedToken {
        let now = self.now();
        IssuedToken {
            token_hash: secret::hash_token(token).to_vec(),
            grant_id: grant.id,
            kind,
            created_at: now,
            expires_at: match kind {
                TokenKind::Access => now + client.access_token_ttl,
                TokenKind::Refresh => grant.expires_at,
            },
            used_at: None,
        }
    }

    /// An access token, a refresh token (clients allowed them) and an ID
    /// token (`openid` scope) under `grant`.
    async fn issue_tokens(
        &self,
        client: &Client,
        grant: &Grant,
        user: Option<&User>,
        nonce: Option<&str>,
        with_refresh: bool,
    ) -> Result<TokenResponse, OAuthError> {
        let access = self.new_access_token(client, grant, user).await?;
        let mut stored = vec![self.stored_token(&access, grant, TokenKind::Access, client)];
        let refresh = if with_refresh && client.allows(GrantType::RefreshToken) && user.is_some() {
            let r = secret::new_token(TokenFormat::UrlSafe32)?;
            stored.push(self.stored_token(&r, grant, TokenKind::Refresh, client));
            Some(r)
        } else {
            None
        };
        let id_token = match user {
            Some(u) if grant.has_scope("openid") => {
                Some(self.id_token(client, grant, u, nonce, &access).await?)
            }
            _ => None,
        };
        self.store().insert_oidc_tokens(&stored).await?;
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in: client.access_token_ttl,
            scope: grant.scope.clone(),
            id_token,
            refresh_token: refresh,
        })
    }

    /// An access token in the client's format: opaque, or a JWT.
    async fn new_access_token(
        &self,
        client: &Client,
        grant: &Grant,
        user: Option<&User>,
    ) -> Result<String, Error> {
        if client.jwt_access_tokens {
            self.jwt_access_token(client, grant, user).await
        } else {
            secret::new_token(TokenFormat::UrlSafe32)
        }
    }

    /// An access token as a JWT (RFC 9068): `typ` `at+jwt`, for the
    /// client itself as audience (a resource server checks `aud` against
    /// the client ids it serves), `sub` the person's (as the client sees
    /// it) or, for a machine, the client id. Stored by its hash like an
    /// opaque one, so userinfo, introspection and revocation treat it the
    /// same; a resource server that only checks the signature sees a
    /// revocation when the token expires.
    async fn jwt_access_token(
        &self,
        client: &Client,
        grant: &Grant,
        user: Option<&User>,
    ) -> Result<String, Error> {
        let signer = self.signer().await?;
        let now = self.now();
        let sub = match user {
            Some(u) => self.subject(client, u.id),
            None => client.id.clone(),
        };
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.inner.oidc.issuer));
        claims.insert("sub".into(), json!(sub));
        claims.insert("aud".into(), json!(client.id));
        claims.insert("client_id".into(), json!(client.id));
        claims.insert("exp".into(), json!(now + client.access_token_ttl));
        claims.insert("iat".into(), json!(now));
        claims.insert("jti".into(), json!(Uuid::new_v4().to_string()));
        claims.insert("scope".into(), json!(grant.scope));
        if user.is_some() {
            if let Some(t) = grant.auth_time {
                claims.insert("auth_time".into(), json!(t));
            }
            let (amr, acr) = amr_and_acr(&grant.amr);
            if !amr.is_empty() {
                claims.insert("amr".into(), json!(amr));
            }
            claims.insert("acr".into(), json!(acr));
        }
        let claims = Value::Object(claims);
        keys::sign(signer, "at+jwt", claims).await
    }

    async fn id_token(
        &self,
        client: &Client,
        grant: &Grant,
        user: &User,
        nonce: Option<&str>,
        access_token: &str,
    ) -> Result<String, Error> {
        let signer = self.signer().await?;
        let now = self.now();
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.inner.oidc.issuer));
        claims.insert("sub".into(), json!(self.subject(client, user.id)));
        claims.insert("aud".into(), json!(client.id));
        claims.insert("exp".into(), json!(now + client.id_token_ttl));
        claims.insert("iat".into(), json!(now));
        if let Some(t) = grant.auth_time {
            claims.insert("auth_time".into(), json!(t));
        }
        if let Some(n) = nonce {
            claims.insert("nonce".into(), json!(n));
        }
        claims.insert("at_hash".into(), json!(signer.alg.at_hash(access_token)));
        if let Some(sid) = grant.session_id {
            claims.insert("sid".into(), json!(sid.to_string()));
        }
        let (amr, acr) = amr_and_acr(&grant.amr);
        if !amr.is_empty() {
            claims.insert("amr".into(), json!(amr));
        }
        claims.insert("acr".into(), json!(acr));
        claims.extend(user_claims(grant, user));
        let claims = Value::Object(claims);
        keys::sign(signer, "JWT", claims).await
    }

    /// A live token with its grant and person: an access token before its
    /// expiry or a refresh token not yet rotated, under a grant not
    /// revoked, of a person still there and enabled (or of a machine).
    async fn live_token(
        &self,
        token: &str,
    ) -> Result<Option<(IssuedToken, Grant, Option<User>)>, OAuthError> {
        if token.is_empty() || token.len() > MAX_BEARER_LEN {
            return Ok(None);
        }
        let now = self.now();
        Ok(self
            .store()
            .oidc_token(&secret::hash_token(token))
            .await?
            .filter(|(t, g, u)| {
                g.revoked_at.is_none()
                    && t.expires_at > now
                    && t.used_at.is_none()
                    && match g.user_id {
                        Some(_) => u.as_ref().is_some_and(|u| !u.disabled),
                        None => true,
                    }
            }))
    }

    /// The claims about the person an access token's grant may see
    /// (userinfo). `InvalidToken` for anything but a live access token of
    /// a person, with the `openid` scope.
    pub async fn userinfo(&self, access_token: &str) -> Result<Value, OAuthError> {
        let ttl = self.inner.oidc.userinfo_cache_secs;
        let cached = ttl > 0 && self.store_backend() == "sqlite";
        let hash = secret::hash_token(access_token);
        let now = self.now();
        if cached && let Some(claims) = self.inner.userinfo_cache.get(&hash, now) {
            return Ok(claims);
        }
        let Some((token, grant, Some(user))) = self.live_token(access_token).await? else {
            return Err(OAuthError::InvalidToken);
        };
        let Some(client) = self
            .oidc_client(&grant.client_id)
            .await
            .map_err(OAuthError::Server)?
        else {
            return Err(OAuthError::InvalidToken);
        };
        if token.kind != TokenKind::Access || !grant.has_scope("openid") {
            return Err(OAuthError::InvalidToken);
        }
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(self.subject(&client, user.id)));
        claims.extend(user_claims(&grant, &user));
        let claims = Value::Object(claims);
        if cached {
            let until = token.expires_at.min(now + ttl);
            self.inner
                .userinfo_cache
                .put(hash, claims.clone(), grant.id, user.id, until);
        }
        Ok(claims)
    }

    /// A grant was revoked: its answers leave the userinfo cache.
    async fn revoke_grant(&self, grant_id: Uuid) -> Result<(), Error> {
        self.store().revoke_oidc_grant(grant_id, self.now()).await?;
        self.inner.userinfo_cache.forget_grant(grant_id);
        Ok(())
    }

    /// [`Self::live_token`], of this client's.
    async fn own_live_token(
        &self,
        client: &Client,
        token: &str,
    ) -> Result<Option<(IssuedToken, Grant)>, OAuthError> {
        Ok(self
            .live_token(token)
            .await?
            .filter(|(_, g, _)| g.client_id == client.id)
            .map(|(t, g, _)| (t, g)))
    }

    /// Token introspection (RFC 7662) for a confidential client, about its
    /// own tokens: `{"active": false}` for anything else.
    pub async fn introspect(&self, client: &Client, token: &str) -> Result<Value, OAuthError> {
        if client.is_public() {
            return Err(OAuthError::UnauthorizedClient(
                "a public client may not introspect tokens",
            ));
        }
        let Some((t, g)) = self.own_live_token(client, token).await? else {
            return Ok(json!({ "active": false }));
        };
        let mut answer = json!({
            "active": true,
            "scope": g.scope,
            "client_id": g.client_id,
            "token_type": match t.kind { TokenKind::Access => "Bearer", TokenKind::Refresh => "refresh_token" },
            "exp": t.expires_at,
            "iat": t.created_at,
            "iss": self.inner.oidc.issuer,
            "aud": g.client_id,
        });
        if let Some(uid) = g.user_id {
            answer["sub"] = json!(self.subject(client, uid));
        }
        if let Some(sid) = g.session_id {
            answer["sid"] = json!(sid.to_string());
        }
        Ok(answer)
    }

    /// Token revocation (RFC 7009): a refresh token ends its whole grant
    /// (the access tokens with it), an access token only itself. Unknown
    /// tokens and other clients' are ignored (the answer is the same).
    pub async fn revoke_token(
        &self,
        client: &Client,
        token: &str,
        meta: &ClientMeta,
    ) -> Result<(), OAuthError> {
        let Some((t, g)) = self.own_live_token(client, token).await? else {
            return Ok(());
        };
        match t.kind {
            TokenKind::Refresh => self.revoke_grant(g.id).await?,
            TokenKind::Access => {
                self.store().delete_oidc_token(&t.token_hash).await?;
                self.inner.userinfo_cache.forget_token(&t.token_hash);
            }
        }
        self.audit(
            "oidc.token_revoked",
            g.user_id,
            meta,
            Some(json!({ "client": client.id, "kind": t.kind.as_str(), "grant": g.id })),
        )
        .await;
        Ok(())
    }

    /// An ID token this provider signed (any age: a logout's
    /// `id_token_hint` may have expired), as its claims; `None` when the
    /// signature, issuer or audience does not check out.
    pub async fn verify_own_id_token(&self, token: &str) -> Result<Option<Value>, Error> {
        if token.len() > 16 * 1024 {
            return Ok(None);
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Ok(None);
        };
        let ring = self.key_ring().await?;
        let Some(jwk) = ring.jwks["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| header.kid.as_deref().is_some_and(|kid| k["kid"] == kid))
            .and_then(|k| serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()).ok())
        else {
            return Ok(None);
        };
        let Ok(key) = jsonwebtoken::DecodingKey::from_jwk(&jwk) else {
            return Ok(None);
        };
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.validate_exp = false;
        v.validate_aud = false;
        v.set_issuer(&[&self.inner.oidc.issuer]);
        v.set_required_spec_claims(&["iss", "sub", "aud"]);
        let Ok(data) = jsonwebtoken::decode::<Value>(token, &key, &v) else {
            return Ok(None);
        };
        let known = match data.claims["aud"].as_str() {
            Some(aud) => self.oidc_client(aud).await?.is_some(),
            None => false,
        };
        Ok(known.then_some(data.claims))
    }

    /// Check an RP-initiated logout request (OpenID Connect RP-Initiated
    /// Logout 1.0): the client is the hint's audience or `client_id` (not
    /// two different ones); a `post_logout_redirect_uri` must be one it
    /// registered, exactly. `Err` names why, for a page (no redirect).
    pub async fn check_logout(&self, req: &LogoutRequest) -> Result<Logout, &'static str> {
        let hint = match req.id_token_hint.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => Some(
                self.verify_own_id_token(h)
                    .await
                    .map_err(|_| "unavailable")?
                    .ok_or("invalid_id_token_hint")?,
            ),
            None => None,
        };
        let from_hint = hint.as_ref().and_then(|c| c["aud"].as_str());
        let client_id = match (
            from_hint,
            req.client_id.as_deref().filter(|c| !c.is_empty()),
        ) {
            (Some(a), Some(b)) if a != b => return Err("client_id_mismatch"),
            (Some(a), _) | (None, Some(a)) => Some(a),
            (None, None) => None,
        };
        let client = match client_id {
            Some(id) => Some(
                self.oidc_client(id)
                    .await
                    .map_err(|_| "unavailable")?
                    .ok_or("unknown_client")?,
            ),
            None => None,
        };
        let target = match req
            .post_logout_redirect_uri
            .as_deref()
            .filter(|u| !u.is_empty())
        {
            None => None,
            Some(uri) => {
                let client = client.ok_or("post_logout_redirect_uri_without_client")?;
                if !client.post_logout_redirect_uris.iter().any(|u| u == uri) {
                    return Err("unknown_post_logout_redirect_uri");
                }
                let state = req
                    .state
                    .as_deref()
                    .filter(|s| !s.is_empty() && s.len() <= MAX_PARAM);
                Some(match state {
                    Some(s) => with_query(uri, &[("state", s)]),
                    None => uri.to_string(),
                })
            }
        };
        Ok(Logout { target, hint })
    }

    /// The discovery document's contents (OpenID Connect Discovery 1.0,
    /// RFC 8414), for the surface to serve.
    pub fn oidc_metadata(&self) -> Value {
        let iss = &self.inner.oidc.issuer;
        json!({
            "issuer": iss,
            "authorization_endpoint": format!("{iss}/oauth2/authorize"),
            "token_endpoint": format!("{iss}/oauth2/token"),
            "userinfo_endpoint": format!("{iss}/oauth2/userinfo"),
            "introspection_endpoint": format!("{iss}/oauth2/introspect"),
            "revocation_endpoint": format!("{iss}/oauth2/revoke"),
            "end_session_endpoint": format!("{iss}/oauth2/logout"),
            "backchannel_logout_supported": true,
            "backchannel_logout_session_supported": true,
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
            "jwks_uri": format!("{iss}/oauth2/jwks"),
            "scopes_supported": SCOPES,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "subject_types_supported": ["public", "pairwise"],
            "id_token_signing_alg_values_supported": [self.inner.oidc.signing_alg.as_str()],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid",
                "amr", "acr", "email", "email_verified", "name", "locale"
            ],
            "acr_values_supported": [ACR_SINGLE_FACTOR, ACR_MULTI_FACTOR],
            "prompt_values_supported": ["none", "login", "consent", "select_account"],
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "authorization_response_iss_parameter_supported": true,
            "ui_locales_supported": ["en", "de", "fr", "es", "nl"],
        })
    }
}

/// An RP-initiated logout request's parameters, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LogoutRequest {
    pub id_token_hint: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
    pub client_id: Option<String>,
    pub ui_locales: Option<String>,
}

/// A checked logout request.
#[derive(Debug, Clone, PartialEq)]
pub struct Logout {
    /// Where the browser goes afterwards (with the client's `state`).
    pub target: Option<String>,
    /// The verified claims of `id_token_hint`.
    pub hint: Option<Value>,
}

impl Core {
    /// A person's `sub` for a client: authgate's user id, or for a
    /// pairwise client SHA-256 of its sector, the user id and the pairwise
    /// secret (OpenID Connect Core 8.1), base64url: the same at every
    /// client of one sector, unlinkable across sectors.
    pub fn subject(&self, client: &Client, user: Uuid) -> String {
        match (&client.pairwise_sector, &self.inner.oidc.pairwise_secret) {
            (Some(sector), Some(Salt(salt))) => {
                B64.encode(sha256(&format!("{sector}\n{user}\n{salt}")))
            }
            _ => user.to_string(),
        }
    }

    /// Whether a logout's hint names the person of this session, so the
    /// session may end without asking (the request cannot be a forged one).
    pub async fn logout_is_about(&self, logout: &Logout, s: &SessionCheck) -> bool {
        let Some(hint) = &logout.hint else {
            return false;
        };
        let Some(aud) = hint["aud"].as_str() else {
            return false;
        };
        let Ok(Some(client)) = self.oidc_client(aud).await else {
            return false;
        };
        hint["sub"].as_str() == Some(self.subject(&client, s.user.id).as_str())
    }
}

/// `email`, `email_verified` (scope `email`), `name`, `locale` (`profile`).
fn user_claims(grant: &Grant, user: &User) -> Map<String, Value> {
    let mut c = Map::new();
    if grant.has_scope("email")
        && let Some(e) = &user.email
    {
        c.insert("email".into(), json!(e.as_str()));
        // Every address authgate holds was proven: by a code sent to it, or
        // vouched for by a provider (the core's linking rules).
        c.insert("email_verified".into(), json!(true));
    }
    if grant.has_scope("profile") {
        if let Some(n) = &user.display_name {
            c.insert("name".into(), json!(n));
        }
        if let Some(l) = &user.locale {
            c.insert("locale".into(), json!(l.as_str()));
        }
    }
    c
}

// ---------------------------------------------------------------- keys

/// The signing keys as loaded: the one that signs, and the JWKS.
pub(crate) struct KeyRing {
    loaded_at: Timestamp,
    signer: Arc<keys::Signer>,
    jwks: Value,
}

/// Whether a key signs at `now`.
fn signs_at(k: &SigningKey, now: Timestamp) -> bool {
    k.signs_from <= now && k.retired_at.is_none_or(|r| r > now)
}

/// The vault's field name for a signing key's private half.
const KEY_FIELD: &str = "oidc_signing_key";

impl Core {
    async fn key_ring(&self) -> Result<Arc<KeyRing>, Error> {
        let now = self.now();
        let mut slot = self.inner.oidc_keys.lock().await;
        if let Some(ring) = slot.as_ref()
            && now - ring.loaded_at < self.inner.oidc.key_cache_secs
        {
            return Ok(ring.clone());
        }
        let mut stored = self.store().oidc_keys().await?;
        if !stored.iter().any(|k| signs_at(k, now)) {
            // The first start (or every key retired by hand): make one.
            let key = self.new_signing_key(now).await?;
            self.store().insert_oidc_key(&key, None).await?;
            tracing::info!(kid = %key.kid, alg = %key.alg, "made the OpenID provider's first signing key");
            stored.push(key);
        }
        let ring = Arc::new(self.load_key_ring(&stored, now)?);
        *slot = Some(ring.clone());
        Ok(ring)
    }

    fn load_key_ring(&self, stored: &[SigningKey], now: Timestamp) -> Result<KeyRing, Error> {
        let vault = self.vault_for_keys()?;
        let current = stored
            .iter()
            .filter(|k| signs_at(k, now))
            .max_by_key(|k| (k.signs_from, k.kid))
            .ok_or_else(|| Error::Internal("no signing key".into()))?;
        let alg = SigningAlg::parse(&current.alg)
            .ok_or_else(|| Error::Internal(format!("signing key {}: unknown alg", current.kid)))?;
        let der = vault
            .open(current.kid, KEY_FIELD, &current.private_key)
            .and_then(|b64| B64.decode(b64).ok())
            .ok_or_else(|| {
                Error::Internal(format!(
                    "signing key {} does not open with the vault keys",
                    current.kid
                ))
            })?;
        let signer = keys::Signer::from_pkcs8(current.kid.to_string(), alg, &der)?;
        let keys: Vec<Value> = stored
            .iter()
            .filter(|k| k.published_until.is_none_or(|u| u > now))
            .filter_map(|k| serde_json::from_str(&k.public_jwk).ok())
            .collect();
        Ok(KeyRing {
            loaded_at: now,
            signer: Arc::new(signer),
            jwks: json!({ "keys": keys }),
        })
    }

    fn vault_for_keys(&self) -> Result<&super::Vault, Error> {
        self.vault().ok_or_else(|| {
            Error::Internal(
                "the OpenID provider's signing keys need a vault key (vault.keys or vault.key_file)"
                    .into(),
            )
        })
    }

    async fn new_signing_key(&self, signs_from: Timestamp) -> Result<SigningKey, Error> {
        let alg = self.inner.oidc.signing_alg;
        let kid = Uuid::now_v7();
        // RSA key generation takes a while: not on an async worker.
        let (der, jwk) = tokio::task::spawn_blocking(move || keys::generate(alg, &kid.to_string()))
            .await
            .map_err(|e| Error::Internal(format!("key generation task: {e}")))??;
        let sealed = self
            .vault_for_keys()?
            .seal(kid, KEY_FIELD, &B64.encode(der))?;
        Ok(SigningKey {
            kid,
            alg: alg.as_str().to_string(),
            private_key: sealed,
            public_jwk: jwk.to_string(),
            created_at: self.now(),
            signs_from,
            retired_at: None,
            published_until: None,
        })
    }

    async fn signer(&self) -> Result<Arc<keys::Signer>, Error> {
        Ok(self.key_ring().await?.signer.clone())
    }

    /// The public keys ID tokens are checked with (the current one and the
    /// retired ones whose tokens may still be valid).
    pub async fn jwks(&self) -> Result<Value, Error> {
        Ok(self.key_ring().await?.jwks.clone())
    }

    /// Make a new signing key, published at once, that signs after the
    /// rotation lead (`immediately`: at once, for a key that leaked); the
    /// ones before sign until then and stay published until what they
    /// signed has expired. Returns the new key.
    pub async fn rotate_signing_key(
        &self,
        immediately: bool,
        meta: &ClientMeta,
    ) -> Result<SigningKey, Error> {
        let now = self.now();
        let from = if immediately {
            now
        } else {
            now + self.inner.oidc.rotation_lead
        };
        let key = self.new_signing_key(from).await?;
        let until = from + self.retired_key_lifetime().await?;
        self.store()
            .insert_oidc_key(&key, Some((from, until)))
            .await?;
        *self.inner.oidc_keys.lock().await = None;
        self.audit(
            "oidc.key_rotated",
            None,
            meta,
            Some(json!({ "kid": key.kid, "alg": key.alg, "signs_from": from })),
        )
        .await;
        Ok(key)
    }

    /// Re-seal the signing keys under the vault's first key (`authgate
    /// vault rekey`).
    pub(crate) async fn rekey_signing_keys(
        &self,
        vault: &super::Vault,
        report: &mut super::RekeyReport,
    ) -> Result<(), Error> {
        for key in self.store().oidc_keys().await? {
            if vault.is_current(&key.private_key) {
                report.current += 1;
                continue;
            }
            let Some(plain) = vault.open(key.kid, KEY_FIELD, &key.private_key) else {
                report.unreadable += 1;
                continue;
            };
            let sealed = vault.seal(key.kid, KEY_FIELD, &plain)?;
            self.store().reseal_oidc_key(key.kid, &sealed).await?;
            report.signing_keys += 1;
        }
        *self.inner.oidc_keys.lock().await = None;
        Ok(())
    }

    /// Every stored signing key (newest first), for the CLI.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKey>, Error> {
        let mut keys = self.store().oidc_keys().await?;
        keys.sort_by_key(|k| std::cmp::Reverse((k.created_at, k.kid)));
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_factor_names_itself_in_amr_and_acr() {
        assert_eq!(amr_and_acr("otp"), (vec!["otp"], ACR_SINGLE_FACTOR));
        assert_eq!(
            amr_and_acr("fed mfa"),
            (vec!["fed", "mfa"], ACR_MULTI_FACTOR)
        );
        assert_eq!(amr_and_acr(""), (vec![], ACR_SINGLE_FACTOR));
    }
}
