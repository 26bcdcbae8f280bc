//! Audit trail: entries, the hash chain, the durable writer, verification and tailing.
pub mod cli;
