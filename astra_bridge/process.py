"""A persistent ASTRA-Sim (LLMServingSim fork) process: its stdin/stdout protocol and its hygiene.

stdout is read continuously on a thread (the fork prints hundreds of thousands of progress lines),
stderr is drained on another, a report that does not come within the timeout is an error naming
what was running, and the whole process group is ended on every exit path.
"""
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from llmsim.errors import InputError

_REPORT = re.compile(r"sys\[(\d+)\] iteration (\d+) finished, (\d+) cycles")
_EOF = object()


class BackendError(InputError):
    """ASTRA-Sim misbehaved (exited, hung, broke the protocol): one line, exit code 2."""


@dataclass(frozen=True)
class Report:
    npu: int
    iteration: int  # the NPU's finished-workload counter (0 is the start-up event)
    tick_ns: int  # absolute simulated time


class AstraProcess:
    def __init__(self, cmd: list[str], cwd: str, timeout_s: float = 60.0):
        self.cmd = cmd
        self.timeout_s = timeout_s
        self._reports: queue.Queue = queue.Queue()
        self.tail = deque(maxlen=20)  # last stdout lines that were not progress noise
        self.err_tail = deque(maxlen=20)
        try:
            self.proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, errors="replace", bufsize=1,
                                         start_new_session=True)
        except OSError as e:
            raise BackendError(f"{cmd[0]}: cannot start ASTRA-Sim ({e.strerror})") from None
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_stdout(self) -> None:
        try:
            pending = None
            for line in self.proc.stdout:
                if line.startswith("Checking "):
                    continue
                m = _REPORT.search(line)
                if m:
                    pending = Report(int(m.group(1)), int(m.group(2)), int(m.group(3)))
                elif line.rstrip().endswith("Waiting"):
                    self._reports.put(pending if pending else ValueError("'Waiting' without a finished report"))
                    pending = None
                else:
                    self.tail.append(line.rstrip())
        except (OSError, ValueError) as e:  # a closed pipe; never a traceback on this thread
            self.tail.append(f"(reading its output failed: {e})")
        finally:
            self._reports.put(_EOF)

    def _read_stderr(self) -> None:
        try:
            for line in self.proc.stderr:
                self.err_tail.append(line.rstrip())
        except (OSError, ValueError):
            pass

    def _last_words(self) -> str:
        said = [l for l in list(self.err_tail) + list(self.tail) if l.strip()]
        return f"; last output: {said[-1][:200]!r}" if said else ""

    def next_report(self, waiting_for: str) -> Report:
        deadline = time.monotonic() + self.timeout_s
        exited_at = None
        while True:
            try:
                item = self._reports.get(timeout=0.1)
                break
            except queue.Empty:
                pass
            now = time.monotonic()
            if self.proc.poll() is not None:
                exited_at = exited_at or now
                if now - exited_at > 1.0:  # exited, but something it started still holds its output
                    raise BackendError(f"{self.cmd[0]}: ASTRA-Sim exited (code {self.proc.returncode}) while "
                                       f"{waiting_for}, leaving a background process{self._last_words()}")
            if now > deadline:
                raise BackendError(f"{self.cmd[0]}: ASTRA-Sim reported nothing for {self.timeout_s:g} s while "
                                   f"{waiting_for} (went silent){self._last_words()}") from None
        if item is _EOF:
            code = self._wait_briefly()
            raise BackendError(f"ASTRA-Sim exited (code {code}) while {waiting_for}{self._last_words()}")
        if isinstance(item, Exception):
            raise BackendError(f"ASTRA-Sim broke the protocol: {item}{self._last_words()}")
        return item

    def answer(self, line: str) -> None:
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            code = self._wait_briefly()
            raise BackendError(f"ASTRA-Sim exited (code {code}) before it read {line!r}{self._last_words()}") from None

    def finish(self) -> str:
        """Send `exit` and return ASTRA-Sim's verdict line about unfinished work."""
        try:
            self.answer("exit")
            self.proc.wait(timeout=self.timeout_s)
        except (BackendError, subprocess.TimeoutExpired):
            pass
        finally:
            self.close()
        for line in self.tail:
            if "Some Requests Remain" in line or "All Request Has Been Exited" in line:
                return line.strip()
        return ""

    def _wait_briefly(self):
        """The exit code, or '?' when the binary has closed its output but keeps running."""
        try:
            return self.proc.wait(timeout=min(self.timeout_s, 5))
        except subprocess.TimeoutExpired:
            return "? (closed its output, still running)"

    def close(self) -> None:
        """End the whole process group (the binary and anything it started); never leave an orphan."""
        # Even when the binary itself has exited, a background child it started may still hold the
        # pipes open: signal the group unconditionally.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL if self.proc.poll() is not None else signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=2)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for t in self._threads:
            t.join(timeout=2)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except (OSError, ValueError):
                pass


def run_on_fork(binary: Path, paths, prefix: Path, needed: list[int], total_npus: int, timeout_s: float,
                what: str, comm_group: Path | None = None) -> dict[int, int]:
    """One run of the fork on one workload (a KV transfer, a data-parallel step), apart from the
    run's persistent process; returns the finish time (ns) of each NPU in `needed`. Every NPU is
    its own start NPU, so each reports when done; the run exits once every needed NPU has.
    comm_group: a --comm-group-configuration file (a DP group beside others: dp_steps.py)."""
    cmd = [str(binary), f"--workload-configuration={prefix}", f"--system-configuration={paths.system}",
           f"--network-configuration={paths.network}", f"--memory-configuration={paths.memory}",
           f"--start-npu-ids={','.join(str(n) for n in range(total_npus))},"]
    if comm_group is not None:
        cmd.append(f"--comm-group-configuration={comm_group}")
    proc = AstraProcess(cmd, str(prefix.parent), timeout_s)
    finish: dict[int, int] = {}
    need = set(needed)
    try:
        while len(finish) < len(need):
            r = proc.next_report(f"{what} ({prefix}.*.et)")
            if r.iteration > 0:
                raise BackendError(f"ASTRA-Sim reported workload {r.iteration} of NPU {r.npu} in a one-workload run")
            if r.npu in need:
                finish.setdefault(r.npu, r.tick_ns)
            if len(finish) < len(need):
                proc.answer("pass")
        proc.finish()
    finally:
        proc.close()
    return finish
