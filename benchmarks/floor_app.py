"""The stack's floor: a minimal Flask app that parses the body and returns one constant card.

Served by `python -m benchmarks.floor_app` under exactly the gunicorn settings of `cds-service serve`
(cds_service.gunicorn_conf.gunicorn_options from the same CDS_* environment).
"""

from __future__ import annotations

import argparse
import os

import orjson
from flask import Flask, Response, request

SERVICE_PATH = "/cds-services/osteoporosis-escalation"


def constant_card(uuid: str, label: str) -> bytes:
    """The one card a floor server returns for every call (no clinical logic), as response bytes."""
    card = {"uuid": uuid, "summary": f"{label.capitalize()}: constant card", "indicator": "info"}
    return orjson.dumps({"cards": [{**card, "source": {"label": label}}]})


CARD = constant_card("00000000-0000-4000-8000-000000000000", "floor")


def create_floor_app() -> Flask:
    app = Flask(__name__)

    @app.post(SERVICE_PATH)
    def call() -> Response:
        body = orjson.loads(request.get_data())
        if not isinstance(body, dict):
            return Response(b"{}", status=400, mimetype="application/json")
        return Response(CARD, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", required=True)
    parser.add_argument("--workers", default="2")
    args = parser.parse_args()
    from cds_service.cli import GunicornApplication  # noqa: PLC0415
    from cds_service.config import load_settings  # noqa: PLC0415
    from cds_service.gunicorn_conf import gunicorn_options  # noqa: PLC0415

    environ = {
        **os.environ,
        "CDS_HOST": "127.0.0.1",
        "CDS_PORT": args.port,
        "CDS_WORKERS": args.workers,
        "CDS_LOG_LEVEL": "WARNING",
    }
    settings = load_settings(environ)
    options = gunicorn_options(settings)
    options["proc_name"] = "cds-floor"
    GunicornApplication(create_floor_app, options).run()


if __name__ == "__main__":
    main()
