"""The node's HTTP API on a running node process: the codec over HTTP (same bytes as the CLI),
errors as JSON, size limits, bearer tokens off loopback, metrics, and the status page in a real
headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
from node_helpers import free_port, make_nodes, qres, signal_file, start_node, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _get(url: str, data: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    folder = tmp_path_factory.mktemp("http")
    hardware = '[hardware]\nuse = "cortex-a55"\nram_bytes = 4294967296\n'
    (spec,) = make_nodes(folder, 1, extra=hardware, segment_samples=3000)
    data = signal_file(folder / "s.bin", n=200_000)
    port = free_port()
    proc = start_node(
        spec,
        "--source",
        str(data),
        "--speed",
        "50",
        "--time-scale",
        "1500",
        "--http",
        f"127.0.0.1:{port}",
    )
    base = f"http://127.0.0.1:{port}"

    def up():
        try:
            return _get(base + "/v1/status")[0] == 200
        except OSError:
            return False

    try:
        wait_for(up, timeout=90)
        yield {"base": base, "spec": spec, "data": data, "folder": folder}
    finally:
        proc.terminate()
        proc.wait(20)


def test_compress_over_http_matches_the_cli(node):
    raw = np.fromfile(node["data"], dtype="<i2")[:20_000].tobytes()
    status, body, headers = _get(node["base"] + "/v1/compress?dtype=int16", raw)
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    path = node["folder"] / "cli.bin"
    path.write_bytes(raw)
    subprocess.run(
        qres("compress", str(path), "--profile", str(node["spec"]["profile"]), "--dtype", "int16"),
        check=True,
        capture_output=True,
    )
    assert body == (node["folder"] / "cli.bin.qres").read_bytes()
    status, restored, _ = _get(node["base"] + "/v1/decompress", body)
    assert status == 200 and restored == raw


def test_errors_are_json_with_status_codes(node):
    status, body, _ = _get(node["base"] + "/v1/compress?dtype=int16", b"\x01\x02\x03")
    assert status == 400 and json.loads(body)["exit_code"] == 1
    assert "whole number" in json.loads(body)["error"]
    status, body, _ = _get(node["base"] + "/v1/compress?dtype=nope", b"\x00\x00")
    assert status == 400 and "nope" in json.loads(body)["error"]
    status, body, _ = _get(node["base"] + "/v1/decompress", b"QRES" + bytes(60))
    answer = json.loads(body)
    assert status in (400, 422) and answer["exit_code"] in (1, 5)
    port = int(node["base"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/compress HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 413")


def test_status_and_metrics(node):
    def rounds_done():
        st = json.loads(_get(node["base"] + "/v1/status")[1])
        return st if st["round"] is not None and st["segments"] >= 1 else None

    st = wait_for(rounds_done, timeout=90, step=0.2)
    assert st["running"] and st["did"] == node["spec"]["id"].did and st["ratio"] > 1
    status, text, headers = _get(node["base"] + "/metrics")
    text = text.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    for name in (
        "qres_samples_in_total",
        "qres_compression_ratio",
        "qres_rounds_total",
        "qres_updates_rejected_total",
        "qres_peer_reputation_bucket",
        'qres_regime{regime="calm"}',
        "qres_peers",
        "qres_energy_pool_joules",
        "qres_energy_spent_joules_total",
        "qres_radio_on_seconds_total",
        'qres_checks_total{outcome="failed"}',
        'qres_check_bytes_total{direction="received"}',
    ):
        assert name in text
    assert set(st["checks"]) >= {"asked", "done", "failed", "unanswered", "late", "bytes_sent"}
    assert set(st["transport_bytes"]) == {"sent", "received", "wire_sent", "wire_received"}
    # energy through the hardware plugin, as the simulator counts it: every closed round of
    # simulated time is paid (sleep power at least), and the pool is what is left
    energy = st["energy"]
    assert energy["hardware"] == "cortex-a55" and energy["elapsed_s"] >= 600
    assert energy["spent_j"] > 0 and 0 <= energy["level"] <= 1 and energy["wakes"] >= 1


def test_off_loopback_needs_a_token(tmp_path):
    (spec,) = make_nodes(tmp_path, 1)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "QRES_NODE_TOKEN"}
    out = subprocess.run(
        qres("node", "run", "--profile", str(spec["profile"]), "--http", f"0.0.0.0:{port}"),
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert out.returncode == 1 and "QRES_NODE_TOKEN" in out.stderr
    assert "Traceback" not in out.stderr
    proc = start_node(
        spec,
        "--http",
        f"0.0.0.0:{port}",
        "--source",
        str(signal_file(tmp_path / "s.bin")),
        env={**env, "QRES_NODE_TOKEN": "t0ken-for-tests"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _try(url + "/v1/status"), timeout=90)
        raw = np.arange(512, dtype="<i2").tobytes()
        assert _get(url + "/v1/compress?dtype=int16", raw)[0] == 401
        auth = {"Authorization": "Bearer t0ken-for-tests"}
        assert _get(url + "/v1/compress?dtype=int16", raw, auth)[0] == 200
        assert _get(url + "/v1/status")[0] == 200  # reads stay open
    finally:
        proc.terminate()
        proc.wait(20)


def _try(url):
    try:
        return _get(url)[0] == 200
    except OSError:
        return False


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_status_page_in_headless_chromium(node):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page()
            page.goto(node["base"] + "/", timeout=90000)
            page.wait_for_function(
                "document.getElementById('did').textContent.startsWith('did:qres:')", timeout=120000
            )
            # live: the round advances and the error chart gains points while we watch
            first = int(page.text_content("#round"))
            page.wait_for_function(
                f"Number(document.getElementById('round').textContent) > {first}", timeout=120000
            )
            page.wait_for_function(
                "Number(document.getElementById('line').dataset.count || 0) >= 2", timeout=120000
            )
            assert page.text_content("#did") == node["spec"]["id"].did
            assert float(page.text_content("#ratio")) > 1
            assert page.text_content("#regime") in ("calm", "prestorm", "storm")
            assert page.text_content("#state").startswith("live")
        finally:
            browser.close()
