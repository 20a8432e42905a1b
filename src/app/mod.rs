//! What applications see: the handler callbacks, the context they act through, and
//! JSON helpers.

pub(crate) mod ctx;
pub(crate) mod data;
pub(crate) mod handler;
#[cfg(feature = "json")]
pub mod json;
pub(crate) mod sender;
