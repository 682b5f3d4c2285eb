"""The Modal path offline: GPU recipe validation on CPU, the app's construction, and the remote body run locally."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import modal
import pytest
from modal.exception import NotFoundError

import train_grpo
from moderation.errors import UserError
from training import modal_app
from training.grpo import run_grpo
from training.modal_app import ModalSettings
from training.pipeline import train
from training.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
GPU_RECIPE = REPO / "configs" / "recipes" / "modal-llama8b.yaml"
CPU_RECIPE = REPO / "configs" / "recipes" / "cpu-smollm2.yaml"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train_grpo.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


class TestGpuRecipeOnCpu:
    def test_gpu_recipe_validates_here(self, tiny_dataset_dir):
        recipe = load_recipe(GPU_RECIPE, [f"dataset={tiny_dataset_dir}"])
        assert (recipe.backend, recipe.use_vllm, recipe.vllm_mode, recipe.rollout) == (
            "unsloth",
            True,
            "colocate",
            "trl",
        )
        assert recipe.prompt.style == "full" and not recipe.sft.enabled
        assert recipe.modal == ModalSettings(gpu="H100", timeout_s=14400, retries=2)

    def test_running_it_here_fails_with_one_line(self, tiny_dataset_dir, tmp_path):
        result = run_cli("--recipe", str(GPU_RECIPE), f"dataset={tiny_dataset_dir}", f"output_root={tmp_path}")
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "backend=unsloth needs" in result.stderr
        assert "modal run train_grpo.py" in result.stderr
        assert not any(tmp_path.iterdir()), "nothing is written before the runtime check"

    def test_vllm_on_the_transformers_backend_needs_vllm(self, tiny_dataset_dir):
        if importlib.util.find_spec("vllm") is not None:
            pytest.skip("vllm is installed here")
        recipe = load_recipe(CPU_RECIPE, [f"dataset={tiny_dataset_dir}", "use_vllm=true", "rollout=trl"])
        with pytest.raises(UserError, match="use_vllm=true needs vllm"):
            train(recipe)

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            (["rollout=shared_prefix"], "set rollout=trl"),
            (["vllm_mode=server"], "vllm_mode=colocate"),
            (["sft.enabled=true"], "sft.enabled=false"),
            (["vllm_mode=remote"], "vllm_mode"),
            (["modal.gpu_type=H100"], "unknown field 'modal.gpu_type' in modal"),
            (["modal.retries=-1"], "modal.retries"),
        ],
    )
    def test_bad_gpu_recipes_fail_at_load(self, tiny_dataset_dir, overrides, message):
        with pytest.raises(UserError, match=message):
            load_recipe(GPU_RECIPE, [f"dataset={tiny_dataset_dir}", *overrides])

    def test_vllm_settings_reach_grpo_config(self, tiny_recipe, tmp_path, monkeypatch, policy):
        import trl

        seen = {}

        class Stop(Exception):
            pass

        def fake_trainer(*, args, **kwargs):
            seen["args"] = args
            raise Stop

        monkeypatch.setattr(trl, "GRPOTrainer", fake_trainer)
        overrides = [
            *tiny_recipe(tmp_path),
            "use_vllm=true",
            "rollout=trl",
            "vllm_mode=server",
            "vllm_server_port=8123",
        ]
        recipe = load_recipe(CPU_RECIPE, overrides)
        with pytest.raises(Stop):
            run_grpo(recipe, recipe.model, [], None, None, policy)
        args = seen["args"]
        assert (args.use_vllm, args.vllm_mode, args.vllm_server_port) == (True, "server", 8123)
        assert args.vllm_gpu_memory_utilization == recipe.vllm_gpu_memory_utilization


class TestModalApp:
    def test_app_and_function_are_built_offline(self):
        assert train_grpo.app is modal_app.app and modal_app.app.name == "grpo-moderation"
        spec = modal_app.train._spec_
        assert spec.gpus == ModalSettings().gpu
        assert set(spec.volumes) == {"/cache", "/data", "/runs"}
        assert spec.image is not None
        assert spec.secrets == []  # attached at launch, only those that exist

    def test_function_options_follow_the_recipe(self):
        settings = ModalSettings(gpu="A100-80GB", timeout_s=7200, retries=3, runs_volume="my-runs")
        secret = modal.Secret.from_dict({"WANDB_API_KEY": "x"})
        options = modal_app.function_options(settings, [secret])
        assert (options["gpu"], options["timeout"], options["secrets"]) == ("A100-80GB", 7200, [secret])
        assert options["retries"].max_retries == 3
        assert modal_app.volume_names(settings) == {
            "/cache": "grpo-moderation-hf-cache",
            "/data": "grpo-moderation-data",
            "/runs": "my-runs",
        }
        assert set(options["volumes"]) == {"/cache", "/data", "/runs"}

    def test_image_pins_are_the_gpu_extra(self):
        import tomllib

        project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
        pins = modal_app.pins("gpu")
        assert pins == project["dependencies"] + project["optional-dependencies"]["gpu"]
        assert all("==" in pin for pin in pins)
        names = {pin.split("==")[0] for pin in pins}
        assert {"unsloth", "vllm", "trl", "transformers", "torch", "modal"} <= names

    def test_remote_recipe_points_at_the_volumes_and_resumes(self, tiny_dataset_dir):
        recipe = load_recipe(GPU_RECIPE, [f"dataset={tiny_dataset_dir}"])
        remote = modal_app.remote_recipe(recipe)
        assert remote.dataset == Path("/data") / tiny_dataset_dir.name
        assert remote.output_root == Path("/runs") and remote.resume
        assert remote.learning_rate == recipe.learning_rate and remote.modal == recipe.modal
        with pytest.raises(UserError, match="modal volume rm grpo-moderation-runs modal-llama8b"):
            modal_app.remote_recipe(recipe.model_copy(update={"overwrite": True}))

    def test_missing_secrets_are_skipped(self, monkeypatch, capsys):
        class FakeSecret:
            def __init__(self, name):
                self.name = name

            def hydrate(self):
                if self.name == "wandb":
                    raise NotFoundError("no such secret")

        monkeypatch.setattr(modal.Secret, "from_name", FakeSecret)
        found = modal_app.available_secrets(["wandb", "huggingface"])
        assert [s.name for s in found] == ["huggingface"]
        assert "no Modal secret 'wandb'" in capsys.readouterr().out

    def test_commit_callback_commits_on_save(self):
        class FakeVolume:
            commits = 0

            def commit(self):
                self.commits += 1

        volume = FakeVolume()
        callback = modal_app.commit_callback(volume)
        callback.on_save(None, None, None)
        callback.on_log(None, None, None)
        assert volume.commits == 1

    def test_dry_run_prints_the_setup_without_credentials(self, tiny_dataset_dir):
        result = run_cli("--recipe", str(GPU_RECIPE), f"dataset={tiny_dataset_dir}", "--dry-run")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "gpu: H100, timeout: 14400 s per attempt, retries: 2" in out
        for line in (
            "grpo-moderation-hf-cache -> /cache",
            "grpo-moderation-data -> /data",
            "grpo-moderation-runs -> /runs",
        ):
            assert line in out
        assert "secrets (optional, attached when they exist): wandb, huggingface" in out
        assert "unsloth==2026.10.9" in out and "vllm==0.33.0" in out

    def test_local_entrypoint_validates_before_launching(self, tiny_dataset_dir, monkeypatch, capsys):
        monkeypatch.setattr(modal_app, "upload_dataset", pytest.fail)
        train_grpo.modal_main(recipe=str(GPU_RECIPE), overrides=f"dataset={tiny_dataset_dir}", dry_run=True)
        assert "gpu: H100" in capsys.readouterr().out
        with pytest.raises(SystemExit) as exit_info:
            train_grpo.modal_main(recipe=str(GPU_RECIPE), overrides=f"dataset={tiny_dataset_dir} num_generations=3")
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.startswith("error: ")


def test_remote_body_trains_locally(tiny_recipe, tmp_path, monkeypatch):
    """`train.local()` runs the container's function body here: the tiny model, GRPO only, on CPU."""
    monkeypatch.setenv("WANDB_DIR", "set-by-the-body")
    monkeypatch.delenv("WANDB_DIR")  # absent while the body runs, restored after the test
    recipe = load_recipe(CPU_RECIPE, tiny_recipe(tmp_path, max_steps=1, **{"sft.enabled": "false"}))
    run_dir = Path(modal_app.train.local(recipe.model_dump_json()))
    assert run_dir == tmp_path / "tiny" and os.environ["WANDB_DIR"] == str(run_dir)
    assert (run_dir / "merged" / "READY").exists() and (run_dir / "checkpoints" / "checkpoint-1").is_dir()


def test_rollout_benchmark_without_vllm_is_one_line():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    result = subprocess.run(
        [sys.executable, "benchmarks/rollout.py"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "needs vllm" in result.stderr
