"""mlp_jax.export: the artifacts run in a fresh process without mlp_jax, with the same logits."""

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mlp_jax.export import main

# Runs in a fresh interpreter that cannot import mlp_jax: the artifact must stand alone.
LOAD_STABLEHLO = textwrap.dedent("""
    import sys
    sys.modules["mlp_jax"] = None  # any import of mlp_jax now fails
    import numpy as np
    from jax import export
    with open("model.jaxexport", "rb") as file:
        exported = export.deserialize(bytearray(file.read()))
    images = np.load("images.npy")
    for batch in (1, 7, len(images)):  # one artifact, any batch size
        np.save(f"logits{batch}.npy", np.asarray(exported.call(images[:batch])))
""")

LOAD_TENSORFLOW = textwrap.dedent("""
    import sys
    sys.modules["mlp_jax"] = None
    import numpy as np
    import tensorflow as tf
    images = np.load("images.npy")
    saved = tf.saved_model.load("model.savedmodel").signatures["serving_default"]
    np.save("logits_savedmodel.npy", list(saved(images=tf.constant(images)).values())[0].numpy())
    lite = tf.lite.Interpreter(model_path="model.tflite").get_signature_runner("serving_default")
    np.save("logits_tflite.npy", list(lite(images=images).values())[0])
""")


def run(cwd, *args):
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def workspace(tmp_path, trained_run, subset):
    """A temporary current directory with ./run (the trained run) and ./images.npy (uint8)."""
    shutil.copytree(trained_run[0], tmp_path / "run")
    np.save(tmp_path / "images.npy", subset.test_images[:50])
    return tmp_path


def package_logits(trained_run, images):
    state = trained_run[1].state
    return np.asarray(state.apply_fn({"params": state.params}, images, train=False))


def test_stablehlo_artifact_runs_without_mlp_jax_and_matches(workspace, trained_run, subset):
    out = run(workspace, "-m", "mlp_jax.export", "--workdir", "run", "--out", "model.jaxexport")
    assert "exported" in out and "uint8[batch, 28, 28, 1] -> float32[batch, 10] logits" in out
    run(workspace, "-c", LOAD_STABLEHLO)
    expected = package_logits(trained_run, subset.test_images[:50])
    for batch in (1, 7, 50):
        logits = np.load(workspace / f"logits{batch}.npy")
        np.testing.assert_allclose(logits, expected[:batch], atol=1e-5, rtol=0)
    metadata = json.loads((workspace / "model.jaxexport.json").read_text())
    assert metadata["class_names"] == [str(i) for i in range(10)]
    assert metadata["input"] == {"dtype": "uint8", "shape": ["batch", 28, 28, 1]}


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="--format savedmodel/tflite need TensorFlow (not installed)",
)
def test_savedmodel_and_tflite_match_the_package(workspace, trained_run, subset, monkeypatch):
    monkeypatch.chdir(workspace)  # in this process: TensorFlow is slow to import
    for fmt in ("savedmodel", "tflite"):
        assert main(["--workdir", "run", "--format", fmt, "--out", f"model.{fmt}"]) == 0
    run(workspace, "-c", LOAD_TENSORFLOW)
    expected = package_logits(trained_run, subset.test_images[:50])
    for fmt in ("savedmodel", "tflite"):
        logits = np.load(workspace / f"logits_{fmt}.npy")
        np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)


def test_tensorflow_formats_without_tensorflow_say_what_to_install(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(  # as if TensorFlow were not installed
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorflow" else real_find_spec(name, *a),
    )
    assert main(["--workdir", "run", "--format", "tflite", "--out", "model.tflite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlp_jax.export: error: --format: tflite needs TensorFlow")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workdir", "run", "--out", "run/config.json/x"], "cannot create run/config.json"),
        (["--workdir", "nowhere", "--out", "model.jaxexport"], "nowhere does not exist"),
    ],
)
def test_bad_input_gets_a_one_line_error(workspace, monkeypatch, capsys, args, message):
    monkeypatch.chdir(workspace)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlp_jax.export: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not (workspace / "model.jaxexport").exists()


def test_out_in_a_folder_that_does_not_exist_yet_makes_it(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    assert main(["--workdir", "run", "--out", "new/model.jaxexport"]) == 0
    assert (workspace / "new" / "model.jaxexport").is_file()


@pytest.mark.parametrize("out", ["run/metrics.jsonl", "link", "folder", "run"])
def test_out_replaces_only_an_earlier_export(workspace, monkeypatch, capsys, out):
    monkeypatch.chdir(workspace)
    (workspace / "folder").mkdir()
    (workspace / "link").symlink_to("run/config.json")
    before = {p: p.read_bytes() for p in (workspace / "run").glob("*.json*")}
    assert main(["--workdir", "run", "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"--out: {out} exists and is no earlier export: not overwriting it" in err, err
    assert {p: p.read_bytes() for p in (workspace / "run").glob("*.json*")} == before
    for _ in range(2):  # an export is replaced by the next
        assert main(["--workdir", "run", "--out", "model.jaxexport"]) == 0
