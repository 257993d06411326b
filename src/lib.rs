//! authgate: a self-hosted authentication server.
//!
//! The tree names the architecture (see README "Architecture"):
//! - [`core`] holds the rules: users, identities, sessions, sign-in flows,
//!   mail logins, rate limits, audit, the token vault. It knows nothing of
//!   HTTP and owns the ports it needs (`core::ports`: storage, mail).
//! - [`store`] implements the storage ports in SQL for SQLite and PostgreSQL.
//! - [`http`] is the axum server: the shared base (health, metrics, OpenAPI,
//!   errors, layers) and one module per API surface, each declaring itself
//!   (`http::Surface`) in `http::SURFACES`.
//! - [`providers`] are the sign-in providers (Microsoft, Google, GitHub, any
//!   OpenID Connect issuer) behind the core's `IdentityProvider` trait.
//! - [`mail`] implements the mail ports: transports (SMTP, console) and
//!   templates; MX look-ups.
//! - [`config`] loads `authgate.toml` plus `AUTHGATE_<SECTION>__<KEY>` (and
//!   `_file` secrets); secrets are `config::Secret`s.
//! - [`cli`] is the `authgate` command line.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::todo,
        clippy::unimplemented,
        clippy::dbg_macro,
        clippy::await_holding_lock
    )
)]

pub mod cli;
pub mod config;
pub mod core;
pub mod http;
pub mod mail;
pub mod providers;
pub mod store;
