//! Kernel side: loading and attaching the BPF LSM programs, filling their maps, reading their events.
pub mod batch;
pub mod btf;
pub mod ebpf_log;
pub mod events;
pub mod loader;
mod mapped;
pub mod maps;
pub mod pins;
pub mod ring;
mod symbols;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux; needs CONFIG_DEBUG_INFO_BTF=y): {0}")]
    AyaBtf(#[from] aya::BtfError),
    #[error("the kernel refused the SafeClaw eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("the kernel refused to load the BPF LSM program `{program}`: {source}. BPF LSM is not usable on this kernel: it needs CONFIG_BPF_LSM=y and `bpf` in the `lsm=` boot parameter (e.g. lsm=lockdown,capability,landlock,yama,apparmor,bpf); run `safeclaw-agent doctor` for each check")]
    LoadProgram { program: &'static str, source: aya::programs::ProgramError },
    #[error("the kernel refused to attach the BPF LSM program `{program}`: {source}")]
    AttachProgram { program: &'static str, source: aya::programs::ProgramError },
    #[error("the eBPF object has no {what} `{name}` (build mismatch)")]
    Missing { what: &'static str, name: &'static str },
    #[error("map `{map}`: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
    #[error("bpffs pins: {0}")]
    Pins(String),
    #[error("map `{map}`: batch {op} failed after {done} entries: {error}")]
    Batch { map: &'static str, op: &'static str, done: u64, error: std::io::Error },
    #[error("policy does not fit the kernel tables: {0}")]
    Limit(String),
}
