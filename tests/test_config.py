from pathlib import Path

import pytest
from click.testing import CliRunner

from dicomd import config
from dicomd.cli import main
from dicomd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_loads():
    cfg = config.load(ROOT / "config.example.toml")
    assert cfg.receivers[0].ae_title == "DICOMD" and cfg.receivers[0].port == 11112
    assert cfg.projects["demo"].auto_archive == 0
    assert cfg.data_dir == (ROOT / "dicomd-data").resolve()


def test_example_documents_every_key():
    text = (ROOT / "config.example.toml").read_text()
    for key, help_text in config.describe():
        leaf = key.rsplit(".", 1)[-1]
        if leaf in ("routing",):
            continue
        assert help_text, key
        if key.startswith("drop_folders"):
            continue  # documented in the README's drop-folder section
        assert f"{leaf} =" in text or f"{leaf}=" in text, f"{key} is not documented in config.example.toml"


@pytest.mark.parametrize(
    "text,needle",
    [
        ("bogus = 1", "bogus: unknown key"),
        ("session_idle_seconds = 'x'", "session_idle_seconds: expected a number"),
        ("[[receivers]]\nport = 70000", "receivers[0].port: must be at most 65535"),
        ("[[receivers]]\nallowed = ['A@not-an-ip']", "receivers[0].allowed"),
        ("[routing]\nproject = ['(0008,1030']", "routing.project"),
        ("[projects.p]\nauto_archive = 3", "projects.p.auto_archive"),
        ("[projects.p]\noverwrite = 'sometimes'", "projects.p.overwrite"),
        ("[projects.p.anonymize]\noptions = ['retain_everything']", "unknown option"),
        ("[[receivers]]\nproject = 'nosuch'", "receivers[0].project"),
        ("[http]\nprot = 1", "http.prot: unknown key"),
        ("[[receivers]]\nengine = 'twisted'", "receivers[0].engine: must be one of asyncio, pynetdicom"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_overrides(tmp_path):
    cfg = config.load(ROOT / "config.example.toml", {"data_dir": tmp_path, "dicom_port": 4242, "http_port": 0,
                                                      "session_idle_seconds": 1})
    assert cfg.data_dir == tmp_path.resolve() and cfg.receivers[0].port == 4242
    assert cfg.http.port == 0 and cfg.session_idle_seconds == 1


def test_serve_refuses_bad_config_with_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("nonsense = true\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code == 1
    assert "nonsense: unknown key" in result.output and "Traceback" not in result.output
