"""`cds-service serve` as the Helm chart runs it: every filesystem read-only (the image's root filesystem,
/tmp included) except a tmpfs at CDS_DATA_DIR and the runtime's /dev/shm, PostgreSQL as the database,
auth required, the SMART app on with matplotlib's font list prebuilt in a read-only MPLCONFIGDIR as the
image has it. A hook call is answered and ledgered, and nothing in the log says a write failed or that
matplotlib had to make a temporary directory (and rebuild its font list there).

The read-only view is a private mount namespace (`unshare`), so nothing outside this test is affected."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from benchmarks.auth import make_client
from benchmarks.servers import free_port, request
from tests.deploy.test_matplotlib_cache import build_font_list
from tests.support.fixtures import hook_request

SERVE_READ_ONLY = r"""
set -eu
for mount_point in $(awk '{print $2}' /proc/self/mounts | sort -u); do
  case "$mount_point" in /proc*|/sys*|/dev|/dev/shm|/dev/pts*|/dev/mqueue*) continue ;; esac
  mount -o remount,bind,ro "$mount_point" 2>/dev/null || true
done
if touch /cds-rofs-probe 2>/dev/null || touch /tmp/cds-rofs-probe 2>/dev/null; then
  echo "root filesystem or /tmp still writable" >&2
  exit 97
fi
mount -t tmpfs -o size=64m,mode=0700 tmpfs "$CDS_DATA_DIR"
exec "$SERVE_BINARY" serve
"""
WRITE_FAILURES = ("Read-only file system", "Errno 30", "Permission denied", "Control server error")
MATPLOTLIB_FALLBACK = ("Matplotlib created a temporary cache directory", "is not a writable directory")


def test_serve_needs_no_writable_path_but_the_data_dir(tmp_path: Path, postgres_url: str) -> None:
    unshare = shutil.which("unshare")
    assert unshare, "util-linux unshare is needed for this test"
    port = free_port()
    client = make_client(tmp_path / "issuer", f"http://127.0.0.1:{port}")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    migrate_env = {**os.environ, "CDS_DATABASE_URL": postgres_url, "CDS_DATA_DIR": str(data_dir)}
    subprocess.run([_cds_service(), "db", "upgrade"], env=migrate_env, check=True, capture_output=True)
    prebuilt = tmp_path / "image-matplotlib"  # read-only once the namespace remounts everything
    build_font_list(prebuilt)
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("CDS_")},
        **client.environ(port=port),
        "CDS_DATABASE_URL": postgres_url,
        "CDS_DATA_DIR": str(data_dir),
        "CDS_DB_AUTO_MIGRATE": "false",
        "CDS_PATIENT_KEY_SECRET": "k" * 40,
        "CDS_LOG_LEVEL": "INFO",
        "SERVE_BINARY": _cds_service(),
        "PYTHONDONTWRITEBYTECODE": "1",
        "CDS_SMART_CLIENT_ID": "osteo-app",  # the SMART app loads matplotlib in every worker
        "CDS_SMART_SESSION_SECRET": "s" * 40,
        "MPLCONFIGDIR": str(prebuilt),
    }
    log_file = tmp_path / "serve.log"
    user_namespace = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    with log_file.open("wb") as log:
        server = subprocess.Popen(
            [unshare, *user_namespace, "--mount", "--propagation", "private", "bash", "-c", SERVE_READ_ONLY],
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            _wait_ready(server, port, log_file)
            body = json.dumps(hook_request("s01", with_prefetch=True)).encode()
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {client.token()}"}
            status, answer = request("POST", port, "/cds-services/osteoporosis-escalation", body, headers)
            assert status == 200, answer[:300]
            assert json.loads(answer)["cards"]
            metrics_status, _ = request("GET", port, "/admin/metrics")
            assert metrics_status == 404  # no admin token configured: the endpoint is off
            stylesheet_status, _ = request("GET", port, "/smart/app.css")
            assert stylesheet_status == 200  # the SMART app's routes are on
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    log_text = log_file.read_text(encoding="utf-8", errors="replace")
    assert server.returncode == 0, log_text[-2000:]
    failures = (*WRITE_FAILURES, *MATPLOTLIB_FALLBACK)
    assert not [line for line in log_text.splitlines() if any(word in line for word in failures)]
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM card_ledger")).scalar_one() >= 1
    finally:
        engine.dispose()


def _cds_service() -> str:
    return str(Path(sys.executable).parent / "cds-service")


def _wait_ready(server: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, log_file.read_text(encoding="utf-8", errors="replace")[-2000:]
        try:
            status, _ = request("GET", port, "/readyz", timeout=1.0)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("not ready within 60 s: " + log_file.read_text(encoding="utf-8")[-2000:])
