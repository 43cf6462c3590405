"""The original VPT / STEVE-1 files: `.model` (hyperparameter pickle) and `.weights` (state_dict).

- `read_model_file(path) -> PolicyConfig`: the pickle is read by a restricted unpickler that builds only
  plain containers and scalars; any other global (a class, `os.system`, ...) raises `UnsafePickleError`
  naming it, before anything is called.
- `write_model_file(cfg, path)`: the original structure
  `{"model": {"args": {"net": {"args": {...}}, "pi_head_opts": {"temperature": ...}}}}`.
- `load_weights(policy, path_or_state_dict) -> LoadReport`: strict. Keys may carry the prefix
  `module.policy.` (STEVE-1 DDP checkpoints) or `policy.` (single-process STEVE-1 training); only
  `net.mineclip_embed_linear.{weight,bias}` may be missing (a VPT file has no goal layer) and that is reported.
- `save_weights(policy, path)`: the original layout (no prefix), loadable by the original code.
- `load_policy(model_path_or_preset, weights_path=None) -> Steve1Policy`: `read_model_file` (or a preset)
  then `load_weights`, in one call; what `steve1_ray.load_policy` runs.
"""
from __future__ import annotations

import io
import logging
import pickle
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional, Union

import torch

from steve1_ray.config import check
from steve1_ray.models.policy import PRESETS, PolicyConfig, Steve1Policy
from steve1_ray.runner import Job, run_job  # the `steve1 weights` tool; light (no torch, no Ray)

log = logging.getLogger(__name__)

GOAL_KEYS = ("net.mineclip_embed_linear.weight", "net.mineclip_embed_linear.bias")
PREFIXES = ("module.policy.", "policy.")
# Harmless constructors of plain containers a pickle may name (protocol 0-2 encode these as globals).
_SAFE_GLOBALS = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
                 ("__builtin__", "set"), ("__builtin__", "frozenset")}


class UnsafePickleError(pickle.UnpicklingError):
    """A `.model` pickle named a global other than a plain container; nothing was executed."""


class WeightsError(ValueError):
    """A `.weights` file does not match the policy; the message names the key and the likely fix."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load global {module}.{name}: a .model file holds only plain dicts, lists and "
            "numbers; this file may be malicious or not a VPT/STEVE-1 .model file")

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing persistent id {pid!r} in a .model file")


def safe_unpickle(data: bytes) -> Any:
    """Unpickle plain containers/scalars only (`UnsafePickleError` on any other global)."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def read_model_kwargs(path: Union[str, Path]) -> tuple[dict, dict]:
    """(net kwargs, pi_head_opts) from an original `.model` file, read safely."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .model file (or pass a preset name: 1x, 2x, 3x, debug)")
    try:
        d = safe_unpickle(path.read_bytes())
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except Exception as e:  # truncated or not a pickle at all
        raise ValueError(f"{path}: not a readable .model pickle ({type(e).__name__}: {e})") from None
    try:
        net_kwargs = dict(d["model"]["args"]["net"]["args"])
        pi_head_opts = dict(d["model"]["args"].get("pi_head_opts") or {})
    except (KeyError, TypeError):
        raise ValueError(f"{path}: not a VPT/STEVE-1 .model file (expected "
                         "d['model']['args']['net']['args'])") from None
    return net_kwargs, pi_head_opts


def read_model_file(path: Union[str, Path], report: Optional[list] = None) -> PolicyConfig:
    """`PolicyConfig` from an original `.model` file. Kwargs that do not change the network (e.g.
    `active_reward_monitors`, `only_img_input`) are ignored; their names are logged and appended to
    `report` if given."""
    net_kwargs, pi_head_opts = read_model_kwargs(path)
    known = {f.name for f in fields(PolicyConfig)} - {"temperature", "embed_dim", "activation_checkpointing"}
    kwargs = {k: v for k, v in net_kwargs.items() if k in known}
    ignored = sorted(set(net_kwargs) - known - {"mineclip_embed_dim"})
    if "mineclip_embed_dim" in net_kwargs:
        kwargs["embed_dim"] = net_kwargs["mineclip_embed_dim"]
    if "temperature" in pi_head_opts:
        kwargs["temperature"] = float(pi_head_opts["temperature"])
    for k in ("impala_chans", "img_shape"):
        if k in kwargs and isinstance(kwargs[k], tuple):
            kwargs[k] = list(kwargs[k])
    try:
        cfg = PolicyConfig(**kwargs)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if ignored:
        log.info("%s: ignoring .model kwargs %s", path, ignored)
    if report is not None:
        report.extend(ignored)
    return cfg


def write_model_file(cfg: PolicyConfig, path: Union[str, Path]) -> Path:
    """Write `cfg` as an original `.model` pickle (plain containers only; protocol 2)."""
    path = Path(path)
    d = {"model": {"args": {"net": {"args": cfg.to_model_kwargs()},
                            "pi_head_opts": {"temperature": float(cfg.temperature)}}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(d, protocol=2))
    return path


@dataclass
class LoadReport:
    """What `load_weights` did."""

    source: str
    n_loaded: int
    prefix: Optional[str] = None
    """The key prefix that was stripped (`module.policy.` / `policy.`), or None."""
    missing: list[str] = field(default_factory=list)
    """Keys absent from the file that kept their fresh init (only the goal layer is allowed)."""
    dtypes: list[str] = field(default_factory=list)

    @property
    def missing_goal_layer(self) -> bool:
        return any(k in self.missing for k in GOAL_KEYS)

    def __str__(self):
        s = f"{self.source}: loaded {self.n_loaded} tensors"
        if self.prefix:
            s += f" (stripped prefix {self.prefix!r})"
        if self.missing:
            s += f"; missing {self.missing} kept their fresh init (a VPT file without the STEVE-1 goal layer)"
        return s


def _strip_prefix(sd: dict) -> tuple[dict, Optional[str]]:
    for prefix in PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items()}, prefix
    return dict(sd), None


def read_state_dict(path_or_state_dict) -> tuple[dict, str]:
    """(state_dict, source name) from a `.weights` path (read with weights_only=True) or a dict."""
    if isinstance(path_or_state_dict, dict):
        source, sd = "state_dict", path_or_state_dict
    else:
        source = str(path_or_state_dict)
        if not Path(source).is_file():
            raise FileNotFoundError(f"{source}: no such .weights file")
        try:
            sd = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(f"{source}: cannot be read as a torch state_dict with weights_only=True "
                               f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{source}: expected a state_dict (dict of tensors), got {type(sd).__name__}")
    return sd, source


def check_state_dict(sd: dict, expected: dict, source: str = "state_dict",
                     allow_missing_goal: bool = True) -> tuple[dict, Optional[str], list[str]]:
    """Strip the prefix and check `sd` against `expected` (key -> tensor or shape) strictly.

    Returns (stripped state_dict, prefix or None, missing keys); raises `WeightsError` naming the key."""
    sd, prefix = _strip_prefix(sd)
    shapes = {k: tuple(getattr(v, "shape", v)) for k, v in expected.items()}
    hint = "wrong model= preset or .model file for these weights?"
    extra = [k for k in sd if k not in shapes]
    if extra:
        raise WeightsError(f"{source}: {len(extra)} unexpected key(s), e.g. {extra[:3]}; {hint}")
    for k, v in sd.items():
        if tuple(v.shape) != shapes[k]:
            raise WeightsError(f"{source}: key {k} has shape {tuple(v.shape)} but the model expects "
                               f"{shapes[k]}: {hint}")
    missing = [k for k in shapes if k not in sd]
    allowed = set(GOAL_KEYS) if allow_missing_goal else set()
    bad = [k for k in missing if k not in allowed]
    if bad:
        raise WeightsError(f"{source}: {len(bad)} key(s) missing, e.g. {bad[:3]}; {hint}")
    return sd, prefix, missing


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The policy inside DDP / DataParallel / torch.compile wrappers (their keys carry extra prefixes)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        else:
            return model


def load_weights(policy: torch.nn.Module, path_or_state_dict, allow_missing_goal: bool = True) -> LoadReport:
    """Strictly load an original `.weights` file (or a state_dict) into `policy`; nothing is changed
    when the check fails."""
    policy = _unwrap(policy)
    sd, source = read_state_dict(path_or_state_dict)
    expected = policy.state_dict()
    sd, prefix, missing = check_state_dict(sd, expected, source, allow_missing_goal)
    full = {k: (sd[k] if k in sd else expected[k]) for k in expected}
    policy.load_state_dict(full, strict=True)
    return LoadReport(source=source, n_loaded=len(sd), prefix=prefix, missing=missing,
                      dtypes=sorted({str(v.dtype).replace("torch.", "") for v in sd.values()}))


def save_weights(policy: torch.nn.Module, path: Union[str, Path]) -> Path:
    """`torch.save` of the state_dict in the original layout (no prefix, CPU tensors), also when
    `policy` is wrapped in DDP or torch.compile."""
    policy = _unwrap(policy)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}
    torch.save(sd, path)
    return path


def load_policy(model_path: Union[str, Path], weights_path: Union[str, Path, None] = None, device=None,
                allow_missing_goal: bool = True, **overrides) -> Steve1Policy:
    """Build from an original `.model` file or a preset name, then strictly load `weights_path` if given.

    The load report (prefix stripped, missing goal layer) is kept as `policy.load_report`."""
    if str(model_path) in PRESETS:
        cfg = PolicyConfig.preset(str(model_path), **overrides)
    else:
        cfg = read_model_file(model_path)
        if overrides:
            cfg = replace(cfg, **overrides)
    policy = Steve1Policy(cfg)
    policy.load_report = None
    if weights_path is not None:
        policy.load_report = load_weights(policy, weights_path, allow_missing_goal=allow_missing_goal)
    if device is not None:
        policy = policy.to(device)
    return policy.eval()


# --------------------------------------------------------------------------------------------------
# Command line: inspect / convert original files
# --------------------------------------------------------------------------------------------------
def _expected_shapes(cfg: PolicyConfig) -> dict:
    with torch.device("meta"):  # shapes only, nothing allocated
        return {k: tuple(v.shape) for k, v in Steve1Policy(cfg).state_dict().items()}


def _config_for(model: str, sd: dict) -> PolicyConfig:
    if model in PRESETS:
        stripped, _ = _strip_prefix(sd)
        goal = stripped.get(GOAL_KEYS[0])
        return PolicyConfig.preset(model, **({"embed_dim": goal.shape[1]} if goal is not None else {}))
    return read_model_file(model)


def matching_presets(sd: dict) -> list[str]:
    """Presets whose architecture these weights fit (goal layer optional)."""
    found = []
    for name in PRESETS:
        try:
            check_state_dict(sd, _expected_shapes(_config_for(name, sd)))
            found.append(name)
        except WeightsError:
            pass
    return found


ACTIONS = ("inspect", "convert", "write-model")


@dataclass
class WeightsConfig:
    """Inspect or convert the original VPT / STEVE-1 files (`steve1 weights ACTION SRC [DST] [model=M]`)."""

    action: str = "inspect"
    """inspect: keys, prefix, dtypes, size and matching preset of a .weights file; convert: rewrite a .weights
    file in the original layout (prefixes stripped, checked strictly against `model`); write-model: write a
    preset as an original .model file"""
    src: str = ""
    """the .weights file to inspect or convert; for write-model, the preset name (1x, 2x, 3x, debug)"""
    dst: str = ""
    """where convert / write-model write"""
    model: Optional[str] = None
    """.model file or preset the weights are checked against (required by convert)"""

    def __post_init__(self):
        check(self.action in ACTIONS, f"action={self.action!r}: choose one of {list(ACTIONS)}")
        check(bool(self.src), f"give what to {self.action}: `steve1 weights {self.action} SRC ...`")
        check(self.action == "inspect" or bool(self.dst), f"{self.action} needs a destination: DST or dst=...")
        check(self.action != "convert" or bool(self.model),
              "convert checks the weights against an architecture: add model=<.model file or preset>")


def main(argv=None) -> int:
    """`steve1 weights inspect WEIGHTS [model=M]`, `convert IN OUT model=M`, `write-model PRESET OUT`."""
    return run_job(JOB, argv)


def _run(args: WeightsConfig) -> int:
    if args.action == "write-model":
        print(write_model_file(PolicyConfig.preset(args.src), args.dst))
        return 0
    sd, source = read_state_dict(args.src)
    if args.action == "inspect":
        stripped, prefix = _strip_prefix(sd)
        n = sum(v.numel() for v in stripped.values())
        dtypes = sorted({str(v.dtype).replace("torch.", "") for v in stripped.values()})
        print(f"{source}: {len(stripped)} tensors, {n:,} elements, dtypes {dtypes}, prefix {prefix!r}, "
              f"goal layer {'present' if GOAL_KEYS[0] in stripped else 'absent (a VPT file)'}")
        if args.model:
            _, _, missing = check_state_dict(sd, _expected_shapes(_config_for(args.model, sd)), source)
            print(f"matches {args.model}" + (f" (missing {missing})" if missing else ""))
        else:
            print(f"matching presets: {matching_presets(sd) or 'none (pass model=FILE.model)'}")
        return 0
    expected = _expected_shapes(_config_for(args.model, sd))
    stripped, prefix, missing = check_state_dict(sd, expected, source)
    out = {k: stripped[k] for k in expected if k in stripped}  # the original key order
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, args.dst)
    print(f"wrote {args.dst}: {len(out)} tensors (stripped prefix {prefix!r}"
          + (f", missing {missing}" if missing else "") + ")")
    return 0


JOB = Job("weights", WeightsConfig, _run, positional=("action", "src", "dst"),
          errors=(WeightsError, UnsafePickleError, ValueError, FileNotFoundError),
          examples="""
          steve1 weights inspect steve1.weights
          steve1 weights convert single_gpu.weights steve1.weights model=2x
          steve1 weights write-model 2x 2x.model""")


if __name__ == "__main__":
    raise SystemExit(main())
