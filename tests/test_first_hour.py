"""Issue 17's bugs and schema friction, each reproduced as the user met it, in a test that
failed before its fix: ``record=`` without a target, weights naming no query, a read-only
ingest, a misspelt ``modalities``, the search that did not name an existing head, a field
named after no modality, raw pydantic text for a wrong option; and the CLI's hit preview,
``search --head`` and head metrics. (The folder suffix and the job id are tested in
test_cli_folders and test_service, ``predict --skip-bad`` in test_cli_heads.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

import mmstore
from mmstore import (
    InvalidInputError,
    NotFoundError,
    PluginError,
    ReadOnlyError,
    SpaceMismatchError,
)
from mmstore.plugin import Encoder, hookimpl
from mmstore.testing import FakePlugin, HashTextEncoder

TWO = {
    "text": {"encoder": "hash_text", "dim": 16},
    "emb": {"encoder": "precomputed", "modality": "vector", "dim": 4},
}


@pytest.fixture
def two(store: mmstore.Store) -> mmstore.Collection:
    """Two fields in different spaces; sku-1 has both, sku-2 only text, sku-3 only emb."""
    col = store.create_collection("products", encoders=TWO)
    col.ingest(
        [
            {"id": "sku-1", "text": "red shoe", "emb": [1, 0, 0, 0]},
            {"id": "sku-2", "text": "red running shoe"},
            {"id": "sku-3", "emb": [0.9, 0.1, 0, 0]},
            {"id": "sku-4", "text": "blue hat", "emb": [0, 1, 0, 0]},
        ]
    )
    return col


# -- bug 7 and schema item 3: record= without target ----------------------------------------
def test_record_alone_searches_the_one_field_the_record_has(two: mmstore.Collection) -> None:
    hits = two.search(record="sku-2", k=2)  # before: "say which field to search"
    assert hits[0].id == "sku-1" and hits[0].field == "text"
    assert two.search(record="sku-3", k=1)[0].field == "emb"


def test_record_alone_with_vectors_in_two_fields_says_which(two: mmstore.Collection) -> None:
    with pytest.raises(InvalidInputError, match=r"vectors in fields \['emb', 'text'\]"):
        two.search(record="sku-1", k=2)
    assert [h.id for h in two.search(record="sku-1", target="text", k=1)] == ["sku-2"]


def test_an_unknown_record_without_target_is_not_found(two: mmstore.Collection) -> None:
    with pytest.raises(NotFoundError, match="no record with id 'ghost'"):
        two.search(record="ghost")


# -- bug 4: weights that name no query ---------------------------------------------------------
def test_weights_naming_no_query_are_refused(two: mmstore.Collection) -> None:
    with pytest.raises(InvalidInputError, match=r"weights= names \['txt'\].*\['text'\]"):
        two.search(text="red", target="text", fusion="weighted", weights={"txt": 1.0})
    ok = two.search(text="red", record="sku-4", target="text", weights={"record": 0.5})
    assert ok  # names of the queries given are taken


# -- bug 3: ingest into a read-only store --------------------------------------------------
def test_ingest_on_a_read_only_store_raises_quietly(
    store_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with mmstore.open(store_path, plugins=[FakePlugin()]) as s:
        s.create_collection("c", encoders={"text": {"encoder": "hash_text", "dim": 8}})
    caplog.set_level(logging.DEBUG)
    with mmstore.open(store_path, read_only=True, plugins=[FakePlugin()]) as s:
        col = s.collection("c")
        with pytest.raises(ReadOnlyError, match="read-only"):
            col.ingest({"id": "a", "text": "x"})
        with pytest.raises(ReadOnlyError):
            col.delete(["a"])
    assert "could not record" not in caplog.text
    assert "Traceback" not in capsys.readouterr().err


# -- bug 6: an encoder class that misspells `modalities` -------------------------------------
class Misspelt(Encoder):
    name = "misspelt"
    modality = ("text",)  # the user's typo: `modalities`

    @property
    def dim(self) -> int:
        return 4

    def encode(self, items: Any, modality: str) -> Any:  # pragma: no cover - never built
        raise AssertionError


class MisspeltPlugin:
    @hookimpl
    def mmstore_register_encoders(self) -> list[type[Encoder]]:
        return [Misspelt, HashTextEncoder]


def test_an_encoder_without_modalities_names_its_plugin(tmp_path: Path) -> None:
    plugin = MisspeltPlugin()
    with pytest.raises(PluginError, match=r"MisspeltPlugin.*Misspelt.*'modality'.*modalities"):
        mmstore.open(tmp_path / "s", plugins=[plugin])


# -- bug 1: a head that bridges the spaces exists ----------------------------------------------
def test_a_cross_space_search_names_the_head_that_bridges_it(store: mmstore.Store) -> None:
    spec = {
        "q": {"encoder": "precomputed", "modality": "vector", "dim": 4, "space": "sound"},
        "t": {"encoder": "precomputed", "modality": "vector", "dim": 4, "space": "picture"},
    }
    col = store.create_collection("pairs", encoders=spec)
    rows = [[float(i % 4 == j) + 0.01 * i for j in range(4)] for i in range(40)]
    col.ingest([{"id": f"p{i}", "q": r, "t": r[::-1]} for i, r in enumerate(rows)])
    with pytest.raises(SpaceMismatchError, match=r"train one with col.train_head\('q2t'"):
        col.search(q=rows[0], target="t")
    col.train_head("speech2image", kind="retrieval", query="q", target="t", epochs=2)
    with pytest.raises(SpaceMismatchError, match=r"'speech2image' bridges them.*head='speech"):
        col.search(q=rows[0], target="t")
    assert col.search(q=rows[0], target="t", head="speech2image", k=3)


# -- schema that explains itself ---------------------------------------------------------------
def test_a_field_named_after_no_modality_gets_the_fix(store: mmstore.Store) -> None:
    with pytest.raises(mmstore.UnknownNameError) as err:
        store.create_collection("c", encoders={"caption": "hash_text"})
    assert '{"encoder": "hash_text", "modality": "text"}' in str(err.value)
    col = store.create_collection(
        "c", encoders={"caption": {"encoder": "hash_text", "modality": "text"}}
    )
    assert col.fields["caption"].modality.name == "text"


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"rots": ["/x"]}, r"unknown option 'rots'.*roots=\[\]"),
        ({"max_pixels": 0}, r"option 'max_pixels': Input should be greater"),
    ],
)
def test_a_wrong_modality_option_lists_the_options(
    store: mmstore.Store, options: dict[str, Any], says: str
) -> None:
    spec = {"image": {"encoder": "precomputed", "modality": "vector", "dim": 4}}
    spec["photo"] = {"encoder": "tinyimg", "modality": "image"}  # any encoder: options first
    with pytest.raises(mmstore.ConfigError, match=says) as err:
        store.create_collection("c", encoders=spec, options={"image": options})
    assert "extra_forbidden" not in str(err.value)
    assert store.collections() == []  # nothing written


def test_mmstore_modalities_lists_options_with_defaults() -> None:
    from click.testing import CliRunner

    from mmstore.cli.main import cli

    out = CliRunner().invoke(cli, ["modalities", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert rows["image"]["options"]["roots"] == [] and ".png" in rows["image"]["suffixes"]
    assert rows["audio"]["options"]["max_seconds"] == 600.0 and rows["text"]["options"] == {}
    text = CliRunner().invoke(cli, ["modalities"])
    assert text.exit_code == 0 and "keep='copy'" in text.output


# -- the CLI: hit previews, --head, head metrics ------------------------------------------------
def test_a_hit_preview_shows_text_and_media_as_what_they_are() -> None:
    from mmstore.cli.preview import preview
    from mmstore.hits import Hit

    audio = {"format": "WAV", "seconds": 1.764, "frames": 28242, "media": "sha256:ab"}
    hit = Hit("r1", 0.9, "audio", "audio", None, None, {}, {"audio": audio, "note": "a\nbell"})
    assert preview(hit) == "a bell"  # the text, though the audio field was searched
    assert preview(hit, show="audio") == "[audio WAV 1.8 s]"
    image = {"format": "PNG", "width": 64, "height": 48, "media": "sha256:cd"}
    assert preview(Hit("r2", 0.5, "image", "image", None, None, {}, {"image": image})) == (
        "[image PNG 64x48]"
    )
    with pytest.raises(mmstore.UnknownNameError, match="field to show 'nope'"):
        preview(hit, show="nope")


def test_cli_search_through_a_head_and_the_heads_metrics(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mmstore.cli.main import cli

    path = tmp_path / "s"
    spec = {
        "q": {"encoder": "precomputed", "modality": "vector", "dim": 4, "space": "sound"},
        "t": {"encoder": "precomputed", "modality": "vector", "dim": 4, "space": "picture"},
    }
    rows = [[float(i % 4 == j) + 0.01 * i for j in range(4)] for i in range(40)]
    with mmstore.open(path) as s:
        col = s.create_collection("pairs", encoders=spec)
        col.ingest([{"id": f"p{i}", "q": r, "t": r[::-1]} for i, r in enumerate(rows)])
        col.train_head("q2t", kind="retrieval", query="q", target="t", epochs=2)
    run = CliRunner().invoke
    out = run(cli, ["search", str(path), "pairs", "--record", "p1", "--head", "q2t", "-k", "3"])
    assert out.exit_code == 0, out.output
    assert len(out.output.splitlines()) == 3
    listed = run(cli, ["heads", str(path), "pairs"])
    assert listed.exit_code == 0 and "q->t R@1/5/10 " in listed.output, listed.output
    assert "t->q R@1/5/10 " in listed.output and "test rows" in listed.output


# -- CSV files carry metadata and vectors ------------------------------------------------------
def test_a_csv_file_carries_meta_columns_and_json_vectors(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mmstore.cli.main import cli

    path = tmp_path / "s"
    with mmstore.open(path) as s:
        s.create_collection(
            "c", encoders={"emb": {"encoder": "precomputed", "modality": "vector", "dim": 3}}
        )
    csv = tmp_path / "r.csv"
    csv.write_text(
        "id,emb,meta.color,meta.size,meta\n"
        'a,"[1, 0, 0]",red,3,"{""shop"": ""x""}"\n'
        'b,"[0, 1, 0]",,4,\n'
        'c,"[0, 1",blue,5,\n'
    )
    run = CliRunner().invoke
    strict = run(cli, ["ingest", str(path), "c", str(csv)])
    assert strict.exit_code == 1 and "r.csv row 3: column 'emb' holds no JSON" in strict.output
    with mmstore.open(path, read_only=True) as s:
        assert len(s.collection("c")) == 0  # nothing written
    out = run(cli, ["ingest", str(path), "c", str(csv), "--skip-bad", "--json"])
    assert out.exit_code == 0, out.output
    with mmstore.open(path, read_only=True) as s:
        a, b = s.collection("c").get(["a", "b"])
        assert a["meta"] == {"shop": "x", "color": "red", "size": 3} and b["meta"] == {"size": 4}
        hits = s.collection("c").search(vector=[0.0, 1.0, 0.0], k=1)
        assert hits[0].id == "b"
        assert s.collection("c").count(where={"color": "red"}) == 1
        assert len(s.collection("c")) == 2
    assert "r.csv row 3" in out.output  # the skipped row is listed


def test_predict_skips_what_it_cannot_predict_and_says_why(store: mmstore.Store) -> None:
    col = store.create_collection(
        "v", encoders={"q": {"encoder": "precomputed", "modality": "vector", "dim": 4}}
    )
    rows = [[float(i % 2 == j) + 0.01 * i for j in range(4)] for i in range(40)]
    col.ingest([{"id": f"p{i}", "q": r, "label": f"k{i % 2}"} for i, r in enumerate(rows)])
    col.train_head("clf", inputs=["q"], epochs=2)
    asked = ["p1", "ghost", {"id": "n", "q": [1.0, 2.0]}, {"id": "e"}, {"id": "ok", "q": rows[0]}]
    with pytest.raises(NotFoundError, match="ghost"):
        col.predict("clf", asked)
    out = col.predict("clf", asked, on_error="skip")
    assert [r["id"] for r in out] == ["p1", "ghost", "n", "e", "ok"]
    assert out[0]["label"] in ("k0", "k1") and out[4]["label"] in ("k0", "k1")
    assert "no record with this id" in out[1]["error"] and out[1]["label"] is None
    assert "4" in out[2]["error"]  # the dimension the field takes
    assert "none of the head's inputs" in out[3]["error"]
    with pytest.raises(InvalidInputError, match="on_error"):
        col.predict("clf", ["p1"], on_error="ignore")  # type: ignore[arg-type]


# -- schema item 3: a collection whose plugin is missing --------------------------------------
def test_a_missing_plugin_leaves_the_other_fields_usable(tmp_path: Path) -> None:
    """Made with the fake plugin's ``hash_text``, reopened without it: the vector field
    still ingests, searches, trains and deletes; the text field is refused by name with the
    plugin and version the catalog recorded; nothing stored is lost; with the plugin back,
    everything is there (the record deleted meanwhile too is gone from the text index).
    Bad inputs: a new record with text, an update of a record that has text (which would
    drop its vector), a search of the text field, a text query value, a head on it."""
    from click.testing import CliRunner

    from mmstore.cli.main import cli

    path = tmp_path / "s"
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        col = store.create_collection("products", encoders=TWO)
        col.ingest([{"id": "a", "text": "red shoe", "emb": [1, 0, 0, 0]}, {"id": "b", "text": "x"}])
    with mmstore.open(path) as store:  # no FakePlugin: hash_text is unknown here
        col = store.collection("products")
        (missing,) = col.info()["missing"]
        assert missing["field"] == "text" and missing["plugin"] == "mmstore.testing.FakePlugin"
        assert "install plugin 'mmstore.testing.FakePlugin'" in missing["missing"]
        report = col.ingest(
            [{"id": "c", "emb": [0, 1, 0, 0]}, {"id": "d", "text": "new"}], on_error="skip"
        )
        assert report.written == 1 and [(r.id, r.field) for r in report.rejected] == [("d", "text")]
        assert "encoder 'hash_text' version 1" in report.rejected[0].reason
        with pytest.raises(mmstore.RecordError, match="an update would drop") as err:
            col.ingest([{"id": "a", "emb": [1, 1, 0, 0]}])
        assert err.value.field == "text"
        assert col.search(vector=[1, 0, 0, 0], target="emb", k=1)[0].id == "a"
        with pytest.raises(mmstore.MissingPluginError, match="field 'text'.*hash_text"):
            col.search(record="a", target="text")
        with pytest.raises(mmstore.MissingPluginError):
            col.search(text="red", target="emb")
        with pytest.raises(mmstore.MissingPluginError):
            col.train_head("clf", inputs=["text"])
        assert col.delete("b") == 1
    shown = CliRunner().invoke(cli, ["info", str(path), "products"])
    assert shown.exit_code == 0, shown.output
    assert "text" in shown.output and "not usable here" in shown.output
    assert "install plugin 'mmstore.testing.FakePlugin'" in shown.output
    with mmstore.open(path, plugins=[FakePlugin()]) as store:
        col = store.collection("products")
        assert col.info()["missing"] == [] and len(col) == 2
        assert col.get("a")[0]["id"] == "a"
        assert col.search(text="red shoe", target="text", k=5).ids == ["a"]
