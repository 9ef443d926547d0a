"""The widget panel of the what-if explorer (notebook 05 and ``make whatif``): ipywidgets wired to
:mod:`ens.whatif`, drawn with :class:`ens.plots.WhatIfFigures`.

The panel holds no numerics: :meth:`WhatIfPanel.scenario` reads the widgets into an
:class:`ens.whatif.Scenario`, :meth:`WhatIfPanel.update` runs it in the session and shows the result.
Changing the family shows that family's parameters (its :attr:`~ens.experiments.FamilySpec.knobs`),
its sample range, its grids and the methods that apply, and resets ``alpha`` and ``T`` to its
validation choice. With *auto-update* on, every change redraws (sliders on release); off, a change
marks the figures stale and *Run* redraws. A redraw shows the fast methods (reference, surrogate,
ENS) first and the hybrids when they are done; while it runs, the status line says which stage is
computing. An invalid scenario or a failed run clears the figures and says why in the status line
(never a traceback, never an old figure under a new heading).
"""

from __future__ import annotations

import contextlib
import html
import io
import math
import re

import ipywidgets as w
import matplotlib

from .experiments import EVALUATION, family_spec, sizes
from .methods import LABELS, METHOD_SPECS, METHODS
from .plots import WhatIfFigures
from .whatif import BUDGET_KEYS, FAST_METHODS, MAX_ALPHA, STOPS, Scenario, WhatIf

__all__ = ["WhatIfPanel", "summary_html", "redraw_times"]

_STOP_LABELS = {"steps": "after T steps", "residual": "residual rule (at most T)"}
#: the panel's T slider range (the session accepts up to ens.whatif.MAX_STEPS)
_MAX_T = 300
_DPI = 80


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # the layout is fixed when the figures are built; the style's "tight" bounding box would draw
    # every figure twice (bbox_inches=None means the rc value)
    with matplotlib.rc_context({"savefig.bbox": "standard"}):
        fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def summary_html(result) -> str:
    """The result's summary as a small HTML table (label, errors, iterations, time, status)."""
    rows = []
    for r in result.summary.itertuples():
        fmt = (lambda v: "" if not math.isfinite(v) else f"{v:.3g}")
        status = html.escape(r.status + (f": {r.message}" if r.message and r.status != "ok" else ""))
        rows.append(f"<tr><td>{html.escape(r.label)}</td><td>{fmt(r.rel_l2)}</td><td>{fmt(r.rel_residual)}</td>"
                    f"<td>{r.iterations}</td><td>{fmt(r.ms)}</td><td>{status}</td></tr>")
    kappa = f"condition number {result.kappa:.3g}" if math.isfinite(result.kappa) else \
        "condition number: not defined for this problem"
    done = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()) or "nothing (all cached)"
    return ("<table class='ens-summary' style='border-collapse:collapse'><tr><th>method</th><th>rel. L2 error</th>"
            "<th>rel. residual</th><th>iterations</th><th>ms</th><th>status</th></tr>" + "".join(rows) +
            f"</table><p style='font-size:small'>{kappa}; computed: {html.escape(done)}</p>")


def _knob_widget(knob, value):
    common = {"description": knob.param, "style": {"description_width": "initial"}, "layout": w.Layout(width="330px")}
    if knob.choices:
        return w.Dropdown(options=list(knob.choices), value=value, **common)
    common["continuous_update"] = False  # sliders redraw on release
    if knob.log:
        return w.FloatLogSlider(value=value, base=10, min=math.log10(knob.lo), max=math.log10(knob.hi),
                                step=knob.step, readout_format=".3g", **common)
    return w.FloatSlider(value=value, min=knob.lo, max=knob.hi, step=knob.step, readout_format=".3g", **common)


class WhatIfPanel:
    """The what-if widget panel (module docstring) over a :class:`ens.whatif.WhatIf` session;
    ``widget`` is what to display. ``families`` defaults to those with checkpoints of the profile."""

    def __init__(self, session: WhatIf | None = None, *, profile: str = "default", families=None,
                 family: str | None = None, auto: bool = True):
        from .evaluate import shipped_families
        self.session = session or WhatIf(profile)
        have = shipped_families(self.session.profile, families, self.session.checkpoint_root)[0]
        if not have:
            raise FileNotFoundError(f"no {self.session.profile} checkpoints: run `ens train --profile "
                                    f"{self.session.profile} --all`")
        self.figures = WhatIfFigures()
        self.result = None
        self._quiet = False
        style = {"description_width": "initial"}
        self.family = w.Dropdown(options=have, value=family or have[0], description="family")
        self.knobs = {}
        self.params_box = w.VBox()
        self.sample = w.IntSlider(0, 0, 1, description="sample", continuous_update=False)
        self.grid = w.ToggleButtons(options=["native"], description="grid", style=style)
        self.methods = {m: w.Checkbox(value=True, description=METHOD_SPECS[m].label, indent=False,
                                      layout=w.Layout(width="auto")) for m in METHODS}
        self.alpha = w.FloatSlider(0.5, min=0.05, max=min(MAX_ALPHA, 2.0), step=0.05, description="ENS alpha",
                                   continuous_update=False, style=style)
        self.steps = w.IntSlider(10, 0, _MAX_T, description="ENS T", continuous_update=False, style=style)
        self.stop = w.ToggleButtons(options=[(_STOP_LABELS[s], s) for s in STOPS], description="stop rule",
                                    style=style)
        self.reset = w.Button(description="validation alpha, T", tooltip="the alpha and T chosen on validation data")
        self.budget = {k: w.BoundedIntText(1, min=1, max=100_000, description=k, style=style,
                                           layout=w.Layout(width="200px")) for k in BUDGET_KEYS}
        self.auto = w.Checkbox(value=auto, description="auto-update", indent=False)
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.status = w.HTML()
        self.busy = w.FloatProgress(value=0, min=0, max=1, layout=w.Layout(width="160px", visibility="hidden"))
        self.fields_image = w.Image(format="png", layout=w.Layout(width="100%", max_width="1400px"))
        self.curves_image = w.Image(format="png", layout=w.Layout(width="100%", max_width="1400px"))
        self.table = w.HTML()

        budget_box = w.Accordion([w.HBox(list(self.budget.values()), layout=w.Layout(flex_flow="row wrap"))])
        budget_box.set_title(0, "iteration budgets of the hybrids and test-time optimisation")
        budget_box.selected_index = None
        controls = w.VBox([
            w.HBox([self.family, self.sample, self.grid]),
            self.params_box,
            w.HBox(list(self.methods.values()), layout=w.Layout(flex_flow="row wrap")),
            w.HBox([self.alpha, self.steps, self.reset]),
            self.stop, budget_box,
            w.HBox([self.auto, self.run_button, self.busy, self.status]),
        ])
        self.widget = w.VBox([controls, self.table, self.fields_image, self.curves_image])

        self.family.observe(self._family_changed, "value")
        for widget in [self.sample, self.grid, self.alpha, self.steps, self.stop, *self.methods.values(),
                       *self.budget.values()]:
            widget.observe(self._changed, "value")
        self.reset.on_click(lambda _: self._reset_ens())
        self.run_button.on_click(lambda _: self.update())
        self.auto.observe(lambda ch: self.update() if ch["new"] else None, "value")
        self._family_changed()

    def _repr_mimebundle_(self, **kwargs):
        """Display as the panel's widget; where no live kernel renders it (a repository browser, an
        exported notebook), the text says so instead of the widget's repr."""
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = ("[the what-if panel: live widgets, shown when the notebook runs in Jupyter "
                                "or as the app (`make whatif`)]")
        return bundle

    # ---- reading and setting the widgets --------------------------------------------------------
    @contextlib.contextmanager
    def _batch(self):
        """Set several widgets without a redraw per change."""
        quiet, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = quiet

    def scenario(self) -> Scenario:
        """The scenario the widgets describe (the parameters that differ from the training ones)."""
        family = self.family.value
        train = family_spec(family).pde().params  # every parameter's training value
        params = {name: wid.value for name, wid in self.knobs.items() if wid.value != train[name]}
        default = EVALUATION[self.session.profile]
        budget = {k: wid.value for k, wid in self.budget.items() if wid.value != default[k]}
        methods = [m for m, box in self.methods.items() if box.value and not box.disabled]
        return Scenario(family, params, self.sample.value, self.grid.value, tuple(methods), float(self.alpha.value),
                        int(self.steps.value), self.stop.value, budget)

    def _family_changed(self, change=None) -> None:
        family = self.family.value
        spec = family_spec(family)
        with self._batch():
            values = spec.pde().params
            self.knobs = {k.param: _knob_widget(k, values[k.param]) for k in spec.knobs}
            for wid in self.knobs.values():
                wid.observe(self._changed, "value")
            self.params_box.children = [w.HBox(list(self.knobs.values()), layout=w.Layout(flex_flow="row wrap"))]
            n_test = sizes(self.session.profile, family).n_test
            self.sample.max, self.sample.value = n_test - 1, min(self.sample.value, n_test - 1)
            self.grid.options = ["native", "fine"] if spec.superres else ["native"]
            self.grid.value = "native"
            for k, wid in self.budget.items():
                wid.value = EVALUATION[self.session.profile][k]
            self._reset_ens(redraw=False)
            self._sync_methods()
        self._changed()

    def _sync_methods(self) -> None:
        """Enable the method boxes that apply to the PDE the parameters describe."""
        try:
            pde = self.session.resolve(self.scenario().replace(methods=None))["pde"]
        except ValueError:
            return
        for m, box in self.methods.items():
            box.disabled = not METHOD_SPECS[m].applies(pde)

    def _reset_ens(self, redraw: bool = True) -> None:
        ens = self.session.checkpoints(self.family.value)["ens"]
        with self._batch():
            self.alpha.value = ens.inference["alpha"]
            self.steps.value = min(ens.inference["steps"], _MAX_T)
        if redraw:
            self._changed()

    def _changed(self, change=None) -> None:
        if self._quiet:
            return
        if change is not None and change.get("owner") in self.knobs.values():
            with self._batch():
                self._sync_methods()
        if self.auto.value:
            self.update()
        else:
            self._set_status("changed: press <b>Run</b> to recompute (the figures below are for the previous "
                             "settings)", "#b26b00")

    # ---- running --------------------------------------------------------------------------------
    def _set_status(self, text: str, colour: str = "#333") -> None:
        self.status.value = f"<span style='color:{colour}'>{text}</span>"

    def _clear(self) -> None:
        self.result = None
        self.fields_image.value = self.curves_image.value = b""
        self.fields_image.layout.visibility = self.curves_image.layout.visibility = "hidden"
        self.table.value = ""

    def _show(self, result) -> None:
        fields, curves = self.figures.draw(result)
        self.fields_image.value, self.curves_image.value = _png(fields), _png(curves)
        self.fields_image.layout.visibility = self.curves_image.layout.visibility = "visible"
        self.table.value = summary_html(result)
        self.result = result

    def _progress(self, stage: str) -> None:
        self._set_status(f"computing {html.escape(stage)} ...")

    def update(self) -> None:
        """Run the widgets' scenario and show it: the fast methods first, then the rest."""
        try:
            s = self.scenario()
            self.busy.layout.visibility = "visible"
            self.busy.value = 0.2
            slow = tuple(m for m in (s.methods or ()) if m not in FAST_METHODS)
            first = self.session.run(s, self._progress, defer=slow)
            pending = [LABELS[m] for m in first.summary.method[first.summary.status == "pending"]]
            if pending:
                self._show(first)
                self.busy.value = 0.5
                self._set_status(f"computing {', '.join(pending)} ...")
                first = self.session.run(s, self._progress)
            self._show(first)
            bad = first.summary[first.summary.status != "ok"]
            note = "; ".join(f"{r.label}: {r.status} ({r.message})" for r in bad.itertuples())
            self._set_status("up to date" + (f" &mdash; <span style='color:#b00'>{html.escape(note)}</span>"
                                             if note else ""), "#2a7d2a")
        except ValueError as e:  # ScenarioError and the session's own checks
            self._clear()
            self._set_status(f"cannot run this scenario: {html.escape(str(e))}", "#b00")
        except Exception as e:  # noqa: BLE001 - the panel reports every failure in its status line
            self._clear()
            self._set_status(f"the run failed: {html.escape(type(e).__name__)}: {html.escape(str(e))}", "#b00")
        finally:
            self.busy.layout.visibility = "hidden"


def redraw_times(profile: str = "default", families=None, session: WhatIf | None = None):
    """Measured redraw times of the panel on ``profile``: per family and kind of change (ENS's
    alpha, its T, the sample, a hybrid's budget, a physical parameter), the seconds from setting the
    widget to the first redraw (reference, surrogate, ENS) and to the complete one, everything
    included (the runs, drawing the figures, rendering the PNGs). Each family's panel is warmed by
    its first draw (not timed), as a user's session is by the time they move a slider."""
    import time

    import pandas as pd

    from .evaluate import shipped_families
    session = session or WhatIf(profile)
    families = shipped_families(profile, families, session.checkpoint_root)[0]
    rows = []
    for family in families:
        panel = WhatIfPanel(session, family=family, families=[family])
        marks = []
        show = panel._show

        def timed_show(result, show=show, marks=marks):
            show(result)
            marks.append(time.perf_counter())
        panel._show = timed_show
        knob = next(iter(panel.knobs.values()))
        ens = session.checkpoints(family)["ens"].inference

        def move_knob(knob=knob):
            if isinstance(knob, w.Dropdown):
                options = list(knob.options)
                knob.value = options[(options.index(knob.value) + 1) % len(options)]
            else:
                knob.value = min(knob.value * 1.1, knob.max) if isinstance(knob, w.FloatLogSlider) else \
                    min(knob.value + 2 * knob.step, knob.max)
        changes = {"ENS alpha": lambda: setattr(panel.alpha, "value", round(ens["alpha"] * 0.7, 2)),
                   "ENS T": lambda: setattr(panel.steps, "value", ens["steps"] + 3),
                   "sample": lambda: setattr(panel.sample, "value", 1),
                   "hybrid budget (Gauss-Newton steps + 1)":
                       lambda: setattr(panel.budget["gn_steps"], "value", panel.budget["gn_steps"].value + 1),
                   f"parameter {knob.description}": move_knob}
        for change, apply in changes.items():
            marks.clear()
            t0 = time.perf_counter()
            apply()
            t1 = time.perf_counter()
            rows.append({"family": family, "change": change, "first_redraw_s": (marks[0] if marks else t1) - t0,
                         "complete_s": t1 - t0, "status": re.sub("<[^>]+>", "", panel.status.value)})
    return pd.DataFrame(rows)


if __name__ == "__main__":  # python -m ens.whatif_panel [profile]: print the redraw times (make bench-whatif)
    import sys
    table = redraw_times(sys.argv[1] if len(sys.argv) > 1 else "default")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
