"""The entry point robust loads: registers every dataset by lazy reference, and `robust data`.

Torch-free on purpose: ``robust list`` and ``robust --help`` load every plugin.

Metadata of on-disk datasets (used by ``robust data status`` and ``robust data verify``):
``folder`` (default folder under the data root), ``files`` (paths inside it that must exist),
``source`` (where to get the files) and, where known, ``expected_counts``
(``{split: [count of group 0, group 1, ...]}``); ``user_data`` marks a dataset whose files the user
names in each run (``csv:PATH``), listed as such. ``robust run`` reads ``folder``, ``files``,
``folder_alternatives`` (other folders the loader also reads) and ``downloadable`` (``robust data
download NAME`` fetches it: :data:`robust_datasets.download.ARCHIVES`) to report a missing dataset
before it imports torch (:mod:`robust.ondisk`). ``choose_model`` (the csv dataset) picks the default
model from the dataset's options.
"""

from __future__ import annotations

from typing import Any

from robust.api import hookimpl
from robust_datasets.sources import CELEBA_SOURCE, CIFAR_SOURCE, LFF_SOURCE, MNIST_SOURCE, WATERBIRDS_SOURCE


def _on_disk(
    register: Any, name: str, module: str, loader: str, config: str, description: str, **metadata: Any
) -> None:
    register(
        name,
        f"robust_datasets.{module}:{loader}",
        config=f"robust_datasets.{module}:{config}",
        description=description,
        **metadata,
    )


@hookimpl
def register_datasets(register: Any) -> None:
    register(
        "synthetic-cmnist",
        "robust_datasets.synthetic_cmnist:load",
        config="robust_datasets.synthetic_cmnist:SyntheticCMNISTConfig",
        description="Colored MNIST in the style of LfF, with procedurally drawn digits: colour predicts the "
        "digit for all but conflict_pct percent of training images; val/test colours are random. version=2 "
        "(default): the calibrated benchmark (20000 train, 5% = 100 conflicting per digit); version=1: the original.",
        default_model="mlp",
    )
    register(
        "synthetic-waterbirds",
        "robust_datasets.synthetic_waterbirds:load",
        config="robust_datasets.synthetic_waterbirds:SyntheticWaterbirdsConfig",
        description="Waterbirds-like: drawn landbird/waterbird shapes on land/water backgrounds, with foreground "
        "masks and boxes. version=2 (default): the calibrated benchmark (32 px, train groups 3000/200/100/600); "
        "version=1: the original (64 px, the real dataset's group counts).",
        default_model="cnn",
    )
    _on_disk(
        register,
        "waterbirds",
        "waterbirds",
        "load",
        "WaterbirdsConfig",
        "Waterbirds (Sagawa et al.): CUB birds on Places backgrounds; group = 2*y + place; optional CUB masks.",
        default_model="resnet50",
        folder="waterbird_complete95_forest2water2",
        folder_alternatives=["waterbirds/waterbird_complete95_forest2water2"],  # SubpopBench's layout
        files=["metadata.csv"],
        source=WATERBIRDS_SOURCE,
        downloadable=True,
        expected_counts={"train": [3498, 184, 56, 1057], "val": [467, 466, 133, 133], "test": [2255, 2255, 642, 642]},
    )
    _on_disk(
        register,
        "celeba",
        "celeba",
        "load",
        "CelebAConfig",
        "CelebA: Blond_Hair target, Male spurious attribute (any pair configurable); .txt or Kaggle .csv files.",
        default_model="resnet50",
        folder="celeba",
        files=["img_align_celeba"],
        source=CELEBA_SOURCE,
        expected_counts={
            "train": [71629, 66874, 22880, 1387],
            "val": [8535, 8276, 2874, 182],
            "test": [9767, 7535, 2480, 180],
        },
    )
    for name, loader, config, model, description in (
        ("cmnist", "load_cmnist", "LfFCMNISTConfig", "mlp", "Colored MNIST as released by DisEnt (PNG folders)."),
        ("cifar10c", "load_cifar10c", "LfFCIFAR10CConfig", "resnet18", "Corrupted CIFAR-10 as released by DisEnt."),
        ("bffhq", "load_bffhq", "LfFBFFHQConfig", "resnet18", "Biased FFHQ (age vs gender) as released by DisEnt."),
    ):
        _on_disk(
            register,
            name,
            "lff_release",
            loader,
            config,
            description,
            default_model=model,
            folder=name,
            files=[],
            source=LFF_SOURCE,
        )
    for name, loader, config, description in (
        ("cifar10", "load_cifar10", "CIFARConfig", "CIFAR-10 from the python pickle batches."),
        ("cifar100", "load_cifar100", "CIFARConfig", "CIFAR-100 from the python pickle files."),
        (
            "cifar10-lt",
            "load_cifar10_lt",
            "CIFARLTConfig",
            "Long-tailed CIFAR-10 (exponential profile, imb_factor), with a clean balanced meta set.",
        ),
        ("cifar100-lt", "load_cifar100_lt", "CIFARLTConfig", "Long-tailed CIFAR-100, as Meta-Weight-Net defines it."),
        (
            "cifar10-noisy",
            "load_cifar10_noisy",
            "CIFARNoisyConfig",
            "CIFAR-10 with noisy labels (unif/flip/flip2) and a clean meta set.",
        ),
        (
            "cifar100-noisy",
            "load_cifar100_noisy",
            "CIFARNoisyConfig",
            "CIFAR-100 with noisy labels, as Meta-Weight-Net defines them.",
        ),
    ):
        folder = "cifar-100-python" if "100" in name else "cifar-10-batches-py"
        _on_disk(
            register,
            name,
            "cifar",
            loader,
            config,
            description,
            default_model="resnet32",
            folder=folder,
            files=["train", "test", "meta"]
            if "100" in name
            else [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"],
            source=CIFAR_SOURCE,
            downloadable=True,
        )
    for name, loader, description in (
        ("mnist", "load_mnist", "MNIST from the idx files (as the rare-spurious-correlation study uses it)."),
        ("fashion-mnist", "load_fashion_mnist", "Fashion-MNIST from the idx files."),
    ):
        _on_disk(
            register,
            name,
            "mnist",
            loader,
            "MNISTConfig",
            description,
            default_model="mlp",
            folder="MNIST" if name == "mnist" else "FashionMNIST",
            files=[],
            source=MNIST_SOURCE,
        )
    _on_disk(
        register,
        "colored-mnist",
        "prusc_cmnist",
        "load",
        "PruSCColoredMNISTConfig",
        "ColoredMNIST as PruSC uses it: binary digit label, colour spurious with a set ratio, optional label noise.",
        default_model="mlp",
        folder="MNIST",
        files=[],
        source=MNIST_SOURCE,
    )
    _on_disk(
        register,
        "isic",
        "isic",
        "load",
        "ISICConfig",
        "ISIC skin lesions (benign vs malignant) with the patch attribute as the spurious one, from a metadata CSV.",
        default_model="resnet50",
        folder="isic",
        files=["metadata.csv"],
        source="the ISIC archive (isic-archive.com) with the patch annotations of Rieger et al. / Nauta et al.",
    )
    for name, description in (
        (
            "in9",
            "ImageNet-9 backgrounds challenge (Xiao et al.): original training set, the test variants as extra splits.",
        ),
        ("in9l", "ImageNet-9 with the large (in9l) training set."),
    ):
        _on_disk(
            register,
            name,
            "imagenet9",
            "load_" + name,
            "ImageNet9Config",
            description,
            default_model="resnet50",
            folder="bg_challenge",
            files=["test/original/val"],
            source="github.com/MadryLab/backgrounds_challenge (releases)",
        )
    _on_disk(
        register,
        "cct",
        "cct",
        "load",
        "CCTConfig",
        "Caltech Camera Traps, ECCV'18 split: cis (seen locations) and trans (unseen locations) test sets.",
        default_model="resnet50",
        folder="cct",
        files=["eccv_18_annotation_files"],
        source="lila.science/datasets/caltech-camera-traps (ECCV 2018 subset)",
    )
    register(
        "csv",
        "robust_datasets.csv_dataset:load",
        config="robust_datasets.csv_dataset:CSVDatasetConfig",
        description="Your own data: a metadata CSV (image path, label, split, attribute columns) and an image "
        "root. `--dataset csv:PATH/metadata.csv --set dataset.attribute=COLUMN`: groups = label x attribute.",
        default_model="resnet18",
        choose_model="robust_datasets.plugin:csv_default_model",
        user_data=True,
    )
    for name, description in (
        ("imagenet-glt", "ImageNet-GLT (Tang et al., IFL protocol): class- and attribute-wise long tails."),
        ("mscoco-glt", "MSCOCO-GLT (Tang et al., IFL protocol)."),
    ):
        _on_disk(
            register,
            name,
            "glt",
            "load_" + name.replace("-", "_"),
            "GLTConfig",
            description,
            default_model="resnet50",
            folder=name,
            files=[],
            source="github.com/KaihuaTang/Generalized-Long-Tailed-Benchmarks.pytorch",
        )


#: Below this image side (pixels), your own data trains the small CNN; from it, an ImageNet ResNet-18.
CSV_SMALL_IMAGES = 64


def csv_default_model(options: dict[str, Any]) -> dict[str, Any]:
    """The model a csv (your own data) run trains when none is named: an ImageNet-pretrained ResNet-18
    (11 M parameters, fine-tuned: what a few hundred real images need; the images are normalised with
    ImageNet's statistics by default), or the small CNN for images under :data:`CSV_SMALL_IMAGES`
    pixels, which a 224-pixel model would only upsample. ``--model NAME`` picks another model
    (with its own defaults: ``--model resnet18`` trains from scratch)."""
    if int(options.get("image_size", 224)) < CSV_SMALL_IMAGES:
        return {"name": "cnn"}
    return {"name": "resnet18", "weights": "IMAGENET1K_V1"}


@hookimpl
def resolve_dataset(name: str) -> tuple[str, dict[str, Any]] | None:
    """``csv:PATH`` is the dataset ``csv`` with ``metadata=PATH`` (your own data)."""
    if name.startswith("csv:"):
        return "csv", {"metadata": name[len("csv:") :]}
    return None


@hookimpl
def register_commands(cli: Any) -> None:
    from robust_datasets.commands import data

    cli.add_command(data)


@hookimpl
def register_dataset_transforms(register: Any) -> None:
    register(
        "meta_longtail_noise",
        "robust_datasets.long_tail_noise:apply_class_protocol",
        config="robust_datasets.long_tail_noise:ClassProtocolOptions",
        order=10,
        description="On any dataset, as CLP builds its data: a clean meta set (dataset.meta_per_class), a long-tailed "
        "training set (dataset.imb_factor) and label noise (dataset.noise, dataset.noise_ratio), drawn with "
        "dataset.protocol_seed.",
    )
