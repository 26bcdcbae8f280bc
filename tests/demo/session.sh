#!/bin/sh
# Scripted SafeClaw session, run by `cargo xtask run` inside the test VM (from the project directory):
# starts the agent on the default policy, then launches a scripted "agent" with `safeclaw-agent exec` (its
# own session cgroup, registered with the daemon, so every entry names agentId, sessionId and userId) that
# tries a few things an AI agent might, printing what the kernel allowed or denied while the audit lines
# arrive. Exits non-zero when an outcome differs from what the default policy promises.
#   SAFECLAW_AGENT_BIN  the agent binary        OUT  directory for audit.jsonl, shared with the host
set -u

# It plants fake keys in ~/.ssh and adds an address to lo: never on a real machine.
[ "${SAFECLAW_IN_VM:-}" = 1 ] || { echo "demo: runs only inside the test VM; use cargo xtask run"; exit 1; }

if [ "${1:-}" = --as-agent ]; then
    # Started by `safeclaw-agent exec` in its session cgroup: everything this script does is enforced.
    mismatches=0
    # attempt EXPECTED DESCRIPTION COMMAND...: runs COMMAND, prints the outcome, counts a surprise. Only
    # EPERM/EACCES count as denied: any other error (say ENOENT) would be a failed demo, not enforcement.
    attempt() {
        expected=$1 description=$2
        shift 2
        if error=$("$@" 2>&1 >/dev/null); then
            outcome=allowed
        else
            case $error in
            *"Operation not permitted"* | *"Permission denied"*) outcome=denied ;;
            *) outcome=failed ;;
            esac
        fi
        mark=ok
        [ "$outcome" = "$expected" ] || { mark="UNEXPECTED (expected $expected)"; mismatches=$((mismatches + 1)); }
        printf 'demo: %-7s %-50s %s %s\n' "$outcome" "$description" "$mark" "${error:+| $error}"
        sleep 0.5 # lets the audit line for this step arrive before the next step prints
    }
    attempt allowed "read a project file ~/projects/demo/README.md" cat "$HOME/projects/demo/README.md"
    attempt denied "read the SSH private key ~/.ssh/id_rsa" cat "$HOME/.ssh/id_rsa"
    attempt denied "read the project secrets file /tmp/demo/.env" cat /tmp/demo/.env
    attempt allowed "write /tmp/demo/notes.txt" sh -c 'echo notes >/tmp/demo/notes.txt'
    attempt denied "write /etc/safeclaw-demo" sh -c 'echo pwned >/etc/safeclaw-demo'
    attempt allowed "exec /bin/true" /bin/true
    attempt denied "connect to 169.254.169.254:80 (cloud metadata)" \
        timeout 5 bash -c 'exec 3<>/dev/tcp/169.254.169.254/80'
    exit "$mismatches"
fi

: "${SAFECLAW_AGENT_BIN:?set SAFECLAW_AGENT_BIN to the safeclaw-agent binary}"
: "${OUT:?set OUT to the directory for the audit log}"
audit_log=$OUT/audit.jsonl
ready=/run/safeclaw.ready

# A project where default.yaml lets the agent work, and fake secrets, planted before enforcement starts
# and from outside the agent cgroup.
mkdir -p "$HOME/.ssh" /tmp/demo "$HOME/projects/demo"
printf '# demo project\n' >"$HOME/projects/demo/README.md"
printf 'FAKE PRIVATE KEY, planted by the SafeClaw demo\n' >"$HOME/.ssh/id_rsa"
printf 'OPENAI_API_KEY=sk-fake-demo-key\n' >/tmp/demo/.env
chmod 600 "$HOME/.ssh/id_rsa" /tmp/demo/.env
# The agent reads its script from its workspace, where default.yaml lets it read.
agent_script=$HOME/projects/demo/agent.sh
cp "$0" "$agent_script" || exit 1

# A stand-in for the cloud metadata service, so that without SafeClaw the connect would succeed: the guest
# has no network, and ENETUNREACH must not pass for a denial.
ip addr add 169.254.169.254/32 dev lo || exit 1
python3 -c '
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("169.254.169.254", 80))
s.listen(16)
time.sleep(3600)' &
metadata=$!

echo "demo: starting safeclaw-agent on policies/default.yaml"
"$SAFECLAW_AGENT_BIN" run --cgroup agents --policy policies/default.yaml --audit-log "$audit_log" \
    --state-dir "$OUT/state" --ready-file "$ready" --metrics 127.0.0.1:9464 &
agent=$!

# Loading the programs takes seconds under emulation; give up after 60.
waited=0
while [ ! -e "$ready" ]; do
    if ! kill -0 "$agent" 2>/dev/null; then
        wait "$agent"
        echo "demo: safeclaw-agent exited (status $?) before it was ready"
        exit 1
    fi
    if [ "$waited" -ge 600 ]; then
        echo "demo: safeclaw-agent was not ready after 60 s"
        kill -TERM "$agent"
        wait "$agent"
        exit 1
    fi
    sleep 0.1
    waited=$((waited + 1))
done
echo "demo: safeclaw-agent is enforcing; its audit entries are shown as they are written"

"$SAFECLAW_AGENT_BIN" audit tail -f "$audit_log" &
tail=$!

# The agent as an operator starts one: its own session of agent `demo`, as root here (the VM has no
# other login user), in the agent's working directory.
(cd "$HOME/projects/demo" && "$SAFECLAW_AGENT_BIN" exec --agent demo --as-root -- sh "$agent_script" --as-agent)
mismatches=$?

sleep 1 # the last audit lines
# The Prometheus endpoint counts what the log holds: every attempt, by action and effect.
python3 - "$audit_log" <<'EOF_PY'
import json, sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=10).read().decode()
counted = sum(int(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith("safeclaw_decisions_total{"))
with open(sys.argv[1]) as log:
    attempts = sum(1 for line in log if json.loads(line)["action"].split(".")[0] in ("file", "process", "network"))
print(f"demo: metrics endpoint counted {counted} decisions; the log holds {attempts} attempts")
sys.exit(0 if counted == attempts else 1)
EOF_PY
metrics_ok=$?
kill -TERM "$agent"
wait "$agent"
agent_status=$?
sleep 1 # the agent's own closing lines
kill "$tail" "$metadata" 2>/dev/null
ip addr del 169.254.169.254/32 dev lo
echo "demo: safeclaw-agent stopped (status $agent_status); $mismatches unexpected outcome(s)"

# Every attempt the agent made names its agent, session and user: that is what the log is evidence of.
python3 - "$audit_log" <<'EOF_PY'
import json, sys
attempts = anonymous = 0
with open(sys.argv[1]) as log:
    for line in log:
        entry = json.loads(line)
        if entry.get("action", "").split(".")[0] in ("file", "process", "network"):
            attempts += 1
            if not all(entry.get(field) for field in ("agentId", "sessionId", "userId")):
                anonymous += 1
print(f"demo: {attempts} attempt entries, {anonymous} without agentId, sessionId and userId")
sys.exit(1 if anonymous or not attempts else 0)
EOF_PY
identified=$?
[ "$mismatches" -eq 0 ] && [ "$agent_status" -eq 0 ] && [ "$identified" -eq 0 ] && [ "$metrics_ok" -eq 0 ]
