"""`dicomd serve` on a port that is taken: one line naming the port, exit 1, nothing left running."""

from __future__ import annotations

import socket
from pathlib import Path

from click.testing import CliRunner

from dicomd.cli import main


def taken_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def test_taken_dicom_port_is_one_clear_line(tmp_path: Path) -> None:
    with taken_port() as sock:
        port = sock.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", "--data-dir", str(tmp_path / "data"),
                                           "--dicom-port", str(port), "--http-port", "0"])
    assert result.exit_code == 1, result.output
    assert f"cannot listen on 0.0.0.0:{port}" in result.output
    assert "Traceback" not in result.output


def test_taken_http_port_stops_the_receivers_it_started(tmp_path: Path) -> None:
    dicom_port = free_port()
    with taken_port() as sock:
        http_port = sock.getsockname()[1]
        config = tmp_path / "dicomd.toml"
        config.write_text(f'[http]\nenabled = true\nhost = "127.0.0.1"\nport = {http_port}\n')
        result = CliRunner().invoke(main, ["serve", "--config", str(config), "--data-dir", str(tmp_path / "data"),
                                           "--dicom-port", str(dicom_port)])
    assert result.exit_code == 1, result.output
    assert f"HTTP API cannot listen on 127.0.0.1:{http_port}" in result.output
    assert "Traceback" not in result.output
    assert can_bind(dicom_port), "the DICOM receiver started before the HTTP failure is still listening"
