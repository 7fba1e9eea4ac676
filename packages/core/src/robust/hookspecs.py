"""Every hook a robust plugin can implement, in one place.

Plugins are modules (or objects) with functions decorated by :data:`hookimpl` whose names
match a spec below. They are found through the ``robust`` entry-point group. Registration
hooks follow the *register callback* shape of simonw/llm: the core passes a ``register``
callable and the plugin calls it once per thing it provides. ``register`` takes a lazy
reference (``"package.module:Attribute"``) so that loading a plugin never imports torch;
the object is imported only when a run needs it.

Every hook here must have a heading in ``docs/plugins.md`` (a test checks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    import click

    from robust.papers import RegisterPaperResult
    from robust.registry import Register

PROJECT = "robust"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------------------------
# Registration: called once, when the registry is first built.
# ---------------------------------------------------------------------------------------------


@hookspec
def register_methods(register: Register) -> None:
    """Register training methods (the paper's algorithm: a ``robust.method.Method`` subclass).

    Call ``register(name, "pkg.module:MethodClass", description=...)``. The class's ``Config``
    attribute (a pydantic model) declares the method's options; ``config="pkg.mod:Config"`` may
    name it separately so that ``robust info`` can show it without importing the method.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets.

    Call ``register(name, "pkg.module:factory", config="pkg.module:Config")``. The factory is
    called as ``factory(config, data_root)`` and returns a ``robust.data.DatasetBundle``.
    """


@hookspec
def register_models(register: Register) -> None:
    """Register model architectures.

    Call ``register(name, "pkg.module:factory", config=...)``. The factory is called as
    ``factory(config, num_classes=..., input_shape=(C, H, W))`` and returns a
    ``robust.models.Classifier`` (``features`` + linear ``head``), so that every method can
    reach the penultimate representation and the class weights.
    """


@hookspec
def register_losses(register: Register) -> None:
    """Register per-sample loss functions.

    Call ``register(name, "pkg.module:factory", config=...)``. The factory is called as
    ``factory(config)`` and returns a callable ``loss(logits, targets) -> per-sample losses``
    (no reduction), so that methods can weight samples.
    """


@hookspec
def register_infills(register: Register) -> None:
    """Register infill operators ("inpainters") for counterfactual and factual augmentations.

    Call ``register(name, "pkg.module:function", description=...)``. The function is called as
    ``op(x, keep, ctx, **options)``: ``x`` normalised images ``(N, C, H, W)``, ``keep`` a ``(N, 1, H, W)``
    mask in {0, 1} (1 = keep the pixel, 0 = fill it), ``ctx`` a ``robust_counterfactual.infill.InfillContext``
    (normalisation, generator, labels, model, precomputed images). It returns
    ``x * keep + fill * (1 - keep)`` with kept pixels bit-identical to ``x``, drawing all randomness
    from ``ctx.generator``. Methods look operators up with ``robust_counterfactual.infill.apply_infill``.
    """


@hookspec
def register_mask_providers(register: Register) -> None:
    """Register mask providers: foreground masks for images that come without them.

    Call ``register(name, "pkg.module:function", description=...)``. The function is called as
    ``provider(images)`` with ``images`` a uint8 tensor ``(N, C, H, W)`` on the CPU (stored pixels,
    not normalised) and returns a uint8 tensor ``(N, 1, H, W)``: 255 = foreground, 0 = background
    (the layout of ``ArraySplit.masks``). Methods that need masks (CLP) take a provider's name as an
    option and call it once at the start of a run. It must be deterministic (resume recomputes it).
    The reference may name a class instead (a model with weights): it is instantiated with no
    arguments, or with ``weights=PATH`` from ``dataset.mask_weights``, and the instance is called.
    """


@hookspec
def register_dataset_transforms(register: Register) -> None:
    """Register dataset transforms: changes any dataset accepts through its options.

    Call ``register(name, "pkg.module:function", config="pkg.module:Options", description=...)``.
    The fields of ``Options`` (a pydantic model) become dataset options of every dataset
    (``--set dataset.KEY=VALUE``) that the dataset does not own itself; when a run gives any of them,
    the core calls ``function(bundle, options)`` after loading (and after the core's protocol
    options) and uses the ``DatasetBundle`` it returns. Planting a pattern into a few training
    images is one (robust-rare).
    """


@hookspec
def register_augmentations(register: Register) -> None:
    """Register training augmentations: the values ``train.augment`` accepts.

    Call ``register(name, "pkg.module:function", description=...)``. The function is called on each
    training batch, on the device, as ``function(x, mask, bbox, generator, pad=None)`` with ``x`` the
    normalised images ``(N, C, H, W)``, ``mask`` their foreground masks ``(N, 1, H, W)`` in [0, 1] or
    None, ``bbox`` boxes ``(N, 4)`` (x0, y0, x1, y1) or None, and ``pad`` the dataset's crop padding;
    it returns ``(x, mask, bbox)`` moved together (a crop crops the mask and shifts the box) and draws
    all randomness from ``generator``. The core registers ``none``, ``flip``, ``crop_flip`` and
    ``crop_flip_reflect``.
    """


@hookspec
def register_batch_transforms(register: Register) -> None:
    """Register batch transforms: changes to every training batch that a run switches on by option.

    Call ``register(name, "pkg.module:function", config="pkg.module:Options", description=...)``.
    The fields of ``Options`` (a pydantic model) become engine options (``--set train.KEY=VALUE``);
    when a run sets any of them away from its default, the engine calls
    ``function(x, generator, options)`` on each training batch after the augmentation and uses the
    images it returns (never on evaluation batches). Gaussian input noise is one (robust-rare).
    """


@hookspec
def register_options(register: Register) -> None:
    """Register options that a plugin owns and reads itself (a logger's switch, a monitor's interval).

    Call ``register(name, "pkg.module:Options", section="train", description=...)``: the fields of the
    pydantic model ``Options`` become ``train.*`` options (``section="train"``, the default) or a
    section of their own (``section=NAME``: ``[NAME]`` in TOML, ``--set NAME.KEY=VALUE``), validated
    with the rest of the run's configuration and listed by ``robust info train``. The plugin reads
    them from ``run.config`` (``run.config.train.KEY``, ``getattr(run.config, NAME)``). A field name
    another plugin or the engine already owns is refused.
    """


@hookspec
def register_paper_results(register: RegisterPaperResult) -> None:
    """Register the headline numbers of a method's paper, for ``robust report --against-paper``.

    Call ``register(method=..., dataset=..., metric="test/worst_group_acc", value=0.918,
    source="Paper, Table N", selection="best_val_worst_group", ...)`` once per number: values are
    fractions in [0, 1]; ``dataset_options``, ``std``, ``train_group_labels``, ``val_group_labels``,
    ``model``, ``verified`` and ``note`` are optional (see ``robust.papers.PaperResult``).
    ``robust.papers.register_from_toml(register, "pkg")`` registers a package's
    ``paper_results.toml``, the usual way: the numbers stay data.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``robust`` CLI (``cli.command()`` / ``cli.group()``).

    Keep the module that defines the commands free of top-level torch imports:
    ``robust --help`` loads every plugin's commands.
    """


@hookspec(firstresult=True)
def resolve_dataset(name: str) -> tuple[str, dict[str, Any]] | None:
    """Turn a dataset name that is not registered into ``(registered_name, options)``.

    Lets a plugin accept name patterns (e.g. ``csv:PATH`` or ``mnistv8-3-0-0``). Return None
    when the name is not yours. The first non-None answer wins.
    """


# ---------------------------------------------------------------------------------------------
# Run lifecycle: loggers and monitors implement these. They must not change the run.
# ---------------------------------------------------------------------------------------------


@hookspec
def on_run_start(run: Any) -> None:
    """A run is about to train (also after ``--resume``).

    ``run`` is the ``robust.engine.Run``: its ``config``, ``run_dir`` (a ``RunDir``; the
    directory is ``run.run_dir.path``), ``info`` (dataset metadata) and ``method`` are available.
    An exception raised here stops the run (a logger that cannot log should say so early).
    """


@hookspec
def on_evaluation(run: Any, record: dict[str, Any]) -> None:
    """An evaluation finished. ``record`` holds ``phase``, ``epoch``, ``step`` and ``metrics``,
    a flat dict (``"val/worst_group_acc"``, ``"test/avg_acc"``, ``"train/loss"``, ...).
    """


@hookspec
def on_run_end(run: Any, summary: dict[str, Any]) -> None:
    """A run finished; ``summary`` is what was written to ``summary.json``."""
