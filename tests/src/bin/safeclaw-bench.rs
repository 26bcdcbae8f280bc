//! In-VM micro benchmark of open()+close() of an allowed file: (a) no programs attached, (b) programs
//! attached with the process outside the agent cgroup, (c) inside it, with a consumer draining and
//! writing every event. Configurations are interleaved round by round (order rotated) so that all
//! ratios come from the same boot. Prints a Markdown table; `cargo xtask bench` runs it in the VM.
use std::ffi::CString;
use std::io::{Read as _, Write as _};
use std::os::fd::FromRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use aya::maps::RingBuf;
use safeclaw_agent::cgroup;
use safeclaw_agent::kernel::{events, loader, maps};
use safeclaw_integration::allow_paths_policy;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    NoPrograms,
    Outside,
    Inside,
}

impl Config {
    fn label(self) -> &'static str {
        match self {
            Config::NoPrograms => "(a) no programs",
            Config::Outside => "(b) programs attached, outside the agent cgroup",
            Config::Inside => "(c) inside the agent cgroup, every event consumed",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut iterations: u32 = 50_000;
    let mut rounds: usize = 5;
    while let Some(arg) = args.next() {
        let value = args.next().with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--iterations" => iterations = value.parse().context("--iterations")?,
            "--rounds" => rounds = value.parse().context("--rounds")?,
            other => bail!("unknown argument {other} (use --iterations N --rounds R)"),
        }
    }
    if rounds < 1 || iterations < 1 {
        bail!("--rounds and --iterations must be at least 1");
    }
    let dir = std::env::temp_dir().join("safeclaw-bench");
    std::fs::create_dir_all(&dir)?;
    let target = dir.join("allowed.txt");
    std::fs::write(&target, "x")?;
    let mount = cgroup::find_mount()?;
    let (agents, _) = cgroup::ensure(&mount, "bench-agents")?;
    let mut kernel = loader::open(None)?;
    kernel.load_programs()?;
    let policy = allow_paths_policy(&[target.to_str().context("non-UTF-8 temp dir")?.as_bytes()]);
    maps::write_policy(&mut kernel.ebpf, 0, 1, &[&policy])?;
    maps::set_scope(&mut kernel.ebpf, maps::enforcing_scope(&agents, kernel.epoch))?;
    let ring = RingBuf::try_from(kernel.ebpf.take_map("EVENTS").context("no EVENTS map")?)?;
    let consumed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = spawn_consumer(ring, dir.join("events.jsonl"), Arc::clone(&consumed), Arc::clone(&stop))?;
    // Kernel accounting of program run time is on only while this fd is open.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time stats")?;

    let configs = [Config::NoPrograms, Config::Outside, Config::Inside];
    let mut samples: Vec<(Config, Vec<f64>)> = configs.iter().map(|&c| (c, Vec::new())).collect();
    for round in 0..rounds {
        for k in 0..configs.len() {
            let config = configs[(round + k) % configs.len()];
            match config {
                Config::NoPrograms => kernel.detach()?,
                Config::Outside | Config::Inside => {
                    kernel.detach()?;
                    kernel.attach()?;
                }
            }
            let cgroup_procs = (config == Config::Inside).then(|| agents.path.join("cgroup.procs"));
            let ns = measure_in_child(&target, iterations, cgroup_procs.as_deref())?;
            if let Some((_, values)) = samples.iter_mut().find(|(c, _)| *c == config) {
                values.push(ns);
            }
        }
    }
    let stats = kernel.stats()?;
    kernel.detach()?;
    // Let the consumer take what is left, then stop it.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    consumer.join().map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
    std::fs::remove_dir(&agents.path).ok();

    let release = nix::sys::utsname::uname()?.release().to_string_lossy().into_owned();
    println!("kernel {release}; {rounds} rounds x {iterations} open()+close(); medians (min-max), ns per open+close\n");
    println!("| configuration | ns per open+close | ratio to (a) |");
    println!("|---|---|---|");
    let baseline = median(&samples[0].1);
    for (config, values) in &samples {
        let (lo, hi) = min_max(values);
        println!(
            "| {} | {:.0} ({:.0}-{:.0}) | {:.3} |",
            config.label(),
            median(values),
            lo,
            hi,
            median(values) / baseline
        );
    }
    println!(
        "\nevents consumed: {} (expected at least {})",
        consumed.load(Ordering::Relaxed),
        rounds as u64 * iterations as u64
    );
    println!("\n| program | runs | ns per run (kernel bpf_stats) |\n|---|---|---|");
    for s in stats {
        let per_run = if s.run_count == 0 { 0.0 } else { s.run_time_ns as f64 / s.run_count as f64 };
        println!("| {} | {} | {:.0} |", s.name, s.run_count, per_run);
    }
    Ok(())
}

/// Runs the loop in a forked child (optionally moved into the agent cgroup first) and returns its
/// ns per open+close, so the parent never enters the scope.
fn measure_in_child(
    target: &std::path::Path,
    iterations: u32,
    cgroup_procs: Option<&std::path::Path>,
) -> anyhow::Result<f64> {
    // Opened relative to its directory: in the VM `/` is virtiofs without caching, and resolving
    // from it would measure FUSE round trips instead of the open path.
    let dir = target.parent().context("target has no directory")?;
    let name = target.file_name().context("target has no file name")?;
    std::env::set_current_dir(dir)?;
    let path = CString::new(name.as_encoded_bytes())?;
    let mut fds = [0i32; 2];
    // SAFETY: plain pipe(2) into a 2-element array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the child only writes a file, runs open/close and exits with _exit; the consumer
    // thread's locks are never taken in the child.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", std::io::Error::last_os_error());
    }
    if pid == 0 {
        let code = child(&path, iterations, cgroup_procs, fds[1]);
        // SAFETY: leave the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: fds[0] is ours; fds[1] belongs to the child now.
    unsafe { libc::close(fds[1]) };
    let mut reader = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut text = String::new();
    reader.read_to_string(&mut text)?;
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("benchmark child failed: {text}");
    }
    text.trim().parse().with_context(|| format!("child said {text:?}"))
}

fn child(path: &CString, iterations: u32, cgroup_procs: Option<&std::path::Path>, out: i32) -> i32 {
    // SAFETY: out is the pipe's write end, owned by this child.
    let mut out = unsafe { std::fs::File::from_raw_fd(out) };
    if let Some(procs) = cgroup_procs {
        if let Err(e) = std::fs::write(procs, std::process::id().to_string()) {
            let _ = write!(out, "entering the agent cgroup: {e}");
            return 1;
        }
    }
    let start = Instant::now();
    for _ in 0..iterations {
        // SAFETY: open/close of a NUL-terminated path.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            let _ = write!(out, "open failed: {}", std::io::Error::last_os_error());
            return 1;
        }
        unsafe { libc::close(fd) };
    }
    let ns = start.elapsed().as_nanos() as f64 / iterations as f64;
    let _ = write!(out, "{ns}");
    0
}

/// Drains the ring buffer into a JSON-lines file, as the daemon would, until told to stop.
fn spawn_consumer(
    mut ring: RingBuf<aya::maps::MapData>,
    log: std::path::PathBuf,
    consumed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(&log)?);
    Ok(std::thread::spawn(move || loop {
        let mut drained = 0u64;
        while let Some(item) = ring.next() {
            let event = events::decode(&item)?;
            writeln!(
                file,
                "{{\"kernelSeq\":{},\"effect\":\"{}\"}}",
                event.kernel_seq,
                event.effect.as_str()
            )?;
            drained += 1;
        }
        consumed.fetch_add(drained, Ordering::Relaxed);
        if drained == 0 {
            if stop.load(Ordering::Relaxed) {
                file.flush()?;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[sorted.len() / 2]
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}
