"""Every dataset of the paper's experiments as typed configuration, per run profile.

One place for the CLI, the notebooks and the tests. A :class:`DatasetSpec` names one HDF5 file:
its PDE family, split (``train``, ``val``, ``test``), setting (a readable label such as ``"k=3"``),
the PDE parameters that define the setting, the grid size, the number of samples and the seed.
The label is only a name: every value that defines a setting lives in ``params``.

Settings per family (``params`` are the PDE parameters; the in-distribution values are written
out even where they equal the class defaults):

* ``poisson``: ``scale=100`` (``forcing_scale = 100``: train / val / test); forcing-scale shift
  ``scale=200`` (test).
* ``helmholtz``: ``k=1`` (train / val / test); wavenumber shifts ``k=2``, ``k=3``, ``k=4`` (test),
  increasingly ill-conditioned (condition number 2.0e3 at k=2, 8.5e3 at k=4 for S=64).
* ``nonlinear_helmholtz``: ``k=2_lam=-1`` (train / val / test); ``lam = -1``, not the paper's +1,
  for the reason given in :mod:`ens.pdes`.
* ``darcy``: ``contrast=4`` (``a in {3, 12}``, constant forcing 100: train / val / test);
  permeability-contrast shift ``contrast=8`` (``a in {3, 24}``) and forcing-field shift
  ``forcing=grf`` (``f = 100 GRF(2, 3)`` instead of the constant; test).
* ``navier_stokes``: ``nu=1e-3`` (train / val / test); viscosity shift ``nu=1e-4`` and forcing
  shift ``forcing=4pi`` (``forcing_wavenumber = 2``, i.e. ``sin/cos(4 pi (x + y))``; test).
  At ``nu = 1e-4`` the ``S = 64`` grid (the paper's) is resolved but with far less margin than at
  1e-3: over the window the shell-summed enstrophy spectrum at the 2/3 cut-off is 1e-8 -- 6e-8
  of its peak (1e-23 at ``nu = 1e-3``), and a trajectory computed at S = 64 agrees with the one
  computed at S = 128 from the same band-limited state to 9e-5 relative (1e-13 at 1e-3), well
  below the residual floor (3e-3, see :mod:`ens.pdes.navier_stokes`). Measured on 4 draws.
* ``kolmogorov``: ``nu=5e-4``, the pinned convention of :class:`ens.pdes.Kolmogorov` (``A = 4,
  n = 4``, Re = 51, snapshots every 0.05; its docstring gives the warm-up and the input law,
  states drawn from chains on the attractor; train / val / test).
* super-resolution: a ``superres`` test set of the in-distribution setting on a 2x finer grid for
  every elliptic family and Navier--Stokes. Elliptic node grids use ``2S - 1`` nodes, so ``h``
  halves exactly and the coarse nodes are a subset; periodic grids use ``2S``.

Validation sets are in-distribution only (the corrector's step size and iteration count are
chosen on them). Shifted settings have test sets only.

Seeds. The seed of a spec is ``derive_seed("<family>/<split>/<setting>")``: the first four bytes
of the SHA-256 of that key, big-endian, masked to 31 bits. It depends on nothing else, so adding
a spec never changes another one's seed, and different keys give different seeds (the tests
check that no two specs collide). One documented exception: the cross-equation pairs need the
same forcings on both sides, so the Poisson in-distribution test set and the Helmholtz test
sets ``k=1`` .. ``k=4`` (not ``superres``) use the key ``PAIRED_TEST_KEY``; since they share the forcing law
(``100 GRF(2, 3)``), grid, sample count and generation chunking, they hold identical forcings
(the k-shift is then also measured on the same forcings for every ``k``).

Sizes per profile (``SIZE_GROUPS``, read through :func:`sizes`; a profile changes sizes, never the code path):

* ``ci``: S = 32, 32 train / 16 val / 16 test samples (Kolmogorov 16 / 8 / 8: every chain of
  its input law pays a warm-up); seconds per family, ~10 s for Navier--Stokes and Kolmogorov.
* ``default`` (a laptop CPU, 2 cores): S = 64, 1000 train and 200 val per setting for the
  elliptic families; Navier--Stokes 1000 train and 100 val per setting (its trajectories cost
  ~0.1 s each at S = 64, the ``superres`` set at S = 128 several times that); Kolmogorov 1000
  train / 100 val, like Navier--Stokes, although each input costs ~11 time units of the flow (the
  warm-up shared by 8 draws of a chain, plus the spacing between draws), ~0.5 s per sample at
  S = 64 on 2 cores (batching chains barely helps on a CPU: the stepping is compute-bound).
  Every test set holds 32 samples, one generation chunk: exactly the samples the evaluation
  reads (``EVALUATION["default"]["n_samples"]``); a ``superres`` set holds the 16 its study reads
  (``n_superres``; the first 16 of a 32-sample chunk, bit for bit: a chunk's samples do not
  depend on how many follow them). Since each
  chunk has its own random stream, they are the first 32 samples of the 200- or 100-sample test
  sets of earlier versions (checked bit for bit for Poisson, Helmholtz and nonlinear Helmholtz),
  with a sixth (elliptic) or a third (Navier--Stokes, Kolmogorov) of the samples to generate.
  Measured times are in the README.
* ``paper``: S = 128, the reference sizes: 10 000 train / 1000 val / 1000 test for the elliptic
  families, 1000 / 200 / 200 for Navier--Stokes and Kolmogorov. Meant for a GPU
  (``ens data generate --device cuda``); the bytes, hence the checksums, depend on the device
  type, which the files and the manifest record.

Every generation chunk holds ``CHUNK_SIZE`` samples (the last one fewer); see :mod:`ens.data`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import re
from dataclasses import dataclass

from .checks import check_choice, check_int, check_number
from .pdes import FAMILIES, PDE, get_pde

__all__ = ["PROFILES", "SPLITS", "SIZE_GROUPS", "sizes", "CHUNK_SIZE", "PAIRED_TEST_KEY", "CROSS_EQUATION",
           "Sizes", "Shift", "Knob", "FamilySpec", "FAMILY_SPECS", "family_spec", "register_family", "unregister_family",
           "DatasetSpec", "TestSet", "test_sets", "derive_seed", "datasets", "dataset_spec",
           "cross_equation_pairs", "in_distribution_setting", "setting_label", "TRAINING", "EVALUATION", "ILL_CONDITIONED",
           "STUDIES", "COMPUTE_RATIO", "BUDGET_STUDY"]

PROFILES = ("ci", "default", "paper")
SPLITS = ("train", "val", "test")
#: samples per generation chunk; every chunk has its own random stream (see ens.data)
CHUNK_SIZE = 32
#: seed key shared by the Poisson in-distribution test set and the Helmholtz test sets
PAIRED_TEST_KEY = "poisson+helmholtz/test/paired-forcing"

_SETTING_NAME = re.compile(r"^[A-Za-z0-9_.=+-]+$")


@dataclass(frozen=True)
class Shift:
    """A shifted test set of a family: its label (a file name part, never parsed), the PDE
    parameters it overrides, and where it sits in the zero-shot figure (``axis``, ``value``)."""

    setting: str
    params: dict
    axis: str
    value: str


@dataclass(frozen=True)
class Knob:
    """A PDE parameter the what-if explorer varies (:mod:`ens.whatif`): the parameter, its label,
    and its range -- ``lo`` to ``hi`` (``log``: shown on a log scale; ``step``: the slider's step, in
    the exponent when ``log``) or the discrete ``choices``. A family's knobs cover its training value,
    every shift of the studies, and values between and beyond them (a test checks this)."""

    param: str
    label: str
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()

    def __post_init__(self):
        if not self.choices and not (self.lo is not None and self.hi is not None and self.lo < self.hi
                                     and self.step and self.step > 0):
            raise ValueError(f"knob {self.param!r}: expected choices, or lo < hi and a positive step")

    def check(self, value):
        """``value`` if it lies in the knob's range (as a float for a range); else ``ValueError``."""
        if self.choices:
            check_choice(f"value of {self.param}", value, self.choices)
            return value
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not self.lo * (1 - 1e-9) <= value <= self.hi * (1 + 1e-9):
            raise ValueError(f"expected {self.param} ({self.label}) in [{self.lo:g}, {self.hi:g}], got {value!r}")
        return float(value)


@dataclass(frozen=True)
class FamilySpec:
    """Everything the experiments know about one PDE family, declared once (:data:`FAMILY_SPECS`).

    ``size_group`` picks its sample counts in :data:`SIZE_GROUPS`; ``setting`` and ``params`` are
    its training distribution; ``shifts`` its zero-shot test sets; ``axis_values`` the display
    value of the in-distribution set on each shift axis (every axis of ``shifts`` needs one);
    ``superres`` whether it has a super-resolution test set; ``paired_tests`` the test settings
    seeded with :data:`PAIRED_TEST_KEY` (the cross-equation pairs' shared forcings); ``knobs`` the
    parameters the what-if explorer varies (:class:`Knob`). The PDE
    itself (physics, verification, condition number, Newton support) is its class in
    :data:`ens.pdes.FAMILIES`.
    """

    name: str
    size_group: str
    setting: str
    params: dict
    shifts: tuple[Shift, ...] = ()
    axis_values: dict = dataclasses.field(default_factory=dict)
    superres: bool = True
    paired_tests: tuple[str, ...] = ()
    knobs: tuple[Knob, ...] = ()

    def __post_init__(self):
        missing = sorted({s.axis for s in self.shifts} - set(self.axis_values))
        if missing:
            raise ValueError(f"family {self.name!r}: no in-distribution value for the shift axes {missing}")
        for label in [self.setting] + [s.setting for s in self.shifts]:
            if not _SETTING_NAME.match(label) or label == "superres":
                raise ValueError(f"family {self.name!r}: setting {label!r} must match {_SETTING_NAME.pattern} "
                                 f"and not be 'superres' (it names a file)")

    def pde(self, **overrides) -> PDE:
        """The family's PDE at its training parameters, with ``overrides`` applied."""
        return get_pde(self.name, **{**self.params, **overrides})

    def shift_axes(self) -> list[tuple[str, str, str, str]]:
        """``(axis, family, setting, value)`` rows, axis by axis in order of first appearance, each
        starting with the in-distribution setting."""
        rows = []
        for axis in dict.fromkeys(s.axis for s in self.shifts):
            rows.append((axis, self.name, self.setting, self.axis_values[axis]))
            rows += [(axis, self.name, s.setting, s.value) for s in self.shifts if s.axis == axis]
        return rows


def _darcy(contrast: int, forcing: str = "constant") -> dict:
    return {"a_low": 3.0, "a_high": 3.0 * contrast, "forcing": forcing}


_FORCING_SCALE = Knob("forcing_scale", "forcing scale", 10.0, 400.0, 10.0)
#: up to just below the first resonance k = 4.4424 (S = 64; pi sqrt(2) = 4.4429 in the limit), where
#: cond(Delta_h + k^2) = 2.5e4 at S = 64 (8.5e3 at k = 4)
_WAVENUMBER = Knob("k", "wavenumber k", 0.0, 4.3, 0.05)


#: family -> its spec, in the order of every family listing
FAMILY_SPECS: dict[str, FamilySpec] = {spec.name: spec for spec in (
    FamilySpec("poisson", "elliptic", "scale=100", {"forcing_scale": 100.0},
               (Shift("scale=200", {"forcing_scale": 200.0}, "Poisson: forcing scale", "200"),),
               {"Poisson: forcing scale": "100"}, paired_tests=("scale=100",), knobs=(_FORCING_SCALE,)),
    FamilySpec("helmholtz", "elliptic", "k=1", {"k": 1.0},
               tuple(Shift(f"k={k}", {"k": float(k)}, "Helmholtz: wavenumber k", str(k)) for k in (2, 3, 4)),
               {"Helmholtz: wavenumber k": "1"}, paired_tests=tuple(f"k={k}" for k in (1, 2, 3, 4)),
               knobs=(_WAVENUMBER, _FORCING_SCALE)),
    # lam > 0 is left out: the solution branch folds (see ens.pdes.FAMILIES)
    FamilySpec("nonlinear_helmholtz", "elliptic", "k=2_lam=-1", {"k": 2.0, "lam": -1.0},
               knobs=(_WAVENUMBER, Knob("lam", "cubic coefficient lam", -3.0, 0.0, 0.1), _FORCING_SCALE)),
    FamilySpec("darcy", "elliptic", "contrast=4", _darcy(4),
               (Shift("contrast=8", _darcy(8), "Darcy: contrast a_high/a_low", "8"),
                Shift("forcing=grf", _darcy(4, "grf"), "Darcy: forcing", "GRF")),
               {"Darcy: contrast a_high/a_low": "4", "Darcy: forcing": "constant"},
               knobs=(Knob("a_high", "a_high (a_low = 3, contrast a_high/3)", 4.5, 60.0, 0.5),
                      Knob("forcing", "forcing", choices=("constant", "grf")))),
    FamilySpec("navier_stokes", "navier_stokes", "nu=1e-3", {"nu": 1e-3, "forcing_wavenumber": 1},
               (Shift("nu=1e-4", {"nu": 1e-4, "forcing_wavenumber": 1}, "Navier-Stokes: viscosity", "1e-4"),
                Shift("forcing=4pi", {"nu": 1e-3, "forcing_wavenumber": 2}, "Navier-Stokes: forcing", "4 pi")),
               {"Navier-Stokes: viscosity": "1e-3", "Navier-Stokes: forcing": "2 pi"},
               knobs=(Knob("nu", "viscosity nu", 5e-5, 1e-2, 0.05, log=True),
                      Knob("forcing_wavenumber", "forcing wavenumber (x 2 pi)", choices=(1, 2, 3, 4)))),
    FamilySpec("kolmogorov", "kolmogorov", "nu=5e-4", {"nu": 5e-4}, superres=False,
               knobs=(Knob("nu", "viscosity nu", 2e-4, 2e-3, 0.05, log=True),
                      Knob("forcing_wavenumber", "forcing wavenumber n", choices=(2, 3, 4, 6, 8)))),
)}


@dataclass(frozen=True)
class Sizes:
    """Grid size and sample counts of one family in one profile."""

    resolution: int
    n_train: int
    n_val: int
    n_test: int


#: profile -> size group -> sizes (a family's group is its ``FamilySpec.size_group``)
SIZE_GROUPS: dict[str, dict[str, Sizes]] = {
    "ci": {"elliptic": Sizes(32, 32, 16, 16), "navier_stokes": Sizes(32, 32, 16, 16),
           "kolmogorov": Sizes(32, 16, 8, 8)},
    "default": {"elliptic": Sizes(64, 1000, 200, 32), "navier_stokes": Sizes(64, 1000, 100, 32),
                "kolmogorov": Sizes(64, 1000, 100, 32)},
    "paper": {"elliptic": Sizes(128, 10_000, 1000, 1000), "navier_stokes": Sizes(128, 1000, 200, 200),
              "kolmogorov": Sizes(128, 1000, 200, 200)},
}


def sizes(profile: str, family: str) -> Sizes:
    """Grid size and sample counts of ``family`` in ``profile``."""
    check_choice("profile", profile, SIZE_GROUPS)
    return SIZE_GROUPS[profile][family_spec(family).size_group]


def family_spec(family: str) -> FamilySpec:
    """The :class:`FamilySpec` of a family; ``ValueError`` lists the known families."""
    check_choice("family", family, FAMILY_SPECS)
    return FAMILY_SPECS[family]


def register_family(spec: FamilySpec, pde_class: type, defaults: dict | None = None,
                    compute_ratio: dict[str, float] | None = None) -> None:
    """Add a PDE family: its experiments spec here and its class (with the default parameters
    that distinguish it from the class defaults) in :data:`ens.pdes.FAMILIES`. Everything that
    lists families (datasets, training, evaluation, the studies, the plots) then includes it.
    ``compute_ratio`` (profile -> ENS's over the surrogate's time per training batch, measured with
    :func:`ens.train.measure_cost_ratio`) enters :data:`COMPUTE_RATIO`; without it the
    compute-matched surrogate of the family cannot be trained.
    The registration lives in this process: worker processes (``workers > 1``) start afresh, so
    a family they must know is registered in a module they import (or the jobs run with
    ``workers=1``)."""
    if spec.name in FAMILY_SPECS or spec.name in FAMILIES:
        raise ValueError(f"family {spec.name!r} exists already")
    for profile, groups in SIZE_GROUPS.items():
        check_choice(f"size group of {spec.name!r} in profile {profile!r}", spec.size_group, groups)
    for profile, ratio in (compute_ratio or {}).items():
        check_choice("profile of compute_ratio", profile, PROFILES)
        check_number(ratio, f"compute_ratio[{profile!r}]")
    FAMILIES[spec.name] = (pde_class, dict(defaults or {}))
    FAMILY_SPECS[spec.name] = spec
    try:
        spec.pde()  # unknown parameters fail here
    except Exception:
        unregister_family(spec.name)
        raise
    for profile, ratio in (compute_ratio or {}).items():
        COMPUTE_RATIO[profile][spec.name] = float(ratio)


def unregister_family(name: str) -> None:
    """Remove a family added by :func:`register_family` (for tests and what-if sessions)."""
    FAMILY_SPECS.pop(name, None)
    FAMILIES.pop(name, None)
    for ratios in COMPUTE_RATIO.values():
        ratios.pop(name, None)


def derive_seed(key: str) -> int:
    """Seed of a dataset key: the first 4 bytes of ``sha256(key)``, big-endian, masked to 31 bits."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFF_FFFF


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset file: what to generate and where it lives under ``<root>/<profile>/``.

    ``params`` are the PDE parameter overrides of the setting (applied over the family's
    defaults by :func:`ens.pdes.get_pde`); a mapping given to the constructor is stored as a
    sorted tuple of ``(name, value)`` pairs, so a spec is immutable and hashable.
    """

    profile: str
    family: str
    split: str
    setting: str
    params: tuple
    resolution: int
    n_samples: int
    seed: int
    chunk_size: int = CHUNK_SIZE

    def __post_init__(self):
        check_choice("profile", self.profile, PROFILES)
        check_choice("family", self.family, FAMILIES)
        check_choice("split", self.split, SPLITS)
        if not _SETTING_NAME.match(self.setting):
            raise ValueError(f"setting {self.setting!r} must match {_SETTING_NAME.pattern} (it names a file)")
        params = self.params.items() if isinstance(self.params, dict) else self.params
        object.__setattr__(self, "params", tuple(sorted((str(k), v) for k, v in params)))
        for name in ("resolution", "n_samples", "chunk_size"):
            check_int(getattr(self, name), name)
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 31:
            raise ValueError(f"expected seed to be an int in [0, 2**31), got {self.seed!r}")
        self.pde()  # unknown parameters or invalid values fail here, with get_pde's message

    def pde(self) -> PDE:
        """The PDE object of this setting."""
        return get_pde(self.family, **dict(self.params))

    @property
    def path(self) -> str:
        """File path relative to the profile directory: ``<family>/<split>_<setting>.h5``."""
        return f"{self.family}/{self.split}_{self.setting}.h5"

    def to_dict(self) -> dict:
        """JSON-serialisable description (``params`` as a dict), stored in the file and manifest."""
        return {"profile": self.profile, "family": self.family, "split": self.split,
                "setting": self.setting, "params": dict(self.params), "resolution": self.resolution,
                "n_samples": self.n_samples, "seed": self.seed, "chunk_size": self.chunk_size}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _family_specs(profile: str, family: str) -> list[DatasetSpec]:
    size, fam = sizes(profile, family), family_spec(family)
    n = {"train": size.n_train, "val": size.n_val, "test": size.n_test}

    def spec(split, setting, params, resolution=size.resolution, n_samples=None):
        paired = split == "test" and setting in fam.paired_tests
        key = PAIRED_TEST_KEY if paired else f"{family}/{split}/{setting}"
        return DatasetSpec(profile, family, split, setting, params, resolution, n_samples or n[split],
                           derive_seed(key))

    specs = [spec(split, fam.setting, fam.params) for split in SPLITS]
    specs += [spec("test", s.setting, s.params) for s in fam.shifts]
    if fam.superres:
        fine = 2 * size.resolution if FAMILIES[family][0].periodic else 2 * size.resolution - 1
        # the samples the super-resolution study reads (the first ones of a full test set's chunk)
        specs.append(spec("test", "superres", fam.params, fine, min(n["test"], EVALUATION[profile]["n_superres"])))
    return specs


def datasets(profile: str, family: str | None = None, split: str | None = None) -> list[DatasetSpec]:
    """Every dataset of a profile, optionally only one family and/or split, in a fixed order.

    Raises ``ValueError`` listing the valid profiles, families or splits for an unknown name.
    """
    check_choice("profile", profile, PROFILES)
    if family is not None:
        check_choice("family", family, FAMILIES)
    if split is not None:
        check_choice("split", split, SPLITS)
    families = [family] if family is not None else list(FAMILIES)
    return [s for f in families for s in _family_specs(profile, f) if split is None or s.split == split]


def dataset_spec(profile: str, family: str, split: str, setting: str) -> DatasetSpec:
    """The one spec of ``(profile, family, split, setting)``; ``ValueError`` lists valid settings."""
    specs = {s.setting: s for s in datasets(profile, family, split)}
    check_choice(f"setting for {family}/{split}", setting, specs)
    return specs[setting]


@dataclass(frozen=True)
class TestSet:
    """One evaluation's test set: the shipped models of ``family`` on the test set ``setting`` of
    ``test_family`` (default: ``family`` itself; another family for a cross-equation transfer).
    Its parts are fields, never parsed out of a label."""

    __test__ = False  # a package class, not a pytest test class

    family: str
    setting: str
    test_family: str | None = None

    def __post_init__(self):
        check_choice("family", self.family, FAMILIES)
        if self.test_family is None:
            object.__setattr__(self, "test_family", self.family)
        check_choice("test family", self.test_family, FAMILIES)
        if not isinstance(self.setting, str):
            raise TypeError(f"setting: expected a str such as 'k=1', got {self.setting!r}")

    @property
    def cross_equation(self) -> bool:
        return self.test_family != self.family

    @property
    def stem(self) -> str:
        """File-name stem of its tables: ``<family>_<setting>``, or ``<family>_<test family>--<setting>``."""
        return f"{self.family}_{self.test_family}--{self.setting}" if self.cross_equation else \
            f"{self.family}_{self.setting}"

    def spec(self, profile: str) -> "DatasetSpec":
        """Its :class:`DatasetSpec` in ``profile`` (``ValueError`` lists the valid settings)."""
        return dataset_spec(profile, self.test_family, "test", self.setting)

    def __str__(self) -> str:
        head = f"{self.family} -> {self.test_family}" if self.cross_equation else self.family
        return f"{head} / {self.setting}"


def test_sets(settings) -> list[TestSet]:
    """``settings`` as a list, each checked to be a :class:`TestSet` (``TypeError`` otherwise)."""
    out = list(settings)
    for t in out:
        if not isinstance(t, TestSet):
            raise TypeError(f"expected ens.experiments.TestSet entries such as TestSet('helmholtz', 'k=4'), "
                            f"got {t!r}")
    return out


test_sets.__test__ = False  # not a pytest test


#: the cross-equation transfers of the generalisation study: a model trained on ``family`` run on
#: ``test_family``'s test set
CROSS_EQUATION: tuple[TestSet, ...] = (TestSet("poisson", "k=1", test_family="helmholtz"),
                                       TestSet("helmholtz", "scale=100", test_family="poisson"))


def cross_equation_pairs(profile: str) -> list[tuple[str, DatasetSpec]]:
    """``(train family, test spec)`` for each cross-equation pair of :data:`CROSS_EQUATION`."""
    return [(t.family, t.spec(profile)) for t in CROSS_EQUATION]


def setting_label(frame):
    """Per row of a results frame (columns ``family``, ``setting``, optionally ``test_family``):
    ``family / setting``, or ``model family -> test family / setting`` for a cross-equation row."""
    label = frame.family + " / " + frame.setting.astype(str)
    if "test_family" in frame.columns:
        cross = frame.test_family != frame.family
        label[cross] = frame.family[cross] + " -> " + frame.test_family[cross] + " / " + frame.setting[cross].astype(str)
    return label


def in_distribution_setting(family: str) -> str:
    """The setting label of a family's training distribution, e.g. ``"k=1"`` for Helmholtz."""
    return family_spec(family).setting


#: training settings per profile (``ens.train.TrainConfig`` fields): ``"all"`` for every family,
#: then per-family overrides. ``ci`` trains in seconds (tiny networks, for the tests and the live
#: demo of notebook 02); ``default`` fits all twelve models (ENS and surrogate, six families) in
#: about two hours on a 2-core CPU (measured times in the README); ``paper`` is the paper's
#: backbone (width 64, 20 modes) and a GPU-sized budget.
TRAINING: dict[str, dict[str, dict]] = {
    "ci": {"all": {"backbone_kwargs": {"width": 12, "modes": 6, "layers": 2}, "epochs": 8, "batch_size": 8,
                   "max_steps": 30, "n_select": 16, "save_every_s": 30.0}},
    "default": {"all": {"backbone_kwargs": {"width": 16, "modes": 12, "layers": 4}, "epochs": 8,
                        "batch_size": 8, "max_steps": 100, "n_select": 64}},
    "paper": {"all": {"backbone_kwargs": {"width": 64, "modes": 20, "layers": 4}, "epochs": 100,
                      "batch_size": 32, "lr": 5e-4, "max_steps": 200, "n_select": 200, "amp": True}},
}


#: profile -> family -> ENS's seconds per training batch over the surrogate's, measured by
#: ``ens.train.measure_cost_ratio`` (one torch thread, the profile's networks and batches, 2-core CPU;
#: the fastest of 3 rounds of 8 batches): the compute-matched surrogate trains ``round(epochs * ratio)``
#: epochs (``ens.train.matched_epochs``). ``paper`` has not been measured on a GPU yet and uses the
#: ``default`` ratios (same unrolled steps and architecture family; remeasure there).
COMPUTE_RATIO: dict[str, dict[str, float]] = {
    "ci": {"poisson": 5.9, "helmholtz": 5.3, "nonlinear_helmholtz": 5.8, "darcy": 5.4, "navier_stokes": 6.9,
           "kolmogorov": 7.5},
    "default": {"poisson": 6.5, "helmholtz": 6.2, "nonlinear_helmholtz": 5.6, "darcy": 5.9, "navier_stokes": 6.3,
                "kolmogorov": 6.6},
}
COMPUTE_RATIO["paper"] = dict(COMPUTE_RATIO["default"])

#: the training-budget study (``ens.evaluate.budget_study``, ``ens study --budget``) per profile: the
#: family (the one with ill-conditioned shifts) and the budgets in ENS epochs (ENS and the
#: same-epochs surrogate train that many, the compute-matched surrogate ``round(budget * ratio)``).
#: The default budget 8 is the shipped models' own configuration.
BUDGET_STUDY: dict[str, dict] = {
    "ci": {"family": "helmholtz", "budgets": (1, 2, 4)},
    "default": {"family": "helmholtz", "budgets": (2, 8, 32)},
    "paper": {"family": "helmholtz", "budgets": (8, 32, 128)},
}


#: evaluation budgets per profile (``ens.evaluate``): test samples per setting (the first ones of
#: the file), batch size, iterations of each residual-based baseline, and the test-time
#: optimisation's candidate learning rates (chosen per family on ``n_select`` validation samples);
#: for the generalisation studies (``ens.generalization``) the samples of each super-resolution set
#: (``n_superres``, 4x the cost per sample) and of the alpha/T sensitivity sweep (``n_sensitivity``,
#: also the samples of ENS+'s validation choice); ENS+ keeps the candidate of fewest iterations within
#: ``ens_plus_tolerance`` of the lowest validation error (``ens.evaluate.select_ens_plus``).
#: Every iterative method gets far more iterations than ENS's ``T_test``, so the error-versus-time
#: curves compare them at equal wall time, not only at each method's end.
EVALUATION: dict[str, dict] = {
    "ci": {"n_samples": 16, "batch_size": 16, "gd_steps": 100, "gn_steps": 8, "cg_iterations": 20,
           "newton_steps": 10, "tto_steps": 40, "tto_lrs": (1e-4, 1e-3), "n_select": 8,
           "n_superres": 16, "n_sensitivity": 8, "ens_plus_tolerance": 1.1},
    "default": {"n_samples": 32, "batch_size": 32, "gd_steps": 500, "gn_steps": 20, "cg_iterations": 20,
                "newton_steps": 20, "tto_steps": 100, "tto_lrs": (1e-5, 1e-4, 1e-3), "n_select": 8,
                "n_superres": 16, "n_sensitivity": 16, "ens_plus_tolerance": 1.1},
    "paper": {"n_samples": 200, "batch_size": 50, "gd_steps": 5000, "gn_steps": 100, "cg_iterations": 50,
              "newton_steps": 30, "tto_steps": 1000, "tto_lrs": (1e-5, 1e-4, 1e-3), "n_select": 50,
              "n_superres": 100, "n_sensitivity": 50, "ens_plus_tolerance": 1.1},
}

#: the generalisation studies (``ens.generalization``)
STUDIES = ("zero_shot", "cross_equation", "superres")

#: the ill-conditioned test sets of the residual-versus-accuracy experiment (besides every family's
#: in-distribution test set)
ILL_CONDITIONED: tuple[TestSet, ...] = (TestSet("helmholtz", "k=3"), TestSet("helmholtz", "k=4"),
                                        TestSet("navier_stokes", "nu=1e-4"))
