"""Drive an HTTP server with ``wrk`` (the Debian package) and read back its figures.

A generated Lua script pre-formats one request per path of a paths file in every wrk thread
and picks one at random per request (a single path is a fixed request); its ``done`` hook
prints the totals and latency percentiles as one JSON line, so nothing is scraped from wrk's
human-readable report. Any non-2xx/3xx answer, socket error or timeout fails the run: a
figure is only printed for a server that answered every request.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CpuWatch", "WalkResult", "WrkError", "WrkResult", "run_walk", "run_wrk"]

_MARK = "WRK-RESULT "

_LUA = r"""
local paths_file = %(paths_file)s
local auth = %(auth)s
local reqs = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(os.time() * 100 + seed)
  local headers = {}
  if auth ~= "" then headers["Authorization"] = auth end
  headers["Accept"] = "application/json"
  for line in io.lines(paths_file) do
    if line ~= "" then reqs[#reqs + 1] = wrk.format("GET", line, headers) end
  end
  if #reqs == 0 then error("no paths in " .. paths_file) end
end

function request()
  return reqs[math.random(#reqs)]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests": %%d, "duration_us": %%d, "bytes": %%d, "p50_us": %%d, ' ..
    '"p99_us": %%d, "max_us": %%d, "connect": %%d, "read": %%d, "write": %%d, ' ..
    '"status": %%d, "timeout": %%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


_TICK = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> int:
    """Busy jiffies of the whole machine (every core) from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle


def _process_ticks(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])  # utime + stime


def _tree_ticks(pid: int) -> int:
    """CPU ticks of ``pid`` and its live descendants (worker processes, the render helper)."""
    import psutil

    total = _process_ticks(pid)
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return total
    for kid in kids:
        try:
            total += _process_ticks(kid.pid)
        except (FileNotFoundError, ProcessLookupError):  # it just ended
            continue
    return total


class CpuWatch:
    """How busy the machine was, outside the measured server (its process and the processes
    it started), wrk and this process.

    Two cores are shared with whatever else runs here (a test suite, say); a measurement
    taken while others used a sizable share of them is reported as disturbed.
    """

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.others_cores = 0.0
        self.server_cores = 0.0

    def _server(self) -> int:
        return 0 if self.server_pid is None else _tree_ticks(self.server_pid)

    def __enter__(self) -> CpuWatch:
        self._t0 = os.times().elapsed
        self._busy0 = _busy_ticks()
        self._server0 = self._server()
        self._self0 = resource.getrusage(resource.RUSAGE_SELF)
        self._kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc: object) -> None:
        wall = os.times().elapsed - self._t0
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = (
            me.ru_utime
            + me.ru_stime
            - self._self0.ru_utime
            - self._self0.ru_stime
            + kids.ru_utime
            + kids.ru_stime
            - self._kids0.ru_utime
            - self._kids0.ru_stime
        )
        server = (self._server() - self._server0) / _TICK
        busy = (_busy_ticks() - self._busy0) / _TICK
        #: average cores used by other processes during the measurement
        self.others_cores = max(0.0, busy - server - ours) / wall if wall > 0 else 0.0
        self.server_cores = server / wall if wall > 0 else 0.0


class WrkError(RuntimeError):
    """wrk failed, or the server did not answer every request with success."""


@dataclass(frozen=True, kw_only=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: cores the server used on average, and cores every other process used (noise)
    server_cores: float = 0.0
    others_cores: float = 0.0


def _lua_string(s: str) -> str:
    return json.dumps(s)  # a JSON string of ASCII is a valid Lua string literal


def _wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkError("wrk is not installed (Debian: apt-get install -y wrk)")
    return wrk


def _summary(returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The one marked JSON line the Lua ``done`` wrote, or WrkError."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(_MARK)]
    if returncode != 0 or len(lines) != 1:
        raise WrkError(f"wrk exited {returncode}: {stderr.strip() or stdout}")
    summary: dict[str, Any] = json.loads(lines[0][len(_MARK) :])
    return summary


def run_wrk(
    base_url: str,
    paths: list[str],
    *,
    auth: str = "",
    connections: int = 8,
    threads: int = 2,
    seconds: int = 10,
    timeout_s: int = 60,
    server_pid: int | None = None,
) -> WrkResult:
    """Run wrk against ``base_url`` with a random pick of ``paths`` per request."""
    wrk = _wrk()
    if not all(p.isascii() and p.startswith("/") and "\n" not in p for p in paths):
        raise WrkError("paths must be ASCII, absolute and single-line")
    with tempfile.TemporaryDirectory(prefix="metrocloud-wrk-") as tmp:
        paths_file = Path(tmp) / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        script = Path(tmp) / "pick.lua"
        script.write_text(
            _LUA
            % {
                "paths_file": _lua_string(str(paths_file)),
                "auth": _lua_string(auth),
                "mark": _MARK,
            }
        )
        watch = CpuWatch(server_pid)
        with watch:
            proc = subprocess.run(
                [
                    wrk,
                    f"-c{connections}",
                    f"-t{threads}",
                    f"-d{seconds}s",
                    f"--timeout={timeout_s}s",
                    "--latency",
                    "-s",
                    str(script),
                    base_url,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
    r = _summary(proc.returncode, proc.stdout, proc.stderr)
    bad = {k: r[k] for k in ("connect", "read", "write", "status", "timeout") if r[k]}
    if bad:
        raise WrkError(f"wrk saw failures against {base_url}: {bad} of {r['requests']} requests")
    if r["requests"] == 0:
        raise WrkError(f"wrk completed no request against {base_url} in {seconds} s")
    secs = r["duration_us"] / 1e6
    return WrkResult(
        requests=r["requests"],
        seconds=secs,
        rps=r["requests"] / secs,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        server_cores=watch.server_cores,
        others_cores=watch.others_cores,
    )


# -- a listing walk: one connection, each request built from the answer before ----------------

_WALK_LUA = r"""
local first = %(first)s
local base = %(base)s
local mode = %(mode)s
local page = %(page)d
local auth = %(auth)s
local out = assert(io.open(%(bodies)s, "wb"))
local headers = {["Accept"] = "application/json"}
if auth ~= "" then headers["Authorization"] = auth end
local path = first
local offset = 1
local pages = 0
local failed = nil

function request()
  return wrk.format("GET", path, headers)
end

-- wrk's main thread sleeps for the whole -d duration: the marker tells the caller to
-- interrupt it (SIGINT, as Ctrl-C would)
function finish()
  out:close()
  local marker = assert(io.open(%(bodies)s .. ".done", "wb"))
  marker:close()
  wrk.thread:stop()
end

function response(status, hdrs, body)
  if status ~= 200 then
    failed = status
    finish()
    return
  end
  pages = pages + 1
  out:write(path, "\t", body, "\n")
  local nxt = nil
  if mode == "cursor" then
    -- the node answers {"paging_metadata":{"cursor":"..."},"result":[...]}; no cursor: the end
    local c = string.match(string.sub(body, 1, 400), '^{"paging_metadata":{"cursor":"([^"]+)"')
    if c then nxt = base .. "?limit=" .. page .. "&cursor=" .. c end
  else
    -- offsets (cursor = 1-based index of the first item); a short page is the last one
    local _, n = string.gsub(body, '"modelType":%%s*"AssetAdministrationShell"', "")
    if n == page then
      offset = offset + page
      nxt = base .. "?limit=" .. page .. "&cursor=" .. offset
    end
  end
  if nxt == nil then
    finish()
  else
    path = nxt
  end
end

function done(summary, latency, requests)
  io.write(string.format(
    '%(mark)s{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"failed": %%d, "errors": %%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    failed or 0, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout))
end
"""


@dataclass(frozen=True, kw_only=True)
class WalkResult:
    pages: int
    seconds: float
    p50_ms: float
    p99_ms: float
    #: one line per page: the request path, a tab, the answer's body
    bodies: Path
    server_cores: float = 0.0
    others_cores: float = 0.0


def run_walk(
    base_url: str,
    list_path: str,
    *,
    mode: str,
    page: int,
    bodies: Path,
    auth: str = "",
    max_seconds: int = 7200,
    server_pid: int | None = None,
) -> WalkResult:
    """Walk a paged list with wrk on one connection, each page's request made from the
    answer before (``mode``: ``cursor`` follows the node's cursors, ``offset`` BaSyx's
    1-based offsets to a short page). Every answer is written to ``bodies``; the figures are
    wrk's, so no Python client shares the cores with the server while it is measured."""
    wrk = _wrk()
    if mode not in ("cursor", "offset"):
        raise WrkError(f"unknown walk mode {mode!r}")
    first = f"{list_path}?limit={page}" + ("&cursor=1" if mode == "offset" else "")
    with tempfile.TemporaryDirectory(prefix="metrocloud-wrk-") as tmp:
        script = Path(tmp) / "walk.lua"
        script.write_text(
            _WALK_LUA
            % {
                "first": _lua_string(first),
                "base": _lua_string(list_path),
                "mode": _lua_string(mode),
                "page": page,
                "auth": _lua_string(auth),
                "bodies": _lua_string(str(bodies)),
                "mark": _MARK,
            }
        )
        marker = Path(f"{bodies}.done")
        marker.unlink(missing_ok=True)
        watch = CpuWatch(server_pid)
        with watch:
            proc = subprocess.Popen(
                [
                    wrk,
                    "-c1",
                    "-t1",
                    f"-d{max_seconds}s",
                    "--timeout=300s",
                    "--latency",
                    "-s",
                    str(script),
                    base_url,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            while proc.poll() is None and not marker.exists():
                time.sleep(0.005)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate()
        marker.unlink(missing_ok=True)
    r = _summary(proc.returncode, stdout, stderr)
    if r["failed"] or r["errors"]:
        raise WrkError(f"the walk of {base_url}{list_path} failed: {r}")
    pages = sum(1 for _ in bodies.open("rb"))
    if pages != r["requests"]:
        raise WrkError(f"wrk made {r['requests']} requests but {pages} pages were written")
    return WalkResult(
        pages=pages,
        seconds=r["duration_us"] / 1e6,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        bodies=bodies,
        server_cores=watch.server_cores,
        others_cores=watch.others_cores,
    )
