//! `safeclaw-agent doctor`: checks each prerequisite for enforcement, with the fix for what fails.
//! The BPF LSM check loads the real programs: a kernel can list `bpf` as an LSM and still refuse them.
use std::process::ExitCode;

use crate::kernel::{btf::KernelBtf, loader};

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Only probe whether BPF LSM programs load (exit 0 if they do, 1 if not).
    #[arg(long)]
    pub probe_lsm: bool,
    /// Print one JSON document (schema in docs/cli.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Outcome of one check: `Err` carries what failed and the fix.
type Check = Result<String, (String, String)>;

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let checks: Vec<(&str, Check)> = if args.probe_lsm {
        vec![("root", check_root()), ("bpf-lsm-load", check_lsm_load())]
    } else {
        vec![
            ("root", check_root()),
            ("kernel", check_kernel()),
            ("btf", check_btf()),
            ("lsm-list", check_lsm_list()),
            ("bpf-lsm-load", check_lsm_load()),
            ("cgroup-v2", check_cgroup()),
        ]
    };
    let failed = checks.iter().filter(|(_, outcome)| outcome.is_err()).count();
    if args.json {
        println!("{}", report_json(&checks));
    } else {
        print_report(&checks, failed);
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `{"ok", "checks": [{"name", "ok", "detail", "fix"}]}`; `fix` is null for a check that passed.
fn report_json(checks: &[(&str, Check)]) -> serde_json::Value {
    let checks: Vec<serde_json::Value> = checks
        .iter()
        .map(|(name, outcome)| match outcome {
            Ok(detail) => serde_json::json!({ "name": name, "ok": true, "detail": detail, "fix": null }),
            Err((detail, fix)) => {
                serde_json::json!({ "name": name, "ok": false, "detail": detail, "fix": fix })
            }
        })
        .collect();
    let ok = checks.iter().all(|check| check["ok"] == true);
    serde_json::json!({ "ok": ok, "checks": checks })
}

fn print_report(checks: &[(&str, Check)], failed: usize) {
    for (name, outcome) in checks {
        match outcome {
            Ok(detail) => println!("PASS  {name:<13} {detail}"),
            Err((detail, fix)) => {
                println!("FAIL  {name:<13} {detail}\n      {:<13} fix: {fix}", "");
            }
        }
    }
    if failed == 0 {
        println!("all {} checks passed: `safeclaw-agent run` can enforce on this host", checks.len());
    } else {
        println!("{failed} of {} checks failed: enforcement cannot start on this host", checks.len());
    }
}

fn check_root() -> Check {
    if nix::unistd::geteuid().is_root() {
        Ok("running as root".into())
    } else {
        Err(("not running as root".into(), "run as root: `sudo safeclaw-agent doctor`".into()))
    }
}

fn check_kernel() -> Check {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| (format!("uname failed: {e}"), "none".to_string()))?;
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    // bpf_loop (5.17) and BPF LSM with ring buffers; 6.1 and 6.12 are what the tests run on.
    if version >= (5, 17) {
        Ok(format!("{release} (needs >= 5.17; tested on 6.1 and 6.12)"))
    } else {
        Err((format!("{release} is older than 5.17"), "boot a kernel >= 5.17 (Debian 12 ships 6.1)".into()))
    }
}

fn check_btf() -> Check {
    let btf = KernelBtf::from_sys_fs().map_err(|e| {
        (e.to_string(), "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's kernels are)".to_string())
    })?;
    let offsets = loader::offsets_from_btf(&btf)
        .map_err(|e| (e.to_string(), "this kernel's structures are not supported; report it".to_string()))?;
    Ok(format!("/sys/kernel/btf/vmlinux has the needed layouts (file.f_path at {})", offsets.file_f_path))
}

fn check_lsm_list() -> Check {
    let path = "/sys/kernel/security/lsm";
    let list = std::fs::read_to_string(path).map_err(|e| {
        (
            format!("cannot read {path}: {e}"),
            "mount securityfs: `mount -t securityfs securityfs /sys/kernel/security`".to_string(),
        )
    })?;
    let list = list.trim();
    if list.split(',').any(|l| l == "bpf") {
        Ok(format!("active LSMs: {list}"))
    } else {
        Err((
            format!("`bpf` is not an active LSM ({list})"),
            format!("add bpf to the kernel command line: lsm={list},bpf (and CONFIG_BPF_LSM=y), then reboot"),
        ))
    }
}

fn check_lsm_load() -> Check {
    let fix = "the kernel refuses BPF LSM programs: boot with `bpf` in lsm= and CONFIG_BPF_LSM=y, \
               or use `cargo xtask run`, which runs SafeClaw in a VM with such a kernel";
    let loaded = loader::open(None, None).map_err(|e| (e.to_string(), fix.to_string()))?;
    Ok(format!(
        "the kernel verified and loaded {} (not attached); ring buffer created",
        loaded.programs().join(", ")
    ))
}

fn check_cgroup() -> Check {
    let mount = crate::cgroup::find_mount().map_err(|e| {
        (e.to_string(), "mount cgroup v2: `mount -t cgroup2 none /sys/fs/cgroup`".to_string())
    })?;
    Ok(format!("cgroup v2 mounted at {}", mount.path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_report_names_each_check_and_its_fix() {
        let checks: Vec<(&str, Check)> = vec![
            ("root", Ok("running as root".into())),
            ("btf", Err(("no BTF".into(), "use a BTF kernel".into()))),
        ];
        let report = report_json(&checks);
        assert_eq!(report["ok"], false);
        assert_eq!(
            report["checks"][0],
            serde_json::json!({"name": "root", "ok": true, "detail": "running as root", "fix": null})
        );
        assert_eq!(report["checks"][1]["fix"], "use a BTF kernel");
        assert_eq!(report_json(&checks[..1])["ok"], true);
    }
}
