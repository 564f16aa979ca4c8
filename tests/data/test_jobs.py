"""The journal every resumable per-file job keeps (data/jobs.py)."""

import json

import numpy as np

from dancegenre.data.jobs import Journal


def test_only_whole_rows_with_their_fields_come_back(tmp_path):
    """A line a kill cut short, JSON that is not a row, a row without a field the job
    needs, and a row whose vectors never reached the disk are all done again, never a
    KeyError at the rerun."""
    book = Journal(tmp_path / "out.npy", "test-journal", blob="v.f32")
    with book.writer() as add:
        add({"key": "a"}, np.ones((2, 3)))
        add({"key": "b"}, np.zeros((1, 3)))
    lines = book.rows_path.read_text()
    extra = [json.dumps([1, 2]), json.dumps({"segments": 1, "offset": 0, "count": 1, "dim": 3}),
             json.dumps({"key": "late", "offset": 9, "count": 5, "dim": 3}), '{"key": "cut']
    book.rows_path.write_text(lines + "\n".join(extra))
    rows = list(book.rows(needs=("key",)))
    assert [r["key"] for r in rows] == ["a", "b"]
    assert book.vectors(rows[0]).tolist() == [[1.0] * 3] * 2
    plain = Journal(tmp_path / "t.csv", "test-journal")
    plain.rows_path.write_text('{"cache_key": "x", "v": 1}\n{"v": 2}\n"text"\n')
    assert list(plain.rows(needs=("cache_key",))) == [{"cache_key": "x", "v": 1}]
    book.remove()
    plain.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
