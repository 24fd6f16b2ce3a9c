#!/usr/bin/env bash
# Build the registry's image here, without a Docker engine or a container registry: buildah
# (Debian's package) builds deploy/container/Containerfile on a base image made from Debian's
# packages with debootstrap (bookworm: python3 3.11, python3-venv, ca-certificates), because no
# registry to pull python:3.11-slim from is reachable. Run as root.
#
#   deploy/container/build-local.sh [receiver|worker]     (default: worker)
#
# The base's root file system is cached in .cache/container/rootfs and the base image is
# localhost/kfm-debian-python:bookworm in buildah's store (vfs driver, so no overlay mount is
# needed). The host's CA bundle is mounted over the builder's while it runs pip, so a TLS-
# inspecting proxy on the way to PyPI is trusted during the build; nothing of it stays in the
# image. Prints the image name as the only line on stdout; build logs go to stderr.
#
# The native ledger scan goes into the image as the host's wheel: deploy/local/build-native.sh
# builds it (or takes it from .cache/native/) and copies it into deploy/container/wheels/, which
# the builder stage installs from, so no toolchain enters the image. Without Rust the image runs
# on the pure Python path, unless KFM_REQUIRE_NATIVE=1 (then this fails); KFM_CONTAINER_NATIVE=0
# leaves it out. The host must not be newer than the base (bookworm, glibc 2.36) for the wheel to
# load there: the builder stage checks that it does.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TARGET=${1:-worker}
BASE=localhost/kfm-debian-python:bookworm
IMAGE=localhost/kfm-rollback-registry-$TARGET:$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")
ROOTFS="$ROOT/.cache/container/rootfs"
B=(buildah --storage-driver vfs)

for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install -y buildah debootstrap" >&2; exit 1; }
done

if ! "${B[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
  if [[ ! -x "$ROOTFS/usr/bin/python3" ]]; then
    rm -rf "$ROOTFS.tmp"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$ROOTFS.tmp" http://deb.debian.org/debian >&2
    rm -rf "$ROOTFS.tmp"/var/cache/apt/archives/*.deb "$ROOTFS.tmp"/var/lib/apt/lists/*
    mv "$ROOTFS.tmp" "$ROOTFS"
  fi
  ctr=$("${B[@]}" from scratch)
  trap '"${B[@]}" umount "$ctr" >/dev/null 2>&1; "${B[@]}" rm "$ctr" >/dev/null 2>&1' EXIT  # if a step fails
  mnt=$("${B[@]}" mount "$ctr")
  cp -a "$ROOTFS"/. "$mnt"/
  "${B[@]}" umount "$ctr" >/dev/null
  "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash "$ctr"
  "${B[@]}" commit -q "$ctr" "$BASE" >&2
  "${B[@]}" rm "$ctr" >/dev/null
  trap - EXIT
fi

WHEELS="$ROOT/deploy/container/wheels"
rm -f "$WHEELS"/kfm_scan-*.whl
if [[ "${KFM_CONTAINER_NATIVE:-1}" != 0 ]]; then
  PY="$ROOT/.venv/bin/python"
  [[ -x "$PY" ]] || PY=python3
  "$ROOT/deploy/local/build-native.sh" --wheel "$WHEELS" "$PY" >&2
fi

# --format docker: the OCI image format has no HEALTHCHECK; --layers: an unchanged stage is reused.
"${B[@]}" build --isolation chroot --format docker --layers \
  --build-arg PYTHON_IMAGE="$BASE" \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  -f "$ROOT/deploy/container/Containerfile" --target "$TARGET" -t "$IMAGE" "$ROOT" >&2
echo "$IMAGE"
