//! The rules of authgate, once, for every surface and the CLI.
//!
//! [`Core`] is a cheap-to-clone handle (one `Arc`) over the store, the clock
//! and the policies from config. It knows nothing of HTTP or wire formats.
use std::sync::Arc;

use crate::store::Store;

pub mod audit;
pub mod clock;
mod error;
pub mod model;
pub mod secret;
pub mod sessions;
pub mod users;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::Error;
pub use model::*;
pub use sessions::{SessionCheck, SessionPolicy};
pub use users::{ImportReport, NewUser, UserKey};

#[derive(Clone)]
pub struct Core {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    sessions: SessionPolicy,
}

impl Core {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, sessions: SessionPolicy) -> Self {
        Core {
            inner: Arc::new(Inner {
                store,
                clock,
                sessions,
            }),
        }
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn session_policy(&self) -> &SessionPolicy {
        &self.inner.sessions
    }

    /// Is the database reachable? (readiness)
    pub async fn ping(&self) -> Result<(), Error> {
        Ok(self.store().ping().await?)
    }

    /// Remove expired sessions, flows, mail logins and rate-limit windows.
    pub async fn purge_expired(&self) -> Result<u64, Error> {
        Ok(self.store().purge_expired(self.now()).await?)
    }
}
