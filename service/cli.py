"""``densenet``: build variants, serve one, benchmark them, measure cold starts."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

VARIANT_HELP = "baseline, quantized, quantized-dynamic, pruned, distilled, tensorrt"


def _add_build(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("build", help="build variant artifacts into --out")
    p.add_argument("variants", nargs="+", metavar="VARIANT", help=VARIANT_HELP)
    p.add_argument("--task", choices=["digits", "imagenet"], default="digits")
    p.add_argument("--out", type=Path, default=Path("models"), help="MODEL_DIR to write into")
    p.add_argument("--weights", type=Path, help="ImageNet weights file (torchvision format)")
    p.add_argument("--data", type=Path, help="ImageNet-layout folder with train/ and val/")
    p.add_argument(
        "--synsets", type=Path, help="WordNet ids in class order (LOC_synset_mapping.txt)"
    )
    p.add_argument(
        "--runtime",
        action="append",
        dest="runtimes",
        choices=["torch", "onnxruntime", "tensorrt"],
        help="runtimes to build for (repeatable; default: every runtime the variant supports)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=32, help="digits task input size")
    p.add_argument("--epochs", type=int, help="override the technique's epoch budget")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--calibration-images", type=int, default=256)
    p.add_argument("--prune-ratio", type=float, default=0.35)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.7)
    p.add_argument("--student", help="distillation student (default: picked by measurement)")
    p.add_argument("--trt-batch-opt", type=int, default=32)
    p.add_argument("--trt-batch-max", type=int, default=128)
    p.add_argument(
        "--trt-image-size",
        type=int,
        help="TensorRT engine input size (default: the task's, which the service serves)",
    )


def cmd_build(args: argparse.Namespace) -> int:
    """Build each named variant in order."""
    from service.build import build_variant
    from service.errors import ConfigurationError
    from service.optimize import list_variants
    from service.optimize.common import BuildOptions

    unknown = [v for v in args.variants if v not in list_variants()]
    if unknown:
        known = ", ".join(list_variants())
        print(f"densenet build: unknown variant {unknown[0]!r}; known: {known}", file=sys.stderr)
        return 2
    options = BuildOptions(
        task=args.task,
        out=args.out,
        weights=args.weights,
        data=args.data,
        synsets=args.synsets,
        runtimes=tuple(args.runtimes or ("torch", "onnxruntime", "tensorrt")),
        seed=args.seed,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        calibration_images=args.calibration_images,
        prune_ratio=args.prune_ratio,
        temperature=args.temperature,
        alpha=args.alpha,
        student=args.student,
        trt_batch_opt=args.trt_batch_opt,
        trt_batch_max=args.trt_batch_max,
        trt_image_size=args.trt_image_size,
    )
    for variant in args.variants:
        try:
            path = build_variant(variant, options)
        except (ConfigurationError, ValueError, FileNotFoundError) as exc:
            print(f"densenet build {variant}: {exc}", file=sys.stderr)
            return 2
        print(f"built {variant} -> {path}")
    return 0


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve MODEL_VARIANT on MODEL_RUNTIME (env settings)")
    p.add_argument("--host", help="override HOST")
    p.add_argument("--port", type=int, help="override PORT")


def cmd_serve(args: argparse.Namespace) -> int:
    """Validate the settings and artifact, then run uvicorn."""
    from pydantic import ValidationError

    from service.config import Settings
    from service.errors import ConfigurationError

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        print(f"densenet serve: {err['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    import uvicorn

    from service.app import create_app, resolve_artifact

    try:
        resolve_artifact(settings)
    except ConfigurationError as exc:
        print(f"densenet serve: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    return 0


def _add_coldstart(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("coldstart", help="time exec -> port -> ready -> first predict")
    p.add_argument(
        "--variant", action="append", dest="variants", help="repeatable; default baseline"
    )
    p.add_argument(
        "--runtime", action="append", dest="runtimes", help="repeatable; default both CPU runtimes"
    )
    p.add_argument("--model-dir", type=Path, default=Path("models"))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, help="NUM_THREADS for the server")
    p.add_argument("--out", type=Path, default=Path("results/coldstart.json"))


def cmd_coldstart(args: argparse.Namespace) -> int:
    """Cold starts for each variant x runtime; prints a table, writes JSON + Markdown."""
    from service import coldstart

    extra = {"NUM_THREADS": str(args.threads)} if args.threads else {}
    results = []
    for variant in args.variants or ["baseline"]:
        for runtime in args.runtimes or ["onnxruntime", "torch"]:
            print(f"cold start: {variant} on {runtime}, {args.runs} runs", file=sys.stderr)
            results.append(coldstart.run(variant, runtime, args.model_dir, args.runs, extra))
    coldstart.write(results, args.out)
    print(coldstart.format_table(results))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmark every variant x runtime x batch size")
    p.add_argument("--model-dir", type=Path, default=Path("models"))
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--variants", nargs="+", help="default: every built variant")
    p.add_argument("--runtimes", nargs="+", help="default: every runtime each variant has")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, help="default: the CPUs available")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the matrix")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds measured per cell")
    p.add_argument("--min-iters", type=int, default=5, help="calls measured per cell, at least")
    p.add_argument("--quick", action="store_true", help="smoke run: batch 1 and 2, 1 repeat")
    p.add_argument("--no-profile", action="store_true", help="skip the profiler traces")
    p.add_argument("--readme", type=Path, help="update this README's benchmark block")


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the matrix and write results/."""
    from service.bench.report import headline
    from service.bench.runner import BenchConfig, run

    config = BenchConfig(
        model_dir=args.model_dir,
        out=args.out,
        variants=args.variants,
        runtimes=args.runtimes,
        batch_sizes=args.batch_sizes,
        image_size=args.image_size,
        device=args.device,
        threads=args.threads,
        repeats=args.repeats,
        min_time=args.min_time,
        min_iters=args.min_iters,
        profile=not args.no_profile,
        readme=args.readme,
    )
    if args.quick:
        config.batch_sizes, config.repeats, config.min_time, config.min_iters = [1, 2], 1, 0.2, 3
    try:
        document = run(config)
    except (FileNotFoundError, ValueError) as exc:
        print(f"densenet bench: {exc}", file=sys.stderr)
        return 2
    print(headline(document["rows"]))
    print(f"wrote {args.out}/REPORT.md, benchmark_results.csv/.json, plots, traces, tensorboard/")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``densenet`` console script."""
    parser = argparse.ArgumentParser(prog="densenet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_build(sub)
    _add_serve(sub)
    _add_coldstart(sub)
    _add_bench(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "torch._export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handlers = {
        "build": cmd_build,
        "serve": cmd_serve,
        "coldstart": cmd_coldstart,
        "bench": cmd_bench,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
