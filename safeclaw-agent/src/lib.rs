//! SafeClaw agent library: policy, kernel programs, audit trail and the daemon that joins them.
//! The `safeclaw-agent` binary is a thin shell over `cli`.
pub mod audit;
pub mod cgroup;
pub mod cli;
pub mod cli_docs;
pub mod config;
pub mod config_cli;
pub mod control;
pub mod daemon;
pub mod destinations;
pub mod doctor;
pub mod identity;
pub mod init;
pub mod kernel;
pub mod launcher;
pub mod metrics;
pub mod policy;
pub mod report;
pub mod sessions;
pub mod tools;
pub mod trust;
pub mod yaml_guard;
