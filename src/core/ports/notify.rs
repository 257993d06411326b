//! Messages the core sends to relying parties over HTTP (OpenID Connect
//! Back-Channel Logout 1.0).
use async_trait::async_trait;

#[async_trait]
pub trait LogoutNotifier: Send + Sync + 'static {
    /// POST `logout_token=<token>` as a form to `uri`. `Err`: why, for a log
    /// line (never the token).
    async fn send_logout(&self, uri: &str, logout_token: &str) -> Result<(), String>;
}
