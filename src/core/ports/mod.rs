//! The interfaces the core needs from the world, owned by the core:
//! storage (by aggregate), mail and the relying parties' back-channel. Implementations live outside
//! (`crate::store`, `crate::mail`) and are handed to the core at assembly
//! (`cli::serve::assemble`); the core imports neither.
pub mod mail;
pub mod notify;
pub mod storage;
