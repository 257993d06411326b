//! The rules of authgate, once, for every surface and the CLI.
//!
//! [`Core`] is a cheap-to-clone handle (one `Arc`) over the store, the clock
//! and the policies from config. It knows nothing of HTTP or wire formats.
use std::sync::Arc;

use ports::mail::MailTemplates;
use ports::storage::Store;

pub mod audit;
pub mod clock;
mod error;
pub mod forward;
pub mod handoff;
pub mod mail_login;
pub mod mfa;
pub mod model;
pub mod oidc;
pub mod outbox;
pub mod passkeys;
pub mod ports;
pub mod providers;
pub mod ratelimit;
pub mod secret;
mod session_cache;
pub mod sessions;
pub mod totp;
mod touches;
pub mod users;
pub mod vault;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::Error;
pub use mail_login::{CodeCheck, CodeFormat, MailLoginPolicy, MxAnswer, MxLookup, SendCodeOutcome};
pub use mfa::{
    FirstFactor, MfaPolicy, MfaRequired, NewSession, PendingSignIn, Proof, SecondFactorNeed,
    SecondStep,
};
pub use model::*;
pub use providers::{
    AuthResponse, Callback, CallbackError, FinishedCallback, FlowStart, IdentityProvider, Linking,
    ProviderError, ProviderProfile, ProviderTokenSet, Providers, ResolvedUser, StartedFlow, Then,
    return_path,
};
pub use ratelimit::Limit;
pub use sessions::{SessionCheck, SessionPolicy};
pub use users::{Consent, ImportReport, NewUser, UserKey};
pub use vault::{AccessToken, RekeyReport, Vault};

#[derive(Clone)]
pub struct Core {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    sessions: SessionPolicy,
    mail_login: MailLoginPolicy,
    flow_limits: Vec<Limit>,
    mx: Option<Arc<dyn MxLookup>>,
    /// The mail templates (given at assembly; none: no code mails).
    templates: Option<Arc<dyn MailTemplates>>,
    providers: Providers,
    vault: Option<vault::Vault>,
    session_cache: session_cache::SessionCache,
    outbox_notify: mail_login::OutboxNotify,
    touches: touches::Touches,
    oidc: oidc::OidcPolicy,
    /// The OpenID provider's signing keys, as last read.
    oidc_keys: tokio::sync::Mutex<Option<Arc<oidc::KeyRing>>>,
    userinfo_cache: oidc::cache::UserinfoCache,
    /// The clients as last read (config and stored).
    oidc_clients: std::sync::RwLock<Arc<oidc::clients::ClientRegistry>>,
    oidc_clients_reload: tokio::sync::Mutex<()>,
    /// Sessions ended here: look for back-channel logouts now.
    logout_notify: Arc<tokio::sync::Notify>,
    /// Forward auth's protected hosts and their rules.
    forward: forward::ForwardPolicy,
    /// The second-factor gate and step-up.
    mfa: mfa::MfaPolicy,
    /// The WebAuthn relying party (none: passkeys off).
    passkeys: passkeys::PasskeyPolicy,
}

/// Assembles a [`Core`]: storage and clock are required, policies default.
pub struct CoreBuilder {
    inner: Inner,
}

impl CoreBuilder {
    pub fn sessions(mut self, policy: SessionPolicy) -> Self {
        self.inner.session_cache = session_cache::SessionCache::new(policy.cache_ttl);
        self.inner.sessions = policy;
        self
    }

    pub fn mail_login(mut self, policy: MailLoginPolicy) -> Self {
        self.inner.mail_login = policy;
        self
    }

    /// How many provider sign-ins one client address may start.
    pub fn flow_limits(mut self, limits: Vec<Limit>) -> Self {
        self.inner.flow_limits = limits;
        self
    }

    /// The templates code mails are rendered with.
    pub fn mail_templates(mut self, templates: Arc<dyn MailTemplates>) -> Self {
        self.inner.templates = Some(templates);
        self
    }

    /// The resolver for deny-list MX checks (none: domains only).
    pub fn mx(mut self, mx: Arc<dyn MxLookup>) -> Self {
        self.inner.mx = Some(mx);
        self
    }

    /// The sign-in providers, by name.
    pub fn providers(mut self, providers: Providers) -> Self {
        self.inner.providers = providers;
        self
    }

    /// The token vault (none: provider tokens are not kept).
    pub fn vault(mut self, vault: Option<vault::Vault>) -> Self {
        self.inner.vault = vault;
        self
    }

    /// The OpenID provider's issuer, clients and keys policy.
    pub fn oidc(mut self, policy: oidc::OidcPolicy) -> Self {
        self.inner.oidc = policy;
        self
    }

    /// Forward auth's protected hosts and rules.
    pub fn forward(mut self, policy: forward::ForwardPolicy) -> Self {
        self.inner.forward = policy;
        self
    }

    /// The second-factor gate (`[mfa]`).
    pub fn mfa(mut self, policy: mfa::MfaPolicy) -> Self {
        self.inner.mfa = policy;
        self
    }

    /// Passkeys (`[passkeys]`).
    pub fn passkeys(mut self, policy: passkeys::PasskeyPolicy) -> Self {
        self.inner.passkeys = policy;
        self
    }

    pub fn build(self) -> Core {
        // Several PostgreSQL instances: no cached answers until the
        // invalidation channel is listening (`Core::set_session_cache`).
        if self.inner.store.backend() == "postgres" {
            self.inner.session_cache.set_enabled(false);
        }
        Core {
            inner: Arc::new(self.inner),
        }
    }
}

impl Core {
    pub fn builder(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> CoreBuilder {
        CoreBuilder {
            inner: Inner {
                store,
                clock,
                sessions: SessionPolicy::default(),
                mail_login: MailLoginPolicy::default(),
                flow_limits: providers::DEFAULT_FLOW_LIMITS.to_vec(),
                mx: None,
                templates: None,
                providers: Providers::new(),
                vault: None,
                session_cache: session_cache::SessionCache::new(SessionPolicy::default().cache_ttl),
                outbox_notify: Default::default(),
                touches: Default::default(),
                oidc: oidc::OidcPolicy::default(),
                oidc_keys: Default::default(),
                userinfo_cache: Default::default(),
                oidc_clients: Default::default(),
                oidc_clients_reload: Default::default(),
                logout_notify: Default::default(),
                forward: Default::default(),
                mfa: Default::default(),
                passkeys: Default::default(),
            },
        }
    }

    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, sessions: SessionPolicy) -> Self {
        Self::builder(store, clock).sessions(sessions).build()
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// `sqlite` or `postgres`.
    pub fn store_backend(&self) -> &'static str {
        self.store().backend()
    }

    pub fn session_policy(&self) -> &SessionPolicy {
        &self.inner.sessions
    }

    /// Is the database reachable? (readiness)
    pub async fn ping(&self) -> Result<(), Error> {
        Ok(self.store().ping().await?)
    }

    /// Remove expired sessions, flows, mail logins and rate-limit windows.
    pub async fn purge_expired(&self) -> Result<u64, Error> {
        Ok(self.store().purge_expired(self.now()).await?)
    }
}
