"""The package's public surface: what `import iteration_order` gives and what it does not load."""
import subprocess
import sys

import iteration_order


def test_the_core_imports_no_plotting_or_table_library():
    # plots and tables belong to the book's page modules; a user of the method needs neither
    code = ("import sys, iteration_order; "
            "print(sorted(m for m in ('matplotlib', 'seaborn', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_paper_level_entry_points_are_exported():
    for name in ("iterates", "sgd_maps", "run_trajectory", "approximate_backward", "corrections",
                 "lie_bracket", "update_maps", "BatchLoss", "top_eigenpairs", "run_probes"):
        assert callable(getattr(iteration_order, name)), name
