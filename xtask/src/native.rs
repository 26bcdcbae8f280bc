//! The native test binaries, several at a time: `cargo test` runs them one after another, and the slow
//! ones (each starting its real server once) spend most of their time waiting.
use std::collections::VecDeque;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use crate::cargo::Executable;

/// Binaries that take longest, each mostly waiting on its real server (rsyslog, an HTTP server, an S3
/// server). They run together first and alone: the daemon's delivery threads run at nice 10, so beside
/// CPU-bound test binaries they got a tenth of a core and took ten times as long.
const SERVER_BOUND: [&str; 3] = ["destinations_syslog", "destinations_webhook", "destinations_s3"];

/// What one binary printed and how it ended.
pub struct Finished {
    pub name: String,
    /// The output, stdout then stderr, printed as one block so that binaries do not interleave.
    pub output: String,
    /// None when it could not be started.
    pub success: Option<bool>,
}

/// Runs every test binary in `tests` from its package's directory (as `cargo test` does): the
/// server-bound ones together, then the others `jobs` at a time; prints each one's output when it
/// ends and returns them in the order they ended.
pub fn run_all(tests: Vec<Executable>, jobs: usize) -> Vec<Finished> {
    let (server_bound, others): (Vec<_>, Vec<_>) =
        tests.into_iter().partition(|test| SERVER_BOUND.contains(&test.target.as_str()));
    let together = server_bound.len();
    let mut finished = run_pool(server_bound, together);
    finished.extend(run_pool(others, jobs));
    finished
}

fn run_pool(tests: Vec<Executable>, jobs: usize) -> Vec<Finished> {
    let queue = Mutex::new(VecDeque::from(tests));
    let finished = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let Some(test) = queue.lock().unwrap_or_else(|poison| poison.into_inner()).pop_front() else {
                    break;
                };
                let result = run_one(&test.path, &test.package_dir);
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "     Running {}\n{}", test.path.display(), result.output);
                drop(stdout);
                finished.lock().unwrap_or_else(|poison| poison.into_inner()).push(result);
            });
        }
    });
    finished.into_inner().unwrap_or_else(|poison| poison.into_inner())
}

fn run_one(path: &Path, dir: &Path) -> Finished {
    let name =
        path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let started = Instant::now();
    match Command::new(path).current_dir(dir).output() {
        Ok(output) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            text.push_str(&format!("({name}: {}, {:.1} s)", output.status, started.elapsed().as_secs_f64()));
            Finished { name, output: text, success: Some(output.status.success()) }
        }
        Err(err) => Finished { output: format!("cannot run {}: {err}", path.display()), name, success: None },
    }
}
