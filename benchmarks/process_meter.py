"""Wall time and peak memory of a subprocess and all its descendants, for the benchmarks.

Every ``interval`` seconds psutil lists the process tree and sums RSS (and PSS, which splits
pages shared between forked workers instead of counting them once per process); ``os.wait4``
adds the largest single process's max RSS, which is what ``/usr/bin/time -v`` reports.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import psutil  # the `bench` extra: pip install -e ".[bench]"
except ImportError:  # pragma: no cover - the benchmark tells the user
    psutil = None


@dataclass
class Measurement:
    seconds: float
    peak_rss: int            # bytes, sum over the process tree, max over samples
    peak_pss: int            # bytes, same with PSS (0 when not sampled)
    max_single_rss: int      # bytes, ru_maxrss of the largest process in the tree
    output_bytes: int
    returncode: int


def measure(cmd: list[str], env: dict, log_path: Path, interval: float, pss: bool) -> Measurement:
    peak = {"rss": 0, "pss": 0}
    done = threading.Event()

    def sample(pid: int) -> None:
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                break
            rss = pss_sum = 0
            for proc in procs:
                try:
                    if pss:
                        info = proc.memory_full_info()
                        pss_sum += info.pss
                    else:
                        info = proc.memory_info()
                    rss += info.rss
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    pass
            peak["rss"] = max(peak["rss"], rss)
            peak["pss"] = max(peak["pss"], pss_sum)
            done.wait(interval)

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        log_file.write(("$ " + " ".join(cmd) + "\n").encode())
        log_file.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=log_path.parent)
        sampler = threading.Thread(target=sample, args=(proc.pid,), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    return Measurement(seconds, peak["rss"], peak["pss"], usage.ru_maxrss * 1024, 0, proc.returncode)


def median_measurement(runs: list[Measurement]) -> Measurement:
    ok = [r for r in runs if r.returncode == 0] or runs
    return Measurement(statistics.median(r.seconds for r in ok), int(statistics.median(r.peak_rss for r in ok)),
                       int(statistics.median(r.peak_pss for r in ok)),
                       int(statistics.median(r.max_single_rss for r in ok)),
                       int(statistics.median(r.output_bytes for r in ok)),
                       max((r.returncode for r in runs), key=abs))
