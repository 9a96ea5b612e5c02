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


def test_the_library_never_imports_the_book():
    code = ("import sys, iteration_order; "
            "print(sorted(m for m in sys.modules if m.startswith('iteration_order.book')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_runner_imports_no_appendix_and_appendix_d_plugs_in_as_a_family():
    import ast
    from pathlib import Path

    import iteration_order.trajectory as trajectory
    tree = ast.parse(Path(trajectory.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"order_average", "lie", "sharpness", "stationary"}, imported
    assert iteration_order.updates() == ("sgd", "small", "regularised", "average")


def _book_imports() -> dict[str, set[str]]:
    """Each module of iteration_order.book -> the modules of the book it imports, at the top or
    inside a function alike (a lazy import is still a dependency)."""
    import ast
    from pathlib import Path

    import iteration_order.book as book
    folder = Path(book.__file__).parent
    modules = {p.stem for p in folder.glob("*.py")}
    graph = {}
    for name in modules:
        found = set()
        for node in ast.walk(ast.parse((folder / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= ({node.module.split(".")[0]} if node.module
                          else {alias.name for alias in node.names})
        graph[name] = found & modules - {name}
    return graph


def test_the_book_has_no_import_circle():
    graph = _book_imports()
    done, active = set(), []

    def visit(name):
        assert name not in active, f"import circle: {' -> '.join(active[active.index(name):])} -> {name}"
        if name in done:
            return
        active.append(name)
        for child in sorted(graph[name]):
            visit(child)
        active.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_the_registry_imports_no_page_code():
    assert _book_imports()["registry"] == set()


def test_every_template_has_one_study_module_named_after_it():
    from pathlib import Path

    import iteration_order.book as book
    root = Path(book.__file__).resolve().parents[3]
    templates = {p.stem for p in (root / "notebooks").glob("*.ipynb")}
    modules = {p.stem for p in Path(book.__file__).parent.glob("*.py")}
    assert templates <= modules, templates - modules
