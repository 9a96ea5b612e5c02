"""The declared glue keys (`book.glue_keys`): every key a page glues is declared for its template,
and a key the registry's prose quotes that its template does not declare is refused by the
registry check, before any page runs."""
import json
import textwrap

import pytest

from iteration_order import Runtime
from iteration_order.book import glue_keys, orders, registry, studies, summary
from iteration_order.book.glue_keys import TEMPLATES, declared, quoted_keys, undeclared

BOOK = registry.ROOT / "book"


def _glued(path) -> list[str]:
    """The keys an executed page glued: myst-nb names each in its output's metadata."""
    nb = json.loads(path.read_text())
    return [output["metadata"]["scrapbook"]["name"] for cell in nb["cells"]
            for output in cell.get("outputs", [])
            if "scrapbook" in output.get("metadata", {})]


def _executed_pages() -> list:
    """(page name, notebook) of every executed page, book/paper/ included."""
    found = []
    # not the runner's .PAGE.running.ipynb of a page being executed
    for path in sorted(p for p in BOOK.rglob("*.ipynb") if not p.name.startswith(".")):
        meta = json.loads(path.read_text())["metadata"].get("iteration_order", {})
        found.append((meta.get("page", path.stem), path))
    return found


def test_every_template_declares_its_keys():
    assert set(TEMPLATES) == set(studies.STUDIES)
    with pytest.raises(ValueError, match="declares no glue keys"):
        declared("no_such_template")


def test_every_key_an_executed_page_glues_is_declared():
    pages = _executed_pages()
    assert pages, f"no executed page under {BOOK}"
    problems = {}
    for name, path in pages:
        template = registry.page(name)["template"]
        missing = undeclared(template, _glued(path))
        if missing:
            problems[f"{path.relative_to(registry.ROOT)} ({template})"] = missing
    assert not problems, problems


def _computed_figure_pages() -> dict:
    """Every figure page whose cpu runs are all in results/, as (experiment, results)."""
    runtime = Runtime(progress=False, cache="only")
    computed = {}
    for name, entry in registry.load_pages().items():
        if entry["template"] != "orders":
            continue
        try:
            computed[name] = summary.page_experiment(name, "cpu", False, runtime)
        except ValueError:  # runs missing or stale: the page is not computed here
            continue
    return computed


def test_every_number_the_current_code_computes_is_declared():
    """`orders.page_numbers` and `summary.summary_numbers` of the current code, on the committed
    results: the executed pages may predate a key the code now adds."""
    computed = _computed_figure_pages()
    if not computed:
        pytest.skip("no figure page has all its cpu runs in results/")
    for name, (experiment, results) in computed.items():
        assert undeclared("orders", orders.page_numbers(experiment, results)) == [], name
    config = summary.SummaryConfig(pages=tuple(computed), profile="cpu")
    found = summary.summarise(config, Runtime(progress=False, cache="only"))
    numbers = summary.summary_numbers(found.claims, found.tables)
    assert undeclared("summary", numbers) == []


def test_the_committed_registry_quotes_only_declared_keys():
    assert glue_keys.registry_problems() == []


def _registry(tmp_path, conclusion: str, template: str = "orders"):
    path = tmp_path / "experiments.yml"
    path.write_text(textwrap.dedent(f"""\
        pages:
          typo-page:
            template: {template}
            title: A page
            claim: Something holds.
            common: {{}}
            profiles: {{smoke: {{}}, cpu: {{}}, paper: {{}}}}
            conclusion:
              cpu: >
                {conclusion}
        """))
    return path


def test_a_mistyped_quoted_key_is_refused_by_the_registry_check(tmp_path):
    path = _registry(tmp_path, "Steadier on {glue:text}`backward_train_spred_evidence`, "
                               "over {glue:text}`seeds_n` seeds.")
    assert studies.check_registry(path) == [
        "page typo-page: conclusion.cpu quotes glue key 'backward_train_spred_evidence', which "
        "template orders does not declare (see src/iteration_order/book/glue_keys.py)"]


def test_the_format_of_a_role_is_not_part_of_its_key(tmp_path):
    assert quoted_keys("{glue:text}`constant_first:+.0f` and {glue:md}`provenance`, "
                       "{glue}`lr` {glue:figure}`curves`") == [
        "constant_first", "provenance", "lr", "curves"]
    assert quoted_keys("```{glue:figure} fig_constant\n:name: x\n```") == ["fig_constant"]
    path = _registry(tmp_path, "{glue:text}`constant_first:+.0f`, {glue:text}`constant_fist:+.0f`",
                     template="contraction")
    problems = glue_keys.registry_problems(path)
    assert len(problems) == 1 and "'constant_fist'" in problems[0], problems
    assert "template contraction" in problems[0]


# per template: keys its pages glue, then near misses of them
KEYS = {
    "contraction": (["quadratic_rate", "constant_first", "fig_linear__png", "seed"],
                    ["quadratic_rates", "cubic_rate", "constant_fist", "fig_linear__jpg"]),
    "orders": (["backward_train_spread_evidence", "reset_vs_backward_acc_diff_range",
                "backward_tail_loss_chance_min", "chance_loss", "curves_caption"],
               ["backward_train_spred_evidence", "backwards_train_spread_evidence",
                "backward_train_spread_evidence_", "backward_tail_loss_chance_mean",
                "chanceloss"]),
    "lie_bracket": (["cos10_n100_useful_nh", "check_relu_n8_first_kink", "cos10_ratio_n1400",
                     "rule_kink_failures", "sweep_runs__data"],
                    ["cos10_n1OO_useful_nh", "check_gelu_n8_first_kink", "cos10_ratio_nlast",
                     "rule_kinks_failures", "sweep_run__data"]),
    "order_average": (["second_diff_text", "sigma_dof", "above_diverged", "summary"],
                      ["second_dif_text", "sigma_dofs", "middle_diverged", "summaries"]),
    "sharpness": (["fashion_backward_rot_max_where", "synthetic_tail_frac_range", "eigenpairs",
                   "coincidence_fashion_caption"],
                  ["fashion_backward_rot_max_were", "mnist_tail_frac_range", "eigenpair",
                   "coincidence_mnist_caption"]),
    "stationary": (["quadratic_wrong_law_verdict", "network_main_D", "rep_tail_p",
                    "histogram_network__png"],
                   ["network_wrong_law_verdict", "network_main_d", "rep_tail_q",
                    "histogram_networks__png"]),
    "summary": (["fig04_x2_backward_level_evidence", "decay_forward_above_110",
                 "train_spread_gm_range", "fig04_x2_backward_decay_own_seeds", "t_quantile_5"],
                ["fig4_x2_backward_level_evidence", "fig04_x2_backward_level_evidance",
                 "decay_forward_above_120", "fig04_x2_backward_decay_fwd_seeds", "t_quantile_4"]),
}


@pytest.mark.parametrize("template", sorted(KEYS))
def test_a_near_miss_is_refused_and_a_real_key_accepted(template):
    real, near = KEYS[template]
    assert undeclared(template, real + ["provenance"]) == []
    assert undeclared(template, near + ["", "provenance ", "x"]) == near + ["", "provenance ", "x"]
