#!/usr/bin/env bash
# Install the appliance into .venv in this checkout.
#
#   ./install.sh                    runtime only
#   ./install.sh --dev              plus the test tools
#   ./install.sh --wheelhouse DIR   no package index: every wheel comes from DIR
#
# Safe to re-run: an unchanged checkout with a complete .venv returns at once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"
dev=0
wheelhouse=""

while [ $# -gt 0 ]; do
    case "$1" in
        --dev) dev=1 ;;
        --wheelhouse) wheelhouse="${2:?--wheelhouse needs a folder}"; shift ;;
        --wheelhouse=*) wheelhouse="${1#*=}" ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating $venv"
    "$python" -m venv "$venv"
fi

# A stamp of what was installed lets a re-run skip pip entirely.
extras=""
[ "$dev" = 1 ] && extras="[dev]"
stamp="$venv/.appliance-install"
digest="$(sha256sum < "$here/pyproject.toml" | cut -c1-16)"
want="$digest extras=$extras"
have="$(cat "$stamp" 2>/dev/null || true)"
# A dev install also satisfies a plain one.
if { [ "$have" = "$want" ] || [ "$have" = "$digest extras=[dev]" ]; } \
    && "$venv/bin/python" -c "import appliance" 2>/dev/null; then
    echo "==> .venv is up to date ($have)"
    exit 0
fi

pip_args=(--disable-pip-version-check)
if [ -n "$wheelhouse" ]; then
    pip_args+=(--no-index --find-links "$(cd "$wheelhouse" && pwd)")
fi

echo "==> installing the appliance$extras"
"$venv/bin/python" -m pip install "${pip_args[@]}" --upgrade pip setuptools wheel >/dev/null 2>&1 || true
"$venv/bin/python" -m pip install "${pip_args[@]}" -e "$here$extras"
echo "$want" > "$stamp"
echo "==> done: $venv/bin/appliance"
