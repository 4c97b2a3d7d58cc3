import json

from click.testing import CliRunner

from dicomd.cli import main
from tests.conftest import write_config


def test_mapping_add_list_remove(tmp_path):
    config = str(write_config(tmp_path))
    run = CliRunner().invoke
    out = run(main, ["mapping", "add", "scanner", "(0008,1090)", "--project", "demo", "--config", config, "--json"])
    assert out.exit_code == 0, out.output
    created = json.loads(out.output)
    assert created["dicomTag"] == "0x00081090" and created["scopeObjectId"] == "demo"
    listed = json.loads(run(main, ["mapping", "list", "--config", config, "--json"]).output)
    assert [m["fieldName"] for m in listed] == ["scanner"]
    bad = run(main, ["mapping", "add", "x", "nonsense-tag", "--config", config])
    assert bad.exit_code == 1 and "dicomTag" in bad.output
    assert run(main, ["mapping", "remove", str(created["id"]), "--config", config]).exit_code == 0
    assert json.loads(run(main, ["mapping", "list", "--config", config, "--json"]).output) == []


def test_mappings_from_config(tmp_path):
    from dicomd.config import load
    from dicomd.stores import Stores
    from dicomd.mappings import MappingStore

    path = write_config(tmp_path, '\n[[mappings]]\nname = "scanner"\ntag = "ManufacturerModelName"\nproject = "demo"\n')
    stores = Stores.open(load(path))
    try:
        [m] = MappingStore(stores.catalog).list("demo")
        assert (m.field_name, m.dicom_tag) == ("scanner", "0x00081090")
    finally:
        stores.close()


def test_bad_mapping_in_config_names_the_key(tmp_path):
    import pytest

    from dicomd.config import load
    from dicomd.errors import ConfigError

    path = write_config(tmp_path, '\n[[mappings]]\nname = "x"\ntag = "zz"\n')
    with pytest.raises(ConfigError, match=r"mappings\[0\]"):
        load(path)
