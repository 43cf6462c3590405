"""The one place that turns what a user names (a preset, original files, one of our checkpoint folders) into models.

    model, weights = policy_files("runs/train/policy/checkpoint_000003")   # -> model/policy.model, model/steve1.weights
    policy = load_policy_spec("2x", "steve1.weights", device="cuda")        # eval mode
    mineclip, prior = load_goal_models("attn.pth", "steve1_prior.pt", embed_dim=policy.cfg.embed_dim)

Used by the data pipeline (embeddings), training (the prior's text encoder), serving and evaluation, so a
checkpoint folder, an `attn.pth` or a `steve1_prior.pt` is read the same way everywhere. Without a file, the goal
models are random and seeded (seed 0 by default), so that every process of a run that has no checkpoint —
the dataset job's actors, the evaluation, the server — computes the same (meaningless) embeddings: tests only.

`released` names the embedded world's released files (`steve1_ray/released/world/`, made by `steve1 release-world`):
as a policy its STEVE-1 policy (`steve1.weights` with `steve1.model` where the release has one, else with
`foundation.model`: goal-conditioned; a release without `steve1.weights`: the foundation policy, `foundation.weights`,
no goal layer), as an embedder its `mineclip.pth`, as a prior its `prior.pt`.

A checkpoint folder of ours (written by steve1_ray.train.checkpoint) holds `model/policy.model` (the original
`.model` layout) and `model/steve1.weights`; its `model/` folder alone is accepted too.

Any of these may be a URI (`s3://bucket/runs/r/checkpoint_000003`, `gs://...`): it is copied with pyarrow.fs
into a folder of this process (`local_copy`) and read from there, so a server or an evaluation on another node
loads what training wrote to shared storage.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the functions that build models: path lookups stay light
    import torch

RANDOM_EMBEDDERS = ("debug",)
"""embedder names that mean seeded random weights of that MineCLIP preset (tests); `attn` is not one of them:
asked for by name, MineCLIP must be the released file"""
MODEL_DIR = "model"
"""a checkpoint's sub-folder with everything serving and evaluation need (the rest is for resuming)"""
MODEL_NAME = "policy.model"
"""a checkpoint's policy architecture, in the original `.model` pickle layout"""
WEIGHTS_NAME = "steve1.weights"
"""a checkpoint's policy weights, loadable by the original code"""


RELEASED = "released"
"""the name of the embedded world's released files, accepted wherever a policy, embedder or prior is named"""
RELEASED_DIR = Path(__file__).resolve().parents[1] / "released"
"""the released models of each embedded world, one folder per world (`released/world/`)"""
RELEASE_FILES = ("foundation.model", "foundation.weights", "mineclip.pth", "prior.pt")
"""what a release folder holds besides manifest.json (and, optionally, `RELEASE_STEVE1`)"""
RELEASE_STEVE1 = WEIGHTS_NAME
"""a release's goal-conditioned policy, when it has one: named like the original's and a checkpoint's weights,
`steve1.weights`"""
RELEASE_STEVE1_MODEL = "steve1.model"
"""the STEVE-1 policy's architecture when it is not the foundation's (a wider policy than the foundation); without
it `steve1.weights` goes with `foundation.model`, as the original's `steve1.weights` goes with VPT's `2x.model`"""


def _release_files(root: Path) -> dict:
    import json

    return json.loads((root / "manifest.json").read_text()).get("files") or {}


def released_policy_weights(root: Path) -> str:
    """The release's policy weights: its STEVE-1 policy when its manifest lists one, else its foundation."""
    return RELEASE_STEVE1 if RELEASE_STEVE1 in _release_files(root) else "foundation.weights"


def released_policy_model(root: Path, weights: str | None = None) -> str:
    """The architecture file for the release's `weights` (default: `released_policy_weights`): `steve1.model` for
    its STEVE-1 policy when the manifest lists one, else `foundation.model`."""
    weights = weights or released_policy_weights(root)
    return RELEASE_STEVE1_MODEL if weights == RELEASE_STEVE1 and RELEASE_STEVE1_MODEL in _release_files(root) \
        else "foundation.model"


def released_world(name: str = "world") -> Path:
    """The folder of a released embedded-world model set (raises if it is missing or incomplete)."""
    root = RELEASED_DIR / name
    missing = [f for f in RELEASE_FILES + ("manifest.json",) if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"released world models {root}: missing {missing}; make them with "
                                f"`steve1 release-world out={root}`")
    return root


def is_uri(path) -> bool:
    """A URI of a remote filesystem (`s3://`, `gs://`, ...); `file://` and plain paths are local."""
    return "://" in str(path) and not str(path).startswith("file://")


_COPIES: list[str] = []
COPY_PREFIX = "steve1_remote_"  # + the pid of the process that made the copy + "_"


def remove_dead_copies(root: str | None = None) -> list[str]:
    """Remove the copies (`local_copy`) of processes that are gone: a process removes its own at exit, but one
    killed (SIGKILL, OOM, a Serve replica stopped with `ray.kill`) cannot. A copy whose process still runs, or
    whose pid cannot be read, is kept. Pids are this machine's: processes in other pid namespaces (containers)
    that share one temporary folder would look gone, so give each its own TMPDIR."""
    removed = []
    for d in Path(root or tempfile.gettempdir()).glob(f"{COPY_PREFIX}*_*"):
        pid = d.name[len(COPY_PREFIX):].split("_", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
            if not d.exists():
                removed.append(str(d))
        except OSError:  # alive, another user's
            pass
    return removed


def local_copy(path: str | Path, only: str | None = None) -> str:
    """`path` itself when it is local; a remote file or folder (`s3://...`) copied into a fresh folder of this
    process (removed at exit), and that copy's path. A folder's `only` sub-folder, when it has one, is all that is
    copied (a checkpoint's `model/`: the optimizer state stays behind). Fresh on every call: a URI such as
    `.../weights/steve1.weights` can be rewritten by a later run, so a copy is never reused by name."""
    path = str(path)
    if path.startswith("file://"):
        return path[len("file://"):]
    if not is_uri(path):
        return path
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        fs, remote = pafs.FileSystem.from_uri(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"{path}: not a path or a storage URI pyarrow can read (s3://, gs://, hdfs://, file://): "
                         f"{exc}") from None
    info = fs.get_file_info(remote)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{path} does not exist")
    if not _COPIES:
        atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _COPIES])
        remove_dead_copies()  # what processes killed before their exit left behind (a SIGKILLed replica)
    _COPIES.append(tempfile.mkdtemp(prefix=f"{COPY_PREFIX}{os.getpid()}_"))
    dest = Path(_COPIES[-1]) / (Path(remote).name or "root")
    if info.type == pafs.FileType.File:
        pafs.copy_files(remote, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        return str(dest)
    if only and fs.get_file_info(f"{remote}/{only}").type == pafs.FileType.Directory:
        remote, dest = f"{remote}/{only}", dest / only
    dest.mkdir(parents=True)
    if only and dest.name != only:  # no `only` in it (a run folder, a bucket root): its own files, not the tree
        for item in fs.get_file_info(pafs.FileSelector(remote)):
            if item.type == pafs.FileType.File:
                pafs.copy_files(item.path, str(dest / item.base_name), source_filesystem=fs,
                                destination_filesystem=pafs.LocalFileSystem())
        return str(dest)
    pafs.copy_files(remote, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return str(dest)


def _device(device: str | torch.device) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ------------------------------------------------------------------------------------------ policy

def checkpoint_files(folder: str | Path) -> tuple[Path, Path]:
    """(policy.model, steve1.weights) of a checkpoint folder or of its `model/` folder (local or a URI)."""
    root = Path(local_copy(folder, only=MODEL_DIR))
    model_dir = root / MODEL_DIR if (root / MODEL_DIR).is_dir() else root
    model, weights = model_dir / MODEL_NAME, model_dir / WEIGHTS_NAME
    if not (model.is_file() and weights.is_file()):
        raise FileNotFoundError(f"checkpoint {folder}: expected {MODEL_NAME} and {WEIGHTS_NAME} in it or in its "
                                f"{MODEL_DIR}/ folder (a training checkpoint folder or its model/ folder); or name a "
                                ".model file or a preset (debug, 2x) with separate weights")
    return model, weights


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest `checkpoint_*` folder of a training run (Ray Train's layout, `<storage_path>/<run_name>/`)."""
    found = sorted((p for p in Path(run_dir).glob("checkpoint_*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no checkpoint_* folder under {run_dir}; did the training run save one?")
    return found[-1]


def policy_files(policy: str | Path, weights: str | Path | None = None) -> tuple[str, str | None]:
    """(model, weights) for `formats.load_policy`: a checkpoint folder becomes its model/ files (its own weights
    win); a preset name or a `.model` file is kept, with `weights` (None = random init)."""
    from steve1_ray.models.policy import PRESETS

    policy, weights = local_copy(policy, only=MODEL_DIR), None if weights is None else local_copy(weights)
    if str(policy) == RELEASED:
        root = released_world()
        if weights is None:
            return str(root / released_policy_model(root)), str(root / released_policy_weights(root))
        # one of the release's own weight files goes with its architecture; other weights (a fine-tune of the
        # release's policy) with the release's policy's
        own = Path(weights).resolve().parent == root.resolve()
        return str(root / released_policy_model(root, Path(weights).name if own else None)), str(weights)
    p = Path(policy)
    if p.is_dir():
        model, w = checkpoint_files(p)
        return str(model), str(w)
    if str(policy) not in PRESETS and not p.is_file():
        raise FileNotFoundError(f"policy {str(policy)!r} is neither a preset ({sorted(PRESETS)}) nor an existing "
                                ".model file or checkpoint folder")
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"policy weights {str(weights)!r} do not exist")
    return str(policy), None if weights is None else str(weights)


def load_policy_spec(policy: str | Path, weights: str | Path | None = None, device: str | torch.device = "cpu",
                     seed: int | None = None) -> torch.nn.Module:
    """The policy named by a preset, a `.model` file, a checkpoint folder or `released` (see `policy_files`), in
    eval mode, for acting. A preset without weights is randomly initialised, seeded by `seed` when given. Weights
    without the goal layer (VPT's layout, the released foundation) get a zero goal layer, so that the policy acts
    as it was trained whatever goal it is given (a fresh layer's random init would steer it at random)."""
    import torch

    from steve1_ray.models.formats import load_policy

    model, w = policy_files(policy, weights)
    if seed is not None:
        torch.manual_seed(seed)
    loaded = load_policy(model, w)
    report = getattr(loaded, "load_report", None)
    if report is not None and report.missing_goal_layer:
        with torch.no_grad():
            loaded.net.mineclip_embed_linear.weight.zero_()
            loaded.net.mineclip_embed_linear.bias.zero_()
    return loaded.to(_device(device)).eval()


# ------------------------------------------------------------------------------------------ goal models

def load_embedder(path: str | Path | None = None, preset: str | None = None, device: str | torch.device = "cpu",
                  embed_dim: int | None = None, seed: int = 0):
    """MineCLIP (or a MineCLIP-layout embedder of ours) in eval mode.

    - `path` a file: loaded strictly; `preset` None or "attn" keeps the architecture stored in the file (ours) or
      `attn` (the released attn.pth stores none), another preset name is forced.
    - `path` None: random weights of `preset` (default `attn`); `path` "debug" (not a file): random weights of the
      debug preset. Seeded with `seed`, `embed_dim` wide when given.
    `embed_dim` given: a loaded embedder of another width is refused (it must match the policy's goal input)."""
    from steve1_ray.models.mineclip import MineCLIPConfig, load_mineclip

    dev = _device(device)
    path = None if path is None else local_copy(path)
    if path is not None and str(path) == RELEASED:
        path = released_world() / "mineclip.pth"
    if path is not None and Path(path).is_file():
        model = load_mineclip(path, cfg=None if preset in (None, "attn") else preset, device=dev)
    elif path is None or str(path) in RANDOM_EMBEDDERS:
        name = preset if path is None else str(path)
        cfg = MineCLIPConfig.preset(name or "attn", **({"embed_dim": embed_dim} if embed_dim else {}))
        model = load_mineclip(None, cfg, seed=seed, device=dev)
    else:
        raise FileNotFoundError(f"embedder {str(path)!r} does not exist; give MineCLIP's attn.pth, one of our "
                                f"embedder checkpoints, {RELEASED!r} (the embedded world's), or {' or '.join(RANDOM_EMBEDDERS)} (random weights, for tests)")
    if embed_dim is not None and model.embed_dim != embed_dim:
        raise ValueError(f"the embedder {path} embeds to {model.embed_dim} values but the policy expects {embed_dim}; "
                         "use the embedder the policy was trained with")
    return model.eval()


def load_prior(path: str | Path | None, dim: int | None = None, device: str | torch.device = "cpu",
               random_ok: bool = False, seed: int = 0):
    """The CVAE prior (`steve1_prior.pt` or ours) in eval mode; with no file, a random prior `dim` wide seeded
    with `seed` when `random_ok` (tests and the debug server), else None (goals are the text embeddings)."""
    import torch

    from steve1_ray.models import prior as prior_mod

    if path is not None:
        path = local_copy(path)
        prior = prior_mod.load_prior(released_world() / "prior.pt" if str(path) == RELEASED else path)
        if dim is not None and prior.input_dim != dim:
            raise ValueError(f"the prior {path} maps {prior.input_dim}-value embeddings but the embedder gives {dim}; "
                             "use the prior trained on this embedder")
    elif random_ok:
        if dim is None:
            raise ValueError("a random prior needs its width (dim)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            prior = prior_mod.TranslatorVAE(input_dim=dim, hidden_dim=512, latent_dim=dim)
    else:
        return None
    return prior.to(_device(device)).eval()


def load_goal_models(embedder: str | Path | None, prior: str | Path | None, device: str | torch.device = "cpu",
                     embed_dim: int | None = None, preset: str | None = None, random_prior: bool = False):
    """(embedder, prior or None): the goal side of STEVE-1, checked against the policy's `embed_dim`."""
    mineclip = load_embedder(embedder, preset=preset, device=device, embed_dim=embed_dim)
    return mineclip, load_prior(prior, mineclip.embed_dim, device=device, random_ok=random_prior)
