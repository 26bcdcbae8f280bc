//! Policy: the YAML model, its validation, the reference evaluator and the compiler to kernel tables.
pub mod cli;
pub mod compiled;
