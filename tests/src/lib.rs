//! Integration tests that need a kernel with BPF LSM; `cargo xtask test` runs them inside the VM.
