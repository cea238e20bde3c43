"""A CPU-heavy function: computes n! (the thesis's CPU task), no file I/O.

Lambda style (`handler(event, context)`), run unchanged by ephemera-python.

Input: {"n": 5000}. Returns the number of decimal digits of n!, its last
non-zero digits, and the digit sum, all checkable from outside.
"""
import math
import sys

# n! for large n has more digits than CPython prints by default.
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)


def handler(event, context):
    n = int(event.get("n", 5000))
    if n < 0 or n > 200000:
        raise ValueError(f"n must be in 0..=200000, got {n}")
    value = math.factorial(n)
    text = str(value)
    stripped = text.rstrip("0")
    return {
        "n": n,
        "digits": len(text),
        "trailing_zeros": len(text) - len(stripped),
        "last_nonzero": stripped[-6:],
        "digit_sum": sum(map(int, text)),
        "function": getattr(context, "function_name", None),
    }
