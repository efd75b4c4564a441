"""The paper's figures (Figs 1-10) and tables (1, 3, 5) drawn from the project's tables, and the figures of the
sites table (Figs S1, S2)."""

from dynamics.figures.catalog import ITEMS, Inputs, build_all, save
from dynamics.figures.explain import fig9_explain_K, fig10_explain_lambda
from dynamics.figures.family import fig2_ratio_vs_size, fig3_layer_profiles, fig5_peak_heatmaps
from dynamics.figures.fitplots import fig6_example_fits, fig7_fit_quality, fig8_peak_surface
from dynamics.figures.sites import sink_coemergence, sublayer_origin
from dynamics.figures.tables import table1_fit_quality, table3_regressors, table5_hypotheses
from dynamics.figures.trajectories import fig1_overview, fig4_layer_trajectories

__all__ = [
    "ITEMS",
    "Inputs",
    "build_all",
    "save",
    "fig1_overview",
    "fig2_ratio_vs_size",
    "fig3_layer_profiles",
    "fig4_layer_trajectories",
    "fig5_peak_heatmaps",
    "fig6_example_fits",
    "fig7_fit_quality",
    "fig8_peak_surface",
    "fig9_explain_K",
    "fig10_explain_lambda",
    "sink_coemergence",
    "sublayer_origin",
    "table1_fit_quality",
    "table3_regressors",
    "table5_hypotheses",
]
