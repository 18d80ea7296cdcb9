"""A grade: one verdict per gradient (with the mistake that explains it, when one does), as text or JSON."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GradientVerdict:
    """One returned gradient: ``correct`` or ``wrong``; why (``reason``: what differs), which ``mistake``
    explains it (None when none does) and the ``expected`` formula."""

    name: str
    verdict: str
    reason: str = ""
    mistake: str | None = None
    expected: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == "correct"

    def to_dict(self) -> dict:
        return {"name": self.name, "verdict": self.verdict, "reason": self.reason, "mistake": self.mistake,
                "expected": self.expected}

    def text(self) -> str:
        if self.ok:
            return f"correct  {self.name}"
        lines = [f"WRONG    {self.name}", f"  {self.reason}"]
        if self.mistake:
            lines.append(f"  mistake: {self.mistake}")
        lines.append(f"  expected: {self.expected}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Grade:
    """The grade of one student's file: a verdict per gradient, in the order the backward pass computes them.

    ``context`` says what was run (the call, the cache's keys, the instances); ``notes`` what the grader
    noticed beside the verdicts (other widths not used, keys ignored).
    """

    file: str
    gradients: tuple[GradientVerdict, ...]
    context: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(g.ok for g in self.gradients)

    @property
    def score(self) -> str:
        return f"{sum(g.ok for g in self.gradients)}/{len(self.gradients)}"

    def verdict(self, name: str) -> GradientVerdict:
        return next(g for g in self.gradients if g.name == name)

    def to_dict(self) -> dict:
        return {"gradients": [g.to_dict() for g in self.gradients], "score": self.score, "notes": list(self.notes)}

    def text(self) -> str:
        """Lines for the terminal; gradients that are wrong for one and the same reason share one entry."""
        lines = list(self.context)
        for group in _groups(self.gradients):
            if len(group) == 1:
                lines.append(group[0].text())
            else:
                lines += [f"WRONG    {', '.join(g.name for g in group)}", f"  {group[0].reason}"]
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"{self.score} gradients correct")
        return "\n".join(lines)


def _groups(verdicts):
    """Runs of verdicts that are wrong for the same reason with no mistake named; every other verdict alone."""
    groups = []
    for verdict in verdicts:
        previous = groups[-1][-1] if groups else None
        if (previous is not None and not verdict.ok and verdict.mistake is None and previous.mistake is None
                and previous.reason == verdict.reason and not previous.ok):
            groups[-1].append(verdict)
        else:
            groups.append([verdict])
    return groups
