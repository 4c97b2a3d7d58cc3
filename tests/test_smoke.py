import pytest

from dicomd.catalog import PREARCHIVE
from dicomd.testing.generator import generate_study
from tests.conftest import send, wait_for


@pytest.mark.both_backends
def test_one_study_arrives(daemon, backend):
    study = generate_study(1, series=2, instances_per_series=3, study_description="DEMO")
    assert send(daemon.dicom_port(), study) == [0] * 6
    cat = daemon.stores.catalog
    assert cat.dialect == backend
    rows = wait_for(lambda: [r for r in cat.sessions(PREARCHIVE) if r.status == "READY"])
    assert rows[0].instances == 6 and rows[0].scans == 2 and rows[0].project == "demo"
