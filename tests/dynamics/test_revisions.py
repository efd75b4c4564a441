import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamics.revisions import (
    OLMO,
    PYTHIA,
    PYTHIA_REVISIONS,
    PYTHIA_SCHEDULE,
    detect_scheme,
    every,
    log_spaced,
    paper,
    parse_scheme,
    regex_scheme,
    select,
)
from fitting.errors import UserError

PYTHIA_WITH_MAIN = [*PYTHIA_REVISIONS, "main"]


def test_pythia_schedule_is_the_154_published_steps():
    assert len(PYTHIA_SCHEDULE) == 154
    assert PYTHIA_SCHEDULE[:12] == (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000)
    assert PYTHIA_SCHEDULE[-2:] == (142000, 143000)
    assert list(PYTHIA_SCHEDULE) == sorted(set(PYTHIA_SCHEDULE))


def test_pythia_names_round_trip_through_steps():
    steps = PYTHIA.steps(PYTHIA_REVISIONS)
    assert list(steps.values()) == list(PYTHIA_SCHEDULE)
    assert all(f"step{PYTHIA.step(name)}" == name for name in PYTHIA_REVISIONS)
    assert PYTHIA.step("step1000-tokens4B") is None and PYTHIA.step("main") is None


def test_main_is_the_last_step_and_comes_after_it():
    steps = PYTHIA.steps(["main", "step2", "step143000", "step0"])
    assert steps == {"step0": 0, "step2": 2, "step143000": 143000, "main": 143000}
    assert list(steps) == ["step0", "step2", "step143000", "main"]
    assert PYTHIA.steps(["main"]) == {}


def test_olmo_and_regex_schemes_read_the_step():
    assert OLMO.step("step1000-tokens4B") == 1000
    assert OLMO.step("step20000-tokens84B") == 20000
    assert OLMO.step("step1000") is None
    ckpt = regex_scheme(r"ckpt-(\d+)(?:\.pt)?")
    assert ckpt.step("ckpt-250.pt") == 250 and ckpt.step("ckpt-x") is None
    assert parse_scheme("olmo") is OLMO and parse_scheme(r"it(\d+)").step("it7") == 7


@pytest.mark.parametrize("pattern", [r"step\d+", r"(step)(\d+)", r"step(\d+"])
def test_a_regex_needs_one_group_and_must_compile(pattern):
    with pytest.raises(UserError, match="regex"):
        regex_scheme(pattern)


def test_detect_scheme_picks_the_family_that_names_the_revisions():
    assert detect_scheme(["main", "step0", "step1000"]) is PYTHIA
    assert detect_scheme(["main", "step0-tokens0B", "step1000-tokens4B"]) is OLMO
    with pytest.raises(UserError, match="naming scheme"):
        detect_scheme(["main", "v1", "v2"])


def test_paper_selection_on_pythia_is_37_documented_steps():
    assert paper(PYTHIA_SCHEDULE) == [
        0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512,
        1000, 7000, 12000, 18000, 24000, 29000, 35000, 41000, 46000, 52000, 58000, 63000, 69000,
        75000, 81000, 86000, 92000, 98000, 103000, 109000, 115000, 120000, 126000, 132000, 137000, 143000,
    ]  # fmt: skip


def test_log_selection_on_pythia_is_evenly_spaced_in_log_step():
    assert log_spaced(PYTHIA_SCHEDULE, 10) == [0, 2, 16, 64, 256, 1000, 3000, 10000, 38000, 143000]
    # Near the dense end several targets fall on one checkpoint: 37 targets give 26 distinct steps.
    assert log_spaced(PYTHIA_SCHEDULE, 37) == [
        0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512,
        1000, 2000, 3000, 4000, 5000, 7000, 10000, 14000, 20000, 28000, 38000, 53000, 74000, 103000, 143000,
    ]  # fmt: skip
    assert log_spaced(PYTHIA_SCHEDULE, 1) == [0]


def test_every_selection_takes_every_kth_checkpoint_from_the_first():
    assert every(PYTHIA_SCHEDULE, 10) == [0, 512, *range(10000, 140001, 10000)]
    assert every(PYTHIA_SCHEDULE, 1) == list(PYTHIA_SCHEDULE)


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=60, unique=True), st.integers(1, 80))
def test_selections_pick_available_steps_in_order(steps, n):
    for picked in (log_spaced(steps, n), paper(steps), every(steps, n)):
        assert picked == sorted(set(picked)) and set(picked) <= set(steps)
    assert len(log_spaced(steps, n)) <= n
    if n >= 2:
        assert log_spaced(steps, n)[-1] == max(steps)
    if max(steps) > 512:
        assert paper(steps)[-1] == max(steps)


def test_select_returns_revisions_with_their_steps_one_per_step():
    chosen = select(PYTHIA_WITH_MAIN, "all")
    assert list(chosen) == list(PYTHIA_REVISIONS) and chosen["step143000"] == 143000
    assert select(PYTHIA_WITH_MAIN, "paper")["step7000"] == 7000
    assert len(select(PYTHIA_WITH_MAIN, "log:10")) == 10
    assert list(select(PYTHIA_WITH_MAIN, "every:50")) == ["step0", "step40000", "step90000", "step140000"]


def test_explicit_lists_take_steps_and_names():
    assert select(PYTHIA_WITH_MAIN, "143000, 0,step1000,0") == {"step0": 0, "step1000": 1000, "step143000": 143000}
    assert select(PYTHIA_WITH_MAIN, "main") == {"main": 143000}
    olmo = ["step0-tokens0B", "step1000-tokens4B", "main"]
    assert select(olmo, "1000", OLMO) == {"step1000-tokens4B": 1000}


@pytest.mark.parametrize("text", ["evry:3", "every:0", "every:x", "log:", "log:-2", "0,,1000", ""])
def test_bad_selection_syntax_names_the_accepted_forms(text):
    with pytest.raises(UserError, match="every:K, log:N, paper") as err:
        select(PYTHIA_WITH_MAIN, text)
    assert "\n" not in str(err.value)


def test_a_selection_that_matches_nothing_says_what_is_missing():
    with pytest.raises(UserError, match=r"999, step5") as err:
        select(PYTHIA_WITH_MAIN, "0,999,step5")
    assert "steps 0 ... 143000" in str(err.value)
    with pytest.raises(UserError, match="naming pattern"):
        select(["main", "v1"], "all")
    with pytest.raises(UserError, match="naming pattern"):
        select([], "all")
