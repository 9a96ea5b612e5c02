"""Conclusions quote numbers only through glue: a rerun at another profile cannot leave a stale
number in the prose (issue 11)."""
import re

from iteration_order.book.registry import load_pages


# Numbers in a conclusion come from the executed run through glue; the prose only interprets.
# A digit is allowed inside a glue reference, or in a name that is not a measurement: the paper's
# figure/section/theorem numbers and the names of functions, data sets and networks.
_NOT_MEASUREMENTS = re.compile(
    r"\{glue:(?:text|md)\}`[^`]+`|\{(?:cite(?::[tp])?|doc)\}`[^`]+`"
    r"|(?:Figures?|Fig\.|Theorems?|Lemma|Corollary|Definition|Examples?|Sections?|Appendix|Eq\.)"
    r" [A-Z]?\.?\d+(?:\.\d+)?(?:(?:,| and|–|-) ?[A-Z]?\.?\d+(?:\.\d+)?)*"
    r"|cos\(10x\)|CIFAR-10{1,2}|ResNet-(?:18|50)|VGG-19|float(?:32|64)|3×3|2/h"
    r"|(?:θ|T)(?:\^B)?_[01](?![0-9])"  # the notation θ_0, θ^B_1, T_1 (no step numbers)
    # typeset math whose only digits are one-digit powers and indices: $h^3$, $\theta_0$
    r"|\$(?:[^$\d]|[\^_]\{?\d\}?)*\$")


def _stray_digits(text: str) -> list[str]:
    return re.findall(r"\S*\d\S*", _NOT_MEASUREMENTS.sub(" ", text))


def test_conclusions_quote_numbers_only_through_glue():
    stray = {(name, profile): _stray_digits(text)
             for name, entry in load_pages().items()
             for profile, text in (entry.get("conclusion") or {}).items()}
    assert {key: digits for key, digits in stray.items() if digits} == {}


def test_the_digit_check_catches_a_typed_number():
    assert _stray_digits("the ratio is 0.61 on every seed") == ["0.61"]
    assert _stray_digits("ratio {glue:text}`backward_train_spread_gm:.2f` (Figure 7, "
                         "Theorem 2.6, Theorem C.2, Lemma C.1, Figures 14–19, cos(10x), "
                         "ResNet-18)") == []


def test_citations_links_and_the_stability_threshold_are_not_measurements():
    assert _stray_digits("{cite:t}`dherin2025training` and {doc}`fig07-fashionmnist`: "
                         "the threshold 2/h") == []
    assert _stray_digits("θ_0 and T_1, but θ^B_1000") == ["θ^B_1000"]
    assert _stray_digits(r"$h^3$, $h^2\|C_n\|$ and $\theta_0$, but $0.93$") == ["$0.93$"]
    assert _stray_digits("{cite:t}`dherin2025training` measured 12 steps") == ["12"]
