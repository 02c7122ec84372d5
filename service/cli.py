"""``densenet``: build variants, serve one, benchmark them, measure cold starts, plan capacity."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from service.variants import describe, list_variants


def _defaults(cls: Any) -> dict[str, Any]:
    """A dataclass's field defaults: the CLI's defaults are the API's, written once."""
    return {
        f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for f in dataclasses.fields(cls)
    }


def _add_list(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list", help="the variants this project builds (the Makefile reads this)")
    p.add_argument("--cpu", action="store_true", help="only the CPU revision's variants")
    p.add_argument("-v", "--verbose", action="store_true", help="runtimes and descriptions")


def cmd_list(args: argparse.Namespace) -> int:
    """Print variant names, one per line (or the table with -v)."""
    print(describe() if args.verbose else "\n".join(list_variants(cpu_only=args.cpu)))
    return 0


def _add_build(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from service.engines import list_runtimes
    from service.optimize.options import BuildOptions

    d = _defaults(BuildOptions)
    p = sub.add_parser(
        "build",
        help="build variant artifacts into --out",
        epilog="variants:\n" + describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "variants",
        nargs="+",
        metavar="VARIANT",
        help=f"one or more of: {', '.join(list_variants())}",
    )
    p.add_argument(
        "--task",
        choices=["fashion", "digits", "imagenet"],
        default=d["task"],
        help="fashion: Fashion-MNIST (the benchmark's task); digits: quick builds; imagenet",
    )
    p.add_argument("--out", type=Path, default=d["out"], help="MODEL_DIR to write into")
    p.add_argument("--weights", type=Path, help="ImageNet weights file (torchvision format)")
    p.add_argument(
        "--data",
        type=Path,
        help="fashion: folder of the four IDX files (default /usr/share/datasets/fashion-mnist); "
        "imagenet: folder with train/ and val/",
    )
    p.add_argument(
        "--synsets", type=Path, help="WordNet ids in class order (LOC_synset_mapping.txt)"
    )
    p.add_argument(
        "--runtime",
        action="append",
        dest="runtimes",
        choices=list_runtimes(),
        help="runtimes to build for (repeatable; default: every runtime the variant builds)",
    )
    p.add_argument("--seed", type=int, default=d["seed"])
    p.add_argument(
        "--image-size", type=int, default=d["image_size"], help="fashion/digits input size"
    )
    p.add_argument("--epochs", type=int, help="override the technique's epoch budget")
    p.add_argument("--batch-size", type=int, help="training batch (default: the task's)")
    p.add_argument("--train-images", type=int, help="fashion: a seeded subset of training images")
    p.add_argument("--test-images", type=int, help="fashion: a seeded subset of test images")
    p.add_argument(
        "--skip-built",
        action="store_true",
        help="skip a variant already built in --out for this task (a different task fails)",
    )
    p.add_argument("--calibration-images", type=int, default=d["calibration_images"])
    p.add_argument("--prune-ratio", type=float, default=d["prune_ratio"])
    p.add_argument("--temperature", type=float, default=d["temperature"])
    p.add_argument("--alpha", type=float, default=d["alpha"])
    p.add_argument("--student", help="distillation student (default: picked by measurement)")
    p.add_argument("--trt-batch-opt", type=int, default=d["trt_batch_opt"])
    p.add_argument("--trt-batch-max", type=int, default=d["trt_batch_max"])
    p.add_argument(
        "--trt-image-size",
        type=int,
        help="TensorRT engine input size (default: the task's, which the service serves)",
    )


def build_options(args: argparse.Namespace) -> Any:
    """The BuildOptions the parsed ``build`` arguments ask for."""
    from service.optimize.options import BuildOptions

    names = {f.name for f in dataclasses.fields(BuildOptions)}
    values = {k: v for k, v in vars(args).items() if k in names}
    if values.get("runtimes") is not None:
        values["runtimes"] = tuple(values["runtimes"])
    return BuildOptions(**values)


def already_built(variant_dir: Path, task: str) -> str | None:
    """None when ``variant_dir`` has no build, a line saying so when it holds one for ``task``.

    Raises:
        ValueError: it holds a build for another task.
    """
    from service.manifest import MANIFEST_NAME, read_manifest

    if not (variant_dir / MANIFEST_NAME).is_file():
        return None
    built = read_manifest(variant_dir).task
    if built != task:
        raise ValueError(
            f"{variant_dir} was built for task {built!r}, not {task!r}: "
            "remove it or build into another --out"
        )
    return f"{variant_dir.name}: already built for {task} in {variant_dir}"


def cmd_build(args: argparse.Namespace) -> int:
    """Build each named variant in order."""
    unknown = [v for v in args.variants if v not in list_variants()]
    if unknown:  # before torch is imported: a typo is answered at once
        known = ", ".join(list_variants())
        print(f"densenet build: unknown variant {unknown[0]!r}; known: {known}", file=sys.stderr)
        return 2
    from service.errors import ConfigurationError
    from service.optimize.pipeline import build_variant

    options = build_options(args)
    for variant in args.variants:
        if args.skip_built:
            try:
                built = already_built(options.out / variant, options.task)
            except ValueError as exc:
                print(f"densenet build {variant}: {exc}", file=sys.stderr)
                return 2
            if built is not None:
                print(built)
                continue
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
        message = err["msg"].removeprefix("Value error, ")
        name = str(err["loc"][0]).upper() if err["loc"] else ""
        if name not in message:
            message = f"{name}: {message}"
        print(f"densenet serve: {message}", file=sys.stderr)
        return 2
    import uvicorn

    from service.app import create_app, engine_from_settings
    from service.graceful import Server
    from service.protocol import http_protocol

    try:  # resolved and verified once, here: a bad artifact is one line before uvicorn starts
        engine = engine_from_settings(settings)
    except ConfigurationError as exc:
        print(f"densenet serve: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, engine=engine)
    server = Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            http=http_protocol(settings),
            ws="none",
            timeout_graceful_shutdown=30,
        )
    )
    # A failed load stops the server without a signal (uvicorn re-raises a caught SIGTERM on
    # exit, which would hide the status below).
    app.state.service.stop_process = lambda: setattr(server, "should_exit", True)
    server.run()
    load_error = app.state.service.load_error
    if load_error is not None:  # the platform must see a failure, not "exited with no error"
        print(f"densenet serve: model load failed: {load_error}", file=sys.stderr)
        return 1
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
    from service.bench import coldstart

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
    from service.bench.config import BenchConfig

    d = _defaults(BenchConfig)
    p = sub.add_parser("bench", help="benchmark every variant x runtime x batch size")
    p.add_argument("--model-dir", type=Path, default=d["model_dir"])
    p.add_argument("--out", type=Path, default=d["out"])
    p.add_argument("--variants", nargs="+", help="default: every built variant")
    p.add_argument("--runtimes", nargs="+", help="default: every runtime each variant has")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=d["batch_sizes"])
    p.add_argument("--image-size", type=int, default=d["image_size"])
    p.add_argument("--device", choices=["cpu", "cuda"], default=d["device"])
    p.add_argument("--threads", type=int, help="default: the CPUs available")
    p.add_argument(
        "--repeats", type=int, default=d["repeats"], help="interleaved repeats of the matrix"
    )
    p.add_argument(
        "--min-time", type=float, default=d["min_time"], help="seconds measured per cell"
    )
    p.add_argument(
        "--min-iters", type=int, default=d["min_iters"], help="calls measured per cell, at least"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: batch 1 and 2, 1 repeat")
    p.add_argument("--no-profile", action="store_true", help="skip the profiler traces")
    p.add_argument("--readme", type=Path, help="update this README's benchmark block")


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the matrix and write results/."""
    from service.bench.config import BenchConfig
    from service.bench.report import headline
    from service.bench.runner import run

    names = {f.name for f in dataclasses.fields(BenchConfig)}
    config = BenchConfig(
        **{k: v for k, v in vars(args).items() if k in names}, profile=not args.no_profile
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


def _add_plan(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan",
        help="Knative settings for a traffic trace and an SLO, by simulating the autoscaler",
        description="Recommend variant/runtime and Knative autoscaling for a traffic trace and "
        "an SLO, from what `make loadtest` and `make benchmark` measured, by simulating "
        "Knative's autoscaler (SimPy).",
    )
    traffic = p.add_mutually_exclusive_group(required=True)
    traffic.add_argument("--rps", type=float, help="a constant rate (requests/s)")
    traffic.add_argument(
        "--trace", type=Path, help="CSV: start_s,end_s,rps intervals, or timestamp_s per request"
    )
    p.add_argument("--seconds", type=float, default=600, help="with --rps: how long")
    p.add_argument("--p95-ms", type=float, help="SLO: p95 latency, cold starts included")
    p.add_argument("--p99-ms", type=float, help="SLO: p99 latency, cold starts included")
    p.add_argument(
        "--loadtest",
        type=Path,
        action="append",
        help="make loadtest's summary.json, one per variant/runtime (repeatable; "
        "default results/loadtest/summary.json)",
    )
    p.add_argument("--benchmark", type=Path, default=Path("results/benchmark_results.csv"))
    p.add_argument(
        "--coldstart", type=Path, help="densenet coldstart's JSON, instead of the load test's"
    )
    p.add_argument(
        "--pod-start-delay",
        type=float,
        default=0.0,
        help="seconds of scheduling + image pull + container start before the measured cold "
        "start (default 0: image on the node)",
    )
    p.add_argument("--manifest", type=Path, default=Path("k8s/densenet-cpu.yaml"))
    p.add_argument("--mode", choices=["auto", "exact", "fluid"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--seeds", type=int, default=3, help="runs per configuration; judged by the worst"
    )
    p.add_argument("--no-validate", action="store_true", help="skip the simulator's check")
    p.add_argument("--out", type=Path, default=Path("results/plan"))


def cmd_plan(args: argparse.Namespace) -> int:
    """Plan, print the Markdown, write plan.md/.json, plan-patch.yaml and plan.png."""
    import json

    import yaml

    from service.plan import measured, planner, traces

    try:
        trace = traces.read(args.trace) if args.trace else traces.constant(args.rps, args.seconds)
        slo = planner.Slo(args.p95_ms, args.p99_ms)
        sweeps = [
            measured.load_sweep(path)
            for path in args.loadtest or [Path("results/loadtest/summary.json")]
        ]
        if args.coldstart:
            sweeps = [
                dataclasses.replace(
                    s,
                    cold=measured.load_coldstarts(
                        args.coldstart, s.service.variant, s.service.runtime
                    ),
                )
                for s in sweeps
            ]
        accuracy = measured.load_benchmark(args.benchmark)
        if not args.manifest.is_file():
            raise measured.PlanInputError(f"{args.manifest}: Knative Service manifest not found")
        manifest = yaml.safe_load(args.manifest.read_text())
        try:
            label, current, timeout_s, admitted = planner.current_settings(manifest)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise measured.PlanInputError(
                f"{args.manifest}: not a Knative Service with one container ({exc!r})"
            ) from None
        plan = planner.make_plan(
            sweeps,
            accuracy,
            trace,
            slo,
            start_delay_s=args.pod_start_delay,
            timeout_s=timeout_s,
            current=(label, current),
            max_concurrency=admitted,
            seed=args.seed,
            seeds=args.seeds,
            mode=args.mode,
        )
    except measured.PlanInputError as exc:
        print(f"densenet plan: {exc}", file=sys.stderr)
        return 2
    chosen = plan.chosen.sweep
    validation = None if args.no_validate else planner.validate(chosen.service, chosen.measured)
    args.out.mkdir(parents=True, exist_ok=True)
    text = planner.markdown(plan, validation)
    (args.out / "plan.md").write_text(text)
    document = planner.summary(plan) | {"validation": validation}
    (args.out / "plan.json").write_text(json.dumps(document, indent=2, default=float) + "\n")
    patch = planner.json_patch(plan.chosen, manifest)
    (args.out / "plan-patch.yaml").write_text(
        f"# RFC 6902 patch for {args.manifest} (kustomize: patches: - path: plan-patch.yaml,\n"
        "# target: {kind: Service, name: "
        f"{manifest['metadata']['name']}}}): densenet plan, {plan.trace.name}\n"
        + yaml.safe_dump(patch, sort_keys=False)
    )
    planner.plot(plan, args.out / "plan.png")
    print(text)
    print(f"wrote {args.out}/plan.md, plan.json, plan-patch.yaml, plan.png")
    if plan.recommended is None:
        print(f"densenet plan: {plan.never or 'no configuration meets the SLO'}", file=sys.stderr)
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``densenet`` console script."""
    parser = argparse.ArgumentParser(prog="densenet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_list(sub)
    _add_build(sub)
    _add_serve(sub)
    _add_coldstart(sub)
    _add_bench(sub)
    _add_plan(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "torch._export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    handlers = {
        "list": cmd_list,
        "build": cmd_build,
        "serve": cmd_serve,
        "coldstart": cmd_coldstart,
        "bench": cmd_bench,
        "plan": cmd_plan,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
