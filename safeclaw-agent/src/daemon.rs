//! `safeclaw-agent run`: the enforcement daemon. Loads the policy, creates the agent cgroup, loads and
//! attaches the programs, and turns every kernel event into an audit entry until SIGINT or SIGTERM.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use safeclaw_common::Scope;

use crate::audit::writer::{Appended, Durable};
use crate::audit::{self, ActionRecord, AuditWriter, Digest, Health, Lifecycle};
use crate::cgroup::{self, Cgroup};
use crate::identity::{self, Registry, Requester, SessionEvent, SessionInfo};
use crate::kernel::ebpf_log::{self, EbpfLogLevel};
use crate::kernel::events::{self, KernelEvent};
use crate::kernel::pins::PinDir;
use crate::kernel::ring::EventRing;
use crate::kernel::{loader, maps};
use crate::policy::{ActivePolicy, PolicySource, REFRESH_INTERVAL};

mod backpressure;
mod memory;
mod repeats;
mod signals;
mod slots;
mod stop;

use slots::Slots;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Name of the agent cgroup directly under the cgroup2 root (created if missing, removed on exit
    /// if this run created it and it is empty).
    #[arg(long, default_value = "agents")]
    pub cgroup: String,
    /// Policy file.
    #[arg(long, default_value = crate::cli::DEFAULT_POLICY)]
    pub policy: PathBuf,
    /// Config file (default: /etc/safeclaw/config.yaml if it exists, else built-in defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Audit log file (overrides the config's file destination).
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Where the audit key and signed head live instead of /var/lib/safeclaw (root-only).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
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
    /// Unix socket where agent CLI hooks ask about tool calls, open to every user (default:
    /// $SAFECLAW_TOOL_SOCKET, else /run/safeclaw-tools/tool.sock).
    #[arg(long)]
    pub tool_socket: Option<PathBuf>,
    /// Serve Prometheus metrics (counted from the entries written) on a loopback address such as
    /// 127.0.0.1:9464, or a unix socket (unix:/PATH). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<crate::metrics::MetricsAddr>,
    /// Forward the eBPF programs' own diagnostics (denials with their rule and flags; walk bounds,
    /// table misses, a full ring) at LEVEL and above to this log, target `ebpf`. Off by default: the
    /// programs are then loaded with their logging pruned by the verifier.
    #[arg(long, value_name = "LEVEL")]
    pub ebpf_log: Option<crate::kernel::ebpf_log::EbpfLogLevel>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    require_root()?;
    memory::map_large_allocations();
    // Before any thread exists, so that every thread leaves them to the signalfd.
    signals::block()?;
    cgroup::validate_name(&args.cgroup)?;
    let config = crate::config::Config::load_trusted(args.config.as_deref())?;
    let mut options = config
        .writer_options(args.audit_log.as_deref())
        .context("the config's redaction patterns are invalid")?;
    if let Some(dir) = &args.state_dir {
        options = options.with_state_dir(dir);
    }
    let mut source = PolicySource::new(&args.policy);
    let policy = source.load()?;
    let mount = cgroup::find_mount()?;
    let (agents, created) = cgroup::ensure(&mount, &args.cgroup)?;
    let _cgroup_guard = CreatedCgroup { cgroup: agents.clone(), created };
    let log_path = options.log_path.clone();
    let head_path = options.head_path.clone();
    let mut writer = AuditWriter::open(options)
        .with_context(|| format!("cannot open the audit log {}", log_path.display()))?;
    let metrics = args.metrics.as_ref().map(|addr| {
        let status_files = crate::destinations::status_files(&config, &head_path);
        (addr, crate::metrics::Metrics::follow(&log_path).with_destinations(status_files))
    });
    writer.log(&Lifecycle::DaemonStart { version: env!("CARGO_PKG_VERSION").to_string() });
    let mut deliveries = crate::destinations::start(&config, &log_path, &head_path)
        .context("cannot start the remote audit destinations")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(async {
        if let Some((addr, metrics)) = metrics {
            let listener = crate::metrics::Listener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr:?}"))?;
            tokio::spawn(listener.serve(metrics));
        }
        let repeat_window = config.repeat_window();
        enforce(&agents, &args, policy, source, repeat_window, &mut writer, &mut deliveries).await
    });
    if let Some(ready) = &args.ready_file {
        let _ = std::fs::remove_file(ready);
    }
    let reason = match &outcome {
        Ok(stopped) => stopped.to_string(),
        Err(e) => format!("error: {e:#}"),
    };
    writer.log(&Lifecycle::DaemonStop { reason });
    writer.close().with_context(|| format!("cannot close the audit log {}", log_path.display()))?;
    deliveries.stop();
    outcome.map(|_| ExitCode::SUCCESS)
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

/// Removes a file (the launcher socket) on every exit path.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Why the daemon stopped enforcing.
enum Stopped {
    /// A stop signal from outside the agent cgroup; the text names it and its sender.
    Signal(String),
    Requested(Requester),
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stopped::Signal(by) => write!(f, "signal: {by}"),
            Stopped::Requested(by) => write!(f, "`safeclaw-agent stop` from {by}"),
        }
    }
}

/// How often the policy files are checked for changes.
const POLICY_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The kernel programs and the policies in their slots.
struct Enforcer {
    kernel: loader::Loaded,
    /// The agent cgroup, whose processes end before this run detaches anything.
    agents: PathBuf,
    scope: Scope,
    slots: Slots,
    next_generation: u32,
    /// Whether the pins are this run's to remove when it ends without a deliberate stop (an error).
    /// Pins adopted from a previous daemon stay until this run has attached its own links: a run
    /// that fails before that must not end the enforcement it found.
    owns_pins: bool,
}

impl Drop for Enforcer {
    fn drop(&mut self) {
        // Detaching while an agent process lives would let it run unenforced: if they cannot all be
        // ended, the pins stay and keep enforcing, as after a kill -9.
        let ended = match self.owns_pins.then(|| stop::end_every_agent_process(&self.agents)) {
            Some(Err(e)) => {
                tracing::error!("{e}: leaving the programs pinned and enforcing");
                false
            }
            Some(Ok(_)) => true,
            None => false,
        };
        let outcome = if ended {
            self.kernel.detach().and_then(|()| self.kernel.remove_pins())
        } else {
            self.kernel.abandon()
        };
        if let Err(e) = outcome {
            tracing::error!("could not detach and unpin what this run attached: {e}");
        }
    }
}

impl Enforcer {
    /// Loads the programs and the first policy; attaches nothing yet. Adopting pins a previous
    /// daemon left, the new policy goes into the slot the running programs are not reading.
    fn start(
        agents: &Cgroup,
        policy: ActivePolicy,
        pins: PinDir,
        sessions: &Registry,
        ebpf_log: Option<EbpfLogLevel>,
    ) -> anyhow::Result<(Self, bool)> {
        let adopting = pins.has_links();
        let opened = loader::open(Some(pins.clone()), ebpf_log);
        let mut kernel = match opened {
            Ok(kernel) => kernel,
            Err(e) => {
                // The maps this run pinned must not outlive it (those of an adopted run stay).
                if !adopting {
                    if let Err(cleanup) = pins.remove_all() {
                        tracing::error!("could not remove the pins this run created: {cleanup}");
                    }
                }
                return Err(e.into());
            }
        };
        let previous = maps::scope(&mut kernel.ebpf)?;
        maps::clear_session_profiles(&mut kernel.ebpf)?;
        let mut scope = maps::enforcing_scope(agents, kernel.epoch);
        let mut next_generation = 1;
        if adopting && previous.enabled != 0 {
            tracing::warn!("adopting enforcement left pinned by a previous daemon");
            scope.active_slot = previous.active_slot;
            // The previous daemon's programs keep deciding until `take_over`.
            scope.epoch = previous.epoch;
            next_generation = 1 + maps::generation(&mut kernel.ebpf, previous.active_slot)?;
        }
        let mut enforcer = Enforcer {
            kernel,
            agents: agents.path.clone(),
            scope,
            slots: Slots::default(),
            next_generation,
            owns_pins: !adopting,
        };
        enforcer.install(policy, adopting, sessions)?;
        Ok((enforcer, adopting))
    }

    /// Writes every profile of `policy` into the slot the programs are not reading, and each live
    /// session's profile for that slot, then switches to it in one scope update. Only the very first
    /// load, before anything is attached, may use the active slot.
    fn install(
        &mut self,
        mut policy: ActivePolicy,
        running: bool,
        sessions: &Registry,
    ) -> anyhow::Result<()> {
        let active = self.scope.active_slot;
        let slot = if !running && self.slots.in_slot(active).is_none() { active } else { 1 - active };
        let generation = self.next_generation;
        maps::write_policy(&mut self.kernel.ebpf, slot, generation, &policy.tables())?;
        policy.release_tables();
        self.slots.fill(slot, generation, policy);
        self.next_generation += 1;
        for session in sessions.live() {
            self.enforce_profile(&session)?;
        }
        self.scope.active_slot = slot;
        maps::set_scope(&mut self.kernel.ebpf, self.scope)?;
        // The replaced policy and the compile's scratch were just dropped.
        memory::release_freed();
        Ok(())
    }

    /// Makes the kernel decide `session`'s tasks by its agent's profile, in both slots.
    fn enforce_profile(&mut self, session: &SessionInfo) -> anyhow::Result<()> {
        let profiles = self.slots.profiles_of(session.agent_id.as_str());
        maps::set_session_profiles(&mut self.kernel.ebpf, session.cgroup_id, profiles)
            .with_context(|| format!("cannot record the profile of session {}", session.session_id))
    }

    /// Attaches this run's programs, hands deciding over to them in one scope update, then unpins
    /// the programs a previous daemon left: there is neither a moment without enforcement nor one
    /// where two sets of programs both decide (and record) an attempt.
    fn take_over(&mut self) -> anyhow::Result<()> {
        self.kernel.attach()?;
        self.scope.epoch = self.kernel.epoch;
        maps::set_scope(&mut self.kernel.ebpf, self.scope)?;
        self.owns_pins = true;
        // What is left only costs memory now: the old programs no longer decide.
        if let Err(e) = self.kernel.retire_previous() {
            tracing::warn!("could not unpin the previous daemon's programs: {e}");
        }
        Ok(())
    }

    fn active(&self) -> Option<&ActivePolicy> {
        self.slots.in_slot(self.scope.active_slot)
    }

    /// Denies every in-scope action (or lifts that) in one scope update.
    fn set_lockdown(&mut self, on: bool) -> anyhow::Result<()> {
        self.scope.lockdown = u32::from(on);
        maps::set_scope(&mut self.kernel.ebpf, self.scope)?;
        Ok(())
    }
}

async fn enforce(
    agents: &Cgroup,
    args: &RunArgs,
    policy: ActivePolicy,
    mut source: PolicySource,
    repeat_window: crate::config::RepeatWindow,
    writer: &mut AuditWriter,
    deliveries: &mut crate::destinations::engine::Deliveries,
) -> anyhow::Result<Stopped> {
    let registry = Arc::new(Registry::new());
    let (mut enforcer, adopting) =
        Enforcer::start(agents, policy, PinDir::new(&args.pin_dir), &registry, args.ebpf_log)?;
    if !adopting {
        writer.log(&Lifecycle::KernelSessionStart);
    }
    log_policy_load(writer, &args.policy.display().to_string(), enforcer.active());
    let ring = enforcer.kernel.ebpf.take_map("EVENTS").context("the eBPF object has no EVENTS map")?;
    let mut ring = EventRing::new(ring)?.pollable().context("cannot poll the ring buffer")?;
    if let Some(level) = args.ebpf_log {
        ebpf_log::forward(&mut enforcer.kernel.ebpf)?;
        tracing::info!("forwarding the eBPF programs' diagnostics at {level:?} and above (target ebpf)");
    }
    let mut unreleased = Unreleased::default();
    enforcer.scope.repeat_window_ms = repeat_window.millis();
    // Only a kernel session this daemon adopts can hold windows its log already records.
    let recorded_before = if adopting {
        writer.recovered().repeats_recorded.iter().copied().collect()
    } else {
        Default::default()
    };
    let mut repeats = repeats::RepeatSweeper::new(repeat_window, recorded_before);
    enforcer.take_over()?;
    let clock = WallClock::now()?;
    if let Some(active) = enforcer.active() {
        tracing::info!(
            "enforcing {} ({}) on cgroup {} (id {})",
            args.policy.display(),
            active.hash(),
            agents.path.display(),
            agents.id
        );
    }
    // Launchers are acknowledged only now that the programs enforce.
    let socket = identity::socket_path(args.socket.as_deref());
    let listener = identity::server::bind(&socket)?;
    let _socket_guard = RemoveOnDrop(socket.clone());
    let (session_tx, mut session_rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(identity::server::serve(listener, agents.path.clone(), Arc::clone(&registry), session_tx));
    let tool_socket = crate::tools::server::socket_path(args.tool_socket.as_deref());
    let tool_listener = crate::tools::server::bind(&tool_socket)
        .with_context(|| format!("cannot listen for tool hooks on {}", tool_socket.display()))?;
    let _tool_socket_guard = RemoveOnDrop(tool_socket);
    let (tool_tx, mut tool_rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(crate::tools::server::serve(
        tool_listener,
        agents.path.clone(),
        Arc::clone(&registry),
        tool_tx,
    ));
    if let Some(ready) = &args.ready_file {
        std::fs::write(ready, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write ready file {}", ready.display()))?;
    }
    let mut signals = signals::DaemonSignals::new(&agents.path)?;
    let mut watch = tokio::time::interval(POLICY_WATCH_INTERVAL);
    let mut host_refresh =
        tokio::time::interval_at(tokio::time::Instant::now() + REFRESH_INTERVAL, REFRESH_INTERVAL);
    // Counts a previous daemon left are of attempts it recorded; fresh programs number from 0.
    let recorded_through = if adopting { writer.durable().kernel_seq } else { None };
    let (backpressure, lifted) = backpressure::Backpressure::new(&agents.path);
    let mut sink = Sink {
        writer,
        deliveries,
        clock,
        locked: false,
        tool_calls: Default::default(),
        recorded_through,
        backpressure,
    };
    if let Some(change) = lifted {
        sink.record_ring_change(change);
    }
    // Whether the last drain left records in the ring (it reads a bounded batch).
    let mut backlog = false;
    let stopped = loop {
        let poll = if backlog { std::time::Instant::now() } else { ring_poll(ring.get_ref()) };
        let deadline = tokio::time::Instant::from_std(sink.writer.next_deadline().min(poll));
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer failed")?;
                guard.clear_ready();
                backlog = drain(guard.get_inner_mut(), &mut unreleased, &enforcer.slots, &registry, &mut sink);
            }
            Some(request) = session_rx.recv() => {
                // Entries stay in order: what the kernel recorded before the request goes first.
                while drain(ring.get_mut(), &mut unreleased, &enforcer.slots, &registry, &mut sink) {}
                backlog = false;
                match request {
                    SessionEvent::Started { info, done } => {
                        let outcome = enforcer.enforce_profile(&info).map_err(|e| format!("{e:#}"));
                        if outcome.is_ok() {
                            sink.writer.log(&Lifecycle::SessionStart(identity_of(Some(&info))));
                        }
                        let _ = done.send(outcome);
                    }
                    SessionEvent::Ended { session, exit } => {
                        if let Err(e) = maps::remove_session_profiles(&mut enforcer.kernel.ebpf, session.cgroup_id) {
                            tracing::warn!("session {}: {e}", session.session_id);
                        }
                        sink.session_end(&session, &exit);
                        sink.tool_calls.end_session(session.cgroup_id);
                    }
                    SessionEvent::Reload { by, done } => {
                        tracing::info!("reload requested by {by}");
                        let outcome = reload(&mut enforcer, &mut source, &registry, sink.writer);
                        let _ = done.send(outcome.map(|hash| hash.to_string()));
                    }
                    SessionEvent::Stop { by, done } => {
                        tracing::info!("stop requested by {by}");
                        let ended = end_sessions(&agents.path, &format!("`safeclaw-agent stop` from {by}"), sink.writer);
                        sink.backpressure.after_stop();
                        match ended {
                            // Answered once the programs are detached (the socket outlives the loop).
                            Ok(()) => break (Stopped::Requested(by), Some(done)),
                            Err(refused) => {
                                let _ = done.send(Err(refused));
                            }
                        }
                    }
                    SessionEvent::Refused { by, uid, request, reason } => {
                        sink.writer.log(&Lifecycle::RequestRefused {
                            request: request.to_string(),
                            uid,
                            pid: by.pid.and_then(|pid| u32::try_from(pid).ok()).unwrap_or(0),
                            command: by.command,
                            reason,
                        });
                    }
                }
            }
            Some(tool_event) = tool_rx.recv() => {
                // The kernel events of the call's tool are recorded (and linked) before it closes.
                while drain(ring.get_mut(), &mut unreleased, &enforcer.slots, &registry, &mut sink) {}
                backlog = false;
                crate::tools::decide::decide(tool_event, enforcer.active(), sink.writer, &mut sink.tool_calls);
            }
            _ = tokio::time::sleep_until(deadline) => {
                backlog = drain(ring.get_mut(), &mut unreleased, &enforcer.slots, &registry, &mut sink);
            }
            _ = watch.tick() => {
                // Without a reload to drop them, replaced policies would stay until the next one.
                if enforcer.slots.forget_retired() {
                    memory::release_freed();
                }
                if source.changed() {
                    tracing::info!("{} changed on disk: reloading", source.path().display());
                    let _ = reload(&mut enforcer, &mut source, &registry, sink.writer);
                }
            }
            _ = host_refresh.tick() => refresh_hosts(&mut enforcer, &mut source, &registry, sink.writer),
            asked = signals.next() => match asked? {
                signals::Asked::Reload(by) => {
                    tracing::info!("reload: {by}");
                    let _ = reload(&mut enforcer, &mut source, &registry, sink.writer);
                }
                signals::Asked::Stop(by) => {
                    tracing::info!("stopping: {by}");
                    while drain(ring.get_mut(), &mut unreleased, &enforcer.slots, &registry, &mut sink) {}
                    backlog = false;
                    let ended = end_sessions(&agents.path, &by, sink.writer);
                    sink.backpressure.after_stop();
                    if ended.is_ok() {
                        break (Stopped::Signal(by), None);
                    }
                }
                signals::Asked::Refused { signal, sender_pid, reason } => {
                    tracing::warn!("not obeyed: {reason}");
                    sink.writer.log(&Lifecycle::SignalRefused { signal, sender_pid, reason });
                }
            },
        }
        for closed in repeats.closed(&mut enforcer.kernel.ebpf, sink.recorded_through, false) {
            if let Appended::Buffered { sequence } = sink.repeats(&closed, &enforcer.slots, &registry) {
                repeats.recorded(closed.digest, sequence);
            }
        }
        sink.commit(&mut enforcer)?;
        repeats.release(&mut enforcer.kernel.ebpf, sink.writer.durable());
        if unreleased.release(ring.get_mut(), sink.writer.durable()) {
            // The kernel wakes a consumer only when it has released everything read; look again.
            backlog |= drain(ring.get_mut(), &mut unreleased, &enforcer.slots, &registry, &mut sink);
        }
        // Released space may let paused agents run again.
        sink.watch_ring(ring.get_ref());
    };
    tracing::info!("stopping: detaching programs");
    // Detach first so nothing new arrives, then take what the kernel already recorded. The maps stay
    // pinned until that is durable: killed or failing before, this run leaves the events in the pinned
    // ring for the next daemon to record.
    enforcer.kernel.detach()?;
    enforcer.owns_pins = false;
    let slots = std::mem::take(&mut enforcer.slots);
    while drain(ring.get_mut(), &mut unreleased, &slots, &registry, &mut sink) {}
    // Events denied for want of ring space after the last recorded one leave no hole that a later
    // event would reveal: the kernel's own count of issued numbers names them.
    match maps::next_kernel_seq(&mut enforcer.kernel.ebpf) {
        Ok(next) => sink.writer.kernel_issued_below(next),
        Err(e) => tracing::error!("cannot read how many events the kernel issued; denials after the last recorded event are not in the log: {e}"),
    }
    for closed in repeats.closed(&mut enforcer.kernel.ebpf, sink.recorded_through, true) {
        if let Appended::Buffered { sequence } = sink.repeats(&closed, &slots, &registry) {
            repeats.recorded(closed.digest, sequence);
        }
    }
    sink.writer.commit().context("cannot make the last kernel events durable; their maps stay pinned")?;
    repeats.release(&mut enforcer.kernel.ebpf, sink.writer.durable());
    enforcer.kernel.remove_pins()?;
    drop(enforcer);
    let (stopped, done) = stopped;
    if let Some(done) = done {
        let _ = done.send(Ok(()));
        // The runtime ends with this function: give the socket task its turn to write the answer.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(stopped)
}

/// Ends every agent process before a stop detaches anything, recorded; a stop that cannot end them
/// all is refused (recorded too) and the daemon keeps enforcing.
fn end_sessions(agents: &Path, by: &str, writer: &mut AuditWriter) -> Result<(), String> {
    match stop::end_every_agent_process(agents) {
        Ok(processes) => {
            tracing::info!("ended {processes} agent processes");
            writer.log(&Lifecycle::SessionsEnded { processes, reason: by.to_string() });
            Ok(())
        }
        Err(e) => {
            tracing::error!("stop refused: {e}");
            writer.log(&Lifecycle::StopRefused { by: by.to_string(), reason: e.to_string() });
            Err(format!("stop refused: {e}"))
        }
    }
}

fn log_policy_load(writer: &mut AuditWriter, source: &str, policy: Option<&ActivePolicy>) {
    if let Some(policy) = policy {
        writer.log(&Lifecycle::PolicyLoad {
            policy_hash: Digest(policy.hash().0),
            source: source.to_string(),
            rules: policy.rule_count() as u32,
        });
    }
}

/// Reloads the policy file; an invalid policy is refused (and audited) and the old one keeps
/// enforcing. The hash of the policy now enforcing, or why the new one was refused.
fn reload(
    enforcer: &mut Enforcer,
    source: &mut PolicySource,
    sessions: &Registry,
    writer: &mut AuditWriter,
) -> Result<crate::policy::PolicyHash, String> {
    let path = source.path().display().to_string();
    let started = std::time::Instant::now();
    let mut compiled = started;
    let heap = memory::CompileHeap::grow_in_large_steps();
    let outcome = source.load().map_err(anyhow::Error::from).and_then(|policy| {
        compiled = std::time::Instant::now();
        enforcer.install(policy, true, sessions)
    });
    drop(heap);
    match outcome {
        Ok(()) => {
            tracing::info!(
                "reloaded {path} in {:.2} s (read and compiled in {:.2} s, installed in {:.2} s)",
                started.elapsed().as_secs_f64(),
                compiled.duration_since(started).as_secs_f64(),
                compiled.elapsed().as_secs_f64()
            );
            log_policy_load(writer, &path, enforcer.active());
            enforcer.active().map(ActivePolicy::hash).ok_or_else(|| "no policy is active".to_string())
        }
        Err(e) => {
            tracing::error!("reload of {path} refused, previous policy still enforcing: {e:#}");
            // The refused policy's parse and compile were dropped, as a replaced one's are.
            memory::release_freed();
            let error = format!("{e:#}");
            writer.log(&Lifecycle::PolicyReloadRejected { source: path, error: error.clone() });
            Err(error)
        }
    }
}

/// Re-resolves the policy's host names and reinstalls it if their addresses changed.
fn refresh_hosts(
    enforcer: &mut Enforcer,
    source: &mut PolicySource,
    sessions: &Registry,
    writer: &mut AuditWriter,
) {
    let path = source.path().display().to_string();
    let outcome = match source.refresh_hosts() {
        None => return,
        Some(compiled) => {
            compiled.map_err(anyhow::Error::from).and_then(|policy| enforcer.install(policy, true, sessions))
        }
    };
    match outcome {
        Ok(()) => {
            tracing::info!("host addresses of {path} changed: tables reloaded");
            log_policy_load(writer, &format!("{path} (host names re-resolved)"), enforcer.active());
        }
        Err(e) => {
            tracing::error!(
                "refreshing the host addresses of {path} failed, previous tables still enforcing: {e:#}"
            );
            memory::release_freed();
            writer.log(&Lifecycle::PolicyReloadRejected {
                source: format!("{path} (host names re-resolved)"),
                error: format!("{e:#}"),
            });
        }
    }
}

/// Converts the kernel's boot-time stamps to wall-clock time.
#[derive(Clone, Copy)]
struct WallClock {
    /// Wall-clock time at boot.
    boot: SystemTime,
}

impl WallClock {
    fn now() -> anyhow::Result<Self> {
        let since_boot =
            nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).context("clock_gettime")?;
        let since_boot = Duration::new(since_boot.tv_sec() as u64, since_boot.tv_nsec() as u32);
        let boot = SystemTime::now().checked_sub(since_boot).context("the clock is before the boot")?;
        Ok(WallClock { boot })
    }

    fn at(self, boot_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(boot_ns)
    }
}

/// The audit writer as the event loop feeds it, and whether the kernel is locked down because of it.
struct Sink<'a> {
    writer: &'a mut AuditWriter,
    /// Remote destinations: whether they fail is recorded in the chain.
    deliveries: &'a mut crate::destinations::engine::Deliveries,
    clock: WallClock,
    locked: bool,
    /// Agent tool calls open per session, to link kernel events to them.
    tool_calls: crate::tools::correlate::Correlator,
    /// Highest kernel sequence appended: counted repeats of attempts up to it may follow them.
    recorded_through: Option<u64>,
    /// Pauses the agents while the ring is half full.
    backpressure: backpressure::Backpressure,
}

impl Sink<'_> {
    /// Pauses or resumes the agents for the ring's fill level, recorded in the chain.
    fn watch_ring(&mut self, ring: &EventRing) {
        if let Some(change) = self.backpressure.observe(ring.occupied(), ring.size()) {
            self.record_ring_change(change);
        }
    }

    fn record_ring_change(&mut self, change: backpressure::Change) {
        let entry = match change {
            backpressure::Change::Paused { used, size } => {
                tracing::debug!("event ring {used} of {size} bytes in use: agents paused");
                Lifecycle::AgentsPaused { ring_used_bytes: used, ring_bytes: size }
            }
            backpressure::Change::Resumed { paused } => {
                tracing::debug!("agents resumed after {paused:?}");
                Lifecycle::AgentsResumed {
                    paused_ms: Some(u64::try_from(paused.as_millis()).unwrap_or(u64::MAX)),
                }
            }
            backpressure::Change::LeftoverResumed => Lifecycle::AgentsResumed { paused_ms: None },
        };
        self.writer.log(&entry);
    }

    fn event(
        &mut self,
        event: &KernelEvent,
        policy: Option<&ActivePolicy>,
        session: Option<&SessionInfo>,
    ) -> Appended {
        self.recorded_through =
            Some(self.recorded_through.map_or(event.kernel_seq, |s| s.max(event.kernel_seq)));
        self.record(event, policy, session, None)
    }

    /// One entry for the attempts the kernel counted after a recorded one.
    fn repeats(&mut self, closed: &repeats::ClosedRepeat, slots: &Slots, registry: &Registry) -> Appended {
        let (event, count) = (&closed.event, &closed.count);
        let mut times = audit::clock::TimestampFormatter::default();
        let repeats = audit::Repeats {
            count: count.repeats,
            first_time: times.format(self.clock.at(count.first_ns)),
            last_time: times.format(self.clock.at(count.last_ns)),
        };
        let session = registry.get(event.session_cgroup_id);
        self.record(event, slots.by_generation(event.policy_generation), session.as_deref(), Some(repeats))
    }

    fn record(
        &mut self,
        event: &KernelEvent,
        policy: Option<&ActivePolicy>,
        session: Option<&SessionInfo>,
        repeats: Option<audit::Repeats>,
    ) -> Appended {
        let (effect, rule) = argument_marking(event, policy).unwrap_or((event.effect, event.rule));
        let rule = rule.and_then(|r| policy?.profile(event.profile)?.rule(r));
        let record = ActionRecord {
            time: self.clock.at(event.boot_ns),
            effect,
            matched_rule: match (&event.detail, rule) {
                (events::Detail::Guarded(_), _) => Some("builtin:self-protection".to_string()),
                (_, rule) => rule.map(|r| r.name.clone()),
            },
            reason: match (&event.detail, rule) {
                (events::Detail::Guarded(_), _) => Some("agents may not tamper with enforcement".to_string()),
                (_, rule) => rule.and_then(|r| r.reason.clone()),
            },
            rule_meta: match (&event.detail, rule) {
                (events::Detail::Guarded(_), _) => audit::RuleMeta::default(),
                (_, rule) => rule.map_or_else(audit::RuleMeta::default, audit::RuleMeta::of),
            },
            identity: identity_of(session),
            details: request_details(&event.detail),
            process: audit::ProcessInfo {
                pid: event.tgid,
                tid: event.pid,
                ppid: None,
                uid: event.uid,
                comm: event.comm.clone().into_bytes(),
                cgroup: event.cgroup_id,
            },
            evaluation_ns: event.decide_ns,
            kernel_seq: event.kernel_seq,
            policy_hash: policy.map_or(Digest([0; 32]), |p| Digest(p.hash().0)),
            flags: audit::KernelFlags(event.flags),
            tool_use_id: self
                .tool_calls
                .link(event.session_cgroup_id, event.tgid, event.boot_ns)
                .map(str::to_owned),
            repeats,
        };
        let appended = self.writer.append(&record);
        if let Appended::Buffered { sequence } = appended {
            crate::tools::decide::note_kernel_entry(
                &mut self.tool_calls,
                event.session_cgroup_id,
                &record,
                sequence,
            );
        }
        appended
    }

    fn session_end(&mut self, session: &SessionInfo, exit: &identity::SessionExit) {
        tracing::info!(
            "session {} of {} ended: {exit:?}",
            session.session_id.as_str(),
            session.agent_id.as_str()
        );
        self.writer.log(&Lifecycle::SessionEnd(identity_of(Some(session))));
    }

    /// Group commit, and the fail-closed switch: while the log cannot be written, every in-scope action
    /// is denied (in the default mode); when writing works again the lockdown lifts, audited.
    fn commit(&mut self, enforcer: &mut Enforcer) -> anyhow::Result<()> {
        for evidence in self.deliveries.evidence() {
            self.writer.log(&evidence);
        }
        if let Err(e) = self.writer.tick() {
            tracing::error!("audit log write failed: {e}");
        }
        let failing = matches!(self.writer.health(), Health::Failing { .. });
        let fail_closed = self.writer.failure_mode() == audit::FailureMode::FailClosed;
        if failing && fail_closed && !self.locked {
            enforcer.set_lockdown(true)?;
            self.locked = true;
            self.writer.log(&Lifecycle::LockdownOn { reason: "the audit log cannot be written".into() });
            tracing::error!("audit log unwritable: agent actions are denied until it recovers");
        } else if !failing && self.locked {
            enforcer.set_lockdown(false)?;
            self.locked = false;
            self.writer.log(&Lifecycle::LockdownOff);
            tracing::info!("audit log writable again: lockdown lifted");
        }
        Ok(())
    }
}

/// An allowed exec whose arguments match an argument rule placed before the deciding rule is marked
/// `audit` with that rule (the kernel allowed it and stays the decision; see docs/policy.md).
fn argument_marking(
    event: &KernelEvent,
    policy: Option<&ActivePolicy>,
) -> Option<(crate::policy::compiled::Effect, Option<u32>)> {
    let events::Detail::Exec { path, argv } = &event.detail else { return None };
    if event.effect == crate::policy::compiled::Effect::Deny {
        return None;
    }
    let args: Vec<&[u8]> = argv.iter().skip(1).map(Vec::as_slice).collect();
    let decision = policy?.exec_with_args(event.profile, path, &args)?;
    (decision.effect == crate::policy::compiled::Effect::Audit && decision.rule != event.rule)
        .then_some((decision.effect, decision.rule))
}

fn identity_of(session: Option<&SessionInfo>) -> audit::Identity {
    match session {
        Some(s) => audit::Identity {
            agent_id: Some(s.agent_id.as_str().to_string()),
            session_id: Some(s.session_id.as_str().to_string()),
            user_id: Some(s.user_id.as_str().to_string()),
        },
        None => audit::Identity::default(),
    }
}

fn request_details(detail: &events::Detail) -> audit::RequestDetails {
    use events::{ConnectTarget as K, Detail, FileAccess, FileAction, Guarded};
    match detail {
        Detail::File { access, path, .. } => audit::RequestDetails::File {
            path: path.clone(),
            mode: match access {
                FileAccess::Read => audit::FileMode::Read,
                FileAccess::Write => audit::FileMode::Write,
                FileAccess::ReadWrite => audit::FileMode::ReadWrite,
            },
        },
        Detail::Exec { path, argv } => audit::RequestDetails::Exec {
            path: path.clone(),
            argv: Some(argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect()),
        },
        Detail::Connect(K::Inet { protocol, addr, port }) => {
            audit::RequestDetails::Connect(audit::ConnectTarget::Inet {
                address: *addr,
                port: *port,
                protocol: audit::Protocol::from_number(u16::from(*protocol)),
            })
        }
        Detail::Connect(K::Unix { path }) => {
            audit::RequestDetails::Connect(audit::ConnectTarget::Unix { path: path.clone() })
        }
        Detail::Connect(K::Disconnect) => {
            audit::RequestDetails::Connect(audit::ConnectTarget::Other { family: 0 })
        }
        Detail::Connect(K::RawSocket { family, .. }) => {
            audit::RequestDetails::Connect(audit::ConnectTarget::Other { family: *family })
        }
        Detail::Connect(K::Other { family }) => {
            audit::RequestDetails::Connect(audit::ConnectTarget::Other { family: *family })
        }
        Detail::Listen(K::Inet { protocol, addr, port }) => {
            audit::RequestDetails::Listen(audit::ConnectTarget::Inet {
                address: *addr,
                port: *port,
                protocol: audit::Protocol::from_number(u16::from(*protocol)),
            })
        }
        Detail::Listen(K::Other { family } | K::RawSocket { family, .. }) => {
            audit::RequestDetails::Listen(audit::ConnectTarget::Other { family: *family })
        }
        Detail::Listen(K::Unix { .. } | K::Disconnect) => {
            audit::RequestDetails::Listen(audit::ConnectTarget::Other { family: 0 })
        }
        Detail::Guarded(guarded) => {
            let (target_pid, detail) = match *guarded {
                Guarded::Signal { target_pid, signal } => (Some(target_pid), signal),
                Guarded::Ptrace { target_pid, mode } => (Some(target_pid), mode),
                Guarded::Bpf { command } => (None, command),
                Guarded::ProtectedFsWrite { fs_magic } => (None, fs_magic),
                Guarded::ModuleLoad { id } => (None, id),
                Guarded::Mount { op } => (None, op.code()),
                Guarded::UsernsCreate => (None, 0),
                Guarded::TerminalInput { command } => (None, command),
            };
            audit::RequestDetails::Guard { action: guarded.action_name(), target_pid, detail }
        }
        Detail::FileAction { kind, path } => {
            let (new_mode, new_uid, new_gid) = match *kind {
                FileAction::Chmod { mode } => (Some(mode), None, None),
                FileAction::Chown { uid, gid } => (None, uid, gid),
                _ => (None, None, None),
            };
            let xattr_name = match kind {
                FileAction::SetXattr { name } | FileAction::RemoveXattr { name } => {
                    Some(String::from_utf8_lossy(name).into_owned())
                }
                _ => None,
            };
            audit::RequestDetails::FileAction {
                action: kind.action_name(),
                path: path.clone(),
                new_mode,
                new_uid,
                new_gid,
                xattr_name,
            }
        }
    }
}

/// Ring records read but not yet released, by the entry sequence the log must durably reach first.
#[derive(Default)]
struct Unreleased(VecDeque<(u64, u64)>);

impl Unreleased {
    /// The record ending at ring position `end` may go once every entry below `next_sequence` is durable.
    fn push(&mut self, next_sequence: u64, end: u64) {
        match self.0.back_mut() {
            Some(last) if last.0 == next_sequence => last.1 = end,
            _ => self.0.push_back((next_sequence, end)),
        }
    }

    /// Releases every record whose entries are durable; whether it released any.
    fn release(&mut self, ring: &mut EventRing, durable: Durable) -> bool {
        let durable_below = durable.sequence.map_or(0, |s| s + 1);
        let mut through = None;
        while let Some(&(_, end)) = self.0.front().filter(|(needed, _)| *needed <= durable_below) {
            through = Some(end);
            self.0.pop_front();
        }
        if let Some(end) = through {
            ring.release_through(end);
        }
        through.is_some()
    }
}

/// When to look at the ring even without a wakeup: the kernel sends none while records we read await
/// release.
fn ring_poll(ring: &EventRing) -> std::time::Instant {
    let after = if ring.holds_unreleased() { Duration::from_millis(10) } else { Duration::from_millis(100) };
    std::time::Instant::now() + after
}

/// Records read per `drain`, so that a backlog does not hold back commits (and so releases).
const DRAIN_BATCH: usize = 8192;

/// Appends the records the ring holds, up to `DRAIN_BATCH`; whether more may be waiting.
fn drain(
    ring: &mut EventRing,
    unreleased: &mut Unreleased,
    slots: &Slots,
    registry: &Registry,
    sink: &mut Sink<'_>,
) -> bool {
    for _ in 0..DRAIN_BATCH {
        let record = match ring.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => return false,
            Err(e) => {
                // Nothing after it can be read: the ring fills and the kernel denies (fail closed).
                tracing::error!("cannot read the ring buffer further: {e}");
                return false;
            }
        };
        match events::decode(record.data) {
            Ok(event) => {
                let session = registry.get(event.session_cgroup_id);
                let appended =
                    sink.event(&event, slots.by_generation(event.policy_generation), session.as_deref());
                if appended == Appended::AlreadyRecorded {
                    tracing::debug!(kernel_seq = event.kernel_seq, "already recorded before the restart");
                }
            }
            Err(e) => tracing::error!("undecodable kernel event ({} bytes): {e}", record.data.len()),
        }
        unreleased.push(sink.writer.next_sequence(), record.end);
        sink.watch_ring(ring);
    }
    true
}
