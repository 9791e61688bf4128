#!/usr/bin/env bash
# Builds localhost/opname-operator:VERSION and localhost/opname-recorder:VERSION from
# images/Containerfile with buildah, on machines that reach no container registry: the build
# stage's base is Debian bookworm made here by debootstrap (with this machine's Rust toolchain
# mounted), the runtime's base a distroless-like image taken from the same root (glibc,
# libgcc, CA certificates, time zones, user 65532). Bases and the build's target directory are
# cached under $OPNAME_IMAGE_CACHE and skipped when present.
#
# RUN steps use chroot isolation: this machine's crun refuses containers (cgroup v1 with a
# v2 hierarchy mounted beside it, and no CAP_SYS_RESOURCE for the rlimits it sets), so
# `podman run` does not work here; buildah's chroot isolation needs neither.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${OPNAME_IMAGE_CACHE:-/var/cache/opname-images}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
builder=localhost/opname-builder:bookworm
runtime=localhost/opname-runtime:bookworm
mkdir -p "$cache"

rootfs="$cache/rootfs"
if [ ! -x "$rootfs/usr/bin/cmake" ]; then
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=ca-certificates,tzdata,gcc,g++,make,cmake,libc6-dev \
    bookworm "$rootfs" http://deb.debian.org/debian
fi

if ! buildah inspect --type image "$builder" >/dev/null 2>&1; then
  # podman's import needs no container runtime (buildah has none).
  tar -C "$rootfs" -c . | podman import --quiet \
    --change 'ENV PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$builder" >/dev/null
fi

if ! buildah inspect --type image "$runtime" >/dev/null 2>&1; then
  ctr="$(buildah from scratch)"
  mnt="$(buildah mount "$ctr")"
  (
    cd "$rootfs"
    for f in usr/lib/x86_64-linux-gnu/libc.so.6 usr/lib/x86_64-linux-gnu/libm.so.6 \
      usr/lib/x86_64-linux-gnu/libgcc_s.so.1 usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 \
      usr/lib64/ld-linux-x86-64.so.2 etc/ssl/certs/ca-certificates.crt; do
      cp -a --parents "$f" "$mnt/"
    done
    cp -a --parents usr/share/zoneinfo "$mnt/"
  )
  ln -s usr/lib "$mnt/lib"
  ln -s usr/lib64 "$mnt/lib64"
  mkdir -p "$mnt/etc" "$mnt/home/nonroot" "$mnt/usr/local/bin"
  mkdir -m 1777 "$mnt/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$mnt/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$mnt/etc/group"
  chown 65532:65532 "$mnt/home/nonroot"
  buildah umount "$ctr" >/dev/null
  buildah config --user 65532:65532 --workingdir /home/nonroot \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$ctr"
  buildah commit --quiet "$ctr" "$runtime" >/dev/null
  buildah rm "$ctr" >/dev/null
fi

mkdir -p "$cache/target" "$cache/cargo-registry"
for target in operator recorder; do
  buildah bud --quiet --isolation chroot --layers \
    -f "$root/images/Containerfile" --target "$target" \
    --build-arg BUILDER="$builder" --build-arg RUNTIME="$runtime" \
    --volume "${RUSTUP_HOME:-$HOME/.rustup}:/root/.rustup:ro" \
    --volume "${CARGO_HOME:-$HOME/.cargo}/bin:/root/.cargo/bin:ro" \
    --volume "${CARGO_HOME:-$HOME/.cargo}/registry:/root/.cargo/registry" \
    --volume "$cache/target:/src/target" \
    -t "localhost/opname-$target:$version" "$root" >/dev/null
  echo "built localhost/opname-$target:$version"
done
# The build stage's intermediate images (about 1 GB each) are not needed once tagged.
buildah rmi --prune >/dev/null 2>&1 || true
