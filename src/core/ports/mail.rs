//! Mail as the core needs it, defined here and implemented outside it
//! (`crate::mail`): a [`Transport`] delivers a finished [`Message`], and
//! [`MailTemplates`] renders the mails the core sends.
use async_trait::async_trait;

use crate::core::Error;

/// One mail, already rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Worth retrying later (server down, timeout, 4xx).
    #[error("temporary mail failure: {0}")]
    Temporary(String),
    /// Retrying will not help (bad address, 5xx).
    #[error("permanent mail failure: {0}")]
    Permanent(String),
}

#[async_trait]
pub trait Transport: Send + Sync + 'static {
    async fn send(&self, from: &str, message: &Message) -> Result<(), MailError>;
}

/// What a sign-in code mail says; the templates choose the words.
#[derive(Debug, Clone, Copy)]
pub struct CodeMail<'a> {
    pub locale: &'a str,
    pub product: &'a str,
    pub to: &'a str,
    pub code: &'a str,
    /// The signed-in device that asked for it (only in mails to its own
    /// user's address).
    pub device: Option<&'a str>,
    /// Minutes the code is good for.
    pub minutes: i64,
}

/// Renders the mails the core sends.
pub trait MailTemplates: Send + Sync + 'static {
    fn login_code(&self, mail: &CodeMail<'_>) -> Result<Message, Error>;
}
