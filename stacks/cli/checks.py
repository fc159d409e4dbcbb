"""`stacks verify` (compare what was made with what was recorded) and `stacks deploy`."""

from __future__ import annotations

import argparse
import json

from stacks.cli.context import context_from_args, load_stack, selected_layers
from stacks.errors import UsageError


def cmd_verify(args: argparse.Namespace) -> int:
    """`stacks verify`: check a stack's outputs, or a deployed folder, against their records."""
    import os
    from pathlib import Path

    from stacks.pipeline.project_lock import project_lock
    from stacks.pipeline.steps import verify_stack
    from stacks.pipeline.verify import render, verify_deployed, verify_release

    if args.spec is None and args.release is None and args.output_dir is not None:
        args.release = args.output_dir  # no spec, no stamps: the folder's own metadata
    if sum(given is not None for given in (args.spec, args.deployed, args.release)) != 1:
        raise UsageError(
            "verify needs one of SPEC, --deployed DIR or --release DIR",
            hint="`stacks verify stack.toml` checks a stack; `stacks verify --deployed DIR` a "
            "deployment; `stacks verify --release DIR` a publish or merged folder",
        )
    if args.deployed is not None:
        findings = verify_deployed(Path(os.path.abspath(args.deployed)))
    elif args.release is not None:
        findings = verify_release(Path(os.path.abspath(args.release)))
    else:
        spec = load_stack(args)
        layers = selected_layers(args, spec, with_dependents=False)
        ctx = context_from_args(args, spec).with_options(
            output_dir=Path(os.path.abspath(args.output_dir)) if args.output_dir else None,
            export_dir=Path(os.path.abspath(args.export_dir)) if args.export_dir else None,
        )
        # Under the project lock: a run swapping folders in would look like a difference.
        with project_lock(ctx.cache_dir, wait=not args.no_wait):
            findings = verify_stack(ctx, list(layers), args.spec)
    failed = any(f.failed for f in findings)
    if args.json:
        document = {"ok": not failed, "findings": [f.to_json() for f in findings]}
        print(json.dumps(document, indent=2))
    else:
        text = render(findings, quiet=args.quiet)
        if text:
            print(text)
    return 1 if failed else 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """`stacks deploy`: deploy published archives on a target (the stand-alone deploy script)."""
    from stacks.deploy.deploy import main as deploy_main

    flags = [
        flag
        for flag, given in (
            ("--quiet", args.quiet),
            ("--dry-run", args.dry_run),
            ("--json", args.json),
        )
        if given
    ]
    variants = [option for name in args.variant for option in ("--variant", name)]
    return deploy_main([args.archive_dir, "--target", args.target, *flags, *variants, *args.layers])
