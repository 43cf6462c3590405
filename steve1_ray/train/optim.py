"""AdamW with STEVE-1's weight-decay groups, part freezing, and activation checkpointing.

Decay groups follow STEVE-1's `configure_optimizers`: every parameter named `*bias` and the weights of
LayerNorm and Embedding modules get no weight decay; everything else (Linear/Conv weights, GroupNorm weights,
the relative-attention `b_nd`, ...) gets `weight_decay`. Frozen parameters (requires_grad False) are left out.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

NO_DECAY_MODULES = (nn.LayerNorm, nn.Embedding)


def decay_groups(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of trainable parameters (decay, no_decay), each parameter in exactly one list."""
    owner = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            owner[f"{module_name}.{param_name}" if module_name else param_name] = module
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith("bias") or (name.endswith("weight") and isinstance(owner[name], NO_DECAY_MODULES)):
            no_decay.append(name)
        else:
            decay.append(name)
    return decay, no_decay


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.999),
                    eps: float = 1e-8, lr_scales: dict[str, float] | None = None) -> torch.optim.AdamW:
    """AdamW over the decay / no-decay groups. `lr_scales` {parameter prefix: factor}: those parameters get a
    group of their own whose `lr_scale` multiplies the scheduled learning rate (`optimizer_step`); factors of 1
    add no group (so checkpoints keep their layout)."""
    decay, no_decay = decay_groups(model)
    params = dict(model.named_parameters())
    if not decay and not no_decay:
        raise ValueError("no trainable parameters: `freeze` covers the whole model; unfreeze at least one part")
    groups = []
    scaled = {p: f for p, f in (lr_scales or {}).items() if f != 1.0}
    for names, wd in ((decay, weight_decay), (no_decay, 0.0)):
        rest = [n for n in names if not any(n.startswith(p) for p in scaled)]
        groups.append({"params": [params[n] for n in rest], "weight_decay": wd, "names": rest})
        for prefix, factor in scaled.items():
            mine = [n for n in names if n.startswith(prefix)]
            if mine:
                groups.append({"params": [params[n] for n in mine], "weight_decay": wd, "names": mine,
                               "lr_scale": float(factor)})
    # fused, as the original asks for whenever torch has it (torch 2.13: CPU and CUDA): one kernel per tensor
    # list instead of a dozen foreach passes over all the weights
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in FUSED_DTYPES for p in params.values())
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None)


FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def freeze_parts(model: nn.Module, prefixes: list[str], always: tuple[str, ...] = ("value_head.",)) -> dict:
    """Set requires_grad=False on parameters whose name starts with a prefix; return counts per prefix.

    A prefix that matches nothing is an error (a typo would otherwise silently train everything).
    """
    counts = {p: 0 for p in [*always, *prefixes]}
    for name, param in model.named_parameters():
        for prefix in counts:
            if name.startswith(prefix):
                param.requires_grad_(False)
                counts[prefix] += param.numel()
    missing = [p for p in prefixes if counts[p] == 0]
    if missing:
        tops = sorted({n.split(".")[0] + "." + n.split(".")[1] + "." for n, _ in model.named_parameters()
                       if n.count(".") >= 2})
        raise ValueError(f"freeze: {missing} match no parameter; prefixes in this model include {tops}")
    return counts


def enable_activation_checkpointing(model: nn.Module, module_names: list[str] | None = None) -> list[str]:
    """Recompute the named submodules' activations in backward (torch.utils.checkpoint, non-reentrant).

    Default: each ImpalaCNN stack and each transformer block of the policy. Returns the wrapped names.
    """
    if module_names is None:
        module_names = [n for n, _ in model.named_modules()
                        if _is_child_of(n, ("net.img_process.cnn.stacks", "net.recurrent_layer.blocks"))]
    modules = dict(model.named_modules())
    for name in module_names:
        module = modules[name]
        if not isinstance(module, _Checkpointed):
            # a subclass rather than a patched bound method, so deepcopy / pickling keep working
            module.__class__ = _checkpointed_class(type(module))
    if not module_names:
        raise ValueError("activation_checkpointing: the policy has no `net.img_process.cnn.stacks.*` or "
                         "`net.recurrent_layer.blocks.*` modules to checkpoint")
    return module_names


class _Checkpointed:
    """Mixin: run the base class's forward under torch.utils.checkpoint when gradients are on."""

    def forward(self, *args, **kwargs):
        base_forward = super().forward
        if torch.is_grad_enabled():
            return checkpoint(base_forward, *args, use_reentrant=False, **kwargs)
        return base_forward(*args, **kwargs)


_CLASSES: dict[type, type] = {}


def _checkpointed_class(cls: type) -> type:
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Checkpointed{cls.__name__}", (_Checkpointed, cls), {})
    return _CLASSES[cls]


def _is_child_of(name: str, parents: tuple[str, ...]) -> bool:
    for parent in parents:
        if name.startswith(parent + ".") and name[len(parent) + 1:].isdigit():
            return True
    return False
