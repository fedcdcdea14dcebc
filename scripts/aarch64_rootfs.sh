#!/usr/bin/env bash
# Build (once, then reuse) a Debian bookworm arm64 root filesystem that runs under
# qemu-user without binfmt_misc: the recipe of issue 8, step by step.
#
#   scripts/aarch64_rootfs.sh [ROOT]        default ROOT: .cache/aarch64/bookworm-rootfs
#
# 1. debootstrap --foreign --variant=minbase --arch=arm64 --include=python3,python3-venv
#    (first stage only: unpacks the base, downloads the included .debs)
# 2. dpkg-deb -x every downloaded .deb into ROOT (what the second stage would unpack)
# 3. a two-line host script at ROOT/usr/local/bin/python3.11 that re-enters qemu with
#    argv[0] kept, so venvs and subprocesses (sys.executable) work without binfmt.
# A stamp file marks a complete rootfs; an interrupted build is removed and redone.
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian), QEMU (qemu-aarch64-static).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
ROOT="${1:-$HERE/.cache/aarch64/bookworm-rootfs}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
QEMU="${QEMU:-$(command -v qemu-aarch64-static || echo /usr/bin/qemu-aarch64-static)}"
RECIPE="bookworm-arm64-minbase+python3,python3-venv v1"
STAMP="$ROOT/.edge-rootfs-complete"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$RECIPE" ]]; then
  echo "rootfs: cached at $ROOT"
else
  for tool in debootstrap dpkg-deb "$QEMU"; do
    command -v "$tool" >/dev/null || { echo "rootfs: $tool missing (apt-get install debootstrap qemu-user-static)" >&2; exit 2; }
  done
  mkdir -p "$(dirname "$ROOT")"
  t0=$(date +%s)
  for attempt in 1 2; do  # one retry: a mirror hiccup should not fail CI
    rm -rf "$ROOT"
    if debootstrap --foreign --variant=minbase --arch=arm64 --include=python3,python3-venv \
        bookworm "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1; then
      break
    fi
    tail -20 "$ROOT.debootstrap.log" >&2
    [[ $attempt == 2 ]] && { echo "rootfs: debootstrap failed twice" >&2; exit 1; }
    echo "rootfs: debootstrap failed, retrying in 10 s" >&2
    sleep 10
  done
  n=0
  for deb in "$ROOT"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$ROOT"
    n=$((n + 1))
  done
  echo "rootfs: debootstrap + $n .debs unpacked in $(( $(date +%s) - t0 )) s"
  echo "$RECIPE" >"$STAMP"
fi

# The host wrapper (rewritten every run: ROOT's absolute path is baked in).
mkdir -p "$ROOT/usr/local/bin"
cat >"$ROOT/usr/local/bin/python3.11" <<WRAP
#!/bin/sh
exec $QEMU -L $ROOT -0 "\$0" $ROOT/usr/bin/python3.11 "\$@"
WRAP
chmod 755 "$ROOT/usr/local/bin/python3.11"
"$ROOT/usr/local/bin/python3.11" -c 'import platform, sys; print("rootfs:", platform.machine(), "Python", sys.version.split()[0], "glibc", platform.libc_ver()[1])'
