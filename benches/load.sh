#!/usr/bin/env bash
# Whole-proxy load benchmark: strangler vs nginx (and haproxy) in front of
# the same backend, the method of ../shared/PERFORMANCE.md. Never run by CI.
#
#   benches/load.sh [ROUNDS] [SECONDS]
#   STRANGLER_BASELINE=path/to/other/strangler benches/load.sh   (an A/B of two builds in one run)
#
# Installs wrk, nginx and haproxy from Debian if missing, builds strangler
# in release, then prints CPU microseconds per request and fixed-rate
# latency as ratios to nginx measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet
# The fixed-rate latency client (bench profile).
cargo bench --bench fixed_rate --no-run --quiet 2>/dev/null || cargo bench --bench fixed_rate --no-run
cargo bench --bench floor_proxy --no-run --quiet 2>/dev/null || cargo bench --bench floor_proxy --no-run
FIXED_RATE=$(ls -t target/release/deps/fixed_rate-* | grep -v '\.d$' | head -1)
FLOOR=$(ls -t target/release/deps/floor_proxy-* | grep -v '\.d$' | head -1)

exec python3 benches/load.py "$FIXED_RATE" "${1:-3}" "${2:-10}" "$FLOOR"
