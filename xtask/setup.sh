#!/usr/bin/env bash
# Installs what a fresh Debian (bookworm) machine of this kind lacks to build SafeClaw and run its VM
# tests: apt packages, nightly rust-src, bpf-linker built against LLVM 22, and the two Debian cloud
# kernels the VM boots. Idempotent: each step checks first and skips what is present.
set -euo pipefail
# Checks pipe into a grep that reads to the end: `grep -q` stops at the first match, and the writer's
# SIGPIPE then fails the whole pipeline under pipefail, so a present tool looked missing and was reinstalled.

log() { printf 'setup: %s\n' "$*" >&2; }
need_root() { [ "$(id -u)" -eq 0 ] || { log "must run as root to install '$1' (try: sudo $0)"; exit 1; }; }

# qemu-system-x86 brings /usr/lib/qemu/virtiofsd (qemu-system-common); busybox-static is the guest's init
# userland; python3 and iproute2 are used by tests/demo/session.sh inside the guest; poppler-utils
# (pdftotext, pdftoppm) check the PDF reports in safeclaw-agent/tests/audit_report.rs; systemd brings
# systemd-analyze, which the package test verifies the unit with; linux-perf is the bench's profiler (the
# VM's bench_smoke test runs it).
APT_PACKAGES=(qemu-system-x86 busybox-static cpio zstd lz4 xz-utils llvm-22-dev libzstd-dev zlib1g-dev bpftool python3-cryptography
  poppler-utils python3 iproute2 systemd linux-perf)
# The kernels the VM boots. Pinned so runs are comparable; the newest of each line is the fallback when the
# pinned build has left the archive.
KERNELS=("6.1:linux-image-6.1.0-56-cloud-amd64" "6.12:linux-image-6.12.117+deb12-cloud-amd64")
VM_CACHE="${SAFECLAW_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/safeclaw/vm}"
BPF_LINKER_VERSION=0.13.0

# Sets `missing` to those of the given packages dpkg does not have installed.
find_missing() {
  missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$p")
  done
}

find_missing "${APT_PACKAGES[@]}"
if [ ${#missing[@]} -gt 0 ]; then
  need_root "${missing[*]}"
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The benchmark's peers (cargo xtask bench runs them inside the VM only), and Prometheus, which the metrics
# test starts itself on 127.0.0.1. Installed with every init script start refused, so the host never runs
# them as services: a policy-rc.d already present is left alone.
PEER_PACKAGES=(auditd fapolicyd prometheus)
# The syslog destination tests start their own rsyslogd (with the gtls driver) on loopback ports; the
# system service stays off like the peers above.
PEER_PACKAGES+=(rsyslog rsyslog-gnutls)
find_missing "${PEER_PACKAGES[@]}"
if [ ${#missing[@]} -gt 0 ]; then
  need_root "${missing[*]}"
  log "apt-get install ${missing[*]} (not started on the host)"
  policy_rc=/usr/sbin/policy-rc.d
  own_policy_rc=
  if [ ! -e "$policy_rc" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy_rc"; chmod 0755 "$policy_rc"; own_policy_rc=1
  fi
  apt-get update -qq
  status=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  [ -z "$own_policy_rc" ] || rm -f "$policy_rc"
  [ "$status" -eq 0 ] || { log "apt-get install ${missing[*]} failed"; exit 1; }
fi

# kubernetes-validate (PyPI) checks deploy/kubernetes/ against the Kubernetes schemas in a native test.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    need_root python3-pip
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  log "pip install kubernetes-validate"
  python3 -m pip install --quiet kubernetes-validate 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages kubernetes-validate
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
fi

# moto's standalone S3 server (PyPI), with object lock: the S3 destination tests start it on 127.0.0.1. In its
# own venv under the cache directory (tests find it at $SAFECLAW_CACHE/moto/bin/moto_server). Pinned.
MOTO_VERSION=5.2.5
MOTO_VENV="${SAFECLAW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/safeclaw}/moto"
if ! "$MOTO_VENV/bin/python" -m pip show moto 2>/dev/null | grep "^Version: $MOTO_VERSION\$" >/dev/null; then
  log "pip install moto[server]==$MOTO_VERSION into $MOTO_VENV"
  python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/python" -m pip install --quiet "moto[server]==$MOTO_VERSION"
fi

if ! rustup toolchain list | grep '^nightly' >/dev/null; then
  log "rustup toolchain install nightly"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep '^rust-src' >/dev/null; then
  log "rustup component add rust-src --toolchain nightly"
  rustup component add rust-src --toolchain nightly
fi

if ! bpf-linker --version 2>/dev/null | grep "$BPF_LINKER_VERSION" >/dev/null; then
  log "cargo install bpf-linker $BPF_LINKER_VERSION (llvm-22)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version "$BPF_LINKER_VERSION" --locked \
    --no-default-features --features llvm-22
fi

mkdir -p "$VM_CACHE"
for entry in "${KERNELS[@]}"; do
  line=${entry%%:*}; pkg=${entry#*:}
  dir="$VM_CACHE/$line"
  if [ -f "$dir/vmlinuz" ] && [ -f "$dir/.complete" ]; then continue; fi
  if ! apt-cache show "$pkg" >/dev/null 2>&1; then
    apt-get update -qq || true
  fi
  if ! apt-cache show "$pkg" >/dev/null 2>&1; then
    newest=$(apt-cache search --names-only "^linux-image-${line}[.0-9+a-z-]*-cloud-amd64\$" | awk '{print $1}' | sort -V | tail -n 1)
    [ -n "$newest" ] || { log "no Debian cloud kernel package for the $line line in the apt lists"; exit 1; }
    log "$pkg is gone from the archive; using $newest"
    pkg=$newest
  fi
  log "fetching kernel $pkg"
  rm -rf "$dir" "$dir.tmp"; mkdir -p "$dir.tmp"
  (cd "$dir.tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" && dpkg -x ./*.deb root)
  cp "$dir.tmp"/root/boot/vmlinuz-* "$dir.tmp/vmlinuz"
  cp -a "$dir.tmp"/root/lib/modules "$dir.tmp/modules"
  rm -rf "$dir.tmp/root" "$dir.tmp"/*.deb
  echo "$pkg" >"$dir.tmp/package"
  touch "$dir.tmp/.complete"
  mv "$dir.tmp" "$dir"
done
# The real agent CLIs the agent_hooks VM test drives (offline, against a scripted model server), from the
# npm registry into the checkout's target/ (the VM sees the checkout, not ~/.cache). Pinned versions.
AGENT_CLIS=("@anthropic-ai/claude-code@2.1.197" "@openai/codex@0.171.0")
AGENT_CLI_DIR="$(cd "$(dirname "$0")/.." && pwd)/target/agent-clis"
# npm may come with a nodejs that is not Debian's (NodeSource bundles it): only install when missing.
if ! command -v npm >/dev/null 2>&1; then
  need_root "nodejs npm"
  log "apt-get install nodejs npm"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if [ ! -f "$AGENT_CLI_DIR/.complete" ] || [ "$(cat "$AGENT_CLI_DIR/.complete")" != "${AGENT_CLIS[*]}" ]; then
  log "npm install ${AGENT_CLIS[*]} into $AGENT_CLI_DIR"
  mkdir -p "$AGENT_CLI_DIR"
  npm install --prefix "$AGENT_CLI_DIR" --no-audit --no-fund --loglevel=error "${AGENT_CLIS[@]}" >/dev/null
  echo "${AGENT_CLIS[*]}" >"$AGENT_CLI_DIR/.complete"
fi

log "ok (kernels in $VM_CACHE)"
