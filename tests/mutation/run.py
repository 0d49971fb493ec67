"""Mutation check: apply each named bug of mutations.py to a temporary copy of the repository, run the tests
that should catch it, and report caught / missed as a markdown table. Not part of CI (minutes per C++ mutation).

    python tests/mutation/run.py                       # every mutation, this checkout's code and tests
    python tests/mutation/run.py --only M5-sort-without-optimizer,F1-cpp-nchw-grad-input-5pct-k5-k7-s1
    python tests/mutation/run.py --repo /tmp/before --before   # another checkout's code and tests, its selections

The copy holds the tracked files (git ls-files) plus the built extension; a mutation of csrc/ rebuilds the
extension in the copy (build_ext --inplace), others reuse the checkout's. Each run checks that deps_fast, its
Triton kernels and the extension are imported from the copy. A selection that fails to collect counts as an
error, not as caught.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mutations import MUTATIONS  # noqa: E402

PROBE = ("import deps_fast, deps_fast.kernels.depthwise as k, deps_fast._ext as e; "
         "print(deps_fast.__file__); print(k.__file__); print(e.extension().__file__)")


def copy_repo(repo: Path, dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=repo, check=True, capture_output=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = repo / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    # the installed layout maps deps_fast.kernels to the top-level kernels/ folder: mirror it in the copy
    os.symlink("../kernels", dest / "deps_fast" / "kernels")


def built_extension(repo: Path) -> str:
    found = glob.glob(str(repo / "deps_fast" / "_C*.so"))
    if not found:
        import deps_fast._ext as ext  # the one this interpreter imports (editable install of this checkout)
        module = ext.extension()
        if module is None:
            raise SystemExit(f"no built extension in {repo} and none importable: build it first")
        found = [module.__file__]
    return found[0]


def apply(mutation: dict, root: Path) -> None:
    path = root / mutation["file"]
    text = path.read_text()
    count = text.count(mutation["old"])
    if count != 1:
        raise ValueError(f"{mutation['name']}: the snippet occurs {count} times in {mutation['file']} (must be 1)")
    path.write_text(text.replace(mutation["old"], mutation["new"]))


def run_one(mutation: dict, repo: Path, extension: str, before: bool, timeout: int) -> tuple[str, float, str]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        root = Path(tmp)
        copy_repo(repo, root)
        apply(mutation, root)
        env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
        env.pop("DEPS_FAST_TEST_SEED", None)
        if mutation["file"].startswith("csrc/"):
            build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=root, env=dict(
                env, MAX_JOBS=env.get("MAX_JOBS", "2"), DEPS_FAST_BUILD_CUDA="0"), capture_output=True, text=True)
            if build.returncode:
                return "build failed", time.perf_counter() - started, build.stderr[-400:]
        else:
            shutil.copy2(extension, root / "deps_fast" / Path(extension).name)
        probe = subprocess.run([sys.executable, "-c", PROBE], cwd=root, env=env, capture_output=True, text=True)
        paths = probe.stdout.split()
        if probe.returncode or len(paths) != 3 or not all(str(Path(p).resolve()).startswith(str(root.resolve()))
                                                       for p in paths):
            return "error: not the copy", time.perf_counter() - started, probe.stdout + probe.stderr[-300:]
        selection = mutation.get("before") if before and mutation.get("before") else mutation["tests"]
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *selection]
        try:
            result = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "caught (timeout)", time.perf_counter() - started, ""
        tail = (result.stdout.strip().splitlines() or [""])[-1]
        verdict = {0: "MISSED", 1: "caught"}.get(result.returncode, f"error (pytest exit {result.returncode})")
        if result.returncode == 5:
            verdict = "error: no tests selected"
        return verdict, time.perf_counter() - started, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=HERE.parent.parent, help="the checkout whose code and tests run")
    parser.add_argument("--only", help="comma-separated mutation names (default: all)")
    parser.add_argument("--before", action="store_true", help="use each mutation's `before` selection if it has one")
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args()
    chosen = MUTATIONS
    if args.only:
        names = args.only.split(",")
        unknown = set(names) - {m["name"] for m in MUTATIONS}
        if unknown:
            parser.error(f"unknown mutation(s): {sorted(unknown)}")
        chosen = [m for m in MUTATIONS if m["name"] in names]
    if args.list:
        for m in chosen:
            print(f"{m['name']:45} {m['file']}")
        return 0
    repo = args.repo.resolve()
    extension = built_extension(repo)
    print("| mutation | file | result | seconds | selection | last line |")
    print("|---|---|---|---|---|---|")
    missed = 0
    for m in chosen:
        verdict, seconds, tail = run_one(m, repo, extension, args.before, args.timeout)
        missed += verdict != "caught" and not verdict.startswith("caught")
        selection = " ".join(m.get("before") if args.before and m.get("before") else m["tests"])
        print(f"| {m['name']} | {m['file']} | {verdict} | {seconds:.0f} | `{selection}` | "
              f"{tail.replace('|', '/')[:90]} |", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
