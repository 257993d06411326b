//! SMTP delivery through lettre. The URL decides the security:
//! `smtp://host:port` plain (STARTTLS only with `?tls=required` or
//! `?tls=opportunistic`), `smtps://host:465` TLS from the start;
//! `user:pass@` in the URL enables AUTH.
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{MailError, Message, Transport};

pub struct SmtpTransport {
    inner: AsyncSmtpTransport<Tokio1Executor>,
    /// The longest one mail's whole conversation may take.
    conversation: Duration,
}

/// SMTP steps in one conversation (connect, greeting and EHLO, MAIL and
/// RCPT, DATA): the whole conversation is bounded by this many step
/// timeouts, whatever the library bounds on its own.
const STEPS: u32 = 4;

impl SmtpTransport {
    pub fn from_url(url: &str, timeout: Duration) -> Result<Self, String> {
        let inner: AsyncSmtpTransport<Tokio1Executor> =
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                .map_err(|e| format!("invalid SMTP URL: {e}"))?
                .timeout(Some(timeout))
                .build();
        Ok(SmtpTransport {
            inner,
            conversation: timeout * STEPS,
        })
    }
}

/// Build the MIME message. Addresses are parsed again here, so nothing that
/// is not exactly one mailbox reaches a header.
pub fn build(from: &str, m: &Message) -> Result<lettre::Message, MailError> {
    let from: Mailbox = from
        .parse()
        .map_err(|e| MailError::Permanent(format!("bad From address: {e}")))?;
    let to: Mailbox =
        m.to.parse()
            .map_err(|e| MailError::Permanent(format!("bad recipient: {e}")))?;
    let builder = lettre::Message::builder()
        .from(from)
        .to(to)
        .subject(m.subject.clone());
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(m.text.clone());
    let built = match &m.html {
        Some(html) => builder.multipart(
            MultiPart::alternative().singlepart(text).singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html.clone()),
            ),
        ),
        None => builder.singlepart(text),
    };
    built.map_err(|e| MailError::Permanent(e.to_string()))
}

#[async_trait]
impl Transport for SmtpTransport {
    async fn send(&self, from: &str, m: &Message) -> Result<(), MailError> {
        let message = build(from, m)?;
        // A server that accepts and never answers (or answers a byte a
        // minute) must not hold the worker: past the bound the connection is
        // dropped and the mail is retried later.
        match tokio::time::timeout(self.conversation, self.inner.send(message)).await {
            Err(_) => Err(MailError::Temporary(format!(
                "the SMTP server did not finish within {:?}",
                self.conversation
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => Err(MailError::Permanent(e.to_string())),
            Ok(Err(e)) => Err(MailError::Temporary(e.to_string())),
        }
    }
}
