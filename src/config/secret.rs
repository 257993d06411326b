//! Secrets from the configuration. They are kept in `secrecy` types: never
//! printed by `Debug`, zeroed when dropped, and written out (by `config
//! show`) masked. Code that needs the value asks for it by name
//! ([`Secret::expose`]), so every use is easy to find.
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{MASK, mask_url_password};

/// A secret value (a token, a client secret, a key): masked whole.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }

    /// The value itself: for the one place that uses it, never for a log.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Two configs are equal when their secrets are (compared in constant time).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        crate::core::secret::ct_eq(self.expose().as_bytes(), other.expose().as_bytes())
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

/// A URL that may carry a password (`postgres://user:pass@host/db`,
/// `smtp://user:pass@host`): shown with the password masked, the rest as
/// it is (which database, which mail server).
#[derive(Clone, PartialEq)]
pub struct SecretUrl(Secret);

impl SecretUrl {
    pub fn new(value: impl Into<String>) -> Self {
        SecretUrl(Secret::new(value))
    }

    /// The URL with its password: for connecting, never for a log.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The URL with its password masked, for logs and messages.
    pub fn masked(&self) -> String {
        mask_url_password(self.expose())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> Self {
        SecretUrl::new(s)
    }
}

impl From<String> for SecretUrl {
    fn from(s: String) -> Self {
        SecretUrl::new(s)
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretUrl::new)
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let s = Secret::new("hunter2-secret");
        assert_eq!(format!("{s:?}"), MASK);
        assert_eq!(toml::Value::try_from(&s).unwrap().as_str(), Some(MASK));
        assert_eq!(s.expose(), "hunter2-secret");
        let u = SecretUrl::new("postgres://app:hunter2@db:5432/auth");
        let shown = format!("{u:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("db:5432/auth"),
            "{shown}"
        );
        assert_eq!(u.expose(), "postgres://app:hunter2@db:5432/auth");
    }
}
