"""The settings registry (``core.settings``), the worker hooks (``core.hooks``), and what ships.

Every environment variable and model-config ``handler:`` key is declared once and read by one
strict reader; the docs' table is generated from it; test-only code stays out of the archives.
"""

from __future__ import annotations

import ast
import os
import sys
import zipfile
from pathlib import Path

import pytest

import lossnet
from core import hooks, onnx_session, settings
from core.paths import ROOT
from core.settings import SettingError
from optimize.serving import ServingLimits
from server import settings_table
from tests.support import fault_points

#: The only module that reads the process environment (the rest ask it).
#: The registry, and Ray's driver: Ray and its S3 filesystem are configured through the process
#: environment (RAY_*, AWS_*), which is theirs, not this project's settings.
READERS = {Path("core/settings.py"), Path("stylize/ray_engine.py")}
#: What never goes into an archive: test support and fault points.
TEST_ONLY = ("fault_points", "tests/", "random_vgg")


def test_the_committed_settings_table_is_the_generated_one():
    text = settings_table.DOC.read_text()
    assert settings_table.with_table(text, settings_table.render()) == text, \
        "docs/operating.md's settings table is stale: run .venv/bin/python -m server.settings_table"


def test_a_variable_is_typed_and_unset_or_empty_means_its_default():
    assert settings.env("STYLE_ADMISSION_WAIT_S", {}) == 10.0
    assert settings.env("STYLE_ADMISSION_WAIT_S", {"STYLE_ADMISSION_WAIT_S": " "}) == 10.0
    assert settings.env("STYLE_ADMISSION_HEAVY_PIXELS", {"STYLE_ADMISSION_HEAVY_PIXELS": "1e6"}) == 1_000_000
    assert settings.env("STYLE_TOKEN_AUTH", {"STYLE_TOKEN_AUTH": "off"}) is False
    assert settings.env("STYLE_WEIGHTS_CACHE", {}) == Path.home() / ".cache" / "style-transfer" / "weights"
    assert settings.env("STYLE_RUNTIME_DIR", {}) is None
    assert settings.env("WORLD_SIZE", {"WORLD_SIZE": "4"}) == 4


@pytest.mark.parametrize(("name", "raw", "message"), [
    ("STYLE_ADMISSION_WAIT_S", "soon", r"\$STYLE_ADMISSION_WAIT_S must be a float, got 'soon'"),
    ("STYLE_TILE_THRESHOLD", "2.5", r"\$STYLE_TILE_THRESHOLD must be a positive whole number of pixels"),
    ("STYLE_TOKEN_AUTH", "maybe", r"\$STYLE_TOKEN_AUTH must be true or false"),
    ("STYLE_INFERENCE_PORT", "http", r"\$STYLE_INFERENCE_PORT must be a int"),
])
def test_a_malformed_value_is_refused_naming_the_variable(name, raw, message):
    with pytest.raises(SettingError, match=message):
        settings.env(name, {name: raw})


def test_an_unknown_style_variable_is_refused_by_name_with_the_known_ones():
    with pytest.raises(SettingError, match=r"STYLE_ADMISION_WAIT_S: no setting has that name.*STYLE_ADMISSION_WAIT_S"):
        settings.env("STYLE_MODELS", {"STYLE_ADMISION_WAIT_S": "3"})
    with pytest.raises(KeyError, match="not declared"):
        settings.env("STYLE_NOT_DECLARED", {})


def test_kubernetes_service_variables_are_not_settings():
    service = {"STYLE_TRANSFER_SERVICE_HOST": "10.0.0.1", "STYLE_TRANSFER_SERVICE_PORT": "80",
               "STYLE_TRANSFER_SERVICE_PORT_HTTP": "80", "STYLE_TRANSFER_PORT": "tcp://10.0.0.1:80",
               "STYLE_TRANSFER_PORT_80_TCP": "tcp://10.0.0.1:80", "STYLE_TRANSFER_PORT_80_TCP_PROTO": "tcp",
               "STYLE_TRANSFER_PORT_80_TCP_PORT": "80", "STYLE_TRANSFER_PORT_80_TCP_ADDR": "10.0.0.1"}
    settings.check_environment(service)
    with pytest.raises(SettingError, match="STYLE_INFERENCE_PRT"):  # a typo that only looks like one
        settings.check_environment({**service, "STYLE_INFERENCE_PRT": "8080"})


def test_handler_settings_are_typed_with_defaults_and_unknown_keys_refused():
    values = settings.handler_settings({"handler": {"max_pixels": 1000, "min_psnr_db": 40}}, "fast_style")
    assert values["max_pixels"] == 1000 and values["min_psnr_db"] == 40.0
    assert values["max_input_pixels"] == settings.MAX_INPUT_PIXELS and values["threads"] == 0
    assert "tile_threshold" not in values  # unset: core.tiling's own default applies
    with pytest.raises(SettingError, match=r"unknown multistyle handler setting\(s\) \['tile_size'\].*known"):
        settings.handler_settings({"handler": {"tile_size": 512}}, "multistyle")
    with pytest.raises(SettingError, match="handler.threads must be a whole number of threads"):
        settings.handler_settings({"handler": {"threads": "two"}}, "arbitrary")
    with pytest.raises(SettingError, match="no handler settings are declared for model family 'other'"):
        settings.handler_settings({}, "other")


def test_every_shipped_model_config_passes_the_strict_reader():
    from export.models import ARBITRARY_HANDLER, FAST_MODEL_CONFIG, STYLED_MODEL_CONFIG
    from optimize.archive import model_config

    settings.handler_settings(FAST_MODEL_CONFIG, "fast_style")
    settings.handler_settings(STYLED_MODEL_CONFIG, "multistyle")
    settings.handler_settings({"handler": {**STYLED_MODEL_CONFIG["handler"], **ARBITRARY_HANDLER}}, "arbitrary")
    assert ServingLimits.from_model_config(model_config()) == ServingLimits()
    assert FAST_MODEL_CONFIG["responseTimeout"] == model_config()["responseTimeout"] == settings.RESPONSE_TIMEOUT_S


def test_threads_zero_means_every_core_everywhere():
    every_core = settings.thread_count(0)
    assert every_core == len(os.sched_getaffinity(0))
    assert onnx_session.session_options(0).intra_op_num_threads == every_core
    assert ServingLimits(intra_op_threads=0).cpu_threads() == every_core
    assert settings.thread_count(3) == 3


def test_only_the_registry_reads_the_environment():
    """Outside the tests, no module reads ``os.environ``/``os.getenv``: they ask ``core.settings``."""
    readers = set()
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in ("tests", ".venv", "build", "model_store"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb") \
                    and isinstance(node.value, ast.Name) and node.value.id == "os":
                readers.add(relative)
    assert readers == READERS


def test_plugins_named_in_the_environment_install_listeners(tmp_path, monkeypatch):
    (tmp_path / "watcher_plugin.py").write_text(
        "from core import hooks\nSEEN = []\n\ndef install():\n    hooks.listen('loading', SEEN.append)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(hooks, "_listeners", {point: [] for point in hooks.POINTS})
    monkeypatch.setattr(hooks, "_installed", set())
    hooks.worker_starting("wave", {"STYLE_WORKER_PLUGINS": "watcher_plugin"})
    hooks.worker_starting("udnie", {"STYLE_WORKER_PLUGINS": "watcher_plugin"})  # installed once
    assert sys.modules["watcher_plugin"].SEEN == ["wave", "udnie"]
    with pytest.raises(SettingError, match="STYLE_WORKER_PLUGINS names 'no_such_plugin'"):
        hooks.load_plugins({"STYLE_WORKER_PLUGINS": "no_such_plugin"})
    with pytest.raises(ValueError, match="no hook point 'painting'"):
        hooks.listen("painting", print)


def test_fault_points_reach_a_worker_only_through_the_test_servers_environment(tmp_path):
    env = fault_points.worker_env(tmp_path)
    assert env["STYLE_WORKER_PLUGINS"] == fault_points.PLUGIN
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(fault_points.SUPPORT_DIR)
    assert (fault_points.SUPPORT_DIR / f"{fault_points.PLUGIN}.py").is_file()
    settings.check_environment(env)  # its variables are declared (test-only)
    assert settings.ENVIRONMENT[fault_points.HOLD_ENV].test_only


def test_test_only_helpers_are_not_part_of_the_loss_network_package():
    for name in ("random_vgg", "write_random_weights", "TEST_OPT_IN_ENV"):
        assert not hasattr(lossnet, name), name
    assert settings.ENVIRONMENT[lossnet.ENV_ALLOW_UNVERIFIED].test_only


def test_no_archive_carries_test_only_code(built_store):
    for archive in sorted(built_store.glob("*.mar")):
        with zipfile.ZipFile(archive) as mar:
            names = mar.namelist()
        assert "core/settings.py" in names and "core/hooks.py" in names, archive.name
        leaked = [name for name in names if any(part in name for part in TEST_ONLY)]
        assert not leaked, f"{archive.name} carries {leaked}"
