//! Empty library so that safeclaw-agent can name this crate as a build dependency (rebuild tracking).
#![no_std]
