//! `safeclaw-agent run`: the enforcement daemon. Loads the policy, creates the agent cgroup, loads and
//! attaches the programs, and turns every kernel event into an audit entry until SIGINT or SIGTERM.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use safeclaw_common::Scope;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, SignalKind};

use crate::cgroup::{self, Cgroup};
use crate::identity::{self, Registry, SessionEvent, SessionInfo};
use crate::kernel::pins::PinDir;
use crate::kernel::{events, loader, maps};
use crate::policy::CompiledProfile;

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
    /// bpffs directory where programs and maps are pinned so that enforcement survives the daemon
    /// being killed; a restarted daemon adopts what it finds there.
    #[arg(long, default_value = crate::kernel::pins::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Unix socket where launchers register sessions (default: $SAFECLAW_SOCKET, else
    /// /run/safeclaw/agent.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// The policy the kernel is enforcing, as the daemon needs it to write audit entries.
pub struct ActivePolicy {
    /// `sha256:<hex>` of the policy source.
    pub hash: String,
    /// The tables and the rule behind each rule id.
    pub profile: CompiledProfile,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    require_root()?;
    cgroup::validate_name(&args.cgroup)?;
    let policy = crate::policy::load_active(&args.policy)?;
    let mount = cgroup::find_mount()?;
    let (agents, created) = cgroup::ensure(&mount, &args.cgroup)?;
    let _cgroup_guard = CreatedCgroup { cgroup: agents.clone(), created };
    let mut sink = AuditSink::open(&args.audit_log)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(enforce(&agents, &args, policy, &mut sink));
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

/// Which policy each kernel slot holds, with the generation the kernel stamps on its events.
#[derive(Default)]
struct Slots([Option<(u32, Arc<ActivePolicy>)>; 2]);

impl Slots {
    /// The policy that decided an event, by the generation stamped on it.
    fn by_generation(&self, generation: u32) -> Option<&ActivePolicy> {
        self.0.iter().flatten().find(|(g, _)| *g == generation).map(|(_, p)| p.as_ref())
    }
}

/// The kernel programs and the policies in their slots.
struct Enforcer {
    kernel: loader::Loaded,
    scope: Scope,
    slots: Slots,
    next_generation: u32,
}

impl Enforcer {
    /// Loads the programs and the first policy; attaches nothing yet.
    fn start(agents: &Cgroup, policy: ActivePolicy, pins: PinDir) -> anyhow::Result<Self> {
        let adopting = pins.has_links();
        let mut kernel = loader::open(Some(pins))?;
        if adopting {
            tracing::warn!("adopting enforcement left pinned by a previous daemon");
        }
        kernel.load_programs()?;
        let scope =
            Scope { cgroup_id: agents.id, level: agents.level, active_slot: 0, lockdown: 0, enabled: 1 };
        let mut enforcer = Enforcer { kernel, scope, slots: Slots::default(), next_generation: 1 };
        enforcer.install(policy)?;
        Ok(enforcer)
    }

    /// Writes `policy` into the inactive slot, then switches to it in one scope update.
    fn install(&mut self, policy: ActivePolicy) -> anyhow::Result<()> {
        // The first policy goes into the active slot (nothing is attached yet); later ones into the other.
        let active = self.scope.active_slot;
        let slot = if self.slots.0[active as usize].is_none() { active } else { 1 - active };
        let generation = self.next_generation;
        maps::write_policy(&mut self.kernel.ebpf, slot, generation, &policy.profile.tables)?;
        self.scope.active_slot = slot;
        maps::set_scope(&mut self.kernel.ebpf, self.scope)?;
        self.slots.0[slot as usize] = Some((generation, Arc::new(policy)));
        self.next_generation += 1;
        Ok(())
    }

    fn active(&self) -> Option<&ActivePolicy> {
        self.slots.0[self.scope.active_slot as usize].as_ref().map(|(_, p)| p.as_ref())
    }
}

async fn enforce(
    agents: &Cgroup,
    args: &RunArgs,
    policy: ActivePolicy,
    sink: &mut AuditSink,
) -> anyhow::Result<()> {
    let mut enforcer = Enforcer::start(agents, policy, PinDir::new(&args.pin_dir))?;
    let ring = enforcer.kernel.ebpf.take_map("EVENTS").context("the eBPF object has no EVENTS map")?;
    let ring = RingBuf::try_from(ring).context("EVENTS is not a ring buffer")?;
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as it lives.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?;
    enforcer.kernel.attach()?;
    if let Some(active) = enforcer.active() {
        tracing::info!(
            "enforcing {} ({}) on cgroup {} (id {}), audit log {}",
            args.policy.display(),
            active.hash,
            agents.path.display(),
            agents.id,
            sink.path.display()
        );
    }
    // Launchers are acknowledged only now that the programs enforce.
    let socket = identity::socket_path(args.socket.as_deref());
    let listener = identity::server::bind(&socket)?;
    let _socket_guard = RemoveOnDrop(socket.clone());
    let registry = Arc::new(Registry::new());
    let (session_tx, mut session_rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(identity::server::serve(listener, agents.path.clone(), Arc::clone(&registry), session_tx));
    if let Some(ready) = &args.ready_file {
        std::fs::write(ready, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write ready file {}", ready.display()))?;
    }
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut flush = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer failed")?;
                drain(guard.get_inner_mut(), &enforcer.slots, &registry, sink)?;
                guard.clear_ready();
            }
            Some(session) = session_rx.recv() => {
                // Entries stay in order: what the kernel recorded before the report goes first.
                drain(ring.get_mut(), &enforcer.slots, &registry, sink)?;
                sink.session(&session)?;
            }
            _ = flush.tick() => sink.flush()?,
            _ = hangup.recv() => reload(&mut enforcer, &args.policy),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("stopping: detaching programs");
    // Detach first so nothing new arrives, then take what the kernel already recorded.
    let Enforcer { mut kernel, slots, .. } = enforcer;
    kernel.detach()?;
    drop(kernel);
    drain(ring.get_mut(), &slots, &registry, sink)
}

/// Removes a file (the launcher socket) on every exit path.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reloads the policy file; an invalid policy is refused and the old one keeps enforcing.
fn reload(enforcer: &mut Enforcer, path: &Path) {
    match crate::policy::load_active(path) {
        Ok(policy) => {
            let hash = policy.hash.clone();
            match enforcer.install(policy) {
                Ok(()) => tracing::info!("reloaded {} ({hash})", path.display()),
                Err(e) => tracing::error!(
                    "reload of {} refused, previous policy still enforcing: {e:#}",
                    path.display()
                ),
            }
        }
        Err(e) => {
            tracing::error!("reload of {} refused, previous policy still enforcing: {e:#}", path.display())
        }
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    slots: &Slots,
    registry: &Registry,
    sink: &mut AuditSink,
) -> anyhow::Result<()> {
    while let Some(item) = ring.next() {
        match events::decode(&item) {
            Ok(event) => {
                let session = registry.get(event.session_cgroup_id);
                sink.append(&event, slots.by_generation(event.policy_generation), session.as_deref())?
            }
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
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open audit log {}", path.display()))?;
        Ok(AuditSink { path: path.to_path_buf(), out: std::io::BufWriter::new(file) })
    }

    fn session(&mut self, event: &SessionEvent) -> anyhow::Result<()> {
        use std::io::Write as _;
        let line = match event {
            SessionEvent::Started(s) => serde_json::json!({"action": "session.start", "session": s.as_ref()}),
            SessionEvent::Ended { session, exit } => {
                serde_json::json!({"action": "session.end", "session": session.as_ref(), "exit": exit})
            }
        };
        writeln!(self.out, "{line}").with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn append(
        &mut self,
        event: &events::KernelEvent,
        policy: Option<&ActivePolicy>,
        session: Option<&SessionInfo>,
    ) -> anyhow::Result<()> {
        use std::io::Write as _;
        let rule = event.rule.and_then(|r| policy?.profile.rule(r)).map(|r| r.name.as_str());
        let details = match &event.detail {
            events::Detail::File { access, path, .. } => {
                serde_json::json!({"path": String::from_utf8_lossy(path), "mode": access.as_str()})
            }
            events::Detail::Exec { path } => {
                serde_json::json!({"path": String::from_utf8_lossy(path)})
            }
            events::Detail::Connect(events::ConnectTarget::Inet { protocol, addr, port }) => {
                serde_json::json!({"address": addr.to_string(), "port": port, "protocol": protocol})
            }
            events::Detail::Connect(events::ConnectTarget::Unix { path }) => {
                serde_json::json!({"unixPath": String::from_utf8_lossy(path)})
            }
            events::Detail::Connect(other) => serde_json::json!({"target": format!("{other:?}")}),
            events::Detail::Guarded(guarded) => serde_json::json!({"guard": format!("{guarded:?}")}),
        };
        let line = serde_json::json!({
            "kernelSeq": event.kernel_seq,
            "agentId": session.map(|s| s.agent_id.to_string()),
            "sessionId": session.map(|s| s.session_id.to_string()),
            "userId": session.map(|s| s.user_id.to_string()),
            "action": event.action_name(),
            "effect": event.effect.as_str(),
            "matchedRule": rule,
            "flags": events::flag_names(event.flags),
            "requestDetails": details,
            "pid": event.pid, "tgid": event.tgid, "uid": event.uid, "comm": event.comm,
            "cgroup": event.cgroup_id,
            "evaluationDurationNs": event.decide_ns,
            "policyHash": policy.map(|p| p.hash.as_str()),
        });
        writeln!(self.out, "{line}").with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        use std::io::Write as _;
        self.out.flush().with_context(|| format!("cannot write {}", self.path.display()))?;
        self.out.get_ref().sync_data().with_context(|| format!("cannot sync {}", self.path.display()))
    }
}
