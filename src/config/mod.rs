//! Configuration: built-in defaults, then one TOML file (`--config` or
//! `AUTHGATE_CONFIG`), then `AUTHGATE_<SECTION>__<KEY>` environment variables.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default),
//! and every error names the key it is about.
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::core::SessionPolicy;

/// The file read when neither `--config` nor `AUTHGATE_CONFIG` names one
/// (only if it exists).
pub const DEFAULT_FILE: &str = "authgate.toml";
pub const ENV_PREFIX: &str = "AUTHGATE_";
const MASK: &str = "********";

mod secret;
pub use secret::{Secret, SecretUrl};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub session: SessionConfig,
    pub mail: MailConfig,
    pub mail_login: MailLoginConfig,
    pub login_flows: LoginFlowsConfig,
    pub surfaces: SurfacesConfig,
    /// Sign-in providers by name (`microsoft`, `google`, `github`, or any
    /// name with `kind = "oidc"`).
    pub providers: std::collections::BTreeMap<String, ProviderConfig>,
    // The surfaces' sections, each declared by its module under `http/`.
    pub code_exchange: crate::http::code_exchange::CodeExchangeConfig,
    pub oauth: crate::http::oauth::OauthConfig,
    pub browser: crate::http::browser::BrowserConfig,
    pub pages: crate::http::pages::PagesConfig,
    /// The OpenID provider's settings.
    pub oidc: crate::http::oidc::OidcConfig,
    /// Forward auth's protected hosts, rules and headers.
    pub forward_auth: crate::http::forward::ForwardConfig,
    /// The OpenID provider's relying parties, by client id.
    pub clients: std::collections::BTreeMap<String, crate::http::oidc::ClientConfig>,
    pub vault: VaultConfig,
    /// Second factors: the policy and step-up.
    pub mfa: MfaConfig,
    /// Passkeys (WebAuthn): the relying party.
    pub passkeys: PasskeysConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The URL browsers and providers reach authgate at (callback URLs are
    /// built from it). Defaults to `http://<listen>`.
    pub public_url: Option<Url>,
    /// The application's front end (redirect targets after sign-in).
    pub frontend_url: Option<Url>,
    /// Origins (scheme://host[:port]) a post-login redirect may go to, beside
    /// the front end's own.
    pub allowed_redirect_origins: Vec<String>,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Seconds a request may take before it is answered with 408.
    pub request_timeout_secs: u64,
    /// Seconds to finish requests in flight after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is
    /// believed. Empty: the client is the TCP peer.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Seconds a client has to send a request's head; an idle keep-alive
    /// connection is closed after as long.
    pub header_timeout_secs: u64,
    /// Open connections at most (more are closed at once).
    pub max_connections: usize,
    /// Open connections from one client address at most (trusted proxies
    /// excepted).
    pub max_connections_per_client: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 3001)),
            public_url: None,
            frontend_url: None,
            allowed_redirect_origins: Vec::new(),
            body_limit_bytes: 64 * 1024,
            request_timeout_secs: 15,
            shutdown_grace_secs: 20,
            trusted_proxies: Vec::new(),
            header_timeout_secs: 10,
            max_connections: 8192,
            max_connections_per_client: 256,
        }
    }
}

impl ServerConfig {
    pub fn public_url(&self) -> Url {
        self.public_url.clone().unwrap_or_else(|| {
            #[allow(clippy::expect_used)] // a socket address always forms a valid URL authority
            Url::parse(&format!("http://{}/", self.listen)).expect("socket address URL")
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://authgate.db` (default) or `postgres://user@host:5432/db`.
    pub url: SecretUrl,
    /// A file holding `url` (one line), e.g. a container secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
    pub max_connections: u32,
    /// Seconds to wait for a free connection before a request fails.
    pub acquire_timeout_secs: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://authgate.db".into(),
            url_file: None,
            max_connections: 16,
            acquire_timeout_secs: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Seconds of inactivity after which a session ends.
    pub idle_timeout_secs: i64,
    /// Seconds after sign-in after which a session ends regardless.
    pub absolute_timeout_secs: i64,
    /// Seconds between writes of a session's last-seen time.
    pub touch_interval_secs: i64,
    /// Seconds a checked session may be answered from memory before it is
    /// read again (0: always read the database). Revocations and disabled
    /// users are pushed to the cache at once (PostgreSQL: to every instance).
    pub cache_ttl_secs: i64,
    /// Sessions seen in the last hour loaded into the cache when it comes on
    /// (0: none), so a restarted server does not read them one by one.
    pub cache_warm_sessions: usize,
    /// Share the pages' session cookie with this domain and all its
    /// subdomains (`example.com` for `auth.example.com`, `app.example.com`),
    /// so forward auth needs no hand-off on hosts under it. Every host
    /// under it then receives the session cookie: see the README.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_domain: Option<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let p = SessionPolicy::default();
        SessionConfig {
            idle_timeout_secs: p.idle_timeout,
            absolute_timeout_secs: p.absolute_timeout,
            touch_interval_secs: p.touch_interval,
            cache_ttl_secs: p.cache_ttl,
            cache_warm_sessions: p.cache_warm,
            cookie_domain: None,
        }
    }
}

impl SessionConfig {
    pub fn policy(&self) -> SessionPolicy {
        SessionPolicy {
            idle_timeout: self.idle_timeout_secs,
            absolute_timeout: self.absolute_timeout_secs,
            touch_interval: self.touch_interval_secs,
            cache_ttl: self.cache_ttl_secs,
            cache_warm: self.cache_warm_sessions,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    /// Print mails to standard output (development).
    Console,
    /// Send through an SMTP server (`mail.smtp_url`).
    Smtp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    pub transport: MailTransport,
    /// `smtp://[user:pass@]host:port` (plain or STARTTLS if offered) or
    /// `smtps://...` (TLS). Required when `transport = "smtp"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<SecretUrl>,
    /// A file holding `smtp_url` (one line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_url_file: Option<PathBuf>,
    /// The From header, e.g. `authgate <noreply@example.com>`.
    pub from: String,
    /// Seconds before the first retry of a failed delivery (doubling).
    pub retry_initial_secs: i64,
    /// Longest wait between two delivery attempts.
    pub retry_max_secs: i64,
    /// Seconds each SMTP step (connect, greeting, each command, the data)
    /// may take; one mail's whole conversation is bounded by four times this.
    pub smtp_timeout_secs: u64,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            transport: MailTransport::Console,
            smtp_url: None,
            smtp_url_file: None,
            from: "authgate <noreply@authgate.localhost>".into(),
            retry_initial_secs: 2,
            retry_max_secs: 60,
            smtp_timeout_secs: 10,
        }
    }
}

impl MailConfig {
    pub fn outbox_policy(&self) -> crate::core::outbox::OutboxPolicy {
        crate::core::outbox::OutboxPolicy {
            retry_initial: self.retry_initial_secs,
            retry_max: self.retry_max_secs,
            // A worker holds a mail a little longer than its bounded SMTP
            // conversation, never less than the default.
            lease: (4 * self.smtp_timeout_secs as i64 + 10).max(60),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeFormatName {
    /// Random words from the EFF large word list (the original's style).
    Words,
    /// Random decimal digits.
    Digits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailLoginConfig {
    pub code_format: CodeFormatName,
    /// Words (default 3) or digits (default 8) per code.
    pub code_length: Option<u8>,
    pub code_ttl_secs: i64,
    pub attempts: i64,
    pub auth_token_ttl_secs: i64,
    /// Addresses (with `@`) or domains allowed to sign in; empty: all.
    pub allow_list: Vec<String>,
    /// Mail domains or mail-server hosts refused (MX records are checked).
    pub deny_list: Vec<String>,
    /// DNS server for MX look-ups, e.g. `127.0.0.1:53`; default: the system's.
    pub dns_server: Option<SocketAddr>,
    pub dns_timeout_secs: u64,
    pub per_address: Vec<crate::core::Limit>,
    pub per_ip: Vec<crate::core::Limit>,
    pub global: Vec<crate::core::Limit>,
    /// Trading a `mailAuthToken` for a session may create the user.
    pub signup: bool,
    /// The product named in the mails.
    pub product_name: String,
}

impl Default for MailLoginConfig {
    fn default() -> Self {
        let p = crate::core::MailLoginPolicy::default();
        MailLoginConfig {
            code_format: CodeFormatName::Words,
            code_length: None,
            code_ttl_secs: p.code_ttl,
            attempts: p.attempts,
            auth_token_ttl_secs: p.auth_token_ttl,
            allow_list: p.allow_list,
            deny_list: p.deny_list,
            dns_server: None,
            dns_timeout_secs: 2,
            per_address: p.per_address,
            per_ip: p.per_ip,
            global: p.global,
            signup: p.signup,
            product_name: p.product_name,
        }
    }
}

impl MailLoginConfig {
    pub fn policy(&self) -> crate::core::MailLoginPolicy {
        use crate::core::CodeFormat;
        crate::core::MailLoginPolicy {
            code_format: match self.code_format {
                CodeFormatName::Words => CodeFormat::Words(self.code_length.unwrap_or(3)),
                CodeFormatName::Digits => CodeFormat::Digits(self.code_length.unwrap_or(8)),
            },
            code_ttl: self.code_ttl_secs,
            attempts: self.attempts,
            auth_token_ttl: self.auth_token_ttl_secs,
            allow_list: self
                .allow_list
                .iter()
                .map(|e| ascii_list_entry(e))
                .collect(),
            deny_list: self.deny_list.iter().map(|e| ascii_list_entry(e)).collect(),
            per_address: self.per_address.clone(),
            per_ip: self.per_ip.clone(),
            global: self.global.clone(),
            signup: self.signup,
            product_name: self.product_name.clone(),
        }
    }
}

/// An allow- or deny-list entry with its domain in IDNA's ASCII form, so
/// that `bücher.test` and `xn--bcher-kva.test` match the same addresses.
fn ascii_list_entry(entry: &str) -> String {
    let (local, domain) = match entry.rsplit_once('@') {
        Some((l, d)) => (Some(l), d),
        None => (None, entry),
    };
    let domain = crate::core::model::ascii_domain(domain).unwrap_or_else(|| domain.to_lowercase());
    match local {
        Some(l) => format!("{l}@{domain}"),
        None => domain,
    }
}

/// Which API surfaces are served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SurfacesConfig {
    /// `/forward-auth`, `/forward-auth/nginx`, `/forward-auth/start` and the
    /// protected hosts' `/.authgate/*`: forward auth for reverse proxies
    /// (off unless `[forward_auth.hosts.*]` are configured).
    pub forward_auth: bool,
    /// `/auth/send-mail-login-code-v2`, `/auth/sign-in-by-mail-code`, ...
    pub mail_code: bool,
    /// `/api/v1/auth/*` (the Microsoft code-exchange API).
    pub code_exchange: bool,
    /// `/oauth/init`, `/oauth/callback/from/:provider`, `/oauth/login` (the
    /// FreeSewing sign-in with confirmation).
    pub oauth: bool,
    /// `/auth/login`, `/auth/callback`, `/auth/logout`, `/auth/me`,
    /// `/auth/test-token` (the ConsultFlow cookie sessions).
    pub browser: bool,
    /// `/`, `/login`, `/account`, `/logout`: authgate's own pages.
    pub pages: bool,
    /// `/.well-known/openid-configuration`, `/oauth2/*`: authgate as an
    /// OpenID Provider for the `[clients.*]`.
    pub oidc: bool,
}

impl Default for SurfacesConfig {
    fn default() -> Self {
        SurfacesConfig {
            mail_code: true,
            code_exchange: true,
            oauth: true,
            browser: true,
            pages: true,
            oidc: true,
            forward_auth: false,
        }
    }
}

/// What kind of provider a `providers.<name>` section configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Microsoft,
    Google,
    Github,
    Oidc,
}

/// One sign-in provider. Every URL defaults to the real provider's; set them
/// to point authgate at a test or air-gapped provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Defaults from the name: `microsoft`, `google`, `github`; any other
    /// name must say `oidc`.
    pub kind: Option<ProviderKind>,
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    /// A file holding `client_secret` (one line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// OpenID issuer (`oidc`; `google` defaults to https://accounts.google.com).
    pub issuer: Option<Url>,
    /// Microsoft: `common`, `organizations`, `consumers` or a tenant id.
    pub tenant: Option<String>,
    /// Microsoft: the login authority (https://login.microsoftonline.com).
    pub authority: Option<Url>,
    /// Microsoft: tenant ids whose users may sign in (empty: any the
    /// `tenant` setting admits).
    pub allowed_tenants: Vec<String>,
    /// Microsoft Graph (https://graph.microsoft.com); `/v1.0/me` is read at
    /// sign-in.
    pub graph_url: Option<Url>,
    /// GitHub REST API (https://api.github.com).
    pub api_url: Option<Url>,
    /// Overrides of the authorize, token, JWKS and userinfo endpoints.
    pub auth_url: Option<Url>,
    pub token_url: Option<Url>,
    pub jwks_url: Option<Url>,
    pub userinfo_url: Option<Url>,
    /// Scopes to request (defaults per kind).
    pub scopes: Option<Vec<String>>,
    /// ID-token signature algorithms accepted (asymmetric only; default
    /// RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA).
    pub algorithms: Option<Vec<String>>,
    /// Link a first sign-in to an existing account with the same e-mail
    /// when the provider vouches for the address (default true; see the
    /// README for what "vouches" means per provider).
    pub trust_email: Option<bool>,
    /// May a first sign-in join an existing account by the address this
    /// provider vouches for: `verified-email`, `confirm` or `never`.
    /// Default: `verified-email` on the code-exchange API (its contract is
    /// e-mail matching), `confirm` on every other surface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linking: Option<crate::core::Linking>,
    /// Audiences besides `client_id` an ID token may name (OpenID Connect
    /// Core 3.1.3.7: others are refused). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_audiences: Option<Vec<String>>,
    /// Seconds for each HTTP call to the provider (default 10).
    pub timeout_secs: Option<u64>,
    /// The name authgate's sign-in page shows on this provider's button
    /// (default: Microsoft, Google, GitHub, or the section's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// An icon for the button (an https URL or a path on authgate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
    /// Clock leeway for `exp`/`iat`/`nbf`, seconds (default 60).
    pub leeway_secs: Option<i64>,
    /// Least seconds between two JWKS re-fetches forced by an unknown key id
    /// (default 60).
    pub jwks_refetch_interval_secs: Option<u64>,
}

impl ProviderConfig {
    pub fn kind_for(&self, name: &str) -> Option<ProviderKind> {
        self.kind.or(match name {
            "microsoft" => Some(ProviderKind::Microsoft),
            "google" => Some(ProviderKind::Google),
            "github" => Some(ProviderKind::Github),
            _ => None,
        })
    }
}

/// Provider sign-ins started (`/auth/login`, `/api/v1/auth/oauth2`,
/// `/oauth/init`): each is a database row for ten minutes, so one client
/// may start only so many.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginFlowsConfig {
    pub per_ip: Vec<crate::core::Limit>,
}

impl Default for LoginFlowsConfig {
    fn default() -> Self {
        LoginFlowsConfig {
            per_ip: crate::core::providers::DEFAULT_FLOW_LIMITS.to_vec(),
        }
    }
}

/// The token vault: AES-256-GCM keys for providers' tokens at rest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    /// Base64 of 32 random bytes each (`authgate vault key` makes one). The
    /// first encrypts; all decrypt. Empty: the key file's keys.
    pub keys: Vec<Secret>,
    /// A file of keys, one per line, first encrypting (read when `keys` is
    /// empty). Default with SQLite: `<database file>.vault-key`, made (mode
    /// 0600) at the first start that needs a key. PostgreSQL has no default:
    /// every instance needs the same key.
    pub key_file: Option<std::path::PathBuf>,
}

impl VaultConfig {
    /// The key file in force: the configured one, else the SQLite
    /// database's `<file>.vault-key`.
    pub fn key_file_for(&self, database_url: &str) -> Option<std::path::PathBuf> {
        if let Some(f) = &self.key_file {
            return Some(f.clone());
        }
        let mut file = crate::store::sqlite_file(database_url)?.into_os_string();
        file.push(".vault-key");
        Some(file.into())
    }
}

impl Config {
    /// The cookie-session surface keeps its provider's tokens (for
    /// `/auth/test-token`): a vault key is needed.
    pub fn keeps_provider_tokens(&self) -> bool {
        self.surfaces.browser && self.providers.contains_key(self.browser.provider_name())
    }

    /// The OpenID provider serves clients: it signs ID tokens with keys the
    /// vault keeps.
    pub fn needs_oidc_keys(&self) -> bool {
        self.surfaces.oidc && !self.clients.is_empty()
    }
}

/// `[mfa]`: second factors (TOTP with recovery codes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MfaConfig {
    /// `off` (default: none offered), `optional` (people may set one up on
    /// their account page and are then asked for it), `all` (everyone sets
    /// one up before their first session).
    pub required: crate::core::MfaRequired,
    /// Adding or removing a factor, new recovery codes and deleting the
    /// account need a sign-in at most this many minutes ago.
    pub step_up_minutes: i64,
    /// Surfaces without a second step (`mail_code`, `code_exchange`,
    /// `oauth`, `browser`) refuse a person who needs a second factor;
    /// those listed here sign them in on the first factor alone.
    pub exempt_surfaces: Vec<String>,
    /// The name authenticator apps show (default: `pages.product_name`,
    /// else `authgate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl Default for MfaConfig {
    fn default() -> Self {
        MfaConfig {
            required: crate::core::MfaRequired::Off,
            step_up_minutes: 10,
            exempt_surfaces: Vec::new(),
            issuer: None,
        }
    }
}

/// `[passkeys]`: sign-in with passkeys on the pages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasskeysConfig {
    /// Offer passkeys on the sign-in and account pages (they need
    /// JavaScript, and `server.public_url` on a domain name: https, or
    /// http://localhost).
    pub enabled: bool,
    /// The relying-party id passkeys are bound to (a domain; it cannot
    /// change later without losing them). Default: `server.public_url`'s
    /// host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rp_id: Option<String>,
    /// The name authenticators show. Default: the pages' product name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rp_name: Option<String>,
    /// Origins a passkey answer may come from, each on `rp_id`. Default:
    /// `server.public_url`'s.
    pub origins: Vec<String>,
}

impl Config {
    /// Passkeys are on.
    pub fn passkeys_on(&self) -> bool {
        self.passkeys.enabled
    }

    /// The core's relying party from `[passkeys]` (off when not enabled).
    pub fn passkey_policy(&self) -> Result<crate::core::passkeys::PasskeyPolicy, String> {
        let p = &self.passkeys;
        if !p.enabled {
            return Ok(Default::default());
        }
        let public = self.server.public_url();
        let rp_id = match &p.rp_id {
            Some(id) => id.clone(),
            None => public
                .domain()
                .ok_or_else(|| {
                    format!(
                        "server.public_url ({public}) has no domain name, and passkeys need one: set passkeys.rp_id and a public_url on it"
                    )
                })?
                .to_string(),
        };
        let origins = if p.origins.is_empty() {
            vec![public.clone()]
        } else {
            p.origins
                .iter()
                .map(|o| Url::parse(o).map_err(|e| format!("{o:?}: {e}")))
                .collect::<Result<Vec<_>, _>>()?
        };
        let name = p
            .rp_name
            .clone()
            .or_else(|| self.pages.product_name.clone())
            .unwrap_or_else(|| self.mail_login.product_name.clone());
        crate::core::passkeys::PasskeyPolicy::new(&rp_id, &name, &origins)
    }
}

/// The surfaces that sign in without a second step, with the session kind
/// each makes.
pub const SURFACES_WITHOUT_SECOND_STEP: [(&str, &str); 4] = [
    ("mail_code", "mail"),
    (
        "code_exchange",
        crate::core::providers::CODE_EXCHANGE_SURFACE,
    ),
    ("oauth", "oauth"),
    ("browser", "cookie"),
];

impl Config {
    /// Second factors are on: their secrets are sealed by the vault.
    pub fn mfa_on(&self) -> bool {
        self.mfa.required != crate::core::MfaRequired::Off
    }

    /// The core's second-factor gate, from `[mfa]`.
    pub fn mfa_policy(&self) -> crate::core::MfaPolicy {
        let m = &self.mfa;
        crate::core::MfaPolicy {
            required: m.required,
            step_up_secs: m.step_up_minutes.saturating_mul(60),
            exempt_kinds: SURFACES_WITHOUT_SECOND_STEP
                .iter()
                .filter(|(name, _)| m.exempt_surfaces.iter().any(|e| e == name))
                .map(|(_, kind)| kind.to_string())
                .collect(),
            issuer: m
                .issuer
                .clone()
                .or_else(|| self.pages.product_name.clone())
                .unwrap_or_else(|| "authgate".into()),
        }
    }

    fn validate_mfa(&self, errors: &mut Vec<ConfigError>) {
        let m = &self.mfa;
        if !(1..=1440).contains(&m.step_up_minutes) {
            errors.push(err("mfa.step_up_minutes", "must be between 1 and 1440"));
        }
        for e in &m.exempt_surfaces {
            if !SURFACES_WITHOUT_SECOND_STEP.iter().any(|(n, _)| n == e) {
                errors.push(err(
                    "mfa.exempt_surfaces",
                    format!("{e:?} is not one of mail_code, code_exchange, oauth, browser"),
                ));
            }
        }
        if m.issuer
            .as_deref()
            .is_some_and(|i| i.trim().is_empty() || i.len() > 64)
        {
            errors.push(err("mfa.issuer", "must be 1 to 64 characters"));
        }
        if let Err(e) = self.passkey_policy() {
            errors.push(err("passkeys.rp_id", e));
        }
        if self.passkeys.enabled && !self.surfaces.pages {
            errors.push(err(
                "passkeys.enabled",
                "passkeys are registered and used on authgate's pages: turn surfaces.pages on",
            ));
        }
        if self.mfa_on() && !self.surfaces.pages {
            errors.push(err(
                "mfa.required",
                "second factors are set up and shown on authgate's pages: turn surfaces.pages on",
            ));
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token for `/admin/*` (at least 32 characters). Unset: the
    /// admin endpoints answer 401 to everyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding `token` (one line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (default) or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `authgate=debug,tower_http=debug`;
    /// `RUST_LOG`, when set, wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// A configuration problem, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key, e.g. `server.listen` (empty for file-level problems).
    pub key: String,
    pub message: String,
    /// Where the bad value came from (file path or environment variable).
    pub source: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.key, self.message)?;
        }
        if let Some(s) = &self.source {
            write!(f, " (from {s})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// All problems found, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "invalid configuration: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub(crate) fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
        source: None,
    }
}

/// The environment layer: `AUTHGATE_<SECTION>__<KEY>`. Variables without a
/// `__` (such as `AUTHGATE_CONFIG` itself) are not config keys.
pub fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|k| k.as_str().contains("__"))
        .split("__")
}

/// Which file to read: an explicit path must exist; otherwise
/// `./authgate.toml` is read if present.
pub fn resolve_path(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigErrors> {
    match explicit {
        Some(p) if p.is_file() => Ok(Some(p.to_path_buf())),
        Some(p) => Err(ConfigErrors(vec![err(
            "",
            format!(
                "config file {} does not exist or is not a file",
                p.display()
            ),
        )])),
        None => Ok(Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.is_file())),
    }
}

impl Config {
    /// Load from the file (if any) and the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigErrors> {
        let mut fig = Figment::new();
        if let Some(p) = path {
            fig = fig.merge(Toml::file_exact(p));
        }
        Self::from_figment(fig.merge(env_provider()))
    }

    /// Load from TOML text alone (tests, `config check` of a string).
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigErrors> {
        Self::from_figment(Figment::from(Toml::string(s)))
    }

    pub fn from_figment(fig: Figment) -> Result<Config, ConfigErrors> {
        let mut cfg: Config = fig
            .extract()
            .map_err(|e| ConfigErrors(e.into_iter().map(from_figment).collect()))?;
        cfg.read_secret_files(&fig)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every secret key `k` may instead be read from the file named by
    /// `k_file` (`AUTHGATE_ADMIN__TOKEN_FILE=/run/secrets/admin`, as lldap
    /// does): its content, without the trailing line break. Setting both is
    /// an error, as is a file that cannot be read or is empty.
    fn read_secret_files(&mut self, fig: &Figment) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut read = |key: &str, file: &Option<PathBuf>| -> Option<String> {
            let file = file.as_ref()?;
            if fig.contains(key) {
                errors.push(err(
                    &format!("{key}_file"),
                    format!("set {key} or {key}_file, not both"),
                ));
                return None;
            }
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    let value = text.strip_suffix('\n').unwrap_or(&text);
                    let value = value.strip_suffix('\r').unwrap_or(value);
                    if value.is_empty() {
                        errors.push(err(
                            &format!("{key}_file"),
                            format!("{} is empty", file.display()),
                        ));
                        return None;
                    }
                    Some(value.to_string())
                }
                Err(e) => {
                    errors.push(err(
                        &format!("{key}_file"),
                        format!("cannot read {}: {e}", file.display()),
                    ));
                    None
                }
            }
        };
        if let Some(v) = read("database.url", &self.database.url_file) {
            self.database.url = v.into();
        }
        if let Some(v) = read("mail.smtp_url", &self.mail.smtp_url_file) {
            self.mail.smtp_url = Some(v.into());
        }
        if let Some(v) = read("admin.token", &self.admin.token_file) {
            self.admin.token = Some(v.into());
        }
        for (name, p) in &mut self.providers {
            if let Some(v) = read(
                &format!("providers.{name}.client_secret"),
                &p.client_secret_file,
            ) {
                p.client_secret = Some(v.into());
            }
        }
        for (id, c) in &mut self.clients {
            if let Some(v) = read(
                &format!("clients.{id}.client_secret"),
                &c.client_secret_file,
            ) {
                c.client_secret = Some(v.into());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Checks serde cannot express: ranges, URL shapes, cross-key rules.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let s = &self.server;
        for (key, url) in [
            ("server.public_url", &s.public_url),
            ("server.frontend_url", &s.frontend_url),
        ] {
            if let Some(u) = url
                && (!matches!(u.scheme(), "http" | "https") || u.host().is_none())
            {
                errors.push(err(key, "must be an http:// or https:// URL with a host"));
            }
        }
        for o in &s.allowed_redirect_origins {
            if parse_origin(&o.replace(LANGUAGE_PLACEHOLDER, "en")).is_none() {
                errors.push(err(
                    "server.allowed_redirect_origins",
                    format!("{o:?} is not an origin like https://app.example.com"),
                ));
            }
        }
        if s.body_limit_bytes < 1024 {
            errors.push(err("server.body_limit_bytes", "must be at least 1024"));
        }
        if s.request_timeout_secs == 0 {
            errors.push(err("server.request_timeout_secs", "must be at least 1"));
        }
        if !(1..=300).contains(&s.header_timeout_secs) {
            errors.push(err(
                "server.header_timeout_secs",
                "must be between 1 and 300",
            ));
        }
        if s.max_connections < 16 {
            errors.push(err("server.max_connections", "must be at least 16"));
        }
        if s.max_connections_per_client == 0 || s.max_connections_per_client > s.max_connections {
            errors.push(err(
                "server.max_connections_per_client",
                "must be between 1 and server.max_connections",
            ));
        }
        let d = &self.database;
        let url = d.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            errors.push(err(
                "database.url",
                "must start with sqlite:// or postgres://",
            ));
        } else if url.starts_with("sqlite:") && url.contains(":memory:") {
            errors.push(err(
                "database.url",
                "an in-memory SQLite database would be lost at exit and differ per connection; use a file",
            ));
        } else if url.starts_with("postgres") && Url::parse(url).is_err() {
            errors.push(err("database.url", "is not a valid postgres:// URL"));
        }
        if d.max_connections == 0 {
            errors.push(err("database.max_connections", "must be at least 1"));
        }
        if d.acquire_timeout_secs == 0 {
            errors.push(err("database.acquire_timeout_secs", "must be at least 1"));
        }
        let se = &self.session;
        if se.idle_timeout_secs <= 0 {
            errors.push(err("session.idle_timeout_secs", "must be positive"));
        }
        if se.absolute_timeout_secs <= 0 {
            errors.push(err("session.absolute_timeout_secs", "must be positive"));
        }
        if se.touch_interval_secs < 0 || se.touch_interval_secs >= se.idle_timeout_secs.max(1) {
            errors.push(err(
                "session.touch_interval_secs",
                "must be zero or more and less than session.idle_timeout_secs",
            ));
        }
        let m = &self.mail;
        match (&m.transport, &m.smtp_url) {
            (MailTransport::Smtp, None) => errors.push(err(
                "mail.smtp_url",
                "is required when mail.transport = \"smtp\"",
            )),
            (_, Some(u)) => match Url::parse(u.expose()) {
                Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host().is_some() => {}
                _ => errors.push(err(
                    "mail.smtp_url",
                    "must look like smtp://host:port or smtps://host:port",
                )),
            },
            _ => {}
        }
        if crate::core::Email::parse(mail_from_address(&m.from)).is_err() {
            errors.push(err(
                "mail.from",
                "must be an address or \"Name <address>\" with one plain address",
            ));
        }
        if m.retry_initial_secs < 1 || m.retry_max_secs < m.retry_initial_secs {
            errors.push(err(
                "mail.retry_max_secs",
                "retry_initial_secs must be at least 1 and retry_max_secs at least that",
            ));
        }
        if !(1..=300).contains(&m.smtp_timeout_secs) {
            errors.push(err("mail.smtp_timeout_secs", "must be 1 to 300 seconds"));
        }
        let ml = &self.mail_login;
        let (lo, hi) = match ml.code_format {
            CodeFormatName::Words => (2, 8),
            CodeFormatName::Digits => (6, 12),
        };
        if let Some(n) = ml.code_length
            && !(lo..=hi).contains(&n)
        {
            errors.push(err(
                "mail_login.code_length",
                format!("must be between {lo} and {hi} for this code_format"),
            ));
        }
        for (key, v) in [
            ("mail_login.code_ttl_secs", ml.code_ttl_secs),
            ("mail_login.auth_token_ttl_secs", ml.auth_token_ttl_secs),
        ] {
            if !(30..=86_400).contains(&v) {
                errors.push(err(key, "must be between 30 and 86400 seconds"));
            }
        }
        if !(1..=10).contains(&ml.attempts) {
            errors.push(err("mail_login.attempts", "must be between 1 and 10"));
        }
        for (key, list) in [
            ("mail_login.allow_list", &ml.allow_list),
            ("mail_login.deny_list", &ml.deny_list),
        ] {
            if let Some(bad) = list.iter().find(|e| {
                e.trim().is_empty() || e.chars().any(|c| c.is_whitespace() || c.is_control())
            }) {
                errors.push(err(key, format!("{bad:?} is not an address or domain")));
            }
        }
        for (key, limits) in [
            ("login_flows.per_ip", &self.login_flows.per_ip),
            ("mail_login.per_address", &ml.per_address),
            ("mail_login.per_ip", &ml.per_ip),
            ("mail_login.global", &ml.global),
        ] {
            if limits.iter().any(|l| l.max < 1 || l.window_secs < 1) {
                errors.push(err(key, "every limit needs max >= 1 and window_secs >= 1"));
            }
        }
        // One client must not be able to spend the whole shared budget: in
        // every global window, the client's own limits must stop it first.
        for g in &ml.global {
            let own_max = ml
                .per_ip
                .iter()
                .map(|l| {
                    let w = l.window_secs.max(1);
                    l.max.saturating_mul((g.window_secs + w - 1) / w)
                })
                .min();
            if own_max.is_none_or(|m| m >= g.max) {
                errors.push(err(
                    "mail_login.per_ip",
                    format!(
                        "must stop one client before it reaches the global limit of {} per {} s",
                        g.max, g.window_secs
                    ),
                ));
                break;
            }
        }
        if ml.dns_timeout_secs == 0 {
            errors.push(err("mail_login.dns_timeout_secs", "must be at least 1"));
        }
        if let Some(t) = &self.admin.token
            && t.expose().len() < 32
        {
            errors.push(err(
                "admin.token",
                "must be at least 32 characters (e.g. `openssl rand -hex 32`)",
            ));
        }
        self.validate_providers(&mut errors);
        self.validate_mfa(&mut errors);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            errors.push(err("log.level", format!("is not a valid filter: {e}")));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn validate_providers(&self, errors: &mut Vec<ConfigError>) {
        const ASYMMETRIC: [&str; 9] = [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
        ];
        for (name, p) in &self.providers {
            let key = |k: &str| format!("providers.{name}.{k}");
            let valid_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !valid_name {
                errors.push(err(
                    &format!("providers.{name}"),
                    "provider names are lowercase letters, digits, - and _",
                ));
            }
            let Some(kind) = p.kind_for(name) else {
                errors.push(err(
                    &key("kind"),
                    "is required for this name: microsoft, google, github or oidc",
                ));
                continue;
            };
            if p.client_id.trim().is_empty() {
                errors.push(err(&key("client_id"), "is required"));
            }
            if p.client_secret
                .as_ref()
                .map(Secret::expose)
                .is_none_or(|s| s.trim().is_empty())
            {
                errors.push(err(
                    &key("client_secret"),
                    "is required (authgate is a confidential client)",
                ));
            }
            if kind == ProviderKind::Oidc && p.issuer.is_none() {
                errors.push(err(&key("issuer"), "is required for kind = \"oidc\""));
            }
            let only =
                |field: &str, set: bool, kinds: &[ProviderKind], errors: &mut Vec<ConfigError>| {
                    if set && !kinds.contains(&kind) {
                        errors.push(err(
                            &key(field),
                            format!("does not apply to a {kind:?} provider"),
                        ));
                    }
                };
            use ProviderKind as K;
            only("tenant", p.tenant.is_some(), &[K::Microsoft], errors);
            only("authority", p.authority.is_some(), &[K::Microsoft], errors);
            only(
                "allowed_tenants",
                !p.allowed_tenants.is_empty(),
                &[K::Microsoft],
                errors,
            );
            only("graph_url", p.graph_url.is_some(), &[K::Microsoft], errors);
            only("api_url", p.api_url.is_some(), &[K::Github], errors);
            only("issuer", p.issuer.is_some(), &[K::Google, K::Oidc], errors);
            only(
                "jwks_url",
                p.jwks_url.is_some(),
                &[K::Microsoft, K::Google, K::Oidc],
                errors,
            );
            if let Some(t) = &p.tenant
                && (t.is_empty()
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            {
                errors.push(err(
                    &key("tenant"),
                    "must be common, organizations, consumers, a tenant id or domain",
                ));
            }
            for (field, url) in [
                ("issuer", &p.issuer),
                ("authority", &p.authority),
                ("graph_url", &p.graph_url),
                ("api_url", &p.api_url),
                ("auth_url", &p.auth_url),
                ("token_url", &p.token_url),
                ("jwks_url", &p.jwks_url),
                ("userinfo_url", &p.userinfo_url),
            ] {
                if let Some(u) = url
                    && (!matches!(u.scheme(), "http" | "https") || u.host().is_none())
                {
                    errors.push(err(
                        &key(field),
                        "must be an http:// or https:// URL with a host",
                    ));
                }
            }
            if let Some(algs) = &p.algorithms
                && (algs.is_empty() || algs.iter().any(|a| !ASYMMETRIC.contains(&a.as_str())))
            {
                errors.push(err(
                    &key("algorithms"),
                    format!("must be a non-empty list of {}", ASYMMETRIC.join(", ")),
                ));
            }
            if p.timeout_secs == Some(0) {
                errors.push(err(&key("timeout_secs"), "must be at least 1"));
            }
            if p.leeway_secs.is_some_and(|l| !(0..=600).contains(&l)) {
                errors.push(err(&key("leeway_secs"), "must be between 0 and 600"));
            }
        }
        if !self.vault.keys.is_empty()
            && let Err(e) = crate::core::Vault::from_base64(
                &self
                    .vault
                    .keys
                    .iter()
                    .map(Secret::expose)
                    .collect::<Vec<_>>(),
            )
        {
            errors.push(err("vault.keys", e));
        }
        for surface in crate::http::SURFACES {
            (surface.validate)(self, errors);
        }
    }

    /// The effective configuration as TOML, with every secret masked.
    pub fn to_masked_toml(&self) -> String {
        // The secrets' types serialize masked.
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not render: {e}\n"))
    }
}

/// `Name <a@b.c>` or `a@b.c` → `a@b.c`.
fn mail_from_address(from: &str) -> &str {
    match (from.rfind('<'), from.rfind('>')) {
        (Some(a), Some(b)) if a < b && b == from.len() - 1 => &from[a + 1..b],
        _ => from,
    }
}

/// `scheme://host[:port]` with nothing after it.
/// In `server.allowed_redirect_origins`, stands for each of `oauth.languages`
/// (per-language front ends such as `https://{language}.example.com`).
pub const LANGUAGE_PLACEHOLDER: &str = "{language}";

impl ServerConfig {
    /// The origins a post-sign-in redirect (and a credentialed CORS call) may
    /// come from: the front end's and `allowed_redirect_origins`, each
    /// `{language}` entry once per language.
    pub fn allowed_origins(&self, languages: &[String]) -> Vec<String> {
        let mut out: Vec<String> = self
            .frontend_url
            .iter()
            .map(|u| u.origin().ascii_serialization())
            .collect();
        if self.frontend_url.is_none() {
            out.push(self.public_url().origin().ascii_serialization());
        }
        for o in &self.allowed_redirect_origins {
            let variants: Vec<String> = if o.contains(LANGUAGE_PLACEHOLDER) {
                languages
                    .iter()
                    .map(|l| o.replace(LANGUAGE_PLACEHOLDER, l))
                    .collect()
            } else {
                vec![o.clone()]
            };
            out.extend(
                variants
                    .iter()
                    .filter_map(|v| parse_origin(v))
                    .map(|u| u.origin().ascii_serialization()),
            );
        }
        out
    }
}

pub fn parse_origin(s: &str) -> Option<Url> {
    let u = Url::parse(s).ok()?;
    let bare = matches!(u.scheme(), "http" | "https")
        && u.host().is_some()
        && u.path() == "/"
        && u.query().is_none()
        && u.fragment().is_none()
        && u.username().is_empty()
        && u.password().is_none()
        && !s.trim_end_matches('/').ends_with(':');
    bare.then_some(u)
}

/// Replace the password in a URL (if any) with a mask.
pub fn mask_url_password(s: &str) -> String {
    match Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some(MASK));
            u.to_string()
        }
        Ok(_) => s.to_string(),
        // Not a URL we understand: it might still hold a secret.
        Err(_) => MASK.to_string(),
    }
}

fn from_figment(e: figment::Error) -> ConfigError {
    let key = e.path.join(".");
    let source = e.metadata.as_ref().map(|m| match &m.source {
        Some(figment::Source::File(p)) => format!("{} {}", m.name, p.display()),
        _ => {
            // For the environment, name the variable itself.
            if m.name.contains("environment") && !e.path.is_empty() {
                format!(
                    "environment variable {ENV_PREFIX}{}",
                    e.path
                        .iter()
                        .map(|p| p.to_uppercase())
                        .collect::<Vec<_>>()
                        .join("__")
                )
            } else {
                m.name.to_string()
            }
        }
    });
    let message = match &e.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            return ConfigError {
                key: if e.path.last() == Some(field) {
                    key
                } else if key.is_empty() {
                    field.clone()
                } else {
                    format!("{key}.{field}")
                },
                message: format!("unknown key (expected one of: {})", expected.join(", ")),
                source,
            };
        }
        kind => kind.to_string(),
    };
    ConfigError {
        key,
        message,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:3001");
        assert_eq!(c.database.url.expose(), "sqlite://authgate.db");
        assert_eq!(c.mail.transport, MailTransport::Console);
        assert_eq!(c.server.public_url().as_str(), "http://127.0.0.1:3001/");
    }

    #[test]
    fn bad_listen_names_the_key() {
        let e = Config::from_toml_str("[server]\nlisten = \"nope\"\n").unwrap_err();
        assert_eq!(e.0[0].key, "server.listen");
        assert!(e.to_string().contains("server.listen"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e =
            Config::from_toml_str("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n").unwrap_err();
        assert_eq!(e.0[0].key, "server.listn");
        let e = Config::from_toml_str("[servr]\nlisten = 1\n").unwrap_err();
        assert_eq!(e.0[0].key, "servr");
    }

    #[test]
    fn cross_key_rules() {
        let e = Config::from_toml_str("[mail]\ntransport = \"smtp\"\n").unwrap_err();
        assert_eq!(e.0[0].key, "mail.smtp_url");
        let e = Config::from_toml_str("[database]\nurl = \"mysql://x\"\n").unwrap_err();
        assert_eq!(e.0[0].key, "database.url");
        let e = Config::from_toml_str(
            "[server]\nallowed_redirect_origins = [\"https://a.example/path\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.0[0].key, "server.allowed_redirect_origins");
        assert!(
            Config::from_toml_str("[server]\nallowed_redirect_origins = [\"https://a.example\"]\n")
                .is_ok()
        );
    }

    #[test]
    fn oauth_redirects_never_carry_the_state_and_may_name_the_language() {
        let e = Config::from_toml_str(
            "[oauth]\nsignup_redirect = \"{frontend}/confirm/signup/{state}/\"\n",
        )
        .unwrap_err();
        assert_eq!(e.0[0].key, "oauth.signup_redirect");
        assert!(e.0[0].message.contains("{state}"), "{}", e.0[0].message);
        // Per-language front ends: each configured language's origin allowed.
        let toml = "[server]\nfrontend_url = \"https://freesewing.org\"\n\
                    allowed_redirect_origins = [\"https://{language}.freesewing.org\"]\n\
                    [oauth]\nlogin_redirect = \"https://{language}.freesewing.org/login/callback/{confirmation}/{validation}\"\n";
        let cfg = Config::from_toml_str(toml).unwrap();
        let origins = cfg.server.allowed_origins(&cfg.oauth.languages);
        assert!(origins.contains(&"https://nl.freesewing.org".to_string()));
        assert!(origins.contains(&"https://freesewing.org".to_string()));
        assert!(!origins.iter().any(|o| o.contains('{')));
        // Without the origin allowed, the template is refused.
        let e = Config::from_toml_str(
            "[oauth]\nlogin_redirect = \"https://{language}.freesewing.org/login/callback/{confirmation}/{validation}\"\n",
        )
        .unwrap_err();
        assert_eq!(e.0[0].key, "oauth.login_redirect");
    }

    #[test]
    fn mail_login_keys() {
        let c = Config::from_toml_str(
            "[mail_login]\ncode_format = \"digits\"\ndeny_list = [\"bad.example\"]\ndns_server = \"127.0.0.1:5353\"\nper_address = [{ max = 5, window_secs = 60 }]\n",
        )
        .unwrap();
        let p = c.mail_login.policy();
        assert_eq!(p.code_format, crate::core::CodeFormat::Digits(8));
        assert_eq!(p.per_address, vec![crate::core::Limit::new(5, 60)]);
        let e = Config::from_toml_str("[mail_login]\ncode_length = 1\n").unwrap_err();
        assert_eq!(e.0[0].key, "mail_login.code_length");
        let e = Config::from_toml_str("[admin]\ntoken = \"short\"\n").unwrap_err();
        assert_eq!(e.0[0].key, "admin.token");
        let e =
            Config::from_toml_str("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(e.0[0].key.starts_with("server.trusted_proxies"), "{e}");
    }

    #[test]
    fn secrets_are_masked() {
        let c = Config::from_toml_str(
            "[database]\nurl = \"postgres://app:hunter2@db:5432/auth\"\n[mail]\ntransport = \"smtp\"\nsmtp_url = \"smtp://u:pw-secret@mail:25\"\n[admin]\ntoken = \"admin-secret-0123456789abcdefghijkl\"\n",
        )
        .unwrap();
        let out = c.to_masked_toml();
        assert!(
            !out.contains("hunter2") && !out.contains("pw-secret"),
            "{out}"
        );
        assert!(
            out.contains("postgres://app:********@db:5432/auth"),
            "{out}"
        );
    }
}
