"""Serving the explorer: a production WSGI server (waitress, several threads) on 127.0.0.1 unless told otherwise,
Flask's debug server only when asked, and a page that says what to run when a study has no published run yet."""

from __future__ import annotations

import sys

DEFAULT_HOST = "127.0.0.1"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_PORT = 8050
THREADS = 8


def serve(app, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, debug: bool = False, what: str = "") -> None:
    """Serve ``app`` until interrupted; prints the address first."""
    shown = "localhost" if host in LOOPBACK else f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    print(f"msma-explorer: serving {what + ' ' if what else ''}at {url} (Ctrl+C stops)", flush=True)
    if host not in LOOPBACK:
        print(f"warning: listening on {host}: anyone who can reach this machine can open the explorer",
              file=sys.stderr)
    if debug:  # Flask's development server with Dash's dev tools: only when asked
        app.run(host=host, port=port, debug=debug)
        return
    import waitress

    waitress.serve(app.server, host=host, port=port, threads=THREADS, ident="msma-explorer")


def waiting_app(study: str, message: str, command: str):
    """A one-page app for a study without a published run: what is missing and the command that makes it."""
    import dash
    import dash_bootstrap_components as dbc
    from dash import html

    from app import ASSETS

    app = dash.Dash(__name__, title=f"msma-explorer · {study}", assets_folder=str(ASSETS), update_title=None)
    app.layout = dbc.Container(
        dbc.Card(
            dbc.CardBody([
                html.H4(f"msma-explorer · {study}", className="card-title"),
                html.P(message),
                html.P("Run this, then start the explorer again:"),
                html.Pre(command, className="bg-light p-2 border rounded"),
            ]),
            className="mt-5 shadow-sm",
        ),
        style={"maxWidth": "46rem"},
    )
    return app
