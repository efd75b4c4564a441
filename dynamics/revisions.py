"""Revision names <-> training steps, the Pythia checkpoint schedule, and selections of revisions to measure.

A naming scheme is a regex whose one group is the training step (`step1000` -> 1000); the branch named
`final` (`main`) stands for the last step. A selection (`all`, `every:K`, `log:N`, `paper`, or an explicit
comma list) picks revisions by step; the step-based forms pick one revision per step, preferring the
`stepN` branch over `main` when both exist, so a trajectory never holds a step twice (name `main` in an
explicit list to get it).
"""

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from fitting.errors import UserError

# Pythia's 154 checkpoints: step0, the powers of two 1 ... 512, then every 1000 steps up to 143000 (= main).
PYTHIA_SCHEDULE: tuple[int, ...] = (0, *(2**i for i in range(10)), *range(1000, 143001, 1000))
PYTHIA_REVISIONS: tuple[str, ...] = tuple(f"step{s}" for s in PYTHIA_SCHEDULE)

# `paper`: the paper-like subset has its early log-spaced part (step0 and the powers of two up to 512: 11
# points on Pythia) and this many revisions evenly spaced over the steps after 512: 37 points on Pythia.
PAPER_EARLY_MAX = 512
PAPER_LATE = 26

SELECTION_FORMS = "all, every:K, log:N, paper, or a comma list of steps or revision names (e.g. 0,1000,step143000)"
# `adaptive:N` (dynamics.adaptive) picks revisions as it measures them, so it is no fixed selection.
ADAPTIVE = "adaptive"


@dataclass(frozen=True)
class Scheme:
    """How one model family names its checkpoints: `pattern` fully matches a revision, its one group is the step."""

    pattern: str
    final: str = "main"

    def step(self, revision: str) -> int | None:
        """The training step a revision name encodes, or None when the name does not follow the scheme."""
        match = re.fullmatch(self.pattern, revision)
        step = match.group(1) if match else None
        return int(step) if step and step.isascii() and step.isdigit() else None

    def steps(self, revisions: Iterable[str]) -> dict[str, int]:
        """Revision -> step for every revision the scheme recognizes, in step order; `final` gets the last step."""
        revisions = list(revisions)
        found = {rev: s for rev in revisions if (s := self.step(rev)) is not None}
        if self.final in revisions and self.final not in found and found:
            found[self.final] = max(found.values())
        return dict(sorted(found.items(), key=lambda item: (item[1], item[0] == self.final, item[0])))


PYTHIA = Scheme(r"step(\d+)")
# OLMo branches name the tokens seen too (`step1000-tokens4B`); the token count does not enter the step.
OLMO = Scheme(r"step(\d+)-tokens\d+[KMBT]?")
SCHEMES: dict[str, Scheme] = {"pythia": PYTHIA, "olmo": OLMO}


def regex_scheme(pattern: str, final: str = "main") -> Scheme:
    """A scheme from a user regex with exactly one group, the step (digits), e.g. `ckpt-(\\d+)`."""
    try:
        groups = re.compile(pattern).groups
    except re.error as err:
        raise UserError(f"revision regex {pattern!r} does not compile ({err}); fix the pattern") from None
    if groups != 1:
        raise UserError(
            f"revision regex {pattern!r} has {groups} groups; it needs exactly one, capturing the step, "
            r"e.g. 'ckpt-(\d+)' (use (?:...) for other groups), or name a known scheme: " + ", ".join(SCHEMES)
        )
    return Scheme(pattern, final)


def parse_scheme(text: str) -> Scheme:
    """A scheme by its name (`pythia`, `olmo`) or from a regex whose one group is the step."""
    return SCHEMES.get(text) or regex_scheme(text)


def detect_scheme(revisions: Iterable[str]) -> Scheme:
    """The known scheme that recognizes the most revisions (Pythia on a tie); UserError when none fits any."""
    revisions = list(revisions)
    counts = {name: sum(s.step(r) is not None for r in revisions) for name, s in SCHEMES.items()}
    best = max(counts, key=lambda name: counts[name])
    if counts[best] == 0:
        shown = ", ".join(revisions[:5]) + (" ..." if len(revisions) > 5 else "")
        raise UserError(
            f"no revision ({shown}) follows a known naming scheme ({', '.join(SCHEMES)}); "
            r"pass a regex whose one group is the step, e.g. 'ckpt-(\d+)'"
        )
    return SCHEMES[best]


def every(steps: Sequence[int], k: int) -> list[int]:
    """Every k-th available step in step order, starting with the first (positions 0, k, 2k, ...)."""
    return sorted(set(steps))[::k]


def log_spaced(steps: Sequence[int], n: int) -> list[int]:
    """About n steps spread evenly in log(step + 1) between the first and last available step.

    Targets are n points evenly spaced in log(step + 1) from the first to the last step (both included for
    n >= 2); each takes the available step nearest to it in log(step + 1) (the lower on a tie). Targets
    that land on the same step count once, so fewer than n come back where the schedule is sparse.
    """
    steps = sorted(set(steps))
    logs = [math.log1p(s) for s in steps]
    targets = [logs[0] + (logs[-1] - logs[0]) * i / max(n - 1, 1) for i in range(n)]
    nearest = (min(range(len(steps)), key=lambda i: abs(logs[i] - t)) for t in targets)
    return [steps[i] for i in dict.fromkeys(nearest)]


def paper(steps: Sequence[int]) -> list[int]:
    """The paper-like subset (37 steps on Pythia): step0 and the powers of two up to 512, then 26 evenly spaced.

    The late part takes PAPER_LATE of the available steps after 512, evenly spaced by position from the first
    to the last (nearest position, halves up), so the last step is always included; all of them if fewer.
    """
    steps = sorted(set(steps))
    early = [s for s in steps if s <= PAPER_EARLY_MAX and s & (s - 1) == 0]
    late = [s for s in steps if s > PAPER_EARLY_MAX]
    if len(late) > PAPER_LATE:
        late = [late[math.floor(i * (len(late) - 1) / (PAPER_LATE - 1) + 0.5)] for i in range(PAPER_LATE)]
    return early + late


def parse_selection(text: str) -> Callable[[Mapping[str, int]], list[str]]:
    """Parse a selection; the result maps {revision: step} (as `Scheme.steps` gives) to the chosen revisions.

    Forms: `all`; `every:K` (K >= 1); `log:N` (N >= 1); `paper`; a comma list of steps and revision names.
    Bad syntax raises UserError naming the accepted forms.
    """
    text = text.strip()
    kind, sep, arg = text.partition(":")
    if text == "all":
        return _by_step(lambda steps: steps)
    if text == "paper":
        return _by_step(paper)
    if kind == ADAPTIVE:
        raise UserError(
            f"selection {text!r} is adaptive: it chooses revisions while measuring, so it names no fixed set; "
            f"use it with `mdyn sweep --steps`, or give a fixed selection here: {SELECTION_FORMS}"
        )
    if sep and kind in ("every", "log"):
        if not arg.isdigit() or int(arg) < 1:
            raise UserError(f"bad selection {text!r}: {kind}: needs a whole number >= 1; use {SELECTION_FORMS}")
        chooser = every if kind == "every" else log_spaced
        return _by_step(lambda steps: chooser(steps, int(arg)))
    tokens = [t.strip() for t in text.split(",")]
    if sep or not all(tokens):
        raise UserError(f"bad selection {text!r}; use {SELECTION_FORMS}")
    return lambda revisions: _explicit(revisions, tokens)


def select(revisions: Iterable[str], selection: str = "all", scheme: Scheme = PYTHIA) -> dict[str, int]:
    """The revisions a selection picks, as {revision: step} in step order; UserError when it picks none."""
    choose = parse_selection(selection)
    revisions = list(revisions)
    steps = scheme.steps(revisions)
    if not steps:
        shown = ", ".join(sorted(revisions)[:5]) + (" ..." if len(revisions) > 5 else "")
        raise UserError(
            f"none of the {len(revisions)} revisions ({shown}) matches the naming pattern {scheme.pattern!r}; "
            "pass a naming scheme that fits them"
        )
    chosen = set(choose(steps))
    if not chosen:
        raise UserError(
            f"selection {selection!r} picks no revision of the {len(steps)} available; use {SELECTION_FORMS}"
        )
    return {rev: step for rev, step in steps.items() if rev in chosen}


def _by_step(choose_steps: Callable[[list[int]], list[int]]) -> Callable[[Mapping[str, int]], list[str]]:
    """Lift a chooser of steps to one of revisions, taking the first revision (in step order) of each step."""

    def choose(revisions: Mapping[str, int]) -> list[str]:
        first = _first_per_step(revisions)
        return [first[s] for s in choose_steps(sorted(first))]

    return choose


def _explicit(revisions: Mapping[str, int], tokens: list[str]) -> list[str]:
    """Revisions named by step number or by name; UserError listing every token that matches none."""
    first = _first_per_step(revisions)
    picked = {tok: (first.get(int(tok)) if tok.isdigit() else tok if tok in revisions else None) for tok in tokens}
    unknown = [tok for tok, rev in picked.items() if rev is None]
    if unknown:
        lo, hi = min(first), max(first)
        raise UserError(
            f"selection names {', '.join(unknown)}, not among the {len(revisions)} available revisions "
            f"(steps {lo} ... {hi}); pick existing ones or use {SELECTION_FORMS}"
        )
    return list(dict.fromkeys(rev for rev in picked.values() if rev is not None))


def _first_per_step(revisions: Mapping[str, int]) -> dict[int, str]:
    """Step -> its first revision in the mapping's order (`Scheme.steps` puts `stepN` before `main`)."""
    first: dict[int, str] = {}
    for rev, step in revisions.items():
        first.setdefault(step, rev)
    return first
