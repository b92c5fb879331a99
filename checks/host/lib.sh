# Shared by the host twins: a cached Debian 12 root filesystem and an nspawn boot.
set -euo pipefail
TWIN_PACKAGES="systemd,systemd-sysv,dbus,postgresql,nginx-light,curl,ca-certificates,openssl,restic,ffmpeg,poppler-utils"
TWIN_CACHE="${LXGATE_TWIN_CACHE:-/var/cache/lxgate-twin}"

need_tools() {
  local missing=()
  command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "host twins need: apt-get install -y ${missing[*]} (they never pass silently without it)" >&2
    exit 1
  fi
}

# Prints the rootfs path; builds it once per package list (key = sha256 of the list).
rootfs() {
  local key dir
  key=$(printf '%s bookworm minbase' "$TWIN_PACKAGES" | sha256sum | cut -c1-16)
  dir="$TWIN_CACHE/$key"
  if [ ! -e "$dir/rootfs/etc/os-release" ]; then
    mkdir -p "$TWIN_CACHE"
    rm -rf "$dir.tmp"
    local t0=$SECONDS
    debootstrap --variant=minbase --include="$TWIN_PACKAGES" bookworm "$dir.tmp" http://deb.debian.org/debian >"$TWIN_CACHE/debootstrap-$key.log" 2>&1 \
      || { echo "debootstrap failed; see $TWIN_CACHE/debootstrap-$key.log" >&2; tail -5 "$TWIN_CACHE/debootstrap-$key.log" >&2; exit 1; }
    rm -rf "$dir"; mkdir -p "$dir"; mv "$dir.tmp" "$dir/rootfs"
    echo "twin rootfs built in $((SECONDS - t0)) s: $dir/rootfs" >&2
  fi
  echo "$dir/rootfs"
}
