#!/usr/bin/env bash
# Build the patched engine sources that the workspace's `[patch.crates-io]` points at.
#
# conftag commits no third-party source. For each crate named in engine-patches/SOURCES this
# takes the release Cargo downloads from crates.io, checks its SHA-256 against the one pinned
# there (copied from the unpatched Cargo.lock, which Cargo itself verified), applies our patch
# files from engine-patches/<crate>/ in order, and writes the result to .patched-crates/<crate>
# (git-ignored). Why each patch exists: docs/engine-patches.md.
#
#   engine-patches/apply.sh          # idempotent; fast when nothing changed
#   engine-patches/apply.sh --check  # exit 1 if .patched-crates is missing or stale
#
# Env: CARGO_HOME (where Cargo keeps its download cache, default ~/.cargo).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
here="$root/engine-patches"
out="$root/.patched-crates"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"

fail() { echo "engine-patches: $*" >&2; exit 1; }

# What the result depends on: the pinned sources, every patch file and this script.
stamp="$(cd "$here" && find . -type f \( -name '*.patch' -o -name SOURCES -o -name apply.sh \) \
  | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-64)"
current() {
  [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] || return 1
  while read -r name _ _; do
    [ -f "$out/$name/Cargo.toml" ] || return 1
  done < <(grep -v '^#' "$here/SOURCES" | grep .)
}
if [ "${1:-}" = "--check" ]; then
  current || fail ".patched-crates is missing or stale: run engine-patches/apply.sh"
  exit 0
fi
if current; then
  echo "engine-patches: .patched-crates is up to date"
  exit 0
fi

# The .crate file as Cargo downloaded it. A Cargo.lock with the patch applied no longer lists
# the published release, so on a fresh machine Cargo has not downloaded it: ask Cargo for it
# through a throwaway package that depends on exactly that version.
crate_file() {
  local name="$1" version="$2" found
  found="$(ls "$cargo_home"/registry/cache/*/"$name-$version.crate" 2>/dev/null | head -n1 || true)"
  if [ -z "$found" ]; then
    local tmp
    tmp="$(mktemp -d)"
    mkdir -p "$tmp/src"
    : >"$tmp/src/lib.rs"
    printf '[package]\nname = "conftag-engine-fetch"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n%s = "=%s"\n' \
      "$name" "$version" >"$tmp/Cargo.toml"
    # Start from the workspace's lock so the rest of the graph resolves to what is cached.
    cp "$root/Cargo.lock" "$tmp/Cargo.lock"
    (cd "$tmp" && CARGO_TARGET_DIR="$tmp/target" cargo fetch --quiet) >&2 \
      || fail "cargo could not download $name $version"
    rm -rf "$tmp"
    found="$(ls "$cargo_home"/registry/cache/*/"$name-$version.crate" 2>/dev/null | head -n1 || true)"
  fi
  [ -n "$found" ] || fail "$name $version: no .crate file under $cargo_home/registry/cache"
  echo "$found"
}

mkdir -p "$out"
rm -f "$out/.stamp"
while read -r name version sum; do
  file="$(crate_file "$name" "$version")"
  got="$(sha256sum "$file" | cut -c1-64)"
  [ "$got" = "$sum" ] || fail "$file: SHA-256 $got, engine-patches/SOURCES pins $sum"
  # Where the lock still lists the published release (a tree without the patch section),
  # it must name the same file.
  locked="$(awk -v n="$name" -v v="$version" '
    $0 == "name = \"" n "\"" { hit = 1; next }
    hit && $0 == "version = \"" v "\"" { ver = 1; next }
    hit && ver && /^checksum = / { gsub(/"/, "", $3); print $3; exit }
    /^\[\[package\]\]/ { hit = 0; ver = 0 }' "$root/Cargo.lock")"
  [ -z "$locked" ] || [ "$locked" = "$sum" ] \
    || fail "Cargo.lock pins $name $version at $locked, engine-patches/SOURCES at $sum"
  work="$(mktemp -d "$out/.work.XXXXXX")"
  tar -xzf "$file" -C "$work"
  src="$work/$name-$version"
  for p in "$here/$name"/*.patch; do
    [ -e "$p" ] || continue
    patch -p1 --quiet --forward --no-backup-if-mismatch -r - -d "$src" <"$p" \
      || fail "$(basename "$p") does not apply to $name $version"
  done
  rm -rf "${out:?}/$name"
  mv "$src" "$out/$name"
  rm -rf "$work"
  echo "engine-patches: $name $version + $(ls "$here/$name"/*.patch 2>/dev/null | wc -l) patches -> .patched-crates/$name"
done < <(grep -v '^#' "$here/SOURCES" | grep .)
echo "$stamp" >"$out/.stamp"
