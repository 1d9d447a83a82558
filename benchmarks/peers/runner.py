"""The command: prepare the data sets, run every system in its own process with a
deadline, reopen what each left on disk in fresh processes, time end-to-end text ingest,
then print the tables, write ``benchmarks/out/peers.json`` and regenerate the
"Peers (issue 7)" section of ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from peers import datasets, report, venv
from peers.registry import SYSTEMS, TEXT, Entry, resolve

BENCH = Path(__file__).resolve().parents[1]
ROOT = BENCH.parent
OUT = BENCH / "out"
TINY = {
    "vectors": 3000,
    "real": 500,
    "queries": 60,
    "tune_queries": 30,
    "filtered": 30,
    "texts": 48,
    "warm": 16,
    "chunk": 16,
    "budget": 3.0,
    "tune_budget": 10.0,
    "deadline": 120.0,
    "reopens": 1,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/peers", description=__doc__)
    p.add_argument("--systems", default="all", help="names or groups, comma-separated")
    p.add_argument("--datasets", default="random,real")
    p.add_argument("--vectors", type=int, default=100_000, help="random vectors")
    p.add_argument("--real", type=int, default=20_000, help="real MiniLM embeddings")
    p.add_argument("--corpus", type=int, default=101_000, help="embed_corpus.py's cache size")
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument("--tune-queries", type=int, default=200)
    p.add_argument("--filtered", type=int, default=200, help="filtered queries")
    p.add_argument("--texts", type=int, default=1_000, help="end-to-end texts; 0 skips")
    p.add_argument("--warm", type=int, default=64, help="texts that load the models first")
    p.add_argument("--chunk", type=int, default=200, help="texts per turn, raw vs system")
    p.add_argument("--target", type=float, default=0.95, help="recall@10 to tune ANN to")
    p.add_argument("--budget", type=float, default=15.0, help="seconds per query loop")
    p.add_argument("--tune-budget", type=float, default=45.0, help="seconds per sweep")
    p.add_argument("--deadline", type=float, default=330.0, help="seconds per system's run")
    p.add_argument("--reopen-deadline", type=float, default=120.0, help="seconds per reopen")
    p.add_argument("--reopens", type=int, default=3, help="fresh processes per reopen")
    p.add_argument("--peers-venv", type=Path, default=OUT / "peers-venv")
    p.add_argument("--pixeltable-venv", type=Path, default=OUT / "pixeltable-venv")
    p.add_argument("--no-setup", action="store_true", help="never create the peers' venv")
    p.add_argument("--out", type=Path, default=OUT / "peers.json")
    p.add_argument("--results", type=Path, help="RESULTS.md to update (default: the repo's)")
    p.add_argument("--no-results", action="store_true", help="leave RESULTS.md alone")
    p.add_argument("--tiny", action="store_true", help="smoke size (RESULTS.md untouched)")
    p.add_argument("--report", type=Path, help="only print (and write) the report of a JSON")
    args = p.parse_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
        args.corpus = args.real + args.tune_queries + args.queries
    if args.results is None and not (args.tiny or args.no_results):
        args.results = BENCH / "RESULTS.md"
    return args


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
    env |= {"TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
    return env


def launch(cmd: list[str], timeout: float) -> tuple[int | None, float]:
    """Run a child in its own process group; kill the group at the deadline. Returns the
    exit code (None when killed) and the seconds it ran."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), start_new_session=True)
    try:
        rc: int | None = proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc = None
    return rc, time.perf_counter() - t0


def child_cmd(python: Path | str, phase: str, system: str, work: Path, out: Path) -> list[str]:
    return [
        *(str(python), "-m", "peers.child", "--phase", phase, "--system", system),
        *("--work", str(work), "--out", str(out)),
    ]


class Runner:
    """Runs the children of one invocation and gathers their figures."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.pythons: dict[str, Path | None] = {"main": Path(sys.executable)}
        self.reasons: dict[str, str] = {}

    def python_for(self, entry: Entry) -> Path | None:
        if entry.env not in self.pythons:
            setup = not self.args.no_setup
            if entry.env == "pixeltable":
                found = venv.ensure(self.args.pixeltable_venv, setup, venv.PIXELTABLE, "pixeltable")
            else:
                found = venv.ensure(self.args.peers_venv, setup)
            python, reason = found
            self.pythons[entry.env], self.reasons[entry.env] = python, reason
        return self.pythons[entry.env]

    def system(self, entry: Entry, data: Path) -> dict[str, Any]:
        python = self.python_for(entry)
        if python is None:
            print(f"  [{entry.name}] skipped: {self.reasons[entry.env]}", flush=True)
            return {"skipped": self.reasons[entry.env]}
        folder = self.work / f"{data.name}-{entry.name}"
        out = self.work / f"{data.name}-{entry.name}.json"
        cmd = [*child_cmd(python, "run", entry.name, folder, out), "--data", str(data)]
        cmd += ["--target", str(self.args.target), "--budget", str(self.args.budget)]
        cmd += ["--tune-budget", str(self.args.tune_budget)]
        load_before = loadavg()
        rc, seconds = launch(cmd, self.args.deadline)
        result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
        result |= {"rc": rc, "wall_s": seconds, "timed_out": rc is None}
        result |= {"loadavg_before": load_before, "loadavg_after": loadavg()}
        result["disk_bytes"] = disk_bytes(folder)
        if result.get("done"):
            result["reopen"] = self.reopen(python, entry, data, folder, result["params"])
        stop_servers(folder)
        shutil.rmtree(folder, ignore_errors=True)
        after = result["loadavg_after"]
        print(f"  [{entry.name}] load average {load_before} before, {after} after", flush=True)
        return result

    def reopen(
        self,
        python: Path,
        entry: Entry,
        data: Path,
        folder: Path,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        """Median of fresh-process reopens: open the stored data and answer one query
        (each within ``--reopen-deadline``)."""
        samples: list[dict[str, Any]] = []
        for i in range(self.args.reopens):
            out = self.work / f"{data.name}-{entry.name}-reopen{i}.json"
            cmd = [*child_cmd(python, "reopen", entry.name, folder, out), "--data", str(data)]
            rc, _ = launch([*cmd, "--params", json.dumps(params)], self.args.reopen_deadline)
            if rc != 0 or not out.exists():
                return {"error": f"reopen exited with {rc}", "samples": samples}
            samples.append(json.loads(out.read_text()))
        return {
            "s": statistics.median(s["s"] for s in samples),
            "rss_mb": statistics.median(s["rss_mb"] for s in samples),
            "recall_first": min(s["recall_first"] for s in samples),
            "samples": [s["s"] for s in samples],
            "detail": samples,
        }

    def text(self, entry: Entry, texts: Path, model: str) -> dict[str, Any]:
        python = self.python_for(entry)
        if python is None:
            print(f"  [text {entry.name}] skipped: {self.reasons[entry.env]}", flush=True)
            return {"skipped": self.reasons[entry.env]}
        folder = self.work / f"text-{entry.name}"
        out = self.work / f"text-{entry.name}.json"
        cmd = child_cmd(python, "text", entry.name, folder, out)
        cmd += ["--texts", str(texts), "--model", model, "--warm", str(self.args.warm)]
        cmd += ["--chunk", str(self.args.chunk)]
        rc, seconds = launch(cmd, self.args.deadline)
        result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
        shutil.rmtree(folder, ignore_errors=True)
        return result | {"rc": rc, "wall_s": seconds, "timed_out": rc is None}


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as ``/proc/loadavg`` gives them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def stop_servers(folder: Path) -> None:
    """Stop a database server that a system left running under ``folder`` (Pixeltable's
    embedded Postgres outlives its process, and a child killed at its deadline cannot stop
    it): SIGINT to the postmaster named in its pid file, Postgres's fast shutdown."""
    for pidfile in folder.rglob("postmaster.pid"):
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGINT)
        except (OSError, ValueError, IndexError):
            continue
        stop = time.monotonic() + 30
        while time.monotonic() < stop and pidfile.exists():
            time.sleep(0.2)


def disk_bytes(folder: Path) -> int:
    """Bytes of the files a system left in its folder (its data, indexes and catalogs)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def real_vectors(size: int) -> tuple[np.ndarray, str]:
    """The real embeddings: ``embed_corpus.py``'s cache of ``size`` when there is one (the
    newest; the docstrings found on the machine may have changed since, which does not
    matter for vectors), else computed and cached by it (about 20 minutes for 101,000)."""
    found = sorted(OUT.glob(f"minilm-{size}-*.npy"), key=lambda p: p.stat().st_mtime)
    if found:
        return np.load(found[-1], allow_pickle=False), found[-1].name
    from embed_corpus import cached_embeddings

    return cached_embeddings(size)[1], "computed by embed_corpus.py"


def prepare(args: argparse.Namespace, work: Path) -> tuple[dict[str, Path], Path | None]:
    """Write the data sets (and the sentences) under ``work``."""
    folders: dict[str, Path] = {}
    n_q, n_t, n_f = args.queries, args.tune_queries, args.filtered
    for name in [n.strip() for n in args.datasets.split(",") if n.strip()]:
        folder = work / name
        t0 = time.perf_counter()
        if name == "random":
            meta = datasets.random_set(folder, args.vectors, n_q, n_t, n_f)
        elif name == "real":
            vectors, origin = real_vectors(args.corpus)
            meta = datasets.real_set(folder, args.real, n_q, n_t, n_f, vectors, origin)
        else:
            raise SystemExit(f"unknown data set {name!r}; known: random, real")
        print(f"data set {name}: {meta['source']} ({time.perf_counter() - t0:.0f} s)")
        folders[name] = folder
    texts = None
    if args.texts:
        from embed_corpus import cached_embeddings  # the same sentences, cached after once

        records, _ = cached_embeddings(args.texts + args.warm)
        texts = work / "texts.json"
        args.texts = datasets.text_set(texts, records, args.texts, args.warm)
    return folders, texts


def bundled_model() -> str:
    from mmstore_sbert import model_path

    return model_path("all-MiniLM-L6-v2")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.report is not None:
        publish(args, json.loads(args.report.read_text()))
        return 0
    systems = resolve(args.systems)
    started = time.perf_counter()
    OUT.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="peers-", dir=OUT))
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "command": " ".join(["python benchmarks/peers", *(argv or sys.argv[1:])]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "datasets": {},
        "runs": {},
        "text": {},
    }
    runner = Runner(args, work)
    try:
        folders, texts = prepare(args, work)
        for name, folder in folders.items():
            results["datasets"][name] = json.loads((folder / "meta.json").read_text())
            runs = results["runs"][name] = {}
            for system in systems:
                print(f"== {name}: {system}", flush=True)
                runs[system] = runner.system(SYSTEMS[system], folder)
        if texts is not None:
            model = bundled_model()
            for entry in TEXT.values():
                print(f"== text: {entry.name}", flush=True)
                results["text"][entry.name] = runner.text(entry, texts, model)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["environments"] = {
        "peers": runner.reasons.get("peers") or str(args.peers_venv),
        "pixeltable": runner.reasons.get("pixeltable") or str(args.pixeltable_venv),
    }
    results["elapsed_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out} in {results['elapsed_s']:.0f} s\n")
    publish(args, results)
    return 0


def publish(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Print the tables; regenerate the RESULTS.md section unless told not to."""
    block = report.block(results)
    print(block)
    if args.results is not None:
        report.update_results(args.results, block, report.section_for(results))
        print(f"\nupdated {args.results}")
