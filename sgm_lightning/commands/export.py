"""``sgm export --ckpt PATH --out DIR [--format sgm|diffusers] [--push-to-hub REPO]``.

``--format sgm`` (the default): the EMA weights as ``DIR/model.safetensors`` + the resolved
``DIR/config.yaml``, which ``sgm sample --ckpt DIR`` and ``load_model(DIR)`` read.
``--format diffusers``: a ``ScoreSdeVePipeline`` folder (``unet/``, ``scheduler/``,
``model_index.json``) for the NCSN++ networks diffusers' ``UNet2DModel`` can represent, with a VE
SDE (:func:`sgm_lightning.nets.diffusers_io.to_diffusers`); anything else is refused in one line
before a file is written. ``--push-to-hub REPO`` then uploads DIR with ``huggingface_hub``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export EMA weights for inference (ours: model.safetensors + config.yaml; or diffusers)",
        description="Write the EMA weights of a training checkpoint as DIR/model.safetensors and the "
        "resolved config as DIR/config.yaml (--format sgm, the default; `sgm sample --ckpt DIR` and "
        "load_model(DIR) read them), or as a diffusers ScoreSdeVePipeline folder (--format diffusers: "
        "VE NCSN++ networks of diffusers' UNet2DModel family only).",
    )
    p.add_argument("--ckpt", required=True, help="a .ckpt written by sgm train, or an export folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="sgm", choices=("sgm", "diffusers"),
                   help="sgm: model.safetensors + config.yaml (default); diffusers: unet/ + scheduler/ + "
                   "model_index.json")
    p.add_argument("--push-to-hub", default=None, metavar="REPO",
                   help="upload DIR to this Hugging Face Hub repo (needs huggingface_hub and a login)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..paths import check_output_dir

    check_output_dir(args.out, "--out")
    if args.format == "diffusers":
        out = export_diffusers(args.ckpt, args.out)
        print(f"exported {args.ckpt} -> {out} (diffusers ScoreSdeVePipeline: unet/, scheduler/, model_index.json)")
    else:
        from ..checkpoint import export

        out = export(args.ckpt, args.out)  # files get the user's umask
        print(f"exported {args.ckpt} -> {out}/model.safetensors, {out}/config.yaml")
    if args.push_to_hub:
        url = push_to_hub(out, args.push_to_hub)
        print(f"pushed {out} -> {url}")
    return 0


def export_diffusers(ckpt: str, out_dir: str) -> Path:
    """Write the EMA network of ``ckpt`` as a diffusers folder; refuse (before writing) a non-VE
    SDE or a network diffusers' UNet2DModel cannot represent."""
    from ..checkpoint import DIFFUSERS_INFO, load_model
    from ..nets.diffusers_io import to_diffusers
    from ..paths import write_text_atomic
    from ..sampling import SAMPLERS, sampler_settings
    from ..sde import VESDE

    model = load_model(ckpt)
    if not isinstance(model.sde, VESDE):
        raise ValueError(f"--format diffusers: {ckpt} was trained with sde.name={model.cfg.sde.name}; diffusers' "
                         "ScoreSdeVeScheduler is a VE SDE, so only sde.name=ve models export")
    # the scheduler holds a PC sampler's snr and corrector steps: this checkpoint's, else pc's defaults
    pc_defaults = {k: p.default for k, p in inspect.signature(SAMPLERS["pc"]).parameters.items()}
    _, pc = sampler_settings(model.cfg.sample, sampler="pc", per_sample=False)
    sde = model.sde
    out = to_diffusers(model.net, out_dir, sde.sigma_min, sde.sigma_max, num_train_timesteps=sde.N,
                       snr=float(pc.get("snr", pc_defaults["snr"])),
                       correct_steps=int(pc.get("corrector_steps", pc_defaults["corrector_steps"])))
    name, options = sampler_settings(model.cfg.sample, per_sample=False)  # sgm sample --ckpt DIR uses these
    info = {"data_centered": bool(model.centered), "sample": {"sampler": name, "options": options}}
    write_text_atomic(out / DIFFUSERS_INFO, json.dumps(info, indent=2) + "\n")
    if model.centered:
        print(f"sgm export: note: {ckpt} was trained on images in [-1, 1]; ScoreSdeVePipeline clamps its samples "
              "to [0, 1], so use its unet with our samplers (sgm sample --ckpt DIR reads the range from "
              f"{DIFFUSERS_INFO})", file=sys.stderr)
    return out


def push_to_hub(folder: Path, repo: str) -> str:
    """Upload ``folder`` to the Hub repo ``repo`` (created if missing); returns the repo URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ValueError("--push-to-hub: needs huggingface_hub (pip install sgm-lightning[diffusers])") from None
    api = HfApi()
    url = api.create_repo(repo_id=repo, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="sgm export")
    return str(url)
