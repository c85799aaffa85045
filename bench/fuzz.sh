#!/bin/sh
# usage: bench/fuzz.sh [--target vrrp_packet|drain_message] [--runs N] [--corpus DIR] [--seed S] [-- LIBFUZZER_ARGS...]
#   Needs a nightly toolchain and cargo-fuzz (fuzz/README.md). No root. One core; about
#   12 minutes for the default 10,000,000 executions (plus the first fuzz build).
#
# Runs a fuzz target (default `vrrp_packet`; `drain_message`: the drain port's decoder and core;
# see BENCHMARKS.md, "Fuzzing the VRRP packet parser")
# for N executions (libFuzzer `-runs`, default 10000000) and prints the executions, exec/s,
# wall time, crashes and the corpus size. The corpus starts empty in a temp dir (removed at
# the end) unless --corpus DIR is given (then it is kept and grows across runs). A crash stops
# libFuzzer: its input is in fuzz/artifacts/vrrp_packet/ and the script exits non-zero.
set -eu
cd "$(dirname "$0")/.."

runs=10000000
target=vrrp_packet
corpus=""
seed=""
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --corpus) corpus=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [--target NAME] [--runs N] [--corpus DIR] [--seed S] [-- LIBFUZZER_ARGS...]" >&2; exit 2 ;;
    esac
done

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "bench/fuzz.sh: needs a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "bench/fuzz.sh: needs cargo-fuzz (cargo install cargo-fuzz --locked)" >&2; exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nginx-ha-bench-fuzz-XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
if [ -z "$corpus" ]; then corpus=$tmp/corpus; fi
mkdir -p "$corpus" "fuzz/artifacts/$target"
artifacts=fuzz/artifacts/$target
count_artifacts() { find "$artifacts" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l; }
before=$(count_artifacts)

# Build first, so that the wall time below is the fuzzing alone.
cargo +nightly fuzz build "$target"

set -- -runs="$runs" -print_final_stats=1 "$@"
if [ -n "$seed" ]; then set -- -seed="$seed" "$@"; fi
log=$tmp/log
start=$(date +%s.%N)
status=0
cargo +nightly fuzz run "$target" "$corpus" -- "$@" >"$log" 2>&1 || status=$?
end=$(date +%s.%N)

crashes=$(( $(count_artifacts) - before ))
stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
execs=$(stat number_of_executed_units)
eps=$(stat average_exec_per_sec)
rss=$(stat peak_rss_mb)
libfuzzer_seed=$(sed -n 's/^INFO: Seed: *//p' "$log" | head -1)
files=$(find "$corpus" -type f | wc -l)
bytes=$(find "$corpus" -type f -exec cat {} + | wc -c)
last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)

if [ "$status" -ne 0 ]; then tail -n 40 "$log"; else grep -E '^(Done|stat::)' "$log" || true; fi
echo
echo "fuzz target:     $target (cargo +nightly fuzz run, default flags: ASan, release + debug assertions)"
echo "libFuzzer seed:  ${libfuzzer_seed:-?}"
echo "executions:      ${execs:-?} (asked for $runs)"
echo "exec/s:          ${eps:-?} (libFuzzer average); $(awk -v n="${execs:-0}" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", n / (e - s) }') over the wall time"
echo "wall time:       $(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f s", e - s }')"
echo "peak RSS:        ${rss:-?} MB"
echo "crashes:         $crashes$( [ "$crashes" -gt 0 ] && echo " (in $artifacts/)" )"
echo "corpus:          $files files, $bytes bytes ($corpus)"
echo "last status:     ${last:-?}"
echo "libFuzzer exit:  $status"
if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then exit 1; fi
