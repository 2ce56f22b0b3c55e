"""``msma serve``: which run it opens, what it says when there is none or it cannot be read, and how it serves
(waitress on 127.0.0.1 unless asked otherwise; Flask's debug server only with --debug)."""

from __future__ import annotations

import json
import shutil

import pytest

from analysis.demo.synthetic_run import write_synthetic_study
from app import server
from msma.cli import main
from tests.conftest import make_small_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_synthetic_study(tmp_path_factory.mktemp("serve") / "study", 80, seed=4)


@pytest.fixture
def served(monkeypatch):
    """Record what would be served instead of serving it."""
    calls = []
    monkeypatch.setattr(server, "serve", lambda app, host, port, debug=False, what="": calls.append(
        {"app": app, "host": host, "port": port, "debug": debug, "what": what}))
    return calls


def test_serve_opens_the_latest_run_on_localhost_without_debug(study, served):
    assert main(["serve", str(study)]) == 0
    (call,) = served
    assert (call["host"], call["port"], call["debug"]) == ("127.0.0.1", 8050, False)
    run_id = (study.parent / "runs" / "latest").read_text().strip()
    assert run_id in call["what"]
    assert call["app"].title.startswith("msma-explorer")


def test_serve_a_named_run_and_refuse_unknown_ones(study, served, capsys):
    run_id = (study.parent / "runs" / "latest").read_text().strip()
    assert main(["serve", str(study), "--run", run_id, "--port", "8123", "--cohort", "autism"]) == 0
    assert served[-1]["port"] == 8123
    assert main(["serve", str(study), "--run", "20000101T000000Z-deadbeef"]) == 1
    assert "no published run 20000101T000000Z-deadbeef" in capsys.readouterr().err
    assert main(["serve", str(study), "--cohort", "nobody"]) == 2
    assert "--cohort: expected one of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_code:
        main(["serve", str(study), "--port", "0"])
    assert exit_code.value.code == 2 and "expected a port number" in capsys.readouterr().err
    assert main(["serve", str(study), "--host", "0.0.0.0", "--debug"]) == 2
    assert "debug server" in capsys.readouterr().err


def test_a_study_without_a_run_gets_a_page_naming_the_command(tmp_path, served, capsys):
    small = make_small_study(tmp_path / "small")
    assert main(["serve", str(small.manifest)]) == 0
    (call,) = served
    page = json.dumps(call["app"].layout.to_plotly_json(), default=str)
    assert f"msma refresh {small.manifest.resolve()}" in page and "no published run yet" in page
    assert "msma refresh" in capsys.readouterr().err


def test_an_unreadable_run_is_a_named_error_not_a_traceback(study, tmp_path, served, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(study.parent, copy)
    run_dir = copy / "runs" / (copy / "runs" / "latest").read_text().strip()
    (run_dir / "heatmaps.npy").unlink()
    assert main(["serve", str(copy / "data_manifest.yaml")]) == 1
    err = capsys.readouterr().err
    assert "heatmaps.npy: not a readable msma run" in err and "Traceback" not in err
    assert served == []


def test_a_port_in_use_is_a_message_not_a_traceback(study, monkeypatch, capsys):
    def busy(*_args, **_kwargs):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(server, "serve", busy)
    assert main(["serve", str(study)]) == 1
    err = capsys.readouterr().err
    assert "cannot listen on 127.0.0.1:8050" in err and "Traceback" not in err


def test_the_server_is_waitress_unless_debug_is_asked(monkeypatch):
    import waitress

    seen = {}
    monkeypatch.setattr(waitress, "serve", lambda wsgi, **kw: seen.update(kw, wsgi=wsgi))

    class FakeApp:
        server = object()

        def run(self, **kw):
            seen.update(kw, dev=True)

    server.serve(FakeApp(), "127.0.0.1", 8050)
    assert seen["host"] == "127.0.0.1" and seen["threads"] >= 4 and "dev" not in seen
    seen.clear()
    server.serve(FakeApp(), "127.0.0.1", 8050, debug=True)
    assert seen == {"host": "127.0.0.1", "port": 8050, "debug": True, "dev": True}
