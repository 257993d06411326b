//! Forward auth: a reverse proxy (nginx `auth_request`, Caddy
//! `forward_auth`, Traefik ForwardAuth) asks, before each request to a
//! protected host reaches its application, whether the person behind it
//! may see it. The rules live here: which hosts are protected, who may
//! enter each, which paths are public, and how a browser signed in at
//! authgate is handed over to a protected host without its session ever
//! travelling in a URL. `http::forward` translates the proxies' protocols.
use std::collections::{BTreeMap, HashMap};

use serde_json::json;
use uuid::Uuid;

use super::secret::{self, TokenFormat};
use super::sessions::SessionCheck;
use super::{ClientMeta, Core, Error, Handoff, Session, User};

/// Seconds a hand-off code waits for the protected host's callback.
pub const FORWARD_HANDOFF_TTL_SECS: i64 = 60;
/// The `kind` of the sessions a hand-off makes on a protected host.
pub const FORWARD_SESSION_KIND: &str = "forward";
/// Every forward hand-off code starts with this.
const FORWARD_HANDOFF_PREFIX: &str = "agf.";

/// Who may enter one protected host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRule {
    /// E-mail domains (lower case) whose people may enter.
    pub allow_domains: Vec<String>,
    /// People who may enter: e-mail addresses (lower case) or user ids.
    pub allow_users: Vec<String>,
    /// Groups (of [`ForwardPolicy::groups`]) whose members may enter.
    pub allow_groups: Vec<String>,
    /// Paths anyone may see: an entry ending in `/` is a prefix, any other
    /// entry is one exact path.
    pub public_paths: Vec<String>,
}

impl HostRule {
    /// No list at all: any signed-in person may enter.
    fn admits_anyone(&self) -> bool {
        self.allow_domains.is_empty() && self.allow_users.is_empty() && self.allow_groups.is_empty()
    }

    /// Is `uri` (path and query, as the proxy saw it) a public path? Only a
    /// plain path can be: one with percent-escapes of `/`, `\` or `.`,
    /// with dot segments, empty segments or a backslash is never public,
    /// since the application behind might read it as another path.
    pub fn is_public(&self, uri: &str) -> bool {
        if self.public_paths.is_empty() {
            return false;
        }
        let path = uri.split(['?', '#']).next().unwrap_or_default();
        let Some(path) = plain_path(path) else {
            return false;
        };
        self.public_paths.iter().any(|p| {
            if p.ends_with('/') {
                path.starts_with(p.as_str())
            } else {
                path == *p
            }
        })
    }
}

/// `path` with its harmless escapes decoded, or `None` when it is not a
/// plain absolute path.
fn plain_path(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.contains('\\') || path.contains("//") {
        return None;
    }
    let lowered = path.to_ascii_lowercase();
    if ["%2f", "%5c", "%2e", "%00"]
        .iter()
        .any(|e| lowered.contains(e))
    {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?
        .into_owned();
    if decoded.chars().any(char::is_control)
        || decoded.split('/').any(|seg| seg == "." || seg == "..")
    {
        return None;
    }
    Some(decoded)
}

/// The forward-auth rules (`[forward_auth]` in the config).
#[derive(Debug, Clone, Default)]
pub struct ForwardPolicy {
    /// Protected hosts by name (lower case, without a port).
    pub hosts: HashMap<String, HostRule>,
    /// Groups by name, with their members (e-mail addresses in lower case,
    /// or user ids).
    pub groups: BTreeMap<String, Vec<String>>,
    /// The parent domain the session cookie is shared with
    /// (`session.cookie_domain`): hosts under it need no hand-off.
    pub cookie_domain: Option<String>,
}

impl ForwardPolicy {
    /// The rule of a host (`app.example.com`, any case, a port ignored).
    pub fn host(&self, host: &str) -> Option<&HostRule> {
        self.hosts.get(&host_name(host))
    }

    /// The groups a person is in, in name order.
    pub fn groups_of(&self, user: &User) -> Vec<&str> {
        let id = user.id.to_string();
        let email = user.email.as_ref().map(|e| e.as_str().to_ascii_lowercase());
        self.groups
            .iter()
            .filter(|(_, members)| {
                members
                    .iter()
                    .any(|m| *m == id || Some(m.as_str()) == email.as_deref())
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// May this person enter the host of `rule`?
    fn admits(&self, rule: &HostRule, user: &User) -> bool {
        if rule.admits_anyone() {
            return true;
        }
        let id = user.id.to_string();
        let email = user.email.as_ref().map(|e| e.as_str().to_ascii_lowercase());
        if rule
            .allow_users
            .iter()
            .any(|u| *u == id || Some(u.as_str()) == email.as_deref())
        {
            return true;
        }
        if let Some(domain) = email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d)
            && rule.allow_domains.iter().any(|d| d == domain)
        {
            return true;
        }
        let groups = self.groups_of(user);
        rule.allow_groups
            .iter()
            .any(|g| groups.contains(&g.as_str()))
    }

    /// Does the shared session cookie reach `host`?
    pub fn cookie_reaches(&self, host: &str) -> bool {
        let host = host_name(host);
        self.cookie_domain
            .as_deref()
            .is_some_and(|d| host == d || host.ends_with(&format!(".{d}")))
    }
}

/// A host name as the rules key it: lower case, without a port.
pub fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The answer to one forwarded request.
#[derive(Debug)]
pub enum Verdict {
    /// Let it through, with the person when someone is signed in (a public
    /// path lets anyone through).
    Allow(Option<Box<SessionCheck>>),
    /// Nobody is signed in: sign in first.
    SignIn,
    /// Signed in, and the host's rule does not admit this person.
    Denied(Box<SessionCheck>),
    /// The host is not one authgate protects (a proxy set up wrong).
    NotProtected,
}

impl Core {
    pub fn forward_policy(&self) -> &ForwardPolicy {
        &self.inner.forward
    }

    /// May the request to `host` for `uri` (path and query) go through,
    /// with these session tokens (the cookies the browser sent; the first
    /// live one counts)?
    pub async fn forward_check(
        &self,
        host: &str,
        uri: &str,
        tokens: &[String],
    ) -> Result<Verdict, Error> {
        let policy = &self.inner.forward;
        let Some(rule) = policy.host(host) else {
            return Ok(Verdict::NotProtected);
        };
        let mut check = None;
        for token in tokens {
            if let Some(c) = self.check_session(token).await? {
                check = Some(Box::new(c));
                break;
            }
        }
        let public = rule.is_public(uri);
        Ok(match check {
            None if public => Verdict::Allow(None),
            None => Verdict::SignIn,
            Some(c) if public || policy.admits(rule, &c.user) => Verdict::Allow(Some(c)),
            Some(c) => Verdict::Denied(c),
        })
    }

    /// Hand a browser signed in at authgate (`parent`) over to the
    /// protected `host`: a one-time code, valid for that host only and for
    /// [`FORWARD_HANDOFF_TTL_SECS`], which the host's callback trades for a
    /// session of its own.
    pub async fn forward_hand_off(&self, host: &str, parent: &Session) -> Result<String, Error> {
        if self.inner.forward.host(host).is_none() {
            return Err(Error::invalid("rd", "is not a protected host"));
        }
        let code = format!(
            "{FORWARD_HANDOFF_PREFIX}{}",
            secret::new_token(TokenFormat::UrlSafe32)?
        );
        let now = self.now();
        self.store()
            .insert_handoff(&Handoff {
                code_hash: secret::hash_token(&code).to_vec(),
                surface: forward_surface(host),
                user_id: Some(parent.user_id),
                refusal: None,
                detail: Some(parent.id.to_string()),
                created_at: now,
                expires_at: now + FORWARD_HANDOFF_TTL_SECS,
            })
            .await?;
        Ok(code)
    }

    /// Trade a hand-off code (once) at `host`'s callback for a session on
    /// that host: a child of the authgate session it came from, which ends
    /// with it and never outlives it. Unknown, used, expired or another
    /// host's code, or a parent session that ended: `Unauthorized`.
    pub async fn take_forward_hand_off(
        &self,
        code: &str,
        host: &str,
        meta: &ClientMeta,
    ) -> Result<(String, Session), Error> {
        if !code.starts_with(FORWARD_HANDOFF_PREFIX)
            || code.len() > secret::MAX_TOKEN_LEN + FORWARD_HANDOFF_PREFIX.len()
        {
            return Err(Error::Unauthorized);
        }
        let h = self
            .store()
            .take_handoff(&secret::hash_token(code), self.now())
            .await?
            .filter(|h| h.surface == forward_surface(host))
            .ok_or(Error::Unauthorized)?;
        let (Some(user_id), Some(parent_id)) = (
            h.user_id,
            h.detail.as_deref().and_then(|d| Uuid::parse_str(d).ok()),
        ) else {
            return Err(Error::Unauthorized);
        };
        let parent = self
            .list_sessions(Some(user_id), u32::MAX)
            .await?
            .into_iter()
            .find(|s| s.id == parent_id)
            .ok_or(Error::Unauthorized)?;
        let user = self.find_user(&super::UserKey::Id(user_id)).await?;
        let (token, session) = self
            .start_session(
                &user,
                FORWARD_SESSION_KIND,
                &parent.method,
                TokenFormat::UrlSafe32,
                meta,
                Some(&parent),
            )
            .await?;
        self.audit(
            "forward.signed_in",
            Some(user.id),
            meta,
            Some(json!({ "host": host_name(host), "session": session.id, "parent": parent.id })),
        )
        .await;
        Ok((token, session))
    }

    /// Sign out on a protected host: end the session a token names, the
    /// authgate session it was handed over from, and every other host's
    /// session handed over from that one. `false` if there was none.
    pub async fn end_session_family(&self, token: &str, meta: &ClientMeta) -> Result<bool, Error> {
        if token.is_empty() || token.len() > secret::MAX_TOKEN_LEN {
            return Ok(false);
        }
        let ended = self
            .store()
            .delete_session_family(&secret::hash_token(token))
            .await?;
        if ended.is_empty() {
            return Ok(false);
        }
        self.sessions_changed(None).await;
        let user = ended.first().map(|s| s.user_id);
        let ids: Vec<Uuid> = ended.iter().map(|s| s.id).collect();
        self.audit(
            "session.revoked",
            user,
            meta,
            Some(json!({ "sessions": ids, "by": "forward_auth" })),
        )
        .await;
        Ok(true)
    }
}

/// The hand-off surface name that binds a code to its host.
fn forward_surface(host: &str) -> String {
    format!("forward:{}", host_name(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(public: &[&str]) -> HostRule {
        HostRule {
            public_paths: public.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_plain_paths_are_public() {
        let r = rule(&["/healthz", "/static/"]);
        for yes in [
            "/healthz",
            "/healthz?x=1",
            "/static/app.css",
            "/static/a%20b.css",
        ] {
            assert!(r.is_public(yes), "{yes}");
        }
        for no in [
            "/healthzz",
            "/static",
            "/admin",
            "/static/../admin",
            "/static/%2e%2e/admin",
            "/static/%2E%2E/admin",
            "/static/..%2fadmin",
            "/static//admin",
            "/static/\\admin",
            "//static/x",
            "/static/%00",
            "static/x",
            "",
        ] {
            assert!(!r.is_public(no), "{no}");
        }
        assert!(!rule(&[]).is_public("/healthz"));
    }

    #[test]
    fn hosts_are_keyed_without_case_or_port() {
        assert_eq!(host_name("App.Example.COM:8443"), "app.example.com");
        assert_eq!(host_name("app.example.com."), "app.example.com");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        let p = ForwardPolicy {
            cookie_domain: Some("example.com".into()),
            ..Default::default()
        };
        assert!(p.cookie_reaches("a.example.com:444"));
        assert!(p.cookie_reaches("example.com"));
        assert!(!p.cookie_reaches("badexample.com"));
        assert!(!p.cookie_reaches("example.com.evil.test"));
    }

    #[test]
    fn rules_admit_by_user_domain_or_group() {
        let user = |email: &str| User {
            id: Uuid::now_v7(),
            email: Some(crate::core::Email::parse(email).unwrap()),
            display_name: None,
            locale: None,
            disabled: false,
            created_at: 0,
            updated_at: 0,
        };
        let alice = user("Alice@Example.com");
        let bob = user("bob@other.test");
        let mut p = ForwardPolicy::default();
        p.groups.insert(
            "ops".into(),
            vec![bob.id.to_string(), "carol@x.test".into()],
        );
        let anyone = HostRule::default();
        assert!(p.admits(&anyone, &alice) && p.admits(&anyone, &bob));
        let domain = HostRule {
            allow_domains: vec!["example.com".into()],
            ..Default::default()
        };
        assert!(p.admits(&domain, &alice) && !p.admits(&domain, &bob));
        let listed = HostRule {
            allow_users: vec!["alice@example.com".into()],
            ..Default::default()
        };
        assert!(p.admits(&listed, &alice) && !p.admits(&listed, &bob));
        let group = HostRule {
            allow_groups: vec!["ops".into()],
            ..Default::default()
        };
        assert!(!p.admits(&group, &alice) && p.admits(&group, &bob));
        assert_eq!(p.groups_of(&bob), vec!["ops"]);
        assert!(p.groups_of(&alice).is_empty());
    }
}
