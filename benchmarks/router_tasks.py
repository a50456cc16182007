"""A task set with checkable answers for the router benchmark (benchmarks/router_bench.py).

Four kinds, drawn with a fixed seed: arithmetic (the answer is a number), unit conversion
(a number), JSON extraction (an object with given keys and values) and short factual
questions whose answers are in the bundled facts file. ``check(task, answer)`` says whether
an answer is right, independently of the router's validators.
"""

from __future__ import annotations

import json
import random
import re

from qres.llm.tools import UNITS, convert, load_facts

NAMES = ("Ada", "Bruno", "Chen", "Dara", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jun")
CITIES = ("Oslo", "Lima", "Pune", "Quito", "Riga", "Seoul", "Tunis", "Utrecht", "Vigo", "Wuhan")
PAIRS = (("km", "mile"), ("mile", "km"), ("kg", "pound"), ("pound", "kg"), ("meter", "foot"),
         ("liter", "gallon"), ("hour", "minute"), ("celsius", "fahrenheit"), ("gb", "mb"),
         ("inch", "cm"))  # fmt: skip


def _arithmetic(rng: random.Random) -> dict:
    a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 20)
    form = rng.choice(
        ["{a} + {b} * {c}", "({a} - {b}) * {c}", "{a} * {b} - {c}", "{a} + {b} + {c}"]
    )
    expr = form.format(a=a, b=b, c=c)
    ask = rng.choice(["What is {e}?", "Compute {e}.", "Calculate {e} and give the number."])
    return {"kind": "arithmetic", "prompt": ask.format(e=expr), "answer": eval(expr)}  # noqa: S307


def _units(rng: random.Random) -> dict:
    src, dst = rng.choice(PAIRS)
    value = rng.randint(1, 500)
    assert src in UNITS and dst in UNITS
    ask = rng.choice(["Convert {v} {s}s to {d}s.", "How many {d}s are in {v} {s}s?"])
    prompt = ask.format(v=value, s=src, d=dst).replace("celsiuss", "celsius")
    prompt = prompt.replace("fahrenheits", "fahrenheit")
    return {"kind": "units", "prompt": prompt, "answer": convert(value, src, dst)}


def _json(rng: random.Random) -> dict:
    name, city, age = rng.choice(NAMES), rng.choice(CITIES), rng.randint(18, 90)
    prompt = (
        f"Extract the person's name, age and city as a JSON object with keys name, age, city "
        f"from this text: {name} is {age} years old and lives in {city}."
    )
    return {"kind": "json", "prompt": prompt, "answer": {"name": name, "age": age, "city": city}}


def _fact(rng: random.Random, facts) -> dict:
    key, answer = rng.choice(facts)
    return {"kind": "fact", "prompt": f"What is the {key}? Answer briefly.", "answer": answer}


def build(n_per_kind: int, seed: int = 12) -> list[dict]:
    """``4 * n_per_kind`` tasks, interleaved by kind."""
    rng = random.Random(seed)
    facts = [f for f in load_facts() if not f[0].startswith(("number of", "speed"))]
    out = []
    for _ in range(n_per_kind):
        out += [_arithmetic(rng), _units(rng), _json(rng), _fact(rng, facts)]
    return out


def _numbers(text: str) -> list[float]:
    from qres.builtin_plugins.validators.basic import numbers_in

    return numbers_in(text)


def check(task: dict, answer: str | None) -> bool:
    """Whether ``answer`` is right for ``task``."""
    if not answer:
        return False
    if task["kind"] in ("arithmetic", "units"):
        found = _numbers(answer)
        want = float(task["answer"])
        return bool(found) and abs(found[-1] - want) <= 1e-2 * max(1.0, abs(want))
    if task["kind"] == "json":
        from qres.builtin_plugins.validators.basic import first_json

        try:
            value = first_json(answer)
        except ValueError:
            return False
        return isinstance(value, dict) and all(
            str(value.get(k)).lower() == str(v).lower() for k, v in task["answer"].items()
        )
    return re.search(rf"\b{re.escape(task['answer'].lower())}\b", answer.lower()) is not None


if __name__ == "__main__":
    for task in build(2):
        print(json.dumps(task))
