//! The one integration-test binary. Add modules here, never new files under
//! `tests/`: each test binary is another slow link on a 2-core machine.
//!
//! Suites that need a real peer (PostgreSQL: `AUTHGATE_TEST_POSTGRES_URL`)
//! are skipped with a printed reason when it is not configured, and fail
//! instead under CI (`CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod browser;
mod chromium;
mod cli;
mod code_exchange;
mod forward;
mod http_base;
mod mail_code;
mod mfa;
mod oauth;
mod openid;
mod pages;
mod passkeys;
mod providers;
mod real_clients;
mod sessions;
mod soft_authenticator;
mod storage;
mod totp;
