"""The head verbs of the command line: ``mmstore train``, ``heads``, ``predict``.

Bad inputs tried: --options that is not a JSON object, predict with neither or both of
--ids and --file, an unknown head, an unknown input field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import mmstore
from mmstore.cli.main import cli
from tests.test_heads import SPEC, vector_records

pytestmark = pytest.mark.kernels  # also run on portable CPU kernels (Makefile)


def test_train_heads_predict(tmp_path: Path) -> None:
    store_path = tmp_path / "s"
    with mmstore.open(store_path) as store:  # built-in encoders only: the CLI loads no fakes
        store.create_collection("items", encoders=SPEC).ingest(vector_records())
    run = CliRunner().invoke
    options = '{"epochs": 40, "patience": 8, "batch_size": 32}'
    out = run(cli, ["train", str(store_path), "items", "clf", "--inputs", "a,b", "--options", options, "--json"])  # fmt: skip
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["kind"] == "classifier" and report["metrics"]["accuracy"] > 0.9
    listed = json.loads(run(cli, ["heads", str(store_path), "items", "--json"]).output)
    assert [h["name"] for h in listed] == ["clf"] and listed[0]["stale"] is False
    line = run(cli, ["heads", str(store_path), "items"]).output
    assert "clf" in line and "accuracy 1.000" in line and "macro_f1" in line, line
    assert "test rows" in line and "rows 1" not in line  # a count, not "rows 169.000"
    predicted = run(cli, ["predict", str(store_path), "items", "clf", "--ids", "v0,v1", "--json"])
    rows = json.loads(predicted.output)
    assert [r["id"] for r in rows] == ["v0", "v1"] and [r["label"] for r in rows] == ["k0", "k1"]
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"id": "n1", "a": vector_records(1, start=2)[0]["a"]}) + "\n")
    predicted = run(cli, ["predict", str(store_path), "items", "clf", "--file", str(new), "--json"])
    assert json.loads(predicted.output)[0]["label"] == "k2", predicted.output
    # --skip-bad (issue 17): a record with none of the inputs, a line that is no JSON
    new.write_text(new.read_text() + '{"id": "n2"}\n{not json\n')
    args = ["predict", str(store_path), "items", "clf", "--file", str(new)]
    strict = run(cli, args)
    assert strict.exit_code == 1 and "new.jsonl:3: not valid JSON" in strict.output, strict.output
    skipped = run(cli, [*args, "--skip-bad", "--json"])
    assert skipped.exit_code == 0, skipped.output
    rows = json.loads(skipped.stdout)
    assert [r["id"] for r in rows] == ["n1", "n2"] and rows[0]["label"] == "k2"
    assert rows[1]["label"] is None and "none of the head's inputs" in rows[1]["error"]
    assert "skipped: new.jsonl:3" in skipped.stderr, skipped.stderr
    with mmstore.open(store_path, read_only=True) as store:
        assert len(store.collection("items")) == len(vector_records())
    bad = [
        ["train", str(store_path), "items", "x", "--options", "[1]"],
        ["train", str(store_path), "items", "x", "--inputs", "nope"],
        ["predict", str(store_path), "items", "clf"],
        ["predict", str(store_path), "items", "nope", "--ids", "v0"],
    ]
    for args in bad:
        result = run(cli, args)
        assert result.exit_code == 1 and result.output.startswith("error:"), (args, result.output)
