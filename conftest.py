"""nbval's output check, with the tolerance that printing implies.

A cell marked ``# NBVAL_CHECK_OUTPUT`` must print what its stored run printed. Its figures are rounded
floating-point results, and another CPU or BLAS sums in another order: a value $v$ that moves by
$|\\delta| < 10^{-d}$ can change its print at $d$ decimals by one unit of the last digit (0.785 prints 0.79 or 0.78),
never by more. So two outputs agree when their text is equal once every decimal number of the new output that is
within one unit of the last printed digit of the stored one, printed with as many digits, is taken as equal to it.
Integers (counts, classes, indices) and all other text must match exactly, as in plain nbval.
"""

from __future__ import annotations

import copy
import re

from nbval.plugin import IPyNbCell

# a decimal number as printed: optional sign, digits, a fraction and/or an exponent (0.79, -3.02, 2e-07, 1.5e+03)
DECIMAL = re.compile(r"[-+]?\d+(?:\.(\d+))?(?:e([-+]?\d+))?")


def last_digit(text: str) -> float | None:
    """One unit of the last printed digit of a decimal number, or None for an integer."""
    match = DECIMAL.fullmatch(text)
    if not match or (match[1] is None and match[2] is None):
        return None
    return 10.0 ** (-len(match[1] or "") + int(match[2] or 0))


def align(stored: str, new: str) -> str:
    """``new`` with each decimal number replaced by the stored one where the two are printed alike (same number of
    digits) and differ by at most one unit of the last digit; everything else of ``new`` unchanged."""
    stored_numbers, new_numbers = [m[0] for m in DECIMAL.finditer(stored)], list(DECIMAL.finditer(new))
    if len(stored_numbers) != len(new_numbers):
        return new  # not the same text around the numbers: left to the exact comparison to report
    pieces, end = [], 0
    for old, match in zip(stored_numbers, new_numbers):
        number = match[0]
        unit = last_digit(old)
        if (unit is not None and unit == last_digit(number) and len(old.lstrip("+-")) == len(number.lstrip("+-"))
                and abs(float(old) - float(number)) <= unit * (1 + 1e-9)):
            number = old
        pieces += [new[end:match.start()], number]
        end = match.end()
    return "".join(pieces) + new[end:]


def align_outputs(stored: list, new: list) -> list:
    """The new outputs with their text fields aligned (:func:`align`) on the stored outputs of the same place and kind."""
    aligned = []
    for old, output in zip(stored, new):
        output = copy.deepcopy(output)
        if (old.get("output_type"), old.get("name")) != (output.get("output_type"), output.get("name")):
            aligned.append(output)
            continue
        if isinstance(output.get("text"), str) and isinstance(old.get("text"), str):
            output["text"] = align(old["text"], output["text"])
        if "data" in output and "data" in old:
            output["data"] = {key: align(old["data"][key], value) if isinstance(value, str) and isinstance(old["data"].get(key), str) else value
                              for key, value in output["data"].items()}
        aligned.append(output)
    return aligned + list(new[len(stored):])


exact_comparison = IPyNbCell.compare_outputs


def compare_within_printed_precision(self, test, ref, skip_compare=None):
    if exact_comparison(self, test, ref, skip_compare):
        return True
    return exact_comparison(self, align_outputs(ref, test), ref, skip_compare)  # nbval has joined each cell's streams


IPyNbCell.compare_outputs = compare_within_printed_precision
