"""The Ray Serve application: an exported artifact behind HTTP, with dynamic batching and model updates.

    python pipelines/serve.py --model /models/logs.onnx                   # the CLI
    serve deploy cluster/serve_config.yaml                                 # the same builder, from a file

The routes, status codes and request format are dfei.serving.endpoint's and dfei.serving.protocol's;
this module only wires them into Serve (the one module of dfei.serving that imports Ray):

- **Batching.** Requests are parsed and checked as they arrive (a bad one is answered 4xx at once,
  never batched), then `@serve.batch` gathers up to `max_batch_size` requests or waits
  `batch_wait_ms` (Ray Serve's `max_batch_size`/`batch_wait_timeout_s`) and runs one forward over
  all their rows, domains mixed; a request's rows stay together.
- **Model updates without downtime.** The artifact path is the deployment's `user_config`
  (a ScoringConfig), loaded in `reconfigure`. `serve deploy` of a config whose Scorer `user_config`
  names another model changes only the user_config, so Serve calls `reconfigure` on the running
  replicas: the new model is loaded beside the old one, then swapped in between requests. `serve.run`
  again (pipelines/serve.py --update), or changed application `args`, is new code to Serve: it
  restarts the replicas with `max_surge_percent=100`, the new ones starting before the old ones stop
  and the old ones finishing what they hold. Either way every response names the version that
  scored it.

The artifact is read from the path given, on the replica's node: on a cluster, a path every node
mounts (ONNX needs onnxruntime there, TorchScript only torch).
"""
from __future__ import annotations

import asyncio
import logging
import uuid

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from dfei.serving.endpoint import Endpoint, forward_batch
from dfei.serving.loader import ServingModel
from dfei.serving.protocol import version_of

APP_NAME = "dfei"
MAX_ONGOING = 256  # requests a replica holds at once (Serve's max_ongoing_requests): a full batch and the next


class ScoringConfig(BaseModel):
    """The deployment's user_config: what `reconfigure` applies to running replicas, in place."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(description="the exported artifact (ONNX or TorchScript) with its .json sidecar")
    max_batch_size: int = Field(32, ge=1, le=MAX_ONGOING // 2,
                                description="requests per forward at most (Serve's max_batch_size)")
    batch_wait_ms: float = Field(2.0, ge=0, le=10_000, description="how long a batch waits for more requests, ms")
    max_rows: int = Field(1024, ge=1, description="rows per request at most (more: HTTP 413)")


class ServeSettings(BaseModel):
    """The application's arguments (`serve deploy`'s `args`, pipelines/serve.py's flags). Without
    `model`, the scoring settings come from the Scorer deployment's `user_config` in the config file
    (a ScoringConfig), and giving any of them here is refused (they would be overridden unread)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description=ScoringConfig.model_fields["model"].description)
    max_batch_size: int = ScoringConfig.model_fields["max_batch_size"]
    batch_wait_ms: float = ScoringConfig.model_fields["batch_wait_ms"]
    max_rows: int = ScoringConfig.model_fields["max_rows"]
    replicas: int = Field(1, ge=1, description="replicas of the scoring deployment")
    num_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves per replica")

    @model_validator(mode="after")
    def _scoring_settings_go_with_the_model(self) -> "ServeSettings":
        given = sorted(set(ScoringConfig.model_fields) & self.model_fields_set - {"model"})
        if self.model is None and given:
            raise ValueError(f"{given} are given without 'model': give them with the model (args), or all in the "
                             "Scorer deployment's user_config")
        return self

    def user_config(self) -> dict | None:
        if self.model is None:
            return None
        return ScoringConfig(**self.model_dump(include=set(ScoringConfig.model_fields))).model_dump()


# a stopping replica finishes what it holds (requests take milliseconds), then exits within 5 s
@serve.deployment(max_surge_percent=100, health_check_period_s=5, graceful_shutdown_wait_loop_s=0.5,
                  graceful_shutdown_timeout_s=5)
class Scorer:
    """One replica: the model now serving, its batched forward and this replica's counters."""

    def __init__(self, settings: dict | None = None):
        self.log = logging.getLogger("ray.serve")  # Serve's replica log: errors with their request id
        self.endpoint = Endpoint(log=self.log)
        self.settings = settings or {}  # the application's args: what `--update` keeps
        self.config: ScoringConfig | None = None

    async def reconfigure(self, config: dict) -> None:
        """Load config["model"] (a thread: requests keep flowing on the old model meanwhile), then swap.
        A replica already serving keeps its model when the new one cannot be loaded (a wrong path in a
        redeployed config must not take the service down): the error is logged and GET /healthz
        reports it; a replica with no model raises, and Serve reports the deployment as failed."""
        config = ScoringConfig.model_validate(config)
        if config == self.config:
            return  # the same config again (Serve calls reconfigure when a replica's rank changes)
        try:
            model = await asyncio.to_thread(ServingModel.load, config.model)
        except Exception as err:
            if self.endpoint.model is None:
                raise
            self.endpoint.reconfigure_error = f"{config.model}: {err}"
            self.log.error("kept %s: the new model could not be loaded: %s", self.config.model, err)
            return
        self._score.set_max_batch_size(config.max_batch_size)
        self._score.set_batch_wait_timeout_s(config.batch_wait_ms / 1000)
        self.endpoint.swap(model, config.max_rows, {"max_batch_size": config.max_batch_size,
                                                    "batch_wait_ms": config.batch_wait_ms})
        self.config = config

    def check_health(self) -> None:
        if self.endpoint.model is None:
            raise RuntimeError("no model loaded")

    def version(self) -> str | None:
        """The version this replica answers with (None before its first model)."""
        return None if self.endpoint.model is None else version_of(self.endpoint.model)

    def current_settings(self) -> dict:
        """ServeSettings of what this replica runs: the application's args and its user_config."""
        return {**self.settings, **(self.config.model_dump() if self.config else {})}

    async def __call__(self, request: Request) -> JSONResponse:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        body = await request.body() if request.method == "POST" else b""
        status, payload = await self.endpoint.handle(request.method, request.url.path, body, request_id,
                                                     lambda model, scoring: self._score((model, scoring)))
        return JSONResponse(payload, status_code=status, headers={"x-request-id": request_id})

    @serve.batch(max_batch_size=ScoringConfig.model_fields["max_batch_size"].default,
                 batch_wait_timeout_s=ScoringConfig.model_fields["batch_wait_ms"].default / 1000)
    async def _score(self, items: list) -> list:
        return forward_batch(items, self.endpoint.counters)  # inline: a thread hop costs more than a forward


def build_app(args: ServeSettings) -> serve.Application:
    """The application of `args` (a ServeSettings or its dict: Serve's application builder)."""
    if not isinstance(args, ServeSettings):
        args = ServeSettings.model_validate(args)
    options = {"user_config": args.user_config()} if args.model is not None else {}
    return Scorer.options(
        num_replicas=args.replicas, ray_actor_options={"num_cpus": args.num_cpus},
        max_ongoing_requests=MAX_ONGOING,
        **options).bind({"replicas": args.replicas, "num_cpus": args.num_cpus})
