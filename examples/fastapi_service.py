"""A text-classification service: FastAPI and asyncclf.

Run it with ``uvicorn examples.fastapi_service:app`` (from the repository root; add
``--workers N`` for N processes, each with its own classifier). At startup it loads the
model file named by ``ASYNCCLF_MODEL`` (pinned by ``ASYNCCLF_MODEL_SHA256`` if set),
or trains the default pipeline on the bundled SMS spam corpus. docs/deployment.md
explains the pattern, the tuning and what the figures are.

Endpoints:
- ``POST /classify`` ``{"text": ...}``: one prediction;
- ``POST /classify_many`` ``{"texts": [...]}``: one prediction per text, in order;
- ``POST /rank`` ``{"texts": [...], "label": ..., "k": ...}``: texts by score;
- ``POST /refit`` ``{"texts": [...], "labels": [...]}``: starts a refit in the
  background and answers 202 at once (409 while one runs); predictions keep flowing,
  and the new model serves when it is ready (``/healthz`` tells which model serves,
  and how the last refit ended);
- ``POST /swap`` ``{"path": ..., "sha256": ...}``: serve a saved model file from the
  models directory (``ASYNCCLF_MODEL_DIR``, by default the startup model's directory or
  the working directory): an operator's endpoint, to put behind your own access control;
- ``GET /healthz``: the serving model's version and id, and the batcher's statistics;
- ``GET /metrics``: the same for Prometheus (when prometheus-client is installed).

Every prediction says which model answered: ``version`` (a count in this process)
and ``model_id`` (the same in every worker serving that model).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from asyncclf import (
    AsyncClassifier,
    InvalidInputError,
    InvalidParameterError,
    OverloadedError,
    PersistenceError,
    Prediction,
    Ranked,
    load_sms_spam,
)


class Text(BaseModel):
    text: str


class Texts(BaseModel):
    texts: list[str]


class RankRequest(BaseModel):
    texts: list[str]
    label: str
    k: int | None = None


class TrainingSet(BaseModel):
    texts: list[str]
    labels: list[str]


class ModelFile(BaseModel):
    path: str
    sha256: str | None = None


async def start_classifier(
    model: str | None, sha256: str | None, training: tuple[list[str], list[str]] | None
) -> AsyncClassifier:
    """Load the model file, or train on ``training`` (the bundled corpus by default)."""
    # The default batching settings suit a service (a lone request runs at once; under
    # load batches wait at most max_latency, 2 ms, for company). A full queue answers
    # 503 at once, rather than letting latency grow without bound.
    settings: dict[str, Any] = {"max_queue": 10_000, "overload": "raise"}
    if model is not None:
        return await AsyncClassifier.load(model, sha256=sha256, **settings)
    texts, labels = training if training is not None else load_sms_spam()
    return await AsyncClassifier(**settings).fit(texts, labels)


def answer(result: Prediction[Any] | Ranked) -> dict[str, Any]:
    """A prediction or a ranked text as JSON, without its text."""
    fields = dataclasses.asdict(result)
    del fields["text"]
    return fields


def create_app(
    model: str | None = None,
    sha256: str | None = None,
    training: tuple[list[str], list[str]] | None = None,
    model_dir: str | None = None,
) -> FastAPI:
    """The service, serving the model file ``model`` or one trained on ``training``;
    ``/swap`` loads files from ``model_dir`` only."""
    models = Path(model_dir or (os.path.dirname(model) if model else None) or ".").resolve()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One classifier per process, made before the first request and shared by all
        # of them: that is what lets their calls share batches.
        app.state.clf = await start_classifier(model, sha256, training)
        app.state.refits = 0
        app.state.refit = "none"  # then "running", "done", or "failed: <error>"
        async with anyio.create_task_group() as background:
            app.state.background = background
            yield
            background.cancel_scope.cancel()  # a refit under way is abandoned

    app = FastAPI(title="asyncclf service", lifespan=lifespan)

    def classifier(request: Request) -> AsyncClassifier:
        clf: AsyncClassifier = request.app.state.clf
        return clf

    @app.exception_handler(InvalidInputError)
    @app.exception_handler(InvalidParameterError)
    async def invalid(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(OverloadedError)
    async def overloaded(request: Request, error: OverloadedError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(PersistenceError)
    async def unloadable(request: Request, error: PersistenceError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    # Answers leave out the texts, which the client has: a 20 Newsgroups post is 1.9 kB.
    @app.post("/classify")
    async def classify(body: Text, request: Request) -> dict[str, Any]:
        return answer(await classifier(request).classify(body.text))

    @app.post("/classify_many")
    async def classify_many(body: Texts, request: Request) -> list[dict[str, Any]]:
        return [answer(p) for p in await classifier(request).classify_many(body.texts)]

    @app.post("/rank")
    async def rank(body: RankRequest, request: Request) -> list[dict[str, Any]]:
        ranked = await classifier(request).rank(body.texts, body.label, k=body.k)
        return [answer(r) for r in ranked]

    @app.post("/refit", status_code=202)
    async def refit(body: TrainingSet, request: Request) -> dict[str, Any]:
        clf, state = classifier(request), request.app.state

        async def fit() -> None:
            # An error must not end the task group, which would stop the service: it
            # is kept for /healthz, and the serving model stays.
            try:
                await clf.fit(body.texts, body.labels)
            except Exception as error:
                state.refit = f"failed: {type(error).__name__}: {error}"
            else:
                state.refits += 1
                state.refit = "done"

        if len(body.texts) != len(body.labels) or len(set(body.labels)) < 2:
            msg = "texts and labels must have the same length, and labels two classes or more"
            raise HTTPException(422, msg)
        # One refit at a time: each holds its training set and a model in memory, and
        # a fit cannot be interrupted once it runs.
        if state.refit == "running":
            raise HTTPException(409, "a refit is running; wait for /healthz to show its end")
        state.refit = "running"
        state.background.start_soon(fit)
        return {"status": "refitting", "version": clf.version, "model_id": clf.model_id}

    @app.post("/swap")
    async def swap(body: ModelFile, request: Request) -> dict[str, Any]:
        try:
            path = (models / body.path).resolve()
        except (OSError, ValueError) as error:  # ValueError: a path holding NUL
            raise HTTPException(422, f"not a path: {error}") from None
        if not path.is_relative_to(models):
            raise HTTPException(403, f"model files are read from {models} only")
        clf = await classifier(request).swap(path, sha256=body.sha256)
        return {"version": clf.version, "model_id": clf.model_id}

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        clf = classifier(request)
        return {
            "status": "ok",
            "version": clf.version,
            "model_id": clf.model_id,
            "refits": request.app.state.refits,
            "refit": request.app.state.refit,
            "statistics": dataclasses.asdict(clf.statistics()),
        }

    if importlib.util.find_spec("prometheus_client") is not None:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        from .prometheus_metrics import StatisticsCollector

        registry = CollectorRegistry()
        registry.register(StatisticsCollector(lambda: app.state.clf))

        @app.get("/metrics")
        async def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


app = create_app(
    os.environ.get("ASYNCCLF_MODEL"),
    os.environ.get("ASYNCCLF_MODEL_SHA256"),
    model_dir=os.environ.get("ASYNCCLF_MODEL_DIR"),
)
