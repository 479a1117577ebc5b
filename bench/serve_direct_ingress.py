"""Ray Serve's HAProxy direct ingress vs its Python proxy, on a no-op batched deployment.

    .venv/bin/python bench/serve_direct_ingress.py --mode proxy
    .venv/bin/python bench/serve_direct_ingress.py --mode direct [--kill]

Evidence for docs/serving.md ("Where the CPU goes"): what one hop through Ray Serve costs per
request when the deployment holds the model (no ingress → replica hop), with the HTTP proxy
either Ray's Python `ProxyActor` or HAProxy in front of replicas that serve HTTP themselves
(ray 2.60 feature flags `RAY_SERVE_ENABLE_DIRECT_INGRESS`, `RAY_SERVE_ENABLE_HA_PROXY`, with
L7 retries `retry-on empty-response junk-response response-timeout`). The deployment is two
replicas of a FastAPI app whose `@serve.batch` "model" returns string lengths, so everything
measured is serving overhead. `--kill` SIGKILLs one replica 5 s into the load and counts
failed requests. Each server process's CPU time is read with psutil over the load; the load
generator (64 httpx clients, same machine) is not counted. Run one mode per process: the
flags are read when Ray starts.
"""

import argparse
import asyncio
import json
import os
import sys
import time

CLIENTS, DURATION_S, PORT = 64, 15.0, 8123
BODY = {"inputs": "hello world this is ten tokens"}


def configure(mode: str) -> None:
    """Environment Ray reads at start (loopback only, and the HAProxy flags for `direct`)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if mode == "direct":
        os.environ["RAY_SERVE_ENABLE_DIRECT_INGRESS"] = "1"
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        os.environ["RAY_SERVE_HAPROXY_RETRY_ON"] = (
            "conn-failure empty-response junk-response response-timeout"
        )


def application():
    """Two replicas of a FastAPI app with a batched no-op model.

    (No `from __future__ import annotations` in this file: FastAPI must see `Request` itself,
    not a string it cannot resolve in this function's scope.)"""
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    from ray import serve

    app = FastAPI()

    @serve.deployment(max_ongoing_requests=256)
    @serve.ingress(app)
    class NoOp:
        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
        async def model(self, texts: list[str]) -> list[int]:
            return [len(text) for text in texts]

        @app.post("/v1/predict")
        async def predict(self, request: Request) -> Response:
            body = await request.json()
            result = await self.model(body["inputs"])
            return Response(json.dumps({"predictions": [result]}), media_type="application/json")

    return NoOp.options(num_replicas=2, ray_actor_options={"num_cpus": 0}).bind()


async def load(url: str) -> dict:
    """64 clients posting for DURATION_S: successes and failures by kind."""
    import httpx

    succeeded, failures = 0, {}
    stop = time.monotonic() + DURATION_S
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=CLIENTS), timeout=30) as c:

        async def client() -> None:
            nonlocal succeeded
            while time.monotonic() < stop:
                try:
                    response = await c.post(f"{url}/v1/predict", json=BODY)
                    kind = None if response.status_code == 200 else str(response.status_code)
                except httpx.HTTPError as error:
                    kind = type(error).__name__
                if kind is None:
                    succeeded += 1
                else:
                    failures[kind] = failures.get(kind, 0) + 1

        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return {"succeeded": succeeded, "failed": failures}


def server_cpu_seconds(exclude: set[int]) -> dict[int, tuple[str, float]]:
    """CPU seconds of every Ray / HAProxy process on this machine, by pid."""
    import psutil

    seconds = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.pid in exclude:
            continue
        command = " ".join(process.info["cmdline"] or [])
        if "ray" not in command and "haproxy" not in (process.info["name"] or ""):
            continue
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        seconds[process.pid] = (process.info["name"] or "?", times.user + times.system)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("proxy", "direct"), required=True)
    parser.add_argument("--kill", action="store_true", help="SIGKILL one replica under load")
    args = parser.parse_args()
    configure(args.mode)
    import httpx
    import psutil
    import ray
    from ray import serve

    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(application(), name="noop", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{PORT}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.post(f"{url}/v1/predict", json=BODY, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the no-op app did not answer within 120 s")
        time.sleep(0.5)
    me = {os.getpid()}
    before = server_cpu_seconds(me)

    async def run() -> dict:
        task = asyncio.create_task(load(url))
        if args.kill:
            await asyncio.sleep(5)
            replicas = [
                p for p in psutil.process_iter(["name"]) if "ServeReplica" in p.info["name"]
            ]
            replicas[0].kill()
        return await task

    outcome = asyncio.run(run())
    after = server_cpu_seconds(me)
    per_process = {}
    for pid, (name, seconds) in after.items():
        used = seconds - before.get(pid, (name, 0.0))[1]  # a process started meanwhile: all
        if used > 0.01:
            per_process[name] = per_process.get(name, 0.0) + used
    requests = max(1, outcome["succeeded"])
    report = {
        "mode": args.mode,
        "kill": args.kill,
        **outcome,
        "requests_per_s": outcome["succeeded"] / DURATION_S,
        "server_cpu_ms_per_request": 1000 * sum(per_process.values()) / requests,
        "by_process_ms_per_request": {
            name: round(1000 * seconds / requests, 3)
            for name, seconds in sorted(per_process.items(), key=lambda item: -item[1])
        },
    }
    print(json.dumps(report, indent=2))
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
