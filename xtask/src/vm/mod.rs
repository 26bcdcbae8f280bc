//! `cargo xtask vm`: boots a Debian cloud kernel under QEMU (TCG) with the host's own root, read-only over
//! virtiofs, as its userland and runs one command there.
mod console;
mod initramfs;

use std::fmt;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::process::{self, Tethered};
use crate::project;
use console::{Console, Event};

const QEMU: &str = "qemu-system-x86_64";
/// The C virtiofsd that Debian bookworm's QEMU 7.2 ships (qemu-system-common).
const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";
/// virtiofs tags, as init.sh mounts them.
const ROOT_TAG: &str = "hostroot";
const OUT_TAG: &str = "safeclaw-out";
/// The guest's HOME: a tmpfs (init.sh mounts it).
const GUEST_HOME: &str = "/root";
/// How long a guest that has reported its exit status gets to power off before it is killed.
const POWER_OFF_GRACE: Duration = Duration::from_secs(15);
/// How long virtiofsd gets to create its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(10);
/// Names the per-run directories in TMPDIR; the nonce after it starts with the owner's pid in hex.
const RUN_DIR_PREFIX: &str = "safeclaw-vm-";
/// Unix socket paths longer than this do not fit in sockaddr_un.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
}

impl Kernel {
    pub const ALL: [Self; 2] = [Self::V6_1, Self::V6_12];

    pub fn name(self) -> &'static str {
        match self {
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Guest memory in MiB; parsed like QEMU's `-m` (a plain number is MiB), always passed on with a unit
/// because the memory backend's `size=` would read a plain number as bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemSize(u32);

impl MemSize {
    const MIN_MIB: u32 = 256;
    const MAX_MIB: u32 = 16 * 1024;
}

impl Default for MemSize {
    fn default() -> Self {
        Self(1024)
    }
}

impl FromStr for MemSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (digits, factor) = match text.char_indices().last() {
            Some((at, 'G' | 'g')) => (&text[..at], 1024),
            Some((at, 'M' | 'm')) => (&text[..at], 1),
            _ => (text, 1),
        };
        let mib = digits
            .parse::<u32>()
            .ok()
            .and_then(|n| n.checked_mul(factor))
            .ok_or_else(|| format!("`{text}` is not a size like 512M or 2G"))?;
        if !(Self::MIN_MIB..=Self::MAX_MIB).contains(&mib) {
            return Err(format!("{mib} MiB is outside {}M..={}M", Self::MIN_MIB, Self::MAX_MIB));
        }
        Ok(Self(mib))
    }
}

#[derive(clap::Args)]
pub struct VmArgs {
    /// Kernel line to boot.
    #[arg(long, default_value = "6.12")]
    kernel: Kernel,
    /// Seconds until QEMU is killed and the run fails.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Host directory shared writable into the guest, at the same path (created if missing).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Guest memory, e.g. 512M or 2G.
    #[arg(long, default_value = "1G")]
    mem: MemSize,
    /// Guest CPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    cpus: u8,
    /// Show the whole console, kernel boot messages included.
    #[arg(long)]
    verbose: bool,
    /// The command to run in the guest (after `--`), from the project directory.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(args: VmArgs) -> anyhow::Result<ExitCode> {
    project::setup()?;
    let vm = Vm {
        kernel: args.kernel,
        timeout: Duration::from_secs(args.timeout),
        out: args.out,
        mem: args.mem,
        cpus: args.cpus,
        verbose: args.verbose,
        label: String::new(),
        env: Vec::new(),
        command: args.command,
    };
    let finished = vm.boot()?;
    let timing = format!(
        "the {} guest booted in {:.1} s, {:.1} s in all",
        vm.kernel,
        finished.boot_time.as_secs_f64(),
        finished.elapsed.as_secs_f64()
    );
    match finished.ending {
        Ending::Exited(status) => {
            eprintln!("xtask: {}; {timing}", finished.ending);
            Ok(ExitCode::from(u8::try_from(status).unwrap_or(u8::MAX)))
        }
        ending => bail!("{ending}; {timing}"),
    }
}

/// One guest run: which kernel, what to share, what to run.
pub struct Vm {
    pub kernel: Kernel,
    pub timeout: Duration,
    /// Shared writable at the same absolute path in the guest.
    pub out: Option<PathBuf>,
    pub mem: MemSize,
    pub cpus: u8,
    pub verbose: bool,
    /// Put before each console line shown (to tell guests running side by side apart).
    pub label: String,
    /// Set in the command's environment, after the harness's own variables.
    pub env: Vec<(String, String)>,
    pub command: Vec<String>,
}

/// A guest that booted and ran the command.
pub struct Finished {
    pub ending: Ending,
    /// The command's console output, line by line.
    pub transcript: Vec<String>,
    pub boot_time: Duration,
    pub elapsed: Duration,
}

/// How the command in a booted guest ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    Exited(i32),
    /// Killed at the timeout while the command ran.
    TimedOut(Duration),
    /// The guest went down without init reporting the command's exit status.
    Crashed,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(status) => write!(f, "the command exited with status {status}"),
            Self::TimedOut(limit) => write!(
                f,
                "the command was still running after {} s, so QEMU and virtiofsd were killed \
                 (raise --timeout if it is just slow)",
                limit.as_secs()
            ),
            Self::Crashed => f.write_str(
                "the guest went down while the command ran, without reporting its exit status \
                 (a kernel panic? see the console lines above)",
            ),
        }
    }
}

/// What `supervise` saw.
struct Watched {
    stop: Stop,
    /// From init's exit marker.
    status: Option<i32>,
    /// Until init's start marker.
    boot_time: Option<Duration>,
    console: Console,
}

/// Why `supervise` stopped waiting.
enum Stop {
    /// QEMU exited (the guest powered off or crashed).
    ConsoleClosed,
    TimedOut,
    PowerOffHung,
    Interrupted,
}

impl Vm {
    pub fn new(kernel: Kernel, command: Vec<String>) -> Self {
        Self {
            kernel,
            timeout: Duration::from_secs(600),
            out: None,
            mem: MemSize::default(),
            cpus: 1,
            verbose: false,
            label: String::new(),
            env: Vec::new(),
            command,
        }
    }

    /// Boots the guest, streams the command's output to stdout and returns its exit status. Every error
    /// path leaves no QEMU or virtiofsd behind.
    pub fn boot(&self) -> anyhow::Result<Finished> {
        let started = Instant::now();
        let kernel_dir = installed_kernel(self.kernel)?;
        let initramfs = initramfs::ensure(self.kernel, &kernel_dir)?;
        if !Path::new(VIRTIOFSD).is_file() {
            bail!("{VIRTIOFSD} is missing (it comes with qemu-system-x86 on Debian bookworm): run `cargo xtask setup`");
        }
        let out = self.out.as_deref().map(shared_directory).transpose()?;
        let run_dir = RunDir::create()?;
        run_dir.write("config", &self.config(out.as_deref(), &run_dir.nonce))?;
        run_dir.write("binds", &host_binds().iter().map(|dir| format!("{dir}\n")).collect::<String>())?;
        run_dir.write("command.sh", &self.command_script()?)?;
        run_dir.snapshot_etc()?;

        let mut daemons = vec![virtiofsd(&run_dir, "root", Path::new("/"))?];
        if let Some(out) = &out {
            daemons.push(virtiofsd(&run_dir, "out", out)?);
        }
        let qemu = Tethered::spawn("QEMU", &mut self.qemu_command(&kernel_dir, &initramfs, &run_dir)?)
            .context("run `cargo xtask setup` to install QEMU")?;
        let Watched { stop, status, boot_time, console } =
            self.supervise(started, qemu, daemons, &run_dir.nonce)?;
        let elapsed = started.elapsed();

        if matches!(stop, Stop::Interrupted) {
            bail!("interrupted; stopped QEMU and virtiofsd");
        }
        if !console.started() {
            let why = if matches!(stop, Stop::TimedOut) {
                format!("did not reach the command within {} s", self.timeout.as_secs())
            } else {
                "did not boot to the command".to_owned()
            };
            bail!(
                "the {} guest {why}.\n{}",
                self.kernel,
                boot_failure_details(&console, &run_dir, self.verbose)
            );
        }
        let ending = match (status, stop) {
            (Some(status), _) => Ending::Exited(status),
            (None, Stop::TimedOut) => Ending::TimedOut(self.timeout),
            (None, _) => Ending::Crashed,
        };
        Ok(Finished {
            ending,
            transcript: console.transcript,
            boot_time: boot_time.unwrap_or(elapsed),
            elapsed,
        })
    }

    /// Streams the console until the guest powers off, the timeout passes or xtask is interrupted; then
    /// kills QEMU and virtiofsd (already gone on a clean power-off).
    fn supervise(
        &self,
        started: Instant,
        mut qemu: Tethered,
        mut daemons: Vec<Tethered>,
        nonce: &str,
    ) -> anyhow::Result<Watched> {
        let stdout = qemu.child().stdout.take().context("QEMU's stdout was not captured")?;
        let (events, received) = mpsc::channel();
        let console = Console::new(nonce, self.verbose);
        let label = self.label.clone();
        let reader = std::thread::spawn(move || read_console(stdout, console, &label, &events));

        let deadline = started + self.timeout;
        let mut status = None;
        let mut boot_time = None;
        let mut power_off_deadline = None;
        let stop = loop {
            let now = Instant::now();
            if process::interrupted() {
                break Stop::Interrupted;
            }
            if now >= deadline {
                break Stop::TimedOut;
            }
            if power_off_deadline.is_some_and(|limit| now >= limit) {
                break Stop::PowerOffHung;
            }
            match received.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Started) => boot_time = Some(started.elapsed()),
                Ok(Event::Exited(code)) => {
                    status = Some(code);
                    power_off_deadline = Some(now + POWER_OFF_GRACE);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break Stop::ConsoleClosed,
            }
        };
        qemu.kill();
        for daemon in &mut daemons {
            daemon.kill();
        }
        let console = reader.join().map_err(|_| anyhow!("the console reader thread panicked"))?;
        Ok(Watched { stop, status, boot_time, console })
    }

    /// Shell variables init.sh reads.
    fn config(&self, out: Option<&Path>, nonce: &str) -> String {
        let out = out.map(|dir| dir.to_string_lossy().into_owned()).unwrap_or_default();
        format!("NONCE={}\nOUT_DIR={}\n", shell_quote(nonce), shell_quote(&out))
    }

    /// The script init runs in the chroot: the environment, the project directory, then the command.
    fn command_script(&self) -> anyhow::Result<String> {
        let harness_env = [
            ("HOME", GUEST_HOME.to_owned()),
            ("PATH", guest_path()),
            ("TERM", "dumb".to_owned()),
            ("GIT_PAGER", "cat".to_owned()),
            ("SAFECLAW_IN_VM", "1".to_owned()),
            ("SAFECLAW_VM_KERNEL", self.kernel.name().to_owned()),
        ];
        let mut script =
            String::from("# Written by cargo xtask vm; the guest's init runs it in the chroot.\n");
        for (name, value) in harness_env
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .chain(self.env.iter().map(|(name, value)| (name.as_str(), value.as_str())))
        {
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                bail!("`{name}` is not a valid environment variable name");
            }
            script.push_str(&format!("export {name}={}\n", shell_quote(value)));
        }
        script.push_str(&format!("cd {} || exit 125\n", shell_quote(&project::root().to_string_lossy())));
        let words: Vec<String> = self.command.iter().map(|word| shell_quote(word)).collect();
        script.push_str(&format!("exec {}\n", words.join(" ")));
        Ok(script)
    }

    fn qemu_command(&self, kernel_dir: &Path, initramfs: &Path, run_dir: &RunDir) -> anyhow::Result<Command> {
        let mem = format!("{}M", self.mem.0);
        let log = run_dir.create_log("qemu")?;
        let mut command = Command::new(QEMU);
        command
            .args(["-accel", "tcg", "-cpu", "max", "-m", &mem, "-smp", &self.cpus.to_string()])
            .arg("-kernel")
            .arg(kernel_dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(initramfs)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 panic=-1 {} safeclaw.run={}",
                if self.verbose { "" } else { "quiet" },
                run_dir.path.display()
            ))
            .args(["-display", "none", "-nodefaults", "-no-reboot", "-monitor", "none", "-serial", "stdio"])
            // vhost-user needs guest memory that virtiofsd can map.
            .args(["-object", &format!("memory-backend-memfd,id=mem,size={mem},share=on")])
            .args(["-numa", "node,memdev=mem"]);
        let mut tags = vec![(ROOT_TAG, run_dir.socket("root"))];
        if self.out.is_some() {
            tags.push((OUT_TAG, run_dir.socket("out")));
        }
        for (index, (tag, socket)) in tags.iter().enumerate() {
            command
                .arg("-chardev")
                .arg(format!("socket,id=fs{index},path={}", socket.display()))
                .arg("-device")
                .arg(format!("vhost-user-fs-pci,chardev=fs{index},tag={tag}"));
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        Ok(command)
    }
}

fn installed_kernel(kernel: Kernel) -> anyhow::Result<PathBuf> {
    let dir = project::vm_cache().join(kernel.name());
    if !dir.join(".complete").is_file() || !dir.join("vmlinuz").is_file() {
        bail!("the {kernel} kernel is not installed in {}: run `cargo xtask setup`", dir.display());
    }
    Ok(dir)
}

/// The `--out` directory, created if missing and resolved, so that the guest sees it at its real path.
fn shared_directory(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}: cannot create it", dir.display()))?;
    let resolved =
        dir.canonicalize().with_context(|| format!("--out {}: cannot resolve it", dir.display()))?;
    if resolved == Path::new("/") {
        bail!("--out / would share the host's whole root writable; give a directory of its own");
    }
    require_plain_path(&resolved, "--out")?;
    Ok(resolved)
}

/// QEMU's and virtiofsd's option syntax splits on commas, the kernel command line on spaces.
fn require_plain_path(path: &Path, what: &str) -> anyhow::Result<()> {
    let text = path.to_string_lossy();
    if text.chars().any(|c| c == ',' || c.is_whitespace() || c.is_control()) {
        bail!("{what} {text}: the VM harness cannot pass a path with commas, spaces or control characters");
    }
    Ok(())
}

/// Starts a virtiofsd that shares `source` and waits until its socket exists.
fn virtiofsd(run_dir: &RunDir, name: &'static str, source: &Path) -> anyhow::Result<Tethered> {
    let socket = run_dir.socket(name);
    let log_name = format!("virtiofsd-{name}");
    let log = run_dir.create_log(&log_name)?;
    let mut command = Command::new(VIRTIOFSD);
    command
        .arg(format!("--socket-path={}", socket.display()))
        .arg("-o")
        .arg(format!("source={}", source.display()))
        // chroot: the default namespace sandbox fails here with `pivot_root ... busy`.
        .args(["-o", "cache=none", "-o", "sandbox=chroot", "-o", "log_level=warn"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("cannot duplicate the virtiofsd log handle")?)
        .stderr(log);
    let mut daemon =
        Tethered::spawn("virtiofsd", &mut command).context("run `cargo xtask setup` to install it")?;
    let waited = Instant::now();
    while !socket.exists() {
        if daemon.has_exited() || waited.elapsed() > SOCKET_WAIT {
            bail!(
                "{} for {} did not start:\n{}",
                daemon.name(),
                source.display(),
                run_dir.log_tail(&log_name)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(daemon)
}

fn read_console(
    stdout: ChildStdout,
    mut console: Console,
    label: &str,
    events: &mpsc::Sender<Event>,
) -> Console {
    let mut reader = BufReader::new(stdout);
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&bytes);
        let line = text.trim_end_matches(['\n', '\r']);
        let verdict = console.line(line);
        if verdict.show {
            let mut terminal = std::io::stdout().lock();
            let _ = writeln!(terminal, "{label}{line}");
            let _ = terminal.flush();
        }
        if let Some(event) = verdict.event {
            let _ = events.send(event);
        }
    }
    console
}

fn boot_failure_details(console: &Console, run_dir: &RunDir, already_shown: bool) -> String {
    let mut details = String::new();
    if !already_shown && !console.boot_log.is_empty() {
        let tail = console.boot_log.len().saturating_sub(30);
        details.push_str("Last console lines:\n");
        for line in &console.boot_log[tail..] {
            details.push_str(&format!("  {line}\n"));
        }
    }
    // init names the failed step itself; otherwise QEMU (or, when QEMU is silent, virtiofsd) may say why.
    if console.boot_log.iter().any(|line| line.starts_with(console::INIT_ERROR)) {
        return details;
    }
    let qemu = run_dir.log_tail("qemu");
    let logs = if qemu.is_empty() {
        vec![
            ("virtiofsd (host root)", run_dir.log_tail("virtiofsd-root")),
            ("virtiofsd (--out)", run_dir.log_tail("virtiofsd-out")),
        ]
    } else {
        vec![("QEMU", qemu)]
    };
    for (name, tail) in logs {
        if !tail.is_empty() {
            details.push_str(&format!("{name} said:\n{tail}"));
        }
    }
    details.push_str("Re-run with --verbose to see the whole boot.");
    details
}

/// The guest's PATH: cargo's bin directory, then Debian's standard PATH. (Not the host's PATH: shims such
/// as pyenv's make every python3 start cost seconds under emulation.)
fn guest_path() -> String {
    format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        cargo_home().join("bin").display()
    )
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME").map_or_else(|| project::home().join(".cargo"), PathBuf::from)
}

fn rustup_home() -> PathBuf {
    std::env::var_os("RUSTUP_HOME").map_or_else(|| project::home().join(".rustup"), PathBuf::from)
}

/// Host directories the command needs, which a guest tmpfs (/root, /tmp, ...) may cover: the checkout and
/// the toolchains. init binds each back at its own path, read-only (a no-op for those not covered).
fn host_binds() -> Vec<String> {
    [project::root().to_path_buf(), cargo_home(), rustup_home()]
        .into_iter()
        .filter(|dir| dir.is_dir())
        .map(|dir| dir.to_string_lossy().into_owned())
        .filter(|dir| !dir.contains('\n'))
        .collect()
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The per-run directory: sockets, daemon logs and the files init reads through the host-root share.
/// Removed when dropped.
struct RunDir {
    path: PathBuf,
    nonce: String,
}

impl RunDir {
    fn create() -> anyhow::Result<Self> {
        let since_epoch =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        remove_stale_run_dirs();
        let nonce = format!("{:x}-{:x}", std::process::id(), since_epoch.as_nanos());
        let path = std::env::temp_dir().join(format!("{RUN_DIR_PREFIX}{nonce}"));
        require_plain_path(&path, "the temporary directory (TMPDIR)")?;
        if path.join("virtiofsd-root.sock").as_os_str().len() > MAX_SOCKET_PATH {
            bail!("{} is too long for a socket path; set TMPDIR=/tmp", path.display());
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path, nonce })
    }

    fn write(&self, name: &str, contents: &str) -> anyhow::Result<()> {
        let path = self.path.join(name);
        std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))
    }

    /// A tar of the host's /etc for the guest to unpack into its RAM-backed /etc: one read over virtiofs
    /// instead of a slow copy file by file.
    fn snapshot_etc(&self) -> anyhow::Result<()> {
        let status = Command::new("tar")
            .args(["--numeric-owner", "-C", "/etc", "-cf"])
            .arg(self.path.join("etc.tar"))
            .arg(".")
            .status()
            .context("cannot run tar to snapshot /etc")?;
        // GNU tar exits 1 when a file changed while it read it: the snapshot is still usable.
        if !matches!(status.code(), Some(0 | 1)) {
            bail!("tar of /etc for the guest failed ({status})");
        }
        Ok(())
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.path.join(format!("virtiofsd-{name}.sock"))
    }

    fn create_log(&self, name: &str) -> anyhow::Result<File> {
        let path = self.path.join(format!("{name}.log"));
        File::create(&path).with_context(|| format!("cannot create {}", path.display()))
    }

    /// The last lines of a daemon's log, indented, or nothing.
    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.path.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].iter().map(|line| format!("  {line}\n")).collect()
    }
}

/// Removes the run directories of xtask processes that died without cleaning up (SIGKILL).
fn remove_stale_run_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(RUN_DIR_PREFIX))
            .and_then(|nonce| nonce.split('-').next())
            .and_then(|pid| libc::pid_t::from_str_radix(pid, 16).ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_like_qemu() {
        assert_eq!("1G".parse(), Ok(MemSize(1024)));
        assert_eq!("512M".parse(), Ok(MemSize(512)));
        assert_eq!("2048".parse(), Ok(MemSize(2048)), "a plain number is MiB, as for qemu -m");
        assert!("1T".parse::<MemSize>().is_err());
        assert!("64M".parse::<MemSize>().is_err(), "too small to boot");
        assert!("99999999999G".parse::<MemSize>().is_err());
        assert!("".parse::<MemSize>().is_err());
    }

    #[test]
    fn shell_quote_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("it's a b"), r"'it'\''s a b'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn command_script_sets_the_environment_then_runs_the_exact_words() -> anyhow::Result<()> {
        let mut vm = Vm::new(Kernel::V6_1, vec!["sh".into(), "-c".into(), "echo \"$1\"".into()]);
        vm.env.push(("SAFECLAW_TEST_OUT".into(), "/x y".into()));
        let script = vm.command_script()?;
        assert!(script.contains("export SAFECLAW_VM_KERNEL='6.1'\n"));
        assert!(script.contains("export HOME='/root'\n"));
        assert!(script.contains("export SAFECLAW_TEST_OUT='/x y'\n"));
        assert!(script.ends_with("exec 'sh' '-c' 'echo \"$1\"'\n"));
        vm.env.push(("BAD NAME".into(), String::new()));
        assert!(vm.command_script().is_err());
        Ok(())
    }

    #[test]
    fn paths_that_break_option_syntax_are_refused() {
        assert!(require_plain_path(Path::new("/work/target/vm-test/6.1"), "--out").is_ok());
        assert!(require_plain_path(Path::new("/tmp/a,b"), "--out").is_err());
        assert!(require_plain_path(Path::new("/tmp/a b"), "--out").is_err());
    }
}
