"""Prove a refactor left scheduling behaviour unchanged: simulate JSON byte-identical before and after.

Runs `sliceserve simulate` for every registered policy on edge-mix at two rates and two seeds, once in the
working tree and once in a throw-away checkout of `--before` (a git revision), and compares the JSON files
byte for byte. Each side runs with its own code (the checkout is put first on PYTHONPATH), so the comparison
is of behaviour, not of one import resolved twice.

    python benchmarks/behaviour_unchanged.py --before main
    python benchmarks/behaviour_unchanged.py --before e910a87 --rates 1,6 --seeds 2,3
    python benchmarks/behaviour_unchanged.py --before 5889237 --after-set slice_drop_lost=off

`--after-set KEY=VALUE` runs the working tree with a config field that `--before` lacks (a new knob, set to
the value that should reproduce the old behaviour); the field is left out of the after side's recorded
config (the JSON's `config.scheduler`) so that the rest is still compared byte for byte. `--after-profile-field
NAME` likewise leaves out a latency-model field that `--before` lacks (the JSON's `config.profile_model`, e.g.
`prefill_shape`), which the after side records at its default.
Exits 1 and names each differing (policy, rate, seed) when anything differs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _policies(tree: Path) -> list[str]:
    code = "from sliceserve.core.policies import available_policies as a; print(','.join(a()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=_env(tree), check=True,
                         capture_output=True, text=True).stdout
    return out.strip().split(",")


def _env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONHASHSEED"] = "0"
    return env


def simulate(tree: Path, policy: str, rate: float, seed: int, out: Path, settings: tuple[str, ...] = (),
             profile_fields: tuple[str, ...] = ()) -> str:
    """Run one simulation with `tree`'s code (with `settings`, KEY=VALUE config fields); returns the sha256
    of its JSON, after dropping those fields and the latency model's `profile_fields` from the recorded config."""
    cmd = [sys.executable, "-m", "sliceserve", "simulate", "--policy", policy, "--workload", "edge-mix",
           "--request-rate", str(rate), "--seed", str(seed), "--profile", "paper-4060ti",
           "--no-progress", "--output", str(out)]
    for kv in settings:
        cmd += ["--set", kv]
    subprocess.run(cmd, cwd=tree, env=_env(tree), check=True, capture_output=True, text=True)
    data = out.read_bytes()
    if settings or profile_fields:
        doc = json.loads(data)
        for kv in settings:
            doc["config"]["scheduler"].pop(kv.split("=", 1)[0], None)
        for name in profile_fields:
            doc["config"]["profile_model"].pop(name, None)
        data = json.dumps(doc, indent=2).encode()
        # The before side is re-serialised the same way (`_normalised`), so only content is compared.
    return hashlib.sha256(data).hexdigest()


def _normalised(path: Path) -> str:
    return hashlib.sha256(json.dumps(json.loads(path.read_bytes()), indent=2).encode()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision holding the behaviour to keep")
    ap.add_argument("--rates", default="1,6", help="comma list of request rates (req/s)")
    ap.add_argument("--seeds", default="2,3", help="comma list of seeds")
    ap.add_argument("--policies", default="", help="comma list (default: every policy registered before)")
    ap.add_argument("--after-set", action="append", default=[], metavar="KEY=VALUE",
                    help="config field for the working tree only (a knob --before lacks); repeatable")
    ap.add_argument("--after-profile-field", action="append", default=[], metavar="NAME",
                    help="latency-model field the working tree records and --before lacks; repeatable")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="sliceserve-before-") as tmp:
        before = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before], cwd=REPO, check=True,
                       capture_output=True)
        try:
            policies = args.policies.split(",") if args.policies else _policies(before)
            differing = []
            for policy in policies:
                for rate in rates:
                    for seed in seeds:
                        a = simulate(before, policy, rate, seed, Path(tmp) / "before.json")
                        if args.after_set or args.after_profile_field:
                            a = _normalised(Path(tmp) / "before.json")
                        b = simulate(REPO, policy, rate, seed, Path(tmp) / "after.json", tuple(args.after_set),
                                     tuple(args.after_profile_field))
                        same = a == b
                        print(f"{policy:10s} rate {rate:5g} seed {seed}: {'same' if same else 'DIFFERENT'} "
                              f"{a[:12]}{'' if same else ' vs ' + b[:12]}", flush=True)
                        if not same:
                            differing.append((policy, rate, seed))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=REPO, capture_output=True)
    total = len(policies) * len(rates) * len(seeds)
    print(f"{total - len(differing)}/{total} byte-identical against {args.before}")
    return 1 if differing else 0


if __name__ == "__main__":
    raise SystemExit(main())
