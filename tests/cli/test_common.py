"""Table layout: aligned columns fitted to a width by shortening the widest ones."""

from dicomd.cli.common import format_table, human_bytes


def test_columns_are_aligned():
    lines = format_table([["a", "1"], ["bbbb", "22"]], ["name", "n"])
    assert lines == ["name  n", "a     1", "bbbb  22"]


def test_the_widest_column_is_shortened_to_fit_and_others_stay_whole():
    rows = [["demo", "a very long series description that goes on", "READY"]]
    lines = format_table(rows, ["project", "description", "status"], width=40)
    assert all(len(line) <= 40 for line in lines)
    assert lines[1].startswith("demo") and lines[1].rstrip().endswith("READY") and "…" in lines[1]


def test_too_many_columns_are_cut_at_the_edge():
    lines = format_table([["x" * 10] * 10], [f"c{i}" for i in range(10)], width=30)
    assert all(len(line) <= 30 for line in lines) and lines[1].endswith("…")


def test_human_bytes():
    assert [human_bytes(v) for v in (0, 1023, 1536, 5 * 1024 ** 3)] == ["0 B", "1023 B", "1.5 KB", "5.0 GB"]
