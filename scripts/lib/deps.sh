# Installs Debian packages that are missing (these machines run as root; a
# fresh one has only Rust, gcc, perl and python3). Sourced by the scripts.
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  # Packages such as nginx and redis-server start their service when
  # installed (on every address); the tests start their own, on loopback.
  local policy=/usr/sbin/policy-rc.d held=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod 755 "$policy" && held=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || rc=$?
  [ -n "$held" ] && $sudo rm -f "$policy"
  return "$rc"
}
