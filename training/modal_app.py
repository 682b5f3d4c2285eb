"""`modal run train_grpo.py`: the recipe, validated on this machine, trains in a Modal GPU container.

The container gets the GPU image built from the project's own pins (`project.dependencies` plus the `gpu` extra in
pyproject.toml, read, never restated), the repo's Python packages and configs, and three volumes split by purpose:
the HF cache (model weights, downloaded once), the dataset (uploaded from this machine before each launch, so the
container trains on exactly the files `load_recipe` checked here) and the runs (committed after every checkpoint).
GPU, timeout, retries, volume and secret names come from the recipe's `modal:` section; hyperparameters are never
restated here. A retry restarts the function, which resumes from the last committed checkpoint.

Secrets are optional: the named ones that exist in the workspace are attached at launch (`wandb` → WANDB_API_KEY,
`huggingface` → HF_TOKEN); without `wandb` the run logs offline, without `huggingface` only ungated models load.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path, PurePosixPath

import modal
from modal.exception import NotFoundError

from moderation.errors import UserError
from training.recipe import ModalSettings, Recipe, require_runtime

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON_VERSION = "3.11"  # the version the pinned sets are resolved and tested for
PACKAGES = ("moderation", "rewards", "training", "train_grpo")  # the pipeline, and the entry point `modal run` names
HF_CACHE_MOUNT = "/cache"
DATA_MOUNT = "/data"
RUNS_MOUNT = "/runs"


def pins(*extras: str, pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The core dependencies plus the named extras, exactly as pinned in pyproject.toml."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project["optional-dependencies"]
    return [*project["dependencies"], *(pin for extra in extras for pin in optional[extra])]


def gpu_environment(*extras: str) -> modal.Image:
    """Pinned packages (`gpu` plus `extras`) with caches on the HF volume; local files are added last, by the caller."""
    return (
        modal.Image.debian_slim(python_version=PYTHON_VERSION)
        .pip_install(*pins("gpu", *extras))
        .env({"HF_HOME": f"{HF_CACHE_MOUNT}/huggingface", "GRPO_MODERATION_CACHE": f"{HF_CACHE_MOUNT}/grpo-moderation"})
    )


def training_image() -> modal.Image:
    """The GPU environment plus what the training pipeline needs from the repo (mounted at container start)."""
    return (
        gpu_environment()
        .add_local_file(REPO_ROOT / "pyproject.toml", "/root/pyproject.toml")  # pins() runs in the container too
        .add_local_dir(REPO_ROOT / "configs", "/root/configs")  # moderation.paths finds policies beside the packages
        .add_local_python_source(*PACKAGES)
    )


def volume_names(settings: ModalSettings) -> dict[str, str]:
    """Mount path → volume name, one volume per purpose."""
    return {
        HF_CACHE_MOUNT: settings.hf_cache_volume,
        DATA_MOUNT: settings.data_volume,
        RUNS_MOUNT: settings.runs_volume,
    }


def volumes(settings: ModalSettings) -> dict[str, modal.Volume]:
    return {
        mount: modal.Volume.from_name(name, create_if_missing=True) for mount, name in volume_names(settings).items()
    }


def function_options(settings: ModalSettings, secrets: list[modal.Secret]) -> dict:
    """The Modal function options a recipe asks for: used by the decorator (defaults) and by `with_options` (recipe)."""
    return {
        "gpu": settings.gpu,
        "timeout": settings.timeout_s,
        "retries": modal.Retries(max_retries=settings.retries, initial_delay=10.0, backoff_coefficient=2.0),
        "volumes": volumes(settings),
        "secrets": secrets,
    }


app = modal.App("grpo-moderation")
image = training_image()


@app.function(image=image, **function_options(ModalSettings(), secrets=[]))
def train(recipe_json: str) -> str:
    """The container side: train the forwarded recipe, committing the runs volume after every checkpoint."""
    from training.pipeline import train as run_pipeline

    recipe = Recipe.model_validate_json(recipe_json)
    require_runtime(recipe)  # before the callback imports transformers: Unsloth must patch it first
    os.environ.setdefault("WANDB_DIR", str(recipe.run_dir))  # offline wandb logs persist on the runs volume
    in_container = not modal.is_local()  # `.local()` runs (the tests) have no volume to commit
    callbacks = [commit_callback(volumes(recipe.modal)[RUNS_MOUNT])] if in_container else []
    return str(run_pipeline(recipe, callbacks=callbacks))


def commit_callback(volume):
    """A TrainerCallback that commits `volume` after each checkpoint, so a retried container resumes from it."""
    from transformers import TrainerCallback

    class CommitOnSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            volume.commit()

    return CommitOnSave()


# ── the local side ──────────────────────────────────────────────────────────────────────────────────────────────


def remote_recipe(recipe: Recipe) -> Recipe:
    """The recipe as the container sees it: dataset and runs on their volumes, and always resumable (retries)."""
    if recipe.overwrite:
        raise UserError(
            f"overwrite=true is not used on Modal (every attempt resumes): delete the old run with "
            f"`modal volume rm {recipe.modal.runs_volume} {recipe.name} -r`"
        )
    update = {
        "dataset": str(PurePosixPath(DATA_MOUNT) / recipe.dataset.name),
        "output_root": RUNS_MOUNT,
        "resume": True,
    }
    return Recipe.model_validate({**recipe.model_dump(mode="json"), **update})


def describe(recipe: Recipe) -> str:
    """What a launch would do, for `--dry-run`: resources, volumes, secrets, image pins, the forwarded recipe."""
    settings, remote = recipe.modal, remote_recipe(recipe)
    lines = [
        f"app: {app.name}, function: train, recipe: {recipe.name} (backend {recipe.backend}, model {recipe.model})",
        f"gpu: {settings.gpu}, timeout: {settings.timeout_s} s per attempt, retries: {settings.retries} (each resumes)",
        *(f"volume: {name} -> {mount}" for mount, name in volume_names(settings).items()),
        f"secrets (optional, attached when they exist): {', '.join(settings.secrets) or 'none'}",
        f"upload: {recipe.dataset}/ -> {settings.data_volume}:/{recipe.dataset.name}/",
        f"remote recipe: dataset={remote.dataset} output_root={remote.output_root} resume=true",
        f"image: python {PYTHON_VERSION}, pip: {' '.join(pins('gpu'))}",
    ]
    return "\n".join(lines)


def upload_dataset(recipe: Recipe) -> None:
    """Put the local dataset folder on the data volume (replacing an older copy of the same name)."""
    with volumes(recipe.modal)[DATA_MOUNT].batch_upload(force=True) as batch:
        batch.put_directory(str(recipe.dataset), f"/{recipe.dataset.name}")


def available_secrets(names: list[str]) -> list[modal.Secret]:
    """The named secrets that exist in the workspace; a missing one is reported and skipped."""
    found = []
    for name in names:
        secret = modal.Secret.from_name(name)
        try:
            secret.hydrate()
        except NotFoundError:
            print(f"no Modal secret {name!r}: continuing without it")
            continue
        found.append(secret)
    return found


def launch(recipe: Recipe, dry_run: bool = False) -> None:
    """Print the configuration, then (unless `dry_run`) upload the data and train remotely; blocks until done."""
    print(describe(recipe))
    if dry_run:
        return
    remote = remote_recipe(recipe)
    upload_dataset(recipe)
    options = function_options(recipe.modal, available_secrets(recipe.modal.secrets))
    run_dir = train.with_options(**options).remote(remote.model_dump_json())
    print(f"done: {run_dir} on volume {recipe.modal.runs_volume}")
    print(f"fetch it: modal volume get {recipe.modal.runs_volume} {recipe.name} runs/")
