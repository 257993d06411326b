//! Mail: the core's mail ports ([`crate::core::ports::mail`]) implemented:
//! transports (SMTP, the console) that deliver a finished [`Message`], and
//! the templates that render one. Nothing here knows a surface.
use async_trait::async_trait;
use std::io::Write;
use std::sync::{Arc, Mutex};

pub mod mx;
pub mod smtp;
pub mod templates;

pub use crate::core::ports::mail::{MailError, Message, Transport};

/// Development transport: writes each mail as plain text to a writer
/// (standard output by default), so a newcomer sees codes without an SMTP
/// server. Never use it in production: the mail text contains the code.
pub struct ConsoleTransport {
    out: Arc<Mutex<dyn Write + Send>>,
}

impl ConsoleTransport {
    pub fn stdout() -> Self {
        Self::to_writer(Arc::new(Mutex::new(std::io::stdout())))
    }

    pub fn to_writer(out: Arc<Mutex<dyn Write + Send>>) -> Self {
        ConsoleTransport { out }
    }
}

#[async_trait]
impl Transport for ConsoleTransport {
    async fn send(&self, from: &str, m: &Message) -> Result<(), MailError> {
        let mut out = self
            .out
            .lock()
            .map_err(|_| MailError::Temporary("console writer poisoned".into()))?;
        writeln!(
            out,
            "----- mail (console transport) -----\nFrom: {from}\nTo: {}\nSubject: {}\n\n{}\n------------------------------------",
            m.to, m.subject, m.text
        )
        .and_then(|_| out.flush())
        .map_err(|e| MailError::Temporary(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn console_transport_prints_the_whole_mail() {
        let buf: Arc<Mutex<Vec<u8>>> = Arc::new(Mutex::new(Vec::new()));
        let t = ConsoleTransport::to_writer(buf.clone());
        let m = Message {
            to: "a@example.com".into(),
            subject: "Sign in".into(),
            text: "Your code: apple pear plum".into(),
            html: None,
        };
        t.send("authgate <noreply@example.com>", &m).await.unwrap();
        let printed = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert!(printed.contains("To: a@example.com"));
        assert!(printed.contains("Subject: Sign in"));
        assert!(printed.contains("apple pear plum"));
    }
}
