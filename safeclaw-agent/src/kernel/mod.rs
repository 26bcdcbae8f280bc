//! Kernel side: loading and attaching the BPF LSM programs, filling their maps, reading their events.
