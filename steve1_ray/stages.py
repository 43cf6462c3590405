"""`Stages`: run a pipeline of jobs in one process, each as its job's `main(argv)`, with the command printed.

Used by the multi-stage commands (`steve1 quickstart`, `steve1 release-world`). A stage whose `done` file exists
is skipped, so re-running a pipeline resumes it (training stages resume from their own checkpoints). Every stage
prints the `steve1 ...` command it runs, so it can be re-run or scaled up alone; `table()` is the summary of
stage times printed at the end. Each stage's job pins the CPU kernels as the pipeline's `cpu_isa` says (the runner's
`cpu_isa=`), so a pipeline run with `cpu_isa=` keeps the machine's own kernels in every stage.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import shlex
import time
from pathlib import Path

from steve1_ray.numerics import DEFAULT_CPU_ISA
from steve1_ray.progress import duration


class Stages:
    """Runs each stage as its job's `main(argv)`, printing the equivalent command and the time it took."""

    def __init__(self, root: str | Path, prefix: str, cpu_isa: str = DEFAULT_CPU_ISA):
        self.root = Path(root).resolve()
        self.prefix = prefix  # the pipeline's name in its error messages
        # given to every stage's job, and shown in its command, where it is not the jobs' default; a stage's record
        # (its resume check) keeps the arguments without it, since the pipeline checks its cpu_isa itself
        self.extra = [] if cpu_isa == DEFAULT_CPU_ISA else [f"cpu_isa={cpu_isa}"]
        self.times: dict[str, float] = {}
        self.skipped: set[str] = set()
        self.t0 = time.time()

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def run(self, name: str, command: str, module: str, argv: list[str], done: Path | None = None) -> None:
        """Run one stage unless `done` (the file its job writes last) exists. A stage done before with other
        arguments is refused rather than reused (its outputs would not be what this command line asks for)."""
        n = len(self.times) + 1
        # the record of what made `done`: by position and by `done` itself, so that a stage whose output folder
        # depends on an option (the release's text_anchor) keeps one record per folder; records of folders made
        # before session 44 are by position alone
        legacy = self.root / ".stages" / f"{n:02d}-{command}.json"
        if done is not None:  # named by `done` within the pipeline's folder, so a copied folder finds its records
            where = Path(done).resolve()
            where = where.relative_to(self.root) if where.is_relative_to(self.root) else where
            record = legacy.with_name(f"{n:02d}-{command}-{hashlib.sha256(str(where).encode()).hexdigest()[:12]}.json")
        else:
            record = legacy
        if done is not None and done.exists():
            made = record if record.is_file() else legacy
            before = json.loads(made.read_text())["argv"] if made.is_file() else argv
            if before != argv:
                changed = sorted(set(argv) ^ set(before))
                raise SystemExit(f"{self.prefix}: stage {name!r} was done in {self.root} with other arguments "
                                 f"({', '.join(changed[:4])}); start over in a new folder or delete that one")
            print(f"\n[{n}] {name}: already done ({done}), skipping", flush=True)
            self.times[name] = 0.0
            self.skipped.add(name)
            return
        print(f"\n[{n}] {name}  (t+{duration(time.time() - self.t0)})\n    $ steve1 {command} "
              + " ".join(shlex.quote(a) for a in argv + self.extra), flush=True)
        t = time.time()
        rc = importlib.import_module(module).main(argv + self.extra)
        if rc not in (0, None):
            raise SystemExit(f"{self.prefix}: stage {name!r} failed (exit {rc}); see the output above")
        self.times[name] = time.time() - t
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"command": command, "argv": argv}) + "\n")
        print(f"    {name} took {duration(self.times[name])}", flush=True)

    def timed(self, name: str, seconds: float) -> None:
        """Record a stage that ran outside `run` (e.g. playing a prompt over HTTP)."""
        self.times[name] = seconds

    def table(self) -> str:
        """The stage times as a Markdown table (skipped stages say so), with the total."""
        width = max([len(k) for k in self.times] + [5])
        lines = [f"| {'stage':<{width}} | time |", f"|{'-' * (width + 2)}|------|"]
        for k, v in self.times.items():
            lines.append(f"| {k:<{width}} | {'skipped (done before)' if k in self.skipped else duration(v)} |")
        lines.append(f"| {'total':<{width}} | {duration(time.time() - self.t0)} |")
        return "\n".join(lines)


def dataset_stages(st: Stages, recordings: Path, embedder: Path, shards: Path, samplings: Path, name: str,
                   val_share: int) -> None:
    """The two stages every pipeline runs after recording: `steve1 dataset` (decode, convert actions, embed with
    `embedder`, write shards) and `steve1 sampling` (a train/val split holding out 1/`val_share` of the frames)."""

    st.run("dataset: decode, convert actions, embed with the world embedder, write shards", "dataset",
           "steve1_ray.data.pipeline",
           ["--config", "world", f"output={shards}", f"sources=[local:{recordings / 'contractor'}]",
            f"mineclip_path={embedder}"],
           done=shards / "summary.json")  # written last (its manifest.json is written first)
    n_frames = json.loads((shards / "manifest.json").read_text()).get("counts", {}).get("frames", 0)
    st.run("sampling: train/val split by frames", "sampling", "steve1_ray.data.sampling",
           [f"name={name}", f"datasets=[{shards}]", f"output_dir={samplings}",
            f"val_frames={max(64, n_frames // val_share)}", "min_frames=64"],
           done=samplings / f"{name}_sampling.json")  # written last
