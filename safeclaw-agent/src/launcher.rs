//! `safeclaw-agent exec`: runs one agent command in its own session cgroup, as its user, only once the
//! daemon has registered the session; reports how it ended and leaves no cgroup behind.
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};

use anyhow::Context as _;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{Gid, Pid, Uid, User};
use tokio::io::unix::AsyncFd;

use agent_process::AgentProcess;

use crate::cgroup::{self, Cgroup, CgroupError};
use crate::identity::client::{ClientError, DaemonConnection};
use crate::identity::session_cgroup::{self, SessionCgroupError};
use crate::identity::{self, AgentId, IdError, SessionExit, SessionId, SessionInfo, Timestamp, UserId};

mod agent_process;

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Agent name; names its cgroup directory (letters, digits, '.', '_', '-').
    #[arg(long)]
    pub agent: String,
    /// Session id: `sess_` and 1 to 64 of [A-Za-z0-9_-] (generated when absent).
    #[arg(long)]
    pub session: Option<String>,
    /// The human the agent runs for, and the account it runs as [default: the user who ran sudo].
    #[arg(long)]
    pub user: Option<String>,
    /// Run the agent as root instead of as the user.
    #[arg(long)]
    pub as_root: bool,
    /// The daemon's agent cgroup (its `run --cgroup`).
    #[arg(long, default_value = "agents")]
    pub cgroup: String,
    /// The daemon's socket [default: $SAFECLAW_SOCKET, else /run/safeclaw/agent.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// A descriptor above 2 the agent inherits (repeatable); every other one above 2 is closed.
    #[arg(long = "keep-fd", value_name = "FD")]
    pub keep_fds: Vec<i32>,
    /// The command to run and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("--agent: {0}")]
    Agent(IdError),
    #[error("--session: {0}")]
    Session(IdError),
    #[error("--cgroup: {0}")]
    CgroupName(CgroupError),
    #[error("unknown user {0:?}: not in the user database")]
    UnknownUser(String),
    #[error("SUDO_UID={0} names no user in the user database")]
    UnknownSudoUid(u32),
    #[error("{name}={value:?} is not a numeric id")]
    BadSudoId { name: &'static str, value: String },
    #[error("cannot look up the user: {0}")]
    UserLookup(nix::Error),
    #[error("user {0}: {1}")]
    UserName(String, IdError),
    #[error("no user to run the agent as: pass --user USER, run through sudo, or pass --as-root")]
    NoUser,
    #[error("user {0} is root: pass --as-root to run an agent as root")]
    RootWithoutAsRoot(String),
    #[error("command {0:?} not found in PATH")]
    CommandNotFound(OsString),
    #[error("{path} is not a file {user} may execute")]
    NotExecutable { path: PathBuf, user: String },
    #[error("--keep-fd {0}: only descriptors above 2 can be named (0, 1 and 2 are always passed on)")]
    KeepStdFd(i32),
    #[error("--keep-fd {0}: no such open descriptor")]
    KeepClosedFd(i32),
    #[error(
        "descriptor {fd} is open for writing on {fs}, which the agent would inherit: the kernel checks a \
         cgroup.procs write against whoever opened it, so the agent could leave its cgroup through it; \
         close it or open it read-only"
    )]
    ProtectedFsDescriptor { fd: i32, fs: &'static str },
    #[error("safeclaw-agent exec must run as root (it creates the agent's cgroup): try `sudo safeclaw-agent exec ...`")]
    NotRoot,
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    SessionCgroup(#[from] SessionCgroupError),
}

/// The environment variables the launcher reads, passed in so validation is testable.
pub struct Env {
    pub sudo_uid: Option<OsString>,
    pub sudo_gid: Option<OsString>,
    pub path: Option<OsString>,
}

impl Env {
    pub fn from_process() -> Self {
        Env {
            sudo_uid: std::env::var_os("SUDO_UID"),
            sudo_gid: std::env::var_os("SUDO_GID"),
            path: std::env::var_os("PATH"),
        }
    }
}

/// The account the agent switches to before exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub home: PathBuf,
}

/// Everything `exec` will do, checked before anything is created.
#[derive(Debug)]
pub struct Plan {
    pub agent: AgentId,
    pub session: SessionId,
    /// The human the session is for.
    pub user: UserId,
    /// `None`: the agent keeps root (only with `--as-root`).
    pub run_as: Option<Credentials>,
    pub program: PathBuf,
    pub argv0: OsString,
    pub args: Vec<OsString>,
    pub agents: Cgroup,
    pub socket: PathBuf,
    /// Descriptors above 2 the agent inherits, sorted, without duplicates.
    pub keep_fds: Vec<i32>,
}

/// Validates the arguments against the system; creates nothing.
pub fn plan(args: ExecArgs, env: &Env) -> Result<Plan, LaunchError> {
    let agent = AgentId::try_from(args.agent).map_err(LaunchError::Agent)?;
    let session = match args.session {
        Some(id) => SessionId::try_from(id).map_err(LaunchError::Session)?,
        None => SessionId::generate().map_err(LaunchError::Session)?,
    };
    cgroup::validate_name(&args.cgroup).map_err(LaunchError::CgroupName)?;
    let (user, run_as) = identities(args.user.as_deref(), args.as_root, env)?;
    let (argv0, args_rest) = match args.command.split_first() {
        Some((first, rest)) => (first.clone(), rest.to_vec()),
        None => return Err(LaunchError::CommandNotFound(OsString::new())),
    };
    let program = resolve_command(&argv0, env.path.as_deref(), run_as.as_ref())?;
    let keep_fds = kept_descriptors(args.keep_fds)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(LaunchError::NotRoot);
    }
    let agents = session_cgroup::open_agents(&cgroup::find_mount()?, &args.cgroup)?;
    let socket = identity::socket_path(args.socket.as_deref());
    Ok(Plan { agent, session, user, run_as, program, argv0, args: args_rest, agents, socket, keep_fds })
}

/// The `--keep-fd` descriptors, checked to be above 2 and open in the launcher; and every descriptor
/// the agent inherits (0–2 and these) checked not to be open for writing on cgroupfs or bpffs.
fn kept_descriptors(mut fds: Vec<i32>) -> Result<Vec<i32>, LaunchError> {
    fds.sort_unstable();
    fds.dedup();
    for &fd in &fds {
        if fd <= 2 {
            return Err(LaunchError::KeepStdFd(fd));
        }
        // SAFETY: F_GETFD only reads the descriptor's flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(LaunchError::KeepClosedFd(fd));
        }
    }
    for fd in [0, 1, 2].into_iter().chain(fds.iter().copied()) {
        refuse_protected_fs_writer(fd)?;
    }
    Ok(fds)
}

/// Refuses a descriptor the agent inherits that is open for writing on cgroupfs or bpffs. Inside the
/// cgroup the hooks refuse opening or receiving one; one opened before, outside, is only seen here.
fn refuse_protected_fs_writer(fd: i32) -> Result<(), LaunchError> {
    // SAFETY: F_GETFL only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags == -1 || flags & libc::O_ACCMODE == libc::O_RDONLY || flags & libc::O_PATH != 0 {
        return Ok(());
    }
    // SAFETY: fd is open (F_GETFL succeeded) for as long as this borrow.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let fs = match nix::sys::statfs::fstatfs(borrowed).map(|stat| stat.filesystem_type()) {
        Ok(nix::sys::statfs::CGROUP2_SUPER_MAGIC) => "cgroupfs (cgroup2)",
        Ok(nix::sys::statfs::CGROUP_SUPER_MAGIC) => "cgroupfs (cgroup v1)",
        Ok(kind) if kind.0 == BPF_FS_MAGIC => "bpffs",
        _ => return Ok(()),
    };
    Err(LaunchError::ProtectedFsDescriptor { fd, fs })
}

/// bpffs's `f_type` (linux/magic.h), which nix does not name.
const BPF_FS_MAGIC: nix::libc::__fsword_t = 0xcafe_4a11;

/// The human the session is for, and the account the agent runs as (`None`: root, only with `--as-root`).
pub fn identities(
    name: Option<&str>,
    as_root: bool,
    env: &Env,
) -> Result<(UserId, Option<Credentials>), LaunchError> {
    match (account(name, env)?, as_root) {
        (Some((user, _)), true) => Ok((user_id(&user.name)?, None)),
        (None, true) => Ok((user_id("root")?, None)),
        (None, false) => Err(LaunchError::NoUser),
        (Some((user, _)), false) if user.uid.is_root() => Err(LaunchError::RootWithoutAsRoot(user.name)),
        (Some((user, gid)), false) => {
            let name =
                CString::new(user.name.clone()).map_err(|_| LaunchError::UnknownUser(user.name.clone()))?;
            let groups = nix::unistd::getgrouplist(&name, gid).map_err(LaunchError::UserLookup)?;
            let credentials = Credentials { uid: user.uid, gid, groups, home: user.dir, name: user.name };
            Ok((user_id(&credentials.name)?, Some(credentials)))
        }
    }
}

fn user_id(name: &str) -> Result<UserId, LaunchError> {
    UserId::try_from(name.to_string()).map_err(|e| LaunchError::UserName(name.to_string(), e))
}

/// The user named by `--user`, else the one sudo ran for (with sudo's group), else none.
fn account(name: Option<&str>, env: &Env) -> Result<Option<(User, Gid)>, LaunchError> {
    if let Some(name) = name {
        let user = User::from_name(name)
            .map_err(LaunchError::UserLookup)?
            .ok_or_else(|| LaunchError::UnknownUser(name.to_string()))?;
        let gid = user.gid;
        return Ok(Some((user, gid)));
    }
    let Some(uid) = &env.sudo_uid else { return Ok(None) };
    let uid = numeric_id("SUDO_UID", uid)?;
    let user = User::from_uid(Uid::from_raw(uid))
        .map_err(LaunchError::UserLookup)?
        .ok_or(LaunchError::UnknownSudoUid(uid))?;
    let gid = match &env.sudo_gid {
        Some(gid) => Gid::from_raw(numeric_id("SUDO_GID", gid)?),
        None => user.gid,
    };
    Ok(Some((user, gid)))
}

fn numeric_id(name: &'static str, value: &OsStr) -> Result<u32, LaunchError> {
    value
        .to_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| LaunchError::BadSudoId { name, value: value.to_string_lossy().into_owned() })
}

/// Used when PATH is unset.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A command with a '/' is taken as a path; otherwise the first executable match in PATH. Relative
/// PATH entries are skipped: the agent must not run whatever the current directory offers.
pub fn resolve_command(
    command: &OsStr,
    path_env: Option<&OsStr>,
    run_as: Option<&Credentials>,
) -> Result<PathBuf, LaunchError> {
    let user = run_as.map_or("root", |c| c.name.as_str()).to_string();
    if command.is_empty() {
        return Err(LaunchError::CommandNotFound(command.to_os_string()));
    }
    if command.as_encoded_bytes().contains(&b'/') {
        let path = PathBuf::from(command);
        return match std::fs::metadata(&path) {
            Ok(meta) if executable_by(&meta, run_as) => Ok(path),
            Ok(_) => Err(LaunchError::NotExecutable { path, user }),
            Err(_) => Err(LaunchError::CommandNotFound(command.to_os_string())),
        };
    }
    let search = path_env.unwrap_or(OsStr::new(DEFAULT_PATH));
    std::env::split_paths(search)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(command))
        .find(|candidate| std::fs::metadata(candidate).is_ok_and(|meta| executable_by(&meta, run_as)))
        .ok_or_else(|| LaunchError::CommandNotFound(command.to_os_string()))
}

/// Whether the mode bits let this account execute the file (root: any execute bit).
fn executable_by(meta: &std::fs::Metadata, run_as: Option<&Credentials>) -> bool {
    let mode = meta.permissions().mode();
    if !meta.is_file() {
        return false;
    }
    let bits = match run_as {
        None => 0o111,
        Some(c) if c.uid.as_raw() == meta.uid() => 0o100,
        Some(c) if c.gid.as_raw() == meta.gid() || c.groups.iter().any(|g| g.as_raw() == meta.gid()) => 0o010,
        Some(_) => 0o001,
    };
    mode & bits != 0
}

/// Signals the launcher passes on to the agent.
const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

pub fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let plan = plan(args, &Env::from_process())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(launch(plan))
}

async fn launch(plan: Plan) -> anyhow::Result<ExitCode> {
    // Blocked from here on, so a signal during setup cannot kill the launcher before it cleans up;
    // the agent receives it once it runs.
    let mut signals = watch_signals()?;
    let refused = |e: ClientError| anyhow::anyhow!("refusing to run the agent unenforced: {e}");
    let mut daemon = DaemonConnection::connect(&plan.socket).await.map_err(refused)?;
    let cgroup = session_cgroup::create(&plan.agents, &plan.agent, &plan.session)?;
    let mut guard = CgroupGuard(Some(cgroup.path.clone()));
    let info = SessionInfo {
        agent_id: plan.agent.clone(),
        session_id: plan.session.clone(),
        user_id: plan.user.clone(),
        uid: plan.run_as.as_ref().map_or(0, |c| c.uid.as_raw()),
        gid: plan.run_as.as_ref().map_or(0, |c| c.gid.as_raw()),
        cgroup_id: cgroup.id,
        cgroup_path: cgroup.path.clone(),
        argv: std::iter::once(&plan.argv0)
            .chain(&plan.args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        started_at: Timestamp::now(),
        launcher_pid: std::process::id(),
    };
    daemon.start(&info).await.map_err(refused)?;
    let mut child = match spawn(&plan, &cgroup, signals.original_mask) {
        Ok(child) => child,
        Err(e) => {
            guard.remove()?;
            let exit = SessionExit::NotStarted(e.to_string());
            if let Err(report) = daemon.end(&plan.session, &exit).await {
                tracing::warn!("session end not reported: {report}");
            }
            anyhow::bail!("cannot start {}: {e}", plan.program.display());
        }
    };
    match supervise(&mut child, &mut signals, &mut daemon).await? {
        Supervised::Exited(status) => {
            let exit = SessionExit::from(status);
            // Leftover processes are killed before the end is reported, so all their events belong
            // to a live session.
            let removed = guard.remove();
            if let Err(e) = daemon.end(&plan.session, &exit).await {
                tracing::warn!("session {} end not reported: {e}", plan.session);
            }
            removed?;
            Ok(ExitCode::from(exit.shell_status().unwrap_or(1)))
        }
        Supervised::DaemonLost => {
            let removed = guard.remove();
            let status = child.wait();
            removed?;
            anyhow::bail!(
                "the daemon closed its connection, so nothing enforces policy any more: the agent was killed ({})",
                status.map_or_else(|e| e.to_string(), |s| SessionExit::from(s).to_string())
            );
        }
    }
}

/// Removes the session cgroup on every path, explicitly where the error matters, else when dropped.
struct CgroupGuard(Option<PathBuf>);

impl CgroupGuard {
    fn remove(&mut self) -> Result<(), SessionCgroupError> {
        match self.0.take() {
            Some(path) => session_cgroup::remove(&path),
            None => Ok(()),
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            tracing::error!("{e}");
        }
    }
}

/// The forwarded signals and SIGCHLD, blocked and readable from a signalfd.
struct Signals {
    fd: AsyncFd<SignalFd>,
    /// The mask before blocking; the agent gets it back (the child inherits the launcher's mask).
    original_mask: SigSet,
}

fn watch_signals() -> anyhow::Result<Signals> {
    let mut set = SigSet::empty();
    for signal in FORWARDED.into_iter().chain([Signal::SIGCHLD]) {
        set.add(signal);
    }
    let original_mask =
        set.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK).context("cannot block signals")?;
    let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("cannot create a signalfd")?;
    // SAFETY: the SignalFd owns its descriptor and keeps it open, unchanged, for as long as it lives.
    let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the signalfd: {e}"))?;
    Ok(Signals { fd, original_mask })
}

/// Starts the agent inside the session cgroup, as the user unless `--as-root`.
fn spawn(plan: &Plan, cgroup: &Cgroup, mask: SigSet) -> std::io::Result<AgentProcess> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    if let Some(user) = &plan.run_as {
        env.retain(|(name, _)| !["HOME", "USER", "LOGNAME"].iter().any(|n| name == n));
        env.push(("HOME".into(), user.home.clone().into_os_string()));
        env.push(("USER".into(), user.name.clone().into()));
        env.push(("LOGNAME".into(), user.name.clone().into()));
    }
    let groups: Vec<u32> = plan.run_as.iter().flat_map(|u| u.groups.iter().map(|g| g.as_raw())).collect();
    let launch = agent_process::Launch {
        program: &plan.program,
        argv: std::iter::once(plan.argv0.as_os_str())
            .chain(plan.args.iter().map(OsString::as_os_str))
            .collect(),
        env: env
            .into_iter()
            .map(|(name, value)| [name.as_bytes(), b"=", value.as_bytes()].concat())
            .collect(),
        cgroup: &cgroup.path,
        ids: plan.run_as.as_ref().map(|user| agent_process::Ids {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups: &groups,
        }),
        mask,
        keep_fds: &plan.keep_fds,
    };
    agent_process::spawn(&launch)
}

enum Supervised {
    Exited(ExitStatus),
    DaemonLost,
}

/// Forwards signals to the agent until it exits or the daemon goes away. A signal sent by a process
/// goes to the agent; one the kernel sent (a terminal's Ctrl-C, hang-up or resize) goes to the agent's
/// process group, as the terminal would have sent it there had the agent not its own session.
async fn supervise(
    child: &mut AgentProcess,
    signals: &mut Signals,
    daemon: &mut DaemonConnection,
) -> anyhow::Result<Supervised> {
    let pid = Pid::from_raw(i32::try_from(child.id()).context("child pid out of range")?);
    loop {
        tokio::select! {
            ready = signals.fd.readable() => {
                let mut ready = ready.context("cannot poll the signalfd")?;
                while let Some(info) = ready.get_inner().read_signal().context("cannot read the signalfd")? {
                    let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else { continue };
                    if signal == Signal::SIGCHLD {
                        if let Some(status) = child.try_wait().context("cannot wait for the agent")? {
                            return Ok(Supervised::Exited(status));
                        }
                    } else {
                        let target = if info.ssi_code == libc::SI_KERNEL { Pid::from_raw(-pid.as_raw()) } else { pid };
                        // The agent may be exiting already; a failed kill changes nothing.
                        let _ = nix::sys::signal::kill(target, signal);
                    }
                }
                ready.clear_ready();
            }
            () = daemon.lost() => return Ok(Supervised::DaemonLost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(agent: &str, user: Option<&str>, command: &[&str]) -> ExecArgs {
        ExecArgs {
            agent: agent.to_string(),
            session: None,
            user: user.map(str::to_string),
            as_root: false,
            cgroup: "agents".to_string(),
            socket: None,
            keep_fds: Vec::new(),
            command: command.iter().map(OsString::from).collect(),
        }
    }

    fn env() -> Env {
        Env { sudo_uid: None, sudo_gid: None, path: Some("/usr/bin:/bin".into()) }
    }

    fn error(args: ExecArgs, env: &Env) -> String {
        plan(args, env).map(|p| format!("planned {p:?}")).unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn refuses_bad_agent_session_and_cgroup_names() {
        assert!(error(args("a/b", Some("nobody"), &["sh"]), &env()).starts_with("--agent: "));
        assert!(error(args("..", Some("nobody"), &["sh"]), &env()).starts_with("--agent: "));
        let mut bad_session = args("claude", Some("nobody"), &["sh"]);
        bad_session.session = Some("sess_../x".into());
        assert!(error(bad_session, &env()).starts_with("--session: "));
        let mut bad_cgroup = args("claude", Some("nobody"), &["sh"]);
        bad_cgroup.cgroup = "../etc".into();
        assert!(error(bad_cgroup, &env()).starts_with("--cgroup: "));
    }

    #[test]
    fn resolves_users_from_the_flag_or_sudo() {
        let e = error(args("claude", Some("no-such-user-xyz"), &["sh"]), &env());
        assert_eq!(e, "unknown user \"no-such-user-xyz\": not in the user database");
        assert_eq!(error(args("claude", None, &["sh"]), &env()), LaunchError::NoUser.to_string());
        assert!(error(args("claude", Some("root"), &["sh"]), &env()).contains("pass --as-root"));

        let sudo = |uid: &str, gid: Option<&str>| Env {
            sudo_uid: Some(uid.into()),
            sudo_gid: gid.map(Into::into),
            path: None,
        };
        let (nobody, gid) = account(None, &sudo("65534", None)).unwrap().unwrap();
        assert_eq!((nobody.name.as_str(), gid.as_raw()), ("nobody", nobody.gid.as_raw()));
        let (_, gid) = account(None, &sudo("65534", Some("4242"))).unwrap().unwrap();
        assert_eq!(gid.as_raw(), 4242);
        assert!(matches!(account(None, &sudo("4294000000", None)), Err(LaunchError::UnknownSudoUid(_))));
        assert!(matches!(account(None, &sudo("alice", None)), Err(LaunchError::BadSudoId { .. })));
        assert!(matches!(account(None, &sudo("65534", Some("-1"))), Err(LaunchError::BadSudoId { .. })));
        // The flag wins over sudo's variables.
        let (root, _) = account(Some("root"), &sudo("65534", None)).unwrap().unwrap();
        assert_eq!(root.uid.as_raw(), 0);
    }

    #[test]
    fn drops_to_the_user_unless_as_root() {
        let (user, run_as) = identities(Some("nobody"), false, &env()).unwrap();
        let run_as = run_as.unwrap();
        assert_eq!((user.as_str(), run_as.name.as_str()), ("nobody", "nobody"));
        assert_eq!((run_as.uid.as_raw(), run_as.gid.as_raw()), (65534, 65534));
        assert!(run_as.groups.contains(&Gid::from_raw(65534)), "{:?}", run_as.groups);
        assert_eq!(run_as.home, PathBuf::from("/nonexistent"));

        let (user, run_as) = identities(Some("nobody"), true, &env()).unwrap();
        assert_eq!((user.as_str(), run_as), ("nobody", None), "--as-root names the human, keeps root");
        let sudo = Env { sudo_uid: Some("65534".into()), ..env() };
        assert_eq!(identities(None, true, &sudo).unwrap().0.as_str(), "nobody");
        assert_eq!(
            identities(None, true, &env()).unwrap(),
            (UserId::try_from("root".to_string()).unwrap(), None)
        );
    }

    #[test]
    fn finds_commands_and_refuses_missing_or_unexecutable_ones() {
        let nobody = Credentials {
            name: "nobody".into(),
            uid: Uid::from_raw(65534),
            gid: Gid::from_raw(65534),
            groups: vec![],
            home: "/nonexistent".into(),
        };
        let path = Some(OsStr::new("relative/dir:/usr/bin:/bin"));
        let sh = resolve_command(OsStr::new("sh"), path, Some(&nobody)).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(resolve_command(OsStr::new("/bin/sh"), None, None).unwrap(), PathBuf::from("/bin/sh"));
        for missing in ["no-such-command-xyz", "/no/such/file", ""] {
            assert!(
                matches!(
                    resolve_command(OsStr::new(missing), path, None),
                    Err(LaunchError::CommandNotFound(_))
                ),
                "{missing:?}"
            );
        }

        let dir = tempfile::tempdir().unwrap();
        let owner_only = dir.path().join("owner-only");
        std::fs::write(&owner_only, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&owner_only, std::fs::Permissions::from_mode(0o700)).unwrap();
        let not_exec = dir.path().join("data");
        std::fs::write(&not_exec, "").unwrap();
        std::fs::set_permissions(&not_exec, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(resolve_command(owner_only.as_os_str(), None, None).is_ok(), "root may run it");
        let e = resolve_command(owner_only.as_os_str(), None, Some(&nobody)).unwrap_err();
        assert!(matches!(e, LaunchError::NotExecutable { .. }), "{e}");
        assert!(matches!(
            resolve_command(not_exec.as_os_str(), None, None),
            Err(LaunchError::NotExecutable { .. })
        ));
        assert!(matches!(
            resolve_command(dir.path().as_os_str(), None, None),
            Err(LaunchError::NotExecutable { .. })
        ));
        // A relative PATH entry is never searched.
        let cwd_path = Some(OsStr::new("."));
        assert!(matches!(
            resolve_command(OsStr::new("sh"), cwd_path, None),
            Err(LaunchError::CommandNotFound(_))
        ));
    }
}
