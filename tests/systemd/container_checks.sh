#!/usr/bin/env bash
# The packaged unit under a real systemd: a Debian 12 container (systemd-nspawn,
# systemd as PID 1) with the .deb installed, the agent talking to swtpm, a
# mosquitto broker and iot-sim on host loopback (the container shares the
# host's network). Checked with systemd itself:
#   - the unit becomes active (READY=1) and StatusText has the enrollment counts
#   - the gateway and its sensor enroll to ACTIVE (gateway-agent status --json)
#   - `systemctl reload` leaves it active and the agent logs the reload
#   - a stopped event loop (SIGSTOP) is killed by WatchdogSec and restarted
#   - the open-files soft limit the agent runs with under the unit
#   - `systemctl stop` ends it with status 0
#   - `systemd-analyze security` rates it 1.5 or lower inside the container
#   - a CA key readable by others (exit 2) fails the start and is not restarted
#
#   container_checks.sh SOURCE_DIR BUILD_DIR [ROOT]
#
# ROOT (default BUILD_DIR/nspawn-root) is made by scripts/nspawn-root, once; a
# run of it still under way is waited for. The root itself is never changed:
# the container boots with a tmpfs overlay on it (--volatile=overlay), so runs
# start clean and may run side by side. Needs root, systemd-nspawn, nsenter,
# swtpm, mosquitto, node and the aws CLI; anything missing fails the test.
set -euo pipefail

src=$(realpath "$1")
build=$(realpath "$2")
root=$(realpath -m "${3:-$build/nspawn-root}")

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
need() { command -v "$1" >/dev/null || fail "$1 is not installed ($2)"; }

[[ $(id -u) -eq 0 ]] || fail "the container test needs root (systemd-nspawn)"
need systemd-nspawn "Debian package systemd-container: scripts/deps"
need nsenter "Debian package util-linux"
need swtpm "scripts/deps"
need mosquitto "scripts/deps"
need node "Node.js >= 20: scripts/deps"
need aws "Debian package awscli: scripts/deps"
need python3 "Debian package python3"
[[ -x $build/agent/gateway-agent ]] || fail "build $build/agent/gateway-agent first"
[[ -d $src/cloud/node_modules ]] || fail "cloud/node_modules is missing: run cloud/install-deps"

work=$(mktemp -d "${TMPDIR:-/tmp}/ga-container.XXXXXX")
pids=()
nspawn_pid=""
init_pid=""

cleanup() {
  local rc=$?
  if [[ -n $init_pid ]] && kill -0 "$init_pid" 2>/dev/null; then
    if ((rc != 0)); then
      echo "--- journal of gateway-agent.service in the container" >&2
      nsenter -t "$init_pid" -a journalctl -u gateway-agent --no-pager 2>&1 | tail -40 >&2 || true
    fi
    nsenter -t "$init_pid" -a systemctl poweroff 2>/dev/null || true
  fi
  if [[ -n $nspawn_pid ]]; then
    for _ in $(seq 300); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$nspawn_pid" 2>/dev/null; then
      echo "the container did not power off within 30 s: killing it" >&2
      kill -KILL "$nspawn_pid" 2>/dev/null || true
    fi
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
# until_true SECONDS WHAT COMMAND...: runs COMMAND every 0.2 s until it succeeds.
until_true() {
  local limit=$1 what=$2
  shift 2
  local end=$(($(date +%s) + limit))
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < end)) || fail "$what (waited $limit s)"
    sleep 0.2
  done
}
free_port() {  # a port P with P and P+1 free on loopback
  local p
  while true; do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
      ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
}
json() { python3 -c 'import json, sys; d = json.loads(sys.argv[1]); print(eval("d" + sys.argv[2]))' "$1" "$2"; }

# --- the root (made in the background by scripts/test, or here when run alone)
echo "== nspawn root $root"
start=$(now)
"$src/scripts/nspawn-root" "$root" >"$work/nspawn-root.log" 2>&1 ||
  fail "scripts/nspawn-root: $(tail -20 "$work/nspawn-root.log")"
echo "ready after $(since "$start") s: $(tail -1 "$work/nspawn-root.log")"

# --- the package
(cd "$build" && cpack -G DEB -B "$work/pkg") >"$work/cpack.log" 2>&1 ||
  fail "cpack: $(cat "$work/cpack.log")"
mkdir "$work/in"
cp "$work"/pkg/gateway-agent_*.deb "$work/in/gateway-agent.deb" || fail "cpack made no .deb"
echo "package: $(basename "$work"/pkg/gateway-agent_*.deb)"

# --- the TPM, the local broker, the cloud and the CA, on host loopback
agent=$build/agent/gateway-agent
tpm_port=$(free_port)
mkdir "$work/tpm"
swtpm socket --tpm2 --server "type=tcp,bindaddr=127.0.0.1,port=$tpm_port" \
  --ctrl "type=tcp,bindaddr=127.0.0.1,port=$((tpm_port + 1))" \
  --tpmstate "dir=$work/tpm" --flags not-need-init >"$work/swtpm.log" 2>&1 &
pids+=($!)
until_true 10 "swtpm did not listen on $tpm_port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$tpm_port"

broker_port=$(free_port)
printf 'user root\nlistener %s 127.0.0.1\nallow_anonymous true\n' "$broker_port" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
until_true 10 "mosquitto did not listen on $broker_port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$broker_port"

arn="arn:aws:lambda:us-east-1:123456789012:function:gateway-agent-jitr"
"$src/cloud/jitr-lambda/deploy.sh" --render-only "$work/role" --region us-east-1 >/dev/null
node "$src/cloud/iot-sim/bin/iot-sim.js" --data-dir "$work/sim" \
  --lambda "$arn=$src/cloud/jitr-lambda/index.mjs" --lambda-role-policy "$work/role/role-policy.json" \
  >"$work/sim.out" 2>"$work/sim.log" &
pids+=($!)
sim_pid=$!
until [[ -s $work/sim.out ]]; do
  kill -0 "$sim_pid" 2>/dev/null ||
    fail "iot-sim exited (cloud/install-deps installs its modules): $(tail -20 "$work/sim.log")"
  sleep 0.2
done
ready=$(head -1 "$work/sim.out")
mqtt_port=$(json "$ready" "['mqttPort']")
api_port=$(json "$ready" "['apiPort']")
endpoint=$(json "$ready" "['endpoint']")
cp "$(json "$ready" "['rootCa']")" "$work/in/cloud-root-ca.pem"

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_PAGER=""
awsl() { aws --endpoint-url "http://127.0.0.1:$api_port" --output json "$@"; }
"$agent" ca init --backend file --subject "CN=Container Test CA" --days 30 --out-dir "$work/ca" >/dev/null
code=$(json "$(awsl iot get-registration-code)" "['registrationCode']")
"$agent" ca verification-cert --ca-dir "$work/ca" --registration-code "$code" \
  --out "$work/ca/verification.pem" >/dev/null
ca_id=$(json "$(awsl iot register-ca-certificate --ca-certificate "file://$work/ca/ca.pem" \
  --verification-certificate "file://$work/ca/verification.pem" \
  --set-as-active --allow-auto-registration)" "['certificateId']")
awsl iot create-topic-rule --rule-name gateway_agent_jitr --topic-rule-payload \
  "{\"sql\":\"SELECT * FROM '\$aws/events/certificates/registered/$ca_id' WHERE certificateStatus = \\\"PENDING_ACTIVATION\\\"\",\"awsIotSqlVersion\":\"2016-03-23\",\"actions\":[{\"lambda\":{\"functionArn\":\"$arn\"}}]}"
cp "$work/ca/ca.pem" "$work/ca/ca.key" "$work/in/"

cat >"$work/in/agent.toml" <<TOML
[agent]
thing_name = "container-gateway"
[tpm]
tcti = "swtpm:host=127.0.0.1,port=$tpm_port"
[ca]
backend = "file"
[aws]
endpoint = "$endpoint"
port = $mqtt_port
root_ca = "/etc/gateway-agent/cloud-root-ca.pem"
[enrollment]
backoff_initial = "500ms"
backoff_max = "5s"
[local]
host = "127.0.0.1"
port = $broker_port

[[sensor]]
id = "temperature-1"
TOML
# The watchdog shortened so that the test sees it fire; everything else is
# the shipped unit.
cat >"$work/in/watchdog.conf" <<'UNIT'
[Service]
WatchdogSec=4s
TimeoutAbortSec=10s
RestartSec=1s
UNIT

# --- boot
echo "== booting the container"
boot_start=$(now)
systemd-nspawn -q --register=no --keep-unit --volatile=overlay -D "$root" -M "ga-test-$$" \
  --bind-ro="$work/in:/mnt/ga" -b >"$work/console.log" 2>&1 </dev/null &
nspawn_pid=$!
find_init() {
  local p
  for p in $(ps -o pid= --ppid "$nspawn_pid" 2>/dev/null); do
    [[ $(cat "/proc/$p/comm" 2>/dev/null) == systemd ]] && { init_pid=$p; return 0; }
  done
  return 1
}
end=$(($(date +%s) + 60))
until find_init; do
  kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited: $(cat "$work/console.log")"
  (($(date +%s) < end)) || fail "no systemd in the container after 60 s: $(cat "$work/console.log")"
  sleep 0.2
done
in_ct() { nsenter -t "$init_pid" -a "$@"; }
until_true 60 "the container's systemd has no control socket: $(cat "$work/console.log")" \
  test -S "/proc/$init_pid/root/run/systemd/private"
state=$(in_ct timeout 120 systemctl is-system-running --wait 2>&1 || true)
[[ $state == running || $state == degraded ]] ||
  fail "the container's systemd is '$state': $(cat "$work/console.log")"
boot_s=$(since "$boot_start")
[[ $state == running ]] || in_ct systemctl --failed --no-pager || true
echo "systemd $(in_ct systemctl --version | head -1 | cut -d' ' -f2) is PID 1, system $state after $boot_s s"

# --- install the package and the configuration
in_ct dpkg -i /mnt/ga/gateway-agent.deb >"$work/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$work/dpkg.log")"
in_ct sh -euc '
  install -m 0640 -g gateway-agent /mnt/ga/agent.toml /etc/gateway-agent/agent.toml
  install -m 0644 /mnt/ga/cloud-root-ca.pem /etc/gateway-agent/cloud-root-ca.pem
  install -m 0640 -g gateway-agent /mnt/ga/ca.pem /etc/gateway-agent/ca/ca.pem
  install -m 0600 -o gateway-agent /mnt/ga/ca.key /etc/gateway-agent/ca/ca.key
  mkdir -p /etc/systemd/system/gateway-agent.service.d
  install -m 0644 /mnt/ga/watchdog.conf /etc/systemd/system/gateway-agent.service.d/test.conf
  systemctl daemon-reload
' || fail "could not install the configuration in the container"
echo "ok: package installed, configuration in /etc/gateway-agent"

prop() { in_ct systemctl show -P "$1" gateway-agent.service; }
show() { in_ct systemctl show -p ActiveState,SubState,Result,MainPID,NRestarts,ExecMainStatus,StatusText gateway-agent.service | tr '\n' ' '; }

# --- READY=1 and STATUS=
start=$(now)
in_ct systemctl start gateway-agent.service || fail "systemctl start: $(show)"
ready_s=$(since "$start")
[[ $(prop ActiveState) == active && $(prop SubState) == running ]] || fail "not active after start: $(show)"
echo "ok: active (READY=1) $ready_s s after systemctl start"

# --- enrollment to ACTIVE
all_active() {
  in_ct gateway-agent status --json --config /etc/gateway-agent/agent.toml >"$work/status.json" 2>/dev/null &&
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
ids = d["identities"]
sys.exit(0 if len(ids) == 2 and all(i["state"] == "ACTIVE" for i in ids) else 1)' "$work/status.json"
}
until_true 120 "the gateway and its sensor did not become ACTIVE: $(cat "$work/status.json" 2>/dev/null)" all_active
active_s=$(since "$start")
echo "ok: the gateway and temperature-1 are ACTIVE $active_s s after systemctl start"
until_true 30 "StatusText has no counts: $(show)" bash -c "[[ \$(nsenter -t $init_pid -a systemctl show -P StatusText gateway-agent.service) =~ 2/2\ active ]]"
echo "ok: StatusText: $(prop StatusText)"

# --- the open-files limit the agent gets
main_pid=$(prop MainPID)
nofile=$(in_ct cat "/proc/$main_pid/limits" | awk '/^Max open files/ { print $4 " " $5 }')
soft=${nofile% *}
hard=${nofile#* }
unit_soft=$(prop LimitNOFILESoft)
echo "open files: the unit asks for soft $unit_soft, hard $(prop LimitNOFILE); the agent runs with soft $soft, hard $hard"
[[ $soft == "$hard" ]] || fail "the agent did not raise its soft open-files limit to the hard one ($soft < $hard)"
[[ $soft == unlimited ]] || ((soft >= 4096)) || fail "the open-files limit $soft is below 4096"
if [[ $unit_soft == "$soft" ]]; then
  echo "ok: open-files limit $soft (the unit's soft limit is already the hard one here)"
else
  echo "ok: open-files limit $soft (raised by the agent from the unit's $unit_soft)"
fi

# --- reload
in_ct systemctl reload gateway-agent.service || fail "systemctl reload: $(show)"
[[ $(prop ActiveState) == active && $(prop MainPID) == "$main_pid" ]] || fail "not active after reload: $(show)"
until_true 10 "the journal does not show the reload" \
  bash -c "nsenter -t $init_pid -a journalctl -u gateway-agent.service --no-pager | grep -q 'configuration reloaded'"
echo "ok: reload: $(in_ct journalctl -u gateway-agent.service --no-pager -o cat | grep 'configuration reloaded' | tail -1)"

# --- the watchdog
restarts=$(prop NRestarts)
wd_start=$(now)
in_ct kill -STOP "$main_pid"
new_main_restarted() {
  local pid
  pid=$(prop MainPID)
  [[ $pid != 0 && $pid != "$main_pid" && $(prop ActiveState) == active && $(prop SubState) == running ]]
}
until_true 60 "the watchdog did not restart the stopped agent: $(show)" new_main_restarted
wd_s=$(since "$wd_start")
[[ $(prop NRestarts) -gt $restarts ]] || fail "NRestarts did not grow: $(show)"
in_ct journalctl -u gateway-agent.service --no-pager -o cat | grep -q 'Watchdog timeout' ||
  fail "the journal has no watchdog timeout"
echo "ok: watchdog: the stopped agent ($main_pid) was killed and restarted as $(prop MainPID) in $wd_s s, NRestarts $(prop NRestarts)"

# --- stop
in_ct systemctl stop gateway-agent.service
[[ $(prop ActiveState) == inactive && $(prop ExecMainStatus) == 0 && $(prop Result) == success ]] ||
  fail "systemctl stop did not end it with status 0: $(show)"
echo "ok: stop: inactive, ExecMainStatus 0"

# --- exposure, rated by the container's systemd
exposure=$(in_ct systemd-analyze security --no-pager gateway-agent.service 2>&1 |
  sed -n 's/.*Overall exposure level for gateway-agent.service: \([0-9.]*\).*/\1/p')
[[ -n $exposure ]] || fail "no exposure level from systemd-analyze security"
awk -v s="$exposure" 'BEGIN { exit !(s <= 1.5) }' || fail "exposure $exposure is above 1.5"
echo "ok: exposure $exposure (at most 1.5)"

# --- exit 2 is not restarted
in_ct chmod 0644 /etc/gateway-agent/ca/ca.key
in_ct systemctl reset-failed gateway-agent.service 2>/dev/null || true
if in_ct systemctl start gateway-agent.service 2>/dev/null; then
  fail "the agent started with a CA key readable by others: $(show)"
fi
[[ $(prop ActiveState) == failed && $(prop Result) == exit-code && $(prop ExecMainStatus) == 2 &&
  $(prop NRestarts) == 0 ]] || fail "a CA key readable by others: not failed with status 2, or restarted: $(show)"
echo "ok: CA key 0644: failed with status 2, not restarted ($(show))"

echo
echo "figures: system up $boot_s s after boot; READY $ready_s s, ACTIVE $active_s s after start;" \
  "watchdog restart $wd_s s (WatchdogSec=4s); exposure $exposure; open files $soft"
echo "container checks passed"
