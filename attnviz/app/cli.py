"""The ``attnviz`` command line (also ``python -m attnviz``): serve, explain, models, train, eval, sanity, claims, synth,
bench.

Each subcommand is a thin wrapper over the same functions the web page uses. User errors print one
line to stderr and exit with status 2; an unexpected crash exits with 1.

Longer than 450 lines: each sub-command's options (``_add_<command>``) sit beside its handler
(``cmd_<command>``), so one command is read in one place; splitting them apart would separate the two halves.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from attnviz.core.methods import help_text as methods_help
from attnviz.errors import EXIT_USER_ERROR, AttnvizError

EVAL_OUT = "attnviz-eval"
SANITY_OUT = "attnviz-sanity"
CLAIMS_OUT = "attnviz-claims"
DEVICE_HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps (default: $ATTNVIZ_DEVICE, else auto)"


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _load_models_file(args: argparse.Namespace) -> list[str]:
    """Register the models of ``--models-file`` (else ``$ATTNVIZ_MODELS_FILE``), validated completely first.

    Returns their names, in file order, when the file was given with ``--models-file`` (explain and eval
    then use them as the default selection); a file named only by the environment variable makes its
    models available without changing any default.
    """
    from attnviz.zoo.modelsfile import ENV_VAR, load_models_file

    path = getattr(args, "models_file", None) or os.environ.get(ENV_VAR, "").strip()
    if not path:
        return []
    names = [spec.name for spec in load_models_file(path)]
    return names if getattr(args, "models_file", None) else []


def cmd_serve(args: argparse.Namespace) -> int:
    from attnviz.core.devices import ENV_VAR, resolve_device

    device = resolve_device(args.device)  # an absent device stops here, before the port is bound
    os.environ[ENV_VAR] = str(device)     # the page's requests run there (their device is "the default")
    from attnviz.app.web.page import launch

    _load_models_file(args)  # before launching: a bad entry stops here, the server never starts half-configured
    print(f"attnviz: models run on {device}", file=sys.stderr)
    from attnviz.app.shutdown import serve_until_stopped

    # SIGTERM (docker stop) or Ctrl-C closes the server and exits 0 (attnviz/app/shutdown.py says why)
    return serve_until_stopped(lambda: launch(host=args.host, port=args.port, models=args.models, share=False,
                                              prevent_thread_lock=True))


def cmd_models(args: argparse.Namespace) -> int:
    from attnviz.zoo.registry import all_specs

    if args.markdown:
        from attnviz.zoo.registry import bundled_table_markdown

        print(bundled_table_markdown())
        return 0
    if args.architectures:
        import models

        print(aligned_table(["architecture", "attention", "source"],
                            [[name, models.get(name).attention, models.get(name).source]
                             for name in models.available()]))
        return 0
    _load_models_file(args)
    specs = all_specs()
    if not specs:
        print("No models registered.")
        return 0
    print(aligned_table(["name", "model", "source", "status"],
                        [[spec.name, spec.display_name, spec.source, _model_status(spec)] for spec in specs]))
    if args.devices:   # asks torch, which takes longer to start than the whole list (and ~300 MB more)
        from attnviz.core.devices import available_devices, resolve_device

        print(f"devices: {', '.join(available_devices())} (auto = {resolve_device('auto')})")
    else:
        print("(the devices models can run on: attnviz models --devices)")
    return 0


def _model_status(spec) -> str:
    if spec.weights.available():
        status = "available offline"
        if spec.card.get("test_accuracy") is not None:
            status += f", test accuracy {spec.card['test_accuracy']:.1%}"
        return status
    return f"not downloaded — {spec.weights.download_hint or 'weights missing'}"


def aligned_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell (the last one left ragged), under a header line."""
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header) - 1)]
    return "\n".join("  ".join([*(f"{str(c):<{w}}" for c, w in zip(r, widths)), str(r[-1])]).rstrip()
                     for r in [header, *rows])


def chosen_models(args: argparse.Namespace) -> list[str] | None:
    """The models a command runs: ``--models``, after a user checkpoint (``--arch`` + ``--checkpoint``, optional
    ``--classes``) registered in the zoo under ``<arch>@<file stem>``. One helper for ``explain`` and ``eval``;
    None means "the command's default set" (the bundled zoo).

    ``--models-file`` (or ``$ATTNVIZ_MODELS_FILE``) registers its models here; without ``--models`` they are
    the ones that run.
    """
    from_file = _load_models_file(args)  # registered even when --models picks among them
    chosen = list(args.models) if args.models else (list(from_file) if from_file else None)
    if args.checkpoint or args.arch:
        if not (args.checkpoint and args.arch):
            raise AttnvizError("--checkpoint and --arch go together: which architecture is the checkpoint for?")
        from attnviz.zoo import registry as zoo
        from attnviz.zoo.checkpoints import checkpoint_spec
        from attnviz.zoo.files import save_safetensors

        spec = zoo.register(checkpoint_spec(args.arch, args.checkpoint, args.classes, search_path=Path.cwd()), replace=True)
        if getattr(args, "save_safetensors", None):
            save_safetensors(zoo.load(spec).model, args.save_safetensors)
            print(f"wrote {args.save_safetensors}", file=sys.stderr)
        chosen = [spec.name] + (chosen or [])
    return chosen


def _add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default=None,
                   help="architecture of --checkpoint: a registry name (`attnviz models --architectures`), "
                        "timm:<name> or python:package.module:function")
    p.add_argument("--checkpoint", default=None, help=".safetensors, or .pth/.pt read with weights_only=True")
    p.add_argument("--classes", default=None, help="class names for --checkpoint: .txt (one per line) or .json")


def cmd_explain(args: argparse.Namespace) -> int:
    from attnviz.core.devices import resolve_device
    from attnviz.core.distributed import current, rank_device

    resolve_device(rank_device(args.device, current()))  # an absent device: one line, before anything loads
    from attnviz.app.batch import explain_paths
    from attnviz.core.devices import use_threads

    use_threads(args.threads)

    chosen = chosen_models(args)
    return explain_paths(args.images, out_dir=Path(args.out), models=chosen, methods=args.methods,
                         target=args.target, layer=args.layer, progress=not args.quiet, npz=args.npz,
                         contrast=args.contrast, eigen_smooth=args.eigen_smooth, aug_smooth=args.aug_smooth,
                         refine=args.refine, sess=args.sess,
                         device=args.device, amp=args.amp, batch_size=args.batch_size, workers=args.workers)


def cmd_weights(args: argparse.Namespace) -> int:
    from attnviz.zoo.imagenet import SOURCES, download, resolve_names, weights_dir

    if args.action == "list":
        print(f"cache: {weights_dir()}")
        for src in SOURCES:
            state = "downloaded" if src.path.is_file() else "not downloaded"
            print(f"{src.name:<34} {src.library:<12} {state:<15} {src.url}")
            print(f"{'':<34} verified by: {src.verification}")
        return 0
    for src in resolve_names(args.names, args.set or []):
        path = download(src, progress=not args.quiet)
        print(f"{src.name}: {path} (sha256 verified)", file=sys.stderr)
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from attnviz.zoo.architectures import parse_arch
    from attnviz.zoo.checkpoints import guess_architecture, load_into
    from attnviz.zoo.files import read_checkpoint, save_safetensors

    arch = parse_arch(args.arch, search_path=Path.cwd()) if args.arch else None  # python: modules from here too
    state = read_checkpoint(args.file)
    if args.action == "inspect":
        guess, score = guess_architecture(state)
        print(f"{len(state)} tensors, {sum(t.numel() for t in state.values()):,} values")
        print(f"closest architecture: {guess} (key overlap {score:.0%})")
        if arch:
            load_into(arch, state)
            print(f"loads strictly into {args.arch}")
        return 0
    if not arch or not args.out:
        raise AttnvizError("convert needs --arch (checked by a strict load) and --out FILE.safetensors")
    save_safetensors(load_into(arch, state), args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from attnviz.zoo.cards import REPLICATES_DIR, WEIGHTS_DIR
    from attnviz.zoo.training import RECIPE, RECIPES, TRAINABLE, ZOO_ATTENTION, git_commit, train_variant

    kinds = ZOO_ATTENTION if args.attention == ["all"] else args.attention
    unknown = [k for k in kinds if k not in TRAINABLE]
    if unknown:
        raise AttnvizError(f"Unknown attention type(s) {', '.join(unknown)}; choose from {', '.join(TRAINABLE)}.")
    recipe_name = "vit" if kinds == ["vit"] else args.recipe
    if recipe_name == "vit" and kinds != ["vit"]:
        raise AttnvizError("--recipe vit trains the ViT only (--attention vit); the CNNs share the shared recipe.")
    recipe = dict(RECIPES[recipe_name])
    for key, value in (("epochs", args.epochs), ("train_scenes", args.scenes), ("torch_seed", args.seed)):
        if value is not None:
            recipe[key] = value
    commit = git_commit()
    replicate = recipe["torch_seed"] != RECIPE["torch_seed"]
    out = Path(args.out) if args.out else (REPLICATES_DIR if replicate else WEIGHTS_DIR)
    for kind in kinds:
        train_variant(kind, out, recipe, progress=not args.quiet, commit=commit, device=args.device or "cpu",
                      recipe_name=recipe_name, resume=args.resume)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from attnviz.evaluation.run import run_eval

    chosen = chosen_models(args)
    if chosen and args.data is None:
        check_benchmark_models(chosen)
    # run_eval owns the defaults: pass on only what was given
    given = {key: value for key, value in (("n", args.n), ("methods", args.methods), ("road_scenes", args.road))
             if value is not None}
    run_eval(models=chosen, seed=args.seed, out=Path(args.out), progress=not args.quiet,
             update=args.update, data=args.data, batch_size=args.batch_size, device=args.device,
             faithfulness=not args.localisation_only, command=args.command_line, threads=args.threads, **given)
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from attnviz.evaluation.claims import run_claims

    chosen = chosen_models(args)
    if chosen and args.data is None and args.results is None:
        check_benchmark_models(chosen)
    run_claims(models=chosen, data=args.data, n=args.n, out=Path(args.out), results=args.results,
               device=args.device, batch_size=args.batch_size, progress=not args.quiet, command=args.command_line)
    return 0


def cmd_sanity(args: argparse.Namespace) -> int:
    from attnviz.evaluation.sanity import run_sanity

    result = run_sanity(models=args.models, n=args.n, seed=args.seed, methods=args.methods, out=Path(args.out),
                        progress=not args.quiet, device=args.device, command=args.command_line,
                        threads=args.threads)
    flagged = [f"{row['model']}/{key}" for row in result["models"] for key, entry in row["maps"].items()
               if entry["keeps_structure"]]
    print(f"wrote {Path(args.out) / 'sanity.json'}, sanity.md and sanity.png ({result['seconds']:.0f} s); maps that "
          f"keep their structure with every layer random: {', '.join(flagged) or 'none'}", file=sys.stderr)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from attnviz.data.export import export_scenes
    from attnviz.data.scenes import EVAL_SEED

    seed = EVAL_SEED if args.seed is None else args.seed
    done = export_scenes(args.dir, args.n, seed, boxes=args.boxes, progress=not args.quiet)
    print(f"wrote {done.n} scenes of data seed {done.seed} with {done.ground_truth} to {done.root}", file=sys.stderr)
    return 0


def check_benchmark_models(names: Sequence[str]) -> None:
    """`attnviz eval` scores models on the shape benchmark: refuse a model with another label set."""
    from attnviz.data.synth import CLASS_NAMES
    from attnviz.zoo.registry import get_spec

    for name in names:
        spec = get_spec(name)
        if tuple(spec.class_names) != tuple(CLASS_NAMES):
            raise AttnvizError(f"{name} predicts {spec.num_classes} classes, not the benchmark's {len(CLASS_NAMES)} "
                               f"shapes ({', '.join(CLASS_NAMES)}, in that order); attnviz eval can only score "
                               "models trained on the benchmark; score other models on your own images with --data DIR.")


def cmd_bench(args: argparse.Namespace) -> int:
    import runpy

    from attnviz.zoo.cards import PROJECT_ROOT

    script = PROJECT_ROOT / "benchmarks" / "cam_engine.py"
    if not script.is_file():
        raise AttnvizError("benchmarks/cam_engine.py is not in this installation (it ships with the source tree).")
    sys.argv = [str(script), "--repeats", str(args.repeats), "--batch", str(args.batch)]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def _threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own, one per core)")


def _models_file_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-file", default=None, metavar="TOML",
                   help="register your own models from a models.toml ([[model]] tables: name, arch, checkpoint, "
                        "classes, ...); without it, $ATTNVIZ_MODELS_FILE is registered when set")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="start the web page")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--models", type=_csv, default=None, help="comma-separated default selection")
    _models_file_option(p)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.set_defaults(func=cmd_serve)


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="grids + predictions for images or folders",
                       description="One grid PNG and JSON report per image, plus predictions.csv and scores.csv "
                                   "(localisation scores when a <name>_mask.png sits beside an image or the image "
                                   "is a bundled benchmark scene). Unreadable files and folder files that are not "
                                   "supported images are reported and skipped; the exit status is then 1. Under "
                                   "`torchrun --nproc-per-node N -m attnviz explain ...` the images are shared "
                                   "among the N processes and rank 0 writes the same folder.")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--models", type=_csv, default=None,
                   help="comma-separated (default: the --models-file models, else the bundled zoo's default selection)")
    _models_file_option(p)
    p.add_argument("--methods", type=_csv, default=["gradcam", "gradcam++"], help=methods_help())
    p.add_argument("--target", default=None, help="class name or index (default: each model's top-1)")
    p.add_argument("--contrast", default=None,
                   help="explain the target versus this class (score = logit target - logit contrast)")
    p.add_argument("--layer", type=_csv, default=None,
                   help="CAM layer, e.g. layer2 (default: each model's own); several, comma-separated "
                        "(layer2,layer3,layer4), are fused into one map as pytorch-grad-cam does")
    p.add_argument("--eigen-smooth", action="store_true",
                   help="keep each map's first principal component (pytorch-grad-cam's eigen_smooth)")
    p.add_argument("--aug-smooth", action="store_true",
                   help="average over flipped and brightness-scaled copies (pytorch-grad-cam's aug_smooth; 6x work)")
    p.add_argument("--refine", action="store_true",
                   help="RefineCAM (pytorch-grad-cam): multiply the maps of the --layer layers (two or more) instead "
                        "of averaging them; applies to the one-pass methods")
    p.add_argument("--sess", type=int, nargs="?", const=12, default=0, metavar="SCALES",
                   help="SESS (pytorch-grad-cam): each one-pass method's map fused over sliding-window patches of "
                        "the image at SCALES scales (default 12: ~120 patches per image, multi-pass)")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.add_argument("--amp", action="store_true", help="float16 autocast on CUDA (on other devices: float32)")
    p.add_argument("--batch-size", type=int, default=16, help="images per model pass (default 16)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes decoding images (default min(4, cores); 0: decode in the main process)")
    p.add_argument("--out", default="attnviz-out", help="output folder")
    _add_checkpoint_options(p)
    p.add_argument("--save-safetensors", default=None, help="also write the loaded checkpoint as .safetensors")
    p.add_argument("--npz", action="store_true", help="also write <image>_maps.npz (raw maps and logits)")
    _threads_option(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_explain)


def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="download ImageNet weights into the cache (an explicit, offline-safe step)")
    p.add_argument("action", choices=["download", "list"])
    p.add_argument("names", nargs="*", help="models to download, e.g. tv-resnet50 timm-seresnet50")
    p.add_argument("--set", action="append", help="a named set: imagenet (all ImageNet models)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_weights)


def _add_checkpoint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("checkpoint", help="inspect a checkpoint, or convert it to .safetensors")
    p.add_argument("action", choices=["inspect", "convert"])
    p.add_argument("file")
    p.add_argument("--arch", default=None)
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_checkpoint)


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registry and what is available offline")
    p.add_argument("--architectures", action="store_true", help="list buildable architectures (for --arch)")
    p.add_argument("--markdown", action="store_true", help="the bundled zoo as a markdown table (README)")
    p.add_argument("--devices", action="store_true",
                   help="also list the devices models can run on (starts torch: a few seconds more)")
    _models_file_option(p)
    p.set_defaults(func=cmd_models)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train bundled-zoo models from their recipes (resumable)",
                       description="Trains each model from scratch and writes <name>.safetensors + <name>.json (its "
                                   "model card). Every 200 steps the run's whole state (weights, optimizer, "
                                   "schedule position, RNG states) goes to $ATTNVIZ_CACHE/train-state/ (default "
                                   "~/.cache/attnviz/train-state/, outside git); --resume continues a stopped run "
                                   "from there and ends with the same weights as an uninterrupted run.")
    p.add_argument("--attention", type=_csv, default=["all"],
                   help="comma-separated attention keys: none,se,eca,cbam,triplet,coord,bam,nonlocal,gc,cc,danet,"
                        "mhsa,stn (default: all of these), or vit (the ViT, with its own recipe)")
    p.add_argument("--out", default=None,
                   help="output folder (default: models/weights; models/weights/replicates with --seed)")
    p.add_argument("--seed", type=int, default=None,
                   help="training seed (initialisation, batch order, augmentation draws); any other seed than the "
                        "recipe's 0 trains a replicate <name>_seed<S> outside the bundled set")
    p.add_argument("--recipe", choices=["shared", "vit"], default="shared",
                   help="shared: the CNNs' recipe (SGD); vit: the ViT's own (AdamW, hybrid trunk started from the "
                        "bundled baseline; see attnviz/zoo/training.py VIT_RECIPE). --attention vit implies it")
    p.add_argument("--resume", action="store_true",
                   help="continue each model from its saved state in $ATTNVIZ_CACHE/train-state/ (a run killed "
                        "midway loses at most 200 steps); without a saved state it starts from scratch")
    p.add_argument("--device", default=None, help="cpu (default: the zoo's cards were trained on 2 CPU cores), "
                                                    "cuda, cuda:N")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--scenes", type=int, default=None, help="training scenes (default: the recipe's)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)


def _scored_images_options(p: argparse.ArgumentParser, *, n_help: str) -> None:
    """The images eval and claims score and the models they come from: one wording for both commands."""
    _models_file_option(p)
    p.add_argument("--data", default=None, help="score DIR/<class>/<image> files with <stem>_mask.png or VOC "
                                                "<stem>.xml ground truth instead of the benchmark scenes; DIR may "
                                                "be a .zip of that layout (unpacked safely into a temporary folder)")
    _add_checkpoint_options(p)
    p.add_argument("--n", "--n-images", dest="n", type=int, default=None, help=n_help)


def _pass_options(p: argparse.ArgumentParser) -> None:
    """How the scoring passes run (eval, claims)."""
    p.add_argument("--batch-size", type=int, default=32, help="images per model pass (default 32)")
    p.add_argument("--device", default=None, help=DEVICE_HELP)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="localisation and faithfulness metrics on held-out scenes or your own images",
                       description="Scores every CAM method's map (and each attention module's own map) for the "
                                   "true class: pointing game, energy pointing game and IoU against the object's "
                                   "mask or boxes, deletion / insertion AUC, ROAD, and agreement with the "
                                   "baseline's maps, with 95 % bootstrap CIs. Writes OUT/results.json, results.md "
                                   "and results.png. Under `torchrun --nproc-per-node N -m attnviz eval ...` the "
                                   "images are split across the processes and rank 0 writes the same files.")
    p.add_argument("--models", type=_csv, default=None,
                   help="comma-separated (default: the --models-file models, else the bundled zoo); training-seed "
                        "replicates such as se_seed1 go into the file's replicates list")
    p.add_argument("--methods", type=_csv, default=None, help="CAM methods (default: the five classic one-pass "
                                                              "methods)")
    _scored_images_options(p, n_help="benchmark scenes (default 200); with --data at most N images (default all). "
                                     "Under torchrun write --n-images: torchrun takes --n for an abbreviation of "
                                     "its own --nnodes")
    p.add_argument("--road", type=int, default=None,
                   help="the first N images also get ROAD (default 30; its imputation is the costliest metric)")
    p.add_argument("--seed", type=int, default=None, help="data seed of the benchmark scenes (default: the eval seed)")
    p.add_argument("--localisation-only", action="store_true",
                   help="skip deletion / insertion and ROAD (their perturbed copies are most of the cost)")
    _pass_options(p)
    p.add_argument("--out", default=EVAL_OUT, metavar="DIR",
                   help=f"folder for results.json, results.md and results.png (default: ./{EVAL_OUT}; the shipped "
                        "results are in docs/)")
    p.add_argument("--update", action="store_true",
                   help="keep the other models' rows of OUT/results.json (same settings); re-run only --models")
    _threads_option(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)


def _add_claims(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("claims", help="test the attention papers' claims: one row per claim with its CI and verdict",
                       description="Tests each claim of attnviz.evaluation.claims (CBAM covers more of the object, "
                                   "Triplet is tighter, CA's gates locate the object, ...) on the models' maps and "
                                   "gates: the mean per-image difference with its 95 % bootstrap CI, the verdict "
                                   "(holds / does not hold / inconclusive) and its sign in every training seed. "
                                   "Reads --results (default OUT/results.json; without it `attnviz eval "
                                   "--localisation-only` runs first) and writes OUT/claims.json and claims.md.")
    p.add_argument("--models", type=_csv, default=None,
                   help="comma-separated (default: every model of results.json, else the bundled zoo); their "
                        "training-seed replicates join")
    _scored_images_options(p, n_help="images when eval runs first: benchmark scenes (default 200), or at most N "
                                     "of --data")
    p.add_argument("--results", default=None, metavar="FILE",
                   help="the results.json to read (default: OUT/results.json, made by eval when absent)")
    _pass_options(p)
    p.add_argument("--out", default=CLAIMS_OUT, metavar="DIR",
                   help=f"folder for claims.json and claims.md (default: ./{CLAIMS_OUT}; the shipped ones are in "
                        "docs/)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_claims)


def _add_sanity(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sanity", help="model-randomisation and random-target sanity checks of every map",
                       description="Adebayo et al. 2018: re-initialise the model layer group by layer group from "
                                   "the classifier down to the stem and compare each map (every CAM method, the "
                                   "attention module's own map) with the original (Spearman, SSIM); also the map "
                                   "for a random other class. Writes OUT/sanity.json, sanity.md and sanity.png.")
    p.add_argument("--models", type=_csv, default=None, help="comma-separated (default: the bundled zoo)")
    p.add_argument("--methods", type=_csv, default=None, help="CAM methods (default: every one-pass method)")
    p.add_argument("--n", type=int, default=8, help="benchmark scenes per model (default 8)")
    p.add_argument("--seed", type=int, default=None, help="data seed of the scenes (default: the eval seed)")
    p.add_argument("--out", default=SANITY_OUT, metavar="DIR",
                   help=f"folder for sanity.json, sanity.md and sanity.png (default: ./{SANITY_OUT}; the shipped "
                        "results are in docs/)")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    _threads_option(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_sanity)


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="benchmark scenes as a dataset folder")
    actions = p.add_subparsers(dest="action", required=True)
    e = actions.add_parser("export", help="write scenes as DIR/<class>/<stem>.png with masks or VOC boxes",
                           description="Writes the scenes `attnviz eval --n N --seed S` scores, losslessly, as "
                                       "DIR/<class>/<stem>.png plus <stem>_mask.png (or <stem>.xml Pascal VOC boxes "
                                       "with --boxes). DIR must be new or empty.")
    e.add_argument("dir")
    e.add_argument("--n", type=int, default=200, help="number of scenes (default 200, as attnviz eval)")
    e.add_argument("--seed", type=int, default=None, help="data seed (default: the eval seed, as attnviz eval)")
    e.add_argument("--boxes", action="store_true", help="VOC XML boxes of the visible object instead of masks")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_synth)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="CAM engine vs pytorch-grad-cam benchmark (benchmarks/cam_engine.py)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.set_defaults(func=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    """Every sub-command's options; each ``_add_<command>`` sits above and mirrors its ``cmd_<command>``."""
    parser = argparse.ArgumentParser(prog="attnviz", description="See what attention modules change in a CNN.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_explain(sub)
    _add_weights(sub)
    _add_checkpoint(sub)
    _add_models(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_sanity(sub)
    _add_claims(sub)
    _add_synth(sub)
    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, process_entry: bool | None = None) -> int:
    """The ``attnviz`` command. ``process_entry`` (default: ``argv is None``, the console script): this call is the
    whole process, so a stopped ``serve`` ends it at once (:func:`attnviz.app.shutdown.exit_now`)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    given = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(given)
    args.command_line = shlex.join(["attnviz", *given])   # recorded in results.md / sanity.md as typed
    code = _run(args)
    if args.command == "serve" and (argv is None if process_entry is None else process_entry):
        from attnviz.app.shutdown import exit_now

        exit_now(code)
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except AttnvizError as exc:
        print(f"attnviz: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("attnviz: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
