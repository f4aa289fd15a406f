"""Helpers shared by the benchmarks: fake-but-plausible contacts, timing."""

from __future__ import annotations

import random
import statistics
import time
import uuid
from collections.abc import Callable

FIRST = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Emma",
    "Felix",
    "Greta",
    "Hugo",
    "Ida",
    "Jonas",
    "Klara",
    "Lukas",
    "Mia",
    "Noah",
    "Olga",
    "Paul",
    "Rosa",
    "Sven",
    "Tina",
    "Uwe",
    "Vera",
    "Willi",
    "Zoe",
]
LAST = [
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Koch",
    "Richter",
    "Klein",
    "Wolf",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Krüger",
    "Hofmann",
]
ORGS = ["Acme, Inc.", "Globex", "Initech", "Umbrella Corp", "Stark Industries", ""]


def fake_card(rng: random.Random, number: int) -> str:
    """A vCard 3.0 like a phone export: name, org, emails, phones, address."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    uid = str(uuid.UUID(int=rng.getrandbits(128)))
    org = rng.choice(ORGS).replace(",", "\\,")
    lines = [
        "BEGIN:VCARD",
        "VERSION:3.0",
        f"UID:{uid}",
        f"FN:{first} {last} {number}",
        f"N:{last};{first};;;",
        f"EMAIL;TYPE=INTERNET,HOME:{first.lower()}.{number}@example.org",
        f"TEL;TYPE=CELL:+49 555 01{number % 100:02d}",
    ]
    if org:
        lines.append(f"ORG:{org}")
    if rng.random() < 0.5:
        lines.append(f"EMAIL;TYPE=INTERNET,WORK:{last.lower()}{number}@example.com")
    if rng.random() < 0.3:
        lines.append(
            f"ADR;TYPE=HOME:;;Hauptstraße {number % 200};Berlin;;10115;Germany"
        )
    if rng.random() < 0.2:
        lines.append("NOTE:Met at the conference\\, talked about mail filtering.")
    lines.append("END:VCARD")
    return "\r\n".join(lines) + "\r\n"


def median_us(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of *fn* in microseconds over *runs* calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(times)


def best_of(fn: Callable[[], object], runs: int = 3) -> float:
    """Best wall time of *fn* in seconds over *runs* calls."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
