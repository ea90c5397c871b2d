"""Write the bundled tool-calling training set, src/tunelab/assets/tools/train.jsonl, deterministically.

    python scripts/make_tool_data.py            # rewrite train.jsonl (same bytes every time)

Rows are OpenAI messages with the `tools` list of the held-out set (heldout.jsonl), copied from
there so both sides always declare the same functions. Most rows are one exchange, because the
held-out requests are first turns and the ~230-token tool list is rendered into every row: a
single call of each function in many phrasings, parallel calls, plain answers that call nothing
(some naming a city or a unit, so neither alone means a call), and a few conversations with
tool results and the answer after them. Held-out requests, cities and (value, unit) or
expression combinations never appear here: the script checks that before writing.
"""

from __future__ import annotations

import json
import operator
import random
from itertools import count
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parents[1] / "src" / "tunelab" / "assets" / "tools"

CITIES = ["Oslo", "Nairobi", "Accra", "Toronto", "Tokyo", "Rome", "Athens", "Vienna", "Prague", "Cairo",
          "Lisbon", "Dublin", "Mumbai", "London", "Berlin", "Seoul", "Madrid", "Sydney", "Lima", "Quito",
          "Chicago", "Denver", "Warsaw", "Budapest", "Stockholm", "Copenhagen", "Bangkok", "Hanoi",
          "Santiago", "Bogota", "Istanbul", "Dubai", "Boston", "Vancouver", "Munich", "Milan", "Kyoto",
          "Manila", "Jakarta", "Lagos", "Brussels", "Edinburgh", "Seattle", "Havana", "Riga", "Tallinn"]
WEATHER = ["What's the weather in {c}?", "How is the weather in {c} today?", "Is it cold in {c}?",
           "Is it raining in {c}?", "Weather in {c}?", "Tell me the weather in {c}.", "How hot is it in {c}?",
           "What is the weather like in {c}?", "Do I need an umbrella in {c}?", "Weather for {c} please.",
           "What's the temperature in {c} right now?", "Is it sunny in {c}?", "How warm is it in {c}?",
           "Check the weather in {c}."]
PARALLEL = ["What's the weather in {a} and in {b}?", "Weather in {a} and {b}?", "Compare the weather in {a} and {b}.",
            "How is the weather in {a} and {b} today?", "Is it cold in {a} or in {b}?",
            "Tell me the weather in {a} and in {b}."]
CONDITIONS = ["12 C, cloudy", "25 C, sunny", "-2 C, snow", "18 C, light rain", "30 C, humid", "8 C, windy"]

UNITS = [("km", "miles"), ("miles", "km"), ("kg", "pounds"), ("pounds", "kg"), ("feet", "meters"),
         ("meters", "feet"), ("inches", "cm"), ("cm", "inches"), ("liters", "gallons"), ("gallons", "liters"),
         ("celsius", "fahrenheit"), ("fahrenheit", "celsius"), ("grams", "ounces"), ("ounces", "grams")]
FACTOR = {"km": 0.621371, "miles": 1.609344, "kg": 2.204623, "pounds": 0.453592, "feet": 0.3048, "meters": 3.28084,
          "inches": 2.54, "cm": 0.393701, "liters": 0.264172, "gallons": 3.785412, "grams": 0.035274,
          "ounces": 28.349523}
CONVERT = ["Convert {v} {f} to {t}.", "How many {t} is {v} {f}?", "How many {t} are in {v} {f}?",
           "What is {v} {f} in {t}?", "{v} {f} in {t}?", "Convert {v} {f} into {t}, please.", "What's {v} {f} in {t}?"]
VALUES = [1, 2, 4, 5, 6, 8, 9, 10, 12, 15, 25, 30, 40, 50, 64, 100, 150, 250, 2.5, 0.5, 1.75]

ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
OPS = list(ARITHMETIC)
CALCULATE = ["What is {e}?", "Calculate {e}.", "Compute {e}.", "How much is {e}?", "What's {e}?", "Work out {e}.",
             "Evaluate {e}."]

PLAIN = [("Good morning!", "Good morning! How can I help you?"),
         ("Hello! How are you?", "Hello! I am doing well. How can I help you?"),
         ("Hey, how is it going?", "It is going well, thanks! What can I do for you?"),
         ("Thanks for your help.", "You are welcome!"),
         ("What is the capital of Italy?", "The capital of Italy is Rome."),
         ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
         ("What is the capital of Spain?", "The capital of Spain is Madrid."),
         ("What is the capital of Egypt?", "The capital of Egypt is Cairo."),
         ("Which city is the capital of Germany?", "Berlin is the capital of Germany."),
         ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet."),
         ("What is the largest ocean?", "The Pacific Ocean."),
         ("Tell me a short joke.", "Why did the scarecrow win an award? He was outstanding in his field."),
         ("What color is the sky on a clear day?", "Blue."),
         ("How many days are in a week?", "There are seven days in a week."),
         ("What language is spoken in Brazil?", "Portuguese is spoken in Brazil."),
         ("In which country is Kyoto?", "Kyoto is in Japan."),
         ("Say goodbye.", "Goodbye!"),
         ("What is a kilometer?", "A kilometer is a unit of length equal to 1000 meters.")]

HELD_OUT_CITIES = {"Amsterdam", "Montreal", "Helsinki", "Zurich", "Geneva", "Paris"}


def call(ids, name: str, args: dict) -> dict:
    return {"id": f"call_{next(ids)}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def ask(request: str, calls: list[dict]) -> list[dict]:
    return [{"role": "user", "content": request}, {"role": "assistant", "content": "", "tool_calls": calls}]


def number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def converted(v: float, f: str, t: str) -> float:
    if f == "celsius":
        return round(v * 9 / 5 + 32, 2)
    if f == "fahrenheit":
        return round((v - 32) * 5 / 9, 2)
    return round(v * FACTOR[f], 2)


def weather_rows(rng, ids, cities, n_single, n_parallel):
    rows = []
    for i in range(n_single):
        c = next(cities)
        rows.append(ask(WEATHER[i % len(WEATHER)].format(c=c), [call(ids, "get_weather", {"city": c})]))
    for i in range(n_parallel):
        a, b = next(cities), next(cities)
        rows.append(ask(PARALLEL[i % len(PARALLEL)].format(a=a, b=b),
                        [call(ids, "get_weather", {"city": a}), call(ids, "get_weather", {"city": b})]))
    return rows


def convert_request(rng, i):
    f, t = UNITS[i % len(UNITS)]
    v = rng.choice(VALUES)
    return CONVERT[i % len(CONVERT)].format(v=number(v), f=f, t=t), {"value": v, "from_unit": f, "to_unit": t}


def calc_request(rng, i):
    a, b, op = rng.randint(2, 999), rng.randint(2, 99), OPS[i % len(OPS)]
    if op == "/":
        a = b * rng.randint(2, 40)
    expr = f"{a} {op} {b}"
    return CALCULATE[i % len(CALCULATE)].format(e=expr), expr


def result_rows(ids, cities, rng):
    """Conversations with tool results: call, result, the answer; the last two go on to a second request."""
    rows = []
    for i in range(3):
        c, cond = next(cities), CONDITIONS[i]
        turn = ask(WEATHER[(i + 5) % len(WEATHER)].format(c=c), [call(ids, "get_weather", {"city": c})])
        rows.append(turn + [{"role": "tool", "tool_call_id": turn[1]["tool_calls"][0]["id"], "content": cond},
                            {"role": "assistant", "content": f"{c}: {cond}."}])
    for i in range(3):
        req, args = convert_request(rng, i + 3)
        turn = ask(req, [call(ids, "convert_units", args)])
        out = number(converted(args["value"], args["from_unit"], args["to_unit"]))
        rows.append(turn + [{"role": "tool", "tool_call_id": turn[1]["tool_calls"][0]["id"], "content": out},
                            {"role": "assistant", "content": f"{number(args['value'])} {args['from_unit']} is about "
                                                            f"{out} {args['to_unit']}."}])
    for i in range(3):
        req, expr = calc_request(rng, i + 1)
        turn = ask(req, [call(ids, "calculate", {"expression": expr})])
        a, op, b = expr.split()
        out = number(round(ARITHMETIC[op](int(a), int(b)), 2))
        rows.append(turn + [{"role": "tool", "tool_call_id": turn[1]["tool_calls"][0]["id"], "content": out},
                            {"role": "assistant", "content": f"{expr} = {out}."}])
    a, b = next(cities), next(cities)
    turn = ask(f"Weather in {a} and {b}?", [call(ids, "get_weather", {"city": a}), call(ids, "get_weather", {"city": b})])
    rows.append(turn + [{"role": "tool", "tool_call_id": c["id"], "content": cond}
                        for c, cond in zip(turn[1]["tool_calls"], CONDITIONS[3:5])]
                + [{"role": "assistant", "content": f"{a}: {CONDITIONS[3]}. {b}: {CONDITIONS[4]}."}])
    rows[-2] += [{"role": "user", "content": "Thanks!"}, {"role": "assistant", "content": "You are welcome!"}]
    req, expr = calc_request(rng, 7)
    rows[-1] += ask(req, [call(ids, "calculate", {"expression": expr})])
    return rows


def mixed_rows(ids, rng):
    rows = []
    for i in range(2):
        creq, expr = calc_request(rng, i + 2)
        vreq, args = convert_request(rng, i + 9)
        rows.append(ask(f"{creq[:-1]}, and {vreq[0].lower()}{vreq[1:]}",
                        [call(ids, "calculate", {"expression": expr}), call(ids, "convert_units", args)]))
    return rows


def build() -> list[list[dict]]:
    rng, ids = random.Random(16), count(1)
    cities = iter(rng.sample(CITIES, len(CITIES)))
    rows = weather_rows(rng, ids, cities, 14, 7)
    for i in range(16):
        req, args = convert_request(rng, i)
        rows.append(ask(req, [call(ids, "convert_units", args)]))
    for i in range(16):
        req, expr = calc_request(rng, i)
        rows.append(ask(req, [call(ids, "calculate", {"expression": expr})]))
    rows += mixed_rows(ids, rng)
    rows += [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in PLAIN]
    rows += result_rows(ids, cities, rng)
    rng.shuffle(rows)
    return rows


def check(rows: list[list[dict]], heldout: list[dict]) -> None:
    """No held-out request, city, (value, from, to) or expression trains."""
    def facts(messages):
        for m in messages:
            if m["role"] == "user":
                yield m["content"]
            for c in m.get("tool_calls") or []:
                yield json.dumps(json.loads(c["function"]["arguments"]), sort_keys=True)

    held = {f for row in heldout for f in facts(row["messages"])}
    clash = {f for messages in rows for f in facts(messages)} & held
    cities = {json.loads(c["function"]["arguments"]).get("city") for messages in rows for m in messages
              for c in m.get("tool_calls") or []}
    assert not clash and not cities & HELD_OUT_CITIES, (clash, cities & HELD_OUT_CITIES)


def main() -> None:
    heldout = [json.loads(line) for line in (TOOLS_DIR / "heldout.jsonl").read_text().splitlines()]
    tools = heldout[0]["tools"]
    rows = build()
    check(rows, heldout)
    lines = [json.dumps({"messages": messages, "tools": tools}) for messages in rows]
    (TOOLS_DIR / "train.jsonl").write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} rows to {TOOLS_DIR / 'train.jsonl'}")


if __name__ == "__main__":
    main()
