//! authgate: a self-hosted authentication server.
//!
//! The tree names the architecture (see README "Architecture"):
//! - [`core`] holds the rules: users, identities, sessions, audit. It knows
//!   nothing of HTTP and speaks to storage and mail through traits.
//! - [`store`] is the one storage API, with SQLite and PostgreSQL under it.
//! - [`http`] is the axum server: the shared base (health, metrics, OpenAPI,
//!   errors, layers) and, later, one module per API surface.
//! - [`providers`] are the sign-in providers (Microsoft, Google, GitHub, any
//!   OpenID Connect issuer) behind the core's `IdentityProvider` trait.
//! - [`mail`] delivers messages (console for development).
//! - [`config`] loads `authgate.toml` plus `AUTHGATE_<SECTION>__<KEY>`.
//! - [`cli`] is the `authgate` command line.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod cli;
pub mod config;
pub mod core;
pub mod http;
pub mod mail;
pub mod providers;
pub mod store;
