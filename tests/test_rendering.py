"""``{{Variable}}`` substitution as a plain function: linear in its input, and bounded by the
message's rendering budget, which is charged before anything is built (issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from worker import wire
from worker.core.vocabulary import ChannelConfig, EmailContent
from worker.delivery.render_limits import (
    MAX_RENDERED_CHARS,
    MAX_VARIABLE_REFERENCES,
    RenderBudget,
    RenderLimitExceeded,
)
from worker.delivery.rendering import Recipient, render, substitute

VARIABLES = {"a": "A", "b": "B", "a b": "AB", "Name": "Ada"}


@pytest.mark.parametrize(("text", "rendered"), [
    ("{{a}}", "A"),
    ("{{ a }}", "A"),
    ("{{\ta\n}}", "A"),
    ("{{ a b }}", "AB"),
    ("{{{a}}}", "{A}"),  # nesting: the innermost pair is the variable
    ("{{{{a}}}}", "{{A}}"),
    ("{{ {{a}} }}", "{{ A }}"),
    ("{{a{{b}}", "{{aB"),  # unbalanced
    ("{{a}}}}", "A}}"),
    ("x{{a}b}}", "x{{a}b}}"),
    ("{ {a}}", "{ {a}}"),
    ("{{}}", "{{}}"),
    ("}}{{", "}}{{"),
    ("{{missing}}!", "!"),
    ("{{", "{{"),
])
def test_substitution_of_template_shaped_strings(text: str, rendered: str) -> None:
    assert substitute(text, VARIABLES) == rendered


def test_html_values_are_escaped_once_per_name() -> None:
    assert substitute("<b>{{v}}</b>{{v}}", {"v": "<&>"}, html_part=True) == (
        "<b>&lt;&amp;&gt;</b>&lt;&amp;&gt;")


# Timed in a process of its own: the former regex held the GIL for hours on this input, so a
# hang must end in a failure rather than stall the suite. The assertion is a ratio to a
# baseline of the same length measured in the same process, never an absolute time.
_SCAN_TIMING = textwrap.dedent("""
    import json, timeit
    from worker.delivery.rendering import substitute
    n = 100_000
    def best(text):
        return min(timeit.repeat(lambda: substitute(text, {}), number=3, repeat=5))
    baseline = best("{{" + "a" * n + "}}")  # one long variable name: one pass over n chars
    print(json.dumps({
        "spaces": best("{{" + " " * n) / baseline,
        "spaces_closed_once": best("{{" + " " * n + "}") / baseline,
        "open_braces": best("{{ " * (n // 3)) / baseline,
        "nested_open": best("{" * n + "a" + "}" * 1) / baseline,
    }))
""")


def test_variable_scan_is_linear_on_braces_and_whitespace() -> None:
    try:
        done = subprocess.run([sys.executable, "-c", _SCAN_TIMING], capture_output=True,
                              text=True, timeout=60, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail("substituting '{{' and 100,000 spaces did not finish (super-linear scan)")
    ratios = json.loads(done.stdout)
    # Linear: each adversarial text costs a small multiple of the baseline pass over the same
    # length. The cubic scan took about 55 s for 4,000 spaces: orders of magnitude more.
    assert all(ratio < 20 for ratio in ratios.values()), ratios


def test_poison_pill_is_refused_before_it_is_built() -> None:
    """5 MB asking for 10¹² characters: refused after ~11 of its million references."""
    budget = RenderBudget()
    with pytest.raises(RenderLimitExceeded, match="exceed 10,485,760 characters"):
        substitute("{{A}}" * 1_000_000, {"A": "x" * 1_000_000}, budget=budget)
    assert budget.references == MAX_RENDERED_CHARS // 1_000_000 + 1
    assert budget.chars <= MAX_RENDERED_CHARS + 1_000_000


def test_escaping_counts_against_the_budget() -> None:
    value = "<" * 1_000  # four characters each once escaped
    budget = RenderBudget(max_chars=3_000)
    assert substitute("{{v}}", {"v": value}, budget=RenderBudget(max_chars=3_000)) == value
    with pytest.raises(RenderLimitExceeded):
        substitute("{{v}}", {"v": value}, html_part=True, budget=budget)


def test_references_are_bounded_even_when_they_render_nothing() -> None:
    budget = RenderBudget()
    assert substitute("{{A}}" * MAX_VARIABLE_REFERENCES, {}, budget=budget) == ""
    with pytest.raises(RenderLimitExceeded, match="more than 10,000 variables"):
        substitute("{{A}}" * (MAX_VARIABLE_REFERENCES + 1), {}, budget=RenderBudget())


def test_the_budget_covers_every_part_of_one_message() -> None:
    """Subject, text and HTML each under the cap, together over it."""
    third = "x" * (MAX_RENDERED_CHARS // 3 + 10)
    config = wire.DirectMessageConfiguration.model_validate({"EmailMessage": {
        "FromAddress": "ops@herald.test",
        "SimpleEmail": {"Subject": {"Data": "{{s}}"}, "TextPart": {"Data": third + "{{s}}"},
                        "HtmlPart": {"Data": third + "{{s}}"}},
        "Substitutions": {"s": [third]}}})
    recipient = Recipient(channel_type="EMAIL", address="a@herald.test")
    channel = ChannelConfig(app_id="app", channel_type="EMAIL", enabled=True)
    with pytest.raises(RenderLimitExceeded):
        render(config, recipient, channel)
    shorter = {"Substitutions": {"s": ["short"]}}
    content = render(config, recipient, channel,
                     overrides=wire.EndpointSendConfiguration.model_validate(shorter))
    assert isinstance(content, EmailContent) and content.subject == "short"
