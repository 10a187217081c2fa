"""Runs scripts x env ids x seeds on this machine, several at a time, resumably; collects each finished run.

    python benchmark/run.py --list                              # the suites (benchmark/suites.py)
    python benchmark/run.py --suite gridnavi --dry-run          # its commands, and which are done / resumable / todo
    python benchmark/run.py --suite gridnavi --jobs 2           # run what is not done yet, two processes at once
    python benchmark/run.py --scripts varibad_hyper --env-ids GridNavi --seeds 73 20 --label lr1e-3 -- \
        --learning-rate 1e-3

Every run has a key `{script}__{env_id}__{label}__s{seed}` and runs with its own working directory,
`--work-dir/{key}/` (benchmark/work/, not in git): the script writes `runs/{run_name}/` there (metrics.csv, args.json,
checkpoint.pt, eval.json) and its output goes to `stdout.log`. Every run gets `--save-model`, so it checkpoints
every `--save-every` iterations. When a run has written its eval.json, its metrics.csv (gzipped), eval.json and
args.json are copied to `--results-dir/runs/{key}/` (benchmark/results/, committed) with `command.txt` (the commands
that ran, with their git commits).

State of a key, in this order: `done` (results/runs/{key}/eval.json exists: skipped), `running` (a process has the
work folder as its working directory, or another runner holds it), `finished` (the work folder holds an eval.json:
copied, not rerun), `resumable` (the work folder holds a checkpoint: restarted with `--resume`), `todo`.
Ctrl-C (or SIGTERM) sends SIGINT to every child, waits `--grace` seconds for them to stop, then kills them; a second
Ctrl-C kills at once. Runs that stopped with a checkpoint continue from it at the next invocation.
"""

import argparse
import datetime
import fcntl
import glob
import gzip
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from suites import SEEDS, SUITES, Entry, expand, suite_runs, without_flag  # noqa: E402

RESULT_FILES = ("metrics.csv", "args.json", "eval.json")  # eval.json last: it marks a collected run as done


def latest(paths):
    return max(paths, key=os.path.getmtime) if paths else None


def finished_run_dir(work):
    """The run folder under `work/runs/` that holds an eval.json (the newest), or None."""
    path = latest(glob.glob(os.path.join(work, "runs", "*", "eval.json")))
    return os.path.dirname(path) if path else None


def checkpoint_path(work):
    return latest(glob.glob(os.path.join(work, "runs", "*", "checkpoint.pt")))


def processes_in(folder):
    """Ids of the processes whose working directory is `folder` (Linux /proc; empty elsewhere). This finds runs
    started by hand in a work folder as well as the children of another runner."""
    folder, pids = os.path.realpath(folder), []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/cwd") == folder:
                    pids.append(int(entry))
            except OSError:  # gone, or not ours to read
                pass
    return pids


class Lock:
    """An exclusive, non-blocking lock on `{work}/.runner.lock`, held while this runner's child runs there."""

    def __init__(self, work):
        os.makedirs(work, exist_ok=True)
        self.file = open(os.path.join(work, ".runner.lock"), "a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.close()
            raise

    def release(self):
        self.file.close()  # closing the file drops the lock


def is_locked(work):
    try:
        Lock(work).release()
        return False
    except OSError:
        return True


def state(run, results_dir, work_dir):
    work = os.path.join(work_dir, run.key)
    if os.path.exists(os.path.join(results_dir, "runs", run.key, "eval.json")):
        return "done"
    if os.path.isdir(work) and (processes_in(work) or is_locked(work)):
        return "running"
    if finished_run_dir(work):
        return "finished"
    if checkpoint_path(work):
        return "resumable"
    return "todo"


def running_keys(work_dir, exclude):
    """The keys whose work folders have a run going now (this runner's, another runner's or one started by hand)."""
    keys = sorted(os.listdir(work_dir)) if os.path.isdir(work_dir) else []
    folders = [(key, os.path.join(work_dir, key)) for key in keys if key != exclude]
    return [key for key, folder in folders if os.path.isdir(folder) and (processes_in(folder) or is_locked(folder))]


def command(run, python, resume=None):
    cmd = [
        python,
        os.path.join(ROOT, f"{run.script}.py"),
        "--env-id",
        run.env_id,
        "--seed",
        str(run.seed),
        "--save-model",
        *run.flags,
    ]
    if resume:
        cmd += ["--resume", resume]
    return cmd


def git_commit():
    try:

        def git(*cmd):
            return subprocess.run(["git", "-C", ROOT, *cmd], capture_output=True, text=True, check=True).stdout.strip()

        sha, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return sha + (" (with uncommitted changes to tracked files)" if dirty else "")


def now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def cpu_model():
    """The CPU's model name (Linux /proc/cpuinfo, else the platform's word for it)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def record_command(work, cmd, threads, others=()):
    """Appends one launch to `{work}/command.txt`; it becomes the run's command.txt in the results. The command runs
    from the repository root and names no machine's folders: the work folder and the script are relative paths. The
    machine line says what ran beside it: the load average and the other runs going in the work folder (`others`)."""
    launch = ["python", os.path.relpath(cmd[1], work), *cmd[2:]]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
    with open(os.path.join(work, "command.txt"), "a") as f:
        f.write(f"# {now()}, commit {git_commit()}; from the repository root:\n")
        f.write(f"# machine: {cpu_model()}, {os.cpu_count()} CPUs; load average {load}; ")
        f.write(f"other runs going: {', '.join(others) or 'none'}\n")
        f.write(
            f"cd {shlex.quote(os.path.relpath(work, ROOT))} && OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} "
        )
        f.write(f"{shlex.join(launch)}\n")


def collect(run, results_dir, work_dir, python):
    """Copies a finished run's files from its work folder into `{results_dir}/runs/{key}/`."""
    work = os.path.join(work_dir, run.key)
    src, dst = finished_run_dir(work), os.path.join(results_dir, "runs", run.key)
    os.makedirs(dst, exist_ok=True)
    for name in RESULT_FILES:
        if not os.path.exists(os.path.join(src, name)):
            continue
        out = name + ".gz" if name == "metrics.csv" else name  # gzip: a 4M-frame GridNavi log is 3.9 MB, 0.5 gzipped
        tmp = os.path.join(dst, f"{out}.tmp")
        writer = gzip.GzipFile(tmp, "wb", mtime=0) if out != name else open(tmp, "wb")
        with open(os.path.join(src, name), "rb") as f, writer as g:
            shutil.copyfileobj(f, g)
        os.replace(tmp, os.path.join(dst, out))
    with open(os.path.join(dst, "command.txt"), "w") as f:
        if os.path.exists(os.path.join(work, "command.txt")):
            with open(os.path.join(work, "command.txt")) as g:
                f.write(g.read())
        else:
            f.write(
                "# not started by benchmark/run.py (commit unknown); args.json holds the run's resolved arguments.\n"
                f"# The runner's command for this key:\n{shlex.join(command(run, python))}\n"
            )
        f.write(f"# run folder {os.path.relpath(src, work)}, collected {now()}\n")
    return dst


def stop(children, grace):
    """SIGINT to every child (its whole process group: AsyncVectorEnv workers too), then SIGKILL after `grace` s."""

    def signal_all(sig):
        for proc in children:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass

    signal_all(signal.SIGINT)
    print(f"stopping {len(children)} run(s): SIGINT sent, killing after {grace:.0f} s (Ctrl-C again: now)", flush=True)
    deadline = time.time() + grace
    try:
        while any(proc.poll() is None for proc in children) and time.time() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    signal_all(signal.SIGKILL)
    for proc in children:
        proc.wait()


def execute(runs, args):
    """Runs what is not done, `args.jobs` at a time. Returns the keys of the runs that failed."""
    queue, failed = [], []
    for run in runs:
        st = state(run, args.results_dir, args.work_dir)
        if st == "finished":
            dst = collect(run, args.results_dir, args.work_dir, args.python)
            print(f"{run.key}: finished in its work folder, collected into {os.path.relpath(dst)}")
        elif st in ("done", "running"):
            print(f"{run.key}: {st}, skipped")
        else:
            queue.append(run)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    active = {}  # run key -> (run, Popen, lock, log file)
    try:
        while queue or active:
            while queue and len(active) < args.jobs:
                run = queue.pop(0)
                work = os.path.join(args.work_dir, run.key)
                if state(run, args.results_dir, args.work_dir) not in ("resumable", "todo"):  # changed since the start
                    print(f"{run.key}: {state(run, args.results_dir, args.work_dir)} now, skipped")
                    continue
                try:
                    lock = Lock(work)
                except OSError:
                    print(f"{run.key}: another runner took it, skipped")
                    continue
                ckpt = checkpoint_path(work)
                cmd = command(run, args.python, os.path.relpath(ckpt, work) if ckpt else None)
                record_command(work, cmd, args.threads, running_keys(args.work_dir, exclude=run.key))
                log = open(os.path.join(work, "stdout.log"), "a")
                proc = subprocess.Popen(
                    cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
                active[run.key] = (run, proc, lock, log)
                print(
                    f"{run.key}: {'resumed from ' + os.path.relpath(ckpt, work) if ckpt else 'started'} "
                    f"(pid {proc.pid}, "
                    f"{len(active)} running, {len(queue)} queued)",
                    flush=True,
                )
            time.sleep(0.5)
            for key, (run, proc, lock, log) in list(active.items()):
                if proc.poll() is None:
                    continue
                del active[key]
                log.close()
                lock.release()
                work = os.path.join(args.work_dir, key)
                if proc.returncode == 0 and finished_run_dir(work):
                    dst = collect(run, args.results_dir, args.work_dir, args.python)
                    print(f"{key}: done, collected into {os.path.relpath(dst)}", flush=True)
                else:
                    failed.append(key)
                    log_path = os.path.join(work, "stdout.log")
                    print(f"{key}: FAILED (exit status {proc.returncode}), see {log_path}", flush=True)
    except KeyboardInterrupt:
        stop([proc for _, proc, _, _ in active.values()], args.grace)
        for run, _, lock, log in active.values():
            log.close()
            lock.release()
            ckpt = checkpoint_path(os.path.join(args.work_dir, run.key))
            what = "resumable from its checkpoint" if ckpt else "no checkpoint yet, restarts from scratch"
            print(f"{run.key}: interrupted; {what}")
        raise
    return failed


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] [-- flags for every script]",
    )
    parser.add_argument("--suite", nargs="+", default=[], help=f"suites to run: {', '.join(SUITES)}")
    parser.add_argument("--scripts", nargs="+", default=[], help="ad hoc: scripts (varibad_hyper or varibad_hyper.py)")
    parser.add_argument("--env-ids", nargs="+", default=[], help="ad hoc: env ids")
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help="seeds (ad hoc: default 73 20 3; with --suite: replace the suite's seeds)",
    )
    parser.add_argument(
        "--label", default="", help="ad hoc: the runs' label (default: --hyper-init's value or 'preset')"
    )
    parser.add_argument("--jobs", type=int, default=2, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS (torch threads) of each run")
    parser.add_argument("--grace", type=float, default=60.0, help="seconds a stopped run gets to exit before SIGKILL")
    parser.add_argument("--dry-run", action="store_true", help="list the runs, their state and commands; run nothing")
    parser.add_argument("--list", action="store_true", help="list the suites and exit")
    parser.add_argument("--results-dir", default=os.path.join(ROOT, "benchmark", "results"))
    parser.add_argument("--work-dir", default=os.path.join(ROOT, "benchmark", "work"))
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs the scripts")
    args = parser.parse_args(argv)
    args.extra = extra
    args.results_dir, args.work_dir = os.path.abspath(args.results_dir), os.path.abspath(args.work_dir)
    if not args.list and not args.suite and not (args.scripts and args.env_ids):
        parser.error("give --suite, or --scripts and --env-ids (or --list)")
    if args.suite and (args.scripts or args.env_ids or args.label):
        parser.error("--suite and the ad hoc --scripts/--env-ids/--label do not mix")
    if args.suite and extra:
        parser.error("flags after -- are for ad hoc runs; a suite's flags are in benchmark/suites.py")
    if not args.label and without_flag(extra, "hyper-init"):  # --hyper-init alone gives its own label
        parser.error(
            "flags after -- change the runs: name them with --label (the key would otherwise claim the preset)"
        )
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        for name, (description, _) in SUITES.items():
            print(f"{name:14s} {len(suite_runs(name)):3d} runs  {description}")
        return 0
    try:
        if args.suite:
            unknown = [name for name in args.suite if name not in SUITES]
            if unknown:
                raise KeyError(f"unknown suite {unknown[0]!r}; one of {', '.join(SUITES)}")
            runs = expand([entry for name in args.suite for entry in SUITES[name][1]], args.seeds)
        else:
            runs = expand(
                [
                    Entry(s, e, tuple(args.seeds or SEEDS), tuple(args.extra), args.label)
                    for e in args.env_ids
                    for s in args.scripts
                ]
            )
    except (KeyError, ValueError) as e:
        sys.exit(f"error: {e.args[0]}")
    if args.dry_run:
        states = [state(run, args.results_dir, args.work_dir) for run in runs]
        for run, st in zip(runs, states):
            work = os.path.join(args.work_dir, run.key)
            ckpt = checkpoint_path(work) if st == "resumable" else None
            print(
                f"{st:9s}  {run.key}\n           cd {os.path.relpath(work)} && OMP_NUM_THREADS={args.threads} "
                f"{shlex.join(command(run, args.python, os.path.relpath(ckpt, work) if ckpt else None))}"
            )
        print(", ".join(f"{states.count(s)} {s}" for s in ("done", "running", "finished", "resumable", "todo")))
        return 0

    def sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, sigterm)
    # A shell starts background jobs with SIGINT ignored, and the children would inherit that (an ignored signal
    # survives exec); Python's own handler does not, so the children get the default (KeyboardInterrupt) back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    start = time.time()
    try:
        failed = execute(runs, args)
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    print(
        f"{len(runs)} run(s) in {(time.time() - start) / 3600:.2f} h; "
        + (f"{len(failed)} failed: {' '.join(failed)}" if failed else "none failed")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
