//! Policy: the YAML model, its validation, the reference evaluator and the compiler to kernel tables.
pub mod cli;
pub mod compiled;
pub mod diag;
pub mod glob;
pub mod load;
pub mod matcher;
pub mod model;
pub mod net;
mod positions;
mod schema;
