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
"""
from __future__ import annotations

import io
import logging
import pickle
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

import torch

from steve1_ray.models.policy import PolicyConfig

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


def load_weights(policy: torch.nn.Module, path_or_state_dict, allow_missing_goal: bool = True) -> LoadReport:
    """Strictly load an original `.weights` file (or a state_dict) into `policy`."""
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
    sd, prefix = _strip_prefix(sd)
    expected = policy.state_dict()
    hint = "wrong --model preset or .model file for these weights?"

    extra = [k for k in sd if k not in expected]
    if extra:
        raise WeightsError(f"{source}: {len(extra)} unexpected key(s), e.g. {extra[:3]}; {hint}")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise WeightsError(f"{source}: key {k} has shape {tuple(v.shape)} but the model expects "
                               f"{tuple(expected[k].shape)}: {hint}")
    missing = [k for k in expected if k not in sd]
    allowed = set(GOAL_KEYS) if allow_missing_goal else set()
    bad = [k for k in missing if k not in allowed]
    if bad:
        raise WeightsError(f"{source}: {len(bad)} key(s) missing, e.g. {bad[:3]}; {hint}")
    full = {k: (sd[k] if k in sd else expected[k]) for k in expected}
    policy.load_state_dict(full, strict=True)
    return LoadReport(source=source, n_loaded=len(sd), prefix=prefix, missing=missing,
                      dtypes=sorted({str(v.dtype).replace("torch.", "") for v in sd.values()}))


def save_weights(policy: torch.nn.Module, path: Union[str, Path]) -> Path:
    """`torch.save` of the state_dict in the original layout (no prefix, CPU tensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}
    torch.save(sd, path)
    return path
