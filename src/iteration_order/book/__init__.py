"""The book: its page registry, the papermill runner and each page's experiment, tables and figures.

The library (``iteration_order``) never imports this subpackage; the pages import both. Modules:

* `registry` — ``experiments.yml``: every page's template, parameters per profile and prose;
* `runner` — executes pages with papermill into ``book/`` (``python -m iteration_order.book``);
* `pages` — the figure pages' experiment (forward against another order, seed by seed);
* `summary` — the claims across figure pages; `plots` — the figures;
* `theory`, `lie_bracket`, `order_average`, `sharpness`, `stationary` — the
  experiments of the theory page, Appendices C and D, the sharpness and Theorem 2.6 pages.
"""
