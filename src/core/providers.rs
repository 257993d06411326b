//! What the core needs of a sign-in provider (Microsoft, Google, GitHub, any
//! OpenID Connect issuer), and the rules for the people they bring in:
//! starting a flow (state, PKCE, nonce), finishing it once, and finding or
//! linking the user an identity belongs to. The HTTP and token work lives in
//! `crate::providers`; nothing here knows a wire format.
use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use url::Url;
use uuid::Uuid;

use super::ports::storage::StoreError;
use super::secret::{self, TokenFormat};
use super::{ClientMeta, Confirmation, Core, Email, Error, Identity, Locale, LoginFlow, User};

/// How long a started flow may wait for its callback.
pub const FLOW_TTL_SECS: i64 = 600;

/// The surface whose contract is e-mail matching (seed 000).
pub const CODE_EXCHANGE_SURFACE: &str = "code_exchange";

/// Flows one client address may start: 30 a minute, 300 an hour (so it can
/// keep at most about 300 flow rows alive, each for [`FLOW_TTL_SECS`]).
pub const DEFAULT_FLOW_LIMITS: [super::Limit; 2] =
    [super::Limit::new(30, 60), super::Limit::new(300, 3600)];

/// Why a provider step failed. Messages never contain a code, token or
/// secret; `Rejected` carries the provider's own error body (which is safe to
/// show: it is what the provider chose to tell the client).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered a request with an error document (token
    /// endpoint, Graph, GitHub API).
    #[error("{stage}: the provider answered {status}")]
    Rejected {
        stage: &'static str,
        status: u16,
        body: serde_json::Value,
    },
    /// A response (an ID token above all) failed validation.
    #[error("invalid provider response: {0}")]
    Invalid(String),
    /// The provider could not be reached in time, or answered garbage.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
}

/// The authorize request of a flow authgate started.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest<'a> {
    pub state: &'a str,
    pub nonce: &'a str,
    /// The PKCE verifier; its S256 challenge goes in the URL.
    pub pkce_verifier: &'a str,
    pub redirect_uri: &'a str,
}

/// The code redemption: `verifier` and `nonce` are absent only for a code
/// whose authorize step authgate did not start (the code-exchange API's
/// legacy clients).
#[derive(Debug, Clone)]
pub struct ExchangeRequest<'a> {
    pub code: &'a str,
    /// Who saw the authorization response, and its `iss` (RFC 9207).
    pub response: AuthResponse<'a>,
    pub redirect_uri: &'a str,
    pub pkce_verifier: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub now: i64,
}

/// A refresh of an identity's tokens. An ID token in the answer is
/// validated like one from a sign-in (OpenID Connect Core 12.2) and must
/// name the same `subject` (Microsoft: the object id).
#[derive(Debug, Clone)]
pub struct RefreshRequest<'a> {
    pub refresh_token: &'a str,
    /// The scopes granted before, asked for again.
    pub scope: Option<&'a str>,
    pub subject: &'a str,
    pub now: i64,
}

/// How the authorization response reached authgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResponse<'a> {
    /// At authgate's own callback, with the `iss` parameter when it had
    /// one: it must be this provider's, and a provider that announces the
    /// parameter must send it (RFC 9207).
    Received { iss: Option<&'a str> },
    /// A client received it and relayed only the code (the code-exchange
    /// API): authgate never saw the parameters.
    Relayed,
}

/// The person a provider vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderProfile {
    pub provider: String,
    /// The namespace `subject` is unique in: the OpenID issuer, Microsoft's
    /// tenant id, `https://github.com`.
    pub issuer: String,
    /// Stable id within `issuer`: OpenID `sub`, Microsoft `oid`, GitHub's
    /// numeric user id.
    pub subject: String,
    pub email: Option<String>,
    /// The provider vouches that this person controls `email` (Google
    /// `email_verified`, a verified GitHub address, Microsoft under policy).
    /// Only then may `email` link to an existing account.
    pub email_verified: bool,
    pub name: Option<String>,
    pub tokens: ProviderTokenSet,
}

/// What the token endpoint handed out (kept only in memory here; the token
/// vault encrypts what it keeps).
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderTokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<i64>,
    pub scope: Option<String>,
}

impl std::fmt::Debug for ProviderTokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderTokenSet")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

#[async_trait]
pub trait IdentityProvider: Send + Sync + 'static {
    /// The configured name (`microsoft`, `google`, `github`, ...).
    fn name(&self) -> &str;
    /// How a first sign-in may join an existing account with the address
    /// this provider vouches for (`providers.<name>.linking`); `None`: the
    /// surface's default (see [`Core::linking`]).
    fn linking(&self) -> Option<Linking> {
        None
    }
    /// The provider's authorize URL for this request.
    async fn authorize_url(&self, req: &AuthorizeRequest<'_>) -> Result<Url, ProviderError>;
    /// Redeem a code and return the validated person.
    async fn exchange(&self, req: &ExchangeRequest<'_>) -> Result<ProviderProfile, ProviderError>;
    /// Trade a refresh token for fresh tokens, asking for `scope` (the
    /// scopes granted before) when given.
    async fn refresh(&self, req: &RefreshRequest<'_>) -> Result<ProviderTokenSet, ProviderError>;
    /// The provider's own profile document for an access token (Microsoft
    /// Graph `/me`, GitHub `/user`, OpenID userinfo), as it came.
    async fn api_profile(&self, access_token: &str) -> Result<serde_json::Value, ProviderError>;
}

/// The configured providers by name.
pub type Providers = BTreeMap<String, Arc<dyn IdentityProvider>>;

/// A flow to start: which provider, for which surface, and what the surface
/// wants back when it finishes.
#[derive(Debug, Clone, Default)]
pub struct FlowStart {
    pub provider: String,
    pub surface: &'static str,
    pub redirect_uri: String,
    pub language: Option<String>,
    pub redirect_to: Option<String>,
    pub data: Option<String>,
    /// The client starting it, for its limit (`login_flows.per_ip`).
    pub ip: Option<String>,
}

/// Longest authorization code accepted at a callback (Microsoft's are about
/// 1-2 KB).
pub const MAX_CODE_LEN: usize = 8192;

/// What came back to a provider callback, and what the browser carried.
#[derive(Debug, Clone, Copy, Default)]
pub struct Callback<'a> {
    pub provider: &'a str,
    pub surface: &'static str,
    /// The callback's own URL (the flow's, when it has one, wins).
    pub redirect_uri: &'a str,
    pub state: Option<&'a str>,
    /// The flow cookie the browser sent: it must equal `state`.
    pub flow_cookie: Option<&'a str>,
    /// The client built the authorize URL itself from the flow's state (an
    /// operator's opt-in, weaker): no browser binding is checked, and the
    /// code is redeemed without PKCE or nonce (the client sent none).
    pub client_built: bool,
    pub code: Option<&'a str>,
    /// RFC 9207's `iss` parameter.
    pub iss: Option<&'a str>,
    /// The provider's `error` parameter.
    pub error: Option<&'a str>,
    /// Create the user at first sign-in.
    pub signup: bool,
    /// The person signed in in this browser, if any: a flow started by
    /// [`Core::start_link_flow`] for them connects the identity to their
    /// account instead of signing in.
    pub signed_in: Option<Uuid>,
    /// What follows once the provider vouched for the person.
    pub then: Then<'a>,
}

/// What a callback does once it knows the person.
#[derive(Debug, Clone, Copy, Default)]
pub enum Then<'a> {
    /// Nothing more: the surface hands the person on itself (a one-time
    /// confirmation, a hand-off code) and signs them in when it is redeemed.
    #[default]
    Resolve,
    /// Sign in here: keep the provider's tokens (when a vault key is
    /// configured), end the sessions this browser held (`replacing`, their
    /// tokens: one browser, one session), and start a session.
    SignIn {
        kind: &'static str,
        format: TokenFormat,
        replacing: &'a [String],
        /// The surface has a second step: a person who needs a second
        /// factor gets a pending sign-in (for the flow's surface) instead
        /// of a refusal.
        second_step: bool,
    },
}

/// A callback that signed a person in at the provider.
#[derive(Debug)]
pub struct FinishedCallback {
    pub flow: LoginFlow,
    pub profile: ProviderProfile,
    pub resolved: ResolvedUser,
    /// With [`Then::SignIn`]: the new session's bearer token and the session.
    pub session: Option<(String, super::Session)>,
    /// With [`Then::SignIn`] and a second step: the pending sign-in's token
    /// and what the person must show (no session yet).
    pub pending: Option<(String, super::SecondFactorNeed)>,
    /// The flow connected the identity to the signed-in person's account
    /// (no new session).
    pub linked: bool,
}

/// The address a provider gave (if it parses) and whether it vouched for it.
fn vouched_email(profile: &ProviderProfile) -> (Option<Email>, bool) {
    let email = profile.email.as_deref().and_then(|e| Email::parse(e).ok());
    let vouched = profile.email_verified && email.is_some();
    (email, vouched)
}

/// A provider identity, new, for `user_id`: the address recorded with
/// whether the provider vouched for it.
fn new_identity(
    profile: &ProviderProfile,
    user_id: Uuid,
    email: Option<&Email>,
    vouched: bool,
    now: super::Timestamp,
) -> Identity {
    Identity {
        id: Uuid::now_v7(),
        user_id,
        provider: profile.provider.clone(),
        issuer: profile.issuer.clone(),
        subject: profile.subject.clone(),
        email: email.map(|e| e.as_str().to_string()),
        email_verified: vouched,
        created_at: now,
        last_used_at: now,
    }
}

/// The `data` of a flow that connects a provider to a signed-in account.
const LINK_PREFIX: &str = "link:";

impl FinishedCallback {
    /// Where the person lands after the sign-in: the path the flow was
    /// started with (checked then by [`return_path`]), else `default`.
    pub fn landing<'a>(&'a self, default: &'a str) -> &'a str {
        self.flow.redirect_to.as_deref().unwrap_or(default)
    }
}

/// A post-login return target, only if it stays on `origin` (the front
/// end's, as `scheme://host[:port]`): a path (`/reports?x=1`, never `//host`,
/// a backslash or a control character) or an absolute URL of that origin,
/// answered as its path and query. Anything else is `None`: no open
/// redirect through a sign-in.
pub fn return_path(origin: &str, given: &str) -> Option<String> {
    if given.starts_with('/') {
        if given.starts_with("//") || given.contains('\\') || given.chars().any(char::is_control) {
            return None;
        }
        return Some(given.to_string());
    }
    let url = Url::parse(given).ok()?;
    if url.origin().ascii_serialization() != origin {
        return None;
    }
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    Some(path)
}

/// Why a callback did not sign anyone in.
#[derive(Debug)]
pub enum CallbackError {
    /// No state; an unknown, used or expired one; another provider's or
    /// surface's; or one this browser did not start.
    InvalidState,
    /// The provider sent an error (its code, at most 128 characters), with
    /// the flow when the state was valid and this browser's.
    ProviderError {
        error: String,
        flow: Option<Box<LoginFlow>>,
    },
    /// A valid flow, but no usable code.
    NoCode(Box<LoginFlow>),
    /// Redeeming the code or resolving the user failed (with the flow, when
    /// it was taken).
    Failed {
        error: Error,
        flow: Option<Box<LoginFlow>>,
    },
}

impl CallbackError {
    fn failed(error: Error) -> Self {
        CallbackError::Failed { error, flow: None }
    }
}

/// How a first sign-in through a provider may join an existing account that
/// has the address the provider vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Linking {
    /// Join it (the e-mail matching of seed 000's contract). The provider's
    /// word is the only proof: the most repeated account-takeover class in
    /// auth servers when a provider vouches wrongly.
    VerifiedEmail,
    /// Join it only after the person proves the existing account in the
    /// same browser (an e-mail code to it, or a sign-in with a method it
    /// already has). Surfaces without a page for that proof refuse the
    /// sign-in as they refuse an unknown person.
    Confirm,
    /// Never join: such a first sign-in is refused.
    Never,
}

/// A started flow: the state to hand the browser and where to send it.
#[derive(Debug, Clone)]
pub struct StartedFlow {
    pub state: String,
    pub authorize_url: Url,
}

/// The user a provider sign-in resolved to.
#[derive(Debug, Clone)]
pub struct ResolvedUser {
    pub user: User,
    /// The identity the sign-in came through.
    pub identity: Identity,
    /// The user was created by this sign-in.
    pub created: bool,
}

impl Core {
    /// The provider of this name, if configured.
    pub fn provider(&self, name: &str) -> Option<&Arc<dyn IdentityProvider>> {
        self.inner.providers.get(name)
    }

    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        self.inner.providers.keys().map(String::as_str)
    }

    /// How a first sign-in through `provider` on `surface` may join an
    /// existing account by its vouched address: the provider's
    /// `linking`, else `verified-email` on the code-exchange API (whose
    /// contract, seed 000, is e-mail matching) and `confirm` everywhere else.
    pub fn linking(&self, provider: &str, surface: &str) -> Linking {
        self.provider(provider).and_then(|p| p.linking()).unwrap_or(
            if surface == CODE_EXCHANGE_SURFACE {
                Linking::VerifiedEmail
            } else {
                Linking::Confirm
            },
        )
    }

    fn provider_or_unknown(&self, name: &str) -> Result<&Arc<dyn IdentityProvider>, Error> {
        self.provider(name)
            .ok_or_else(|| Error::invalid("provider", format!("{name:?} is not configured")))
    }

    /// One more flow started by this client: within `login_flows.per_ip`?
    pub(crate) async fn count_flow_start(&self, ip: Option<&str>) -> Result<(), Error> {
        if let Some(ip) = ip.and_then(super::ratelimit::ip_key) {
            let key = format!("flow:{ip}");
            let windows = super::ratelimit::Windows::new(
                self.now(),
                &[(key.as_str(), self.inner.flow_limits.as_slice())],
            );
            let counts = self.store().rate_limit_hits(&windows.hits).await?;
            windows.verdict(&counts)?;
        }
        Ok(())
    }

    /// Keep where a sign-in without a provider (an e-mail code on a page)
    /// goes afterwards: a flow with no provider holding `redirect_to`, for
    /// [`FLOW_TTL_SECS`], counted as a flow start of this client. Returns
    /// its state (for the browser's cookie); [`Self::take_return`] spends it.
    pub async fn remember_return(
        &self,
        surface: &'static str,
        redirect_to: String,
        ip: Option<&str>,
    ) -> Result<String, Error> {
        self.remember_flow(surface, Some(redirect_to), None, ip)
            .await
    }

    /// A flow with no provider that keeps `redirect_to` and `data` of a
    /// surface for [`FLOW_TTL_SECS`], counted as a flow start of this
    /// client. Returns its key.
    pub(crate) async fn remember_flow(
        &self,
        surface: &'static str,
        redirect_to: Option<String>,
        data: Option<String>,
        ip: Option<&str>,
    ) -> Result<String, Error> {
        self.count_flow_start(ip).await?;
        let state = secret::new_token(TokenFormat::UrlSafe32)?;
        let now = self.now();
        self.store()
            .insert_login_flow(&LoginFlow {
                state_hash: secret::hash_token(&state).to_vec(),
                provider: String::new(),
                surface: surface.to_string(),
                pkce_verifier: String::new(),
                nonce: String::new(),
                language: None,
                redirect_to,
                redirect_uri: None,
                data,
                created_at: now,
                expires_at: now + FLOW_TTL_SECS,
            })
            .await?;
        Ok(state)
    }

    /// Where a remembered sign-in goes (once); `None` when unknown, used,
    /// expired or another surface's.
    pub async fn take_return(&self, state: &str, surface: &str) -> Result<Option<String>, Error> {
        match self.take_flow(state, Some(""), surface).await {
            Ok(flow) => Ok(flow.redirect_to),
            Err(Error::Unauthorized) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Where a remembered sign-in would go, without spending it.
    pub async fn peek_return(&self, state: &str, surface: &str) -> Result<Option<String>, Error> {
        match self.peek_flow(state, surface).await {
            Ok(flow) if flow.provider.is_empty() => Ok(flow.redirect_to),
            Ok(_) | Err(Error::Unauthorized) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Start a sign-in with a provider: a fresh state, PKCE verifier and
    /// nonce, stored (hashed state) for [`FLOW_TTL_SECS`].
    pub async fn start_flow(&self, start: FlowStart) -> Result<StartedFlow, Error> {
        let provider = self.provider_or_unknown(&start.provider)?;
        self.count_flow_start(start.ip.as_deref()).await?;
        let state = secret::new_token(TokenFormat::UrlSafe32)?;
        let verifier = secret::new_token(TokenFormat::UrlSafe32)?;
        let nonce = secret::new_token(TokenFormat::UrlSafe32)?;
        let authorize_url = provider
            .authorize_url(&AuthorizeRequest {
                state: &state,
                nonce: &nonce,
                pkce_verifier: &verifier,
                redirect_uri: &start.redirect_uri,
            })
            .await
            .map_err(Error::Provider)?;
        let now = self.now();
        self.store()
            .insert_login_flow(&LoginFlow {
                state_hash: secret::hash_token(&state).to_vec(),
                provider: start.provider,
                surface: start.surface.to_string(),
                pkce_verifier: verifier,
                nonce,
                language: start.language,
                redirect_to: start.redirect_to,
                redirect_uri: Some(start.redirect_uri),
                data: start.data,
                created_at: now,
                expires_at: now + FLOW_TTL_SECS,
            })
            .await?;
        Ok(StartedFlow {
            state,
            authorize_url,
        })
    }

    /// Take a flow by its state, once. Unknown, used, expired, or made for
    /// another provider or surface: `Unauthorized` (and the flow is spent
    /// either way, so a state cannot be replayed against a second provider).
    pub async fn take_flow(
        &self,
        state: &str,
        provider: Option<&str>,
        surface: &str,
    ) -> Result<LoginFlow, Error> {
        if state.is_empty() || state.len() > secret::MAX_TOKEN_LEN {
            return Err(Error::Unauthorized);
        }
        let flow = self
            .store()
            .take_login_flow(&secret::hash_token(state), self.now())
            .await?
            .ok_or(Error::Unauthorized)?;
        if flow.surface != surface || provider.is_some_and(|p| p != flow.provider) {
            return Err(Error::Unauthorized);
        }
        Ok(flow)
    }

    /// A provider sent the browser back to one of authgate's callbacks:
    /// spend the flow, check that this browser started it (its flow cookie,
    /// in constant time), take the provider's error or the code, redeem it
    /// with the flow's PKCE verifier and nonce, resolve the user (link or
    /// sign up by the surface's policy) and, with [`Then::SignIn`], keep the
    /// provider's tokens and sign in. Every surface's callback is this
    /// sequence; they differ only in how they answer.
    pub async fn finish_callback(
        &self,
        cb: &Callback<'_>,
        meta: &ClientMeta,
    ) -> Result<FinishedCallback, CallbackError> {
        // Spend the flow first: whatever happens next, this state is used.
        let flow = match cb.state.filter(|s| !s.is_empty()) {
            Some(state) => match self.take_flow(state, Some(cb.provider), cb.surface).await {
                Ok(flow) => {
                    let bound = cb.client_built
                        || cb
                            .flow_cookie
                            .is_some_and(|c| secret::ct_eq(c.as_bytes(), state.as_bytes()));
                    bound.then_some(flow)
                }
                Err(Error::Unauthorized) => None,
                Err(e) => return Err(CallbackError::failed(e)),
            },
            None => None,
        };
        if let Some(e) = cb.error.filter(|e| !e.is_empty()) {
            let error: String = e.chars().take(128).collect();
            // Debug formatting escapes CR/LF: a forged `error` cannot write
            // a line of its own into the log.
            tracing::info!(provider = cb.provider, error = ?error, "the provider returned an error to the callback");
            return Err(CallbackError::ProviderError {
                error,
                flow: flow.map(Box::new),
            });
        }
        let flow = flow.ok_or(CallbackError::InvalidState)?;
        let Some(code) = cb.code.filter(|c| !c.is_empty() && c.len() <= MAX_CODE_LEN) else {
            return Err(CallbackError::NoCode(Box::new(flow)));
        };
        let redeemed = self
            .redeem_code(
                cb.provider,
                code,
                cb.redirect_uri,
                (!cb.client_built).then_some(&flow),
                AuthResponse::Received { iss: cb.iss },
                meta,
            )
            .await;
        let locale = flow.language.as_deref().and_then(|l| Locale::parse(l).ok());
        // A flow started to connect this provider to an account: only for
        // that account's own browser, signed in still.
        let link_for = flow
            .data
            .as_deref()
            .and_then(|d| d.strip_prefix(LINK_PREFIX))
            .map(|id| {
                Uuid::parse_str(id)
                    .ok()
                    .filter(|o| Some(*o) == cb.signed_in)
            });
        let outcome = match (link_for, redeemed) {
            // Started for an account this browser is not signed in to (now).
            (Some(None), _) => Err(Error::Unauthorized),
            (_, Err(e)) => Err(e),
            (Some(Some(user_id)), Ok(profile)) => self
                .link_signed_in(&profile, user_id, meta)
                .await
                .map(|r| (profile, r, true)),
            (None, Ok(profile)) => self
                .resolve_user(&profile, cb.surface, cb.signup, locale.as_ref(), meta)
                .await
                .map(|r| (profile, r, false)),
        };
        let (profile, resolved, linked) = match outcome {
            Ok(v) => v,
            Err(error) => {
                return Err(CallbackError::Failed {
                    error,
                    flow: Some(Box::new(flow)),
                });
            }
        };
        let then = if linked { Then::Resolve } else { cb.then };
        let (session, pending) = match then {
            Then::Resolve => (None, None),
            Then::SignIn {
                kind,
                format,
                replacing,
                second_step,
            } => match self
                .sign_in_vouched(
                    &profile,
                    &resolved,
                    (kind, format, second_step.then_some(cb.surface)),
                    replacing,
                    flow.redirect_to.clone(),
                    meta,
                )
                .await
            {
                Ok(super::FirstFactor::Session { token, session }) => {
                    (Some((token, session)), None)
                }
                Ok(super::FirstFactor::Pending { token, need }) => (None, Some((token, need))),
                Err(error) => {
                    return Err(CallbackError::Failed {
                        error,
                        flow: Some(Box::new(flow)),
                    });
                }
            },
        };
        Ok(FinishedCallback {
            flow,
            profile,
            resolved,
            session,
            pending,
            linked,
        })
    }

    /// Start connecting `provider` to a signed-in person's account: a flow
    /// as [`Self::start_flow`] that remembers whose account it is for.
    pub async fn start_link_flow(
        &self,
        user_id: Uuid,
        mut start: FlowStart,
    ) -> Result<StartedFlow, Error> {
        start.data = Some(format!("{LINK_PREFIX}{user_id}"));
        self.start_flow(start).await
    }

    /// Connect a provider identity to the account of the person signed in
    /// (the proof that linking needs: they hold both). An identity that
    /// belongs to another account is refused (`Conflict`), never moved.
    pub async fn link_signed_in(
        &self,
        profile: &ProviderProfile,
        user_id: Uuid,
        meta: &ClientMeta,
    ) -> Result<ResolvedUser, Error> {
        let store = self.store();
        let now = self.now();
        let (email, vouched) = vouched_email(profile);
        if let Some((identity, owner)) = store
            .identity_with_user(&profile.provider, &profile.issuer, &profile.subject)
            .await?
        {
            if owner.id != user_id {
                self.audit(
                    "identity.link_refused",
                    Some(user_id),
                    meta,
                    Some(json!({ "provider": profile.provider, "reason": "another_account" })),
                )
                .await;
                return Err(Error::Conflict("identity"));
            }
            store
                .touch_identity(identity.id, email.as_ref().map(Email::as_str), vouched, now)
                .await?;
            return Ok(ResolvedUser {
                user: owner,
                identity,
                created: false,
            });
        }
        let user = self.enabled_user(user_id).await?;
        let identity = new_identity(profile, user_id, email.as_ref(), vouched, now);
        match store.insert_identity(&identity).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(Error::Conflict("identity")),
            Err(e) => return Err(e.into()),
        }
        self.inner.session_cache.evict_identities(user_id);
        self.audit(
            "identity.linked",
            Some(user_id),
            meta,
            Some(json!({ "provider": profile.provider, "by": "signed_in" })),
        )
        .await;
        Ok(ResolvedUser {
            user,
            identity,
            created: false,
        })
    }

    /// A person removes one of their sign-in methods. Refused
    /// (`Forbidden`) when it is the last one: no other identity, and no
    /// address the e-mail code sign-in admits.
    pub async fn remove_identity(
        &self,
        user_id: Uuid,
        identity_id: Uuid,
        meta: &ClientMeta,
    ) -> Result<(), Error> {
        let user = self.find_user(&super::UserKey::Id(user_id)).await?;
        let identities = self.store().identities_of(user_id).await?;
        let Some(removed) = identities.iter().find(|i| i.id == identity_id) else {
            return Err(Error::NotFound);
        };
        let mail_sign_in = user
            .email
            .as_ref()
            .is_some_and(|e| self.mail_login_policy().allows(e));
        if identities.len() == 1 && !mail_sign_in {
            return Err(Error::Forbidden(
                "the last sign-in method cannot be removed",
            ));
        }
        if !self.store().delete_identity(user_id, identity_id).await? {
            return Err(Error::NotFound);
        }
        self.inner.session_cache.evict_identities(user_id);
        self.audit(
            "identity.removed",
            Some(user_id),
            meta,
            Some(json!({ "provider": removed.provider })),
        )
        .await;
        Ok(())
    }

    /// [`Then::SignIn`]: keep the tokens, then start the session, ending
    /// the browser's old ones, or (a second step on `surface`, and a second
    /// factor needed) leave a pending sign-in that goes `then`.
    async fn sign_in_vouched(
        &self,
        profile: &ProviderProfile,
        resolved: &ResolvedUser,
        (kind, format, surface): (&'static str, TokenFormat, Option<&str>),
        replacing: &[String],
        then: Option<String>,
        meta: &ClientMeta,
    ) -> Result<super::FirstFactor, Error> {
        self.keep_provider_tokens(resolved.identity.id, &profile.tokens)
            .await?;
        let user = &resolved.user;
        let signed = match surface {
            Some(surface) => {
                let session = super::NewSession {
                    kind,
                    method: super::AMR_FED,
                    format,
                };
                self.first_factor_done(user, session, surface, then, meta)
                    .await?
            }
            None => {
                let (token, session) = self
                    .sign_in(user, kind, super::AMR_FED, format, meta)
                    .await?;
                super::FirstFactor::Session { token, session }
            }
        };
        if matches!(signed, super::FirstFactor::Session { .. }) {
            for old in replacing {
                // The new session does not depend on it: logged, not refused.
                if let Err(e) = self.revoke_session_token(old, meta).await {
                    tracing::warn!(error = %e, "sign-in: cannot end the browser's previous session");
                }
            }
        }
        Ok(signed)
    }

    /// Read a flow by its state without spending it (to send the browser to
    /// the provider). `Unauthorized` when unknown, expired or another
    /// surface's.
    pub async fn peek_flow(&self, state: &str, surface: &str) -> Result<LoginFlow, Error> {
        if state.is_empty() || state.len() > secret::MAX_TOKEN_LEN {
            return Err(Error::Unauthorized);
        }
        self.store()
            .login_flow(&secret::hash_token(state), self.now())
            .await?
            .filter(|f| f.surface == surface)
            .ok_or(Error::Unauthorized)
    }

    /// The provider's authorize URL for a flow (the same every time).
    pub async fn flow_authorize_url(&self, state: &str, flow: &LoginFlow) -> Result<Url, Error> {
        let provider = self.provider_or_unknown(&flow.provider)?;
        provider
            .authorize_url(&AuthorizeRequest {
                state,
                nonce: &flow.nonce,
                pkce_verifier: &flow.pkce_verifier,
                redirect_uri: flow.redirect_uri.as_deref().unwrap_or_default(),
            })
            .await
            .map_err(Error::Provider)
    }

    /// Redeem a provider code. With a flow, its PKCE verifier, nonce and
    /// redirect URI are used; without one (a client that ran the authorize
    /// step itself) the caller's redirect URI. `response` says how the
    /// authorization response arrived (with its `iss` parameter).
    pub async fn redeem_code(
        &self,
        provider: &str,
        code: &str,
        redirect_uri: &str,
        flow: Option<&LoginFlow>,
        response: AuthResponse<'_>,
        meta: &ClientMeta,
    ) -> Result<ProviderProfile, Error> {
        let p = self.provider_or_unknown(provider)?;
        let redirect_uri = flow
            .and_then(|f| f.redirect_uri.as_deref())
            .unwrap_or(redirect_uri);
        let result = p
            .exchange(&ExchangeRequest {
                code,
                response,
                redirect_uri,
                pkce_verifier: flow.map(|f| f.pkce_verifier.as_str()),
                nonce: flow.map(|f| f.nonce.as_str()),
                now: self.now(),
            })
            .await;
        match result {
            Ok(profile) => Ok(profile),
            Err(e) => {
                tracing::info!(provider, error = %e, "provider sign-in failed");
                self.audit(
                    "signin.provider_failed",
                    None,
                    meta,
                    Some(json!({ "provider": provider, "reason": e.to_string() })),
                )
                .await;
                Err(Error::Provider(e))
            }
        }
    }

    /// Find the user a provider identity belongs to, linking or creating
    /// when the rules allow:
    /// 1. a known (provider, issuer, subject) → its user;
    /// 2. else, when the provider vouches for the e-mail and the user with
    ///    that address exists: linked when [`Core::linking`] says
    ///    `verified-email`; otherwise refused (`NotFound`, audited), never a
    ///    second account with the same address;
    /// 3. else, with `signup`, a new user with this identity;
    /// 4. else `NotFound`.
    ///
    /// A disabled user is refused (`Disabled`) at every step.
    pub async fn resolve_user(
        &self,
        profile: &ProviderProfile,
        surface: &str,
        signup: bool,
        locale: Option<&Locale>,
        meta: &ClientMeta,
    ) -> Result<ResolvedUser, Error> {
        let store = self.store();
        let now = self.now();
        let (email, vouched) = vouched_email(profile);
        if let Some((identity, user)) = store
            .identity_with_user(&profile.provider, &profile.issuer, &profile.subject)
            .await?
        {
            store
                .touch_identity(identity.id, email.as_ref().map(Email::as_str), vouched, now)
                .await?;
            return self.refuse_disabled(user, identity, profile, meta).await;
        }
        let identity = |user_id: Uuid| new_identity(profile, user_id, email.as_ref(), vouched, now);
        if vouched
            && let Some(e) = &email
            && let Some(user) = store.user_by_email(&e.normalized()).await?
        {
            let linked = identity(user.id);
            if user.disabled {
                return self.refuse_disabled(user, linked, profile, meta).await;
            }
            let linking = self.linking(&profile.provider, surface);
            if linking != Linking::VerifiedEmail {
                self.audit(
                    "signin.refused",
                    Some(user.id),
                    meta,
                    Some(json!({
                        "provider": profile.provider,
                        "reason": if linking == Linking::Confirm { "linking_needs_confirmation" } else { "linking_never" },
                    })),
                )
                .await;
                return Err(Error::NotFound);
            }
            let linked = match store.insert_identity(&linked).await {
                Ok(()) => {
                    self.inner.session_cache.evict_identities(user.id);
                    linked
                }
                // A concurrent first sign-in linked it already: same result.
                Err(StoreError::Conflict(_)) => {
                    return Box::pin(self.resolve_user(profile, surface, false, locale, meta))
                        .await;
                }
                Err(e) => return Err(e.into()),
            };
            self.audit(
                "identity.linked",
                Some(user.id),
                meta,
                Some(json!({ "provider": profile.provider, "by": "verified_email" })),
            )
            .await;
            return Ok(ResolvedUser {
                user,
                identity: linked,
                created: false,
            });
        }
        if !signup {
            self.audit(
                "signin.refused",
                None,
                meta,
                Some(json!({ "provider": profile.provider, "reason": "no_user" })),
            )
            .await;
            return Err(Error::NotFound);
        }
        let user = User {
            id: Uuid::now_v7(),
            // An address the provider did not vouch for is not recorded as
            // the account's address (it could be anyone's).
            email: if vouched { email.clone() } else { None },
            display_name: profile.name.clone(),
            locale: locale.cloned(),
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        let first = identity(user.id);
        match store.insert_user_with_identity(&user, &first).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                // Raced with a concurrent first sign-in of the same identity
                // (or an account took the address meanwhile): resolve again
                // without sign-up.
                return Box::pin(self.resolve_user(profile, surface, false, locale, meta)).await;
            }
            Err(e) => return Err(e.into()),
        }
        self.audit(
            "user.created",
            Some(user.id),
            meta,
            Some(json!({ "provider": profile.provider, "by": "signup" })),
        )
        .await;
        Ok(ResolvedUser {
            user,
            identity: first,
            created: true,
        })
    }

    /// A one-time confirmation that `user` signed in through `surface`:
    /// returns the confirmation id (`token`, or a fresh one) and, when asked
    /// for, a validation string that must come back with it.
    pub async fn issue_confirmation(
        &self,
        user: &User,
        signup: bool,
        surface: &str,
        token: Option<String>,
        with_validation: bool,
        ttl_secs: i64,
    ) -> Result<(String, Option<String>), Error> {
        let token = match token {
            Some(t) => t,
            None => secret::new_token(TokenFormat::UrlSafe32)?,
        };
        let validation = if with_validation {
            Some(secret::new_token(TokenFormat::Lower20)?)
        } else {
            None
        };
        let now = self.now();
        self.store()
            .insert_confirmation(&Confirmation {
                token_hash: secret::hash_token(&token).to_vec(),
                validation_hash: validation
                    .as_deref()
                    .map(|v| secret::hash_token(v).to_vec()),
                user_id: user.id,
                surface: surface.to_string(),
                signup,
                created_at: now,
                expires_at: now + ttl_secs,
            })
            .await?;
        Ok((token, validation))
    }

    /// Trade a confirmation (once) for its user: `Unauthorized` when
    /// unknown, used, expired, another surface's, or when the validation
    /// does not match (the confirmation is spent then too); `Disabled` for a
    /// disabled user. Returns the user and whether the sign-in was a sign-up.
    pub async fn redeem_confirmation(
        &self,
        token: &str,
        validation: Option<&str>,
        surface: &str,
        meta: &ClientMeta,
    ) -> Result<(User, bool), Error> {
        if token.is_empty() || token.len() > secret::MAX_TOKEN_LEN {
            return Err(Error::Unauthorized);
        }
        let c = self
            .store()
            .take_confirmation(&secret::hash_token(token), self.now())
            .await?
            .filter(|c| c.surface == surface)
            .ok_or(Error::Unauthorized)?;
        if let Some(expected) = &c.validation_hash {
            let given = validation.map(secret::hash_token);
            if !given.is_some_and(|g| secret::ct_eq(&g, expected)) {
                self.audit(
                    "signin.refused",
                    Some(c.user_id),
                    meta,
                    Some(json!({ "surface": surface, "reason": "validation_mismatch" })),
                )
                .await;
                return Err(Error::Unauthorized);
            }
        }
        Ok((self.enabled_user(c.user_id).await?, c.signup))
    }

    /// The user a one-time secret (confirmation, hand-off) was made for:
    /// gone meanwhile is `Unauthorized`, disabled meanwhile `Disabled`.
    pub(crate) async fn enabled_user(&self, id: Uuid) -> Result<User, Error> {
        let user = self
            .store()
            .user_by_id(id)
            .await?
            .ok_or(Error::Unauthorized)?;
        if user.disabled {
            return Err(Error::Disabled);
        }
        Ok(user)
    }

    async fn refuse_disabled(
        &self,
        user: User,
        identity: Identity,
        profile: &ProviderProfile,
        meta: &ClientMeta,
    ) -> Result<ResolvedUser, Error> {
        if user.disabled {
            self.audit(
                "signin.refused",
                Some(user.id),
                meta,
                Some(json!({ "provider": profile.provider, "reason": "disabled" })),
            )
            .await;
            return Err(Error::Disabled);
        }
        Ok(ResolvedUser {
            user,
            identity,
            created: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sets_do_not_print_their_tokens() {
        let t = ProviderTokenSet {
            access_token: "secret-access".into(),
            refresh_token: Some("secret-refresh".into()),
            expires_in: Some(3600),
            scope: None,
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret-"), "{shown}");
    }
}
