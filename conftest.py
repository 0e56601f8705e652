"""nbval's output check, with the tolerance that printing implies.

A cell marked ``# NBVAL_CHECK_OUTPUT`` must print what its stored run printed. Its figures are rounded
floating-point results, and another CPU or BLAS sums in another order. If a value moves by $|\\delta| < u$, where
$u = 10^{-d}$ is the unit of the last printed digit, its print moves by less than $|\\delta| + u < 2u$, so by at most
one unit (0.785 prints 0.79 or 0.78). Two outputs therefore agree when their text is equal once every rounded number
of the new output that is printed like the stored one (as many digits) and within one unit of it is taken
as equal to it. Rounded numbers are those with a fraction or an exponent, and integers followed by ``%`` or
`` SE`` (rounded shares and z-scores). Every other integer (counts, classes, indices) and all other text must match
exactly, as in plain nbval. Both outputs are aligned after nbval's sanitizing (``--nbval-sanitize-with``).

A rate over many items moves by more than rounding when a decision that lies within float precision of its tie
(a map's maximum shared by two places, a logit at 0) breaks the other way on another CPU: it moves by a multiple
of 1 / n, however it is printed. A checked cell that prints such a rate as a percentage declares the
tolerance it needs, derived from the number of such items measured, on a line of its own:

    # NBVAL_TOLERANCE 1.8 percentage points: 9 of the 500 scenes have a tied maximum, 9 / 500 = 1.8 %

Its numbers printed with ``%`` may then differ by that many percentage points (or one unit, if more); its other
numbers keep the one-unit rule. Any larger change still fails.
"""

from __future__ import annotations

import copy
import re

from nbval.plugin import IPyNbCell

# a number as printed, with the spaces that pad it (a sign change may eat one); not part of a name (features.8,
# layer4.1, 0x1e5) or of a version (2.14.1)
NUMBER = re.compile(r"(?<![\w.])( *[-+]?\d+(?:\.(\d+))?(?:e([-+]?\d+))?)(?!\w|\.\d)( ?%| SE\b)?")
TOLERANCE = re.compile(r"^\s*#\s*NBVAL_TOLERANCE\s+(\d+(?:\.\d+)?)\s+percentage points?\b", re.M)


def unit(match: re.Match) -> float | None:
    """One unit of the last printed digit of a rounded number; None for an exact integer."""
    if match[2] is None and match[3] is None and match[4] is None:
        return None
    return 10.0 ** (-len(match[2] or "") + int(match[3] or 0))


def digits(match: re.Match) -> int:
    return len(match[1].strip().lstrip("+-"))


def percentage_points(source: str) -> float:
    """The tolerance a cell's ``# NBVAL_TOLERANCE x percentage points`` line declares for its percentages; 0 without one."""
    declared = TOLERANCE.findall(source)
    if len(declared) > 1:
        raise ValueError(f"a cell declares NBVAL_TOLERANCE {len(declared)} times: {declared}")
    return float(declared[0]) if declared else 0.0


def align(stored: str, new: str, points: float = 0.0) -> str:
    """``new`` with each rounded number replaced by the stored one where both are printed alike (same unit, as many
    digits; the sign and its padding may differ) and differ by at most one unit, or, for a number printed with ``%``,
    by at most ``points`` percentage points if that is more; everything else of ``new`` unchanged."""
    stored_numbers, new_numbers = list(NUMBER.finditer(stored)), list(NUMBER.finditer(new))
    if len(stored_numbers) != len(new_numbers):
        return new  # not the same text around the numbers: left to the exact comparison to report
    pieces, end = [], 0
    for old, match in zip(stored_numbers, new_numbers):
        number = match[0]
        step = unit(old)
        allowed = None if step is None else max(step, points if (old[4] or "").strip() == "%" else 0.0)
        if (step is not None and step == unit(match) and digits(old) == digits(match) and old[4] == match[4]
                and abs(float(old[1]) - float(match[1])) <= allowed * (1 + 1e-9)):
            number = old[0]
        pieces += [new[end:match.start()], number]
        end = match.end()
    return "".join(pieces) + new[end:]


def align_outputs(stored: list, new: list, sanitize, points: float = 0.0) -> list:
    """The new outputs, sanitized, with their text aligned (:func:`align`, with ``points``) on the sanitized stored output
    of the same kind (output type and stream name) and rank among that kind, as nbval pairs them."""
    def kind(output):
        return output.get("output_type"), output.get("name")

    aligned, seen = [], {}
    for output in new:
        output = copy.deepcopy(output)
        rank = seen[kind(output)] = seen.get(kind(output), -1) + 1
        same_kind = [o for o in stored if kind(o) == kind(output)]
        if rank < len(same_kind):
            old = same_kind[rank]
            if isinstance(output.get("text"), str) and isinstance(old.get("text"), str):
                output["text"] = align(sanitize(old["text"]), sanitize(output["text"]), points)
            if "data" in output and "data" in old:
                for key, value in output["data"].items():
                    if isinstance(value, str) and isinstance(old["data"].get(key), str):
                        output["data"][key] = align(sanitize(old["data"][key]), sanitize(value), points)
        aligned.append(output)
    return aligned


exact_comparison = IPyNbCell.compare_outputs


def compare_within_printed_precision(self, test, ref, skip_compare=None):
    # nbval has joined each cell's streams before it calls this
    points = percentage_points(self.cell.source)
    if exact_comparison(self, test, ref, skip_compare) or exact_comparison(self, align_outputs(ref, test, self.sanitize, points), ref, skip_compare):
        return True
    return exact_comparison(self, test, ref, skip_compare)  # its report shows the output as it ran


IPyNbCell.compare_outputs = compare_within_printed_precision
