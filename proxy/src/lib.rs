//! Sluice's data plane: the `sluice` binary's gateway. Request flow:
//! server -> gateway dispatch -> auth -> route -> forward (with fallback)
//! -> observed response body -> telemetry.

pub mod admin;
pub mod admin_client;
pub mod auth;
pub mod body;
pub mod budgets_cli;
pub mod cluster_cli;
pub mod config_source;
pub mod controller_client;
pub mod error;
pub mod gateway;
pub mod jwt;
pub mod limits;
pub mod llm;
pub mod mcp;
pub mod routing;
pub mod run;
pub mod runtime;
pub mod server;
pub mod telemetry;
pub mod upstream;
