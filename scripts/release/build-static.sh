#!/usr/bin/env bash
# Builds a statically linked release binary (glibc linked in, `-C target-feature=+crt-static`),
# so it runs on a cluster whose glibc is older than the build machine's, then proves it needs
# nothing from the machine: it runs in an empty root (chroot) holding only the binary, a
# local inventory and /etc/hosts, and indexes and backs up that inventory there.
#
#   scripts/release/build-static.sh [OUT]     # default OUT: target/static/s3invbackup
#
# Needs root for the chroot. Name resolution in a static glibc binary still reads
# /etc/hosts and DNS (files and dns are built in); NSS modules such as LDAP or sss are not
# available to it, which a backup job does not need.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/static/s3invbackup}
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" >&2
mkdir -p "$(dirname "$out")"
cp "target/$target/release/s3invbackup" "$out"
if ldd "$out" 2>&1 | grep -q 'not a dynamic executable\|statically linked'; then
  echo "static: $(file -b "$out" | cut -d, -f1-2)" >&2
else
  echo "error: $out is dynamically linked:" >&2; ldd "$out" >&2; exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/inv"
cp "$out" "$root/bin/s3invbackup"
echo "127.0.0.1 localhost" > "$root/etc/hosts"
# A small inventory written by the crate's own generator (the one the benchmarks use).
cargo run --release --locked --quiet --example synth_inventory -- "$root/inv" 20000 2 shuffle >&2
chroot "$root" /bin/s3invbackup --version
date=$(chroot "$root" /bin/s3invbackup dates /inv | awk 'NR == 1 {print $1}')
chroot "$root" /bin/s3invbackup index /inv --date "$date" -o /tmp/index.s3inv --tmp-dir /tmp --memory 1MiB
chroot "$root" /bin/s3invbackup dump /tmp/index.s3inv | head -3
echo "ok: $out runs in an empty root (version, dates, an index built by external sort, dump)" >&2
