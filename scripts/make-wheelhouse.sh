#!/usr/bin/env bash
# On a machine that can reach a package index, collect every wheel the appliance
# needs into one folder; carry it to the air-gapped workstation and run
#   ./install.sh --wheelhouse DIR
#
#   scripts/make-wheelhouse.sh [DIR] [--dev]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/wheelhouse}"
target="$here"
[ "${2:-}" = "--dev" ] && target="$here[dev]"
mkdir -p "$out"
python3 -m pip download --dest "$out" "$target" pip setuptools wheel
# The appliance itself is installed from the checkout, not from the wheelhouse.
rm -f "$out"/appliance-*.whl "$out"/appliance-*.tar.gz "$out"/appliance-*.zip
echo "wheelhouse ready: $out ($(ls "$out" | wc -l) files)"
