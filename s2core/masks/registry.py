"""s2core.masks.registry: the cloud/shadow model registry (model cards in ``models/``).

Every model is described by a YAML card: the bands it needs and their order, the product
level, the input scaling and normalisation, its spatial constraints, native resolution and
which output is cloud or shadow. Weights never live in the repository: a card points at a
resource of an installed package (``ukis-csmask``), at a file built by a reproducible step
(``s2cloudless``), or at a user's ONNX file.

User ONNX files that follow the FarmVibes.AI convention need no card: put ``my_model.onnx``
in the models folder (or give a path) and select it by file name as ``cloud_model`` or
``shadow_model``. Cloud models take 12 bands of raw DN and return a 2-class softmax (class 1
is cloud); shadow models take the same bands × 1e-4 and return one sigmoid logit.

Example:
    >>> from s2core.masks.registry import get_card
    >>> get_card("ukis-csmask-6b-l2a").bands
    ('B02', 'B03', 'B04', 'B08', 'B11', 'B12')
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from s2core.model.bands import normalize_band
from s2core.model.decision import REFERENCE_DECISION, Decision
from s2core.errors import InvalidModel, ModelBandsMissing, UnknownModel
from s2core.model.request import MaskOptions
from s2core.settings import get_settings

log = logging.getLogger(__name__)

Role = Literal["cloud", "shadow"]

#: Band order of the FarmVibes.AI convention (the 12 L2A bands of the reference workflow).
FARMVIBES_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")

#: Default cloud (and shadow) model names chosen by ``auto``, best first.
AUTO_MODELS = {"L2A": ("ukis-csmask-6b-l2a", "ukis-csmask-4b-l2a"), "L1C": ("ukis-csmask-6b-l1c", "ukis-csmask-4b-l1c")}


class ModelSource(BaseModel):
    """Where the ONNX bytes come from: a package resource, or a file in the models folder."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    package: Optional[str] = None
    resource: Optional[str] = None
    file: Optional[str] = None
    build: Optional[Literal["s2cloudless"]] = None


class InputSpec(BaseModel):
    """How reflectance becomes the model's input: ``x = (scaling(refl) - mean) / std``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    scaling: Literal["reflectance", "dn", "dn_1e-4"] = "reflectance"
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None


class SpatialSpec(BaseModel):
    """``pixel`` models classify pixels one by one; ``patch`` models take (N, C, H, W) patches."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["pixel", "patch"] = "patch"
    patch_size: int = Field(512, ge=16)
    dynamic: bool = False
    multiple_of: int = Field(32, ge=1)
    overlap: int = Field(32, ge=0)


class OutputSpec(BaseModel):
    """Which output channel is cloud / shadow, and how raw outputs become probabilities."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["softmax", "sigmoid", "probability"]
    classes: Optional[tuple[str, ...]] = None
    cloud: Optional[int] = None
    shadow: Optional[int] = None


class DecisionSpec(BaseModel):
    """The rule that reproduces the model's own decision (:mod:`s2core.model.decision`): ``argmax`` for
    3-class softmax models (the thresholds are then used only when the model is mixed with others),
    ``threshold`` with the model's own thresholds otherwise."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rule: Literal["argmax", "threshold"] = "threshold"
    cloud_thr: float = Field(0.5, ge=0, le=1)
    shadow_thr: float = Field(0.5, ge=0, le=1)


#: The reference's thresholds (FarmVibes.AI ``merge_cloud_masks_simple``), for files of its convention.
FARMVIBES_DECISION = DecisionSpec(rule="threshold", cloud_thr=REFERENCE_DECISION.cloud_thr,
                                  shadow_thr=REFERENCE_DECISION.shadow_thr)


class ModelCard(BaseModel):
    """A model card (see ``models/README.md`` for the fields)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    description: str = ""
    source: ModelSource
    version: str = ""
    licence: str = "unknown"
    url: str = ""
    product_level: Literal["L1C", "L2A"] = "L2A"
    bands: tuple[str, ...]
    input: InputSpec = InputSpec()
    spatial: SpatialSpec = SpatialSpec()
    native_resolution: float = 10.0
    output: OutputSpec
    decision: DecisionSpec = DecisionSpec()
    postprocess: dict[str, float] = Field(default_factory=dict)
    convention: Optional[str] = None

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles this model can play (``cloud``, ``shadow``)."""
        return tuple(r for r in ("cloud", "shadow") if getattr(self.output, r) is not None)

    def path(self) -> Optional[Path]:
        """The ONNX file on disk, when the model is a file (built or user-supplied)."""
        if self.source.file is None:
            return None
        p = Path(self.source.file)
        return p if p.is_absolute() else models_dir() / p

    def check_bands(self, available: tuple[str, ...] | list[str], where: str = "the raster") -> list[int]:
        """Indices of this model's bands in ``available``; raises ModelBandsMissing naming both."""
        missing = [b for b in self.bands if b not in available]
        if missing:
            raise ModelBandsMissing(
                f"Model {self.name!r} needs band(s) {', '.join(missing)} but {where} has only "
                f"{', '.join(available) or 'none'}: add them to the bands (e.g. --bands "
                f"{','.join(dict.fromkeys([*available, *missing]))}) or pick a model that fits."
            )
        return [list(available).index(b) for b in self.bands]


def models_dir() -> Path:
    """The folder of model cards and ONNX files (``S2CORE_MODELS_DIR`` or the project's ``models/``)."""
    return get_settings().models_dir or Path(__file__).resolve().parents[2] / "models"


def _read_card(path: Path) -> ModelCard:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["bands"] = [normalize_band(b) for b in data.get("bands", [])]
        return ModelCard.model_validate(data)
    except (OSError, yaml.YAMLError, ValidationError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidModel(f"Model card {path} is not valid ({exc}): fix it against models/README.md.") from exc


@functools.lru_cache(maxsize=8)
def _cards(folder: str) -> dict[str, ModelCard]:
    cards: dict[str, ModelCard] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        card = _read_card(path)
        cards[card.name] = card
    return cards


def registered_cards() -> dict[str, ModelCard]:
    """Every model with a card in the models folder, by name."""
    return dict(_cards(str(models_dir())))


def farmvibes_card(path: Path, role: Role) -> ModelCard:
    """The card of a user ONNX file following the FarmVibes.AI convention for ``role``."""
    if role == "cloud":
        return ModelCard(
            name=path.name, description="user model, FarmVibes.AI cloud convention",
            source=ModelSource(file=str(path)), bands=FARMVIBES_BANDS,
            input=InputSpec(scaling="dn"), spatial=SpatialSpec(kind="patch", patch_size=512, overlap=128),
            output=OutputSpec(kind="softmax", cloud=1), convention="farmvibes-cloud", decision=FARMVIBES_DECISION,
        )
    return ModelCard(
        name=path.name, description="user model, FarmVibes.AI shadow convention",
        source=ModelSource(file=str(path)), bands=FARMVIBES_BANDS,
        input=InputSpec(scaling="dn_1e-4"), spatial=SpatialSpec(kind="patch", patch_size=512, overlap=128),
        output=OutputSpec(kind="sigmoid", shadow=0), convention="farmvibes-shadow", decision=FARMVIBES_DECISION,
    )


def get_card(name: str, role: Optional[Role] = None) -> ModelCard:
    """Resolve a model name: a registered card, or an ONNX file (FarmVibes convention).

    ``name`` may be a card name (``ukis-csmask-6b-l2a``), a file name in the models folder
    (``cloud_model2_cpu.onnx``) or a path to an ``.onnx`` file. ``role`` says whether the
    model is used for clouds or shadows; a model without that output is refused.
    """
    text = str(name).strip()
    cards = registered_cards()
    card = cards.get(text)
    if card is None:
        candidate = Path(text).expanduser()
        if not candidate.is_absolute() and not candidate.exists():
            candidate = models_dir() / text
        if candidate.suffix.lower() == ".onnx" and candidate.is_file():
            stat = candidate.stat()
            _check_onnx_file(str(candidate.resolve()), stat.st_mtime_ns, stat.st_size)
            card = farmvibes_card(candidate.resolve(), role or "cloud")
        else:
            known = ", ".join(sorted(cards)) or "none"
            raise UnknownModel(
                f"Unknown model {text!r}: use a registered model ({known}), a .onnx file in "
                f"{models_dir()} or a path to one (`python -m s2core models` lists them)."
            )
    if role is not None and role not in card.roles:
        raise UnknownModel(
            f"Model {card.name!r} has no {role} output (it gives: {', '.join(card.roles)}): "
            f"pick another {role} model."
        )
    return card


@functools.lru_cache(maxsize=32)
def _check_onnx_file(path: str, mtime_ns: int, size: int) -> None:
    """:class:`InvalidModel` unless ``path`` parses as an ONNX model (checked once per file version)."""
    import onnx  # lazy: the ONNX parser, only for user-given files

    try:
        onnx.load_model(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise InvalidModel(
            f"{Path(path).name} is not a valid ONNX model ({type(exc).__name__}): replace the file with an .onnx "
            "export of your model (FarmVibes convention: 12 bands), or pick a registered model."
        ) from None


def check_level(card: ModelCard, level: str) -> ModelCard:
    """Refuse a model made for another product level (L1C top-of-atmosphere vs L2A surface reflectance)."""
    if card.product_level != level:
        alternatives = [c.name for c in registered_cards().values() if c.product_level == level]
        raise ModelBandsMissing(
            f"Model {card.name!r} is for {card.product_level} input but this raster is {level}: "
            f"pick an {level} model ({', '.join(alternatives)})."
        )
    return card


def auto_model(bands: tuple[str, ...] | list[str], level: str = "L2A") -> str:
    """The best registered model of ``level`` whose bands are all in ``bands``."""
    for name in AUTO_MODELS[level]:
        if all(b in bands for b in get_card(name).bands):
            return name
    raise ModelBandsMissing(
        f"No built-in model works with bands {', '.join(bands)}: cloud masking needs at least "
        "B02, B03, B04 and B08 (add B11 and B12 for the 6-band model)."
    )


def model_bytes(card: ModelCard) -> bytes:
    """The ONNX bytes of a model (built first when the card says so)."""
    if card.source.package:
        try:
            res = importlib.resources.files(card.source.package).joinpath(card.source.resource or "")
            return res.read_bytes()
        except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
            raise InvalidModel(
                f"Model {card.name!r} loads {card.source.resource} from the package {card.source.package!r}, "
                f"which is not installed or lacks it ({exc}): run `pip install -r requirements.txt`."
            ) from exc
    path = card.path()
    assert path is not None
    if not path.exists() and card.source.build == "s2cloudless":
        from s2core.masks.s2cloudless_onnx import build_s2cloudless_onnx  # lazy: LightGBM/onnxmltools, on first use

        log.info("building %s from the installed s2cloudless package", path)
        build_s2cloudless_onnx(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidModel(f"Model file {path} for {card.name!r} cannot be read ({exc}): check the path.") from exc


def describe(card: ModelCard) -> str:
    """One line describing a model, starting with its name (for ``python -m s2core models``)."""
    return (
        f"{card.name}  [{card.product_level}; {'+'.join(card.roles)}; bands {','.join(card.bands)}; "
        f"{card.spatial.kind}; native {card.native_resolution:g} m; licence {card.licence}]  {card.description}"
    )


def resolve_mask_options(options: MaskOptions, bands: tuple[str, ...], level: str = "L2A") -> MaskOptions:
    """``options`` with ``auto`` replaced by concrete model names, every model checked against ``bands``
    and ``level`` (:class:`~s2core.errors.ModelBandsMissing`, :class:`~s2core.errors.UnknownModel` …)."""
    auto = None
    clouds = []
    for name in options.cloud_model:
        if name == "auto":
            auto = auto or auto_model(bands, level)
            name = auto
        check_level(get_card(name, "cloud"), level).check_bands(bands)
        clouds.append(name)
    shadow = options.shadow_model
    if shadow == "auto":
        shadow = auto or auto_model(bands, level)
    check_level(get_card(shadow, "shadow"), level).check_bands(bands)
    return options.model_copy(update={"cloud_model": tuple(clouds), "shadow_model": shadow})


def decision_for(options: MaskOptions) -> Decision:
    """The decision rule of resolved ``options``: each model's own (its card's ``decision``) unless the
    user gave ``cloud_thr`` / ``shadow_thr``.

    ``argmax`` when every model in use decides by argmax and no threshold is given; else ``threshold``
    with the given values, the missing ones from the cards (cloud: the mean over the cloud models'
    cards; shadow: the shadow model's card).
    """
    clouds = [get_card(name, "cloud") for name in options.cloud_model]
    shadow = get_card(options.shadow_model, "shadow")
    if options.cloud_thr is None and options.shadow_thr is None and all(
            c.decision.rule == "argmax" for c in (*clouds, shadow)):
        return Decision("argmax")
    cloud_thr = options.cloud_thr
    if cloud_thr is None:
        cloud_thr = round(sum(c.decision.cloud_thr for c in clouds) / len(clouds), 6)
    shadow_thr = options.shadow_thr if options.shadow_thr is not None else shadow.decision.shadow_thr
    return Decision("threshold", cloud_thr, shadow_thr)


def model_bands(options: MaskOptions) -> tuple[str, ...]:
    """Every band the models of resolved ``options`` read, without repeats."""
    names = (*options.cloud_model, options.shadow_model)
    return tuple(dict.fromkeys(b for name in names for b in get_card(name).bands))
