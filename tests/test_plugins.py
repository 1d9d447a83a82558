"""Plugins: built-ins registered like third parties, entry point discovery, runtime
registration, duplicate and unknown names, and every hook called where it should be."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmstore
from mmstore.plugin import hookspecs
from mmstore.plugin.encoder import Encoder, EncoderParams
from mmstore.plugin.events import BatchEncoded, IngestCommitted, IngestFinished, StoreOpened
from mmstore.plugin.manager import BUILTINS, PluginHost
from mmstore.testing import FakePlugin, HashTextEncoder

ROOT = Path(__file__).resolve().parents[1]


class ReverseParams(EncoderParams):
    dim: int = 8


class ReverseEncoder(Encoder):
    """A third-party encoder: counts letters of the reversed text."""

    name = "reverse"
    modalities = ("text",)
    Params = ReverseParams

    @property
    def dim(self) -> int:
        return self.params.dim  # type: ignore[attr-defined]

    def encode(self, items: Sequence[Any], modality: str) -> np.ndarray:
        out = np.ones((len(items), self.dim), np.float32)
        for i, text in enumerate(items):
            for ch in str(text)[::-1]:
                out[i, ord(ch) % self.dim] += 1
        return out


def write_dist(site: Path, dist: str, module: str, source: str) -> None:
    """A real installed distribution: a module and a dist-info with an entry point."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[mmstore]\n{dist} = {module}\n")


PLUGIN_SOURCE = """
import numpy as np
import mmstore
from mmstore.testing import HashTextEncoder

class ThirdParty(HashTextEncoder):
    name = "{name}"

@mmstore.hookimpl
def mmstore_register_encoders():
    return [ThirdParty]
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in list(sys.modules):
        if name.startswith("mms_thirdparty"):
            del sys.modules[name]


def test_builtins_are_registered_under_their_entry_point_names(tmp_path: Path) -> None:
    with mmstore.open(tmp_path / "s") as store:
        names = {i.name: i for i in store.plugins.infos()}
    for name, _module in BUILTINS:
        assert names[name].source == "builtin"
        assert names[name].version == mmstore.__version__
    assert "mmstore_register_encoders" in names["sentence_transformers"].hooks


def test_pyproject_declares_every_builtin_as_an_entry_point() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.entry-points.mmstore]")[1].split("\n[")[0]
    declared = dict(re.findall(r'^(\w+) = "([\w.]+)"', section, re.M))
    assert declared == dict(BUILTINS)


def test_entry_point_plugin_is_used_by_ingest_and_search(site: Path, tmp_path: Path) -> None:
    write_dist(site, "mms_thirdparty_a", "mms_thirdparty_a", PLUGIN_SOURCE.format(name="tp"))
    with mmstore.open(tmp_path / "s") as store:
        info = {i.name: i for i in store.plugins.infos()}["mms_thirdparty_a"]
        assert (info.version, info.source) == ("1.2.3", "entrypoint")
        col = store.create_collection("c", encoders={"text": {"encoder": "tp", "dim": 32}})
        col.ingest([{"id": "a", "text": "red apple"}, {"id": "b", "text": "blue car"}])
        assert col.search(text="apple", k=1).ids == ["a"]
        assert col.spaces()[0]["plugin"] == "mms_thirdparty_a"
        assert col.spaces()[0]["plugin_version"] == "1.2.3"


def test_duplicate_encoder_name_fails_at_open_naming_both_plugins(
    site: Path, tmp_path: Path
) -> None:
    write_dist(site, "mms_thirdparty_b", "mms_thirdparty_b", PLUGIN_SOURCE.format(name="same"))
    write_dist(site, "mms_thirdparty_c", "mms_thirdparty_c", PLUGIN_SOURCE.format(name="same"))
    with pytest.raises(mmstore.DuplicateNameError) as err:
        mmstore.open(tmp_path / "s")
    assert set(err.value.plugins) == {"mms_thirdparty_b", "mms_thirdparty_c"}
    assert "mms_thirdparty_b" in str(err.value) and "mms_thirdparty_c" in str(err.value)
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


MISNAMED_SOURCE = """
from mmstore.plugin import hookimpl
from mmstore.testing import HashTextEncoder

class ThirdParty(HashTextEncoder):
    name = "tp_misnamed"

@hookimpl
def register_encoders():
    return [ThirdParty]
"""


def test_a_hook_name_no_specification_has_fails_at_open_naming_the_closest(
    site: Path, tmp_path: Path
) -> None:
    write_dist(site, "mms_thirdparty_m", "mms_thirdparty_m", MISNAMED_SOURCE)
    with pytest.raises(mmstore.PluginError) as err:
        mmstore.open(tmp_path / "s")
    message = str(err.value)
    assert "plugin 'mms_thirdparty_m'" in message
    assert "implements 'register_encoders', which is no mmstore hook" in message
    assert "did you mean 'mmstore_register_encoders'?" in message
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_a_function_named_as_a_hook_but_not_marked_is_refused() -> None:
    class Unmarked:
        def mmstore_register_encoders(self) -> list[type[Encoder]]:
            return [ReverseEncoder]

    with pytest.raises(
        mmstore.PluginError, match=r"'.*Unmarked'.*'mmstore_register_encoders'.*@hookimpl"
    ):
        PluginHost([Unmarked()], entrypoints=False)
    host = PluginHost(entrypoints=False)
    with pytest.raises(mmstore.PluginError, match="without marking it"):
        host.register(Unmarked(), name="unmarked")
    assert "unmarked" not in {i.name for i in host.infos()}


def test_a_misnamed_hook_registered_at_runtime_is_refused_and_not_kept(
    store: mmstore.Store,
) -> None:
    class Typo:
        @mmstore.hookimpl
        def mmstore_register_encoder(self) -> list[type[Encoder]]:
            return [ReverseEncoder]

    with pytest.raises(mmstore.PluginError, match="did you mean 'mmstore_register_encoders'"):
        store.plugins.register(Typo(), name="typo")
    assert "typo" not in {i.name for i in store.plugins.infos()}
    assert "reverse" not in store.plugins.encoders


def test_duplicate_of_a_builtin_name_is_refused_at_runtime(store: mmstore.Store) -> None:
    class Clash:
        @mmstore.hookimpl
        def mmstore_register_encoders(self) -> list[type[Encoder]]:
            class Dup(HashTextEncoder):
                name = "sentence_transformers"

            return [Dup]

    with pytest.raises(mmstore.DuplicateNameError, match="sentence_transformers"):
        store.plugins.register(Clash(), name="clash")
    assert "clash" not in {i.name for i in store.plugins.infos()}
    assert store.plugins.encoders["sentence_transformers"].__module__ == "mmstore_sbert"


def test_unknown_encoder_lists_available_and_closest(store: mmstore.Store) -> None:
    with pytest.raises(mmstore.UnknownNameError) as err:
        store.create_collection("c", encoders={"text": "sentence_transformer"})
    message = str(err.value)
    assert "did you mean 'sentence_transformers'" in message
    assert "hash_text" in message and "precomputed" in message
    assert isinstance(err.value, KeyError)
    assert store.collections() == []


def test_runtime_registration_adds_an_encoder(store: mmstore.Store) -> None:
    class Plugin:
        @mmstore.hookimpl
        def mmstore_register_encoders(self) -> list[type[Encoder]]:
            return [ReverseEncoder]

    store.plugins.register(Plugin(), name="reverse_plugin")
    col = store.create_collection("c", encoders={"text": "reverse"})
    col.ingest([{"id": "a", "text": "aaaa"}, {"id": "b", "text": "zzzz"}])
    assert col.search(text="aaa", k=1).ids == ["a"]
    store.plugins.unregister("reverse_plugin")
    assert "reverse" not in store.plugins.encoders


def test_plugin_failing_to_register_is_named(tmp_path: Path) -> None:
    class Broken:
        @mmstore.hookimpl
        def mmstore_register_encoders(self) -> list[type[Encoder]]:
            raise RuntimeError("boom")

    host = PluginHost(entrypoints=False)
    with pytest.raises(mmstore.PluginError, match="'broken'.*boom") as err:
        host.register(Broken(), name="broken")
    assert isinstance(err.value.__cause__, RuntimeError)
    assert "broken" not in {i.name for i in host.infos()}


def test_register_returning_a_non_class_is_refused() -> None:
    class Bad:
        @mmstore.hookimpl
        def mmstore_register_modalities(self) -> list[Any]:
            return ["text"]

    with pytest.raises(mmstore.PluginError, match="'bad'.*not a modality class"):
        PluginHost(entrypoints=False).register(Bad(), name="bad")


def test_blocked_builtin_is_not_loaded(tmp_path: Path) -> None:
    with mmstore.open(tmp_path / "s", block=["pii"]) as store:
        assert "pii" not in {i.name for i in store.plugins.infos()}


def test_prepare_records_hook_rewrites_before_encoding(store: mmstore.Store) -> None:
    col = store.create_collection(
        "c", encoders={"text": "hash_text"}, options={"pii": {"kinds": ["email", "phone"]}}
    )
    col.ingest([{"id": "a", "text": "write to jane.doe@example.com or +1 555 123 4567"}])
    assert col.get("a")[0]["text"] == "write to [EMAIL] or [PHONE]"


def test_prepare_records_rejection_with_skip_drops_only_that_record(
    store: mmstore.Store,
) -> None:
    class NoSecrets:
        @mmstore.hookimpl
        def mmstore_prepare_records(self, collection: Any, records: list[dict]) -> None:
            for r in records:
                if "secret" in r.get("text", ""):
                    raise mmstore.RecordError(r["id"], "text", "contains a secret")

    store.plugins.register(NoSecrets(), name="nosecrets")
    col = store.create_collection("c", encoders={"text": "hash_text"})
    report = col.ingest(
        [{"id": "a", "text": "fine"}, {"id": "b", "text": "a secret"}], on_error="skip"
    )
    assert [r.id for r in report.rejected] == ["b"]
    assert col.get("a") and len(col) == 1
    with pytest.raises(mmstore.RecordError, match="'b'.*secret"):
        col.ingest([{"id": "b", "text": "a secret"}])


def test_load_payloads_hook_can_supply_values(store: mmstore.Store) -> None:
    class Lookup:
        """Resolves kb:// references and passes the rest to the modality."""

        @mmstore.hookimpl
        def mmstore_load_payloads(
            self, modality: Any, values: list[Any], record_ids: list[str], field: str
        ) -> list[Any] | None:
            kb = {"kb://fruit": "apple banana"}
            if not any(isinstance(v, str) and v in kb for v in values):
                return None
            resolved = [kb.get(v, v) if isinstance(v, str) else v for v in values]
            return modality.validate_batch(resolved, record_ids, field)

    store.plugins.register(Lookup(), name="lookup")
    col = store.create_collection("c", encoders={"text": "hash_text"})
    col.ingest([{"id": "a", "text": "kb://fruit"}, {"id": "b", "text": "car"}])
    assert col.search(text="banana", k=1).ids == ["a"]


def test_encode_batch_wrapper_sees_every_batch(store: mmstore.Store) -> None:
    seen: list[int] = []

    class Timer:
        @mmstore.hookimpl(wrapper=True)
        def mmstore_encode_batch(self, encoder: Any, items: Any, modality: str) -> Any:
            result = yield
            seen.append(len(items))
            return result

    store.plugins.register(Timer(), name="timer")
    col = store.create_collection("c", encoders={"text": {"encoder": "hash_text"}})
    col.ingest([{"id": str(i), "text": f"w{i}"} for i in range(300)])
    assert seen == [256, 44]


def test_track_event_receives_lifecycle_events(store_path: Path) -> None:
    events: list[Any] = []

    class Recorder:
        @mmstore.hookimpl
        def mmstore_track_event(self, event: Any) -> None:
            events.append(event)

    with mmstore.open(store_path, plugins=[FakePlugin(), Recorder()]) as store:
        col = store.create_collection("c", encoders={"text": "hash_text"})
        col.ingest([{"id": "a", "text": "x y z"}])
    kinds = [type(e) for e in events]
    assert kinds[:4] == [StoreOpened, BatchEncoded, IngestCommitted, IngestFinished]


def test_failing_event_observer_does_not_undo_work(store: mmstore.Store) -> None:
    class Fails:
        @mmstore.hookimpl
        def mmstore_track_event(self, event: Any) -> None:
            raise RuntimeError("observer broke")

    store.plugins.register(Fails(), name="fails")
    col = store.create_collection("c", encoders={"text": "hash_text"})
    col.ingest([{"id": "a", "text": "x"}])
    assert len(col) == 1


def test_every_hook_is_documented_with_its_exact_signature() -> None:
    doc = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [n for n in dir(hookspecs) if n.startswith("mmstore_")]
    assert len(hooks) >= 6
    for name in hooks:
        sig = str(inspect.signature(getattr(hookspecs, name)))
        sig = sig.replace("'", "")
        assert f"{name}{sig}" in doc, f"{name}{sig} is not in docs/plugins.md"


def test_every_hook_has_a_builtin_implementation(tmp_path: Path) -> None:
    host = PluginHost(entrypoints=False)
    for name in (n for n in dir(hookspecs) if n.startswith("mmstore_")):
        impls = getattr(host.hook, name).get_hookimpls()
        assert impls, f"hook {name} has no built-in implementation"
