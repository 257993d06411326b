//! Passwordless sign-in by a code sent by e-mail.
//!
//! `send_code` checks the address against the allow- and deny-lists (the
//! deny-list also against the domain's MX hosts), the device token and the
//! rate limits, then stores a login (token and code as hashes only) together
//! with the rendered mail in the durable outbox, in one transaction.
//! `check_code` spends one attempt atomically and, on the right code, trades
//! the login for a short-lived `mailAuthToken` that proves the address.
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::ratelimit::{Limit, Windows, ip_key};
use super::secret::{self, TokenFormat};
use super::{
    AuditEvent, ClientMeta, Core, Email, Error, Locale, MailAuthToken, MailLogin, NewUser,
    OutboxMail, User, UserKey,
};

const WORDS: &str = include_str!("eff_large_wordlist.txt");

/// How codes look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeFormat {
    /// This many words from the EFF large word list (7,772 words: about
    /// 12.9 bits each), joined by spaces. The original's format.
    Words(u8),
    /// This many decimal digits.
    Digits(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailLoginPolicy {
    pub code_format: CodeFormat,
    /// Seconds a code (and its login token) is valid.
    pub code_ttl: i64,
    /// Wrong guesses allowed per code.
    pub attempts: i64,
    /// Seconds a `mailAuthToken` is valid.
    pub auth_token_ttl: i64,
    /// Empty: every address. Entries with `@` are addresses, others domains.
    pub allow_list: Vec<String>,
    /// Mail domains or mail-server host names (a suffix match on labels).
    pub deny_list: Vec<String>,
    pub per_address: Vec<Limit>,
    pub per_ip: Vec<Limit>,
    pub global: Vec<Limit>,
    /// Whether trading a `mailAuthToken` for a session may create a user.
    pub signup: bool,
    /// The product named in mails ("Your sign-in code for ...").
    pub product_name: String,
}

impl Default for MailLoginPolicy {
    fn default() -> Self {
        MailLoginPolicy {
            code_format: CodeFormat::Words(3),
            code_ttl: 600,
            attempts: 3,
            auth_token_ttl: 600,
            allow_list: Vec::new(),
            deny_list: Vec::new(),
            per_address: vec![Limit::new(2, 300), Limit::new(6, 86_400)],
            per_ip: vec![Limit::new(20, 3600), Limit::new(100, 86_400)],
            global: vec![
                Limit::new(100, 60),
                Limit::new(500, 3600),
                Limit::new(1000, 86_400),
            ],
            signup: true,
            product_name: "authgate".into(),
        }
    }
}

/// What DNS says about a domain's mail servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// MX host names (lower-case, without the trailing dot).
    Hosts(Vec<String>),
    /// No MX records (mail goes to the domain itself) or no such domain.
    None,
    /// RFC 7505 null MX: the domain accepts no mail.
    NullMx,
}

/// MX look-ups (implemented over a real resolver in `mail::mx`).
#[async_trait]
pub trait MxLookup: Send + Sync + 'static {
    /// `Err` when DNS could not answer (timeout, SERVFAIL, unreachable).
    async fn mx(&self, domain: &str) -> Result<MxAnswer, String>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendCodeOutcome {
    /// An allow-list is configured and the address is not on it.
    NotAllowListed,
    /// The domain or one of its mail servers is on the deny-list.
    DenyListed,
    /// The mail is queued; the token names this login.
    Sent { mail_login_token: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeCheck {
    /// Right code: the login is used up and this token proves the address.
    Accepted { mail_auth_token: String },
    /// Wrong code, and attempts remain.
    Wrong,
    /// Unknown, expired or used-up login (also: wrong code on the last attempt).
    Gone,
}

/// What a verified `mailAuthToken` proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedMail {
    pub mail: Email,
    pub locale: String,
}

/// Lower-case, without spaces and `*`: how codes are compared.
pub fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '*')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The stored form of a code: keyed by the login token, which itself is
/// stored only as a hash, so a copy of the database cannot test guesses.
pub fn code_hash(login_token: &str, code: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"authgate mail code\0");
    h.update(login_token.as_bytes());
    h.update(b"\0");
    h.update(normalize_code(code).as_bytes());
    h.finalize().to_vec()
}

/// The word list, split once (7,772 words; splitting it per code cost more
/// than the rest of a code request together).
fn word_list() -> &'static [&'static str] {
    static LIST: std::sync::LazyLock<Vec<&'static str>> =
        std::sync::LazyLock::new(|| WORDS.lines().collect());
    &LIST
}

pub fn new_code(format: CodeFormat) -> Result<String, Error> {
    match format {
        CodeFormat::Words(n) => {
            let words = word_list();
            let mut out = Vec::with_capacity(n as usize);
            for _ in 0..n {
                out.push(words[secret::random_below(words.len() as u32)? as usize]);
            }
            Ok(out.join(" "))
        }
        CodeFormat::Digits(n) => (0..n)
            .map(|_| secret::random_below(10).map(|d| char::from(b'0' + d as u8)))
            .collect(),
    }
}

/// `entry` names `host` itself or a parent domain of it.
fn domain_matches(host: &str, entry: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let entry = entry
        .trim_start_matches('@')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    !entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}")))
}

impl MailLoginPolicy {
    pub fn allows(&self, mail: &Email) -> bool {
        self.allow_list.is_empty()
            || self.allow_list.iter().any(|e| {
                if e.contains('@') && !e.starts_with('@') {
                    e.eq_ignore_ascii_case(mail.as_str())
                } else {
                    e.trim_start_matches('@')
                        .eq_ignore_ascii_case(mail.domain())
                }
            })
    }
}

impl Core {
    pub fn mail_login_policy(&self) -> &MailLoginPolicy {
        &self.inner.mail_login
    }

    /// The address's own domain is on the deny-list (no look-up).
    fn domain_denied(&self, mail: &Email) -> bool {
        let policy = self.mail_login_policy();
        let domain = mail.domain().to_ascii_lowercase();
        policy.deny_list.iter().any(|e| domain_matches(&domain, e))
    }

    /// One of the domain's mail servers is on the deny-list (an MX look-up,
    /// answered from the resolver's cache within the record's TTL).
    async fn mx_denied(&self, mail: &Email) -> Result<bool, Error> {
        let policy = self.mail_login_policy();
        if policy.deny_list.is_empty() {
            return Ok(false);
        }
        let domain = mail.domain().to_ascii_lowercase();
        let Some(mx) = &self.inner.mx else {
            return Ok(false);
        };
        // Fail closed: without an answer we cannot tell whether the mail
        // server is denied, so the request fails (and may be retried).
        match mx.mx(&domain).await.map_err(|e| {
            tracing::warn!(%domain, error = %e, "MX look-up failed");
            Error::Unavailable("the mail domain could not be checked; try again later".into())
        })? {
            MxAnswer::NullMx => Ok(true),
            MxAnswer::None => Ok(false),
            MxAnswer::Hosts(hosts) => Ok(hosts
                .iter()
                .any(|h| policy.deny_list.iter().any(|e| domain_matches(h, e)))),
        }
    }

    /// Record that a code request was refused by a limit; returns `e`.
    async fn rate_limited(
        &self,
        e: Error,
        mail: &Email,
        limit: &str,
        client: &ClientMeta,
    ) -> Error {
        self.audit(
            "mail_code.rate_limited",
            None,
            client,
            Some(json!({ "domain": mail.domain(), "limit": limit })),
        )
        .await;
        e
    }

    /// Start a sign-in by e-mail code. Checks run cheapest first: the
    /// allow-list, the deny-list by the address's domain, the limits of this
    /// address and this client (counted even when refused: they are the
    /// client's own), the deny-list by MX look-up (so a refused client
    /// cannot make authgate query DNS), the device token, and last the
    /// global limit, which a refused request never spends: one client can
    /// only use its own budget, never lock everyone else out.
    pub async fn send_mail_code(
        &self,
        mail: Email,
        locale: Locale,
        device_token: Option<&str>,
        client: &ClientMeta,
    ) -> Result<SendCodeOutcome, Error> {
        let policy = self.mail_login_policy();
        if !policy.allows(&mail) {
            return Ok(SendCodeOutcome::NotAllowListed);
        }
        if self.domain_denied(&mail) {
            return Ok(SendCodeOutcome::DenyListed);
        }
        let norm = mail.normalized();
        let address_key = format!("mail:{norm}");
        let ip = client.ip.as_deref().and_then(ip_key);
        let mut keys: Vec<(&str, &[Limit])> =
            vec![(address_key.as_str(), policy.per_address.as_slice())];
        if let Some(ip) = &ip {
            keys.push((ip.as_str(), policy.per_ip.as_slice()));
        }
        let now = self.now();
        let own = Windows::new(now, &keys);
        let counts = self.store().rate_limit_hits(&own.hits).await?;
        if let Err(e) = own.verdict(&counts) {
            return Err(self.rate_limited(e, &mail, "client", client).await);
        }
        if self.mx_denied(&mail).await? {
            return Ok(SendCodeOutcome::DenyListed);
        }
        let device = match device_token {
            None => None,
            Some(t) => Some(self.check_session(t).await?.ok_or(Error::Unauthorized)?),
        };
        let windows = Windows::new(now, &[("global:mail", policy.global.as_slice())]);
        let token = secret::new_token(TokenFormat::Alnum32)?;
        let code = new_code(policy.code_format)?;
        // A device's name (its user agent, which its owner chose) goes only
        // into mails to its own user's address: nobody else may put words
        // of their choosing into a mail to a third party.
        let device_name = device
            .as_ref()
            .filter(|d| {
                d.user
                    .email
                    .as_ref()
                    .is_some_and(|e| e.normalized() == mail.normalized())
            })
            .map(|d| {
                d.session
                    .user_agent
                    .clone()
                    .unwrap_or_else(|| "an unnamed device".to_string())
            });
        let templates =
            self.inner.templates.as_ref().ok_or_else(|| {
                Error::Internal("no mail templates were given to the core".into())
            })?;
        let message = templates.login_code(&super::ports::mail::CodeMail {
            locale: locale.as_str(),
            product: &policy.product_name,
            to: mail.as_str(),
            code: &code,
            device: device_name.as_deref(),
            minutes: policy.code_ttl / 60,
        })?;
        let login = MailLogin {
            token_hash: secret::hash_token(&token).to_vec(),
            mail: mail.as_str().to_string(),
            mail_norm: norm,
            locale: locale.as_str().to_string(),
            code_hash: code_hash(&token, &code),
            attempts_left: policy.attempts,
            device_session_id: device.as_ref().map(|d| d.session.id),
            created_at: now,
            expires_at: now + policy.code_ttl,
        };
        let outbox = OutboxMail {
            id: Uuid::now_v7(),
            to: message.to,
            subject: message.subject,
            text: message.text,
            html: message.html,
            attempts: 0,
            next_attempt_at: now,
            expires_at: login.expires_at,
            created_at: now,
        };
        let audit = AuditEvent {
            at: now,
            kind: "mail_code.sent".into(),
            user_id: device.as_ref().map(|d| d.user.id),
            ip: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            detail: Some(json!({ "domain": mail.domain() }).to_string()),
        };
        // The global windows count only requests that passed their own
        // limits; the core judges the counts (`admit`), and a request the
        // global limit refuses keeps nothing, its hits included, so no flood
        // can spend the shared budget or push its end.
        let admit = |counts: &[i64]| windows.verdict(counts).is_ok();
        let counts = self
            .store()
            .insert_mail_login(&windows.hits, &admit, &login, &outbox, &audit)
            .await?;
        if let Err(e) = windows.verdict(&counts) {
            return Err(self.rate_limited(e, &mail, "global", client).await);
        }
        self.inner.outbox_notify.notify_one();
        Ok(SendCodeOutcome::Sent {
            mail_login_token: token,
        })
    }

    /// Check a code against its login. Each call spends one attempt,
    /// atomically, before the code is compared.
    pub async fn check_mail_code(
        &self,
        login_token: &str,
        code: &str,
        client: &ClientMeta,
    ) -> Result<CodeCheck, Error> {
        if login_token.is_empty() || login_token.len() > secret::MAX_TOKEN_LEN {
            return Ok(CodeCheck::Gone);
        }
        // A code longer than any code is a wrong guess like any other (one
        // attempt spent, 403), not a reason to call the login gone.
        let plausible = code.len() <= 1024;
        let now = self.now();
        let hash = secret::hash_token(login_token);
        let Some(login) = self.store().spend_mail_login_attempt(&hash, now).await? else {
            return Ok(CodeCheck::Gone);
        };
        if !plausible || !secret::ct_eq(&login.code_hash, &code_hash(login_token, code)) {
            self.audit(
                "mail_code.wrong",
                None,
                client,
                Some(json!({ "attempts_left": login.attempts_left })),
            )
            .await;
            if login.attempts_left <= 0 {
                self.store().delete_mail_login(&hash).await?;
                return Ok(CodeCheck::Gone);
            }
            return Ok(CodeCheck::Wrong);
        }
        // Single use: only the caller that deletes the login wins.
        if !self.store().delete_mail_login(&hash).await? {
            return Ok(CodeCheck::Gone);
        }
        let token = secret::new_token(TokenFormat::Alnum32)?;
        self.store()
            .insert_mail_auth_token(&MailAuthToken {
                token_hash: secret::hash_token(&token).to_vec(),
                mail: login.mail,
                locale: login.locale,
                created_at: now,
                expires_at: now + self.mail_login_policy().auth_token_ttl,
            })
            .await?;
        self.audit("mail_code.accepted", None, client, None).await;
        Ok(CodeCheck::Accepted {
            mail_auth_token: token,
        })
    }

    /// Consume a `mailAuthToken` (once): the address it proves, or `None`.
    pub async fn take_mail_auth_token(&self, token: &str) -> Result<Option<VerifiedMail>, Error> {
        if token.is_empty() || token.len() > secret::MAX_TOKEN_LEN {
            return Ok(None);
        }
        let Some(t) = self
            .store()
            .take_mail_auth_token(&secret::hash_token(token), self.now())
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(VerifiedMail {
            mail: Email::parse(&t.mail)?,
            locale: t.locale,
        }))
    }

    /// Trade a `mailAuthToken` for a session (kind `mail`): the user with
    /// that address, created first when sign-up is allowed. Returns the
    /// user, the session token and whether the user was created.
    pub async fn sign_in_with_mail_auth_token(
        &self,
        token: &str,
        format: TokenFormat,
        client: &ClientMeta,
    ) -> Result<(User, String, bool), Error> {
        let (user, created) = self.user_of_mail_auth_token(token, client).await?;
        let (session, _) = self
            .sign_in(&user, "mail", super::AMR_OTP, format, client)
            .await?;
        Ok((user, session, created))
    }

    /// Consume a `mailAuthToken` for its user, created first when sign-up
    /// is allowed (the first factor; the caller signs in). Returns the user
    /// and whether it was created.
    pub async fn user_of_mail_auth_token(
        &self,
        token: &str,
        client: &ClientMeta,
    ) -> Result<(User, bool), Error> {
        let verified = self
            .take_mail_auth_token(token)
            .await?
            .ok_or(Error::Unauthorized)?;
        match self.find_user(&UserKey::Email(verified.mail.clone())).await {
            Ok(u) => Ok((u, false)),
            Err(Error::NotFound) if self.mail_login_policy().signup => {
                let new = NewUser {
                    email: verified.mail.clone(),
                    display_name: None,
                    locale: Locale::parse(&verified.locale).ok(),
                };
                match self.add_user(new, client).await {
                    Ok(u) => Ok((u, true)),
                    // Created concurrently by another request: use it.
                    Err(Error::Conflict(_)) => {
                        Ok((self.find_user(&UserKey::Email(verified.mail)).await?, false))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(Error::NotFound) => Err(Error::Forbidden("sign-up is not allowed")),
            Err(e) => Err(e),
        }
    }
}

/// The shared outbox wake-up, so a queued mail goes out at once.
pub type OutboxNotify = Arc<tokio::sync::Notify>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_compare_ignoring_spaces_stars_and_case() {
        assert_eq!(normalize_code(" Apple *pear*  PLUM "), "applepearplum");
        assert_eq!(
            code_hash("t", "apple pear plum"),
            code_hash("t", "ApplePear Plum*")
        );
        assert_ne!(
            code_hash("t", "apple pear plum"),
            code_hash("u", "apple pear plum")
        );
    }

    #[test]
    fn code_formats() {
        let w = new_code(CodeFormat::Words(3)).unwrap();
        assert_eq!(w.split(' ').count(), 3);
        assert!(w.split(' ').all(|x| WORDS.lines().any(|l| l == x)));
        assert_eq!(WORDS.lines().count(), 7772);
        let d = new_code(CodeFormat::Digits(8)).unwrap();
        assert_eq!(d.len(), 8);
        assert!(d.chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn allow_and_deny_matching() {
        let p = MailLoginPolicy {
            allow_list: vec!["boss@corp.example".into(), "partner.example".into()],
            ..Default::default()
        };
        let ok = |s: &str| p.allows(&Email::parse(s).unwrap());
        assert!(ok("Boss@corp.example"));
        assert!(!ok("other@corp.example"));
        assert!(ok("anyone@PARTNER.example"));
        assert!(!ok("x@sub.partner.example"));
        assert!(domain_matches("mx1.badmail.example.", "badmail.example"));
        assert!(domain_matches("badmail.example", "BADMAIL.example"));
        assert!(!domain_matches("notbadmail.example", "badmail.example"));
    }
}
