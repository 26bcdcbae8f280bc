//! Compliance reports over the audit trail: `audit report` computes one per framework and period while
//! the chain is verified (one streaming pass), and renders it as PDF, HTML, JSON or an evidence pack.
pub mod aggregate;
pub mod catalogue;
pub mod cli;
pub mod document;
pub mod html;
pub mod pack;
pub mod pdf;
pub mod period;

pub use aggregate::{Aggregator, ReportData};
pub use catalogue::{Catalogue, Framework};
pub use period::Period;
