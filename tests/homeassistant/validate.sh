#!/usr/bin/env bash
# Validates lookout's Home Assistant discovery against a REAL Home Assistant (see
# docs/homeassistant.md). Not part of `cargo test`: Home Assistant and its Python environment are
# large (~700 MB) and take minutes to install.
#
#   tests/homeassistant/validate.sh [OUT_DIR [--screenshot] [--watch-s S] [--off-s S]]
#
# Needs: mosquitto, Python 3.11 (HA 2024.3 supports 3.11/3.12), a debug build of lookout
# ($CARGO_TARGET_DIR/debug/lookout or target/debug/lookout). The venv goes to $HA_VENV
# (default /tmp/lookout-ha-venv) and is reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:-$repo/target/homeassistant}"
venv="${HA_VENV:-/tmp/lookout-ha-venv}"
python="${HA_PYTHON:-$(command -v python3.11 || echo /root/.pyenv/versions/3.11.7/bin/python3.11)}"
ha_version=2024.3.3
lookout="${LOOKOUT_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/lookout}"
[ -x "$lookout" ] || { echo "no lookout binary at $lookout (cargo build first)" >&2; exit 2; }
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || { echo "mosquitto is not installed (apt-get install mosquitto)" >&2; exit 2; }

if ! "$venv/bin/python" -c "import homeassistant, paho.mqtt, PIL, janus, securetar, sqlalchemy, hass_frontend" 2>/dev/null; then
  "$python" -m venv "$venv"
  # The driver starts HA with --skip-pip, so the integrations it loads (mqtt, onboarding and their
  # dependencies) get their requirements here. HA pins its dependency tree in package_constraints.txt; without it pip backtracks for ages.
  tmp="$(mktemp -d)"
  "$venv/bin/pip" download -q --no-deps -d "$tmp" "homeassistant==$ha_version"
  (cd "$tmp" && unzip -q -o ./*.whl homeassistant/package_constraints.txt)
  "$venv/bin/pip" install -q -c "$tmp/homeassistant/package_constraints.txt" \
    "homeassistant==$ha_version" paho-mqtt==1.6.1 Pillow==10.2.0 \
    janus==1.0.0 psutil-home-assistant==0.0.1 securetar==2024.2.1 SQLAlchemy==2.0.27 \
    fnv-hash-fast==0.5.0 home-assistant-frontend==20240307.0 numpy==1.26.0 PyTurboJPEG==1.7.1 \
    'josepy<2'  # hass-nabucasa 0.78 needs josepy's ComparableX509, gone in josepy 2
  rm -rf "$tmp"
fi
mkdir -p "$out"
exec "$venv/bin/python" "$here/ha_driver.py" --lookout "$lookout" --repo "$repo" --out "$out" "${@:2}"
