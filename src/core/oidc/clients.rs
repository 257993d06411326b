//! Relying parties: their settings and the rules those follow, the same for
//! a `[clients.<id>]` table in the config and for a client registered with
//! `authgate client add` (kept in the database, its secret hashed). The
//! core looks both up through one registry: config clients first, then the
//! stored ones, read again after `oidc.client_cache_secs`.
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::super::{ClientMeta, Core, Error, Timestamp};
use super::{Client, GrantType, SCOPES, hash_client_secret};

/// What `sub` a client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectType {
    /// authgate's user id.
    #[default]
    Public,
    /// A `sub` of its own per sector (the host of its redirect URIs).
    Pairwise,
}

/// What access tokens a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessTokenFormat {
    /// A random string, looked up on every use (revocable at once).
    #[default]
    Opaque,
    /// A signed JWT (RFC 9068) a resource server checks with the JWKS; it
    /// stays valid until it expires, whatever is revoked.
    Jwt,
}

/// A client's settings, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientSettings {
    /// The name the consent page shows (default: the client id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub scopes: Vec<String>,
    pub access_token_ttl_secs: i64,
    pub id_token_ttl_secs: i64,
    pub refresh_token_ttl_secs: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
    pub subject_type: SubjectType,
    /// Not the operator's own application: the person is asked once which
    /// scopes it may have (the consent page), and again when it asks for
    /// more.
    pub third_party: bool,
    pub access_token_format: AccessTokenFormat,
    /// Where a logout token is posted when a session it holds ends
    /// (OpenID Connect Back-Channel Logout 1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backchannel_logout_uri: Option<String>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            name: None,
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            scopes: SCOPES.iter().map(|s| s.to_string()).collect(),
            access_token_ttl_secs: 900,
            id_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            jwks: None,
            subject_type: SubjectType::Public,
            third_party: false,
            access_token_format: AccessTokenFormat::Opaque,
            backchannel_logout_uri: None,
        }
    }
}

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A client secret (the config's, or one the CLI made).
    Secret,
    /// `private_key_jwt` with the keys in `jwks`.
    Keys,
    /// None: a public client (PKCE).
    Public,
}

/// A client id: 1 to 100 letters, digits, `-`, `.` or `_`.
pub fn client_id_problem(id: &str) -> Option<&'static str> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    (!ok).then_some("a client id is 1 to 100 letters, digits, '-', '.' or '_'")
}

/// A redirect URI a client may register: absolute, no fragment; https, or
/// http on a loopback host (development and native apps, RFC 8252).
pub fn redirect_uri_problem(uri: &str) -> Option<&'static str> {
    let Ok(u) = url::Url::parse(uri) else {
        return Some("is not an absolute URL");
    };
    if u.fragment().is_some() {
        return Some("must not have a fragment");
    }
    match u.scheme() {
        "https" => None,
        "http" => match u.host() {
            Some(url::Host::Domain("localhost")) => None,
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => None,
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => None,
            _ => Some("must be https (http only on a loopback host)"),
        },
        _ => Some("must be an https URL"),
    }
}

/// A client's `jwks`: a JWK set of public signing keys.
pub fn client_jwks(v: &Value) -> Result<jsonwebtoken::jwk::JwkSet, String> {
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(v.clone()).map_err(|e| format!("is not a JWK set: {e}"))?;
    if set.keys.is_empty() {
        return Err("holds no key".into());
    }
    for k in &set.keys {
        if matches!(
            k.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
        ) {
            return Err("must hold public keys (RSA, EC, OKP), not a shared secret".into());
        }
        if jsonwebtoken::DecodingKey::from_jwk(k).is_err() {
            return Err(format!(
                "key {} cannot be used",
                k.common.key_id.as_deref().unwrap_or("without kid")
            ));
        }
    }
    Ok(set)
}

impl ClientSettings {
    /// A pairwise client's sector: the one host of its redirect URIs.
    fn sector(&self) -> Option<String> {
        let mut hosts = self
            .redirect_uris
            .iter()
            .filter_map(|u| url::Url::parse(u).ok()?.host_str().map(str::to_string));
        let first = hosts.next()?;
        hosts.all(|h| h == first).then_some(first)
    }

    /// What is wrong with these settings, as (field, message), for a client
    /// that authenticates as `credential`; `pairwise_salt`: whether
    /// `oidc.pairwise_secret` is set.
    pub fn problems(
        &self,
        credential: Credential,
        pairwise_salt: bool,
    ) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        if let Some(name) = &self.name
            && (name.trim().is_empty()
                || name.chars().count() > 100
                || name.chars().any(char::is_control))
        {
            out.push(("name", "is 1 to 100 printable characters".into()));
        }
        if let Some(jwks) = &self.jwks {
            if let Err(e) = client_jwks(jwks) {
                out.push(("jwks", e));
            }
            if credential == Credential::Secret {
                out.push((
                    "jwks",
                    "a client has a client_secret or jwks (private_key_jwt), not both".into(),
                ));
            }
        }
        if credential == Credential::Keys && self.jwks.is_none() {
            out.push(("jwks", "is required for private_key_jwt".into()));
        }
        if self.subject_type == SubjectType::Pairwise {
            if self.sector().is_none() {
                out.push((
                    "subject_type",
                    "a pairwise client's redirect_uris must all be on one host (its sector)".into(),
                ));
            }
            if !pairwise_salt {
                out.push((
                    "subject_type",
                    "pairwise subjects need oidc.pairwise_secret (at least 32 characters)".into(),
                ));
            }
        }
        if self.grant_types.is_empty() {
            out.push(("grant_types", "must name at least one grant type".into()));
        }
        if self.grant_types.contains(&GrantType::AuthorizationCode) && self.redirect_uris.is_empty()
        {
            out.push((
                "redirect_uris",
                "is required for the authorization_code grant".into(),
            ));
        }
        if self.grant_types.contains(&GrantType::ClientCredentials)
            && credential == Credential::Public
        {
            out.push((
                "grant_types",
                "client_credentials needs a client_secret or jwks".into(),
            ));
        }
        for (field, uris) in [
            ("redirect_uris", &self.redirect_uris),
            ("post_logout_redirect_uris", &self.post_logout_redirect_uris),
        ] {
            for u in uris {
                if let Some(problem) = redirect_uri_problem(u) {
                    out.push((field, format!("{u}: {problem}")));
                }
            }
        }
        if let Some(u) = &self.backchannel_logout_uri
            && let Some(problem) = redirect_uri_problem(u)
        {
            out.push(("backchannel_logout_uri", format!("{u}: {problem}")));
        }
        for (field, v) in [
            ("access_token_ttl_secs", self.access_token_ttl_secs),
            ("id_token_ttl_secs", self.id_token_ttl_secs),
            ("refresh_token_ttl_secs", self.refresh_token_ttl_secs),
        ] {
            if v < 60 {
                out.push((field, "must be at least 60".into()));
            }
        }
        if self.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
            out.push(("scopes", "scopes are single words".into()));
        }
        out
    }

    /// The client these settings make (checked before: see `problems`).
    pub fn client(&self, id: &str, secret_hash: Option<[u8; 32]>) -> Client {
        Client {
            id: id.to_string(),
            name: self.name.clone(),
            secret_hash,
            redirect_uris: self.redirect_uris.clone(),
            post_logout_redirect_uris: self.post_logout_redirect_uris.clone(),
            grant_types: self.grant_types.clone(),
            scopes: self.scopes.clone(),
            access_token_ttl: self.access_token_ttl_secs,
            id_token_ttl: self.id_token_ttl_secs,
            refresh_token_ttl: self.refresh_token_ttl_secs,
            jwks: self.jwks.as_ref().and_then(|j| client_jwks(j).ok()),
            pairwise_sector: (self.subject_type == SubjectType::Pairwise)
                .then(|| self.sector())
                .flatten(),
            third_party: self.third_party,
            jwt_access_tokens: self.access_token_format == AccessTokenFormat::Jwt,
            backchannel_logout_uri: self.backchannel_logout_uri.clone(),
        }
    }
}

// ---------------------------------------------------------------- stored

/// A client registered by the CLI, as stored: its settings as JSON, its
/// secret as SHA-256 (a 256-bit random secret: a slow hash adds nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClient {
    pub id: String,
    pub secret_hash: Option<Vec<u8>>,
    pub settings: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Where a client is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientSource {
    Config,
    Database,
}

/// A client as the CLI shows it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct ClientView {
    pub id: String,
    pub source: ClientSource,
    /// `client_secret`, `private_key_jwt` or `none`.
    pub auth_method: &'static str,
    #[serde(flatten)]
    pub settings: ClientSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

/// The clients as last read: config ones and stored ones, by id.
#[derive(Default)]
pub(crate) struct ClientRegistry {
    loaded_at: Option<Timestamp>,
    clients: BTreeMap<String, Arc<Client>>,
    /// The origins the pages' forms may lead to (redirect and post-logout
    /// URIs), sorted.
    origins: Arc<Vec<String>>,
}

/// A new client secret: 256 random bits, URL-safe.
fn new_secret() -> Result<String, Error> {
    super::super::secret::new_token(super::super::secret::TokenFormat::UrlSafe32)
}

fn parse_settings(s: &StoredClient) -> Result<ClientSettings, Error> {
    serde_json::from_str(&s.settings)
        .map_err(|e| Error::Internal(format!("stored client {}: {e}", s.id)))
}

fn secret_hash(s: &StoredClient) -> Option<[u8; 32]> {
    s.secret_hash.as_deref().and_then(|h| h.try_into().ok())
}

fn credential_of(secret: bool, settings: &ClientSettings) -> Credential {
    match (secret, settings.jwks.is_some()) {
        (true, _) => Credential::Secret,
        (false, true) => Credential::Keys,
        (false, false) => Credential::Public,
    }
}

fn auth_method(c: Credential) -> &'static str {
    match c {
        Credential::Secret => "client_secret",
        Credential::Keys => "private_key_jwt",
        Credential::Public => "none",
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        field,
        message: message.into(),
    }
}

impl Core {
    /// A client by id: the config's, or one stored by the CLI (read again
    /// after `oidc.client_cache_secs`).
    pub async fn oidc_client(&self, id: &str) -> Result<Option<Arc<Client>>, Error> {
        if let Some(c) = self.inner.oidc.clients.get(id) {
            return Ok(Some(c.clone()));
        }
        Ok(self.client_registry().await?.clients.get(id).cloned())
    }

    /// The origins that the pages' forms may lead to, as last read (no I/O:
    /// a page's CSP).
    pub fn oidc_client_origins(&self) -> Arc<Vec<String>> {
        self.inner
            .oidc_clients
            .read()
            .map(|r| r.origins.clone())
            .unwrap_or_default()
    }

    async fn client_registry(&self) -> Result<Arc<ClientRegistry>, Error> {
        let now = self.now();
        let fresh = |r: &ClientRegistry| {
            r.loaded_at
                .is_some_and(|at| now - at < self.inner.oidc.client_cache_secs)
        };
        let current = self.registry_snapshot();
        if fresh(&current) {
            return Ok(current);
        }
        // One reader at a time; the others take what it read.
        let _reading = self.inner.oidc_clients_reload.lock().await;
        let current = self.registry_snapshot();
        if fresh(&current) {
            return Ok(current);
        }
        let registry = Arc::new(self.read_clients(now).await?);
        if let Ok(mut slot) = self.inner.oidc_clients.write() {
            *slot = registry.clone();
        }
        Ok(registry)
    }

    fn registry_snapshot(&self) -> Arc<ClientRegistry> {
        self.inner
            .oidc_clients
            .read()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    async fn read_clients(&self, now: Timestamp) -> Result<ClientRegistry, Error> {
        let mut clients = BTreeMap::new();
        for s in self.store().oidc_clients().await? {
            if self.inner.oidc.clients.contains_key(&s.id) {
                continue;
            }
            match parse_settings(&s) {
                Ok(settings) => {
                    let c = settings.client(&s.id, secret_hash(&s));
                    clients.insert(s.id.clone(), Arc::new(c));
                }
                Err(e) => {
                    tracing::error!(client = %s.id, error = %e, "a stored client cannot be read; it is ignored")
                }
            }
        }
        let mut origins: Vec<String> = clients
            .values()
            .chain(self.inner.oidc.clients.values())
            .flat_map(|c| c.redirect_uris.iter().chain(&c.post_logout_redirect_uris))
            .filter_map(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization())
            .collect();
        origins.sort();
        origins.dedup();
        Ok(ClientRegistry {
            loaded_at: Some(now),
            clients,
            origins: Arc::new(origins),
        })
    }

    fn forget_clients(&self) {
        if let Ok(mut slot) = self.inner.oidc_clients.write() {
            *slot = Arc::default();
        }
    }

    /// Every client: the config's, then the stored ones.
    pub(crate) async fn all_clients(&self) -> Result<Vec<Arc<Client>>, Error> {
        let registry = self.client_registry().await?;
        Ok(self
            .inner
            .oidc
            .clients
            .values()
            .chain(registry.clients.values())
            .cloned()
            .collect())
    }

    /// The longest ID-token lifetime of any client (how long a retired key
    /// stays published, with a minute for clocks).
    pub(crate) async fn retired_key_lifetime(&self) -> Result<i64, Error> {
        Ok(self
            .all_clients()
            .await?
            .iter()
            .map(|c| c.id_token_ttl)
            .max()
            .unwrap_or(3600)
            + 60)
    }

    fn check_settings(
        &self,
        settings: &ClientSettings,
        credential: Credential,
    ) -> Result<(), Error> {
        let problems = settings.problems(credential, self.inner.oidc.pairwise_secret.is_some());
        match problems.into_iter().next() {
            Some((field, message)) => Err(invalid(field, message)),
            None => Ok(()),
        }
    }

    fn refuse_config_client(&self, id: &str) -> Result<(), Error> {
        if self.inner.oidc.clients.contains_key(id) {
            return Err(Error::Forbidden(
                "this client is defined in the config file: change it there",
            ));
        }
        Ok(())
    }

    /// Register a client (`authgate client add`). With `confidential`, a
    /// secret is made and returned: the only time it is ever shown.
    pub async fn register_client(
        &self,
        id: &str,
        settings: ClientSettings,
        confidential: bool,
        meta: &ClientMeta,
    ) -> Result<(ClientView, Option<String>), Error> {
        if let Some(p) = client_id_problem(id) {
            return Err(invalid("client_id", p));
        }
        if self.inner.oidc.clients.contains_key(id) {
            return Err(Error::Conflict(
                "a client with this id (in the config file)",
            ));
        }
        self.check_settings(&settings, credential_of(confidential, &settings))?;
        let secret = confidential.then(new_secret).transpose()?;
        let now = self.now();
        let stored = StoredClient {
            id: id.to_string(),
            secret_hash: secret.as_deref().map(|s| hash_client_secret(s).to_vec()),
            settings: serde_json::to_string(&settings)
                .map_err(|e| Error::Internal(format!("client settings: {e}")))?,
            created_at: now,
            updated_at: now,
        };
        self.store().insert_oidc_client(&stored).await?;
        self.forget_clients();
        self.audit(
            "oidc.client_added",
            None,
            meta,
            Some(json!({ "client_id": id, "auth_method": auth_method(credential_of(confidential, &settings)) })),
        )
        .await;
        Ok((self.view_stored(&stored)?, secret))
    }

    fn view_stored(&self, s: &StoredClient) -> Result<ClientView, Error> {
        let settings = parse_settings(s)?;
        Ok(ClientView {
            id: s.id.clone(),
            source: ClientSource::Database,
            auth_method: auth_method(credential_of(s.secret_hash.is_some(), &settings)),
            settings,
            created_at: Some(s.created_at),
            updated_at: Some(s.updated_at),
        })
    }

    /// Every client, config ones first, each by id.
    pub async fn clients(
        &self,
        config: &BTreeMap<String, ClientSettings>,
    ) -> Result<Vec<ClientView>, Error> {
        let mut out: Vec<ClientView> = config
            .iter()
            .map(|(id, settings)| {
                let secret = self
                    .inner
                    .oidc
                    .clients
                    .get(id)
                    .is_some_and(|c| c.secret_hash.is_some());
                ClientView {
                    id: id.clone(),
                    source: ClientSource::Config,
                    auth_method: auth_method(credential_of(secret, settings)),
                    settings: settings.clone(),
                    created_at: None,
                    updated_at: None,
                }
            })
            .collect();
        for s in self.store().oidc_clients().await? {
            if !config.contains_key(&s.id) {
                out.push(self.view_stored(&s)?);
            }
        }
        Ok(out)
    }

    async fn stored_client(&self, id: &str) -> Result<StoredClient, Error> {
        self.refuse_config_client(id)?;
        self.store()
            .oidc_clients()
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(Error::NotFound)
    }

    /// Change a stored client's settings (`authgate client update`):
    /// `change` edits them, and the result must follow the same rules.
    pub async fn update_client(
        &self,
        id: &str,
        change: impl FnOnce(&mut ClientSettings),
        meta: &ClientMeta,
    ) -> Result<ClientView, Error> {
        let mut stored = self.stored_client(id).await?;
        let mut settings = parse_settings(&stored)?;
        change(&mut settings);
        self.check_settings(
            &settings,
            credential_of(stored.secret_hash.is_some(), &settings),
        )?;
        stored.settings = serde_json::to_string(&settings)
            .map_err(|e| Error::Internal(format!("client settings: {e}")))?;
        stored.updated_at = self.now();
        if !self.store().update_oidc_client(&stored).await? {
            return Err(Error::NotFound);
        }
        self.forget_clients();
        self.audit(
            "oidc.client_updated",
            None,
            meta,
            Some(json!({ "client_id": id })),
        )
        .await;
        self.view_stored(&stored)
    }

    /// A new secret for a stored confidential client (the old one stops
    /// working at once; tokens already issued stay valid). Shown once.
    pub async fn rotate_client_secret(&self, id: &str, meta: &ClientMeta) -> Result<String, Error> {
        let mut stored = self.stored_client(id).await?;
        if stored.secret_hash.is_none() {
            return Err(Error::Forbidden(
                "this client has no secret (a public or private_key_jwt client)",
            ));
        }
        let secret = new_secret()?;
        stored.secret_hash = Some(hash_client_secret(&secret).to_vec());
        stored.updated_at = self.now();
        if !self.store().update_oidc_client(&stored).await? {
            return Err(Error::NotFound);
        }
        self.forget_clients();
        self.audit(
            "oidc.client_secret_rotated",
            None,
            meta,
            Some(json!({ "client_id": id })),
        )
        .await;
        Ok(secret)
    }

    /// Delete a stored client: every grant it holds is revoked with it.
    pub async fn delete_client(&self, id: &str, meta: &ClientMeta) -> Result<(), Error> {
        self.refuse_config_client(id)?;
        if !self.store().delete_oidc_client(id, self.now()).await? {
            return Err(Error::NotFound);
        }
        self.forget_clients();
        self.inner.userinfo_cache.clear();
        self.audit(
            "oidc.client_deleted",
            None,
            meta,
            Some(json!({ "client_id": id })),
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_must_be_https_or_loopback() {
        assert_eq!(redirect_uri_problem("https://app.example/cb"), None);
        assert_eq!(redirect_uri_problem("http://127.0.0.1:8080/cb"), None);
        assert_eq!(redirect_uri_problem("http://localhost/cb"), None);
        assert!(redirect_uri_problem("http://app.example/cb").is_some());
        assert!(redirect_uri_problem("https://app.example/cb#x").is_some());
        assert!(redirect_uri_problem("/cb").is_some());
        assert!(redirect_uri_problem("javascript:alert(1)").is_some());
    }

    #[test]
    fn settings_follow_the_client_rules() {
        let ok = ClientSettings {
            redirect_uris: vec!["https://app.example/cb".into()],
            ..Default::default()
        };
        assert!(ok.problems(Credential::Public, false).is_empty());
        let machine = ClientSettings {
            grant_types: vec![GrantType::ClientCredentials],
            ..Default::default()
        };
        assert!(machine.problems(Credential::Secret, false).is_empty());
        assert_eq!(
            machine.problems(Credential::Public, false)[0].0,
            "grant_types"
        );
        let pairwise = ClientSettings {
            subject_type: SubjectType::Pairwise,
            ..ok.clone()
        };
        assert_eq!(
            pairwise.problems(Credential::Public, false)[0].0,
            "subject_type"
        );
        assert!(pairwise.problems(Credential::Public, true).is_empty());
        let nameless = ClientSettings {
            name: Some(" ".into()),
            backchannel_logout_uri: Some("http://rp.example/bye".into()),
            ..ok
        };
        let fields: Vec<&str> = nameless
            .problems(Credential::Public, false)
            .iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(fields, ["name", "backchannel_logout_uri"]);
    }
}
