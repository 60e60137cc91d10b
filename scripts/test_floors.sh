#!/usr/bin/env bash
# The declared dependency floors hold: a venv with the lowest versions pyproject.toml allows for the
# libraries the gateway leans on hardest (BLE: bleak, bleak-retry-connector, dbus-fast; the async
# tests: pytest-asyncio; MQTT: paho-mqtt, aiomqtt; pydantic), the rest as resolved, then the unit
# tests and the BLE/MQTT integration tests of gateway/. Not in CI (about 5 minutes with the install);
# run it when a floor moves:   ./scripts/test_floors.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${FLOORS_VENV:-.venv-floors}
pins=$("$PY" - <<'PYEOF'
import re, tomllib
d = tomllib.load(open("pyproject.toml", "rb"))
deps = d["project"]["dependencies"] + d["project"]["optional-dependencies"]["test"]
watch = {"bleak", "bleak-retry-connector", "dbus-fast", "pytest-asyncio", "paho-mqtt", "aiomqtt", "pydantic"}
for dep in deps:
    m = re.match(r"([A-Za-z0-9_.\-]+)>=([0-9][^,]*)", dep)
    if m and m.group(1).lower() in watch:
        print(f"{m.group(1)}=={m.group(2)}.*")
PYEOF
)
echo "floors: $(echo $pins | tr '\n' ' ')"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]' $pins
"$VENV/bin/python" -m pip list 2>/dev/null | grep -iE "^(bleak|bleak-retry-connector|dbus-fast|pytest-asyncio|paho-mqtt|aiomqtt|pydantic) "
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/unit tests/integration/gateway "$@"
