//! SafeClaw agent library: policy, kernel programs, audit trail and the daemon that joins them.
//! The `safeclaw-agent` binary is a thin shell over `cli`.
pub mod audit;
pub mod cgroup;
pub mod cli;
pub mod cli_docs;
pub mod config;
pub mod control;
pub mod daemon;
pub mod doctor;
pub mod identity;
pub mod init;
pub mod kernel;
pub mod launcher;
pub mod metrics;
pub mod policy;
pub mod sessions;
pub mod yaml_guard;
