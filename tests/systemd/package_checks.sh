#!/usr/bin/env bash
# Checks of systemd/ and the install/package rules, with the real tools.
#
#   package_checks.sh CHECK SOURCE_DIR BUILD_DIR
#
#   unit_verify     the installed unit passes `systemd-analyze verify` without a
#                   word, runs the installed binary, and the sysusers.d and
#                   tmpfiles.d files apply to an empty root
#   unit_exposure   `systemd-analyze security --offline=yes` rates the unit at
#                   exposure 1.5 or lower
#   install_layout  `cmake --install` puts every file in its FHS place and mode
#   deb_package     `cpack -G DEB` builds a package with the right Depends,
#                   conffiles and maintainer scripts; extracted into a throwaway
#                   root, its postinst creates the user, group membership,
#                   directories, owners and modes; purge removes the state;
#                   lintian (when installed) reports no error
#
# Each check works in its own temporary directory (parallel runs are safe) and
# needs the build to be complete.
set -euo pipefail

check=$1
src=$2
build=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/ga-package-checks.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# `cmake --install` of the build into $work/root as if the prefix were /usr.
install_tree() {
  DESTDIR="$work/root" cmake --install "$build" --prefix /usr >"$work/install.log" 2>&1 ||
    fail "cmake --install: $(cat "$work/install.log")"
}

# expect_mode PATH MODE [UID GID]
expect_mode() {
  local got want="$2"
  [[ $# -ge 4 ]] && want="$2 $3 $4"
  if [[ $# -ge 4 ]]; then got=$(stat -c '%a %u %g' "$1"); else got=$(stat -c '%a' "$1"); fi
  [[ $got == "$want" ]] || fail "$1: mode/owner is '$got', expected '$want'"
  echo "ok: $1 $got"
}

# The uid/gid of a name in $root/etc/passwd or $root/etc/group.
id_in_root() { awk -F: -v n="$2" '$1 == n { print $3 }' "$1"; }

unit_verify() {
  install_tree
  local unit=$work/root/usr/lib/systemd/system/gateway-agent.service
  [[ -f $unit ]] || fail "the unit is not installed at /usr/lib/systemd/system"
  grep -qx 'ExecStart=/usr/bin/gateway-agent run --config /etc/gateway-agent/agent.toml' "$unit" ||
    fail "ExecStart does not run /usr/bin/gateway-agent with /etc/gateway-agent/agent.toml"
  [[ -x $work/root/usr/bin/gateway-agent ]] || fail "ExecStart's binary is not installed"

  # verify resolves ExecStart on this machine: point a copy (same name) at the
  # binary just installed; every other line is the shipped unit's.
  mkdir "$work/verify"
  sed "s#^ExecStart=/usr/bin/gateway-agent #ExecStart=$work/root/usr/bin/gateway-agent #" \
    "$unit" >"$work/verify/gateway-agent.service"
  local out
  out=$(systemd-analyze verify --man=no "$work/verify/gateway-agent.service" 2>&1) ||
    fail "systemd-analyze verify: $out"
  [[ -z $out ]] || fail "systemd-analyze verify is not clean: $out"
  echo "ok: systemd-analyze verify is clean"

  # The sysusers.d and tmpfiles.d files parse and apply to an empty root.
  mkdir -p "$work/empty/etc"
  cp -r "$work/root/usr" "$work/empty/"
  systemd-sysusers --root="$work/empty" gateway-agent.conf >/dev/null 2>&1 ||
    fail "systemd-sysusers: $(systemd-sysusers --root="$work/empty" gateway-agent.conf 2>&1)"
  out=$(systemd-tmpfiles --root="$work/empty" --create gateway-agent.conf 2>&1) ||
    fail "systemd-tmpfiles: $out"
  [[ -z $out ]] || fail "systemd-tmpfiles is not clean: $out"
  local uid gid tss
  uid=$(id_in_root "$work/empty/etc/passwd" gateway-agent)
  gid=$(id_in_root "$work/empty/etc/group" gateway-agent)
  [[ -n $uid && -n $gid ]] || fail "sysusers made no gateway-agent user and group"
  expect_mode "$work/empty/var/lib/gateway-agent" 700 "$uid" "$gid"
  echo "ok: sysusers.d and tmpfiles.d apply"
}

unit_exposure() {
  local out score
  out=$(systemd-analyze security --offline=yes "$src/systemd/gateway-agent.service" 2>&1) ||
    fail "systemd-analyze security: $out"
  score=$(sed -n 's/.*Overall exposure level for gateway-agent.service: \([0-9.]*\).*/\1/p' <<<"$out")
  [[ -n $score ]] || fail "no exposure level in: $out"
  echo "exposure: $score (at most 1.5 wanted)"
  grep '✗' <<<"$out" || true
  awk -v s="$score" 'BEGIN { exit !(s <= 1.5) }' || fail "exposure $score is above 1.5"
  # The settings the issue asks for by name, beyond what the score weighs.
  local unit=$src/systemd/gateway-agent.service
  for line in Type=notify NotifyAccess=main Restart=on-failure UMask=0077 \
    StateDirectory=gateway-agent ConfigurationDirectory=gateway-agent \
    RuntimeDirectory=gateway-agent DevicePolicy=closed 'DeviceAllow=/dev/tpmrm0 rw' \
    CapabilityBoundingSet= 'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' \
    SystemCallFilter=@system-service ProtectSystem=strict MemoryDenyWriteExecute=yes \
    LockPersonality=yes NoNewPrivileges=yes User=gateway-agent \
    'ExecReload=/bin/kill -HUP $MAINPID'; do
    grep -qxF -- "$line" "$unit" || fail "the unit lacks '$line'"
  done
  grep -q '^WatchdogSec=' "$unit" || fail "the unit has no WatchdogSec="
  echo "ok: the unit has every required setting"
}

install_layout() {
  install_tree
  local r=$work/root
  expect_mode "$r/usr/bin/gateway-agent" 755
  expect_mode "$r/usr/lib/systemd/system/gateway-agent.service" 644
  expect_mode "$r/usr/lib/sysusers.d/gateway-agent.conf" 644
  expect_mode "$r/usr/lib/tmpfiles.d/gateway-agent.conf" 644
  expect_mode "$r/etc/gateway-agent/agent.toml" 640
  expect_mode "$r/usr/share/doc/gateway-agent/README.md" 644
  expect_mode "$r/usr/share/gateway-agent/mosquitto-gateway-agent.conf.example" 644
  cmp -s "$r/etc/gateway-agent/agent.toml" "$src/config/gateway-agent.toml" ||
    fail "the installed agent.toml is not config/gateway-agent.toml"
  "$r/usr/bin/gateway-agent" check-config --no-files --config "$r/etc/gateway-agent/agent.toml" >/dev/null ||
    fail "the installed sample configuration does not pass check-config"
  echo "ok: installed sample configuration is valid"
  local unexpected
  unexpected=$(cd "$r" && find . -type f | grep -vE '^\./(usr/bin/gateway-agent|usr/lib/systemd/system/gateway-agent\.service|usr/lib/(sysusers|tmpfiles)\.d/gateway-agent\.conf|etc/gateway-agent/agent\.toml|usr/share/doc/gateway-agent/.*|usr/share/gateway-agent/mosquitto-gateway-agent\.conf\.example)$' || true)
  [[ -z $unexpected ]] || fail "unexpected installed files: $unexpected"
  echo "ok: nothing else is installed"
}

deb_package() {
  (cd "$build" && cpack -G DEB -B "$work/pkg") >"$work/cpack.log" 2>&1 ||
    fail "cpack: $(cat "$work/cpack.log")"
  local deb
  deb=$(echo "$work"/pkg/gateway-agent_*.deb)
  [[ -f $deb ]] || fail "no .deb in $work/pkg: $(cat "$work/cpack.log")"
  echo "package: $(basename "$deb")"

  local depends
  depends=$(dpkg-deb -f "$deb" Depends)
  echo "Depends: $depends"
  for lib in libc6 libssl3 libtss2-esys-3.0.2-0 libtss2-tctildr0 libtss2-rc0 libtss2-mu0 \
    libtss2-tcti-device0 libsystemd0 libsqlite3-0 libtomlplusplus3 systemd; do
    grep -qE "(^|, )$lib( |,|$)" <<<"$depends" || fail "Depends lacks $lib"
  done
  if readelf -d "$build/agent/gateway-agent" | grep -q 'libmosquitto'; then
    grep -qE "(^|, )libmosquitto1( |,|$)" <<<"$depends" || fail "Depends lacks libmosquitto1"
  fi

  dpkg-deb -e "$deb" "$work/control"
  grep -qx /etc/gateway-agent/agent.toml "$work/control/conffiles" ||
    fail "agent.toml is not a conffile"
  for script in postinst prerm postrm; do
    [[ -x $work/control/$script ]] || fail "no executable $script"
    sh -n "$work/control/$script" || fail "$script is not valid sh"
  done
  local listing
  listing=$(dpkg-deb -c "$deb")
  for entry in '-rwxr-xr-x root/root .* ./usr/bin/gateway-agent$' \
    '-rw-r--r-- root/root .* ./usr/lib/systemd/system/gateway-agent.service$' \
    '-rw-r--r-- root/root .* ./usr/lib/sysusers.d/gateway-agent.conf$' \
    '-rw-r--r-- root/root .* ./usr/lib/tmpfiles.d/gateway-agent.conf$' \
    '-rw-r----- root/root .* ./etc/gateway-agent/agent.toml$' \
    '-rw-r--r-- root/root .* ./usr/share/doc/gateway-agent/copyright$' \
    '-rw-r--r-- root/root .* ./usr/share/doc/gateway-agent/changelog.gz$' \
    '-rw-r--r-- root/root .* ./usr/share/gateway-agent/mosquitto-gateway-agent.conf.example$'; do
    grep -qE -- "$entry" <<<"$listing" || fail "the package lacks $entry"
  done
  # Installing changes no broker: nothing under /etc/mosquitto; the snippet is
  # an example, the one `local-broker init --conf-d` writes.
  ! grep -q ' ./etc/mosquitto' <<<"$listing" || fail "the package installs into /etc/mosquitto"
  echo "ok: package contents"

  # Install into a throwaway root the way dpkg --root would: unpack, then the
  # postinst with DPKG_ROOT set.
  local root=$work/target
  mkdir -p "$root"
  dpkg-deb -x "$deb" "$root"
  DPKG_ROOT=$root sh "$work/control/postinst" configure >"$work/postinst.log" 2>&1 ||
    fail "postinst: $(cat "$work/postinst.log")"
  local uid gid
  uid=$(id_in_root "$root/etc/passwd" gateway-agent)
  gid=$(id_in_root "$root/etc/group" gateway-agent)
  [[ -n $uid && -n $gid ]] || fail "postinst made no gateway-agent user and group"
  awk -F: '$1 == "gateway-agent" { exit !($7 ~ /nologin$/ && $6 == "/var/lib/gateway-agent") }' \
    "$root/etc/passwd" || fail "gateway-agent is not a nologin user at /var/lib/gateway-agent"
  awk -F: '$1 == "tss" { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == "gateway-agent") found = 1 }
           END { exit !found }' "$root/etc/group" || fail "gateway-agent is not in the tss group"
  echo "ok: user gateway-agent ($uid:$gid), member of tss"
  expect_mode "$root/etc/gateway-agent" 750 0 "$gid"
  expect_mode "$root/etc/gateway-agent/ca" 750 0 "$gid"
  expect_mode "$root/etc/gateway-agent/agent.toml" 640 0 "$gid"
  expect_mode "$root/var/lib/gateway-agent" 700 "$uid" "$gid"
  expect_mode "$root/usr/bin/gateway-agent" 755 0 0

  # The shipped mosquitto snippet is what init --conf-d writes for its paths.
  local example=$root/usr/share/gateway-agent/mosquitto-gateway-agent.conf.example want
  want=$("$build/agent/gateway-agent" local-broker conf --dir /var/lib/mosquitto/gateway-agent \
    --conf-d /etc/mosquitto/conf.d --plugin "$(sed -n 's/^plugin //p' "$example")")
  [[ $(cat "$example") == "$want" ]] || fail "the shipped snippet differs from local-broker conf"
  grep -qx 'plugin_opt_config_file /var/lib/mosquitto/gateway-agent/dynamic-security.json' \
    "$example" || fail "the snippet's plugin state is not in /var/lib/mosquitto/gateway-agent"
  grep -qx 'allow_anonymous false' "$example" || fail "the snippet lets anonymous clients in"
  echo "ok: mosquitto snippet example"

  # An upgrade runs postinst again: same user, nothing changed.
  DPKG_ROOT=$root sh "$work/control/postinst" configure 0.0.1 >"$work/postinst.log" 2>&1 ||
    fail "postinst on upgrade: $(cat "$work/postinst.log")"
  [[ $(id_in_root "$root/etc/passwd" gateway-agent) == "$uid" ]] || fail "upgrade changed the uid"
  expect_mode "$root/var/lib/gateway-agent" 700 "$uid" "$gid"

  # Removal keeps the state; purge deletes it.
  touch "$root/var/lib/gateway-agent/state.db"
  DPKG_ROOT=$root sh "$work/control/prerm" remove || fail "prerm remove"
  DPKG_ROOT=$root sh "$work/control/postrm" remove || fail "postrm remove"
  [[ -f $root/var/lib/gateway-agent/state.db ]] || fail "remove deleted the state"
  DPKG_ROOT=$root sh "$work/control/postrm" purge || fail "postrm purge"
  [[ ! -e $root/var/lib/gateway-agent ]] || fail "purge left /var/lib/gateway-agent"
  echo "ok: maintainer scripts"

  if command -v lintian >/dev/null; then
    local report
    report=$(lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v 'running with root privileges' || true)
    [[ -n $report ]] && echo "$report"
    if grep -q '^E: ' <<<"$report"; then fail "lintian reports errors"; fi
    echo "ok: lintian reports no error"
  else
    echo "lintian is not installed: skipped"
  fi
}

case $check in
  unit_verify | unit_exposure | install_layout | deb_package) "$check" ;;
  *) fail "unknown check $check" ;;
esac
