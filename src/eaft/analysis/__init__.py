"""Token statistics of a data set under a model: the entropy–probability and gradient landscapes, reports.

Entry points: `run_analysis(AnalyzeConfig(...))` (what `eaft analyze` runs), `token_statistics_table` (per-token
statistics of encoded samples), `compare_runs` (`eaft analyze --compare`).
"""

from eaft.analysis.compare import compare_runs
from eaft.analysis.gradients import add_objective_columns, build_objectives, objective_weights
from eaft.analysis.landscape import Thresholds, conflict_mask, quadrant_shares, quantile_thresholds
from eaft.analysis.run import AnalyzeConfig, run_analysis
from eaft.analysis.tokens import chunk_token_statistics, token_statistics_table

__all__ = [
    "AnalyzeConfig",
    "Thresholds",
    "add_objective_columns",
    "build_objectives",
    "chunk_token_statistics",
    "compare_runs",
    "conflict_mask",
    "objective_weights",
    "quadrant_shares",
    "quantile_thresholds",
    "run_analysis",
    "token_statistics_table",
]
