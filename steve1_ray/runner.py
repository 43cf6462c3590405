"""The one job runner: every `steve1 <job>` (and `python jobs/<job>.py`) reads its command line the same way.

    steve1 <job> [--config FILE_OR_PRESET ...] [--overlay NAME] [--print-config] [key=value ...]

1. Defaults of the job's config dataclass <- each `--config` (a YAML file, or a preset name looked up in
   `configs/<kind>/`), in order, or its `--overlay` section <- `key=value` overrides (dots for nested
   fields: `world.tree_logs=4`; values are YAML: `prompts=[chop a tree, drink water]`).
2. The dataclass validates itself on construction; a bad value or key prints `steve1 <job>: <why>` and exits 2.
3. The resolved config is printed once, as YAML under `[<job>] resolved config:`. It is saved beside the
   job's outputs: by the runner where the job names a place (`Job.save_as`), else by the job's own function
   (`record_episodes`, `generate_dataset`, `run_evaluation`, the trainers save it themselves because they are
   also called as library functions; `serve` and `weights` write no output folder).
4. The CPU kernels are pinned (`cpu_isa=`, default `avx2`: `steve1_ray.numerics`), before the config is loaded,
   so a job repeats on an AVX-512 machine what an AVX2 machine computed; `cpu_isa=` (empty) keeps the machine's own,
   and without `cpu_isa=` an environment that sets the libraries' variables otherwise keeps its setting. A job whose
   config has a `cpu_isa` field of its own (quickstart, release-world) pins itself, after its resume checks.
5. The job's `run(cfg)` runs; its return value is the exit code (None = 0). The errors a job declares as
   bad input (`Job.errors`, plus ConfigError) exit 2 with their message instead of a traceback.

`steve1 <job> --help` lists every field with its default and the docstring written under it.

A job module is then a config dataclass, a `run(cfg)` and two lines:

    JOB = Job("sampling", SamplingConfig, _run, save_as=lambda cfg: Path(cfg.output_dir) / f"{cfg.name}_config.yaml")

    def main(argv=None) -> int:
        return run_job(JOB, argv)
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from steve1_ray.config import (ConfigError, describe_fields, load_config, preset_names, preset_path, read_yaml,
                               save_config, to_dict)
from steve1_ray.numerics import CPU_ISAS, DEFAULT_CPU_ISA, ISA_ENV, CpuIsaError, pin_cpu_isa, pinned_env

CPU_ISA_HELP = ("cpu_isa=avx2 (every job; default avx2): the CPU kernels torch, MKL and oneDNN run, here and in the "
                "Ray workers of a cluster this job starts or joins by address; `cpu_isa=` keeps the machine's own "
                "(an AVX-512 machine then rounds some sums differently from the committed files' AVX2 ones). Not "
                "given, a setting of the libraries' own variables in the environment stands (docs/world.md)")


@dataclass
class Job:
    """What the runner needs to know about one job."""

    name: str
    """the command: `steve1 <name>`"""
    config: type
    """the job's config dataclass (validates itself in `__post_init__`)"""
    run: Callable[[Any], int | None]
    """the job itself: config -> exit code (None = 0)"""
    summary: str = ""
    """one line for `--help` (default: the first line of the config class's docstring)"""
    presets: str | None = None
    """`--config <name>` also finds configs/<presets>/<name>.yaml"""
    default_configs: Sequence[str | Path] = ()
    """files applied before the command line's `--config` files when none is given"""
    reader: Callable[[Path], dict] = read_yaml
    """turns one config file into a mapping (the serve job reads Serve's own format)"""
    list_overrides: dict[str, str] = field(default_factory=dict)
    """`prefix.` -> list field: overrides starting with the prefix are appended to that field without it
    (the sweep's `train.lr=1e-4` goes to `train_overrides`)"""
    save_as: Callable[[Any], str | Path | None] | None = None
    """where the resolved config is saved (None, or a function returning None: the job saves it itself)"""
    errors: tuple[type[BaseException], ...] = ()
    """exceptions that mean bad input (a missing file, a bad source): exit 2 with the message"""
    examples: str = ""
    """usage lines shown by `--help`"""
    positional: tuple[str, ...] = ()
    """fields that bare words fill, in order (`steve1 weights convert a.weights b.weights` sets action, src,
    dst); every other argument is key=value"""


def _parser(job: Job) -> argparse.ArgumentParser:
    summary = job.summary or (job.config.__doc__ or "").strip().splitlines()[0]
    presets = f" Presets: {', '.join(preset_names(job.presets))}." if job.presets else ""
    p = argparse.ArgumentParser(
        prog=f"steve1 {job.name}", description=summary, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(textwrap.dedent(job.examples).strip() + "\n\n" if job.examples else "") + fields_help(job.config)
        + ("" if _pins_itself(job) else "\n\n" + "\n".join(textwrap.wrap(CPU_ISA_HELP, width=104))),
        add_help=True)
    p.add_argument("--config", action="append", default=[], metavar="FILE_OR_PRESET",
                   help="YAML config file or preset name, repeatable, applied in order." + presets)
    p.add_argument("--overlay", default=None, metavar="NAME",
                   help="use the section NAME of each config file (files that hold several named configs)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    words = " ".join(job.positional)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help=(f"first {words} (bare words), then " if words else "") + "config field overrides "
                        "(see the fields below)")
    return p


def fields_help(config: type) -> str:
    """The `--help` listing: every field (nested ones dotted) with its default and docstring."""
    lines = [f"fields of {config.__name__} (key=value; default in brackets):"]
    for key, default, doc in describe_fields(config):
        lines.append(f"  {key} [{default}]")
        if doc:
            lines += textwrap.wrap(doc, width=100, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def _pins_itself(job: Job) -> bool:
    """Whether the job's config has its own `cpu_isa` (the job pins the kernels itself)."""
    return "cpu_isa" in getattr(job.config, "__dataclass_fields__", {})


def _take_cpu_isa(job: Job, argv: list[str]) -> tuple[list[str], str | None, bool]:
    """(argv without its `cpu_isa=` words, the setting, whether the command line gave it) for a job that does not
    pin itself; (argv, None, False) for one that does. Taken out before argparse sees them, so that they may stand
    anywhere (a pipeline appends one after an option's value)."""
    if _pins_itself(job):
        return argv, None, False
    given = [a for a in argv if a.startswith("cpu_isa=")]
    value = given[-1].partition("=")[2].strip().strip("\"'") if given else DEFAULT_CPU_ISA
    if value not in CPU_ISAS:
        raise ConfigError(f"cpu_isa={value!r}: choose one of {list(CPU_ISAS)}")
    return [a for a in argv if not a.startswith("cpu_isa=")], value, bool(given)


def _pin(cpu_isa: str, given: bool) -> str:
    """Pin the kernels as the command line says, and say which run. Where it says nothing and the environment
    chooses other kernels itself (an image or an administrator sets ONEDNN_MAX_CPU_ISA, say), the environment's
    choice stands: the default does not refuse a setting somebody made on purpose."""
    import torch

    own = {k: v for k, v in pinned_env().items() if v.lower() != ISA_ENV[DEFAULT_CPU_ISA].get(k, "").lower()}
    if not given and own:
        setting = " ".join(f"{k}={v}" for k, v in own.items())
        return f"{torch.backends.cpu.get_cpu_capability()} (the environment's {setting}; cpu_isa= not applied)"
    return f"{pin_cpu_isa(cpu_isa)} (cpu_isa={json.dumps(cpu_isa)})"


def load_job_config(job: Job, argv: Sequence[str] | None) -> tuple[Any, bool, str | None]:
    """(config, print_only, kernels) from a command line. Unless the job pins them itself (kernels None) or only
    prints its config, the CPU kernels are pinned (`cpu_isa=`) after the command line is parsed and before the
    config is loaded (a config's validation may already run torch). Raises ConfigError or CpuIsaError (and
    SystemExit for --help)."""
    argv, cpu_isa, given = _take_cpu_isa(job, list(sys.argv[1:] if argv is None else argv))
    args = _parser(job).parse_intermixed_args(argv)  # key=value words may stand on either side of an option
    kernels = _pin(cpu_isa, given) if cpu_isa is not None and not args.print_config else None
    files = [preset_path(job.presets, c) if job.presets else Path(c) for c in args.config]
    if not args.config:
        files = [Path(f) for f in job.default_configs if Path(f).exists()]
    overrides, extra, bare = [], {}, []
    for item in args.overrides:
        if "=" not in item and job.positional:
            bare.append(item)
            continue
        prefix = next((p for p in job.list_overrides if item.startswith(p)), None)
        if prefix is None:
            overrides.append(item)
        else:
            extra.setdefault(job.list_overrides[prefix], []).append(item[len(prefix):])
    if len(bare) > len(job.positional):
        raise ConfigError(f"too many words {bare}: `steve1 {job.name}` takes {', '.join(job.positional)} "
                          "in that order, and key=value for the rest")
    overrides += [f"{name}={value}" for name, value in zip(job.positional, bare)]
    cfg = load_config(job.config, files, overrides, overlay=args.overlay, reader=job.reader)
    for name, items in extra.items():  # appended after the files' own entries, then validated again
        cfg = load_config(job.config, [], [], base={**to_dict(cfg), name: [*getattr(cfg, name), *items]})
    return cfg, args.print_config, kernels


def run_job(job: Job, argv: Sequence[str] | None = None) -> int:
    """Parse, validate, print, save, run; see the module docstring. Returns the exit code."""
    try:
        cfg, print_only, kernels = load_job_config(job, argv)
    except (ConfigError, CpuIsaError, *job.errors) as exc:
        print(f"steve1 {job.name}: {exc}", file=sys.stderr)
        return 2
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    print(f"[{job.name}] resolved config:\n" + textwrap.indent(text, "  "), end="", flush=True)
    if print_only:
        return 0
    if kernels is not None:
        print(f"[{job.name}] CPU kernels: {kernels}", flush=True)
    try:
        where = job.save_as(cfg) if job.save_as else None
        if where is not None:
            save_config(cfg, where)
        rc = job.run(cfg)
        return 0 if rc is None else int(rc)
    except (ConfigError, *job.errors) as exc:
        print(f"steve1 {job.name}: {exc}", file=sys.stderr)
        return 2
