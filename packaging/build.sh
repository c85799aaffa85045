#!/usr/bin/env bash
# Builds the release binary once and packages it as a .deb and an .rpm in target/packages/.
# Prints the paths of the two packages on stdout (progress goes to stderr).
set -euo pipefail
cd "$(dirname "$0")/.."

# The packaging tools, pinned by their own lock files; installed once into ~/.cargo/bin.
for tool in deb generate-rpm; do
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        echo "packaging/build.sh: installing cargo-$tool" >&2
        cargo install --locked "cargo-$tool" >&2
    fi
done

# Honours CARGO_TARGET_DIR and .cargo/config; both tools map target/release/ the same way.
target_dir=$(cargo metadata --no-deps --format-version 1 | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
out="$target_dir/packages"

cargo build --release --locked >&2
# cargo-deb strips its own copy; cargo-generate-rpm packages the file as it is.
strip "$target_dir/release/nginx-ha"

rm -rf "$out"
mkdir -p "$out"
cargo deb --no-build --no-strip --output "$out/" >&2
cargo generate-rpm --output "$out/" >&2

ls -1 "$out"/*.deb "$out"/*.rpm
