//! `safeclaw-agent run`: the enforcement daemon. Loads the policy, creates the agent cgroup, loads and
//! attaches the programs, and turns every kernel event into an audit entry until SIGINT or SIGTERM.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use safeclaw_common::Scope;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, SignalKind};

use crate::cgroup::{self, Cgroup};
use crate::kernel::{events, loader, maps};
use crate::policy::compiled::CompiledPolicy;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Name of the agent cgroup directly under the cgroup2 root (created if missing, removed on exit
    /// if this run created it and it is empty).
    #[arg(long, default_value = "agents")]
    pub cgroup: String,
    /// Policy file.
    #[arg(long, default_value = crate::cli::DEFAULT_POLICY)]
    pub policy: PathBuf,
    /// Audit log file (JSON lines).
    #[arg(long, default_value = "/var/log/safeclaw/audit.jsonl")]
    pub audit_log: PathBuf,
    /// Created once the programs are attached and enforcing; removed on exit.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// The policy the kernel is enforcing, as the daemon needs it to write audit entries.
pub struct ActivePolicy {
    pub compiled: CompiledPolicy,
    /// `sha256:<hex>` of the policy source.
    pub hash: String,
    /// Rule names by rule id.
    pub rule_names: Vec<String>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    require_root()?;
    cgroup::validate_name(&args.cgroup)?;
    let policy = crate::policy::load_active(&args.policy)?;
    let mount = cgroup::find_mount()?;
    let (agents, created) = cgroup::ensure(&mount, &args.cgroup)?;
    let _cgroup_guard = CreatedCgroup {
        cgroup: agents.clone(),
        created,
    };
    let mut sink = AuditSink::open(&args.audit_log)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(enforce(
        &agents,
        &policy,
        &mut sink,
        args.ready_file.as_deref(),
    ));
    if let Some(ready) = &args.ready_file {
        let _ = std::fs::remove_file(ready);
    }
    sink.flush()?;
    outcome.map(|()| ExitCode::SUCCESS)
}

fn require_root() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("safeclaw-agent run must run as root (loading BPF LSM programs needs CAP_BPF and CAP_SYS_ADMIN): try `sudo safeclaw-agent run ...`");
    }
    Ok(())
}

/// Removes the agent cgroup on every exit path if this run created it (only possible when empty).
struct CreatedCgroup {
    cgroup: Cgroup,
    created: bool,
}

impl Drop for CreatedCgroup {
    fn drop(&mut self) {
        if self.created {
            if let Err(e) = std::fs::remove_dir(&self.cgroup.path) {
                tracing::warn!("left cgroup {} in place: {e}", self.cgroup.path.display());
            }
        }
    }
}

async fn enforce(
    agents: &Cgroup,
    policy: &ActivePolicy,
    sink: &mut AuditSink,
    ready: Option<&Path>,
) -> anyhow::Result<()> {
    let mut kernel = loader::open()?;
    kernel.load_programs()?;
    maps::write_policy(&mut kernel.ebpf, 0, 1, &policy.compiled)?;
    maps::set_scope(
        &mut kernel.ebpf,
        Scope {
            cgroup_id: agents.id,
            level: agents.level,
            active_slot: 0,
            lockdown: 0,
            enabled: 1,
        },
    )?;
    let ring = kernel
        .ebpf
        .take_map("EVENTS")
        .context("the eBPF object has no EVENTS map")?;
    let ring = RingBuf::try_from(ring).context("EVENTS is not a ring buffer")?;
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as it lives.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?;
    kernel.attach()?;
    tracing::info!(
        "enforcing {} on cgroup {} (id {}), audit log {}",
        policy.hash,
        agents.path.display(),
        agents.id,
        sink.path.display()
    );
    if let Some(ready) = ready {
        std::fs::write(ready, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write ready file {}", ready.display()))?;
    }
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut flush = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer failed")?;
                drain(guard.get_inner_mut(), policy, sink)?;
                guard.clear_ready();
            }
            _ = flush.tick() => sink.flush()?,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("stopping: detaching programs");
    // Detach first so nothing new arrives, then take what the kernel already recorded.
    drop(kernel);
    drain(ring.get_mut(), policy, sink)
}

fn drain(
    ring: &mut RingBuf<MapData>,
    policy: &ActivePolicy,
    sink: &mut AuditSink,
) -> anyhow::Result<()> {
    while let Some(item) = ring.next() {
        match events::decode(&item) {
            Ok(event) => sink.append(&event, policy)?,
            Err(e) => tracing::error!("undecodable kernel event ({} bytes): {e}", item.len()),
        }
    }
    Ok(())
}

/// Interim audit writer: one JSON object per line, no chain yet.
struct AuditSink {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl AuditSink {
    fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open audit log {}", path.display()))?;
        Ok(AuditSink {
            path: path.to_path_buf(),
            out: std::io::BufWriter::new(file),
        })
    }

    fn append(&mut self, event: &events::KernelEvent, policy: &ActivePolicy) -> anyhow::Result<()> {
        use std::io::Write as _;
        let rule = event.rule.and_then(|r| policy.rule_names.get(r as usize));
        let details = match &event.detail {
            events::Detail::File { access, path, .. } => {
                serde_json::json!({"path": String::from_utf8_lossy(path), "mode": access.as_str()})
            }
            events::Detail::Exec { path } => {
                serde_json::json!({"path": String::from_utf8_lossy(path)})
            }
            events::Detail::Connect(events::ConnectTarget::Inet {
                protocol,
                addr,
                port,
            }) => {
                serde_json::json!({"address": addr.to_string(), "port": port, "protocol": protocol})
            }
            events::Detail::Connect(events::ConnectTarget::Unix { path }) => {
                serde_json::json!({"unixPath": String::from_utf8_lossy(path)})
            }
            events::Detail::Connect(other) => serde_json::json!({"target": format!("{other:?}")}),
        };
        let line = serde_json::json!({
            "kernelSeq": event.kernel_seq,
            "action": event.action_name(),
            "effect": event.effect.as_str(),
            "matchedRule": rule,
            "flags": events::flag_names(event.flags),
            "requestDetails": details,
            "pid": event.pid, "tgid": event.tgid, "uid": event.uid, "comm": event.comm,
            "cgroup": event.cgroup_id,
            "evaluationDurationNs": event.decide_ns,
            "policyHash": policy.hash,
        });
        writeln!(self.out, "{line}")
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        use std::io::Write as _;
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.out
            .get_ref()
            .sync_data()
            .with_context(|| format!("cannot sync {}", self.path.display()))
    }
}
