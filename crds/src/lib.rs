//! The Sluice API: the four kinds users write (AIGateway, Backend, MCPRoute,
//! Budget), how a config file of them is loaded, and the one `compile` step
//! that turns them into an immutable, validated [`Snapshot`].
//!
//! Both `sluice run` / `sluice validate` and the Kubernetes controller (and
//! the proxies it streams a [`ConfigBundle`] to) go through [`compile`], so
//! a config is judged the same way everywhere.
//! This crate knows nothing of HTTP, sockets or the hot path.

pub mod bundle;
pub mod compile;
mod compile_auth;
mod compile_budget;
mod compile_google;
mod compile_mcp;
pub mod crd;
pub mod defaults;
pub mod error;
pub mod load;
pub mod pattern;
pub mod reference;
pub mod resources;
pub mod snapshot;
pub mod status;
pub mod values;

pub use bundle::{BundleSecrets, ConfigAck, ConfigBundle};
pub use compile::{compile, SecretSource, StandaloneSecrets};
pub use error::{ConfigError, ConfigErrors};
pub use load::{decode_document, load_documents, substitute_env, Document, LoadedConfig};
pub use snapshot::Snapshot;

/// The API group and version every document carries.
pub const API_VERSION: &str = "sluice.dev/v1alpha1";
