"""The benchmark harness itself: tiny real runs against the bare pynetdicom baseline."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.ingest import Measurement, run_ingest, summarize
from bench.memory import measure_memory
from bench.procs import RssSampler, cpu_seconds
from bench.report import render, write_json
from bench.senders import make_sender, split
from bench.tools import dcmtk_tool
from dicomd.testing.generator import generate_study, large_multiframe, write_study

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _importable_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    # the receivers and senders run as `python -m bench.*` subprocesses
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def _m(receiver: str, run: int, elapsed: float, received: int = 10) -> Measurement:
    return Measurement(receiver, "MR", 1, run, 10, 1_000_000, elapsed, received, 0, "")


def test_summary_takes_medians_and_pairs_ratios_by_run() -> None:
    measurements = [
        _m("bare-pynetdicom", 0, 1.0), _m("bare-pynetdicom", 1, 2.0), _m("bare-pynetdicom", 2, 1.0),
        _m("dicomd", 0, 2.0), _m("dicomd", 1, 2.0), _m("dicomd", 2, 0.5),
        _m("dicomd-broken", 0, 1.0, received=9),
    ]
    rows = {r.receiver: r for r in summarize(measurements)}
    assert rows["bare-pynetdicom"].instances_per_s == 10.0
    assert rows["dicomd"].instances_per_s == 5.0
    # per-run ratios 0.5, 1.0, 2.0 -> median 1.0
    assert rows["dicomd"].ratio_vs_bare == 1.0
    assert rows["dicomd-broken"].runs == 0 and "stored 9 of 10" in rows["dicomd-broken"].note
    assert rows["dicomd-broken"].instances_per_s is None


def test_split_deals_files_round_robin() -> None:
    files = [Path(str(i)) for i in range(5)]
    assert split(files, 2) == [[Path("0"), Path("2"), Path("4")], [Path("1"), Path("3")]]
    assert split(files[:1], 4) == [[Path("0")]]


@pytest.mark.parametrize("sender", ["raw", "pynetdicom", "dcmtk"])
def test_tiny_ingest_run_against_the_bare_baseline(tmp_path: Path, sender: str) -> None:
    if sender == "dcmtk" and dcmtk_tool("storescu") is None:
        pytest.skip("dcmtk is not installed")
    # Given two tiny studies (one per association count) and the bare pynetdicom receiver
    sets = {("MR", a, 0): write_study(generate_study(a, series=1, instances_per_series=4),
                                      tmp_path / f"data{a}") for a in (1, 2)}
    # When the harness sends them
    raw = run_ingest(sets, ["bare-pynetdicom"], make_sender(sender),
                     tmp_path / "work", 1048576, lambda _: None)
    # Then every instance was stored and timed
    assert [m.received for m in raw] == [4, 4] and all(m.valid for m in raw)
    rows = summarize(raw)
    assert [r.ratio_vs_bare for r in rows] == [1.0, 1.0]


def test_rss_sampler_sees_a_child_allocate(tmp_path: Path) -> None:
    code = "import sys; b = bytearray(60_000_000); b[::4096] = b'x' * len(b[::4096]); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        with RssSampler(proc.pid, interval=0.01) as sampler:
            proc.stdin.write(b"")  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=30)
    finally:
        proc.kill()
    assert sampler.result().process_hwm_bytes >= 60_000_000


def test_memory_row_for_a_multiframe_instance(tmp_path: Path) -> None:
    big = large_multiframe(tmp_path / "big.dcm", 4_000_000, rows=256, cols=256).path
    row = measure_memory("bare-pynetdicom-chunked", big, make_sender("raw"), tmp_path / "work",
                         1048576, keep=False)
    assert row.stored, row.note
    assert row.object_bytes >= 4_000_000 and row.peak_rss and row.peak_hwm


def test_report_marks_unmeasured_sections(tmp_path: Path) -> None:
    meta = {"date": "d", "cpus": 2, "commit": "c", "sender": "s", "runs": 1, "pdu": 1}
    text = render(meta, summarize([_m("bare-pynetdicom", 0, 1.0)]), [])
    assert "bare-pynetdicom" in text and "not measured in this run" in text.lower()
    write_json(tmp_path / "r.json", meta, summarize([_m("bare-pynetdicom", 0, 1.0)]), [], [])
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["ingest"][0]["instances_per_s"] == 10.0
    assert all(row["status"] == "not yet measured" for row in doc["not_yet_measured"])


def test_compare_prints_the_change_of_each_figure(tmp_path: Path) -> None:
    from bench.compare import compare

    meta = {"date": "d", "cpus": 2, "commit": "old", "sender": "s", "runs": 1, "pdu": 1}
    write_json(tmp_path / "old.json", meta, summarize([_m("bare-pynetdicom", 0, 2.0)]), [], [])
    write_json(tmp_path / "new.json", meta, summarize([_m("bare-pynetdicom", 0, 1.0)]), [], [])
    lines = compare(json.loads((tmp_path / "new.json").read_text()), tmp_path / "old.json")
    assert any("MR 1 bare-pynetdicom (inst/s)" in line and line.endswith("2.00x") for line in lines)


def test_rawscu_reads_file_meta_and_builds_a_store_command(tmp_path: Path) -> None:
    from bench.rawscu import _status, read_meta, store_command

    ds = generate_study(3, series=1, instances_per_series=1)[0]
    path = write_study([ds], tmp_path)[0]
    inst = read_meta(path)
    assert (inst.sop_class, inst.sop_instance) == (ds.SOPClassUID, ds.SOPInstanceUID)
    # the data set starts right after the file meta: its first element is (0008,0005)
    assert path.read_bytes()[inst.offset:inst.offset + 4] == b"\x08\x00\x05\x00"
    command = store_command(7, inst)
    assert len(command) % 2 == 0 and _status(command) is None


def test_cpu_seconds_counts_a_busy_child() -> None:
    code = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ninput()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while cpu_seconds(proc.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cpu_seconds(proc.pid) >= 0.3
    finally:
        proc.kill()
        proc.wait()


def test_summary_pairs_ratios_to_orthanc_by_run() -> None:
    measurements = [_m("orthanc", 0, 1.0), _m("orthanc", 1, 4.0), _m("dicomd", 0, 2.0), _m("dicomd", 1, 2.0),
                    _m("bare-pynetdicom", 0, 1.0), _m("bare-pynetdicom", 1, 1.0)]
    rows = {r.receiver: r for r in summarize(measurements)}
    assert rows["dicomd"].ratio_vs_orthanc == pytest.approx((0.5 + 2.0) / 2)  # per-run ratios 0.5 and 2.0
    assert "x Orthanc" in render({"date": "-", "cpus": 2, "commit": "-", "sender": "-", "runs": 2, "pdu": 0},
                                 list(rows.values()), [])


def test_orthanc_baseline_stores_what_it_is_sent(tmp_path: Path) -> None:
    """Orthanc as the benchmark starts it (own config, storage in the work folder)."""
    import shutil

    from bench.receivers import start_orthanc

    if shutil.which("Orthanc") is None or dcmtk_tool("storescu") is None:
        pytest.skip("Orthanc or dcmtk is not installed (scripts/bench installs them)")
    files = write_study(generate_study(2, series=1, instances_per_series=3, rows=16, cols=16), tmp_path / "in")
    running = start_orthanc(tmp_path / "orthanc", 1048576)
    try:
        result = make_sender("dcmtk").send(files, running.port, running.ae_title, 1)
        assert not result.failed, result.errors
        assert running.received() == 3
    finally:
        running.stop()


def test_the_pixels_section_measures_redaction_frames_per_second(tmp_path: Path) -> None:
    from bench.pixels import pixels_table, run_pixels

    rows = run_pixels(tmp_path, runs=1, frames=2)
    assert [r.source for r in rows] == ["US RGB native", "US JPEG baseline YBR_FULL_422", "XA 16-bit native"]
    assert all(r.frames_per_s > 0 for r in rows) and rows[1].output_syntax == "1.2.840.10008.1.2.5"
    assert "RLE Lossless" in "\n".join(pixels_table(rows))


def test_backend_table_pairs_postgresql_with_sqlite_by_run() -> None:
    from bench.report import backend_table

    raw = [_m("dicomd", 0, 1.0), _m("dicomd", 1, 2.0), _m("dicomd-postgresql", 0, 2.0), _m("dicomd-postgresql", 1, 2.0)]
    # per-run ratios 0.5 and 1.0 -> median 0.75
    assert backend_table(raw)[1].split()[-1] == "0.75"


@pytest.mark.slow
def test_catalog_section_fills_and_queries_both_backends(tmp_path: Path, postgres) -> None:  # type: ignore[no-untyped-def]
    from bench.catalog_scale import measure_size

    rows = measure_size(tmp_path / "lite", 1000, print) + measure_size(tmp_path / "pg", 1000, print,
                                                                          postgres.new_database())
    by = {(r.backend, r.operation): r for r in rows}
    for backend in ("sqlite", "postgresql"):
        assert by[(backend, "instance by SOP Instance UID")].result_rows == 1
        assert by[(backend, "prearchive list")].result_rows == 1  # 2 sessions: one in each stage
        assert by[(backend, "archive list --where site=S7")].cli_s is not None  # the CLI ran on that backend
